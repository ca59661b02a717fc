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

How it runs: lines are read lazily, `CHUNK_BATCHES × batch_size` at a time; each chunk is tokenized, sorted by
length and cut into batches, so padding stays small (the result does not depend on the order of the lines). A
forward hook on each layer's attention module (registry: `Family.attention_module`) reduces that layer's maps to
per-head sums at once, in torch on the model's device, a few heads at a time, into float64 accumulators; the model
is called without `output_attentions`, so no layer's maps outlive their layer. Peak memory grows with one layer's
maps, not with the number of layers.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Union

import numpy as np

from . import attention
from .core import index_ranges, nonfinite_warning
from .errors import PosembError, PosembUsageError
from .lines import decode_lines
from .models import LoadedModel, ModelInfo

STATISTICS = ("cls", "sep", "punct", "self", "prev", "next", "entropy", "uniform_entropy", "distance", "sink")
PAIR_STATISTICS = ("within", "across")
PATTERNS = ("vertical", "diagonal", "block", "heterogeneous")
VERTICAL_THRESHOLD = 0.5  # cls + sep
DIAGONAL_THRESHOLD = 0.5  # self + prev + next
BLOCK_THRESHOLD = 0.8  # within, pairs only
DEFAULT_SINK_K = 4
DEFAULT_BATCH_SIZE = 32
CHUNK_BATCHES = 64  # batches read and length-sorted together
# Attention values reduced at once (a block of heads × query rows): bounds the reduction's temporaries. Small on the
# CPU (4 MB: cache-friendly, and far below one layer of long texts); large on accelerators, where launches cost.
BLOCK_ELEMENTS = {"cpu": 1 << 20, "accelerator": 1 << 25}
ROW_SUM_TOLERANCE = 1e-4

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

    def columns(self) -> list[str]:
        return columns(self.pairs)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model.to_json(), "texts": self.texts, "tokens": self.tokens, "heads": self.heads}

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


