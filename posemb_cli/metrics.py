"""Numbers computed from vectors and matrices, each with its reference: Phi's properties, position probes, CKA.

The proximity properties are those of Wang et al. (ICLR 2021, "On Position
Embeddings in BERT", §3): translation invariance, monotonicity and symmetry
of ``Phi(i, j)``. The paper states each as a yes/no property of Phi (an
equation that holds for all positions or not); the scores below are posemb's
own way of turning each into a number (1 = the property holds exactly), not
formulas from the paper, so compare them between posemb runs rather than with
the paper's tables. The probes follow Wang & Chen (EMNLP 2020, "What Do Position
Embeddings Learn?", §3): whether the absolute position can be read back from a
position vector, and what a 2-D projection of the vectors looks like. Linear CKA (Kornblith et al. 2019) compares
two models' representations of the same words (`compare`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "row_cosines",
    "spearman",
    "cka_matrix",
    "linear_cka",
    "local_monotonicity",
    "pca_2d",
    "position_regression_mae",
    "symmetry",
    "translation_invariance",
]


def row_cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine of each pair of vectors along the last axis, in float64; 0 where either vector is zero (no NaN)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    num = (x * y).sum(-1)
    den = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    cosines = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(np.isfinite(num) & np.isfinite(den), cosines, np.nan)  # NaN in, NaN out (not 0)


def _square(phi: np.ndarray) -> np.ndarray:
    """``phi`` as a float64 square matrix, or ValueError."""
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1]:
        raise ValueError(f"proximity matrix must be square, got shape {phi.shape}")
    return phi


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan if either vector is constant."""
    xc = x - x.mean()
    yc = y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given the average of the ranks they span."""
    order = np.argsort(x, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(x.size)
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts)[inverse]  # 1-based group id of each element
    bounds = np.r_[np.flatnonzero(starts), x.size]  # first index of each group, then n
    return 0.5 * (bounds[group - 1] + bounds[group] + 1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of average ranks."""
    return _pearson(_rank(x), _rank(y))


def translation_invariance(phi: np.ndarray) -> float:
    """Share of the variance of ``Phi`` explained by the offset ``d = j - i`` alone.

    ``TI = 1 - sum (Phi(i,j) - mean_{j-i=d} Phi)^2 / sum (Phi(i,j) - mean Phi)^2``,
    where the inner mean runs over the diagonal holding ``(i, j)``. A matrix
    that depends only on ``j - i`` (Toeplitz) scores 1. Wang et al. (ICLR 2021,
    §3) define translation invariance as the property Phi(i, j) = Phi(i + k,
    j + k); this score (the R² of the offset alone) is posemb's measure of how
    nearly it holds. A constant matrix returns 1.0.
    """
    phi = _square(phi)
    n = phi.shape[0]
    if n == 0 or np.ptp(phi) == 0:
        return 1.0
    offsets = (np.arange(n)[None, :] - np.arange(n)[:, None]) + (n - 1)
    diag_sum = np.bincount(offsets.ravel(), weights=phi.ravel(), minlength=2 * n - 1)
    diag_len = n - np.abs(np.arange(2 * n - 1) - (n - 1))
    residual = phi - (diag_sum / diag_len)[offsets]
    total = phi - phi.mean()
    return float(1.0 - np.sum(residual**2) / np.sum(total**2))


def symmetry(phi: np.ndarray) -> float:
    """Pearson correlation of ``Phi(i, j)`` with ``Phi(j, i)`` over pairs ``i < j``.

    1 for a symmetric matrix, -1 for an antisymmetric one such as
    ``Phi(i, j) = i - j``. Wang et al. (ICLR 2021, §3) define symmetry as the
    property Phi(i, j) = Phi(j, i); the correlation is posemb's measure of how
    nearly it holds. When either
    side is constant the correlation is undefined: return 1.0 if the two
    sides are equal and nan otherwise. Fewer than 2 positions (no pairs): nan.
    """
    phi = _square(phi)
    if phi.shape[0] < 2:
        return float("nan")
    i, j = np.triu_indices(phi.shape[0], k=1)
    upper, lower = phi[i, j], phi[j, i]
    if np.ptp(upper) == 0 or np.ptp(lower) == 0:
        return 1.0 if np.array_equal(upper, lower) else float("nan")
    return _pearson(upper, lower)


