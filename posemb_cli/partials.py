"""Partials of `posemb stats`: the exact sums a corpus's statistics are made from, as a file that pieces of a run
write (`--shard I/N --partial FILE`, `--checkpoint FILE`) and that `posemb stats merge` adds up.

The file (format version 1) is a NumPy `.npz` archive, readable without posemb and without pickle:

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
    shards {count, indices}: the shards it holds (one for `--shard`; several after a merge),
    corpus {name, lines, sha256}: the lines read and the SHA-256 of their bytes (the whole corpus when complete;
        a checkpoint: the lines before the chunk of lines being read),
    complete: false for a checkpoint of an unfinished run,
    resume: null when complete; a checkpoint's {batches: batches of that chunk already in the sums, lines, sha256:
        where that chunk ends},
    run {batch_size, device}: how it ran (null after a merge),
    counts {texts, tokens, edge_rows, uniform, truncated, skipped, typed_special}: uniform is the sum behind
        `uniform_entropy`; typed_special counts special-token strings typed in the texts.

Merging adds the sums and counts. Pieces merge only if they agree on the posemb version, the model fingerprint,
every option, the shard count and the corpus (line count and SHA-256: every shard reads the whole corpus).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PosembError, PosembUsageError

if TYPE_CHECKING:
    from .stats import CorpusStats

FORMAT = "posemb-stats-partial"
VERSION = 1
COUNTS = ("texts", "tokens", "edge_rows", "uniform", "truncated", "skipped", "typed_special")


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
    ("corpus line count", ("corpus", "lines")),
    ("corpus SHA-256", ("corpus", "sha256")),
)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (from 0): line k of the corpus (k from 0, blank lines counted) belongs to it when
    k mod count = index, so that every shard agrees on the numbering without talking to the others."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, spec: str | tuple[int, int] | Shard) -> Shard:
        """ "I/N" (as `--shard` takes it), a tuple (I, N) or a Shard; a usage error unless 0 ≤ I < N."""
        if isinstance(spec, Shard):
            return spec
        if isinstance(spec, tuple):
            index, count = spec
        else:
            first, slash, second = spec.partition("/")
            if not slash or not first.strip().isdigit() or not second.strip().isdigit():
                raise PosembUsageError(f"--shard {spec!r}: expected I/N with 0 ≤ I < N, e.g. 3/16")
            index, count = int(first), int(second)
        if not 0 <= index < count:
            raise PosembUsageError(f"--shard {index}/{count}: the index must be 0..{count - 1} (shards count from 0)")
        return cls(index, count)

    def takes(self, line: int) -> bool:
        """Whether line number `line` (from 1, as in error messages) belongs to this shard."""
        return (line - 1) % self.count == self.index

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

    def stats(self) -> CorpusStats:
        """The per-head means, exactly as `posemb stats` prints them."""
        from .stats import partial_stats

        return partial_stats(self)

    def save(self, path: str | Path) -> None:
        """Write the `.npz` atomically (a temporary name in the same folder, flushed to disk, then renamed)."""
        from .output import write_atomic

        arrays: dict[str, Any] = {"header": np.array(json.dumps(self.header, ensure_ascii=False))}
        arrays.update({f"sum_{name}": np.asarray(value, dtype=np.float64) for name, value in self.sums.items()})

        def write(temp: str) -> None:
            with open(temp, "wb") as handle:  # a file object: np.savez adds no ".npz" to the name
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())

        write_atomic(Path(path), write)


def read_partial(path: str | Path) -> Partial:
    """A partial written by `posemb stats --partial`, `--checkpoint` or `stats merge --partial`; a one-line error
    naming the file if it is missing, not a partial, or of a newer format version than this posemb reads."""
    import zipfile

    name = str(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
            raise PosembError(f"{name} is not a posemb stats partial (not a regular file)")
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip file
                raise PosembError(f"{name} is not a posemb stats partial (not an .npz file)")
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(data["header"].item())
            sums = {key[4:]: np.asarray(data[key], dtype=np.float64) for key in data.files if key.startswith("sum_")}
    except FileNotFoundError:
        raise PosembError(f"cannot read {name}: no such file") from None
    except IsADirectoryError:
        raise PosembError(f"cannot read {name}: it is a folder") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise PosembError(f"{name} is not a posemb stats partial ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PosembError(f"{name} is not a posemb stats partial (its header has no format {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise PosembError(
            f"{name} has partial format version {version}, newer than this posemb reads ({VERSION}): upgrade posemb"
        )
    shape = (header["model"]["layers"], header["model"]["heads"])
    bad = [key for key, value in sums.items() if value.shape != shape]
    if bad or not sums:
        raise PosembError(f"{name} is not a posemb stats partial (sum_{bad[0] if bad else '*'} is not {shape})")
    return Partial(header=header, sums=sums, source=name)


def difference(a: Partial, b: Partial, keys: Iterable[tuple[str, tuple[str, ...]]] = MERGE_KEYS) -> str | None:
    """The first setting in which two partials differ, in words; None if they agree on all of `keys`."""
    for label, where in keys:
        first, second = _get(a.header, where), _get(b.header, where)
        if first != second:
            if label == "model":
                first, second = (f"{p.header['model']['name']} (fingerprint {_short(p)})" for p in (a, b))
            return f"{label} {first} in {a.source or 'the first'} but {second} in {b.source or 'the second'}"
    return None


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
        "shards": {"count": first.shard_count, "indices": sorted(owner)},
        "complete": True,
        "resume": None,
        "run": None,
        "counts": counts,
    }
    return Partial(header=header, sums=sums, source=f"the merge of {len(pieces)} partials")
