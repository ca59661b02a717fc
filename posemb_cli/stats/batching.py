"""Reading and batching a corpus for `posemb stats`: lines into items, blocks of lines (shards take whole blocks),
tokenized batches with their key masks (`_collate`)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import check_segment_ids, tokenize
from ..errors import PosembError, PosembUsageError
from ..lines import CountedLines, decode_line
from ..models import LoadedModel, ModelInfo
from ..partials import Shard
from .result import _ALL, _CLS, _PUNCT, _SEGMENT_A, _SEGMENT_B, _SEP, _SINK, Item

DEFAULT_BATCH_SIZE = 32


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
