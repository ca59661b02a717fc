"""What the client and the server share: where the socket lives, how messages are framed and bounded, what a request
may hold, and the identity that tells a client whether a server runs the same posemb in the same setting.
Standard library only: the client imports this before anything heavy.

A message is 4 bytes of length (big-endian) and that many bytes of a JSON object. A run request carries, with its first
bytes (SCM_RIGHTS), the client's stdin, stdout, stderr and working directory as file descriptors.
"""

from __future__ import annotations

import codecs
import json
import os
import socket
import stat
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROTOCOL = 1
SOCKET, PID_FILE, LOG_FILE = "server.sock", "server.pid", "server.log"
MAX_MESSAGE = 4 * 2**20  # a run request holds the argv (texts included) and the environment
MAX_ARGS = 100_000
FDS = 4  # the client's stdin, stdout, stderr and working directory, in that order
_HEADER = struct.Struct(">I")
_ERRORS = {"strict", "replace", "ignore", "backslashreplace", "surrogateescape", "surrogatepass", "xmlcharrefreplace"}

# Variables that libraries read once, when imported (cache folders, hub mode, thread counts, devices, plot settings).
# The server read them when it started, so a client whose values differ runs its command itself.
STARTUP_ENV_PREFIXES = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "TORCH",
    "PYTORCH_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "CUDA_",
    "MPL",
)
STARTUP_ENV_NAMES = ("HOME", "XDG_CACHE_HOME", "PYTHONPATH", "PYTHONHASHSEED")


class ProtocolError(Exception):
    """A message that breaks the protocol (too long, not a JSON object) or a request that fails its checks."""


class UnsafeFolder(Exception):
    """The server's folder exists but is not private to this user."""


def runtime_dir(create: bool = False) -> Path:
    """This user's private server folder: $XDG_RUNTIME_DIR/posemb, else posemb/run under $XDG_CACHE_HOME or ~/.cache.
    It must be a real folder (no symlink), owned by this user, closed to everyone else (0700): UnsafeFolder otherwise,
    FileNotFoundError when it does not exist and `create` is false."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        folder = Path(runtime) / "posemb"
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        folder = (Path(cache) if os.path.isabs(cache) else Path.home() / ".cache") / "posemb" / "run"
    if create:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:  # a file (or a symlink to one) of that name: refused below
            pass
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFolder(f"{folder} is a symlink, not a folder of its own: remove it")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{folder} is not a folder: remove it")
    if info.st_uid != os.getuid():
        raise UnsafeFolder(f"{folder} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})")
    if info.st_mode & 0o077:
        raise UnsafeFolder(f"{folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}): chmod 700 it")
    return folder


def server_alive(folder: Path) -> bool:
    """Whether a server process holds its pid file locked (it does from before it listens until after it stops)."""
    import fcntl

    try:
        fd = os.open(folder / PID_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale(folder: Path) -> list[str]:
    """Remove the socket and pid file that a server which is gone left behind (a killed one); returns what was removed,
    nothing while a server holds the pid file locked."""
    import fcntl

    try:
        fd: int | None = os.open(folder / PID_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    removed = []
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
        if (folder / SOCKET).exists() or (folder / SOCKET).is_symlink():
            (folder / SOCKET).unlink()
            removed.append(f"a stale socket ({folder / SOCKET})")
        if fd is not None:
            pid = os.read(fd, 32).decode("ascii", "replace").strip()
            (folder / PID_FILE).unlink()
            removed.append(f"the pid file of server pid {pid or '?'}, which is gone")
    finally:
        if fd is not None:
            os.close(fd)
    return removed


# ---------------------------------------------------------------- framing


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode("ascii")  # ASCII escapes keep lone surrogates (undecodable argv bytes) intact
    return _HEADER.pack(len(data)) + data


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not JSON ({exc})") from None
    except RecursionError:  # JSON nested deeper than Python's recursion limit
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    frame = encode(message)
    if fds:
        frame = frame[socket.send_fds(sock, [frame], list(fds)) :]
    if frame:
        sock.sendall(frame)


def receive(sock: socket.socket, limit: int = MAX_MESSAGE) -> dict[str, Any] | None:
    """The next message (blocking); None when the peer closed the connection before a whole message came."""
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise ProtocolError(f"a message of {size} bytes is over the limit of {limit}")
    body = _read_exactly(sock, size)
    return None if body is None else decode(body)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Reader:
    """Messages from bytes that arrive in pieces (the server's non-blocking connections). A length over the limit is
    refused as soon as its header arrives, before any of the body is kept."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buffer += data
        messages = []
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if size > self.limit:
                raise ProtocolError(f"a message of {size} bytes is over the limit of {self.limit}")
            if len(self.buffer) < _HEADER.size + size:
                break
            body = bytes(self.buffer[_HEADER.size : _HEADER.size + size])
            del self.buffer[: _HEADER.size + size]
            messages.append(decode(body))
        return messages


# ---------------------------------------------------------------- identity


def identity() -> dict[str, Any]:
    """What must be equal for a server's answer to be the one this process would give: posemb's version, its files
    (where they are, and a stamp of their sizes and times), the Python environment, and the start-up variables."""
    from .._version import __version__

    package = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k.startswith(STARTUP_ENV_PREFIXES) or k in STARTUP_ENV_NAMES}
    return {
        "protocol": PROTOCOL,
        "version": __version__,
        "python": sys.prefix,
        "package": str(package),
        "source": _source_stamp(package),
        "environment": env,
    }


