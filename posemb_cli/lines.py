"""How text comes in: TEXT arguments, stdin and corpus files, read one line at a time, lazily, with one UTF-8 rule."""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import PosembError


def decode_lines(stream: BinaryIO, name: str, encoding_errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line end); invalid UTF-8 is an error naming the line, unless
    `encoding_errors` is "replace". A byte-order mark at the start of the first line is dropped."""
    for number, raw in enumerate(stream, start=1):
        yield number, decode_line(raw, number, name, encoding_errors)


def decode_line(raw: bytes, number: int, name: str, encoding_errors: str = "strict") -> str:
    """One line of `decode_lines`: line `number` (from 1) of `name`, decoded, without its line end."""
    try:
        line = raw.decode("utf-8", errors=encoding_errors).rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise PosembError(
            f"{name} line {number} is not valid UTF-8 (byte {raw[exc.start]:#04x} at byte {exc.start}); "
            "fix the input or pass --encoding-errors replace"
        ) from None
    return line.removeprefix("\ufeff") if number == 1 else line


class CountedLines:
    """The raw lines of a stream, numbered from 1, counted and hashed (SHA-256 of their bytes) as they are read: where
    a run stands in a corpus (`stats --checkpoint`), and proof that two runs read the same lines (`stats merge`)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.lines = 0  # lines read so far
        self._hash = hashlib.sha256()

    def sha256(self) -> str:
        """Hex SHA-256 of the bytes of the lines read so far (line ends included)."""
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for raw in self.stream:
            self.lines += 1
            self._hash.update(raw)
            yield self.lines, raw

    def skip(self, count: int) -> None:
        """Read (and hash) the next `count` lines, or up to the end of the stream if it has fewer."""
        for _ in itertools.islice(self, count):
            pass


def read_texts(texts: Iterable[str], encoding_errors: str = "strict") -> Iterator[str]:
    """Positional texts in order; `-` stands for the lines of stdin, read lazily."""
    for text in texts:
        if text != "-":
            yield text
            continue
        for _, line in decode_lines(sys.stdin.buffer, "stdin", encoding_errors):
            yield line


def open_lines(corpus: str) -> tuple[BinaryIO, str]:
    """A corpus as a binary stream and the name to use in messages; `-` is stdin."""
    if corpus == "-":
        return sys.stdin.buffer, "stdin"
    path = Path(corpus)
    if path.is_dir():
        raise PosembError(f"cannot read {corpus}: it is a folder (give a text file with one text per line)")
    try:
        return path.open("rb"), corpus
    except OSError as exc:
        raise PosembError(f"cannot read {corpus}: {exc.strerror or exc}") from None


def count_lines(path: str, shard: tuple[int, int] = (0, 1)) -> int:
    """Non-empty lines of a file, streamed (for the progress bar's total; a 1 GB file is never held in memory); with
    `shard` (index, count), only lines k (from 0) with k mod count = index."""
    index, count = shard
    with open(path, "rb") as handle:
        return sum(1 for k, line in enumerate(handle) if k % count == index and line.strip())


def read_corpus(corpus: str, max_lines: int, encoding_errors: str = "strict") -> tuple[list[str], bool, str]:
    """The first `max_lines` non-empty lines of a corpus (`-`: stdin), read lazily (nothing past them is read, but one
    line to tell whether there was more). Returns (lines, whether lines were left unread, the corpus's name)."""
    stream, name = open_lines(corpus)
    lines: list[str] = []
    with stream:
        for _, line in decode_lines(stream, name, encoding_errors):
            if not line.strip():
                continue
            if len(lines) == max_lines:
                return lines, True, name
            lines.append(line)
    return lines, False, name
