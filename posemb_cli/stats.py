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

from . import attention, partials
from .core import check_segment_ids, index_ranges, nonfinite_warning, tokenize
from .errors import PosembError, PosembUsageError
from .lines import CountedLines, chunks, decode_line
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
DEFAULT_BATCH_SIZE = 32
# Attention values reduced at once (a block of heads × query rows): bounds the reduction's temporaries. Small on the
# CPU (4 MB: cache-friendly, and far below one layer of long texts); large on accelerators, where launches cost.
BLOCK_ELEMENTS = {"cpu": 1 << 20, "accelerator": 1 << 25}
ROW_SUM_TOLERANCE = 1e-4  # float32; half precision: its machine epsilon (see _Reducer.check_rows)
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

    def columns(self) -> list[str]:
        return columns(self.pairs)

    def to_json(self) -> dict[str, Any]:
        shards = {"shards": self.shards} if self.shards is not None else {}
        counted = {"texts": self.texts, "tokens": self.tokens}
        return {"model": self.model.to_json(), **counted, **shards, "heads": self.heads}

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
) -> CorpusStats:
    """Per-head attention statistics of texts (or (A, B) pairs with `pairs`), pooled over all their query rows.

    `max_length` cuts texts (pairs: the longer side first) to that many tokens, special tokens included; default the
    model's maximum positions. `on_batch(texts_done)` is called after every batch (progress, Ctrl-C bookkeeping)."""
    settings = _settings(loaded, pairs, batch_size, max_length, sink_k)

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
) -> Partial:
    """The sums of one shard of a corpus file (`-`: stdin), as `posemb stats FILE --shard I/N --partial FILE`.

    `shard` "I/N" (or (I, N)) takes block b of `block_lines` lines (block b: lines b·block_lines .. (b + 1)·block_lines
    − 1, from 0, blank lines counted) when b mod N = I; every piece of a corpus must use the same `block_lines` (the
    header records it; `merge` checks it) and, for merges equal to one run, the same `batch_size`. `model` is a name
    or folder, loaded here on `device` in `dtype`, or a LoadedModel. The other options are those of `corpus_stats`.
    Returns a `Partial` (its `.stats()` are the numbers `posemb stats` prints); with `partial`, also writes it there.

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
    settings = _settings(loaded, pairs, batch_size, max_length, sink_k)
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
            start = _State(rows=rows, edges=edges, counts=dict(resumed.counts), **_cursor(resumed))
        saver = _Saver(header, checkpoint, checkpoint_texts, checkpoint_seconds, start)

        def on_state(state: _State) -> None:
            saver.update(state)
            if on_batch is not None:
                on_batch(state.counts["texts"])

        try:
            state = _accumulate(loaded, blocks, reader, settings, start, on_state)
        except KeyboardInterrupt:
            saver.save()
            raise
    result = _partial(header, state)
    if checkpoint is not None:
        result.save(checkpoint)
    if partial is not None:
        result.save(partial)
    return result


def partial_stats(partial: Partial) -> CorpusStats:
    """The per-head means of a partial (`Partial.stats()`): what `posemb stats` and `posemb stats merge` print."""
    header = partial.header
    info = ModelInfo(**{key.name: header["model"][key.name] for key in dataclasses.fields(ModelInfo)})
    options = header["options"]
    settings = _Settings(options["pairs"], 1, options["max_length"], options["sink_k"])
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


def _settings(loaded: LoadedModel, pairs: bool, batch_size: int, max_length: int | None, sink_k: int) -> _Settings:
    if not loaded.family.padding_free(loaded.model.config):
        batch_size = 1  # its RoPE depends on the padded length
    return _Settings(pairs, batch_size, _max_length(loaded.info, max_length), sink_k)


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
        reducer = _Reducer(loaded, pairs)
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
    )


# ---------------------------------------------------------------- partials and checkpoints


def _header(
    loaded: LoadedModel, settings: _Settings, shard: Shard, encoding_errors: str, corpus: str, digest: str | None
) -> dict[str, Any]:
    """A partial's header (partials.py describes it) before any line is read."""
    from . import __version__

    return {
        "format": partials.FORMAT,
        "version": partials.VERSION,
        "posemb": __version__,
        "model": {**dataclasses.asdict(loaded.info), "fingerprint": digest},
        "options": {
            "pairs": settings.pairs,
            "max_length": settings.limit,
            "sink_k": settings.sink_k,
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
    """Forward hooks that reduce each layer's attention maps to per-head sums, then let the maps go. `rows` and
    `edges` hold one batch's sums; `add` makes the next `_State` from them."""

    def __init__(self, loaded: LoadedModel, pairs: bool) -> None:
        import torch

        self.loaded, self.pairs = loaded, pairs
        info, family = loaded.info, loaded.family
        # No module to hook (the generic path): the model returns every layer's maps and they are reduced after.
        module = family.attention_module
        self.paths = [module.format(layer=layer) for layer in range(info.layers)] if module else []
        # MPS has no float64: accumulate there on the CPU.
        self.accumulator_device = "cpu" if str(loaded.device).startswith("mps") else loaded.device
        self.rows, self.edges = self._zeros()
        self.deviation = torch.zeros((), device=loaded.device)
        self.tolerance = max(ROW_SUM_TOLERANCE, torch.finfo(getattr(torch, loaded.dtype)).eps)
        self.calls = [0] * info.layers
        self.batch: _Batch | None = None

    def _zeros(self) -> tuple[Any, Any]:
        import torch

        layers, heads = self.loaded.info.layers, self.loaded.info.heads
        zeros: dict[str, Any] = {"dtype": torch.float64, "device": self.accumulator_device}
        rows = torch.zeros(layers, heads, len(_ROW_VALUES), **zeros)
        return rows, torch.zeros(layers, heads, len(_EDGE_VALUES), **zeros)

    def zero_state(self) -> _State:
        rows, edges = self._zeros()
        counts: dict[str, Any] = partials.zero_counts()
        return _State(rows=rows, edges=edges, counts=counts)

    def adopt(self, state: _State) -> _State:
        """A state whose sums are NumPy arrays (read from a checkpoint), with them as tensors on this device."""
        import torch

        device = self.accumulator_device
        rows, edges = (torch.as_tensor(np.asarray(x, np.float64), device=device) for x in (state.rows, state.edges))
        if rows.shape != self.rows.shape or edges.shape != self.edges.shape:
            raise PosembError(f"the checkpoint's sums are not those of {self.loaded.info.name} (their shape differs)")
        return dataclasses.replace(state, rows=rows, edges=edges)

    def add(self, state: _State, counts: dict[str, Any], batches: int) -> _State:
        """The state after this batch: new tensors, so that `state` itself stays as it was."""
        return dataclasses.replace(
            state, rows=state.rows + self.rows, edges=state.edges + self.edges, counts=counts, batches=batches
        )

    def hooked(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def hooks() -> Iterator[None]:
            handles = []
            layers_of: dict[int, tuple[Any, list[int], str]] = {}  # one module may serve several layers (ALBERT)
            for layer, path in enumerate(self.paths):
                module = self.loaded.family.module(self.loaded.model, path)
                if module is None:
                    raise PosembError(f"{self.loaded.info.name} has no attention module {path}")
                layers_of.setdefault(id(module), (module, [], path))[1].append(layer)
            try:
                for module, layers, path in layers_of.values():
                    handles.append(module.register_forward_hook(self._hook(layers, path)))
                yield
            finally:
                for handle in handles:
                    handle.remove()

        return hooks()

    def _hook(self, layers: list[int], path: str) -> Callable[..., None]:
        """The hook of a module that serves `layers`, called once per layer in order within one forward."""
        index = self.loaded.family.attention_weights

        def hook(module: Any, args: Any, output: Any) -> None:
            weights = output[index] if isinstance(output, tuple) and len(output) > index else None
            if weights is None:
                name = self.loaded.info.name
                raise PosembError(f"{name} returned no attention weights from {path} (is attention eager?)")
            calls = sum(self.calls[layer] for layer in layers)
            self.reduce(layers[calls % len(layers)], weights)

        return hook

    def run(self, batch: _Batch) -> None:
        self.batch = batch
        self.rows, self.edges = self._zeros()
        asked = not self.paths or self.loaded.family.attention_when_asked
        options: dict[str, Any] = {"output_attentions": asked, "output_hidden_states": False}
        if self.loaded.family.causal:
            options["use_cache"] = False
        try:
            output = self.loaded.model(**batch.inputs, **options)
            if not self.paths:
                for layer, weights in enumerate(output.attentions or ()):
                    self.reduce(layer, weights)
        finally:
            self.batch = None

    def reduce(self, layer: int, weights: Any) -> None:
        """Sum one layer's per-row statistics over real rows, a block of heads × query rows at a time, so that the
        temporaries stay a small fraction of the layer's maps."""
        import torch

        batch = self.batch
        assert batch is not None, "attention hook called outside a posemb batch"
        self.calls[layer] += 1
        size, heads, length, _ = weights.shape
        budget = BLOCK_ELEMENTS["cpu" if weights.device.type == "cpu" else "accelerator"]
        head_step = max(1, budget // (size * length * length))
        row_step = length if head_step > 1 else max(1, budget // (size * length))
        for first in range(0, heads, head_step):
            a = weights[:, first : first + head_step]
            last = first + a.shape[1]
            edges = torch.stack([attention.previous_token_torch(a), attention.next_token_torch(a)], dim=-1).float()
            self.edges[layer, first:last] += self._sum(torch.where(batch.real[:, None, 1:, None], edges, 0.0))
            diagonal = attention.self_attention_torch(a)
            for top in range(0, length, row_step):
                rows = slice(top, top + row_step)
                block = a[:, :, rows].float()
                masses = attention.mass_on_torch(block, batch.key_masks)  # (batch, heads, rows, 7)
                in_b = batch.segment_b[:, None, rows]
                own = torch.where(in_b, masses[..., _SEGMENT_B], masses[..., _SEGMENT_A])
                other = torch.where(in_b, masses[..., _SEGMENT_A], masses[..., _SEGMENT_B])
                values = torch.stack(
                    [
                        masses[..., _CLS],
                        masses[..., _SEP],
                        masses[..., _PUNCT],
                        masses[..., _SINK],
                        diagonal[..., rows].float(),
                        attention.entropy_torch(block, batch.real),
                        attention.distance_torch(block, first_row=top),
                        own,
                        other,
                    ],
                    dim=-1,
                )
                real = batch.real[:, None, rows]
                self.rows[layer, first:last] += self._sum(torch.where(real[..., None], values, 0.0))
                off = torch.where(real, (masses[..., _ALL] - 1.0).abs(), 0.0)
                self.deviation = torch.maximum(self.deviation, off.max().to(self.deviation.dtype))

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
        """Every layer's hook ran (once any batch ran)."""
        missing = [layer for layer, calls in enumerate(self.calls) if not calls]
        if missing and any(self.calls):
            where = self.paths[missing[0]] if self.paths else f"layer {missing[0]}"
            raise PosembError(f"the attention of {where} of {self.loaded.info.name} was never computed")


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
