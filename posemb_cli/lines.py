"""How text comes in: TEXT arguments, stdin and corpus files, read one line at a time, lazily, with one UTF-8 rule."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import PosembError


def decode_lines(stream: BinaryIO, name: str, encoding_errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line end); invalid UTF-8 is an error naming the line, unless
    `encoding_errors` is "replace". A byte-order mark at the start of the first line is dropped."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8", errors=encoding_errors).rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise PosembError(
                f"{name} line {number} is not valid UTF-8 (byte {raw[exc.start]:#04x} at byte {exc.start}); "
                "fix the input or pass --encoding-errors replace"
            ) from None
        yield number, line.removeprefix("\ufeff") if number == 1 else line


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


def count_lines(path: str) -> int:
    """Non-empty lines of a file, streamed (for the progress bar's total; a 1 GB file is never held in memory)."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


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
