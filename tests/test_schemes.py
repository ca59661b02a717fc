"""Tests of posemb_cli.schemes and posemb_cli.metrics against closed forms and
independent implementations (scipy, transformers)."""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg, stats

from posemb_cli import metrics
from posemb_cli.schemes import alibi, base, learned, relative_bucket, rotary


def _transformers_functions(module: str, names: set[str], cls: str | None = None) -> dict[str, Callable]:
    """Load functions verbatim from the installed transformers source.

    Importing ``transformers.models.*.modeling_*`` costs ~8-10 s here (it pulls in
    the whole modeling stack), so the named top-level functions (or methods of
    ``cls``) are compiled from the installed file on their own, with ``torch``
    and ``math`` -- their only dependencies -- in scope. Decorators such as
    ``@staticmethod`` are dropped.
    """
    torch = pytest.importorskip("torch")
    loaded = sys.modules.get(f"transformers.{module}")
    if loaded is not None:  # already imported elsewhere in the session: use the real objects
        owner = loaded if cls is None else getattr(loaded, cls)
        return {name: getattr(owner, name) for name in names}
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        pytest.skip("transformers is not installed")
    path = Path(spec.origin).parent / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    scope = tree.body
    if cls is not None:
        scope = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    found = [n for n in scope if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {n.name for n in found} == names, f"{names} not found in {path}"
    for node in found:
        node.decorator_list = []
    namespace: dict = {"torch": torch, "math": math}
    exec(compile(ast.Module(body=found, type_ignores=[]), str(path), "exec"), namespace)
    return {name: namespace[name] for name in names}


@pytest.fixture(scope="module")
def build_alibi_tensor() -> Callable:
    """``transformers.models.bloom.modeling_bloom.build_alibi_tensor`` (with ``_get_alibi_slopes``)."""
    names = {"build_alibi_tensor", "_get_alibi_slopes"}
    return _transformers_functions("models.bloom.modeling_bloom", names)["build_alibi_tensor"]


@pytest.fixture(scope="module")
def t5_relative_position_bucket() -> Callable:
    """``transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket``."""
    names = {"_relative_position_bucket"}
    return _transformers_functions("models.t5.modeling_t5", names, "T5Attention")["_relative_position_bucket"]


def _omega(dim: int, base: float = 10000.0) -> np.ndarray:
    return np.array([1.0 / base ** (2 * k / dim) for k in range(dim // 2)])


def _cos_sum(length: int, omega: np.ndarray) -> np.ndarray:
    out = np.zeros((length, length))
    for i in range(length):
        for j in range(length):
            out[i, j] = sum(math.cos((i - j) * w) for w in omega)
    return out


# --- sinusoidal ------------------------------------------------------------


@pytest.mark.parametrize(("dim", "base"), [(16, 10000.0), (64, 10000.0), (10, 100.0)])
def test_sinusoidal_dot_products_are_cosine_sums(dim: int, base: float) -> None:
    table = learned.sinusoidal_table(40, dim, base)
    expected = _cos_sum(40, _omega(dim, base))
    np.testing.assert_allclose(table @ table.T, expected, rtol=0, atol=1e-9)
    assert metrics.translation_invariance(table @ table.T) == pytest.approx(1.0, abs=1e-9)


def test_sinusoidal_hand_values() -> None:
    table = learned.sinusoidal_table(5, 8)
    assert table.shape == (5, 8)
    assert table[1, 0] == pytest.approx(math.sin(1.0), abs=1e-15)
    assert table[1, 1] == pytest.approx(math.cos(1.0), abs=1e-15)
    assert table[3, 2] == pytest.approx(math.sin(3 / 10000 ** (2 / 8)), abs=1e-15)
    assert table[3, 7] == pytest.approx(math.cos(3 / 10000 ** (6 / 8)), abs=1e-15)
    np.testing.assert_array_equal(table[0], [0, 1, 0, 1, 0, 1, 0, 1])


def test_sinusoidal_odd_dim_last_column_is_sine() -> None:
    table = learned.sinusoidal_table(6, 7)
    assert table.shape == (6, 7)
    p = np.arange(6)
    np.testing.assert_allclose(table[:, 6], np.sin(p / 10000 ** (6 / 7)), atol=1e-15)
    np.testing.assert_allclose(table[:, 5], np.cos(p / 10000 ** (4 / 7)), atol=1e-15)


# --- rotary ----------------------------------------------------------------


def test_rotary_frequencies() -> None:
    np.testing.assert_allclose(rotary.rotary_frequencies(8), _omega(8), rtol=1e-15)
    assert rotary.rotary_frequencies(8)[0] == 1.0
    with pytest.raises(ValueError):
        rotary.rotary_frequencies(7)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_rotary_proximity_is_toeplitz_with_half_dim_diagonal(dim: int) -> None:
    length = 30
    phi = rotary.rotary_proximity(length, dim)
    assert phi.shape == (length, length)
    np.testing.assert_allclose(np.diag(phi), dim / 2, atol=1e-12)
    for offset in range(-length + 1, length):
        diagonal = np.diagonal(phi, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-12)
    np.testing.assert_allclose(phi, _cos_sum(length, _omega(dim)), atol=1e-9)


# --- ALiBi -----------------------------------------------------------------


def test_alibi_slopes_closed_forms() -> None:
    eight = [2.0**-k for k in range(1, 9)]
    np.testing.assert_allclose(alibi.alibi_slopes(8), eight, rtol=1e-15)
    twelve = eight + [2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]
    np.testing.assert_allclose(alibi.alibi_slopes(12), twelve, rtol=1e-15)
    np.testing.assert_allclose(alibi.alibi_slopes(1), [2.0**-8], rtol=1e-15)


@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 7, 12, 16, 20, 24, 40, 64])
def test_alibi_slopes_match_transformers(heads: int, build_alibi_tensor: Callable) -> None:
    import torch

    mask = torch.ones(1, 4, dtype=torch.long)
    expected = build_alibi_tensor(mask, heads, torch.float32)  # (heads, 1, 4)
    assert tuple(expected.shape) == (heads, 1, 4)
    reference = expected[:, 0, 1].double().numpy()  # slope * position 1
    np.testing.assert_allclose(alibi.alibi_slopes(heads), reference, rtol=1e-6)


def test_alibi_bias() -> None:
    bias = alibi.alibi_bias(5, 8)
    assert bias.shape == (8, 5, 5)
    assert bias[0, 0, 3] == pytest.approx(-3 * 0.5)
    assert bias[2, 4, 1] == pytest.approx(-3 * 2.0**-3)
    np.testing.assert_array_equal(bias[:, 2, 2], 0.0)


# --- T5 buckets ------------------------------------------------------------


T5_SETTINGS = [(32, 128), (32, 64), (16, 50), (64, 256), (128, 1000), (8, 20), (10, 37), (6, 9)]


@pytest.mark.parametrize(("num_buckets", "max_distance"), T5_SETTINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_transformers(
    bidirectional: bool, num_buckets: int, max_distance: int, t5_relative_position_bucket: Callable
) -> None:
    import torch

    offsets = np.arange(-200, 201)
    expected = t5_relative_position_bucket(
        torch.from_numpy(offsets), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    ).numpy()
    got = relative_bucket.t5_relative_bucket(offsets, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0 and got.max() < num_buckets


def test_t5_buckets_match_transformers_grid(t5_relative_position_bucket: Callable) -> None:
    import torch

    offsets = np.arange(-2000, 2001)
    for bidirectional in (True, False):
        for num_buckets in range(4, 70, 3):
            max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
            for max_distance in sorted({max_exact + 1, 3 * max_exact, 100, 128, 1000}):
                if max_distance <= max_exact:
                    continue
                expected = t5_relative_position_bucket(
                    torch.from_numpy(offsets),
                    bidirectional=bidirectional,
                    num_buckets=num_buckets,
                    max_distance=max_distance,
                ).numpy()
                got = relative_bucket.t5_relative_bucket(offsets, bidirectional, num_buckets, max_distance)
                np.testing.assert_array_equal(got, expected, err_msg=f"{bidirectional=} {num_buckets=} {max_distance=}")


def test_t5_bucket_rejects_degenerate_settings() -> None:
    with pytest.raises(ValueError):
        relative_bucket.t5_relative_bucket(np.arange(3), bidirectional=True, num_buckets=2)
    with pytest.raises(ValueError):
        relative_bucket.t5_relative_bucket(np.arange(3), bidirectional=False, num_buckets=32, max_distance=16)


def test_t5_bucket_hand_values() -> None:
    b = relative_bucket.t5_relative_bucket(np.array([0, -1, 1, -7, 7, -8, 8, -200, 200]))
    # bidirectional, 16 buckets per sign, max_exact 8: |n| < 8 exact, n > 0 offset by 16
    assert b.tolist() == [0, 1, 17, 7, 23, 8, 24, 15, 31]
    causal = relative_bucket.t5_relative_bucket(np.array([5, 0, -1, -15, -16, -500]), bidirectional=False)
    # causal: positive offsets -> 0; max_exact 16
    assert causal.tolist() == [0, 0, 1, 15, 16, 31]


def test_t5_bucket_matrix_uses_key_minus_query() -> None:
    m = relative_bucket.t5_bucket_matrix(6, bidirectional=True, num_buckets=32, max_distance=128)
    assert m.shape == (6, 6)
    assert m[0, 3] == 16 + 3  # key after query: positive offset
    assert m[3, 0] == 3
    causal = relative_bucket.t5_bucket_matrix(6, bidirectional=False, num_buckets=32, max_distance=128)
    assert causal[0, 3] == 0 and causal[3, 0] == 3


# --- proximity -------------------------------------------------------------


def test_proximity_dot_and_cosine() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 5))
    v[3] = 0.0
    dot = base.proximity(v)
    cos = base.proximity(v, "cosine")
    for i in range(7):
        for j in range(7):
            d = sum(v[i, k] * v[j, k] for k in range(5))
            assert dot[i, j] == pytest.approx(d, abs=1e-12)
            norm = math.sqrt(sum(x * x for x in v[i])) * math.sqrt(sum(x * x for x in v[j]))
            assert cos[i, j] == pytest.approx(d / norm if norm else 0.0, abs=1e-12)
    assert not np.isnan(cos).any()
    np.testing.assert_allclose(np.delete(np.diag(cos), 3), 1.0, atol=1e-12)
    assert cos[3, 3] == 0.0
    with pytest.raises(ValueError):
        base.proximity(v, "euclid")


# --- translation invariance ------------------------------------------------


def test_translation_invariance() -> None:
    rng = np.random.default_rng(2)
    toeplitz = linalg.toeplitz(rng.normal(size=50), rng.normal(size=50))
    assert metrics.translation_invariance(toeplitz) == pytest.approx(1.0, abs=1e-12)
    assert metrics.translation_invariance(rng.normal(size=(50, 50))) < 0.5
    assert metrics.translation_invariance(np.full((4, 4), 0.3)) == 1.0


def test_translation_invariance_matches_loop() -> None:
    rng = np.random.default_rng(3)
    phi = rng.normal(size=(9, 9)) + np.add.outer(np.arange(9), -np.arange(9))
    means = {d: np.mean(np.diagonal(phi, d)) for d in range(-8, 9)}
    num = sum((phi[i, j] - means[j - i]) ** 2 for i in range(9) for j in range(9))
    den = np.sum((phi - phi.mean()) ** 2)
    assert metrics.translation_invariance(phi) == pytest.approx(1 - num / den, abs=1e-12)


# --- symmetry --------------------------------------------------------------


def test_symmetry() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(30, 30))
    assert metrics.symmetry(a + a.T) == pytest.approx(1.0, abs=1e-12)
    idx = np.arange(30)
    assert metrics.symmetry(np.subtract.outer(idx, idx).astype(float)) == pytest.approx(-1.0, abs=1e-12)
    i, j = np.triu_indices(30, k=1)
    assert metrics.symmetry(a) == pytest.approx(stats.pearsonr(a[i, j], a[j, i])[0], abs=1e-12)


def test_symmetry_constant_cases() -> None:
    assert metrics.symmetry(np.ones((5, 5))) == 1.0
    upper_only = np.triu(np.ones((5, 5)), k=1)
    assert math.isnan(metrics.symmetry(upper_only))


# --- local monotonicity ----------------------------------------------------


def _reference_monotonicity(phi: np.ndarray, window: int) -> tuple[float, float]:
    n = phi.shape[0]
    fwd, bwd = [], []
    for i in range(n):
        for lo, hi, out in ((i + 1, min(n, i + window + 1), fwd), (max(0, i - window), i, bwd)):
            js = np.arange(lo, hi)
            vals = -phi[i, js]
            if len(js) >= 2 and len(set(vals.tolist())) > 1:
                out.append(stats.spearmanr(np.abs(js - i), vals)[0])
    return float(np.mean(fwd)), float(np.mean(bwd))


def test_local_monotonicity_closed_forms() -> None:
    idx = np.arange(40)
    dist = np.abs(np.subtract.outer(idx, idx)).astype(float)
    assert metrics.local_monotonicity(-dist) == pytest.approx((1.0, 1.0), abs=1e-12)
    assert metrics.local_monotonicity(dist, window=5) == pytest.approx((-1.0, -1.0), abs=1e-12)
    fwd, bwd = metrics.local_monotonicity(np.ones((10, 10)))
    assert math.isnan(fwd) and math.isnan(bwd)


@pytest.mark.parametrize("window", [2, 16])
def test_local_monotonicity_matches_scipy(window: int) -> None:
    rng = np.random.default_rng(5)
    continuous = rng.normal(size=(40, 40))
    ties = rng.integers(0, 4, size=(40, 40)).astype(float)
    for phi in (continuous, ties):
        got = metrics.local_monotonicity(phi, window)
        assert got == pytest.approx(_reference_monotonicity(phi, window), abs=1e-12)


# --- probes ----------------------------------------------------------------


def test_position_regression_mae() -> None:
    rng = np.random.default_rng(6)
    n = 200
    linear = np.column_stack([3.0 * np.arange(n) + 1.0, rng.normal(size=(n, 4))])
    assert metrics.position_regression_mae(linear) < 1e-8
    assert metrics.position_regression_mae(rng.normal(size=(n, 8))) > n / 10
    wide = rng.normal(size=(30, 100))  # dim > samples: minimum-norm solution
    assert np.isfinite(metrics.position_regression_mae(wide, folds=3))
    assert metrics.position_regression_mae(linear, seed=1) < 1e-8
    with pytest.raises(ValueError):
        metrics.position_regression_mae(linear, folds=1)


def test_pca_2d() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(100, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    coords, ratio = metrics.pca_2d(x)
    assert coords.shape == (100, 2)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(ratio, eig[:2] / eig.sum(), rtol=1e-10)
    np.testing.assert_allclose(coords.var(axis=0, ddof=1), eig[:2], rtol=1e-10)
    perm = rng.permutation(100)
    np.testing.assert_allclose(metrics.pca_2d(x[perm])[0], coords[perm], atol=1e-10)
    np.testing.assert_allclose(metrics.pca_2d(-x)[0], -coords, atol=1e-10)
    one_dim, one_ratio = metrics.pca_2d(np.arange(5.0)[:, None])
    np.testing.assert_allclose(one_ratio, [1.0, 0.0])
    np.testing.assert_allclose(one_dim[:, 1], 0.0)
