"""T5-style relative buckets (Raffel et al. 2020, §2.1): a learned bias per head for the bucket of the offset j − i.

Analytic (no weights): Phi(i, j) = −level(j − i), where `level` is the bucket's rank within its direction (0 for
offset 0, growing with |j − i|): the coarsened distance T5 can tell apart. With weights: the learned bias
b_h(bucket(j − i)) per head; Phi is the head mean.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PosembError, PosembUsageError
from .base import PositionAnalysis, PositionPicture, PositionScheme, offsets, toeplitz

if TYPE_CHECKING:
    from ..models import LoadedModel


def t5_relative_bucket(
    relative_position: np.ndarray,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> np.ndarray:
    """T5 relative-position buckets (Raffel et al. 2020, "Exploring the Limits ...", §2.1).

    ``relative_position`` is key position minus query position. In the
    bidirectional case half the buckets go to each sign (positive offsets get
    ``+ num_buckets // 2``) and the magnitude is bucketed; in the causal case
    only ``n = -min(relative_position, 0)`` is bucketed. With
    ``max_exact = buckets // 2``, offsets ``n < max_exact`` get their own
    bucket; larger ones get ``max_exact + floor(log(n / max_exact) /
    log(max_distance / max_exact) * (buckets - max_exact))``, capped at
    ``buckets - 1``. Mirrors the reference (mesh-tensorflow and transformers'
    ``T5Attention._relative_position_bucket``), including its float32 arithmetic:
    where the log ratio lands exactly on a bucket edge, float64 would disagree
    with the reference. (numpy's and torch's float32 ``log`` can still differ by
    one ulp; over 10^4 offsets and ~3,500 settings this changed one bucket,
    at num_buckets=257, max_distance=250, causal.)
    """
    n = np.asarray(relative_position).astype(np.int64)
    buckets = num_buckets
    result = np.zeros_like(n)
    if bidirectional:
        buckets //= 2
        result += (n > 0).astype(np.int64) * buckets
        n = np.abs(n)
    else:
        n = -np.minimum(n, 0)
    max_exact = buckets // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise ValueError(
            "need num_buckets >= 2 (4 if bidirectional) and max_distance > max_exact; "
            f"got num_buckets={num_buckets}, max_distance={max_distance}"
        )
    is_small = n < max_exact
    ratio = np.maximum(n, max_exact).astype(np.float32) / np.float32(max_exact)
    scaled = np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * np.float32(buckets - max_exact)
    if_large = max_exact + np.minimum(scaled, np.float32(buckets)).astype(np.int64)
    if_large = np.minimum(if_large, buckets - 1)
    return result + np.where(is_small, n, if_large)


def t5_bucket_matrix(
    length: int,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> np.ndarray:
    """T5 bucket of every (query i, key j) pair, for offset ``j - i``; shape ``(length, length)``.

    See :func:`t5_relative_bucket` (Raffel et al. 2020, §2.1).
    """
    return t5_relative_bucket(offsets(length), bidirectional, num_buckets, max_distance)


class RelativeBucket(PositionScheme):
    name = "relative_bucket"
    options = {"buckets": 32, "max_distance": 128, "bidirectional": True}  # T5's own settings

    def meaning(self, metric: str) -> str:
        if metric == "bucket_level":
            return "Φ(i, j) = −(bucket level of j − i): how far apart T5's buckets put i and j"
        return "Φ(i, j) = the learned T5 bias for the bucket of j − i (mean over heads)"

    def analyse(self, length: int, metric: str, window: int, **options: Any) -> PositionAnalysis:
        num_buckets, max_distance = int(options["buckets"]), int(options["max_distance"])
        bidirectional = bool(options["bidirectional"])
        by_offset = self._buckets(length, bidirectional, num_buckets, max_distance)
        steps = np.arange(-(length - 1), length)
        level = by_offset - (steps > 0) * (num_buckets // 2) if bidirectional else by_offset
        direction = "bidirectional" if bidirectional else "causal"
        source = f"analytic: t5 relative buckets, {num_buckets} buckets, max distance {max_distance}, {direction}"
        phi = toeplitz(-level.astype(np.float64), length)
        analysis = self.analysis(None, source, length, "bucket_level", phi, window)
        analysis.buckets = dict(zip(steps.tolist(), by_offset.tolist(), strict=True))
        analysis.notes.append(
            "T5 learns one bias per bucket and head; with no weights Phi(i, j) = -(bucket level of j - i), the "
            "distance T5 can tell apart (0 for the same position, growing with |j - i|)"
        )
        return analysis

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        """The learned bias ``b_h(bucket(j - i))`` of the module the registry names (Raffel et al. 2020, §2.1)."""
        config, path = loaded.model.config, loaded.family.relative_bias
        if path is None:
            raise PosembError(f"the registry names no relative_attention_bias module for {loaded.family.name}")
        bias = loaded.model.get_submodule(path).weight.detach().float().cpu().numpy().astype(np.float64)
        num_buckets, max_distance = loaded.family.relative_buckets or (
            getattr(config, "relative_attention_num_buckets", bias.shape[0]),
            getattr(config, "relative_attention_max_distance", 128),
        )
        by_offset = self._buckets(length, not getattr(config, "is_decoder", False), num_buckets, max_distance)
        head_matrices = np.stack([toeplitz(bias[by_offset, h], length) for h in range(bias.shape[1])])
        source = f"{path} ({num_buckets} buckets, max distance {max_distance})"
        analysis = self.analysis(loaded.info.name, source, length, "bias", head_matrices.mean(axis=0), window)
        analysis.buckets = dict(zip(range(-(length - 1), length), by_offset.tolist(), strict=True))
        analysis.head_matrices = head_matrices
        analysis.bias = {"offsets": list(range(-(length - 1), length)), "per_head": bias[by_offset].T.tolist()}
        return analysis

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        return self.bias_picture(
            analysis,
            f"Learned relative bias b(bucket(j−i)) of positions 0–{analysis.length - 1}",
            f"no position vectors (a learned bias per head and bucket is added to attention scores): {analysis.source}",
            "bias added to the attention logit",
        )

    @staticmethod
    def _buckets(length: int, bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
        try:
            return t5_relative_bucket(np.arange(-(length - 1), length), bidirectional, num_buckets, max_distance)
        except ValueError as exc:
            raise PosembUsageError(f"--buckets/--max-distance: {exc}") from None


SCHEMES = (RelativeBucket(),)
