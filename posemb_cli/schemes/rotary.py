"""Rotary position embedding (RoPE, Su et al. 2021): positions rotate queries and keys; nothing is added.

Phi(i, j) = sum_k cos((i - j) * theta_k), the score of two copies of one vector rotated to i and j (RoFormer, §3.4.3);
with ``metric="cosine"`` divided by the number of frequencies, its value at i = j. A model's frequencies come from
its config through the registry (`Family.rope`); scaled RoPE uses the frequencies the loaded model really rotates with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PosembUsageError
from .base import PositionAnalysis, PositionPicture, PositionScheme, positive, toeplitz

if TYPE_CHECKING:
    from ..models import LoadedModel


def rotary_frequencies(dim: int, base: float = 10000.0) -> np.ndarray:
    """Rotary angular frequencies ``theta_k = base ** (-2k / dim)``, ``k = 0 .. dim/2 - 1``.

    Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", §3.2.2 (eq. 15). ``dim`` must be even (one frequency per
    rotation plane).
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    return base ** (-2.0 * np.arange(dim // 2) / dim)


def rotary_phi(length: int, theta: np.ndarray, metric: str = "dot") -> np.ndarray:
    """``Phi(i, j) = sum_k cos((i - j) * theta_k)`` (Su et al. 2021, RoFormer, §3.4.3); cosine: over ``len(theta)``.

    With equal energy in every rotation plane, ``<R_i x, R_j x>`` reduces to this sum. It depends on ``i - j`` only
    and equals ``len(theta)`` on the diagonal. Built from the ``2 * length - 1`` offsets only, so memory stays
    ``length^2``, not ``length^2 * dim``.
    """
    by_offset = np.cos(np.arange(-(length - 1), length)[:, None] * np.asarray(theta, dtype=np.float64)).sum(axis=1)
    if metric == "cosine":
        by_offset = by_offset / max(len(theta), 1)
    return toeplitz(by_offset, length)


def rotary_proximity(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """`rotary_phi` for the frequencies of ``dim`` and ``base``: equals ``dim / 2`` on the diagonal."""
    return rotary_phi(length, rotary_frequencies(dim, base))


class Rotary(PositionScheme):
    name = "rotary"
    options = {"dim": 64, "base": 10000.0}  # a common head dimension (RoFormer)

    def meaning(self, metric: str) -> str:
        scaled = " ÷ (dim/2)" if metric == "cosine" else ""
        return f"Φ(i, j) = Σₖ cos((i − j)·θₖ){scaled}: how rotation alone changes the score of one vector at i and j"

    def analyse(self, length: int, metric: str, window: int, **options: Any) -> PositionAnalysis:
        dim, base = int(options["dim"]), positive("--base", float(options["base"]))
        if dim < 2 or dim % 2:
            raise PosembUsageError(f"rotary --dim must be a positive even number (one frequency per plane), got {dim}")
        phi = rotary_phi(length, rotary_frequencies(dim, base), metric)
        return self.analysis(None, f"analytic: rotary, dim {dim}, base {base:g}", length, metric, phi, window)

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        rope = loaded.family.rope(loaded.model.config)
        theta = rotary_frequencies(rope["dim"], rope["base"])
        module = loaded.family.rotary_embedding
        inv_freq = getattr(loaded.model.get_submodule(module), "inv_freq", None) if module else None
        notes = []
        if inv_freq is not None and rope["rope_type"] != "default":
            theta = inv_freq.detach().double().cpu().numpy()  # scaled RoPE: trust the frequencies the model uses
            notes.append(
                f"rope_type {rope['rope_type']}: Phi uses the model's rescaled frequencies ({module}.inv_freq)"
            )
        source = f"{module or 'rotary'}: base {rope['base']:g}, dim {rope['dim']} (from config)"
        analysis = self.analysis(loaded.info.name, source, length, metric, rotary_phi(length, theta, metric), window)
        analysis.notes.extend(notes)
        return analysis

    def options_for_model(self, hidden_size: int, heads: int, head_dim: int) -> dict[str, Any]:
        return {"dim": head_dim - head_dim % 2} if head_dim >= 2 else {}

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        n = analysis.length
        return PositionPicture(
            {"similarity": analysis.matrix},
            f"Rotary score of positions 0–{n - 1}: Σₖ cos((i−j)·θₖ) / (d/2)",
            f"no position vectors (rotary rotates queries and keys): the score between rotated copies of a unit "
            f"vector, {analysis.source}",
            "normalised rotary score",
            diverging=True,
        )


SCHEMES = (Rotary(),)
