"""Running `posemb stats`: `corpus_stats` (texts in memory) and `run_shard` (a corpus file, shards, checkpoints,
resume), the sums they keep, and `partial_stats` (a partial's per-head means)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import attention, backend, partials
from ..batches import chunks
from ..errors import PosembError, PosembUsageError
from ..lines import CountedLines
from ..models import LoadedModel, ModelInfo
from ..partials import Partial, Shard, merge, read_partial
from .batching import DEFAULT_BATCH_SIZE, _Block, _collate, _encode, _max_length, _warnings, read_blocks
from .reducer import _Reducer, _State
from .result import (
    _EDGE_VALUES,
    _ROW_VALUES,
    DEFAULT_BINS,
    DEFAULT_SINK_K,
    DEFAULT_SINK_THRESHOLD,
    CorpusStats,
    Item,
    _head_rows,
    _measures,
    _nonfinite_heads,
    _Settings,
    extra_names,
)

__all__ = ["CorpusStats", "Partial", "Shard", "corpus_stats", "merge", "partial_stats", "read_partial", "run_shard"]


DEFAULT_CHECKPOINT_TEXTS = 1000  # --checkpoint saves after this many texts ...


DEFAULT_CHECKPOINT_SECONDS = 60.0  # ... or this many seconds, whichever comes first


def corpus_stats(
    loaded: LoadedModel,
    items: Iterable[Item],
    *,
    pairs: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    sink_k: int = DEFAULT_SINK_K,
    on_batch: Callable[[int], None] | None = None,
    sink_threshold: float = DEFAULT_SINK_THRESHOLD,
    bins: int = DEFAULT_BINS,
    memory: int = backend.DEFAULT_MEMORY,
    on_layer: Callable[[int], None] | None = None,
) -> CorpusStats:
    """Per-head attention statistics of texts (or (A, B) pairs with `pairs`), pooled over all their query rows.

    `max_length` cuts texts (pairs: the longer side first) to that many tokens, special tokens included; default the
    model's maximum positions. `on_batch(texts_done)` is called after every batch (progress, Ctrl-C bookkeeping).
    `sink_threshold` is sink_rate's ε, `bins` key_profile's bin count; `memory` bounds the attention blocks'
    temporaries (bytes); `on_layer(layer)` is called after each layer of each forward (progress on one long text)."""
    settings = _settings(loaded, pairs, batch_size, max_length, sink_k, sink_threshold, bins, memory, on_layer)

    def on_state(state: _State) -> None:
        if on_batch is not None and state.batches:
            on_batch(state.counts["texts"])

    blocks = (_Block(chunk) for chunk in chunks(items, partials.BLOCK_LINES))
    state = _accumulate(loaded, blocks, None, settings, None, on_state)
    return _result(loaded.info, _sums(state), state.counts, settings)


def run_shard(
    corpus: str | Path,
    shard: str | tuple[int, int] | Shard = "0/1",
    *,
    model: str | LoadedModel | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    pairs: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    sink_k: int = DEFAULT_SINK_K,
    encoding_errors: str = "strict",
    partial: str | Path | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_texts: int = DEFAULT_CHECKPOINT_TEXTS,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    on_batch: Callable[[int], None] | None = None,
    fingerprint: bool = True,
    block_lines: int = partials.BLOCK_LINES,
    sink_threshold: float = DEFAULT_SINK_THRESHOLD,
    bins: int = DEFAULT_BINS,
    memory: int = backend.DEFAULT_MEMORY,
    on_layer: Callable[[int], None] | None = None,
) -> Partial:
    """The sums of one shard of a corpus file (`-`: stdin), as `posemb stats FILE --shard I/N --partial FILE`.

    `shard` "I/N" (or (I, N)) takes block b of `block_lines` lines (block b: lines b·block_lines .. (b + 1)·block_lines
    − 1, from 0, blank lines counted) when b mod N = I; every piece of a corpus must use the same `block_lines` (the
    header records it; `merge` checks it) and, for merges equal to one run, the same `batch_size`. `model` is a name
    or folder, loaded here on `device` in `dtype`, or a LoadedModel. The other options are those of `corpus_stats`.
    Returns a `Partial` (`partial_stats(partial)` gives the numbers `posemb stats` prints); with `partial`, also
    writes it there.

    `checkpoint`: if that file exists, continue the run it holds (refused, naming the difference, if it was made
    with another corpus, model or option); save the state there every `checkpoint_texts` texts or
    `checkpoint_seconds` seconds, on Ctrl-C (then KeyboardInterrupt is raised again) and at the end.
    `on_batch(texts_done)` is called after every batch. `fingerprint=False` skips hashing the model's files, for
    a result that is neither saved nor merged."""
    from ..lines import open_lines
    from ..models import fingerprint as model_fingerprint
    from ..models import load
    from ..output import check_writable

    for path in (partial, checkpoint):
        if path is not None:
            check_writable(Path(path))
    shard = Shard.parse(shard, block_lines)
    loaded = model if isinstance(model, LoadedModel) else load(model, device=device, dtype=dtype)
    settings = _settings(loaded, pairs, batch_size, max_length, sink_k, sink_threshold, bins, memory, on_layer)
    digest = model_fingerprint(loaded.info.path) if fingerprint or partial or checkpoint else None
    stream, name = open_lines(str(corpus))
    with stream:
        header = _header(loaded, settings, shard, encoding_errors, name, digest)
        resumed = read_partial(checkpoint) if checkpoint is not None and Path(checkpoint).exists() else None
        if resumed is not None:
            _check_resume(resumed, Partial(header, {}, source="this run"))
        reader = CountedLines(stream, name)
        blocks = read_blocks(reader, name, shard, pairs, encoding_errors)
        start = None
        if resumed is not None:
            _skip_to(reader, resumed, name)
            rows, edges = _stack(resumed.sums, _ROW_VALUES), _stack(resumed.sums, _EDGE_VALUES)
            extra = _stack(resumed.sums, extra_names(settings)) if extra_names(settings)[0] in resumed.sums else None
            start = _State(rows=rows, edges=edges, counts=dict(resumed.counts), extra=extra, **_cursor(resumed))
        saver = _Saver(header, checkpoint, checkpoint_texts, checkpoint_seconds, start)

        def on_state(state: _State) -> None:
            saver.update(state)
            if on_batch is not None:
                on_batch(state.counts["texts"])

        try:
            state = _accumulate(loaded, blocks, reader, settings, start, on_state)
        except KeyboardInterrupt:
            saver.save()
            if on_batch is not None and saver.state is not None:  # a stop during a save: the count said is the file's
                on_batch(saver.state.counts["texts"])
            raise
    result = _partial(header, state)
    if checkpoint is not None:
        result.save(checkpoint)
    if partial is not None:
        result.save(partial)
    return result


def partial_stats(partial: Partial) -> CorpusStats:
    """The per-head means of a partial : what `posemb stats` and `posemb stats merge` print."""
    header = partial.header
    info = ModelInfo(**{key.name: header["model"][key.name] for key in dataclasses.fields(ModelInfo)})
    options = header["options"]
    threshold, bins = options.get("sink_threshold", DEFAULT_SINK_THRESHOLD), options.get("bins", DEFAULT_BINS)
    settings = _Settings(options["pairs"], 1, options["max_length"], options["sink_k"], threshold, bins)
    result = _result(info, partial.sums, partial.counts, settings)
    if partial.shard_count > 1:
        missing = partial.missing_shards()
        result.shards = {"count": partial.shard_count, "indices": partial.shard_indices, "missing": missing}
    return result


def _settings(
    loaded: LoadedModel,
    pairs: bool,
    batch_size: int,
    max_length: int | None,
    sink_k: int,
    sink_threshold: float = DEFAULT_SINK_THRESHOLD,
    bins: int = DEFAULT_BINS,
    memory: int = backend.DEFAULT_MEMORY,
    on_layer: Callable[[int], None] | None = None,
) -> _Settings:
    if not loaded.family.padding_free(loaded.model.config):
        batch_size = 1  # its RoPE depends on the padded length
    if not 0 <= sink_threshold < 1:
        raise PosembUsageError(f"--sink-threshold {sink_threshold}: give a number from 0 up to (not including) 1")
    if bins < 1:
        raise PosembUsageError(f"--bins {bins}: give at least 1")
    limit = _max_length(loaded.info, max_length)
    return _Settings(pairs, batch_size, limit, sink_k, sink_threshold, bins, memory, on_layer)


def _accumulate(
    loaded: LoadedModel,
    blocks: Iterator[_Block],
    reader: CountedLines | None,
    settings: _Settings,
    state: _State | None,
    on_state: Callable[[_State], None],
) -> _State:
    """Add the texts of `blocks` to `state` (None: from zero) batch by batch; `on_state` sees every new state.

    Each block is sorted by length (a stable sort: equal lengths keep the order of the lines) and cut into batches
    by itself, so that its batches are the same whichever other blocks a run reads. `reader`, the CountedLines that
    the blocks come from (None for texts from elsewhere), tells where each block ends. A state that stopped inside a
    block (batches > 0) goes on by reading that block again and skipping the batches already summed; that block's
    truncated and skipped texts are in its counts already."""
    import torch

    pairs, batch_size, limit, sink_k = settings.pairs, settings.batch_size, settings.limit, settings.sink_k
    causal = loaded.family.causal
    skip = 0 if state is None else state.batches
    # Resumed inside a block (a checkpoint is always inside one, even with 0 batches done): that block's skipped
    # and truncated texts are in the counts already.
    inside = state is not None and state.chunk_lines > 0

    def cursor() -> dict[str, Any]:
        return {"lines": reader.lines, "sha256": reader.sha256()} if reader is not None else {}

    with torch.inference_mode():
        reducer = _Reducer(loaded, pairs, settings)
        reducer.memory, reducer.on_layer = settings.memory, settings.on_layer
        state = reducer.adopt(state) if state is not None else reducer.zero_state()
        with reducer.hooked():
            for block in blocks:
                end = {f"chunk_{key}": value for key, value in cursor().items()}
                if inside and end and end != {"chunk_lines": state.chunk_lines, "chunk_sha256": state.chunk_sha256}:
                    raise PosembError(
                        f"the corpus changed: lines {state.lines + 1}..{state.chunk_lines} are not the ones the "
                        "checkpoint read"
                    )
                counts = dict(state.counts)
                encoded = _encode(loaded, block.items, pairs, limit, dict(counts) if inside else counts)
                encoded.sort(key=lambda e: len(e.ids))  # length buckets: each batch pads to nearly its own length
                state = dataclasses.replace(state, counts=counts, batches=skip, **block.start, **end)
                on_state(state)
                for number, start in enumerate(range(0, len(encoded), batch_size)):
                    if number < skip:
                        continue
                    batch = encoded[start : start + batch_size]
                    reducer.run(_collate(batch, loaded, pairs, sink_k))
                    lengths = [len(e.ids) for e in batch]
                    counts = dict(state.counts)
                    counts["texts"] += len(batch)
                    counts["tokens"] += sum(lengths)
                    counts["edge_rows"] += sum(n - 1 for n in lengths)
                    counts["uniform"] += sum(float(attention.uniform_entropy(n, causal).sum()) for n in lengths)
                    state = reducer.add(state, counts, batches=number + 1)
                    on_state(state)
                reducer.check_rows()
                skip, inside = 0, False
        reducer.check_layers()
    return dataclasses.replace(state, batches=0, chunk_lines=0, chunk_sha256="", **cursor())


def _result(info: ModelInfo, sums: dict[str, np.ndarray], counts: dict[str, Any], settings: _Settings) -> CorpusStats:
    heads = _head_rows(sums, counts, settings.pairs)
    measures = _measures(sums, counts, settings, heads)
    return CorpusStats(
        model=info,
        texts=counts["texts"],
        tokens=counts["tokens"],
        pairs=settings.pairs,
        sink_k=settings.sink_k,
        max_length=settings.limit,
        truncated=counts["truncated"],
        skipped=counts["skipped"],
        heads=heads,
        warnings=_warnings(counts, settings.limit, info) + _nonfinite_heads(heads),
        **measures,
    )


def _header(
    loaded: LoadedModel, settings: _Settings, shard: Shard, encoding_errors: str, corpus: str, digest: str | None
) -> dict[str, Any]:
    """A partial's header (partials.py describes it) before any line is read."""
    from .._version import __version__

    return {
        "format": partials.FORMAT,
        "version": partials.VERSION,
        "posemb": __version__,
        "model": {**dataclasses.asdict(loaded.info), "fingerprint": digest},
        "options": {
            "pairs": settings.pairs,
            "max_length": settings.limit,
            "sink_k": settings.sink_k,
            "sink_threshold": settings.sink_threshold,
            "bins": settings.bins,
            "dtype": loaded.dtype,
            "encoding_errors": encoding_errors,
        },
        "shards": {"count": shard.count, "indices": [shard.index], "block_lines": shard.block},
        "corpus": {"name": corpus, "lines": 0, "sha256": ""},
        "complete": False,
        "resume": None,
        "run": {"batch_size": settings.batch_size, "device": str(loaded.device)},
        "counts": partials.zero_counts(),
    }


