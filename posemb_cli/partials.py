"""Partials of `posemb stats`: the exact sums a corpus's statistics are made from, as a file that pieces of a run
write (`--shard I/N --partial FILE`, `--checkpoint FILE`) and that `posemb stats merge` adds up.

The file (format version 2) is a NumPy `.npz` archive, readable without posemb and without pickle:

    header        0-d str array: a JSON object, described below
    sum_<name>    float64 array (layers, heads): the sum of the per-row value <name> over the rows it covers, for
                  cls sep punct sink self entropy distance within across (every real query row: `counts.tokens` rows)
                  and prev next (rows with that neighbour: `counts.edge_rows` rows)
                  and, from posemb 0.5 (the position measures, docs/long-context.md): sink_texts (texts whose mean
                  attention on key 0 exceeds options.sink_threshold), distance_bin_<b> and key_bin_<b>, key_first,
                  key_last (every real query row); a file without them gives null for those measures

    import json, numpy as np
    part = np.load("part-0.npz")
    header = json.loads(part["header"].item())
    entropy = part["sum_entropy"] / header["counts"]["tokens"]     # (layers, heads): the `entropy` column

The header, in this order:
    format "posemb-stats-partial", version 1, posemb (the version that wrote it),
    model {name, type, family, position_scheme, layers, heads, hidden_size, max_positions, path, fingerprint},
    options {pairs, max_length, sink_k, sink_threshold, bins, dtype, encoding_errors}: every option that changes
        the numbers (sink_threshold and bins from posemb 0.5),
    shards {count, indices, block_lines}: the shards it holds (one for `--shard`; several after a merge) and the
        size of the blocks of lines that the shard rule deals out (`Shard`),
    corpus {name, lines, sha256}: the lines read and the SHA-256 of their bytes (the whole corpus when complete;
        a checkpoint: the lines before the chunk of lines being read),
    complete: false for a checkpoint of an unfinished run,
    resume: null when complete; a checkpoint's {batches: batches of that chunk already in the sums, lines, sha256:
        where that chunk ends},
    run {batch_size, device}: how it ran (null after a merge),
    counts {texts, tokens, edge_rows, uniform, truncated, skipped, typed_special}: uniform is the sum behind
        `uniform_entropy`; typed_special counts special-token strings typed in the texts,
    checksum: SHA-256 of the rest (see `checksum`), so that an edited file is refused; only in the file, not in
        `Partial.header`.

Merging adds the sums and counts. Pieces merge only if they agree on the posemb version, the model fingerprint,
every option, the shard count and block size and the corpus (line count and SHA-256: every shard reads the whole
corpus), and hold the same sums.

Reading a file trusts nothing in it (`read_partial`): it must be a regular file (not a symbolic link) of at most
MAX_FILE_BYTES with at most MAX_MEMBERS members, named `header.npy` and `sum_<name>.npy`, stored or deflated; the
header member is read first (at most MAX_HEADER_BYTES), parsed as strict JSON (no NaN or Infinity, bounded depth)
and checked against HEADER_SCHEMA (every field, its type and range; shard indices in 0..count−1; edge_rows =
tokens − texts); only then is each sum member opened, its declared size and its .npy header (float64, the
(layers, heads) the header declares; never an object array, never unpickled) checked before its bytes are read,
and its values must be finite; last, the checksum must match. Any failure is one line naming the file and what is
wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import attention
from .errors import PosembError, PosembUsageError

FORMAT = "posemb-stats-partial"
VERSION = 2  # 2 (posemb 0.5): shards deal out blocks of lines (was: single lines), header.shards.block_lines, checksum
COUNTS = ("texts", "tokens", "edge_rows", "uniform", "truncated", "skipped", "typed_special")
# The sums every partial holds (stats/reducer.py fills them). A sum another version adds is validated alike and merged.
SUMS = attention.summed("row") + attention.summed("edge")
BLOCK_LINES = 1024  # lines per block: shards take whole blocks; a run sorts and batches each block by itself
MAX_SHARDS = 1_000_000
MAX_FILE_BYTES = 2**30
MAX_MEMBERS = 256
MAX_HEADER_BYTES = 2**20


def zero_counts() -> dict[str, Any]:
    """The counts of a run that has read nothing yet (`uniform` is a float sum, the others are whole numbers)."""
    return {key: 0.0 if key == "uniform" else 0 for key in COUNTS}


# What pieces must share to be merged: (what the message calls it, path in the header).
MERGE_KEYS = (
    ("posemb version", ("posemb",)),
    ("model", ("model", "fingerprint")),
    ("--pairs", ("options", "pairs")),
    ("--max-length", ("options", "max_length")),
    ("--sink-k", ("options", "sink_k")),
    ("--sink-threshold", ("options", "sink_threshold")),
    ("--bins", ("options", "bins")),
    ("--dtype", ("options", "dtype")),
    ("--encoding-errors", ("options", "encoding_errors")),
    ("shard count", ("shards", "count")),
    ("shard block size", ("shards", "block_lines")),
    ("corpus line count", ("corpus", "lines")),
    ("corpus SHA-256", ("corpus", "sha256")),
)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (from 0). The corpus is cut into blocks of `block` lines (block b holds lines
    b·block .. b·block + block − 1, counted from 0 with blank lines), and shard I takes block b when b mod count = I:
    every shard agrees on the numbering without talking to the others, and no shard cuts a block, so that each block
    is sorted and batched alike in every run (a merge then adds exactly the batches one run adds)."""

    index: int = 0
    count: int = 1
    block: int = BLOCK_LINES

    @classmethod
    def parse(cls, spec: str | tuple[int, int] | Shard, block: int = BLOCK_LINES) -> Shard:
        """ "I/N" (as `--shard` takes it: ASCII digits only), a tuple (I, N) or a Shard; a usage error unless
        0 ≤ I < N ≤ MAX_SHARDS."""
        if isinstance(spec, Shard):
            return spec
        if isinstance(spec, tuple):
            if len(spec) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
                raise PosembUsageError(f"shard {spec!r}: expected a pair of whole numbers (I, N)")
            index, count = spec
        else:
            match = re.fullmatch(r"([0-9]{1,7})/([0-9]{1,7})", spec) if isinstance(spec, str) else None
            if match is None:
                shown = spec if isinstance(spec, str) and spec.isprintable() and len(spec) <= 40 else "(this value)"
                raise PosembUsageError(
                    f"--shard {shown!r}: expected I/N in ASCII digits with 0 ≤ I < N ≤ {MAX_SHARDS:,}, e.g. 3/16"
                )
            index, count = int(match[1]), int(match[2])
        if not 1 <= count <= MAX_SHARDS:
            raise PosembUsageError(f"--shard {index}/{count}: N must be 1..{MAX_SHARDS:,}")
        if not 0 <= index < count:
            raise PosembUsageError(f"--shard {index}/{count}: the index must be 0..{count - 1} (shards count from 0)")
        if not isinstance(block, int) or isinstance(block, bool) or not 1 <= block <= 10**9:
            raise PosembUsageError(f"block_lines {block!r}: expected a whole number 1..1,000,000,000")
        return cls(index, count, block)

    def takes(self, line: int) -> bool:
        """Whether line number `line` (from 1, as in error messages) belongs to this shard."""
        return ((line - 1) // self.block) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class Partial:
    """The sums and counts of part of a corpus (one shard, several merged, or a checkpoint) and its header."""

    header: dict[str, Any]
    sums: dict[str, np.ndarray]  # name -> (layers, heads) float64
    source: str = field(default="", compare=False)  # the file it was read from, for messages

    @property
    def counts(self) -> dict[str, Any]:
        return self.header["counts"]

    @property
    def complete(self) -> bool:
        return bool(self.header["complete"])

    @property
    def shard_count(self) -> int:
        return int(self.header["shards"]["count"])

    @property
    def shard_indices(self) -> list[int]:
        return [int(i) for i in self.header["shards"]["indices"]]

    def missing_shards(self) -> list[int]:
        return sorted(set(range(self.shard_count)) - set(self.shard_indices))

    def save(self, path: str | Path) -> None:
        """Write the `.npz` atomically (a temporary name in the same folder, flushed to disk, then renamed), with the
        header's checksum."""
        from .output import write_atomic

        sums = {name: np.ascontiguousarray(value, dtype="<f8") for name, value in self.sums.items()}
        header = {**self.header, "checksum": checksum(self.header, sums)}
        arrays: dict[str, Any] = {"header": np.array(json.dumps(header, ensure_ascii=False, allow_nan=False))}
        arrays.update({f"sum_{name}": value for name, value in sums.items()})

        def write(temp: str) -> None:
            with open(temp, "wb") as handle:  # a file object: np.savez adds no ".npz" to the name
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())

        write_atomic(Path(path), write)