def local_monotonicity(phi: np.ndarray, window: int = 16) -> tuple[float, float]:
    """Mean Spearman correlation of distance ``|j - i|`` with ``-Phi(i, j)``, forward and backward.

    For each anchor ``i`` the neighbours are ``j = i+1 .. i+window`` (forward)
    or ``j = i-window .. i-1`` (backward), clipped to the matrix. Anchors with
    fewer than 2 neighbours or constant ``Phi`` values are skipped; the result
    is nan when no anchor qualifies. 1 means proximity falls steadily with
    distance. Wang et al. (ICLR 2021, §3) define monotonicity as the property
    that Phi falls as |j - i| grows; the windowed rank correlation is posemb's
    measure of how nearly it holds. Ties get average ranks.
    """
    phi = _square(phi)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = phi.shape[0]
    forward: list[float] = []
    backward: list[float] = []
    for i in range(n):
        for js, scores in (
            (np.arange(i + 1, min(n, i + window + 1)), forward),
            (np.arange(max(0, i - window), i), backward),
        ):
            values = -phi[i, js]
            if js.size < 2 or np.ptp(values) == 0:
                continue
            scores.append(spearman(np.abs(js - i).astype(np.float64), values))
    return (
        float(np.mean(forward)) if forward else float("nan"),
        float(np.mean(backward)) if backward else float("nan"),
    )


def position_regression_mae(vectors: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated mean absolute error of predicting position ``p`` from row ``p``.

    Ordinary least squares with an intercept (``np.linalg.lstsq``, minimum-norm
    when dim exceeds the training rows), ``folds``-fold cross-validation over
    indices shuffled by ``np.random.default_rng(seed)``. Low error means the
    vectors encode absolute position linearly (Wang & Chen, EMNLP 2020, §3.1).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {x.shape}")
    n = x.shape[0]
    if not 2 <= folds <= n:
        raise ValueError(f"need 2 <= folds <= number of vectors ({n}), got {folds}")
    if not np.isfinite(x).all():  # LAPACK would print to stderr and fail ("SVD did not converge")
        return float("nan")
    design = np.column_stack([np.ones(n), x])
    target = np.arange(n, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(n)
    errors = np.empty(n)
    for test in np.array_split(order, folds):
        train = np.setdiff1d(order, test)
        coef, *_ = np.linalg.lstsq(design[train], target[train], rcond=None)
        errors[test] = np.abs(design[test] @ coef - target[test])
    return float(errors.mean())


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components: ``(coords (n, 2), explained variance ratio (2,))``.

    SVD of the column-centred matrix; each component's sign is fixed so that
    its largest-magnitude loading is positive. Missing components (dim or
    rank below 2) are zero. Used to picture position vectors as in Wang &
    Chen (EMNLP 2020, §3, visualisation).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {x.shape}")
    centred = x - x.mean(axis=0) if x.shape[0] else x
    if not np.isfinite(centred).all():  # LAPACK would print to stderr and fail ("SVD did not converge")
        return np.full((x.shape[0], 2), np.nan), np.full(2, np.nan)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, s.size)
    components = vt[:k]
    pivot = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(k), pivot])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    coords = np.zeros((x.shape[0], 2))
    coords[:, :k] = centred @ components.T
    ratio = np.zeros(2)
    total = np.sum(s**2)
    if total > 0:
        ratio[:k] = s[:k] ** 2 / total
    return coords, ratio


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


def _compact(x: np.ndarray) -> np.ndarray:
    """An (n, min(n, d)) matrix with the same Gram matrix x xᵀ: CKA only sees the Gram, and fewer columns make
    the cross products cheap when a model is wider than the number of words (x = Rᵀ Qᵀ, so x Q = Rᵀ)."""
    n, d = x.shape
    if d <= n or not np.isfinite(x).all():  # non-finite: no QR (LAPACK), the CKA is NaN anyway
        return x
    r: np.ndarray = np.linalg.qr(x.T, mode="r")  # type: ignore[assignment]  # mode 'r' returns R alone
    return r.T


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", eq. 5):
    ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F) on column-centred X (n × d₁) and Y (n × d₂), rows = the same n examples.

    1 for representations equal up to an orthogonal transform and isotropic scaling; nan when either is constant."""
    return float(cka_matrix([np.asarray(x)], [np.asarray(y)])[0, 0])


def cka_matrix(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> np.ndarray:
    """Linear CKA of every xs[a] (n × d₁) with every ys[b] (n × d₂): a (len(xs), len(ys)) matrix."""
    xs = [_compact(_centred(x)) for x in xs]
    ys = [_compact(_centred(y)) for y in ys]
    x_norms = np.array([np.linalg.norm(x.T @ x) for x in xs])
    y_norms = np.array([np.linalg.norm(y.T @ y) for y in ys])
    out = np.full((len(xs), len(ys)), np.nan)
    for a, x in enumerate(xs):
        for b, y in enumerate(ys):
            denominator = x_norms[a] * y_norms[b]
            if denominator > 0:
                out[a, b] = np.linalg.norm(y.T @ x) ** 2 / denominator
    return out