def _source_stamp(package: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(package)):
        dirs[:] = [name for name in dirs if name != "__pycache__"]
        for name in sorted(f for f in files if f.endswith(".py")):
            info = os.stat(os.path.join(folder, name))
            digest.update(f"{os.path.join(folder, name)} {info.st_size} {info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def differences(client: dict[str, Any], server: dict[str, Any]) -> list[str]:
    """Why a server cannot answer for this client, in words; empty when it can."""
    found = []
    if client.get("version") != server.get("version") or client.get("protocol") != server.get("protocol"):
        found.append(f"it runs posemb {server.get('version')}, this is posemb {client.get('version')}")
    for key, what in (("package", "posemb package"), ("python", "Python environment")):
        if client.get(key) != server.get(key):
            found.append(f"its {what} is {server.get(key)}, this one's {client.get(key)}")
    if not found and client.get("source") != server.get("source"):
        found.append("posemb's source files changed since it started")
    theirs, ours = server.get("environment") or {}, client.get("environment") or {}
    names = sorted(name for name in set(theirs) | set(ours) if theirs.get(name) != ours.get(name))
    if names:
        found.append(f"it started with other values of {', '.join(names)}")
    return found


# ---------------------------------------------------------------- requests


def check_run(message: dict[str, Any], fds: int) -> dict[str, Any]:
    """The fields of a run request, checked; ProtocolError naming the first one that is wrong."""
    if fds != FDS:
        raise ProtocolError(f"a run request carries {FDS} file descriptors, not {fds}")
    argv = message.get("argv")
    if not isinstance(argv, list) or not 0 < len(argv) <= MAX_ARGS or not all(_text(a) for a in argv):
        raise ProtocolError(f"argv must be a list of 1 to {MAX_ARGS} strings")
    env = message.get("env")
    if not isinstance(env, dict) or not all(_text(k) and k and "=" not in k and _text(v) for k, v in env.items()):
        raise ProtocolError("env must map names (no '=') to strings")
    umask = message.get("umask")
    if not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777:
        raise ProtocolError("umask must be an integer from 0 to 0o777")
    package = message.get("package")
    if package is not None and not _text(package):
        raise ProtocolError("package must be a string or null")
    stdio = message.get("stdio")
    if not isinstance(stdio, list) or len(stdio) != 3 or not all(_stream(s) for s in stdio):
        raise ProtocolError("stdio must describe three text streams (encoding, errors, line_buffering, write_through)")
    setting = check_setting(message.get("setting"))
    return {"argv": argv, "env": env, "umask": umask, "package": package, "stdio": stdio, "setting": setting}


def _text(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value and len(value) <= MAX_MESSAGE


def _stream(value: Any) -> bool:
    if not isinstance(value, dict) or value.get("errors") not in _ERRORS:
        return False
    if not all(isinstance(value.get(flag), bool) for flag in ("line_buffering", "write_through")):
        return False
    try:
        codecs.lookup(value.get("encoding") or "")
    except (LookupError, TypeError):
        return False
    return True


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED: pid, uid, gid as the kernel recorded them at connect)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return struct.unpack("3i", creds)[1]


# ---------------------------------------------------------------- the process setting

# What a fork of the server cannot take over from its client, and so must be equal for the server to answer: the
# groups that own and may open files, the namespaces (a PrivateTmp or container client sees its own /tmp, network,
# users), the root folder, and the memory-related limits, which a fork of a process already holding models would
# reach at other points than a fresh one. The other resource limits (ulimit -f, -n, -t, ...) are applied to the
# child, as long as the server may set them (a limit above the server's own hard limit cannot be).
NAMESPACES = ("mnt", "net", "user", "ipc", "uts", "pid")
EQUAL_LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_RSS", "RLIMIT_MEMLOCK")
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def process_setting() -> dict[str, Any]:
    """This process's groups, namespaces, root folder, resource limits and the signals it ignores (a client started
    with `nohup`, or in the background of a script, ignores SIGHUP or SIGINT; the server's child must as well)."""
    import resource
    import signal

    namespaces: dict[str, str | None] = {}
    for name in NAMESPACES:
        try:
            namespaces[name] = os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            namespaces[name] = None
    root = os.stat("/")
    limits = {}
    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        try:
            limits[name] = list(resource.getrlimit(getattr(resource, name)))
        except (OSError, ValueError):
            continue
    ignored = [name for name in FORWARDED_SIGNALS if signal.getsignal(getattr(signal, name)) is signal.SIG_IGN]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpus": cpus,  # taskset: torch's thread count (and so the rounding of sums) follows it
        "gid": os.getegid(),
        "groups": sorted(os.getgroups()),
        "namespaces": namespaces,
        "root": [root.st_dev, root.st_ino],
        "limits": limits,
        "ignored": ignored,
    }


