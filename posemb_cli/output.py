"""Where a command's output goes: data on stdout, warnings/progress/errors on stderr, files written atomically.

One `Output` object per run (the CLI's context object) owns the console and its width, resolves `--json`/`--format`,
checks output paths before any work, and carries the run's state (debug, texts done for the Ctrl-C message).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import PosembError, PosembUsageError

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_WIDTH = 120  # tables written to a pipe or file, when COLUMNS does not say otherwise
PICTURE_SUFFIXES = (".png", ".svg", ".pdf")


class Output:
    """Streams are looked up at each write, so that a test runner that swaps sys.stdout is honoured."""

    def __init__(self, debug: bool = False, quiet: bool = False) -> None:
        self.debug = debug
        self.quiet = quiet  # nothing on stderr but errors
        self.done = -1  # texts finished by the running command (-1: not counting), for the Ctrl-C message
        self.saved: str | None = None  # what the command keeps on Ctrl-C (a checkpoint), for the same message

    @property
    def stdout(self) -> TextIO:
        return sys.stdout

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
        from rich.console import Console

        return Console(file=self.stdout, width=self.width())

    def data(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def json(self, obj: Any) -> None:
        import json

        self.data(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")

    def warn(self, message: str) -> None:
        if not self.quiet:
            print(f"Warning: {message}", file=self.stderr, flush=True)

    def info(self, message: str) -> None:
        """A note on what was done ("Wrote attn.png"), on stderr."""
        if not self.quiet:
            print(message, file=self.stderr, flush=True)

    def error(self, message: str) -> None:
        print(f"Error: {message}", file=self.stderr, flush=True)

    @property
    def progress(self) -> bool:
        """Progress is shown only to a person: on a terminal, and not with --quiet."""
        return not self.quiet and self.stderr.isatty()

    @contextlib.contextmanager
    def progress_bar(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A rich progress bar on stderr (texts, texts/s, ETA when the total is known), only when `progress`;
        yields update(texts_done), a no-op otherwise, so callers need no branches."""
        if not self.progress:
            yield lambda done: None
            return
        from rich import progress as rp
        from rich.console import Console

        count = rp.MofNCompleteColumn() if total else rp.TextColumn("{task.completed} texts")
        columns = [rp.TextColumn(label), rp.BarColumn(), count]
        columns += [rp.TextColumn("{task.fields[rate]} texts/s"), rp.TimeElapsedColumn()]
        columns += [rp.TextColumn("ETA"), rp.TimeRemainingColumn()] if total else []
        start = time.perf_counter()
        with rp.Progress(*columns, console=Console(file=self.stderr), transient=False) as progress:
            task = progress.add_task(label, total=total, rate="-")

            def update(done: int) -> None:
                elapsed = time.perf_counter() - start
                progress.update(task, completed=done, rate=f"{done / elapsed:.0f}" if elapsed > 0 else "-")

            yield update

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
    def picture_path(path: Path) -> str:
        """png | svg | pdf from the suffix, after checking the file can be written; a usage error otherwise."""
        suffix = path.suffix.lower()
        if suffix not in PICTURE_SUFFIXES:
            shown = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
            raise PosembUsageError(f"cannot write a picture to {path}: {shown}; use .png, .svg or .pdf")
        check_writable(path)
        return suffix[1:]


def check_writable(path: Path) -> None:
    """Fail before any work if the file cannot be created where the user asked."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PosembError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise PosembError(f"cannot write {path}: it is a folder")
    if not os.access(folder, os.W_OK):
        raise PosembError(f"cannot write {path}: folder {folder} is not writable")


def write_atomic(path: Path, write: Callable[[str], None], suffix: str = "") -> None:
    """Call write(temp_name) in the target folder, then rename over `path`; remove the temp file on any failure."""
    import tempfile  # here, not at the top: `posemb --help` stays light

    check_writable(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent or ".")
    os.close(fd)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
