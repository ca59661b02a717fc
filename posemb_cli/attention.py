"""Attention statistics, one function each, shared by `inspect`, `compare` and `stats`.

Every function takes attention maps `a` of shape (..., n, n) whose rows are queries and returns one value per
query row (shape (..., rows)); callers average over rows (and heads, layers or texts) as they need.

Each statistic has a NumPy version (one text, no padding) and a torch version (`*_torch`) for padded batches on the
model's device, used by `stats`. The torch versions implement the same formulas (tests/test_stats.py checks that they
agree with the NumPy ones); they take maps of shape (batch, heads, n, n) padded on the right and, where a formula
needs the text's own length, a key mask (batch, n) that is true at real tokens. Rows past a text's length hold
garbage that callers must mask out. torch is not imported here: the torch versions use tensor methods only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

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


def first_tokens(n: int, k: int) -> np.ndarray:
    """Key mask of the first k positions of a text of n tokens."""
    return np.arange(n) < k


def sink(a: np.ndarray, k: int) -> np.ndarray:
    """Attention-sink mass Σ_{j<k} a[i,j] on the first k tokens (Xiao et al. 2023, "Efficient Streaming Language
    Models with Attention Sinks"): `mass_on` with the first k key positions."""
    return mass_on(a, first_tokens(a.shape[-1], k))


def entropy_torch(a: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """`entropy` for a padded batch: n is each text's own length (key_mask.sum), padded keys are left out of Σ_j.

    a: (batch, heads, n, n); key_mask: (batch, n) bool. Returns (batch, heads, n)."""
    mask = key_mask[:, None, None, :].to(a.dtype)
    n = mask.sum(-1, keepdim=True)
    smoothed = (1.0 - ENTROPY_SMOOTHING) * a + ENTROPY_SMOOTHING / n
    terms = smoothed.xlogy(smoothed)  # one temporary the size of `a`, reused in place below
    return -terms.mul_(mask).sum(-1)


def distance_torch(a: torch.Tensor) -> torch.Tensor:
    """`distance` for a batch: Σ_j a[i,j]·|i − j|. Padded keys carry zero attention, so need no mask."""
    n = a.shape[-1]
    positions = a.new_ones(n).cumsum(0)
    return (a * (positions[:, None] - positions[None, :]).abs()).sum(-1)


def mass_on_torch(a: torch.Tensor, key_masks: torch.Tensor) -> torch.Tensor:
    """`mass_on` for several key masks at once, as one matrix product: Σ_j a[i,j]·mask_k[j].

    a: (batch, heads, n, n); key_masks: (batch, n, k), 1.0 where a key counts. Returns (batch, heads, n, k)."""
    return a @ key_masks[:, None].to(a.dtype)


def self_attention_torch(a: torch.Tensor) -> torch.Tensor:
    """`self_attention`: a[i,i], shape (batch, heads, n)."""
    return a.diagonal(0, -2, -1)


def previous_token_torch(a: torch.Tensor) -> torch.Tensor:
    """`previous_token`: a[i,i−1] for rows i = 1..n−1, shape (batch, heads, n − 1); row i is real if key_mask[i]."""
    return a.diagonal(-1, -2, -1)


def next_token_torch(a: torch.Tensor) -> torch.Tensor:
    """`next_token`: a[i,i+1] for rows i = 0..n−2, shape (batch, heads, n − 1); row i counts if key_mask[i + 1]."""
    return a.diagonal(1, -2, -1)


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
