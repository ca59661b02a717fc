"""Attention statistics, one function each, shared by `inspect`, `compare`, `stats` and `ablate`, and `TABLE`: each
statistic once (name, help, unit, how it is counted, its definitions, its titles), from which every list of names,
columns, titles and units in posemb is derived (`STATS_VIEW`, `PAIRS_VIEW` and `LAYERS_VIEW` give each view's order).

Every function takes attention maps `a` of shape (..., n, n) whose rows are queries and returns one value per
query row (shape (..., rows)); callers average over rows (and heads, layers or texts) as they need.

Each statistic has a NumPy version (one text, no padding) and a torch version (`*_torch`) for padded batches on the
model's device, used by `stats`. The torch versions implement the same formulas (tests/test_stats.py checks that they
agree with the NumPy ones); they take maps of shape (batch, heads, n, n) padded on the right and, where a formula
needs the text's own length, a key mask (batch, n) that is true at real tokens. Rows past a text's length hold
garbage that callers must mask out. torch is imported lazily, so `posemb --help` never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

ENTROPY_SMOOTHING = 1e-4
CACHE_BYTES = 1 << 21  # entropy's temporaries per pass: about a core's L2 cache
ROW_SUM_TOLERANCE = 1e-4  # float32; half precision: its machine epsilon (see _Reducer.check_rows)


def entropy(a: np.ndarray) -> np.ndarray:
    """−Σ_j a'[i,j]·ln a'[i,j] in nats, with a' = (1 − ε)·a + ε/n, ε = 1e-4, so that zeros are defined: the smoothing
    of Clark et al.'s notebook (`0.9999 * attns + 0.0001 / n`)."""
    n = a.shape[-1]
    smoothed = (1.0 - ENTROPY_SMOOTHING) * a + ENTROPY_SMOOTHING / n
    return -(smoothed * np.log(smoothed)).sum(-1)


def uniform_entropy(n: int, causal: bool = False) -> np.ndarray:
    """Per query row, the entropy of a row that spreads evenly over the keys it can see: ln n for each row of a
    bidirectional model (Clark et al.'s `uniform_attn_entropy`), ln(i + 1) for query i of a causal model, which sees
    keys 0..i. The baseline `entropy` is read against; callers average it over the same rows."""
    if causal:
        return np.log(np.arange(1, n + 1, dtype=np.float64))
    return np.full(n, np.log(n), dtype=np.float64)


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
    """a[i,i−1] for rows i ≥ 1: averaged over the n − 1 rows that have a previous token. Clark et al.'s notebook sums
    the same entries (its selector `np.eye(n, n, -1)`, "left") but divides by all n rows, so its value is posemb's
    × (n − 1)/n per text; posemb leaves out row 0, where the quantity does not exist."""
    n = a.shape[-1]
    return a[..., np.arange(1, n), np.arange(0, n - 1)]


def next_token(a: np.ndarray) -> np.ndarray:
    """a[i,i+1] for rows i ≤ n − 2, averaged over those n − 1 rows (the notebook's `np.eye(n, n, 1)`, "right",
    divided by n: see `previous_token`)."""
    n = a.shape[-1]
    return a[..., np.arange(0, n - 1), np.arange(1, n)]


def first_tokens(n: int, k: int) -> np.ndarray:
    """Key mask of the first k positions of a text of n tokens."""
    return np.arange(n) < k


def sink(a: np.ndarray, k: int) -> np.ndarray:
    """Attention-sink mass Σ_{j<k} a[i,j] on the first k tokens (Xiao et al. 2023, "Efficient Streaming Language
    Models with Attention Sinks"): `mass_on` with the first k key positions."""
    return mass_on(a, first_tokens(a.shape[-1], k))


class Scratch:
    """Temporaries that a block reduction reuses from block to block: one flat buffer per name, grown as needed. A
    fresh array of a few MiB per pass is memory the allocator maps and the kernel zeroes again each time; at 8k
    tokens that was half of `entropy_torch`'s time (13 against 7 ms on a block of 32 rows × 32 heads). An owner
    (one reduction of one forward) keeps one; a view it hands out is valid until the next `take` of that name."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised array of `like`'s shape, dtype and device."""
        import torch

        held = self._buffers.get(name)
        count = like.numel()
        if held is None or held.numel() < count or held.dtype != like.dtype or held.device != like.device:
            held = torch.empty(count, dtype=like.dtype, device=like.device)
            self._buffers[name] = held
        return held[:count].view(like.shape)


