"""Per-head attention statistics over a corpus (`posemb stats`): batched, streamed layer by layer.

Each statistic of each head (layer, head) is a mean over all query rows i of all texts pooled together; padding is
never counted. The per-row definitions live in `attention.py` (one function each, with their references):

- cls, sep, punct: attention mass on the [CLS] / [SEP] / punctuation key positions (Clark et al. 2019);
- self a[i,i]; prev a[i,i−1] over rows i ≥ 1; next a[i,i+1] over rows i ≤ n−2;
- entropy of the row in nats (smoothed, see `attention.entropy`) and uniform_entropy, the entropy of a head that
  spreads evenly over the keys each row can see (`attention.uniform_entropy`: ln n, or ln(i + 1) for query i of a
  causal model; a mean over rows too, so longer texts weigh more);
- distance Σ_j a[i,j]·|i−j| (Vig & Belinkov 2019);
- sink: mass on the first k tokens (Xiao et al. 2023), k = `sink_k`;
- with sentence pairs: within / across, the mass on the row's own segment and on the other one.

Special tokens. "cls" is the special token at position 0, if there is one ([CLS], RoBERTa's <s>, LLaMA's BOS);
"sep" is every other special token the tokenizer added ([SEP], </s>, EOS). A model whose tokenizer adds none
(GPT-2) has cls = sep = 0 everywhere. Punctuation: a non-special token whose text (from its character offsets,
whitespace stripped) is non-empty and consists only of Unicode punctuation (categories P*).

Where this differs from the code it cites (Clark et al.'s notebook, clarkkev/attention-analysis General_Analysis):
- averaging: the notebook divides each text's sums by its n and then by the number of texts (a mean of per-text
  means); posemb pools the rows, so a corpus streams and its shards merge exactly: posemb's value is the mean of the
  per-text means weighted by length, the same when all texts have one length;
- prev / next: the notebook divides by all n rows; posemb by the n − 1 rows that have that neighbour (per text,
  posemb's = the notebook's × n/(n − 1));
- punct: the notebook counts the tokens "." and ","; posemb every all-punctuation token (also "!", "?", ";", "。",
  "，"), so that texts in other scripts and styles are measured alike;
- special tokens: the notebook matches token strings ("[CLS]", "[SEP]"); posemb counts what the tokenizer added
  (its special_tokens_mask, the rule of `inspect`'s `special` column), so a special-token string typed in the text
  ("[SEP]", which the tokenizer turns into the special id itself) is an ordinary token here, neither sep nor punct,
  and `corpus_stats` warns with their count. For a real separator, give pairs (`--pairs`).

Segments (pairs): a token belongs to segment B from the first token of the second sentence on, and to segment A
before it. So [CLS] A [SEP] is A and B [SEP] is B, as BERT's token types say; RoBERTa's `</s></s>` between the
sentences is A.

Pattern (after Kovaleva et al. 2019, "Revealing the Dark Secrets of BERT"), from the head's means:
vertical if cls + sep ≥ 0.5 (half the mass on special tokens); diagonal if self + prev + next ≥ 0.5 (the larger of
the two wins if both hold); otherwise, with pairs, block if within ≥ 0.8; otherwise heterogeneous.

How it runs: lines are read lazily, one block of `partials.BLOCK_LINES` lines at a time (fixed by the line numbers:
block b is lines b·BLOCK_LINES .. from 0, blank lines counted); each block is tokenized, sorted by length and cut
into batches, so padding stays small. A
forward hook on each layer's attention module (registry: `Family.attention_module`) reduces that layer's maps to
per-head sums at once, in torch on the model's device, a few heads at a time, into float64 accumulators; the model
is called without `output_attentions`, so no layer's maps outlive their layer. Peak memory grows with one layer's
maps, not with the number of layers.

Pieces. `run_shard` (`--shard I/N`) reads every line but sums only the blocks of its shard (`partials.Shard`:
block b when b mod N = I); `partials.merge` adds the float64 sums and counts of the shards. Since shards never cut
a block, and a block is sorted and batched by itself, every text runs in the same batch, of the same shape, in
every split of the corpus: the forward pass gives the same float32 numbers, and a merge differs from one run only
by the order of the float64 additions of the batch sums (about 1e-16 relative). (Batching across a shard's own
lines, as posemb 0.4 did, let a text's batch depend on the split: the float32 rounding of a batched forward pass
depends on the batch's shape, up to 1e-6 relative.) The same --batch-size must be used for every piece; a
model whose position encoding depends on the padded length runs one text at a time anyway. The running sums change
only after whole batches, as a new `_State`, so that Ctrl-C mid-batch leaves a consistent state to save
(`--checkpoint`); a resumed run re-reads the block it stopped in and skips the batches already summed, so it adds
the same batches in the same order as an uninterrupted run. The partial file format is in `partials.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import attention, backend, partials
from .batches import chunks
from .core import check_segment_ids, tokenize
from .errors import PosembError, PosembUsageError
from .finite import index_ranges, nonfinite_warning
from .lines import CountedLines, decode_line
from .models import LoadedModel, ModelInfo
from .partials import Partial, Shard, merge, read_partial

__all__ = ["CorpusStats", "Partial", "Shard", "corpus_stats", "merge", "partial_stats", "read_partial", "run_shard"]

STATISTICS = ("cls", "sep", "punct", "self", "prev", "next", "entropy", "uniform_entropy", "distance", "sink")
PAIR_STATISTICS = ("within", "across")
PATTERNS = ("vertical", "diagonal", "block", "heterogeneous")
VERTICAL_THRESHOLD = 0.5  # cls + sep
DIAGONAL_THRESHOLD = 0.5  # self + prev + next
BLOCK_THRESHOLD = 0.8  # within, pairs only
DEFAULT_SINK_K = 4
DEFAULT_SINK_THRESHOLD = 0.3  # sink_rate's ε (Gu et al., ICLR 2025)
DEFAULT_BINS = 10  # key_profile: equal bins of the text
EDGE_SHARE = 0.01  # key_profile's first / last: this share of the text's keys (at least one key)
DEFAULT_BATCH_SIZE = 32
DEFAULT_CHECKPOINT_TEXTS = 1000  # --checkpoint saves after this many texts ...
DEFAULT_CHECKPOINT_SECONDS = 60.0  # ... or this many seconds, whichever comes first

Item = Union[str, tuple[str, str]]  # a text, or a sentence pair with --pairs

# Columns of the key masks multiplied with each layer's maps in one matrix product (attention.mass_on_torch).
_CLS, _SEP, _PUNCT, _SINK, _ALL, _SEGMENT_A, _SEGMENT_B = range(7)
# Per-row values summed over all real rows, and over rows with a neighbour (prev: i ≥ 1, next: i ≤ n − 2).
_ROW_VALUES = ("cls", "sep", "punct", "sink", "self", "entropy", "distance", "within", "across")
_EDGE_VALUES = ("prev", "next")


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


def read_item(raw: bytes, number: int, name: str, pairs: bool = False, encoding_errors: str = "strict") -> Item:
    """The text of raw line `number` (from 1) of `name`, without its line end; with `pairs`, (A, B) split at the first
    tab. An empty line is "" (or ("", "")); the accumulation skips and counts it."""
    line = decode_line(raw, number, name, encoding_errors)
    if not pairs:
        return line
    if not line.strip():
        return ("", "")
    first, tab, second = line.partition("\t")
    if not tab:
        raise PosembError(f"{name} line {number} has no tab: --pairs reads one pair 'A<TAB>B' per line")
    return (first, second)


@dataclass
class _Block:
    """The texts of one block of lines, and where it starts in the corpus ({} when the texts come from elsewhere)."""

    items: list[Item]
    start: dict[str, Any] = field(default_factory=dict)


def read_blocks(
    reader: CountedLines, name: str, shard: Shard, pairs: bool = False, encoding_errors: str = "strict"
) -> Iterator[_Block]:
    """The blocks of `shard.block` lines of a corpus that `shard` takes, lazily: each is yielded as soon as its last
    line is read (so `reader` then stands at its end). The lines of other shards' blocks are read and hashed, not
    decoded."""
    items: list[Item] = []
    start = {"lines": reader.lines, "sha256": reader.sha256()}
    for number, raw in reader:
        if shard.takes(number):
            items.append(read_item(raw, number, name, pairs, encoding_errors))
        if number % shard.block == 0:
            if items:
                yield _Block(items, start)
            items, start = [], {"lines": reader.lines, "sha256": reader.sha256()}
    if items:
        yield _Block(items, start)


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
    from .lines import open_lines
    from .models import fingerprint as model_fingerprint
    from .models import load
    from .output import check_writable

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


# ---------------------------------------------------------------- partials and checkpoints


def _header(
    loaded: LoadedModel, settings: _Settings, shard: Shard, encoding_errors: str, corpus: str, digest: str | None
) -> dict[str, Any]:
    """A partial's header (partials.py describes it) before any line is read."""
    from ._version import __version__

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


