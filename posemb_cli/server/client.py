"""The light client: when a posemb server runs for this user, hand it the command and wait for the exit code.

What goes over the socket: the argv, the environment, the umask, how sys.stdin/stdout/stderr encode text, and four
file descriptors (stdin, stdout, stderr, the working directory). The server's child writes to this process's own
stdout and stderr and reads its stdin, so output, terminals, pipes and relative paths behave as in-process, and files
are written by this user where this process would write them. Ctrl-C is forwarded as a cancel.

Nothing heavy is imported here (no Typer, torch, transformers, matplotlib or numpy): a warm command costs little more
than starting Python. Every failure to use a server means "run the command here" (None from `forward`).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from . import protocol

OFF = ("off", "0", "no", "false")
TRUE = ("1", "true", "t", "yes", "y", "on")  # how the --debug option reads POSEMB_DEBUG
CONNECT_TIMEOUT = 5.0  # seconds
ACCEPT_TIMEOUT = 60.0  # a server loading a model for an earlier request takes this one when it is done


def forward(argv: list[str]) -> int | None:
    """The exit code of the command in `argv` (sys.argv) as a running server answered it; None when it should run in
    this process: POSEMB_SERVER=off, no command or `serve`, no usable server, or a server that stopped before answering
    (said on stderr). A refusal is explained on stderr with --debug."""
    args = argv[1:]
    debug = "--debug" in args or os.environ.get("POSEMB_DEBUG", "").strip().lower() in TRUE
    if os.environ.get("POSEMB_SERVER", "").strip().lower() in OFF or _command(args) in (None, "serve"):
        return None
    try:
        sock = connect(CONNECT_TIMEOUT)
    except FileNotFoundError:
        return None  # no server was started
    except (OSError, protocol.UnsafeFolder) as exc:
        _note(debug, f"not using the posemb server ({_reason(exc)}); running here")
        return None
    with sock:
        return _run(sock, argv, debug)


def _command(args: list[str]) -> str | None:
    """The command name, or None when the arguments are only options (--help, --version)."""
    for arg in args:
        if arg != "--debug":
            return None if arg.startswith("-") else arg
    return None


def socket_path() -> Path:
    return protocol.runtime_dir() / protocol.SOCKET


def connect(timeout: float) -> socket.socket:
    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _run(sock: socket.socket, argv: list[str], debug: bool) -> int | None:
    try:
        request = _request(argv)
        saved = _positions()
        cwd = os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, AttributeError, ValueError) as exc:  # a closed stdin/stdout/stderr, an unreadable folder
        _note(debug, f"cannot hand this command to the posemb server ({_reason(exc)}); running here")
        return None
    try:
        protocol.send(sock, request, fds=[0, 1, 2, cwd])
        sock.settimeout(ACCEPT_TIMEOUT)
        reply = protocol.receive(sock)
    except (OSError, protocol.ProtocolError) as exc:
        _note(debug, f"the posemb server did not take the command ({_reason(exc)}); running here")
        return None
    finally:
        os.close(cwd)
    if reply is None or not reply.get("accepted"):
        why = (reply or {}).get("refused") or (reply or {}).get("error") or "it closed the connection"
        _note(debug, f"not using the posemb server at {socket_path()}: {why}; running here")
        return None
    sock.settimeout(None)
    reply = _wait(sock)
    if reply is not None and isinstance(reply.get("exit"), int):
        return int(reply["exit"])
    why = (reply or {}).get("failed") or "the posemb server stopped before the command finished"
    print(f"posemb: {why}; running the command here", file=sys.stderr, flush=True)
    _rewind(saved)
    return None


def _request(argv: list[str]) -> dict[str, Any]:
    main = sys.modules.get("__main__")
    streams = (sys.stdin, sys.stdout, sys.stderr)
    return {
        "op": "run",
        "identity": protocol.identity(),
        "argv": list(argv),
        "env": dict(os.environ),
        "umask": _umask(),
        "package": getattr(main, "__package__", None),  # with argv[0], how Click names the program in usage lines
        "stdio": [
            {
                "encoding": stream.encoding,
                "errors": stream.errors,
                "line_buffering": stream.line_buffering,
                "write_through": getattr(stream, "write_through", False),
            }
            for stream in streams
        ],
    }


def _wait(sock: socket.socket) -> dict[str, Any] | None:
    """The server's last word on the request. The first Ctrl-C asks the server to interrupt the command (which then
    ends as it would here, exit 130); a second one stops waiting."""
    cancelled = False

    def cancel(signum: int, frame: Any) -> None:
        nonlocal cancelled
        if cancelled:
            raise KeyboardInterrupt
        cancelled = True
        try:
            protocol.send(sock, {"op": "cancel"})
        except OSError:
            pass

    previous = signal.signal(signal.SIGINT, cancel)
    try:
        return protocol.receive(sock)
    except KeyboardInterrupt:
        return {"exit": 130}
    except (OSError, protocol.ProtocolError):
        return None
    finally:
        signal.signal(signal.SIGINT, previous)


def _positions() -> dict[int, tuple[int, int]]:
    """Offset and size of stdin and stdout where they are regular files, to undo a stopped server's reads and writes."""
    saved = {}
    for fd in (0, 1):
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            saved[fd] = (os.lseek(fd, 0, os.SEEK_CUR), info.st_size)
    return saved


