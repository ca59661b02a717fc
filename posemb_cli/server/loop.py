"""The server loop: one process that keeps models loaded and answers every posemb command of its user.

The server loop (single-threaded, selectors) accepts connections on a Unix socket in the user's private folder,
checks the peer's uid (SO_PEERCRED) and the request (protocol.check_run), and forks one child per request. The child
takes the client's stdin, stdout, stderr and working directory (passed as file descriptors), its environment and
umask, and runs the app the server was given (`cli.app`, the normal command line: child.py) exactly as the client
would have: same code, same core functions, same renderers, and the models already in memory
(models.enable_load_cache). The child's exit status goes back to the client. After a request the server loads the
models it used (CPU only, never with --trust-remote-code) into its own cache, so the next request finds them warm.

Before it forks, the server compares the client's process setting with its own (protocol.setting_differences:
groups, namespaces, root folder, memory limits; the client runs the command itself when they differ), and the child
applies the client's other resource limits and ignored signals. Signals the client receives (Ctrl-C, Ctrl-Z, SIGTERM,
...) come as messages and are passed on to the child; a child killed by one of them is reported as such, and the
client then dies of the same signal. Out of file descriptors, the loop pauses accepting rather than spin.

Why a child per request: every request starts from the same clean state (environment, working directory, warnings,
matplotlib settings), a crash or a hostile model cannot take the server down, Ctrl-C is a SIGINT to the child, and
several clients are answered at once. The server itself never runs a forward pass and keeps torch at one thread: a
fork of a process whose OpenMP pool has started hangs. Each child sets the thread count a fresh process would have.
"""

from __future__ import annotations

import functools
import gc
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import child, protocol

MAX_CONNECTIONS = 256  # open connections; more are refused
MAX_RUNNING = 32  # requests running at once; more are refused (their clients run the command themselves)
REQUEST_DEADLINE = 10.0  # seconds a client has to send its whole request
CANCEL_GRACE = 5.0  # seconds an interrupted child has to end before SIGKILL


@dataclass
class Connection:
    sock: socket.socket
    opened: float
    reader: protocol.Reader = field(default_factory=protocol.Reader)
    fds: list[int] = field(default_factory=list)  # received with the request, until handed to the child
    pid: int | None = None  # the child running the request
    report: int | None = None  # read end of the pipe on which the child lists the models it used
    argv: list[str] = field(default_factory=list)
    number: int = 0
    started: float = 0.0
    interrupted: float | None = None  # when the child was sent SIGINT
    forwarded: set[int] = field(default_factory=set)  # the signals the client passed on to the child
    closed: bool = False


