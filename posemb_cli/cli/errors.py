"""How a command ends when something goes wrong: one line `Error: ...` with a documented exit code (1 error, 2 usage,
130 interrupted), the traceback only with --debug; out-of-memory said with what would fit; the libraries' Python
warnings kept off stderr; SIGTERM taken as Ctrl-C where a checkpoint is to be saved."""

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer

from .. import lines as line_reader
from ..errors import ExitCode, PosembError
from ..output import Output

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(command: F) -> F:
    """One-line errors with documented exit codes; the traceback only with --debug or POSEMB_DEBUG=1."""

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(ctx.obj, Output):  # called without the app's callback (e.g. from Python)
            ctx.obj = Output()
        out: Output = ctx.obj
        line_reader.WARN[0] = out.warn  # a line cut at its size limit is said as posemb's warning (silent with --quiet)
        try:
            with library_warnings(out):
                return command(ctx, *args, **kwargs)
        except typer.Exit:
            raise
        except PosembError as exc:
            if out.debug:
                raise
            out.error(str(exc))
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            saved = out.saved or "no files were written."
            done = f"Interrupted after {out.done} text(s); {saved}" if out.done >= 0 else "Interrupted."
            print(done, file=sys.stderr, flush=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # The reader (e.g. `head`) closed the pipe: stop quietly, and keep Python's exit-time flush quiet too.
            out.silence_stdout()
            raise typer.Exit(int(ExitCode.OK)) from None
        except Exception as exc:
            if out.debug:
                raise
            if out_of_memory(exc):
                out.error(memory_message(ctx.info_name or "", exc))
            else:
                out.error(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (rerun with --debug)")
            raise typer.Exit(int(ExitCode.ERROR)) from None
        except BaseException as exc:
            # A Rust library (the tokenizer) panicked, e.g. on a pathological pre-tokenizer regex: pyo3 raises
            # PanicException, which derives from BaseException so that `except Exception` cannot swallow it.
            if type(exc).__name__ != "PanicException" or out.debug:
                raise
            out.error(
                f"the tokenizer library failed (Rust panic: {' '.join(str(exc).split())[:300]}); the model's tokenizer "
                "files are broken or hostile (rerun with --debug)"
            )
            raise typer.Exit(int(ExitCode.ERROR)) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def library_warnings(out: Output) -> Iterator[None]:
    """Python warnings of the libraries posemb calls (transformers, torch, NumPy) are kept off stderr: what matters
    of them posemb says itself, once (non-finite numbers, truncation, RoPE conventions). --debug shows them."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            if out.debug:
                for item in caught:
                    print(f"Warning (from {item.category.__name__}): {item.message}", file=sys.stderr)


def out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or torch's allocation failure (a RuntimeError: "can't allocate memory", "out of memory")."""
    text = str(exc).lower()
    words = ("can't allocate", "out of memory", "not enough memory")
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(w in text for w in words))


# What makes each command's largest arrays smaller (the attention maps: layers × heads × n² × 4 bytes per text).
MEMORY_HINTS = {
    "inspect": "a shorter text (inspect holds the maps of every layer and head: layers × heads × n² × 4 bytes)",
    "compare": "shorter texts (the maps of every layer and head of each model are held)",
    "ablate": "a shorter text (the maps of every layer and head are held, twice)",
    "stats": "a smaller --batch-size or --max-length (one layer's maps of a batch are held: batch × heads × n² × 4 "
    "bytes), or --dtype bfloat16",
}


def memory_message(command: str, exc: BaseException) -> str:
    """One line for an allocation that failed: how much was asked (when the message says), how much is free, and
    what would make it fit."""
    import os
    import re as regex

    asked = regex.search(r"allocate (?:memory: you tried to allocate )?([0-9]+) bytes", str(exc))
    size = f" (posemb asked for {int(asked[1]) / 2**30:.1f} GiB at once" if asked else " ("
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        size += f"{'; ' if asked else ''}{free:.1f} GiB of memory are free)"
    except (ValueError, OSError, AttributeError):
        size = size + ")" if asked else ""
    hint = MEMORY_HINTS.get(command, "shorter texts, a smaller --batch-size or --max-length where the command has one")
    return f"out of memory{size}: what would fit is {hint}"


@contextlib.contextmanager
def terminate_as_interrupt(active: bool) -> Iterator[None]:
    """SIGTERM (what a scheduler such as Slurm sends at the time limit) stops the run as Ctrl-C does, so that the
    checkpoint is saved; only with --checkpoint, and only where Python lets signals be handled (main thread)."""
    import signal
    import threading

    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    interrupt.posemb_interrupt = True  # type: ignore[attr-defined]  # a file being written meanwhile keeps this rule
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
