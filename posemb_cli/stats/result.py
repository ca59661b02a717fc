"""The result of `posemb stats` and what its numbers mean: the statistics' names, the patterns, `CorpusStats`
(what every renderer reads), and the per-head means made from the exact sums (`_head_rows`, `_measures`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .. import attention, backend
from ..errors import PosembUsageError
from ..finite import finite_number, index_ranges, nonfinite_warning
from ..models import ModelInfo

STATISTICS = attention.STATS_VIEW


PAIR_STATISTICS = attention.PAIRS_VIEW


PATTERNS = ("vertical", "diagonal", "block", "heterogeneous")


VERTICAL_THRESHOLD = 0.5  # cls + sep


DIAGONAL_THRESHOLD = 0.5  # self + prev + next


BLOCK_THRESHOLD = 0.8  # within, pairs only


DEFAULT_SINK_K = 4


DEFAULT_SINK_THRESHOLD = 0.3  # sink_rate's ε (Gu et al., ICLR 2025)


DEFAULT_BINS = 10  # key_profile: equal bins of the text


EDGE_SHARE = 0.01  # key_profile's first / last: this share of the text's keys (at least one key)


Item = Union[str, tuple[str, str]]  # a text, or a sentence pair with --pairs


# Columns of the key masks multiplied with each layer's maps in one matrix product (attention.mass_on_torch).
_CLS, _SEP, _PUNCT, _SINK, _ALL, _SEGMENT_A, _SEGMENT_B = range(7)


# Per-row values summed over all real rows, and over rows with a neighbour (prev: i ≥ 1, next: i ≤ n − 2).
_ROW_VALUES = attention.summed("row")


_EDGE_VALUES = attention.summed("edge")


@dataclass
class CorpusStats:
    """Per-head means over a corpus; `heads` rows are what every renderer (table, JSON, CSV, plot) shows."""

    model: ModelInfo
    texts: int
    tokens: int
    pairs: bool
    sink_k: int
    max_length: int | None
    truncated: int
    skipped: int
    heads: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    # {"count": N, "indices": [...], "missing": [...]}: the shards of the corpus these numbers hold; None for all
    shards: dict[str, Any] | None = None
    # The position measures (docs/long-context.md); None where the sums were not made (a partial of posemb 0.4)
    sink_threshold: float | None = None
    sink_rate: float | None = None  # over all heads: the mean of the heads' sink_rate
    distance_bins: list[list[int]] | None = None  # [first, last] offset of each distance_profile bin
    key_bins: int | None = None
    key_profile: list[dict[str, Any]] | None = None  # per layer: {"layer", "bins": [...], "first", "last"}

    def columns(self) -> list[str]:
        return columns(self.pairs)

    def to_json(self) -> dict[str, Any]:
        shards = {"shards": self.shards} if self.shards is not None else {}
        counted = {"texts": self.texts, "tokens": self.tokens}
        measures = {
            "sink_threshold": self.sink_threshold,
            "sink_rate": self.sink_rate,
            "distance_bins": self.distance_bins,
            "key_bins": self.key_bins,
            "key_profile": self.key_profile,
        }
        return {"model": self.model.to_json(), **counted, **shards, **measures, "heads": self.heads}

    def grid(self, column: str) -> np.ndarray:
        """One column as a (layers, heads) array, NaN where undefined: what the plot shows."""
        grid = np.full((self.model.layers, self.model.heads), np.nan)
        for row in self.heads:
            value = row[column]
            grid[row["layer"], row["head"]] = np.nan if value is None else value
        return grid

    def sorted_heads(self, column: str | None = None, reverse: bool = False) -> list[dict[str, Any]]:
        """Rows sorted by a column (ties and undefined values keep layer/head order; undefined go last)."""
        check_sort_column(column, self.pairs)
        if column is None:
            return list(self.heads)
        defined = [row for row in self.heads if row[column] is not None]
        undefined = [row for row in self.heads if row[column] is None]
        return sorted(defined, key=lambda row: row[column], reverse=reverse) + undefined


def columns(pairs: bool) -> list[str]:
    """The columns of a head row, in order: the JSON keys, the CSV header, the table's columns."""
    return ["layer", "head", *STATISTICS, *(PAIR_STATISTICS if pairs else ()), "pattern"]


def check_sort_column(column: str | None, pairs: bool) -> None:
    choices = columns(pairs)
    if column is not None and column not in choices:
        hint = " (within/across need --pairs)" if column in PAIR_STATISTICS else ""
        raise PosembUsageError(f"--sort {column}: no such column{hint}; choose one of {', '.join(choices)}")


def pattern(row: dict[str, Any], pairs: bool) -> str:
    """The head's pattern label (Kovaleva et al. 2019) from its means; thresholds in the module docstring."""

    def value(key: str) -> float:
        return row.get(key) or 0.0

    vertical = value("cls") + value("sep")
    diagonal = value("self") + value("prev") + value("next")
    candidates = [(vertical, "vertical")] if vertical >= VERTICAL_THRESHOLD else []
    candidates += [(diagonal, "diagonal")] if diagonal >= DIAGONAL_THRESHOLD else []
    if candidates:
        return max(candidates)[1]
    if pairs and value("within") >= BLOCK_THRESHOLD:
        return "block"
    return "heterogeneous"