def _max_length(info: ModelInfo, max_length: int | None) -> int | None:
    if max_length is None:
        return info.max_positions
    if info.max_positions is not None and max_length > info.max_positions:
        raise PosembUsageError(
            f"--max-length {max_length} is more than {info.name} takes: at most {info.max_positions} positions"
        )
    return max_length


def _warnings(counts: dict[str, Any], limit: int | None, info: ModelInfo) -> list[str]:
    warnings = []
    if counts["truncated"]:
        warnings.append(
            f"{counts['truncated']} of {counts['texts']} text(s) had more than {limit} tokens and were cut "
            f"to {limit} (--max-length; {info.name} takes at most {info.max_positions})"
        )
    if counts["skipped"]:
        warnings.append(f"{counts['skipped']} empty line(s) were skipped")
    if counts["typed_special"]:
        warnings.append(
            f"{counts['typed_special']} special-token string(s) typed in the text (such as [SEP]) became special ids; "
            "they count as ordinary tokens, neither cls/sep nor punct (use --pairs for a real separator)"
        )
    if not counts["texts"]:
        warnings.append("no texts were given (the input was empty)")
    return warnings


@dataclass
class _Encoded:
    ids: list[int]
    type_ids: list[int] | None
    special: list[bool]
    punct: list[bool]
    segment_b: list[bool]