def entropy_torch(a: torch.Tensor, key_mask: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    """`entropy` for a padded batch: n is each text's own length (key_mask.sum), padded keys are left out of Σ_j.

    a: (batch, heads, rows, n), all query rows or a block of them; key_mask: (batch, n) bool. Returns (batch, heads,
    rows). A padded key carries zero attention, so its smoothed term is the constant (ε/n)·ln(ε/n): the sum runs over
    all keys in three passes (smooth, ln, x·ln x summed) and that constant is taken back out for each padded key. The
    passes run a few heads at a time, so that their temporaries stay in cache (twice as fast on a 16-row block of 32
    heads × 8k keys as one pass over the whole block; the same numbers), in `scratch`'s buffers when given."""
    import torch

    n = key_mask.sum(-1).to(a.dtype)[:, None, None]  # (batch, 1, 1)
    floor = (ENTROPY_SMOOTHING / n)[..., None]
    total = a.new_empty(a.shape[:-1])
    step = max(1, CACHE_BYTES // max(1, a[:, :1].numel() * a.element_size()))
    scratch = scratch or Scratch()
    for first in range(0, a.shape[1], step):
        chunk = a[:, first : first + step]
        smoothed = scratch.take("smoothed", chunk)  # two temporaries: smoothed, its ln
        torch.add(floor, chunk, alpha=1.0 - ENTROPY_SMOOTHING, out=smoothed)
        logs = torch.log(smoothed, out=scratch.take("log", chunk))
        # Σ_j x·ln x per row: the smoothed terms are > 0, so no xlogy; einsum is one fused product per row, 3x faster
        # on CPU than linalg.vecdot (which multiplies into a temporary, then sums)
        total[:, first : first + step] = torch.einsum("...j,...j->...", smoothed, logs)
    padded = a.shape[-1] - n
    return -(total - padded * floor[..., 0] * floor[..., 0].log())


def distance_torch(a: torch.Tensor, first_row: int = 0) -> torch.Tensor:
    """`distance` for a batch: Σ_j a[i,j]·|i − j|. Padded keys carry zero attention, so need no mask.

    `a` may be a block of query rows (…, rows, n) of a longer map: its rows are i = first_row, first_row + 1, …"""
    import torch

    rows = torch.arange(first_row, first_row + a.shape[-2], device=a.device, dtype=a.dtype)
    keys = torch.arange(a.shape[-1], device=a.device, dtype=a.dtype)
    return (a * (rows[:, None] - keys[None, :]).abs()).sum(-1)


def mass_on_torch(a: torch.Tensor, key_masks: torch.Tensor) -> torch.Tensor:
    """`mass_on` for several key masks at once, as one matrix product: Σ_j a[i,j]·mask_k[j].

    a: (batch, heads, rows, n); key_masks: (batch, n, k), 1.0 where a key counts. Returns (batch, heads, rows, k)."""
    return a @ key_masks[:, None].to(a.dtype)


def self_attention_torch(a: torch.Tensor, first_row: int | None = None) -> torch.Tensor:
    """`self_attention`: a[i,i], shape (batch, heads, n); with `first_row`, of a block of rows (see `_offset_torch`)."""
    return a.diagonal(0, -2, -1) if first_row is None else _offset_torch(a, 0, first_row)


def previous_token_torch(a: torch.Tensor, first_row: int | None = None) -> torch.Tensor:
    """`previous_token`: a[i,i−1] for rows i = 1..n−1, shape (batch, heads, n − 1); row i is real if key_mask[i].
    With `first_row`: per row of a block (see `_offset_torch`), 0 for row 0, which has no previous token."""
    return a.diagonal(-1, -2, -1) if first_row is None else _offset_torch(a, -1, first_row)


def next_token_torch(a: torch.Tensor, first_row: int | None = None) -> torch.Tensor:
    """`next_token`: a[i,i+1] for rows i = 0..n−2, shape (batch, heads, n − 1); row i counts if key_mask[i + 1].
    With `first_row`: per row of a block (see `_offset_torch`)."""
    return a.diagonal(1, -2, -1) if first_row is None else _offset_torch(a, 1, first_row)


def _offset_torch(a: torch.Tensor, offset: int, first_row: int) -> torch.Tensor:
    """a[i, i + offset] for the rows i = first_row, first_row + 1, … of a block (batch, heads, rows, keys), shape
    (batch, heads, rows); 0 where key i + offset is not in the block (before key 0, or past its last column: a causal
    block stops at its last row, and the keys beyond have probability 0)."""
    import torch

    rows, keys = a.shape[-2], a.shape[-1]
    columns = torch.arange(first_row + offset, first_row + offset + rows, device=a.device)
    inside = (columns >= 0) & (columns < keys)
    picked = a[..., torch.arange(rows, device=a.device), columns.clamp(0, max(keys - 1, 0))]
    return torch.where(inside, picked, torch.zeros((), dtype=a.dtype, device=a.device))


@dataclass(frozen=True)
class Statistic:
    """One attention statistic. Every list of statistic names, titles and units in posemb is read from `TABLE`."""

    name: str
    help: str
    unit: str  # "share" (of a row's attention), "nats" or "tokens"
    counted: str  # "row": a mean over real query rows; "edge": over rows with that neighbour; "closed": a closed form
    numpy: Callable[..., Any] | None  # per query row of one text's maps (the definition)
    torch: Callable[..., Any] | None  # the same on padded batches (stats' reducer)
    title: str | None = None  # its panel in `posemb stats`' picture ({k}: sink's k); None: not drawn there
    compare_label: str | None = None  # its panel in `posemb compare`'s figure; None: not drawn there
    ablated: bool = False  # `posemb ablate` reports its change per layer


# Each statistic once. The order here is the order of the sums in stats' reducer and in a partial file.
TABLE = (
    Statistic(
        "cls",
        "mass on [CLS]/BOS (the special token at position 0)",
        "share",
        "row",
        mass_on,
        mass_on_torch,
        "cls: mass on [CLS]/BOS",
    ),
    Statistic(
        "sep",
        "mass on [SEP]/EOS (the other special tokens)",
        "share",
        "row",
        mass_on,
        mass_on_torch,
        "sep: mass on [SEP]/EOS",
    ),
    Statistic(
        "punct", "mass on punctuation tokens", "share", "row", mass_on, mass_on_torch, "punct: mass on punctuation"
    ),
    Statistic(
        "sink",
        "mass on the first k tokens (Xiao et al. 2023)",
        "share",
        "row",
        sink,
        mass_on_torch,
        "sink: mass on first {k}",
    ),
    Statistic("self", "a[i, i]", "share", "row", self_attention, self_attention_torch, "self: a[i, i]", ablated=True),
    Statistic(
        "prev",
        "a[i, i−1], rows i ≥ 1",
        "share",
        "edge",
        previous_token,
        previous_token_torch,
        "prev: a[i, i−1]",
        "share on previous",
        ablated=True,
    ),
    Statistic(
        "next",
        "a[i, i+1], rows i ≤ n − 2",
        "share",
        "edge",
        next_token,
        next_token_torch,
        "next: a[i, i+1]",
        "share on next",
        ablated=True,
    ),
    Statistic(
        "entropy",
        "entropy of the row, smoothed",
        "nats",
        "row",
        entropy,
        entropy_torch,
        "entropy (nats)",
        "entropy (nats)",
        ablated=True,
    ),
    Statistic(
        "uniform_entropy",
        "entropy of a head spread evenly over the keys a row sees",
        "nats",
        "closed",
        uniform_entropy,
        None,
    ),
    Statistic(
        "distance",
        "Σ_j a[i, j]·|i − j| (Vig & Belinkov 2019)",
        "tokens",
        "row",
        distance,
        distance_torch,
        "distance Σ a·|i−j| (tokens)",
        "mean distance",
        ablated=True,
    ),
    Statistic(
        "special",
        "mass on every special token (cls + sep)",
        "share",
        "row",
        mass_on,
        mass_on_torch,
        compare_label="share on special",
    ),
    Statistic(
        "within", "mass on the row's own segment (pairs)", "share", "row", mass_on, mass_on_torch, "within own segment"
    ),
    Statistic("across", "mass on the other segment (pairs)", "share", "row", mass_on, mass_on_torch, "across segments"),
)
BY_NAME = {statistic.name: statistic for statistic in TABLE}

# Where each is reported, in the order it is shown:
STATS_VIEW = ("cls", "sep", "punct", "self", "prev", "next", "entropy", "uniform_entropy", "distance", "sink")
PAIRS_VIEW = ("within", "across")  # posemb stats --pairs, after STATS_VIEW
LAYERS_VIEW = ("entropy", "uniform_entropy", "distance", "special", "self", "prev", "next")  # inspect, compare
assert set(STATS_VIEW + PAIRS_VIEW + LAYERS_VIEW) == set(BY_NAME), "every statistic is in a view, every view's in TABLE"


def names(view: tuple[str, ...], counted: str | None = None, **flags: bool) -> tuple[str, ...]:
    """The names of `view` (in its order) counted so (None: any), with the given flags (e.g. ablated=True)."""
    return tuple(
        name
        for name in view
        if (counted is None or BY_NAME[name].counted == counted)
        and all(getattr(BY_NAME[name], flag) == value for flag, value in flags.items())
    )


def summed(counted: str) -> tuple[str, ...]:
    """The statistics `posemb stats` sums over rows counted so ("row" or "edge"), in TABLE order (the reducer's)."""
    reported = set(STATS_VIEW + PAIRS_VIEW)
    return tuple(s.name for s in TABLE if s.counted == counted and s.name in reported)


SUMMARY_KEYS = LAYERS_VIEW


def rows_counted(name: str, n: int) -> int:
    """Query rows a statistic of LAYERS_VIEW averages over, per head, in a text of n tokens: every row, or for prev
    and next (counted "edge") the n − 1 rows that have that neighbour."""
    return max(n - 1, 0) if BY_NAME[name].counted == "edge" else n


class LayerSums:
    """Per layer, each statistic's sum over heads and query rows and the number of rows it covers, pooled over texts:
    the mean is sum / count, so every query row of every text weighs the same (the rule `stats` uses too; Clark et
    al.'s notebook instead averages each text's mean over texts). prev counts rows i ≥ 1 and next rows i ≤ n − 2;
    uniform_entropy is `uniform_entropy(n, causal)` for the rows of a text of n tokens. The sums come from one text's
    full maps (`add`) or from its blocks of probabilities (`BlockSums`, posemb's backend: no N × N maps)."""

    def __init__(self, causal: bool = False) -> None:
        self.causal = causal
        self.sums: np.ndarray | None = None  # (layers, keys)
        self.counts: np.ndarray | None = None

    def add(self, attention: np.ndarray, special_mask: np.ndarray) -> None:
        """One text's maps (layers, heads, n, n) and its special-token key mask (n,)."""
        layers, heads, n = attention.shape[0], attention.shape[1], attention.shape[-1]
        sums = np.zeros((layers, len(SUMMARY_KEYS)))
        for layer, maps in enumerate(attention):
            values = {
                "entropy": entropy(maps),
                "uniform_entropy": np.broadcast_to(uniform_entropy(n, self.causal), maps.shape[:-1]),
                "distance": distance(maps),
                "special": mass_on(maps, special_mask),
                "self": self_attention(maps),
                "prev": previous_token(maps),
                "next": next_token(maps),
            }
            sums[layer] = [float(values[key].sum(dtype=np.float64)) for key in SUMMARY_KEYS]
        self.add_sums(sums, heads, n)

    def add_sums(self, sums: np.ndarray, heads: int, n: int) -> None:
        """One text's sums (layers, SUMMARY_KEYS) over its `heads` heads and its rows (n tokens)."""
        rows = heads * np.array([rows_counted(key, n) for key in SUMMARY_KEYS], dtype=np.float64)
        self.sums = sums if self.sums is None else self.sums + sums
        self.counts = np.tile(rows, (len(sums), 1)) + (0 if self.counts is None else self.counts)

    def merge(self, other: LayerSums) -> None:
        """Pool another text's (or corpus') sums into these."""
        if other.sums is None or other.counts is None:
            return
        self.sums = other.sums.copy() if self.sums is None else self.sums + other.sums
        self.counts = other.counts.copy() if self.counts is None else self.counts + other.counts

    def means(self) -> list[dict[str, float]]:
        if self.sums is None or self.counts is None:
            return []
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
        return [
            {"layer": layer, **{key: float(v) for key, v in zip(SUMMARY_KEYS, row, strict=True)}}
            for layer, row in enumerate(means)
        ]


def layer_summary(attention: np.ndarray, special_mask: np.ndarray, causal: bool = False) -> list[dict[str, float]]:
    """Per layer, each statistic averaged over heads and query rows of one text (attention: layers, heads, n, n)."""
    sums = LayerSums(causal)
    sums.add(attention, special_mask)
    return sums.means()


BLOCK_KEYS = tuple(key for key in SUMMARY_KEYS if BY_NAME[key].counted != "closed")  # what BlockSums reads from maps


class BlockSums:
    """`LayerSums`' sums for each text of a padded batch, from the blocks of attention probabilities that
    `runner.run(reduce=...)` hands over (`__call__(layer, first_row, block)`: block float32 (batch, heads, rows,
    keys ≤ N), rows first_row.., missing keys with probability 0), in float64 accumulators, with the torch
    definitions above; so no N × N map is kept. Texts are padded on the right: real tokens are the first n.

    Beside the sums it keeps what `inspect` checks in the maps: the largest |Σ_j a[i, j] − 1| of a finite real row
    (`deviation`, batch × layers) and which heads have a non-finite weight in a real row (`nonfinite`, batch ×
    layers × heads). `text(i)` gives text i's `LayerSums`."""

    def __init__(self, layers: int, real: torch.Tensor, special: torch.Tensor, causal: bool = False) -> None:
        """real, special: (batch, N) bool, true at a text's real tokens / at its special tokens."""
        import torch

        self.layers, self.causal = layers, causal
        self.real, self.special = real, special & real
        # MPS has no float64: accumulate there on the CPU
        self.device = "cpu" if str(real.device).startswith("mps") else real.device
        batch = real.shape[0]
        self.sums = torch.zeros(batch, layers, len(BLOCK_KEYS), dtype=torch.float64, device=self.device)
        self.deviation = torch.zeros(batch, layers, dtype=torch.float64, device=self.device)
        self.nonfinite: Any = None  # (batch, layers, heads), once the heads are known
        self.heads = 0
        self.scratch = Scratch()

    def __call__(self, layer: int, first_row: int, block: torch.Tensor) -> None:
        import torch

        batch, heads, rows, keys = block.shape
        if self.nonfinite is None:
            self.heads = heads
            self.nonfinite = torch.zeros(batch, self.layers, heads, dtype=torch.bool, device=self.device)
        length = self.real.shape[1]
        real = self.real[:, first_row : first_row + rows]  # (batch, rows)
        index = torch.arange(first_row, first_row + rows, device=block.device)
        has_next = torch.zeros_like(real)  # row i has a next token when token i + 1 is real
        ahead = self.real[:, first_row + 1 : min(length, first_row + 1 + rows)]
        has_next[:, : ahead.shape[1]] = ahead
        special = self.special[:, :keys, None]
        values = {
            "entropy": (entropy_torch(block, self.real, self.scratch), real),
            "distance": (distance_torch(block, first_row), real),
            "special": (mass_on_torch(block, special)[..., 0], real),
            "self": (self_attention_torch(block, first_row), real),
            "prev": (previous_token_torch(block, first_row), real & (index >= 1)),
            "next": (next_token_torch(block, first_row), has_next),
        }
        zero = torch.zeros((), dtype=block.dtype, device=block.device)
        for k, key in enumerate(BLOCK_KEYS):
            value, counted = values[key]
            self.sums[:, layer, k] += _sum64(torch.where(counted[:, None, :], value, zero), (1, 2)).to(self.device)
        finite = torch.isfinite(block).all(-1)  # (batch, heads, rows)
        off = (block.sum(-1) - 1.0).abs()
        off = torch.where(finite & real[:, None, :], off, zero).amax(dim=(1, 2))
        self.deviation[:, layer] = torch.maximum(self.deviation[:, layer], off.to(self.deviation))
        self.nonfinite[:, layer] |= ((~finite) & real[:, None, :]).any(-1).to(self.device)

    def text(self, i: int) -> LayerSums:
        """Text i's sums, as `LayerSums.add` gives them from its full maps."""
        n = int(self.real[i].sum())
        sums = np.zeros((self.layers, len(SUMMARY_KEYS)))
        measured = self.sums[i].cpu().numpy()
        for k, key in enumerate(SUMMARY_KEYS):
            if key in BLOCK_KEYS:
                sums[:, k] = measured[:, BLOCK_KEYS.index(key)]
            else:  # uniform_entropy: a closed form of n, the same for every head
                sums[:, k] = self.heads * float(uniform_entropy(n, self.causal).sum(dtype=np.float64))
        one = LayerSums(self.causal)
        one.add_sums(sums, self.heads, n)
        return one


def _sum64(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Sum over `dims` in float64 (on the CPU for MPS, which has no float64)."""
    import torch

    if str(values.device).startswith("mps"):
        return values.sum(dim=dims).cpu().double()
    return values.sum(dim=dims, dtype=torch.float64)
