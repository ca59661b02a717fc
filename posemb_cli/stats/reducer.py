"""The reducer: each block of attention probabilities that `runner.run` hands over, reduced into float64 sums per
head (posemb's backend, or the eager fallback's maps a layer at a time)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import attention, backend, blocks, partials
from ..errors import PosembError
from ..models import LoadedModel
from .batching import _Batch
from .result import (
    _ALL,
    _CLS,
    _EDGE_VALUES,
    _PUNCT,
    _ROW_VALUES,
    _SEGMENT_A,
    _SEGMENT_B,
    _SEP,
    _SINK,
    DEFAULT_SINK_K,
    EDGE_SHARE,
    _Settings,
    distance_bins,
    extra_names,
)


@dataclass(frozen=True)
class _State:
    """The running sums after whole batches; replaced after each batch, never changed in place, so that an
    interruption mid-batch leaves the last consistent state to save."""

    rows: Any  # (layers, heads, len(_ROW_VALUES)) float64 tensor: sums over every real query row
    edges: Any  # (layers, heads, len(_EDGE_VALUES)): sums over rows with that neighbour
    counts: dict[str, Any]
    lines: int = 0  # corpus lines before the chunk being read (0 when the texts do not come from a corpus file)
    sha256: str = ""  # of those lines
    batches: int = 0  # batches of that chunk already in the sums
    chunk_lines: int = 0  # where that chunk ends, and the SHA-256 up to there: a resumed run checks it reads the same
    chunk_sha256: str = ""
    extra: Any = None  # (layers, heads, len(extra_names(settings))): the position measures' sums
    extra_names: tuple[str, ...] = ()  # their names (sum_<name> in a partial)


class _Reducer:
    """Reduces each block of attention probabilities that `runner.run` hands over (posemb's backend, or the eager
    maps of a fallback family cut into row blocks) to per-head sums, then lets the block go. `rows`, `edges` and
    `extra` hold one batch's sums; `add` makes the next `_State` from them."""

    def __init__(self, loaded: LoadedModel, pairs: bool, settings: _Settings | None = None) -> None:
        import torch

        self.loaded, self.pairs = loaded, pairs
        self.settings = settings or _Settings(pairs, 1, loaded.info.max_positions, DEFAULT_SINK_K)
        info = loaded.info
        # MPS has no float64: accumulate there on the CPU.
        self.accumulator_device = "cpu" if str(loaded.device).startswith("mps") else loaded.device
        self.extra_names = extra_names(self.settings)
        self.distance_bins = len(distance_bins(self.settings.limit))
        self.rows, self.edges, self.extra = self._zeros()
        self.deviation = torch.zeros((), device=loaded.device)
        self.tolerance = max(attention.ROW_SUM_TOLERANCE, torch.finfo(getattr(torch, loaded.dtype)).eps)
        self.calls = [0] * info.layers
        self.batch: _Batch | None = None
        self.memory = backend.DEFAULT_MEMORY
        self.on_layer: Callable[[int], None] | None = None
        self.scratch = attention.Scratch()  # the block reductions' temporaries, reused from block to block

    def _zeros(self) -> tuple[Any, Any, Any]:
        import torch

        layers, heads = self.loaded.info.layers, self.loaded.info.heads
        zeros: dict[str, Any] = {"dtype": torch.float64, "device": self.accumulator_device}
        rows = torch.zeros(layers, heads, len(_ROW_VALUES), **zeros)
        extra = torch.zeros(layers, heads, len(self.extra_names), **zeros)
        return rows, torch.zeros(layers, heads, len(_EDGE_VALUES), **zeros), extra

    def zero_state(self) -> _State:
        rows, edges, extra = self._zeros()
        counts: dict[str, Any] = partials.zero_counts()
        return _State(rows=rows, edges=edges, counts=counts, extra=extra, extra_names=self.extra_names)

    def adopt(self, state: _State) -> _State:
        """A state whose sums are NumPy arrays (read from a checkpoint), with them as tensors on this device."""
        import torch

        device = self.accumulator_device
        rows, edges = (torch.as_tensor(np.asarray(x, np.float64), device=device) for x in (state.rows, state.edges))
        if rows.shape != self.rows.shape or edges.shape != self.edges.shape:
            raise PosembError(f"the checkpoint's sums are not those of {self.loaded.info.name} (their shape differs)")
        extra = self.extra.clone() if state.extra is None else torch.as_tensor(np.asarray(state.extra), device=device)
        if extra.shape != self.extra.shape:
            raise PosembError(f"the checkpoint's sums are not those of {self.loaded.info.name} (their shape differs)")
        return dataclasses.replace(state, rows=rows, edges=edges, extra=extra, extra_names=self.extra_names)

    def add(self, state: _State, counts: dict[str, Any], batches: int) -> _State:
        """The state after this batch: new tensors, so that `state` itself stays as it was."""
        extra = self.extra if state.extra is None else state.extra + self.extra
        return dataclasses.replace(
            state,
            rows=state.rows + self.rows,
            edges=state.edges + self.edges,
            extra=extra,
            counts=counts,
            batches=batches,
        )

    def hooked(self) -> Any:
        """The context the batches run in (the attention is observed per forward, by `runner.run`)."""
        import contextlib

        return contextlib.nullcontext()

    def run(self, batch: _Batch) -> None:
        import torch

        from .. import runner

        self.batch = batch
        self.rows, self.edges, self.extra = self._zeros()
        size, length = batch.real.shape
        layers, heads = self.loaded.info.layers, self.loaded.info.heads
        zeros: dict[str, Any] = {"dtype": torch.float64, "device": self.accumulator_device}
        self.received = torch.zeros(size, layers, heads, length, **zeros)
        self._prepare(batch)
        try:
            runner.run(self.loaded, batch.inputs, reduce=self.reduce_block, memory=self.memory, on_layer=self.on_layer)
            self._key_measures()
        finally:
            self.batch = None

    def _prepare(self, batch: _Batch) -> None:
        """Per batch: the distance-bin table and each text's key bins and first / last 1% masks (key_profile)."""
        import torch

        real = batch.real
        size, length = real.shape
        device = real.device
        self.bin_of = blocks.bin_lookup(distance_bins(self.settings.limit), length, device)
        bins = self.settings.bins
        n = real.sum(-1, keepdim=True)  # (batch, 1)
        keys = torch.arange(length, device=device)[None, :]
        key_bins = torch.div(keys * bins, n, rounding_mode="floor")
        self.key_bins = torch.where(real, key_bins, bins)  # padded keys: an extra bin, dropped
        edge = torch.ceil(n.double() * EDGE_SHARE).long()
        first = (keys < edge) & real
        last = (keys >= n - edge) & real
        self.key_edges = torch.stack([first, last], dim=-1).double()  # (batch, n, 2)

    def reduce_block(self, layer: int, top: int, block: Any) -> None:
        """Add one block of probabilities (batch, heads, rows, keys) of rows top.. of a layer's maps to the sums.
        `keys` may be less than the padded length: the columns beyond have probability 0."""
        import torch

        batch = self.batch
        assert batch is not None, "attention observed outside a posemb batch"
        if top == 0:
            self.calls[layer] += 1
        size, heads, count, keys = block.shape
        length = batch.real.shape[1]
        device = block.device
        rows = slice(top, top + count)
        index = torch.arange(top, top + count, device=device)

        real = batch.real[:, None, rows]  # (batch, 1, rows)
        has_prev = real & (index >= 1)
        has_next = torch.zeros_like(real)
        ahead = (index + 1 < length).nonzero().flatten()
        has_next[:, :, ahead] = batch.real[:, None, top + 1 : top + 1 + len(ahead)]
        edges = torch.stack(
            [
                torch.where(has_prev, attention.previous_token_torch(block, top), 0.0),
                torch.where(has_next, attention.next_token_torch(block, top), 0.0),
            ],
            dim=-1,
        )
        self.edges[layer] += self._sum(edges)
        # the key masses, distance and distance_profile of every row from one matrix product (blocks.py)
        plan = blocks.plan(top, count, keys, self.bin_of, self.distance_bins)
        masses, distance, profile = blocks.reduce(block, plan, batch.key_masks[:, :keys])
        in_b = batch.segment_b[:, None, rows]
        own = torch.where(in_b, masses[..., _SEGMENT_B], masses[..., _SEGMENT_A])
        other = torch.where(in_b, masses[..., _SEGMENT_A], masses[..., _SEGMENT_B])
        values = torch.stack(
            [
                masses[..., _CLS],
                masses[..., _SEP],
                masses[..., _PUNCT],
                masses[..., _SINK],
                attention.self_attention_torch(block, top),
                attention.entropy_torch(block, batch.real, self.scratch),
                distance,
                own,
                other,
            ],
            dim=-1,
        )
        self.rows[layer] += self._sum(torch.where(real[..., None], values, 0.0))
        off = torch.where(real, (masses[..., _ALL] - 1.0).abs(), 0.0)
        self.deviation = torch.maximum(self.deviation, off.max().to(self.deviation.dtype))
        self.extra[layer, :, 1 : 1 + self.distance_bins] += self._sum(torch.where(real[..., None], profile, 0.0))
        # key_profile and sink_rate: the mass each key receives from the text's real rows, summed over the layer's
        # blocks (binned after the forward)
        if bool(real.all()):  # a block's rows summed in float32 (a float64 sum converts the block first: 30x slower)
            received = block.sum(2).double()
        else:
            received = torch.matmul(real[:, :, None, :].to(block.dtype), block)[:, :, 0].double()
        self.received[:, layer, :, :keys] += received.to(self.received.device)

    def _key_measures(self) -> None:
        """After a batch's forward: sink_rate's count of texts (α₀, each text's mean attention on key 0, above the
        threshold) and key_profile's mass per key bin and on the first / last 1% of keys, from the received mass."""
        import torch

        batch = self.batch
        assert batch is not None
        size, layers, heads, length = self.received.shape
        n = batch.real.sum(-1).to(self.received.device, torch.float64)[:, None, None]
        sinks = (self.received[..., 0] / n > self.settings.sink_threshold).sum(0).double()
        self.extra[..., 0] += sinks.to(self.extra.device)
        key_bins = self.settings.bins
        first = 1 + self.distance_bins
        index = self.key_bins[:, None, None, :].to(self.received.device).expand(size, layers, heads, length)
        by_bin = torch.zeros(size, layers, heads, key_bins + 1, dtype=torch.float64, device=self.received.device)
        by_bin.scatter_add_(-1, index, self.received)
        self.extra[..., first : first + key_bins] += by_bin[..., :key_bins].sum(0).to(self.extra.device)
        first += key_bins
        edges_mass = torch.matmul(self.received, self.key_edges[:, None].to(self.received.device))  # (b, L, h, 2)
        self.extra[..., first : first + 2] += edges_mass.sum(0).to(self.extra.device)

    def _sum(self, values: Any) -> Any:
        """Sum over texts and rows → (heads, statistics), in float64 (on the CPU for MPS, which has none)."""
        import torch

        if str(values.device).startswith("mps"):
            return values.sum(dim=(0, 2)).cpu().double()
        return values.sum(dim=(0, 2), dtype=torch.float64)

    def check_rows(self) -> None:
        """Rows must sum to 1: to 1e-4 in float32, to the machine epsilon of a half-precision --dtype (the
        probabilities are rounded to it)."""
        deviation = float(self.deviation)
        if deviation >= self.tolerance:
            raise PosembError(
                f"attention rows of {self.loaded.info.name} do not sum to 1 (off by {deviation:.2g}); "
                "posemb needs softmax attention probabilities"
            )

    def check_layers(self) -> None:
        """Every layer's attention was observed (once any batch ran)."""
        missing = [layer for layer, calls in enumerate(self.calls) if not calls]
        if missing and any(self.calls):
            raise PosembError(f"the attention of layer {missing[0]} of {self.loaded.info.name} was never computed")
