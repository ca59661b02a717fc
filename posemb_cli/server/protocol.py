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
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{folder} is not a folder")
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
    import posemb_cli

    package = Path(posemb_cli.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k.startswith(STARTUP_ENV_PREFIXES) or k in STARTUP_ENV_NAMES}
    return {
        "protocol": PROTOCOL,
        "version": posemb_cli.__version__,
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
    return {"argv": argv, "env": env, "umask": umask, "package": package, "stdio": stdio}


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
