"""Where a command's output goes: data on stdout, warnings/progress/errors on stderr, files written atomically.

One `Output` object per run (the CLI's context object) owns the console and its width, resolves `--json`/`--format`,
checks output paths before any work, and carries the run's state (debug, texts done for the Ctrl-C message).
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import PosembError, PosembUsageError

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_WIDTH = 120  # tables written to a pipe or file, when COLUMNS does not say otherwise
PICTURE_SUFFIXES = (".png", ".svg", ".pdf")
REPORT_SUFFIX = ".html"  # one self-contained interactive page (render/html.py) wherever -o takes a picture


# Characters that a terminal would act on rather than show: C0 and C1 controls (ESC starts a colour, a title or a
# hyperlink sequence), DEL, and the bidi embeddings, overrides and isolates that reorder a line.
_INERT = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def inert(text: str) -> str:
    """Text from files (a model folder's or a cache repo's name, a config value) made safe to print on a terminal:
    each control character becomes its escape (ESC -> \\x1b, U+202E -> \\u202e). Rich markup and :emoji: codes are
    escaped where text enters a rich table (`shown`)."""
    return _INERT.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


def shown(text: str) -> str:
    """`inert` text for a rich table or line: markup brackets escaped too (the console interprets no :emoji:)."""
    from rich.markup import escape

    return escape(inert(text))


class GuardedStdout:
    """stdout, with a failure of the file or device behind it (a full disk, /dev/full) turned into one error line
    naming it; a reader that left (BrokenPipeError) is left to the caller. Everything else is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (BrokenPipeError, ValueError):
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> PosembError:
        try:
            name = os.readlink(f"/proc/self/fd/{self._stream.fileno()}")  # Linux: the file or device behind it
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            name = "stdout"
        _silence(self._stream)  # Python's own flush at exit must not fail again
        return PosembError(f"cannot write to stdout ({name}): {exc.strerror or exc}")