def _partial(header: dict[str, Any], state: _State) -> Partial:
    """The partial of a state: complete once the whole corpus is read (batches 0 at the end of it)."""
    complete = not state.chunk_lines
    resume = None if complete else {"batches": state.batches, "lines": state.chunk_lines, "sha256": state.chunk_sha256}
    return Partial(
        header={
            **header,
            "corpus": {**header["corpus"], "lines": state.lines, "sha256": state.sha256},
            "complete": complete,
            "resume": resume,
            "counts": dict(state.counts),
        },
        sums=_sums(state),
    )


def _cursor(partial: Partial) -> dict[str, Any]:
    """The _State fields of a checkpoint's place in the corpus."""
    corpus, resume = partial.header["corpus"], partial.header["resume"] or {}
    return {
        "lines": corpus["lines"],
        "sha256": corpus["sha256"],
        "batches": resume.get("batches", 0),
        "chunk_lines": resume.get("lines", 0),
        "chunk_sha256": resume.get("sha256", ""),
    }


_RESUME_KEYS = (
    *(key for key in partials.MERGE_KEYS if key[1][0] != "corpus"),
    ("--shard index", ("shards", "indices")),
    ("--batch-size", ("run", "batch_size")),
)


def _check_resume(checkpoint: Partial, run: Partial) -> None:
    if checkpoint.header["run"] is None:
        raise PosembError(f"{checkpoint.source} is a merge of several shards, not the checkpoint of one run")
    different = partials.difference(checkpoint, run, _RESUME_KEYS)
    if different is not None:
        raise PosembError(
            f"checkpoint {checkpoint.source} is from another run: {different}; run the command that made it, or "
            "remove the file to start again"
        )


