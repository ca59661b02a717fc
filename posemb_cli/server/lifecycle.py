"""Starting and stopping a server: the private folder, the pid file locked for the server's life (one server per
user; a stale one is taken over), the log, the socket, the warm-up imports, and the clean-up when the loop ends
(--stop, SIGTERM, Ctrl-C, idle).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PosembError
from . import protocol
from .loop import Server, _duration, remove_socket

LOG_LIMIT = 5 * 2**20  # a larger log is moved to server.log.1 when a server starts


def serve(
    app: Callable[..., Any], models: list[str], max_models: int, idle_timeout: float, announce: Callable[[str], None]
) -> int:
    """Run a server in this process until it is stopped (--stop, SIGTERM, Ctrl-C: exit 130) or idle for
    `idle_timeout` seconds (0: never); each request runs `app` (the command line, cli.app) in a child. Loads `models`
    first; PosembError for anything that prevents serving."""
    if not hasattr(socket, "SO_PEERCRED"):
        raise PosembError("posemb serve needs SO_PEERCRED (Linux) to check who connects; run commands directly")
    try:
        folder = protocol.runtime_dir(create=True)
    except protocol.UnsafeFolder as exc:
        raise PosembError(f"refusing to serve: {exc}") from None
    identity = protocol.identity()
    lock, previous = _lock_pid_file(folder)
    log_file = _open_log(folder)

    def log(message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"{stamp} [{os.getpid()}] {message}\n")
        log_file.flush()

    try:
        if previous:
            log(f"took over from server pid {previous}, which is gone")
        for removed in _remove_stale_socket(folder):
            log(f"removed {removed}")
        _import_everything()
        server = Server(app, folder, identity, max_models, idle_timeout, log)
        server.held_fds = [lock, log_file.fileno()]
        for name in models:
            server.keep(name)
            log(f"loaded {name}")
        server.cache.used.clear()
        listener = _listen(folder / protocol.SOCKET)
        log(f"posemb {server.identity['version']} serving on {folder / protocol.SOCKET} (pid {os.getpid()})")
        where = f"socket {folder / protocol.SOCKET}, log {folder / protocol.LOG_FILE}"
        idle = f", stops after {_duration(idle_timeout)} idle" if idle_timeout else ""
        announce(f"posemb server running: pid {os.getpid()}, {where}{idle}")
        code = server.run(listener)
        log(f"stopped ({server.stopping}) after {server.served} request(s)")
        return code
    finally:
        remove_socket(folder)
        (folder / protocol.PID_FILE).unlink(missing_ok=True)
        os.close(lock)
        log_file.close()


def _lock_pid_file(folder: Path) -> tuple[int, str]:
    """Hold the pid file locked for the server's life: one server per user, and a lock that dies with the process
    tells the next one that a socket and pid file left behind are stale."""
    import fcntl

    path = folder / protocol.PID_FILE
    for _ in range(40):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            if pid:
                message = f"a posemb server is already running (pid {pid}); `posemb serve --stop` stops it"
                raise PosembError(message) from None
            time.sleep(0.05)  # a client is removing a stale pid file, or a server is starting: look again
            continue
        if os.path.exists(path) and os.fstat(fd).st_ino == os.stat(path).st_ino:
            previous = os.read(fd, 32).decode("ascii", "replace").strip()  # a server that died without cleaning up
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd, previous
        os.close(fd)  # the file was removed as stale while we waited for it: lock the new one
    raise PosembError(f"could not lock {path}")


def _remove_stale_socket(folder: Path) -> list[str]:
    path = folder / protocol.SOCKET
    if path.exists() or path.is_symlink():
        path.unlink()
        return [f"a stale socket ({path})"]
    return []


def _open_log(folder: Path) -> Any:
    path = folder / protocol.LOG_FILE
    if path.exists() and path.stat().st_size > LOG_LIMIT:
        path.replace(folder / (protocol.LOG_FILE + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return open(fd, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - open for the server's life


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no moment where another user could connect
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        raise PosembError(f"cannot listen on {path}: {why} (set XDG_RUNTIME_DIR to a short path)") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _import_everything() -> None:
    """Import what requests use (every posemb module, and what they import lazily: rich's tables and emoji, the
    matplotlib backends, the rotary embedding of scheme:rotary) once, here, so that no child spends time on it.
    A module missing from this list only makes requests slower, never different."""
    import importlib
    import io
    import pkgutil

    import posemb_cli

    for module in pkgutil.walk_packages(posemb_cli.__path__, "posemb_cli."):
        if not module.name.startswith(("posemb_cli.server", "posemb_cli.__main__")):
            importlib.import_module(module.name)
    for name in (
        "rich._emoji_codes",
        "rich.progress",
        "matplotlib.figure",
        "matplotlib.backends.backend_agg",
        "matplotlib.backends.backend_svg",
        "matplotlib.backends.backend_pdf",
        "transformers.models.llama.modeling_llama",
    ):
        importlib.import_module(name)
    from rich.console import Console
    from rich.table import Table

    table = Table("warm", "up")
    table.add_row("我", "1.0")
    Console(file=io.StringIO(), width=80).print(table)  # loads rich's lazily read unicode width tables