def read_items(stream: BinaryIO, name: str, pairs: bool = False, encoding_errors: str = "strict") -> Iterator[Item]:
    """Lines of a binary stream, lazily, without their line ends; with `pairs`, (A, B) split at the first tab.

    Empty lines are passed on (as "" or ("", "")); `corpus_stats` skips and counts them."""
    for number, line in decode_lines(stream, name, encoding_errors):
        if not pairs:
            yield line
        elif not line.strip():
            yield ("", "")
        else:
            first, tab, second = line.partition("\t")
            if not tab:
                raise PosembError(f"{name} line {number} has no tab: --pairs reads one pair 'A<TAB>B' per line")
            yield (first, second)


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
    import torch

    info = loaded.info
    limit = _max_length(info, max_length)
    counts: dict[str, Any] = {"texts": 0, "tokens": 0, "edge_rows": 0, "uniform": 0.0, "truncated": 0, "skipped": 0}
    counts["typed_special"] = 0
    if not loaded.family.padding_free(loaded.model.config):
        batch_size = 1  # its RoPE depends on the padded length
    causal = loaded.family.causal
    chunk_size = CHUNK_BATCHES * batch_size
    iterator = iter(items)
    with torch.inference_mode():
        reducer = _Reducer(loaded, pairs)
        with reducer.hooked():
            while chunk := list(itertools.islice(iterator, chunk_size)):
                encoded = _encode(loaded, chunk, pairs, limit, counts)
                encoded.sort(key=lambda e: len(e.ids))  # length buckets: each batch pads to nearly its own length
                for start in range(0, len(encoded), batch_size):
                    batch = encoded[start : start + batch_size]
                    reducer.run(_collate(batch, loaded, pairs, sink_k))
                    lengths = [len(e.ids) for e in batch]
                    counts["texts"] += len(batch)
                    counts["tokens"] += sum(lengths)
                    counts["edge_rows"] += sum(n - 1 for n in lengths)
                    counts["uniform"] += sum(float(attention.uniform_entropy(n, causal).sum()) for n in lengths)
                    if on_batch is not None:
                        on_batch(counts["texts"])
                reducer.check_rows()
        heads = reducer.means(counts)
    return CorpusStats(
        model=info,
        texts=counts["texts"],
        tokens=counts["tokens"],
        pairs=pairs,
        sink_k=sink_k,
        max_length=limit,
        truncated=counts["truncated"],
        skipped=counts["skipped"],
        heads=heads,
        warnings=_warnings(counts, limit, info) + _nonfinite_heads(heads),
    )


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
        return loaded.tokenizer(
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
        inputs["token_type_ids"] = torch.from_numpy(type_ids)
    return _Batch(
        inputs={k: v.to(device) for k, v in inputs.items()},
        real=torch.from_numpy(real).to(device),
        key_masks=torch.from_numpy(keys).to(device),
        segment_b=torch.from_numpy(segment_b).to(device),
    )


class _Reducer:
    """Forward hooks that reduce each layer's attention maps to per-head sums, then let the maps go."""

    def __init__(self, loaded: LoadedModel, pairs: bool) -> None:
        import torch

        self.loaded, self.pairs = loaded, pairs
        info, family = loaded.info, loaded.family
        # No module to hook (the generic path): the model returns every layer's maps and they are reduced after.
        module = family.attention_module
        self.paths = [module.format(layer=layer) for layer in range(info.layers)] if module else []
        # MPS has no float64: accumulate there on the CPU.
        self.accumulator_device = "cpu" if str(loaded.device).startswith("mps") else loaded.device
        zeros: dict[str, Any] = {"dtype": torch.float64, "device": self.accumulator_device}
        self.rows = torch.zeros(info.layers, info.heads, len(_ROW_VALUES), **zeros)
        self.edges = torch.zeros(info.layers, info.heads, len(_EDGE_VALUES), **zeros)
        self.deviation = torch.zeros((), device=loaded.device)
        self.calls = [0] * info.layers
        self.batch: _Batch | None = None

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
                self.deviation = torch.maximum(self.deviation, off.max())

    def _sum(self, values: Any) -> Any:
        """Sum over texts and rows → (heads, statistics), in float64 (on the CPU for MPS, which has none)."""
        import torch

        if str(values.device).startswith("mps"):
            return values.sum(dim=(0, 2)).cpu().double()
        return values.sum(dim=(0, 2), dtype=torch.float64)

    def check_rows(self) -> None:
        deviation = float(self.deviation)
        if deviation >= ROW_SUM_TOLERANCE:
            raise PosembError(
                f"attention rows of {self.loaded.info.name} do not sum to 1 (off by {deviation:.2g}); "
                "posemb needs softmax attention probabilities"
            )

    def means(self, counts: dict[str, Any]) -> list[dict[str, Any]]:
        """Sums / row counts → one row per head, keys in the documented order; None where no row counted."""
        if not counts["texts"]:
            return []
        missing = [layer for layer, calls in enumerate(self.calls) if not calls]
        if missing:
            where = self.paths[missing[0]] if self.paths else f"layer {missing[0]}"
            raise PosembError(f"the attention of {where} of {self.loaded.info.name} was never computed")
        means = {key: (self.rows[..., k] / counts["tokens"]).cpu().numpy() for k, key in enumerate(_ROW_VALUES)}
        edge_rows = counts["edge_rows"]  # 0 when every text has one token: prev and next are then undefined
        for k, key in enumerate(_EDGE_VALUES):
            edges = self.edges[..., k]
            means[key] = (edges / edge_rows).cpu().numpy() if edge_rows else np.full(edges.shape, None)
        uniform = counts["uniform"] / counts["tokens"]
        heads = []
        for layer, head in itertools.product(range(self.rows.shape[0]), range(self.rows.shape[1])):
            row: dict[str, Any] = {"layer": layer, "head": head}
            for key in columns(self.pairs)[2:-1]:  # the documented order; pattern last, from the others
                row[key] = uniform if key == "uniform_entropy" else _number(means[key][layer, head])
            row["pattern"] = pattern(row, self.pairs) if row["self"] is not None else None  # None: non-finite maps
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