@dataclass(frozen=True)
class _Settings:
    """What a pass over texts needs besides the model and the texts."""

    pairs: bool
    batch_size: int  # as run: 1 for models whose position encoding depends on the padded length
    limit: int | None  # --max-length, or the model's maximum
    sink_k: int
    sink_threshold: float = DEFAULT_SINK_THRESHOLD
    bins: int = DEFAULT_BINS
    memory: int = backend.DEFAULT_MEMORY  # bytes for the attention blocks' temporaries (changes no number)
    on_layer: Callable[[int], None] | None = field(default=None, compare=False)  # progress within one forward


def _head_rows(sums: dict[str, np.ndarray], counts: dict[str, Any], pairs: bool) -> list[dict[str, Any]]:
    """Sums / row counts → one row per head, keys in the documented order; None where no row counted."""
    if not counts["texts"]:
        return []
    means = {key: sums[key] / counts["tokens"] for key in _ROW_VALUES}
    edge_rows = counts["edge_rows"]  # 0 when every text has one token: prev and next are then undefined
    for key in _EDGE_VALUES:
        edges = sums[key]
        means[key] = edges / edge_rows if edge_rows else np.full(edges.shape, None)
    uniform = counts["uniform"] / counts["tokens"]
    heads = []
    layers, heads_per_layer = sums[_ROW_VALUES[0]].shape
    for layer, head in itertools.product(range(layers), range(heads_per_layer)):
        row: dict[str, Any] = {"layer": layer, "head": head}
        for key in columns(pairs)[2:-1]:  # the documented order; pattern last, from the others
            row[key] = uniform if key == "uniform_entropy" else finite_number(means[key][layer, head])
        row["pattern"] = pattern(row, pairs) if row["self"] is not None else None  # None: non-finite maps
        heads.append(row)
    return heads


def distance_bins(limit: int | None) -> list[list[int]]:
    """[first, last] offset of each distance_profile bin: 0, then 1, 2, 3–4, 5–8, 9–16, … (bin b ≥ 2 holds
    2^(b−2) + 1 .. 2^(b−1)), up to the largest offset of a text of `limit` tokens (None: the largest model posemb
    accepts, 2^24 positions)."""
    largest = max(1, (limit or 2**24) - 1)
    edges = [[0, 0], [1, 1]]
    while edges[-1][1] < largest:
        low = edges[-1][1] + 1
        edges.append([low, min(2 * edges[-1][1], largest) if edges[-1][1] > 1 else 2])
    return edges


def extra_names(settings: _Settings) -> tuple[str, ...]:
    """The position measures' sums, in the order of `_State.extra`: texts whose α₀ exceeds the threshold, the mass
    of each distance bin and of each key bin (over rows), and the mass on the first / last 1% of keys."""
    distance = [f"distance_bin_{b}" for b in range(len(distance_bins(settings.limit)))]
    keys = [f"key_bin_{b}" for b in range(settings.bins)]
    return ("sink_texts", *distance, *keys, "key_first", "key_last")


def _measures(
    sums: dict[str, np.ndarray], counts: dict[str, Any], settings: _Settings, heads: list[dict[str, Any]]
) -> dict[str, Any]:
    """sink_rate, distance_profile (added to each head's row) and key_profile from their sums; None (null in JSON)
    where the sums are absent (a partial written by posemb 0.4) or no text was read."""
    names = extra_names(settings)
    for row in heads:
        row["sink_rate"] = row["distance_profile"] = None
    empty = {"sink_threshold": settings.sink_threshold, "sink_rate": None, "distance_bins": None, "key_bins": None}
    if any(name not in sums for name in names) or not counts["texts"]:
        return {**empty, "key_profile": None}
    texts, rows = counts["texts"], counts["tokens"]
    distance = [name for name in names if name.startswith("distance_bin_")]
    rate = sums["sink_texts"] / texts
    for row in heads:
        layer, head = row["layer"], row["head"]
        row["sink_rate"] = finite_number(rate[layer, head])
        row["distance_profile"] = [finite_number(sums[name][layer, head] / rows) for name in distance]
    layers, per_layer = rate.shape
    key_profile = []

    def mean(name: str, layer: int) -> float | None:  # over the layer's heads and all rows
        return finite_number(sums[name][layer].sum() / (rows * per_layer))

    for layer in range(layers):
        bins = [mean(f"key_bin_{b}", layer) for b in range(settings.bins)]
        first, last = mean("key_first", layer), mean("key_last", layer)
        key_profile.append({"layer": layer, "bins": bins, "first": first, "last": last})
    return {
        "sink_threshold": settings.sink_threshold,
        "sink_rate": finite_number(rate.mean()),
        "distance_bins": distance_bins(settings.limit),
        "key_bins": settings.bins,
        "key_profile": key_profile,
    }


def _nonfinite_heads(heads: list[dict[str, Any]]) -> list[str]:
    """NaN or Inf in a head's attention make all its sums non-finite: its statistics are null; say which heads."""
    affected: dict[int, list[int]] = {}
    for row in heads:
        if any(row[key] is None for key in _ROW_VALUES if key in row):
            affected.setdefault(row["layer"], []).append(row["head"])
    places = [f"the attention of layer {layer} (heads {index_ranges(h)})" for layer, h in affected.items()]
    return nonfinite_warning(places)
