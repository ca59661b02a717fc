"""ALiBi (Press et al. 2022, "Train Short, Test Long"): a fixed bias −m_h·|i − j| per head on the attention logits.

Phi is the head mean −mean(m)·|i − j|; the per-head biases are kept for the tables and the picture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PosembUsageError
from .base import MAX_HEAD_MATRIX_VALUES, PositionAnalysis, PositionPicture, PositionScheme, offsets

if TYPE_CHECKING:
    from ..models import LoadedModel

EXTRA_HEADS = 3  # the positions picture: head mean plus this many single heads


def alibi_slopes(heads: int) -> np.ndarray:
    """ALiBi head slopes (Press et al. 2022, "Train Short, Test Long", §3).

    For ``n`` a power of two, ``m_h = 2 ** (-8h / n)``, ``h = 1 .. n``.
    Otherwise take the slopes for the closest lower power of two ``n0`` and
    append every other slope (indices 0, 2, 4, ...) of the slopes for
    ``2 * n0`` until there are ``heads`` values -- the rule of the authors'
    code and of transformers' ``build_alibi_tensor``.
    """
    if heads <= 0:
        raise ValueError(f"heads must be >= 1, got {heads}")

    def power_of_two_slopes(n: int) -> np.ndarray:
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)

    n0 = 1 << (heads.bit_length() - 1)
    slopes = power_of_two_slopes(n0)
    if n0 == heads:
        return slopes
    extra = power_of_two_slopes(2 * n0)[0::2][: heads - n0]
    return np.concatenate([slopes, extra])


def alibi_bias(length: int, heads: int) -> np.ndarray:
    """ALiBi attention bias ``-m_h * |i - j|`` (Press et al. 2022, §3), shape ``(heads, length, length)``.

    The causal models in the paper only see ``j <= i``; the full symmetric
    matrix is returned here and masking is left to the caller.
    """
    return -alibi_slopes(heads)[:, None, None] * np.abs(offsets(length))[None, :, :]


class Alibi(PositionScheme):
    name = "alibi"
    options = {"heads": 8}  # the ALiBi paper's worked example (slopes 1/2 .. 1/256)

    def meaning(self, metric: str) -> str:
        return "Φ(i, j) = −m·|i − j|: the ALiBi bias added to attention scores (mean over heads)"

    def analyse(self, length: int, metric: str, window: int, **options: Any) -> PositionAnalysis:
        return self._analysis(length, int(options["heads"]), window, None, "analytic: alibi")

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        heads, rule = loaded.info.heads, loaded.family.alibi_slope_rule
        slopes = alibi_slopes(heads)
        source = "config: slopes 2^(-8h/n)"
        if rule == "bf16(m)/sqrt(head_dim)":
            import torch

            head_dim = loaded.family.head_dim(loaded.model.config)
            slopes = torch.tensor(slopes, dtype=torch.float32).bfloat16().double().numpy() / np.sqrt(head_dim)
            source = f"config: slopes 2^(-8h/n) in bfloat16 / √{head_dim} (head dim), as the model adds them"
        analysis = self._analysis(length, heads, window, loaded.info.name, source, slopes)
        if rule != "m":
            analysis.notes.append(
                f"{loaded.family.name} scales the ALiBi slopes: m' = {rule} (SDPA and the original code; "
                "transformers' eager path adds the bias twice, which posemb corrects)"
            )
        return analysis

    def _analysis(
        self, length: int, heads: int, window: int, model: str | None, source: str, slopes: np.ndarray | None = None
    ) -> PositionAnalysis:
        if heads < 1:
            raise PosembUsageError(f"--heads must be at least 1, got {heads}")
        slopes = alibi_slopes(heads) if slopes is None else slopes
        distance = np.abs(offsets(length)).astype(np.float64)
        analysis = self.analysis(model, f"{source}, {heads} heads", length, "bias", -slopes.mean() * distance, window)
        analysis.slopes = slopes.tolist()
        steps = np.arange(-(length - 1), length)
        analysis.bias = {"offsets": steps.tolist(), "per_head": (-slopes[:, None] * np.abs(steps)[None]).tolist()}
        if heads * length * length <= MAX_HEAD_MATRIX_VALUES:
            analysis.head_matrices = -slopes[:, None, None] * distance[None]
        analysis.notes.append("ALiBi adds a bias, not a vector: the dot/cosine metric does not apply")
        return analysis

    def options_for_model(self, hidden_size: int, heads: int, head_dim: int) -> dict[str, Any]:
        return {"heads": heads} if heads else {}

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        n, slopes = analysis.length, np.array(analysis.slopes or [])
        heads = len(slopes)
        distance = np.abs(offsets(n)).astype(float)
        chosen = sorted({0, heads // 2, heads - 1})[:EXTRA_HEADS]
        panels = {"mean": analysis.matrix}
        for h in chosen:
            panels[f"head {h}"] = -slopes[h] * distance
        return PositionPicture(
            panels,
            f"ALiBi attention bias −mₕ·|i−j| of positions 0–{n - 1}",
            f"no position vectors (ALiBi adds a per-head bias to attention scores): panels are the mean of all "
            f"{heads} heads, then head{'s' if len(chosen) > 1 else ''} {_listed(chosen)} (first, middle, last, "
            "counted from 0), on one scale",
            "bias added to the attention logit",
            diverging=False,
        )


def _listed(numbers: list[int]) -> str:
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


SCHEMES = (Alibi(),)