def _is_empty(item: Item) -> bool:
    if isinstance(item, tuple):
        return not item[0].strip() or not item[1].strip()
    return not item.strip()


def _encode(loaded: LoadedModel, chunk: list[Item], pairs: bool, limit: int | None, counts: dict) -> list[_Encoded]:
    """Tokenize a chunk (no padding). Texts are encoded to limit + 1 tokens: those that reach it were longer than
    the limit, are counted as truncated, and only they are encoded again at the limit."""
    items = [item for item in chunk if not _is_empty(item)]
    counts["skipped"] += len(chunk) - len(items)
    if not items:
        return []
    encoding = _tokenize(loaded, items, pairs, None if limit is None else limit + 1)
    where = {k: (encoding, k) for k in range(len(items))}  # item -> (encoding, row) that holds its tokens
    long = [k for k in range(len(items)) if limit is not None and len(encoding["input_ids"][k]) > limit]
    if long:
        recut = _tokenize(loaded, [items[k] for k in long], pairs, limit)
        counts["truncated"] += len(long)
        where.update({k: (recut, row) for row, k in enumerate(long)})
    encoded = []
    typed = set(loaded.tokenizer.all_special_ids) - {loaded.tokenizer.unk_token_id}  # ids a typed string can become
    for k, item in enumerate(items):
        result = _encoded(*where[k], item, pairs)
        counts["typed_special"] += sum(t in typed and not s for t, s in zip(result.ids, result.special, strict=True))
        if result.ids:
            encoded.append(result)
        else:  # e.g. only characters the tokenizer drops, and no special tokens
            counts["skipped"] += 1
    return encoded


