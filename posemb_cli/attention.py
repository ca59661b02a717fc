"""Attention statistics, one function each, shared by `inspect`, `compare` and `stats`.

Every function takes attention maps `a` of shape (..., n, n) whose rows are queries and returns one value per
query row (shape (..., rows)); callers average over rows (and heads, layers or texts) as they need.
"""

from __future__ import annotations

import numpy as np

ENTROPY_SMOOTHING = 1e-4


def entropy(a: np.ndarray) -> np.ndarray:
    """−Σ_j a'[i,j]·ln a'[i,j] in nats, with a' = (1 − ε)·a + ε/n, ε = 1e-4, so that zeros are defined."""
    n = a.shape[-1]
    smoothed = (1.0 - ENTROPY_SMOOTHING) * a + ENTROPY_SMOOTHING / n
    return -(smoothed * np.log(smoothed)).sum(-1)


def distance(a: np.ndarray) -> np.ndarray:
    """Mean attention distance Σ_j a[i,j]·|i − j| in tokens (Vig & Belinkov 2019)."""
    n = a.shape[-1]
    positions = np.arange(n)
    return (a * np.abs(positions[:, None] - positions[None, :])).sum(-1)


def mass_on(a: np.ndarray, key_mask: np.ndarray) -> np.ndarray:
    """Attention mass Σ_j a[i,j] over the key positions j where key_mask is true (Clark et al. 2019)."""
    return (a * key_mask.astype(a.dtype)).sum(-1)


def self_attention(a: np.ndarray) -> np.ndarray:
    """a[i,i]: attention of each token to itself."""
    return np.diagonal(a, axis1=-2, axis2=-1)


def previous_token(a: np.ndarray) -> np.ndarray:
    """a[i,i−1] for rows i ≥ 1."""
    n = a.shape[-1]
    return a[..., np.arange(1, n), np.arange(0, n - 1)]


def next_token(a: np.ndarray) -> np.ndarray:
    """a[i,i+1] for rows i ≤ n − 2."""
    n = a.shape[-1]
    return a[..., np.arange(0, n - 1), np.arange(1, n)]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def layer_summary(attention: np.ndarray, special_mask: np.ndarray) -> list[dict[str, float]]:
    """Per layer, each statistic averaged over heads and query rows of one text (attention: layers, heads, n, n)."""
    n = attention.shape[-1]
    return [
        {
            "layer": layer,
            "entropy": _mean(entropy(maps)),
            "uniform_entropy": float(np.log(n)),
            "distance": _mean(distance(maps)),
            "special": _mean(mass_on(maps, special_mask)),
            "self": _mean(self_attention(maps)),
            "prev": _mean(previous_token(maps)),
            "next": _mean(next_token(maps)),
        }
        for layer, maps in enumerate(attention)
    ]
