"""Reading text one line at a time from a byte stream (stdin or a corpus file), lazily, with one UTF-8 rule."""

from __future__ import annotations

from collections.abc import Iterator
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