def _tokenize(loaded: LoadedModel, items: list[Item], pairs: bool, max_length: int | None) -> Any:
    firsts = [item[0] for item in items] if pairs else items
    seconds = [item[1] for item in items] if pairs else None
    try:
        return tokenize(
            loaded.tokenizer,
            firsts,
            seconds,
            truncation="longest_first" if max_length is not None else False,
            max_length=max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
    except Exception as exc:
        raise PosembError(f"the tokenizer of {loaded.info.name} failed: {' '.join(str(exc).split())[:300]}") from None


def _encoded(encoding: Any, i: int, item: Item, pairs: bool) -> _Encoded:
    ids = encoding["input_ids"][i]
    special = [bool(s) for s in encoding["special_tokens_mask"][i]]
    offsets = encoding["offset_mapping"][i]
    sequences = encoding.sequence_ids(i)
    sources = item if isinstance(item, tuple) else (item,)
    punct = [
        not special[k] and seq is not None and _is_punctuation(sources[seq][offsets[k][0] : offsets[k][1]])
        for k, seq in enumerate(sequences)
    ]
    segment_b = [False] * len(ids)
    if pairs and 1 in sequences:
        first_b = sequences.index(1)
        segment_b = [k >= first_b for k in range(len(ids))]
    type_ids = encoding["token_type_ids"][i] if "token_type_ids" in encoding else None
    return _Encoded(ids=list(ids), type_ids=type_ids, special=special, punct=punct, segment_b=segment_b)


def _is_punctuation(piece: str) -> bool:
    piece = piece.strip()
    return bool(piece) and all(unicodedata.category(char).startswith("P") for char in piece)


@dataclass
class _Batch:
    inputs: dict[str, Any]  # model inputs on the device
    real: Any  # (batch, n) bool: real tokens, i.e. real query rows and keys
    key_masks: Any  # (batch, n, 7) float: the _CLS .. _SEGMENT_B columns
    segment_b: Any  # (batch, n) bool


def _collate(batch: list[_Encoded], loaded: LoadedModel, pairs: bool, sink_k: int) -> _Batch:
    """Pad a batch on the right and build its masks (on the CPU, then moved to the device once)."""
    import torch

    size, length = len(batch), max(len(e.ids) for e in batch)
    pad = loaded.tokenizer.pad_token_id or 0
    input_ids = np.full((size, length), pad, dtype=np.int64)
    type_ids = np.zeros((size, length), dtype=np.int64)
    real = np.zeros((size, length), dtype=bool)
    keys = np.zeros((size, length, 7), dtype=np.float32)
    segment_b = np.zeros((size, length), dtype=bool)
    for b, e in enumerate(batch):
        n = len(e.ids)
        input_ids[b, :n] = e.ids
        if e.type_ids is not None:
            type_ids[b, :n] = e.type_ids
        real[b, :n] = True
        special = np.array(e.special, dtype=bool)
        keys[b, 0, _CLS] = special[0]
        keys[b, 1:n, _SEP] = special[1:]
        keys[b, :n, _PUNCT] = e.punct
        keys[b, : min(sink_k, n), _SINK] = 1.0
        keys[b, :n, _ALL] = 1.0
        segment_b[b, :n] = e.segment_b
        keys[b, :n, _SEGMENT_B] = e.segment_b
        keys[b, :n, _SEGMENT_A] = ~segment_b[b, :n]
    device = loaded.device
    inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(real.astype(np.int64))}
    if batch[0].type_ids is not None and loaded.family.takes_segments(loaded.model):
        check_segment_ids(loaded, int(type_ids.max()), "--pairs")
        inputs["token_type_ids"] = torch.from_numpy(type_ids)
    return _Batch(
        inputs={k: v.to(device) for k, v in inputs.items()},
        real=torch.from_numpy(real).to(device),
        key_masks=torch.from_numpy(keys).to(device),
        segment_b=torch.from_numpy(segment_b).to(device),
    )


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

        from . import runner

        self.batch = batch
        self.rows, self.edges, self.extra = self._zeros()
        size, length = batch.real.shape
        layers, heads = self.loaded.info.layers, self.loaded.info.heads
        self.key0 = torch.zeros(size, layers, heads, dtype=torch.float64, device=self.accumulator_device)
        self._prepare(batch)
        try:
            runner.run(self.loaded, batch.inputs, reduce=self.reduce_block, memory=self.memory, on_layer=self.on_layer)
            lengths = batch.real.sum(-1).to(self.key0.device, torch.float64)[:, None, None]
            sinks = (self.key0 / lengths > self.settings.sink_threshold).sum(0).double()
            self.extra[..., 0] += sinks.to(self.extra.device)
        finally:
            self.batch = None

    def _prepare(self, batch: _Batch) -> None:
        """Per batch: the distance-bin table and each text's key bins and first / last 1% masks (key_profile)."""
        import torch

        real = batch.real
        size, length = real.shape
        device = real.device
        self.distance_edges = torch.tensor(distance_bins(self.settings.limit), dtype=torch.long, device=device)
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
        within = torch.arange(count, device=device)

        def at(offset: int) -> Any:  # a[i, i + offset] for the block's rows; 0 where that key is not in the block
            columns = index + offset
            inside = (columns >= 0) & (columns < keys)
            return torch.where(inside, block[:, :, within, columns.clamp(0, keys - 1)], 0.0)

        real = batch.real[:, None, rows]  # (batch, 1, rows)
        has_prev = real & (index >= 1)
        has_next = torch.zeros_like(real)
        ahead = (index + 1 < length).nonzero().flatten()
        has_next[:, :, ahead] = batch.real[:, None, top + 1 : top + 1 + len(ahead)]
        edges = torch.stack([torch.where(has_prev, at(-1), 0.0), torch.where(has_next, at(1), 0.0)], dim=-1)
        self.edges[layer] += self._sum(edges)
        masses = attention.mass_on_torch(block, batch.key_masks[:, :keys])  # (batch, heads, rows, 7)
        in_b = batch.segment_b[:, None, rows]
        own = torch.where(in_b, masses[..., _SEGMENT_B], masses[..., _SEGMENT_A])
        other = torch.where(in_b, masses[..., _SEGMENT_A], masses[..., _SEGMENT_B])
        values = torch.stack(
            [
                masses[..., _CLS],
                masses[..., _SEP],
                masses[..., _PUNCT],
                masses[..., _SINK],
                at(0),
                attention.entropy_torch(block, batch.real),
                attention.distance_torch(block, first_row=top),
                own,
                other,
            ],
            dim=-1,
        )
        self.rows[layer] += self._sum(torch.where(real[..., None], values, 0.0))
        off = torch.where(real, (masses[..., _ALL] - 1.0).abs(), 0.0)
        self.deviation = torch.maximum(self.deviation, off.max().to(self.deviation.dtype))
        # sink_rate: each text's attention on key 0, summed over its real rows (divided by n after the forward)
        key0 = torch.where(real, block[..., 0], 0.0).sum(-1, dtype=torch.float64)  # (batch, heads)
        self.key0[:, layer] += key0.to(self.key0.device)
        # distance_profile: the mass of each row by |i - j| bin, from the row's running sums over keys (float64):
        # bin [lo, hi] holds keys i - hi .. i - lo and i + lo .. i + hi, two differences of the running sum
        running = torch.nn.functional.pad(block.cumsum(-1, dtype=torch.float64), (1, 0))  # (batch, heads, rows, 1+k)
        low, high = self.distance_edges[:, 0], self.distance_edges[:, 1]  # (bins,)
        i = index[:, None]
        starts = torch.cat([(i - high).clamp(0, keys), (i + low).clamp(0, keys)], dim=1)  # (rows, 2 bins)
        ends = torch.cat([(i - low + 1).clamp(0, keys), (i + high + 1).clamp(0, keys)], dim=1)
        ends[:, self.distance_bins] = starts[:, self.distance_bins]  # offset 0 counted once, on the left
        ends = torch.maximum(ends, starts)
        shape = (size, heads, count, 2 * self.distance_bins)
        mass = running.gather(-1, ends.expand(shape)) - running.gather(-1, starts.expand(shape))
        profile = mass[..., : self.distance_bins] + mass[..., self.distance_bins :]
        first = 1
        self.extra[layer, :, first : first + self.distance_bins] += self._sum(
            torch.where(real[..., None], profile, 0.0)
        )
        # key_profile: the mass received by each key bin of the text, and by its first / last 1% of keys
        received = torch.matmul(real[:, :, None, :].to(block.dtype), block)[:, :, 0].double()  # (batch, heads, keys)
        key_bins = self.settings.bins
        by_bin = torch.zeros(size, heads, key_bins + 1, dtype=torch.float64, device=device)
        by_bin.scatter_add_(-1, self.key_bins[:, None, :keys].expand(size, heads, keys), received)
        first += self.distance_bins
        self.extra[layer, :, first : first + key_bins] += by_bin[..., :key_bins].sum(0).to(self.extra.device)
        first += key_bins
        edges_mass = torch.matmul(received, self.key_edges[:, :keys])  # (batch, heads, 2)
        self.extra[layer, :, first : first + 2] += edges_mass.sum(0).to(self.extra.device)

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
            row[key] = uniform if key == "uniform_entropy" else _number(means[key][layer, head])
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
        row["sink_rate"] = _number(rate[layer, head])
        row["distance_profile"] = [_number(sums[name][layer, head] / rows) for name in distance]
    layers, per_layer = rate.shape
    key_profile = []

    def mean(name: str, layer: int) -> float | None:  # over the layer's heads and all rows
        return _number(sums[name][layer].sum() / (rows * per_layer))

    for layer in range(layers):
        bins = [mean(f"key_bin_{b}", layer) for b in range(settings.bins)]
        first, last = mean("key_first", layer), mean("key_last", layer)
        key_profile.append({"layer": layer, "bins": bins, "first": first, "last": last})
    return {
        "sink_threshold": settings.sink_threshold,
        "sink_rate": _number(rate.mean()),
        "distance_bins": distance_bins(settings.limit),
        "key_bins": settings.bins,
        "key_profile": key_profile,
    }


def _number(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _nonfinite_heads(heads: list[dict[str, Any]]) -> list[str]:
    """NaN or Inf in a head's attention make all its sums non-finite: its statistics are null; say which heads."""
    affected: dict[int, list[int]] = {}
    for row in heads:
        if any(row[key] is None for key in _ROW_VALUES if key in row):
            affected.setdefault(row["layer"], []).append(row["head"])
    places = [f"the attention of layer {layer} (heads {index_ranges(h)})" for layer, h in affected.items()]
    return nonfinite_warning(places)