def _skip_to(reader: CountedLines, checkpoint: Partial, name: str) -> None:
    """Read the lines a checkpoint has summed; refuse it if they are not the ones it read."""
    corpus = checkpoint.header["corpus"]
    reader.skip(corpus["lines"])
    if reader.lines != corpus["lines"] or reader.sha256() != corpus["sha256"]:
        raise PosembError(
            f"checkpoint {checkpoint.source} was made on another corpus: the first {corpus['lines']} lines of {name} "
            "are not the ones it read; remove the file to start again"
        )


class _Saver:
    """Writes the latest state to the checkpoint file every so many texts or seconds, and on demand."""

    def __init__(
        self, header: dict[str, Any], path: str | Path | None, texts: int, seconds: float, state: _State | None
    ) -> None:
        self.header, self.path, self.texts, self.seconds = header, path, texts, seconds
        self.state = state
        self.saved_texts = state.counts["texts"] if state is not None else 0
        self.saved_at = time.monotonic()

    def update(self, state: _State) -> None:
        self.state = state
        due = state.counts["texts"] - self.saved_texts >= self.texts or time.monotonic() - self.saved_at >= self.seconds
        if due and state.batches:
            self.save()

    def save(self) -> None:
        if self.path is None or self.state is None:
            return
        _partial(self.header, self.state).save(self.path)
        self.saved_texts, self.saved_at = self.state.counts["texts"], time.monotonic()


def _sums(state: _State) -> dict[str, np.ndarray]:
    rows, edges = (x if isinstance(x, np.ndarray) else x.cpu().double().numpy() for x in (state.rows, state.edges))
    sums = {key: rows[..., k].copy() for k, key in enumerate(_ROW_VALUES)}
    sums.update({key: edges[..., k].copy() for k, key in enumerate(_EDGE_VALUES)})
    if state.extra is not None:
        extra = state.extra if isinstance(state.extra, np.ndarray) else state.extra.cpu().double().numpy()
        sums.update({key: extra[..., k].copy() for k, key in enumerate(state.extra_names)})
    return sums


def _stack(sums: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    missing = [key for key in keys if key not in sums]
    if missing:
        raise PosembError(f"the partial has no sum_{missing[0]}")
    return np.stack([sums[key] for key in keys], axis=-1)
