"""The light client: when a posemb server runs for this user, hand it the command and wait for the exit code.

What goes over the socket: the argv, the environment, the umask, the process setting (groups, namespaces, resource
limits, ignored signals: protocol.process_setting), how sys.stdin/stdout/stderr encode text, and four file descriptors
(stdin, stdout, stderr, the working directory). The server's child writes to this process's own stdout and stderr and
reads its stdin, so output, terminals, pipes and relative paths behave as in-process, and files are written by this
user where this process would write them. Signals (Ctrl-C, Ctrl-Z, SIGTERM, ...) are passed on to the child.

Nothing heavy is imported here (no Typer, torch, transformers, matplotlib or numpy; the standard library only once a
command is to be sent): a warm command costs little more than starting Python. A server that cannot answer exactly
as this process would means "run the command here" (None from `forward`); one that dies in the middle of a command
whose input or output cannot be rewound means exit 1 with one line, never partial output with exit 0.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket
    import subprocess
    from pathlib import Path

OFF = ("off", "0", "no", "false")
TRUE = ("1", "true", "t", "yes", "y", "on")  # how the --debug option reads POSEMB_DEBUG
CONNECT_TIMEOUT = 5.0  # seconds
ACCEPT_TIMEOUT = 60.0  # a server loading a model for an earlier request takes this one when it is done
STARTUP_WAIT = 180.0  # seconds a first command waits for the server it started (then it runs here)
AUTO_IDLE_MINUTES = 15  # an auto-started server stops after this long without a command
# Signals the client passes on to the server's child, which then takes them as this process would have (Ctrl-C and
# Ctrl-Z included). A signal this process ignores (nohup, a background job of a script) is ignored there too.
PASSED_ON = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTSTP")


def forward(argv: list[str]) -> int | None:
    """The exit code of the command in `argv` (sys.argv) as a running server answered it; None when it should run in
    this process: POSEMB_SERVER=off, no command or `serve`, no usable server, or a server that stopped before it began
    the command. The first command with no server running starts one (auto_start) unless CI=true. A refusal is
    explained on stderr with --debug."""
    args = argv[1:]
    if os.environ.get("POSEMB_SERVER", "").strip().lower() in OFF or _command(args) in (None, "serve"):
        return None  # before any import: `posemb --help` and POSEMB_SERVER=off cost nothing here
    from . import protocol

    debug = "--debug" in args or os.environ.get("POSEMB_DEBUG", "").strip().lower() in TRUE
    try:
        sock = connect(CONNECT_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):  # no server, or one that is gone
        if any(arg in ("--help", "-h", "--version") for arg in args):
            return None  # help is quick here: no server is started for it
        try:
            started = auto_start(args, debug)
        except KeyboardInterrupt:
            return 130
        if started is None:
            return None
        sock = started
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
    from . import protocol

    return protocol.runtime_dir() / protocol.SOCKET


def connect(timeout: float) -> socket.socket:
    """A connection to this user's server; UnsafeFolder when the folder is not private or the process listening is
    not this user's (checked on every connection, as the server checks its clients)."""
    import socket

    from . import protocol

    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        uid = protocol.peer_uid(sock)
        if uid != os.getuid():
            raise protocol.UnsafeFolder(f"the server at {path} runs as uid {uid}, not as this user")
    except BaseException:
        sock.close()
        raise
    return sock