def setting_differences(client: dict[str, Any], server: dict[str, Any]) -> list[str]:
    """Why a fork of the server cannot behave as the client would, in words; empty when it can."""
    found = []
    if client.get("gid") != server.get("gid") or client.get("groups") != server.get("groups"):
        found.append("it runs with other groups (files it wrote would get another group)")
    names = [
        n for n in NAMESPACES if (client.get("namespaces") or {}).get(n) != (server.get("namespaces") or {}).get(n)
    ]
    if names:
        found.append(f"it runs in other namespaces ({', '.join(names)}): it would see other files or network")
    if client.get("root") != server.get("root"):
        found.append("it runs with another root folder")
    if client.get("cpus") != server.get("cpus"):
        found.append("it may run on other CPUs (taskset): torch would use another number of threads")
    theirs, ours = server.get("limits") or {}, client.get("limits") or {}
    for name in sorted(set(theirs) | set(ours)):
        if name not in theirs or name not in ours:
            found.append(f"it cannot apply {name}")
        elif name in EQUAL_LIMITS and theirs[name] != ours[name]:
            found.append(f"its {name} limit is {_limit(theirs[name])}, this one's {_limit(ours[name])}")
        elif _above(ours[name][1], theirs[name][1]) or _above(ours[name][0], ours[name][1]):
            found.append(f"it cannot raise {name} to {_limit(ours[name])}")
    return found


def _above(value: int, limit: int) -> bool:
    infinity = -1  # resource.RLIM_INFINITY on Linux
    if limit == infinity:
        return False
    return value == infinity or value > limit


def _limit(pair: list[int]) -> str:
    return "/".join("unlimited" if v == -1 else str(v) for v in pair)


def check_setting(value: Any) -> dict[str, Any]:
    """A client's process setting, checked (see process_setting); ProtocolError when it is malformed."""

    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and -1 <= x < 2**63

    if not isinstance(value, dict):
        raise ProtocolError("a run request must carry the client's process setting")
    limits, ignored = value.get("limits"), value.get("ignored")
    groups = value.get("groups")
    if not whole(value.get("gid")) or not isinstance(groups, list) or not all(whole(g) for g in groups):
        raise ProtocolError("setting: gid and groups must be integers")
    cpus = value.get("cpus")
    if cpus is not None and (not isinstance(cpus, list) or len(cpus) > 2**16 or not all(whole(c) for c in cpus)):
        raise ProtocolError("setting: cpus must be a list of CPU numbers or null")
    if not isinstance(limits, dict) or len(limits) > 64:
        raise ProtocolError("setting: limits must map at most 64 names to [soft, hard]")
    for name, pair in limits.items():
        if not (isinstance(name, str) and name.startswith("RLIMIT_") and isinstance(pair, list) and len(pair) == 2):
            raise ProtocolError("setting: limits must map RLIMIT_ names to [soft, hard]")
        if not all(whole(v) for v in pair):
            raise ProtocolError(f"setting: {name} must be two integers")
    if not isinstance(ignored, list) or not all(name in FORWARDED_SIGNALS for name in ignored):
        raise ProtocolError(f"setting: ignored must list signals among {', '.join(FORWARDED_SIGNALS)}")
    return value
