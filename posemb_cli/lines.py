"""How text comes in: TEXT arguments, stdin and corpus files, read one line at a time, lazily, with one UTF-8 rule
and one size limit: a line longer than MAX_LINE_BYTES is cut there (at a character boundary, with a warning; the
model reads at most its maximum positions of tokens anyway), its rest read and dropped a piece at a time, so memory
stays bounded; a line longer than MAX_SKIP_BYTES (/dev/zero, a binary file) is an error."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import PosembError

MAX_LINE_BYTES = 1_000_000  # one text (a line, a TEXT argument); models read at most a few thousand tokens of it
MAX_SKIP_BYTES = 256 * 2**20  # a longer line is an error: no text file has one (/dev/zero, a binary file)
LINE_LIMIT = f"lines cut at {MAX_LINE_BYTES // 10**6} MB"  # the limit as --help states it


def _print_warning(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr, flush=True)


WARN: list[Callable[[str], None]] = [_print_warning]  # the CLI puts its Output.warn here (--quiet silences it)


def decode_lines(stream: BinaryIO, name: str, encoding_errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line end); invalid UTF-8 is an error naming the line, unless
    `encoding_errors` is "replace"; so is a line longer than MAX_LINE_BYTES. A byte-order mark at the start of the
    first line is dropped."""
    for number, raw in enumerate(raw_lines(stream, name), start=1):
        yield number, decode_line(raw, number, name, encoding_errors)


def raw_lines(stream: BinaryIO, name: str, hasher: Any = None) -> Iterator[bytes]:
    """The lines of a stream as bytes, line ends kept, never more than MAX_LINE_BYTES + 2 read at once. A longer line
    is cut to its first MAX_LINE_BYTES bytes (less up to 3, to end on a whole UTF-8 character), with a warning naming
    it; the rest is read and dropped. A line over MAX_SKIP_BYTES (/dev/zero) is an error. `hasher.update` sees every
    byte read, the dropped ones too."""
    number = 0
    while raw := stream.readline(MAX_LINE_BYTES + 2):  # room for the line end (CR LF)
        number += 1
        if hasher is not None:
            hasher.update(raw)
        if len(raw.rstrip(b"\r\n")) <= MAX_LINE_BYTES:
            yield raw
            continue
        end = MAX_LINE_BYTES
        while end > 0 and raw[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: the character began before the cut
            end -= 1
        kept, total = raw[:end], len(raw)
        while not raw.endswith(b"\n"):
            raw = stream.readline(MAX_LINE_BYTES)
            if not raw:
                break
            total += len(raw)
            if hasher is not None:
                hasher.update(raw)
            if total > MAX_SKIP_BYTES:
                raise PosembError(
                    f"{name} line {number} is longer than {MAX_SKIP_BYTES:,} bytes: not a text file? (posemb reads "
                    f"the first {MAX_LINE_BYTES:,} bytes of a long line and skips the rest, up to that limit)"
                )
        length = total - (2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0)
        WARN[0](
            f"{name} line {number} is {length:,} bytes long: posemb read its first {end:,} bytes and skipped the rest "
            "(a model reads at most its maximum positions of tokens anyway)"
        )
        yield kept + b"\n"


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
    """The raw lines of a stream (bounded as `raw_lines`), numbered from 1, counted and hashed (SHA-256 of their
    bytes) as they are read: where a run stands in a corpus (`stats --checkpoint`), and proof that two runs read the
    same lines (`stats merge`)."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream, self.name = stream, name
        self.lines = 0  # lines read so far
        self._hash = hashlib.sha256()

    def sha256(self) -> str:
        """Hex SHA-256 of the bytes of the lines read so far (line ends included)."""
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for raw in raw_lines(self.stream, self.name, self._hash):  # hashes every byte read, a cut line's rest too
            self.lines += 1
            yield self.lines, raw

    def skip(self, count: int) -> None:
        """Read (and hash) the next `count` lines, or up to the end of the stream if it has fewer."""
        for _ in itertools.islice(self, count):
            pass


def argument_text(text: str, what: str, encoding_errors: str = "strict") -> str:
    """A text given on the command line. Python hands bytes that are not UTF-8 over as lone surrogates
    (surrogateescape): they are an error naming the byte, or U+FFFD with encoding_errors="replace"."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")  # back to the bytes typed
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate from Python: invalid UTF-8 bytes
    if len(raw) > MAX_LINE_BYTES:
        raise PosembError(f"{what} is longer than {MAX_LINE_BYTES:,} bytes, posemb's limit for one text")
    try:
        return raw.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as exc:
        raise PosembError(
            f"{what} is not valid UTF-8 (byte {raw[exc.start]:#04x} at byte {exc.start}); "
            "fix it or pass --encoding-errors replace"
        ) from None


def read_texts(texts: Iterable[str], encoding_errors: str = "strict") -> Iterator[str]:
    """Positional texts in order; `-` stands for the lines of stdin, read lazily."""
    for number, text in enumerate(texts, start=1):
        if text != "-":
            yield argument_text(text, f"TEXT argument {number}", encoding_errors)
            continue
        for _, line in decode_lines(stdin(), "stdin", encoding_errors):
            yield line


def stdin() -> BinaryIO:
    """stdin as bytes; an error when it is closed (`posemb inspect - <&-`)."""
    if sys.stdin is None or sys.stdin.closed:
        raise PosembError("stdin is closed: pipe the texts in, or give them as arguments")
    return sys.stdin.buffer


def open_lines(corpus: str) -> tuple[BinaryIO, str]:
    """A corpus as a binary stream and the name to use in messages; `-` is stdin."""
    if corpus == "-":
        return stdin(), "stdin"
    path = Path(corpus)
    if path.is_dir():
        raise PosembError(f"cannot read {corpus}: it is a folder (give a text file with one text per line)")
    try:
        return path.open("rb"), corpus
    except OSError as exc:
        raise PosembError(f"cannot read {corpus}: {exc.strerror or exc}") from None


def check_corpus(corpus: str) -> None:
    """Fail early (before a model loads) on a corpus that cannot be read: missing, a folder, no permission. A pipe
    or device is not opened here: opening a FIFO waits for its writer, and closing it again would cut the writer off."""
    if corpus == "-":
        return
    try:
        mode = os.stat(corpus).st_mode
    except OSError as exc:
        raise PosembError(f"cannot read {corpus}: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        open_lines(corpus)[0].close()


def count_lines(path: str, takes: Callable[[int], bool] | None = None) -> int | None:
    """Non-empty lines of a regular file, streamed (for the progress bar's total; a 1 GB file is never held in
    memory); with `takes` (a shard's `takes`), only the line numbers it takes. None for anything else: counting
    would drain a pipe (`<(...)`, a FIFO) or never end (/dev/zero)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            count, number, blank = 0, 0, True  # number: the line being read (from 1); blank: nothing but spaces so far
            while piece := handle.readline(MAX_LINE_BYTES + 2):
                blank = blank and not piece.strip()
                if piece.endswith(b"\n"):
                    number += 1
                    count += (takes is None or takes(number)) and not blank
                    blank = True
            if not blank:  # a last line without a line end
                count += takes is None or takes(number + 1)
            return count
    except OSError:
        return None


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


def read_document(path: str) -> tuple[str, str]:
    """A whole text file (`-`: stdin) as one UTF-8 string, and its name for messages."""
    check_corpus(path)
    stream, name = open_lines(path)
    with stream:
        raw = stream.read()
    try:
        return raw.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        raise PosembError(f"{name} is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})") from None