def _run(sock: socket.socket, argv: list[str], debug: bool) -> int | None:
    from . import protocol

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
    if reply is not None and isinstance(reply.get("signal"), int):
        return _take_signal(reply["signal"])
    if reply is not None and reply.get("refused"):  # it could not start the command: nothing was read or written
        _note(debug, f"the posemb server could not run the command: {reply['refused']}; running here")
        return None
    why = (reply or {}).get("failed") or "the posemb server stopped before the command finished"
    if not _rewind(saved):
        print(
            f"Error: {why}, so its output is incomplete; run the command again "
            "(POSEMB_SERVER=off runs it in this process)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f"posemb: {why}; running the command here", file=sys.stderr, flush=True)
    return None


def _request(argv: list[str]) -> dict[str, Any]:
    from . import protocol

    main = sys.modules.get("__main__")
    streams = (sys.stdin, sys.stdout, sys.stderr)
    return {
        "op": "run",
        "identity": protocol.identity(),
        "setting": protocol.process_setting(),
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
    """The server's last word on the request. Signals are passed on to the child (PASSED_ON): Ctrl-C interrupts the
    command, which then ends as it would here (exit 130), and a second one stops waiting; Ctrl-Z stops the child and
    this process, `fg` continues both; SIGTERM and SIGHUP end it as they end a command here (a checkpoint is saved)."""
    import signal

    from . import protocol

    cancelled = False

    def tell(name: str) -> None:
        try:
            protocol.send(sock, {"op": "signal", "signal": name})
        except OSError:
            pass

    def cancel(signum: int, frame: Any) -> None:
        nonlocal cancelled
        if cancelled:
            raise KeyboardInterrupt
        cancelled = True
        try:
            protocol.send(sock, {"op": "cancel"})
        except OSError:
            pass

    def suspend(signum: int, frame: Any) -> None:
        tell("SIGTSTP")
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until `fg` (SIGCONT)
        signal.signal(signal.SIGTSTP, suspend)
        tell("SIGCONT")

    def pass_on(signum: int, frame: Any) -> None:
        tell(signal.Signals(signum).name)

    previous: dict[int, Any] = {}
    for name in PASSED_ON:
        number = getattr(signal, name, None)
        if number is None or signal.getsignal(number) is signal.SIG_IGN:
            continue
        handler: Any = cancel if name == "SIGINT" else suspend if name == "SIGTSTP" else pass_on
        previous[number] = signal.signal(number, handler)
    try:
        return protocol.receive(sock)
    except KeyboardInterrupt:
        return {"exit": 130}
    except (OSError, protocol.ProtocolError):
        return None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _take_signal(number: int) -> int:
    """The child died of a signal this process passed on: die of it too, so the shell sees what it would have."""
    import signal

    try:
        signal.signal(number, signal.SIG_DFL)
        sys.stdout.flush()
        os.kill(os.getpid(), number)
    except (OSError, ValueError):
        pass
    return 128 + number


def _positions() -> dict[int, tuple[int, int] | None]:
    """Offset and size of stdin and stdout where they are regular files, to undo a stopped server's reads and writes;
    None for /dev/null, which has nothing to undo."""
    import stat

    saved: dict[int, tuple[int, int] | None] = {}
    null = _null()
    for fd in (0, 1):
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            saved[fd] = (os.lseek(fd, 0, os.SEEK_CUR), info.st_size)
        elif null is not None and (info.st_dev, info.st_ino) == null:
            saved[fd] = None
    return saved


def _null() -> tuple[int, int] | None:
    try:
        info = os.stat(os.devnull)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _rewind(saved: dict[int, tuple[int, int] | None]) -> bool:
    """Before running here what a stopped server began: stdin back to where it was, stdout cut back to its old size.
    False when that cannot be done: input already read from a pipe or terminal, output already sent to one."""
    if set(saved) != {0, 1}:
        return False
    for fd, position in saved.items():
        if position is None:
            continue
        offset, size = position
        try:
            if fd == 1:
                os.ftruncate(fd, size)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError:
            return False
    return True


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _note(debug: bool, message: str) -> None:
    if debug:
        print(f"posemb: {message}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ---------------------------------------------------------------- the first command starts a server


def auto_start(args: list[str], debug: bool) -> socket.socket | None:
    """No server is running: start one in the background, as the first command of a build starts Gradle's daemon,
    say so in one line on stderr, and return a connection to it once it listens (None: run this command here). Never
    with CI=true (or CI=1), where the server cannot be made private (the folder is open to others, a symlink, another
    user's, a file), or without SO_PEERCRED. A server that another command is starting is waited for, not started
    twice."""
    import socket
    import time

    from . import protocol

    if os.environ.get("CI", "").strip().lower() in TRUE or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        folder = protocol.runtime_dir(create=True)
    except (OSError, protocol.UnsafeFolder) as exc:
        _note(debug, f"not starting a posemb server ({_reason(exc)}); running here")
        return None
    process = None
    if not protocol.server_alive(folder):
        options = [f"--idle-timeout={AUTO_IDLE_MINUTES}"] + ([] if _names_model(args) else ["--model=bundled"])
        try:
            process = spawn_server(folder, options)
        except OSError as exc:
            _note(debug, f"could not start a posemb server ({_reason(exc)}); running here")
            return None
        print(
            f"posemb: started a server in the background (pid {process.pid}) to make the next commands fast; "
            f"`posemb serve --stop` stops it, POSEMB_SERVER=off turns this off",
            file=sys.stderr,
            flush=True,
        )
    deadline = time.monotonic() + STARTUP_WAIT
    while time.monotonic() < deadline:
        try:
            return connect(CONNECT_TIMEOUT)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        except (OSError, protocol.UnsafeFolder) as exc:
            _note(debug, f"not using the posemb server ({_reason(exc)}); running here")
            return None
        if (process.poll() is not None) if process is not None else not protocol.server_alive(folder):
            _note(debug, f"the posemb server did not start (see {folder / protocol.LOG_FILE}); running here")
            return None
        time.sleep(0.05)
    _note(debug, f"the posemb server did not answer within {STARTUP_WAIT:.0f} s; running here")
    return None


def _names_model(args: list[str]) -> bool:
    return any(a in ("-m", "--model") or a.startswith("--model=") or (a.startswith("-m") and len(a) > 2) for a in args)


SERVER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'posemb'; "
    "from posemb_cli.__main__ import main; main()"
)


def spawn_server(folder: Path, options: list[str]) -> subprocess.Popen[bytes]:
    """`posemb serve OPTIONS` in the background: its own session, the folder / as its working directory, its output
    appended to the log, and this very posemb package first on its path (so that it answers this client)."""
    import subprocess
    from pathlib import Path

    import posemb_cli

    from . import protocol

    package = str(Path(posemb_cli.__file__).resolve().parent.parent)
    log_fd = os.open(folder / protocol.LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with open(os.devnull, "rb") as null, open(log_fd, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-c", SERVER_MAIN, package, "serve", *options],
            stdin=null,
            stdout=log_file,
            stderr=log_file,
            cwd="/",
            start_new_session=True,
        )


# ---------------------------------------------------------------- posemb serve --status / --stop / --detach


def status(clean: bool = True) -> dict[str, Any] | None:
    """The running server's status, or None when none answers (then, with `clean`, a stale socket and pid file are
    removed)."""
    from . import protocol

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
    import time

    from . import protocol

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
    """Start `posemb serve OPTIONS` in the background (spawn_server) and return its status once it answers.
    RuntimeError with the server's own error line when it exits first."""
    import time

    from . import protocol

    folder = protocol.runtime_dir(create=True)
    log = folder / protocol.LOG_FILE
    start = log.stat().st_size if log.exists() else 0
    process = spawn_server(folder, options)
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