def checksum(header: dict[str, Any], sums: dict[str, np.ndarray]) -> str:
    """SHA-256 of the header (canonical JSON: sorted keys, no checksum field) and of each sum's name and float64
    little-endian bytes, in name order: an edit of the file that does not recompute it is refused."""
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, ensure_ascii=False, allow_nan=False).encode())
    for name in sorted(sums):
        digest.update(f"\0{name}\0".encode())
        digest.update(np.ascontiguousarray(sums[name], dtype="<f8").tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- reading a file that may be hostile


class _Invalid(Exception):
    """What is wrong with a partial, in words (read_partial adds the file's name)."""


def _whole(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"a whole number {low:,}..{high:,}"
        return None if low <= value <= high else f"a whole number {low:,}..{high:,}"

    return check


def _real(low: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low
        return None if ok else f"a finite number ≥ {low:g}"

    return check


def _text(pattern: str | None = None, choices: tuple[str, ...] | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > 4096:
            return "a string (at most 4,096 characters)"
        if choices is not None and value not in choices:
            return f"one of {', '.join(choices)}"
        if pattern is not None and not re.fullmatch(pattern, value):
            return "a SHA-256 in hex" if "a-f" in pattern else f"a string matching {pattern}"
        return None

    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _nullable(check: Any) -> Any:
    return ("nullable", check)


_HEX = r"[0-9a-f]{64}"
_COUNT = _whole(0, 2**63 - 1)
# The header, field by field: a check returns None or what the value should be; a dict is a nested object.
HEADER_SCHEMA: dict[str, Any] = {
    "format": _text(choices=(FORMAT,)),
    "version": _whole(1, 10**6),
    "posemb": _text(r"[0-9A-Za-z.+_-]{1,64}"),
    "model": {
        "name": _text(),
        "type": _text(),
        "family": _text(),
        "position_scheme": _text(),
        "layers": _whole(1, 1024),
        "heads": _whole(1, 1024),
        "hidden_size": _whole(1, 65536),
        "max_positions": _nullable(_whole(1, 2**24)),
        "path": _text(),
        "fingerprint": _nullable(_text(_HEX)),
    },
    "options": {
        "pairs": _flag,
        "max_length": _nullable(_whole(1, 10**7)),
        "sink_k": _whole(1, 10**7),
        "dtype": _text(choices=("float32", "bfloat16", "float16")),
        "encoding_errors": _text(choices=("strict", "replace")),
    },
    "shards": {"count": _whole(1, MAX_SHARDS), "indices": "indices", "block_lines": _whole(1, 10**9)},
    "corpus": {"name": _text(), "lines": _COUNT, "sha256": _text(r"(|[0-9a-f]{64})")},
    "complete": _flag,
    "resume": _nullable({"batches": _COUNT, "lines": _COUNT, "sha256": _text(r"(|[0-9a-f]{64})")}),
    "run": _nullable({"batch_size": _whole(1, 4096), "device": _text()}),
    "counts": {key: (_real(0) if key == "uniform" else _COUNT) for key in COUNTS},
}


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_schema(value: Any, schema: Any, where: str, header: dict[str, Any]) -> None:
    if isinstance(schema, tuple):  # ("nullable", check)
        if value is None:
            return
        schema = schema[1]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _Invalid(f"header field {where or 'header'} is {_describe(value)}, not an object")
        for key, inner in schema.items():
            path = f"{where}.{key}" if where else key
            if key not in value:
                raise _Invalid(f"its header has no field {path}")
            _check_schema(value[key], inner, path, header)
        return
    if schema == "indices":
        count = header["shards"]["count"]
        ok = isinstance(value, list) and 1 <= len(value) <= count
        ok = ok and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in value)
        if not ok or len(set(value)) != len(value):
            raise _Invalid(
                f"header field {where} is {_describe(value)}, expected distinct shard indices 0..{count - 1}"
            )
        return
    expected = schema(value)
    if expected is not None:
        raise _Invalid(f"header field {where} is {_describe(value)}, expected {expected}")


def check_header(header: Any) -> None:
    """Raise _Invalid naming the first field of a partial's header that is missing, of the wrong type, out of range
    or inconsistent with the others."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Invalid(f"its header has no format {FORMAT!r}")
    version = header.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise _Invalid(
            f"it has partial format version {version}, newer than this posemb reads ({VERSION}): upgrade posemb"
        )
    if version != VERSION:
        raise _Invalid(
            f"it has partial format version {_describe(version)}, not {VERSION} (posemb before 0.5 wrote version 1, "
            "whose shards split the lines differently): make it again with this posemb"
        )
    shards = header.get("shards")
    if isinstance(shards, dict):  # the indices are checked against the count: check the count first
        _check_schema(shards.get("count"), HEADER_SCHEMA["shards"]["count"], "shards.count", header)
    _check_schema(header, HEADER_SCHEMA, "", header)
    counts = header["counts"]
    if counts["edge_rows"] != counts["tokens"] - counts["texts"]:
        raise _Invalid(
            f"its counts do not add up: edge_rows {counts['edge_rows']} is not tokens {counts['tokens']} − texts "
            f"{counts['texts']}"
        )
    if header["complete"] != (header["resume"] is None):
        raise _Invalid("header fields complete and resume disagree (a complete partial has resume null)")


def check_sums(header: dict[str, Any], sums: dict[str, np.ndarray]) -> None:
    """Raise _Invalid unless every documented sum is there and each is a finite float64 (layers, heads) array."""
    shape = (header["model"]["layers"], header["model"]["heads"])
    missing = [name for name in SUMS if name not in sums]
    if missing:
        raise _Invalid(f"it has no sum_{missing[0]}")
    for name, value in sums.items():
        if value.dtype != np.float64 or value.shape != shape:
            raise _Invalid(f"sum_{name} is {value.dtype} {list(value.shape)}, not float64 {list(shape)}")
        bad = np.argwhere(~np.isfinite(value))
        if len(bad):
            layer, head = (int(x) for x in bad[0])
            raise _Invalid(
                f"sum_{name} is not finite ({value[layer, head]} at layer {layer}, head {head}): a partial of a model "
                "whose attention is not finite there cannot be merged or resumed"
            )


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise _Invalid(f"its header holds {constant}, which is not JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise _Invalid("its header is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise _Invalid(f"its header is not JSON ({exc})") from None


def _zip_members(handle: Any, size: int) -> int:
    """The member count the zip's end record declares (read before zipfile parses the central directory)."""
    tail = min(size, 22 + 65535)
    handle.seek(size - tail)
    data = handle.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(data):
        raise _Invalid("it is cut short or damaged (the zip archive has no end record)")
    return int.from_bytes(data[at + 10 : at + 12], "little")


def _read_npy(zipped: Any, info: Any, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """One .npy member, its header checked (dtype kind, shape, no objects) before any array byte is read."""
    import numpy.lib.format as npy

    member = info.filename
    with zipped.open(info) as handle:
        try:
            major, _ = npy.read_magic(handle)
            reader = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
            found, fortran, dtype = reader(handle, max_header_size=10000)
        except (ValueError, EOFError) as exc:
            raise _Invalid(f"{member} is not a NumPy array ({exc})") from None
        if dtype.hasobject:
            raise _Invalid(f"{member} holds Python objects (a pickle), which posemb never loads")
        if dtype.kind != kind or (kind == "f" and dtype.itemsize != 8):
            raise _Invalid(f"{member} is {dtype}, not {'float64' if kind == 'f' else 'a string'}")
        if tuple(found) != shape:
            raise _Invalid(f"{member} has shape {list(found)}, not {list(shape)} (the header's layers, heads)")
        length = dtype.itemsize * math.prod(shape)
        data = handle.read(length)
        if len(data) != length:
            raise _Invalid(f"{member} is cut short ({len(data):,} of {length:,} bytes)")
        array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        return array.astype(np.float64) if kind == "f" else array


def _read_file(path: str | Path) -> Partial:
    import zipfile

    name = str(path)
    try:
        mode = os.lstat(path)
    except FileNotFoundError:
        raise PosembError(f"cannot read {name}: no such file") from None
    except OSError as exc:
        raise PosembError(f"cannot read {name}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode.st_mode):
        raise _Invalid("it is a symbolic link: give the file it points to")
    if stat.S_ISDIR(mode.st_mode):
        raise PosembError(f"cannot read {name}: it is a folder")
    if not stat.S_ISREG(mode.st_mode):  # a FIFO or a device would block or never end
        raise _Invalid("not a regular file")
    if mode.st_size > MAX_FILE_BYTES:
        raise _Invalid(f"it is {mode.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip file
            raise _Invalid("not an .npz file")
        members = _zip_members(handle, mode.st_size)
        if members > MAX_MEMBERS:
            raise _Invalid(f"its archive declares {members:,} members, over the limit of {MAX_MEMBERS}")
        handle.seek(0)
        with zipfile.ZipFile(handle) as zipped:
            infos = zipped.infolist()
            names = [info.filename for info in infos]
            if len(infos) > MAX_MEMBERS or len(set(names)) != len(names):
                raise _Invalid("its archive has repeated or too many members")
            for info in infos:
                if not re.fullmatch(r"header\.npy|sum_[a-z][a-z0-9_]{0,63}\.npy", info.filename):
                    raise _Invalid(f"its archive has a member {info.filename[:60]!r} that no partial has")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise _Invalid(
                        f"{info.filename} is compressed with method {info.compress_type} (only stored or deflated)"
                    )
            if "header.npy" not in names:
                raise _Invalid("it has no header")
            header_info = zipped.getinfo("header.npy")
            if header_info.file_size > MAX_HEADER_BYTES:
                raise _Invalid(f"its header is {header_info.file_size:,} bytes, over the limit of {MAX_HEADER_BYTES:,}")
            header = _strict_json(str(_read_npy(zipped, header_info, "U", ()).item()))
            check_header(header)
            stored = header.pop("checksum", None)
            shape = (header["model"]["layers"], header["model"]["heads"])
            sums = {}
            for info in infos:
                if info.filename == "header.npy":
                    continue
                if info.file_size > 8 * math.prod(shape) + 10240:
                    raise _Invalid(
                        f"{info.filename} declares {info.file_size:,} bytes, more than a {list(shape)} array"
                    )
                sums[info.filename[4:-4]] = _read_npy(zipped, info, "f", shape)
    check_sums(header, sums)
    if stored != checksum(header, sums):
        raise _Invalid("it was changed after posemb wrote it (its checksum does not match)")
    return Partial(header=header, sums=sums, source=name)


def read_partial(path: str | Path) -> Partial:
    """A partial written by `posemb stats --partial`, `--checkpoint` or `stats merge --partial`, validated as the
    module docstring says; a one-line error naming the file and what is wrong otherwise."""
    import zipfile
    import zlib

    name = str(path)
    try:
        return _read_file(path)
    except _Invalid as exc:
        raise PosembError(f"{name} is not a valid posemb stats partial: {exc}") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise PosembError(
            f"{name} is not a valid posemb stats partial: it is cut short or damaged ({detail})"
        ) from None


def check_partial(partial: Partial) -> None:
    """The checks of read_partial on a Partial in memory (e.g. from run_shard in another process)."""
    try:
        check_header(partial.header)
        check_sums(partial.header, partial.sums)
    except _Invalid as exc:
        raise PosembError(f"{partial.source or 'a partial'} is not a valid posemb stats partial: {exc}") from None


def difference(a: Partial, b: Partial, keys: Iterable[tuple[str, tuple[str, ...]]] = MERGE_KEYS) -> str | None:
    """The first setting in which two partials differ, in words; None if they agree on all of `keys`."""
    for label, where in keys:
        first, second = _get(a.header, where), _get(b.header, where)
        if first != second:
            if label == "model":
                first, second = (f"{_inert(p.header['model']['name'])} (fingerprint {_short(p)})" for p in (a, b))
            else:
                first, second = _inert(first), _inert(second)
            return f"{label} {first} in {a.source or 'the first'} but {second} in {b.source or 'the second'}"
    return None


def _inert(value: Any) -> str:
    """A value from a file as it may be shown on a terminal: a string with control characters (escape sequences)
    or over 200 characters is shown JSON-escaped and cut."""
    text = str(value)
    if isinstance(value, str) and text.isprintable() and len(text) <= 200:
        return text
    shown = json.dumps(value, ensure_ascii=True) if isinstance(value, str) else text
    return shown if len(shown) <= 200 else shown[:197] + "..."


def _get(header: dict[str, Any], where: tuple[str, ...]) -> Any:
    value: Any = header
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _short(partial: Partial) -> str:
    return str(partial.header["model"].get("fingerprint") or "none")[:12]


def merge(parts: Iterable[Partial | str | Path], allow_missing: bool = False) -> Partial:
    """Add up partials (or the files they are in) of the shards of one corpus into one partial.

    The result equals one process over the whole corpus (up to float64 rounding in the order of the additions).
    Pieces of different models, options, posemb versions or corpora, an unfinished checkpoint, or a shard given
    twice are errors naming the difference; so is a missing shard, unless `allow_missing` (the result's header then
    lists only the shards it holds, and `Partial.missing_shards()` the others)."""
    pieces = [part if isinstance(part, Partial) else read_partial(part) for part in parts]
    for piece in pieces:
        check_partial(piece)
    if not pieces:
        raise PosembUsageError("stats merge needs at least one partial")
    for piece in pieces:
        if not piece.complete:
            raise PosembError(
                f"{piece.source or 'a partial'} is the checkpoint of an unfinished run ({piece.counts['texts']} "
                "texts so far): run its command again to finish it, then merge"
            )
    for piece in pieces:
        if not piece.header["model"].get("fingerprint"):
            raise PosembError(f"{piece.source or 'a partial'} has no model fingerprint: make it with run_shard(...)")
    first = pieces[0]
    for piece in pieces[1:]:
        different = difference(first, piece)
        if different is not None:
            raise PosembError(f"cannot merge: {different}")
        if set(piece.sums) != set(first.sums):
            odd = sorted(set(piece.sums) ^ set(first.sums))[0]
            raise PosembError(f"cannot merge: sum_{odd} is in only one of {first.source} and {piece.source}")
    owner: dict[int, str] = {}
    for piece in pieces:
        for index in piece.shard_indices:
            if index in owner:
                raise PosembError(
                    f"shard {index}/{first.shard_count} is in both {owner[index]} and {piece.source or 'another piece'}"
                )
            owner[index] = piece.source or "a piece"
    missing = sorted(set(range(first.shard_count)) - set(owner))
    if missing and not allow_missing:
        raise PosembError(
            f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {first.shard_count} "
            f"{'are' if len(missing) > 1 else 'is'} missing; pass --allow-missing to merge the others"
        )
    pieces.sort(key=lambda piece: min(piece.shard_indices))  # the same sum whatever the order on the command line
    sums = {name: np.sum([piece.sums[name] for piece in pieces], axis=0) for name in first.sums}
    counts = {key: sum(piece.counts[key] for piece in pieces) for key in COUNTS}
    header = {
        **first.header,
        "shards": {**first.header["shards"], "indices": sorted(owner)},
        "complete": True,
        "resume": None,
        "run": None,
        "counts": counts,
    }
    return Partial(header=header, sums=sums, source=f"the merge of {len(pieces)} partials")