class Server:
    def __init__(
        self,
        app: Callable[..., Any],
        folder: Path,
        identity: dict[str, Any],
        max_models: int,
        idle_timeout: float,
        log: Callable[[str], None],
    ) -> None:
        from ..models import enable_load_cache

        self.app = app  # what each child runs: the command line (cli.app), given by `posemb serve`
        self.folder = folder
        self.log = log
        self.idle_timeout = idle_timeout  # seconds; 0: never
        self.cache = enable_load_cache(max_models)
        self.names: dict[Any, str] = {}  # the name a cached model was asked for by, for --status
        self.identity = identity  # taken before the imports, which may set variables of their own
        self.threads = 0  # torch's thread count in a fresh process (known once torch is imported, see _one_thread)
        self.started = time.time()
        self.last_active = time.monotonic()
        self.served = 0
        self.numbered = 0  # requests started
        self.connections: dict[int, Connection] = {}  # by id()
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.wake = os.pipe()
        self.signalled: int | None = None
        self.stopping: str | None = None
        self.exit_code = 0
        self.held_fds: list[int] = []  # the pid-file lock and the log, closed in children
        self.setting = protocol.process_setting()  # groups, namespaces, limits: a client's must match (or be applied)
        self.paused_until = 0.0  # accepting paused (out of file descriptors) until then
        self.accept_failures = 0  # since the last line about them in the log
        self.accept_logged = -1e9

    # ---------------------------------------------------------------- models

    def keep(self, name: str, shown: str | None = None, **options: Any) -> None:
        """Load a model on the CPU into the server's cache, or mark it as just used (a model whose files changed is
        read again). PosembError when it cannot be loaded. `shown`: its name in --status; `options`: load()'s."""
        from ..models import load

        self._one_thread()
        self.cache.used.clear()
        loaded = load(name, **{**options, "device": "cpu"})
        self.names[self.cache.used[-1]] = shown or loaded.info.name
        self.cache.used.clear()

    def _keep_used(self, used: list[dict[str, Any]]) -> None:
        for entry in used:
            if entry.get("device") != "cpu" or entry.get("trust_remote_code") is not False:
                continue  # CUDA cannot be shared with forked children; a model's own code never runs in the server
            options = {k: v for k, v in entry.items() if k not in ("folder", "name")}  # the CacheKey's other fields
            try:
                self.keep(str(entry["folder"]), str(entry.get("name") or entry["folder"]), **options)
            except Exception as exc:  # the request itself told its user about any error
                self.log(f"could not keep {entry.get('folder')}: {exc}")
        for key in list(self.names):
            if key not in self.cache.entries:
                del self.names[key]

    def _one_thread(self) -> None:
        """Before torch does anything here: note the thread count a fresh process would use (each child sets it),
        and keep the server at one, so that it never starts the OpenMP pool that would hang its forked children."""
        if not self.threads:
            import torch

            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)

    # ---------------------------------------------------------------- the loop

    def run(self, listener: socket.socket) -> int:
        self.listener = listener
        for fd in self.wake:
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake[1])
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        self.selector.register(self.wake[0], selectors.EVENT_READ, "wake")
        while not (self.stopping and not self.connections):
            self._resume_accepting()
            timeout = min(1.0, max(0.01, self.paused_until - time.monotonic())) if self.paused_until else 1.0
            for key, _ in self.selector.select(timeout=timeout):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    _drain_pipe(self.wake[0])
                else:
                    self._readable(key.data)
            if self.signalled is not None:
                name = signal.Signals(self.signalled).name
                self.exit_code = 130 if self.signalled == signal.SIGINT else 0
                self.signalled = None
                self.stop(f"{name} received")
            self._reap()
            self._expire()
        return self.exit_code

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum != signal.SIGCHLD:
            self.signalled = signum  # acted on in the loop, not here

    def stop(self, reason: str) -> None:
        """Take no more requests (the socket goes at once, so clients run commands themselves); end when the running
        ones have ended."""
        if self.stopping:
            return
        self.stopping = reason
        self.log(f"stopping: {reason}; {self._running()} request(s) still running")
        if self.listener is not None:
            if not self.paused_until:  # a paused listener is not watched
                self.selector.unregister(self.listener)
            self.listener.close()
            remove_socket(self.folder)
        for conn in list(self.connections.values()):
            if conn.pid is None:
                self._close(conn)

    def _running(self) -> int:
        return sum(conn.pid is not None for conn in self.connections.values())

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: let the client run the command itself
                self._pause_accepting(exc)
                return
            uid = protocol.peer_uid(sock)
            if uid != os.getuid() or len(self.connections) >= MAX_CONNECTIONS:
                why = f"refused: uid {uid} is not this server's user" if uid != os.getuid() else "busy"
                self.log(f"connection {why}")
                _send_quietly(sock, {"error": why})
                _drain_and_close(sock)
                continue
            sock.setblocking(False)
            conn = Connection(sock, time.monotonic())
            self.connections[id(conn)] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of file descriptors (or memory): the connection stays queued and the listener stays readable, so stop
        watching it for a moment instead of spinning; the log says so at most once a minute."""
        self.accept_failures += 1
        now = time.monotonic()
        if now - self.accept_logged >= 60:
            self.log(f"accept failed ({exc.strerror or exc}); pausing ({self.accept_failures} failure(s))")
            self.accept_logged, self.accept_failures = now, 0
        if self.listener is not None and not self.paused_until:
            self.selector.unregister(self.listener)
        self.paused_until = now + 0.5

    def _resume_accepting(self) -> None:
        if self.paused_until and time.monotonic() >= self.paused_until:
            self.paused_until = 0.0
            if self.listener is not None and not self.stopping:
                self.selector.register(self.listener, selectors.EVENT_READ, "listen")

    def _readable(self, conn: Connection) -> None:
        try:
            data, fds, flags, _ = socket.recv_fds(conn.sock, 65536, protocol.FDS + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds, flags = b"", [], 0
        if conn.pid is not None:  # running: only a cancel may come, or the client going away
            _close_fds(fds)
            if not data:
                self._unwatch(conn)
                self._interrupt(conn, "the client went away")
                return
            try:
                messages = conn.reader.feed(data)
            except protocol.ProtocolError:
                messages = []
            for message in messages:
                if message.get("op") == "cancel":
                    self._interrupt(conn, "the client pressed Ctrl-C")
                elif message.get("op") == "signal":
                    self._signal(conn, message.get("signal"))
            return
        conn.fds += fds
        if flags & socket.MSG_CTRUNC or len(conn.fds) > protocol.FDS:
            self._reject(conn, f"more than {protocol.FDS} file descriptors (or the server had no free ones)")
            return
        if not data:
            self._close(conn)
            return
        try:
            messages = conn.reader.feed(data)
        except protocol.ProtocolError as exc:
            self._reject(conn, str(exc))
            return
        if messages:
            self._handle(conn, messages[0])

    def _handle(self, conn: Connection, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "status":
            _send_quietly(conn.sock, self.status())
            self._close(conn)
        elif op == "stop":
            _send_quietly(conn.sock, {"stopping": os.getpid()})
            self._close(conn)
            self.stop("asked by posemb serve --stop")
        elif op != "run":
            self._reject(conn, f"unknown op {op!r}")
        elif not isinstance(message.get("identity"), dict):
            self._reject(conn, "a run request must carry the client's identity")
        elif differences := protocol.differences(message["identity"], self.identity):
            self.log(f"refused a client: {'; '.join(differences)}")
            _send_quietly(conn.sock, {"refused": "; ".join(differences)})
            self._close(conn)
        elif self._running() >= MAX_RUNNING:
            _send_quietly(conn.sock, {"refused": f"busy with {MAX_RUNNING} requests"})
            self._close(conn)
        else:
            try:
                request = protocol.check_run(message, len(conn.fds))
                child.check_descriptors(conn.fds)
            except protocol.ProtocolError as exc:
                self._reject(conn, str(exc))
                return
            if differences := protocol.setting_differences(request["setting"], self.setting):
                _send_quietly(conn.sock, {"refused": "; ".join(differences)})  # the client runs it, as it would
                self._close(conn)
            elif _send_quietly(conn.sock, {"accepted": True}):
                try:
                    self._start(conn, request)
                except OSError as exc:  # no free descriptors or processes: the client runs the command itself
                    self.log(f"could not start request: {exc}")
                    _send_quietly(conn.sock, {"refused": f"the server could not start it ({exc.strerror or exc})"})
                    self._close(conn)
            else:
                self._close(conn)

    def _signal(self, conn: Connection, name: Any) -> None:
        """A signal the client received, passed on to the child as the client's process would have taken it. Ctrl-Z
        stops the child with SIGSTOP (in its own session it would ignore SIGTSTP), and `fg` continues it."""
        if conn.pid is None or name not in (*protocol.FORWARDED_SIGNALS, "SIGTSTP", "SIGCONT"):
            return
        if name == "SIGINT":
            self._interrupt(conn, "the client pressed Ctrl-C")
            return
        sig = {"SIGTSTP": signal.SIGSTOP}.get(name) or getattr(signal, name)
        if name not in ("SIGTSTP", "SIGCONT"):
            conn.forwarded.add(int(sig))
            self.log(f"request {conn.number}: {name} from the client")
        _kill(conn.pid, sig)

    def _reject(self, conn: Connection, why: str) -> None:
        self.log(f"invalid request: {why}")
        _send_quietly(conn.sock, {"error": f"invalid request: {why}"})
        self._close(conn)

    def _unwatch(self, conn: Connection) -> None:
        if not conn.closed:
            self.selector.unregister(conn.sock)
            _drain_and_close(conn.sock)
            conn.closed = True

    def _close(self, conn: Connection) -> None:
        self._unwatch(conn)
        _close_fds(conn.fds)
        conn.fds = []
        self.connections.pop(id(conn), None)

    # ---------------------------------------------------------------- requests

    def _start(self, conn: Connection, request: dict[str, Any]) -> None:
        self._one_thread()
        gc.freeze()  # the child's garbage collector leaves the server's objects alone: no copying of their pages
        report_read, report_write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            _close_fds([report_read, report_write])
            raise
        self.numbered += 1
        conn.number, conn.argv, conn.started = self.numbered, request["argv"], time.monotonic()
        if pid == 0:  # the child: never returns
            close = functools.partial(self._close_in_child, conn, report_read)
            child.main(self.app, request, conn.fds, self.threads, self.cache, report_write, close)
        os.close(report_write)
        _close_fds(conn.fds)
        conn.fds, conn.pid, conn.report = [], pid, report_read
        self.last_active = time.monotonic()
        self.log(f"request {conn.number} (pid {pid}): {_shorten(conn.argv)}")

    def _close_in_child(self, conn: Connection, report_read: int) -> None:
        """In a new child: none of the server's sockets, pipes or locks (only the request's own descriptors)."""
        os.close(report_read)
        self.selector.close()
        if self.listener is not None:
            self.listener.close()
        _close_fds([*self.wake, *self.held_fds])
        for other in self.connections.values():
            if not other.closed:
                other.sock.close()
            if other is not conn:
                _close_fds([*other.fds, *([other.report] if other.report is not None else [])])

    def _interrupt(self, conn: Connection, why: str) -> None:
        if conn.pid is not None and conn.interrupted is None:
            self.log(f"request {conn.number}: interrupted ({why})")
            conn.interrupted = time.monotonic()
            _kill(conn.pid, signal.SIGINT)
            _kill(conn.pid, signal.SIGCONT)  # a child stopped by Ctrl-Z takes it now

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = next((c for c in self.connections.values() if c.pid == pid), None)
            if conn is not None:
                self._finish(conn, os.waitstatus_to_exitcode(status))

    def _finish(self, conn: Connection, code: int) -> None:
        seconds = time.monotonic() - conn.started
        if code < 0 and -code in conn.forwarded:  # killed by a signal the client passed on: the client takes it too
            reply: dict[str, Any] = {"signal": -code}
        elif code >= 0 or conn.interrupted is not None:
            reply = {"exit": code if code >= 0 else 130}
        else:
            reply = {"failed": f"the server's process for this command was killed by {signal.Signals(-code).name}"}
        if not conn.closed:
            _send_quietly(conn.sock, reply)
        self.log(f"request {conn.number}: {reply} in {seconds:.2f} s")
        used = child.read_report(conn.report)
        conn.pid = None
        self._close(conn)
        self.served += 1
        self.last_active = time.monotonic()
        if not self.stopping:
            self._keep_used(used)  # after the reply: the client is not kept waiting

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections.values()):
            if conn.pid is None and now - conn.opened > REQUEST_DEADLINE:
                self._reject(conn, f"no whole request within {REQUEST_DEADLINE:.0f} s")
            elif conn.pid is not None and conn.interrupted is not None and now - conn.interrupted > CANCEL_GRACE:
                _kill(conn.pid, signal.SIGKILL)
        idle = now - self.last_active
        if self.idle_timeout and not self.connections and not self.stopping and idle > self.idle_timeout:
            self.stop(f"idle for {_duration(self.idle_timeout)}")

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        models = []
        for key, (_, loaded) in self.cache.entries.items():  # least recently used first
            tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
            memory = sum(t.numel() * t.element_size() for t in tensors)
            models.append({"name": self.names.get(key, key.folder), **key._asdict(), "memory_bytes": memory})
        running = [
            {"pid": c.pid, "argv": c.argv[1:], "seconds": round(now - c.started, 3)}
            for c in self.connections.values()
            if c.pid is not None
        ]
        return {
            "pid": os.getpid(),
            "version": self.identity["version"],
            "package": self.identity["package"],
            "uptime_seconds": round(time.time() - self.started, 3),
            "socket": str(self.folder / protocol.SOCKET),
            "log": str(self.folder / protocol.LOG_FILE),
            "requests_served": self.served,
            "requests_running": running,
            "models": models,
            "max_models": self.cache.max_models,
            "memory_bytes": _resident_bytes(),
            "idle_timeout_seconds": self.idle_timeout,
            "idle_seconds": round(now - self.last_active, 3) if not running else 0.0,
            "torch_threads": self.threads,
        }


def remove_socket(folder: Path) -> None:
    (folder / protocol.SOCKET).unlink(missing_ok=True)


# ---------------------------------------------------------------- small tools


def _send_quietly(sock: socket.socket, message: dict[str, Any]) -> bool:
    """Send a (small) reply; False when the client is gone. Never blocks the loop for long."""
    try:
        sock.settimeout(1.0)
        protocol.send(sock, message)
        return True
    except OSError:
        return False
    finally:
        try:
            sock.setblocking(False)
        except OSError:
            pass


def _drain_and_close(sock: socket.socket) -> None:
    """Close a connection after reading what is waiting on it (a Unix socket closed with unread data resets the
    connection, and the peer could lose the reply it was sent)."""
    try:
        sock.setblocking(False)
        for _ in range(16):
            data, fds, _, _ = socket.recv_fds(sock, 65536, protocol.FDS + 1)
            _close_fds(fds)
            if not data:
                break
    except OSError:
        pass
    sock.close()


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _shorten(argv: list[str]) -> str:
    text = " ".join(argv[1:])
    return "posemb " + (text if len(text) <= 200 else text[:200] + "...")