class _StripTrailingSpaces:
    """A text stream that drops the spaces at the end of each line (rich pads table lines to the full width)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._spaces = ""  # spaces at the end of the text written so far: kept only if more text follows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        *lines, last = (self._spaces + text).split("\n")
        kept = last.rstrip(" ")
        self._spaces = last[len(kept) :]
        self._stream.write("".join(line.rstrip(" ") + "\n" for line in lines) + kept)
        return len(text)


@functools.lru_cache(maxsize=1)
def _console_class() -> type[Console]:
    from rich.console import Console

    class PosembConsole(Console):
        def on_broken_pipe(self) -> None:
            raise  # the BrokenPipeError being handled: posemb's handler exits 0, as for JSON  # noqa: PLE0704

    return PosembConsole


def _silence(stream: TextIO) -> None:
    try:
        fileno = stream.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return  # not a real file (a test runner's buffer)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


class Output:
    """Streams are looked up at each write, so that a test runner that swaps sys.stdout is honoured."""

    def __init__(self, debug: bool = False, quiet: bool = False) -> None:
        self.debug = debug
        self.quiet = quiet  # nothing on stderr but errors
        self.done = -1  # texts finished by the running command (-1: not counting), for the Ctrl-C message
        self.saved: str | None = None  # what the command keeps on Ctrl-C (a checkpoint), for the same message
        _escape_what_stdout_cannot_encode()

    @property
    def stdout(self) -> TextIO:
        return GuardedStdout(sys.stdout)  # type: ignore[return-value]  # a TextIO in all but name

    @property
    def stderr(self) -> TextIO:
        return sys.stderr

    def width(self) -> int | None:
        """Table width: the terminal's on a terminal; otherwise COLUMNS, or 120. The same for every command."""
        if self.stdout.isatty():
            return None
        columns = os.environ.get("COLUMNS", "")
        return int(columns) if columns.isdigit() and int(columns) > 0 else DEFAULT_WIDTH

    def console(self) -> Console:
        """A rich console on stdout. In a pipe or file, lines lose rich's padding (no trailing spaces for `diff`), and
        a reader that leaves early (`head`) is a BrokenPipeError for `cli.handle_errors`, not rich's exit status 1."""
        stream = self.stdout
        if not stream.isatty():
            stream = _StripTrailingSpaces(stream)  # type: ignore[assignment]  # a TextIO in all but name
        return _console_class()(file=stream, width=self.width(), emoji=False)

    def silence_stdout(self) -> None:
        """After the reader left (`head`): point stdout at /dev/null, so that Python's own flush at exit neither fails
        nor prints."""
        _silence(sys.stdout)

    def data(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def stream(self, pieces: Iterable[str], size: int = 1 << 16) -> None:
        """Write text made piece by piece (`render.data.iter_json`) in blocks of about `size` characters."""
        block: list[str] = []
        length = 0
        for piece in pieces:
            block.append(piece)
            length += len(piece)
            if length >= size:
                self.stdout.write("".join(block))
                block, length = [], 0
        self.data("".join(block))

    def json(self, obj: Any) -> None:
        import json

        self.data(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")

    def warn(self, message: str) -> None:
        if not self.quiet:
            print(f"Warning: {inert(message)}", file=self.stderr, flush=True)

    def info(self, message: str) -> None:
        """A note on what was done ("Wrote attn.png"), on stderr."""
        if not self.quiet:
            print(inert(message), file=self.stderr, flush=True)

    def error(self, message: str) -> None:
        print(f"Error: {inert(message)}", file=self.stderr, flush=True)

    @property
    def progress(self) -> bool:
        """Progress is shown only to a person: on a terminal, and not with --quiet."""
        return not self.quiet and self.stderr.isatty()

    @contextlib.contextmanager
    def progress_bar(self, label: str, total: int | None, unit: str = "texts") -> Iterator[Callable[[int], None]]:
        """A rich progress bar on stderr (texts, texts/s, ETA when the total is known), only when `progress`;
        yields update(texts_done), a no-op otherwise, so callers need no branches. `unit`: what is counted."""
        if not self.progress:
            yield lambda done: None
            return
        from rich import progress as rp
        from rich.console import Console

        count = rp.MofNCompleteColumn() if total else rp.TextColumn("{task.completed} " + unit)
        columns = [rp.TextColumn(label), rp.BarColumn(), count]
        columns += [rp.TextColumn("{task.fields[rate]} " + unit + "/s"), rp.TimeElapsedColumn()]
        columns += [rp.TextColumn("ETA"), rp.TimeRemainingColumn()] if total else []
        start = time.perf_counter()
        with rp.Progress(*columns, console=Console(file=self.stderr), transient=False) as progress:
            task = progress.add_task(label, total=total, rate="-")

            def update(done: int) -> None:
                elapsed = time.perf_counter() - start
                progress.update(task, completed=done, rate=f"{done / elapsed:.0f}" if elapsed > 0 else "-")

            yield update

    @contextlib.contextmanager
    def layer_bar(self, label: str, layers: int) -> Iterator[Callable[[int], None] | None]:
        """A progress bar over the layers of one forward (one long text), only when `progress`; yields
        on_layer(layer_done), or None otherwise."""
        if not self.progress:
            yield None
            return
        from rich import progress as rp
        from rich.console import Console

        columns = [rp.TextColumn(label), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn("layers")]
        columns += [rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn()]
        with rp.Progress(*columns, console=Console(file=self.stderr), transient=False) as progress:
            task = progress.add_task(label, total=layers)
            yield lambda layer: progress.update(task, completed=layer + 1)

    @staticmethod
    def format(command: str, chosen: str | None, json_flag: bool, allowed: Sequence[str], default: str | None) -> str:
        """`--json` is short for `--format json`; a format the command does not print is a usage error."""
        fmt = "json" if json_flag else (chosen or default)
        if fmt is not None and fmt not in allowed:
            options = [f"--format {name}" for name in allowed if name != "json"] + ["--json"] * ("json" in allowed)
            use = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
            raise PosembUsageError(f"{command} prints {' or '.join(allowed)}, not {fmt}: use {use}")
        return fmt or ""

    @staticmethod
    def picture_path(path: Path, report: bool = False) -> str:
        """png | svg | pdf (and html when `report`: the CLI's -o) from the suffix, after checking the file can be
        written; a usage error otherwise."""
        suffix = path.suffix.lower()
        allowed = PICTURE_SUFFIXES + ((REPORT_SUFFIX,) if report else ())
        if suffix not in allowed:
            shown = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
            choices = ", ".join(allowed[:-1]) + " or " + allowed[-1]
            raise PosembUsageError(f"cannot write a picture to {path}: {shown}; use {choices}")
        check_writable(path)
        return suffix[1:]


def is_report(path: Path | None) -> bool:
    """-o FILE.html: the interactive HTML report instead of a picture."""
    return path is not None and path.suffix.lower() == REPORT_SUFFIX


def _json_escape(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a character the encoding lacks becomes its JSON escape (\\u4e2d, surrogate pairs beyond
    the BMP), so that JSON output stays valid JSON with the same strings and a table stays readable."""
    import json

    if not isinstance(error, UnicodeEncodeError):
        raise error
    global _escape_warned
    if not _escape_warned:
        _escape_warned = True
        print(
            f"Warning: stdout's encoding ({error.encoding}) cannot show some characters; they are written as \\uXXXX "
            "escapes (use a UTF-8 locale or PYTHONIOENCODING=utf-8)",
            file=sys.stderr,
            flush=True,
        )
    return json.dumps(error.object[error.start : error.end])[1:-1], error.end


_escape_warned = False
codecs.register_error("posemb-json-escape", _json_escape)


def _escape_what_stdout_cannot_encode() -> None:
    """stdout in an encoding other than UTF-8 (PYTHONIOENCODING=ascii, a Latin-1 locale): escape instead of failing."""
    global _escape_warned
    stream = sys.stdout
    encoding = codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name
    if encoding.startswith("utf") or not isinstance(stream, io.TextIOWrapper) or stream.errors != "strict":
        return
    stream.reconfigure(errors="posemb-json-escape")
    _escape_warned = False  # once per run


def check_writable(path: Path) -> None:
    """Fail before any work if the file cannot be created where the user asked, or if it exists and is read-only
    (the rename of `write_atomic` would go around that protection: posemb refuses, as `cp` does)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PosembError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise PosembError(f"cannot write {path}: it is a folder")
    if not os.access(folder, os.W_OK):
        raise PosembError(f"cannot write {path}: folder {folder} is not writable")
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise PosembError(f"cannot write {path}: the file is read-only (make it writable or remove it first)")


def write_atomic(path: Path, write: Callable[[str], None], suffix: str = "") -> None:
    """Call write(temp_name) in the target folder, then rename over `path`; remove the temp file on any failure,
    Ctrl-C, SIGTERM or SIGHUP. A file replaced keeps its permission bits; a new one gets the umask's."""
    import tempfile  # here, not at the top: `posemb --help` stays light

    check_writable(path)
    folder = path.parent if str(path.parent) else Path(".")
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    suffix = suffix or (path.suffix if len(path.suffix) <= 16 else "")
    with _signals_end_the_run():
        fd, temp = tempfile.mkstemp(prefix=".posemb-", suffix=suffix, dir=folder)  # short: a long name still fits
        os.close(fd)
        try:
            write(temp)
            os.chmod(temp, mode)  # mkstemp makes the file private
            os.replace(temp, path)
        except OSError as exc:
            _remove(temp)
            raise PosembError(f"cannot write {path}: {exc.strerror or exc}") from None
        except BaseException:
            _remove(temp)
            raise


def _remove(temp: str) -> None:
    if os.path.exists(temp):
        os.unlink(temp)


@contextlib.contextmanager
def _signals_end_the_run() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) meanwhile, as Ctrl-C raises KeyboardInterrupt, so that the
    temp file is removed on the way out; a signal ignored before (`nohup`) stays ignored, and one that posemb turned
    into Ctrl-C before (a handler marked `posemb_interrupt`: `stats --checkpoint`) stays Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def end(signum: int, frame: Any) -> None:
        handler = previous.get(signum)
        if getattr(handler, "posemb_interrupt", False):  # `stats --checkpoint`: SIGTERM is Ctrl-C, even mid-write
            handler(signum, frame)  # type: ignore[misc, operator]
        raise SystemExit(128 + signum)

    previous = {}
    for number in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, end)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
