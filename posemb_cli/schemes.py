"""Analytic position-encoding schemes, in plain numpy.

Each function reproduces one scheme from its paper (or from the reference
code where the paper leaves details open), so that the tables and biases a
model would use can be inspected without loading the model.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "proximity",
    "rotary_frequencies",
    "rotary_proximity",
    "sinusoidal_table",
    "t5_bucket_matrix",
    "t5_relative_bucket",
]


def _offsets(length: int) -> np.ndarray:
    """Matrix of offsets j - i (key minus query) for an ``length`` x ``length`` grid."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    positions = np.arange(length)
    return positions[None, :] - positions[:, None]


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """Sinusoidal position table (Vaswani et al. 2017, "Attention Is All You Need", §3.5).

    ``PE[p, 2k] = sin(p * w_k)`` and ``PE[p, 2k+1] = cos(p * w_k)`` with
    ``w_k = base ** (-2k / dim)``: sine on even columns, cosine on odd ones.
    For odd ``dim`` the last column is a sine with no cosine partner.
    Returns an array of shape ``(length, dim)``.
    """
    if length < 0 or dim < 0:
        raise ValueError(f"length and dim must be >= 0, got {length}, {dim}")
    k = np.arange((dim + 1) // 2)
    omega = base ** (-2.0 * k / dim) if dim else np.zeros(0)
    angles = np.arange(length)[:, None] * omega[None, :]
    table = np.empty((length, dim))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : dim // 2])
    return table


def rotary_frequencies(dim: int, base: float = 10000.0) -> np.ndarray:
    """Rotary angular frequencies ``theta_k = base ** (-2k / dim)``, ``k = 0 .. dim/2 - 1``.

    Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", §3.2.2 (eq. 15). ``dim`` must be even (one frequency per
    rotation plane).
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    return base ** (-2.0 * np.arange(dim // 2) / dim)


def rotary_proximity(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """Rotary score between two copies of one vector: ``Phi(i, j) = sum_k cos((i - j) * theta_k)``.

    With equal energy in every rotation plane, ``<R_i x, R_j x>`` reduces to
    this sum (Su et al. 2021, RoFormer, §3.4.3 long-term decay). It depends on
    ``i - j`` only and equals ``dim / 2`` on the diagonal. Shape ``(length, length)``.
    """
    theta = rotary_frequencies(dim, base)
    offsets = -_offsets(length)  # i - j
    return np.cos(offsets[..., None] * theta).sum(axis=-1)


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
    distance = np.abs(_offsets(length))
    return -alibi_slopes(heads)[:, None, None] * distance[None, :, :]


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
    return t5_relative_bucket(_offsets(length), bidirectional, num_buckets, max_distance)


def proximity(vectors: np.ndarray, metric: str = "dot") -> np.ndarray:
    """Proximity matrix ``Phi(i, j)`` between rows of ``vectors`` (n, d) -> (n, n).

    ``"dot"``: ``<v_i, v_j>``; ``"cosine"``: ``<v_i, v_j> / (|v_i| |v_j|)``, with
    rows of zero norm giving 0 (no NaN). This is the position-wise function
    whose properties Wang et al. (ICLR 2021, "On Position Embeddings in
    BERT", §3) study.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {v.shape}")
    if metric == "dot":
        return v @ v.T
    if metric == "cosine":
        norms = np.linalg.norm(v, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        unit = v / safe[:, None]
        return unit @ unit.T
    raise ValueError(f"unknown metric {metric!r}; expected 'dot' or 'cosine'")