def _rewind(saved: dict[int, tuple[int, int]]) -> None:
    """Before running here what a stopped server began: stdin back to where it was, stdout cut back to its old size.
    (Output already sent to a pipe or terminal, and input already read from one, cannot be taken back.)"""
    for fd, (offset, size) in saved.items():
        try:
            if fd == 1:
                os.ftruncate(fd, size)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _note(debug: bool, message: str) -> None:
    if debug:
        print(f"posemb: {message}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ---------------------------------------------------------------- posemb serve --status / --stop / --detach


def status(clean: bool = True) -> dict[str, Any] | None:
    """The running server's status, or None when none answers (then, with `clean`, a stale socket and pid file are
    removed)."""
    try:
        sock = connect(CONNECT_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        try:
            if clean:
                protocol.remove_stale(protocol.runtime_dir())
        except (OSError, protocol.UnsafeFolder):
            pass
        return None
    with sock:
        protocol.send(sock, {"op": "status"})
        return protocol.receive(sock)


def stop(wait: float = 600.0) -> dict[str, Any] | None:
    """Ask the running server to stop; it finishes the requests it is running first. Returns its last status once it
    has exited (None when no server was running); TimeoutError when it is still finishing after `wait` seconds."""
    info = status()
    if info is None:
        return None
    with connect(CONNECT_TIMEOUT) as sock:
        protocol.send(sock, {"op": "stop"})
        protocol.receive(sock)
    deadline = time.monotonic() + wait
    while protocol.server_alive(protocol.runtime_dir()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the posemb server (pid {info['pid']}) is still finishing its requests")
        time.sleep(0.05)
    return info


def start_detached(options: list[str], wait: float = 600.0) -> dict[str, Any]:
    """Start `posemb serve OPTIONS` in the background (its own session, output to the log) and return its status once
    it answers. RuntimeError with the server's own error line when it exits first."""
    import subprocess

    folder = protocol.runtime_dir(create=True)
    log = folder / protocol.LOG_FILE
    start = log.stat().st_size if log.exists() else 0
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with open(os.devnull, "rb") as null, open(log_fd, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "posemb_cli", "serve", *options],
            stdin=null,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log, "rb") as handle:
                handle.seek(start)
                lines = handle.read().decode("utf-8", "replace").splitlines()
            errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
            raise RuntimeError(errors[-1] if errors else f"the server exited with code {process.returncode}; see {log}")
        info = status(clean=False)  # the starting server removes what a dead one left, and logs it
        if info is not None and info.get("pid") == process.pid:
            return info
        time.sleep(0.05)
    raise TimeoutError(f"the posemb server (pid {process.pid}) did not answer within {wait:.0f} s; see {log}")
