"""Machine-readable output of `inspect`: the JSON contract of DESIGN.md, CSV rows and NPZ arrays.

JSON is streamed: `document` keeps the big arrays (vectors, attention) as NumPy arrays and `iter_json` writes them row
by row, byte for byte what `json.dumps(to_json(...))` prints, so `--json --attention` on 512 tokens never holds the
whole text (gigabytes) in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import TextResult
from ..finite import finite_lists, finite_number
from ..output import write_atomic
from ..words import WordView

TOKEN_KEYS = ("index", "id", "token", "position_id", "segment", "start", "end", "special", "unknown")
PARTS = ("token", "position", "segment", "sum", "embedding_output")


def select_attention(attention: np.ndarray, layers: Sequence[int] | None, heads: Sequence[int] | None) -> np.ndarray:
    """Maps (layers, heads, ...) restricted to the --layer / --head choices (None: all)."""
    if layers is not None:
        attention = attention[list(layers)]
    if heads is not None:
        attention = attention[:, list(heads)]
    return attention


def to_json(
    result: TextResult,
    vectors: bool = False,
    attention: bool = False,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """One text as the object of DESIGN.md's output contract, in plain Python types."""
    return _plain(document(result, vectors, attention, layers, heads))


def document(
    result: TextResult,
    vectors: bool = False,
    attention: bool = False,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """`to_json`'s object with its big arrays (vectors, attention maps) left as NumPy arrays, for `iter_json`."""
    data: dict[str, Any] = {
        "text": result.text,
        "pair": result.pair,
        "model": result.model.to_json(),
        "tokens": [{key: getattr(token, key) for key in TOKEN_KEYS} for token in result.tokens],
        "norms": {name: finite_lists(values) for name, values in result.norms.items()},
    }
    if vectors:
        data["vectors"] = {name: getattr(result, name) for name in PARTS}
    if attention:
        data["attention"] = result.attention_of(layers, heads)
    data["warnings"] = list(result.warnings)
    if result.words is not None:
        data.update(_words_document(result.words, attention, layers, heads))
    return data


def _plain(value: Any) -> Any:
    """NumPy arrays inside dicts -> lists (NaN and Inf as null, as `_floats`)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return finite_lists(value) if isinstance(value, np.ndarray) else value


def iter_json(value: Any, indent: int | None = None, level: int = 0) -> Iterator[str]:
    """`value` as JSON text in pieces, identical to json.dumps(_plain(value), ensure_ascii=False, indent=indent);
    a NumPy array is written one innermost row at a time."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        yield _row(value, indent, level)
    elif isinstance(value, (dict, np.ndarray, list, tuple)) and len(value) > 0:
        is_dict = isinstance(value, dict)
        items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
        inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
        yield "{" if is_dict else "["
        for k, (key, item) in enumerate(items):
            yield ("," if indent is not None else ", ") * (k > 0) + inner
            if is_dict:
                yield json.dumps(key, ensure_ascii=False) + ": "
            yield from iter_json(item, indent, level + 1)
        yield ("" if indent is None else "\n" + " " * (indent * level)) + ("}" if is_dict else "]")
    else:
        yield json.dumps(_plain(value), ensure_ascii=False)  # a leaf, or an empty list or dict


def _row(row: np.ndarray, indent: int | None, level: int) -> str:
    """A 1-D array as json.dumps prints its list: the C encoder's "[a, b]", re-spaced for `indent`."""
    text = json.dumps(finite_lists(row))
    if indent is None or len(row) == 0:
        return text
    inner, outer = "\n" + " " * (indent * (level + 1)), "\n" + " " * (indent * level)
    return "[" + inner + text[1:-1].replace(", ", "," + inner) + outer + "]"


def words_json(
    view: WordView, attention: bool = False, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None
) -> dict[str, Any]:
    """`inspect --words` adds these keys to a text's JSON object: `words` (each with the tokens that overlap it),
    `word_units` (the rows/columns of the merged maps: words, special and whitespace tokens) and, with --attention,
    `word_attention` [layer][head][query unit][key unit], restricted like `attention` by --layer/--head."""
    return _plain(_words_document(view, attention, layers, heads))


def _words_document(
    view: WordView, attention: bool = False, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "words": [{**word.to_json(), "tokens": view.pieces[k]} for k, word in enumerate(view.words)],
        "word_units": [unit.to_json() for unit in view.units],
    }
    if attention:
        data["word_attention"] = select_attention(view.attention, layers, heads)
    return data


CSV_COLUMNS = (
    "text_index",
    *TOKEN_KEYS,
    "norm_token",
    "norm_position",
    "norm_segment",
    "norm_sum",
    "norm_embedding_output",
    "cos_token_sum",
)


def csv_header() -> str:
    return _csv_line(CSV_COLUMNS)


def csv_rows(result: TextResult, text_index: int) -> str:
    norms = result.norms
    cosine = result.token_sum_cosine
    buffer = []
    for k, token in enumerate(result.tokens):
        row: list[Any] = [text_index, *(getattr(token, key) for key in TOKEN_KEYS)]
        row += [None if (norm := norms[name]) is None else finite_number(norm[k]) for name in PARTS]
        row.append(None if cosine is None else finite_number(cosine[k]))
        buffer.append(_csv_line(row))
    return "".join(buffer)


def _csv_line(values: Sequence[Any]) -> str:
    out = io.StringIO()
    cells = ["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in values]
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def save_npz(path: Path, results: Sequence[TextResult]) -> None:
    """Every array of every text, keys `text{i}/{name}` (token_ids, position_ids, ..., attention)."""
    arrays: dict[str, np.ndarray] = {}
    for i, result in enumerate(results):
        prefix = f"text{i}/"
        arrays[prefix + "token_ids"] = np.array([t.id for t in result.tokens], dtype=np.int64)
        if result.tokens and result.tokens[0].position_id is not None:
            arrays[prefix + "position_ids"] = np.array([t.position_id for t in result.tokens], dtype=np.int64)
        if result.tokens and result.tokens[0].segment is not None:
            arrays[prefix + "segment_ids"] = np.array([t.segment for t in result.tokens], dtype=np.int64)
        for name in PARTS:
            value = getattr(result, name)
            if value is not None:
                arrays[prefix + name] = value
        if result.attention is not None:
            arrays[prefix + "attention"] = result.attention

    def write(temp: str) -> None:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword only

    write_atomic(path, write)
