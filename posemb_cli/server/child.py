"""The server's child: the forked process that runs one request. It leaves the server's session and signal handling,
takes the client's working directory, umask, environment, resource limits and stdin/stdout/stderr, runs the app it is
given (the command line, as `posemb` runs it) and tells the server through a pipe which models it used.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NoReturn

from . import protocol


def main(
    app: Callable[..., Any],
    request: dict[str, Any],
    fds: list[int],
    threads: int,
    cache: Any,
    report_fd: int,
    close_server: Callable[[], None],
) -> NoReturn:
    """The forked child's whole life: leave the server (`close_server` closes its sockets, pipes and locks), run the
    request, report the models it used on `report_fd`, and exit with the command's exit code. Never returns."""
    code = 1
    try:
        detach()
        close_server()
        code = run_request(app, request, fds, threads, cache)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        report_used(report_fd, cache)
        os._exit(code)


def detach() -> None:
    """Its own session (no terminal signals, no job control), death with the server, default signal handling."""
    os.setsid()
    _die_with_parent()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def check_descriptors(fds: list[int]) -> None:
    """The working directory must be a folder, and stdin/stdout/stderr open files of any kind but a folder."""
    import stat

    for number, fd in enumerate(fds):
        mode = os.fstat(fd).st_mode
        if (number == 3) != stat.S_ISDIR(mode):
            what = "the working directory is not a folder" if number == 3 else f"descriptor {number} is a folder"
            raise protocol.ProtocolError(what)


def _apply_setting(setting: dict[str, Any]) -> None:
    """The client's resource limits (ulimit -f, -n, -t, ...; the server checked that it may set them) and the signals
    it ignores."""
    import resource

    for name, (soft, hard) in setting["limits"].items():
        number = getattr(resource, name, None)
        if number is not None and name not in protocol.EQUAL_LIMITS:
            resource.setrlimit(number, (soft, hard))
    for name in setting["ignored"]:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def run_request(app: Callable[..., Any], request: dict[str, Any], fds: list[int], threads: int, cache: Any) -> int:
    """Become the client's process (working directory, umask, environment, limits, stdin/stdout/stderr, argv) and run
    the command line as `posemb` does with `app` (the Typer app the server was given); returns the exit code."""
    import torch
    from typer._click.utils import _detect_program_name  # the name Click shows in usage lines, as in the client

    stdin, stdout, stderr, cwd = fds
    os.fchdir(cwd)
    os.close(cwd)
    _apply_setting(request["setting"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    for target, fd in enumerate((stdin, stdout, stderr)):
        os.dup2(fd, target)
        os.close(fd)
    streams = [_text_stream(fd, "r" if fd == 0 else "w", request["stdio"][fd]) for fd in (0, 1, 2)]
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams  # type: ignore[misc]
    argv = request["argv"]
    sys.argv = list(argv)
    torch.set_num_threads(threads)
    cache.used.clear()
    prog = _detect_program_name(argv[0], SimpleNamespace(__package__=request["package"]))  # type: ignore[arg-type]
    try:
        app(args=argv[1:], prog_name=prog)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        sys.excepthook(*sys.exc_info())  # what Python prints for an uncaught exception (there: with --debug)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    return code


def _text_stream(fd: int, mode: str, spec: dict[str, Any]) -> Any:
    """sys.stdin/stdout/stderr as Python makes them at start-up, with the client's encoding and buffering."""
    stream: Any = open(  # noqa: SIM115 - the child's standard streams live until it exits
        fd, mode, encoding=spec["encoding"], errors=spec["errors"], newline="\n", closefd=False
    )
    stream.reconfigure(line_buffering=spec["line_buffering"], write_through=spec["write_through"])
    return stream


def _exit_code(code: Any) -> int:
    """The exit status Python gives SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def report_used(fd: int, cache: Any) -> None:
    """Tell the server which models the request used (at most 100), so that it can keep them for the next one."""
    used = []
    for key in list(dict.fromkeys(cache.used))[:100]:
        entry = cache.entries.get(key)
        used.append({**key._asdict(), "name": entry[1].info.name if entry else key.folder})
    try:
        os.write(fd, json.dumps(used).encode())
    except OSError:
        pass
    os.close(fd)


def read_report(fd: int | None) -> list[dict[str, Any]]:
    if fd is None:
        return []
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        used = json.loads(data or b"[]")
        return [entry for entry in used if isinstance(entry, dict) and isinstance(entry.get("folder"), str)]
    except (OSError, ValueError):
        return []
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the server dies, so no orphan keeps writing to a client that has moved on."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)
