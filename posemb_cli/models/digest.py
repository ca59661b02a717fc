"""What is in a model folder, as digests: the stamp the load cache compares (a folder whose files changed is read
again) and the fingerprint that says two folders hold the same model."""

from __future__ import annotations

import os
import re
from pathlib import Path


def files_stamp(path: Path) -> tuple[tuple[str, int, int, int, int, str], ...]:
    """(name, size, mtime, change time, inode, content digest) of each file in a model folder: a model whose files
    changed on disk is reloaded, even one rewritten in place with its size and mtime put back (the change time, which
    no user can set, moves; and the content is compared: see _content_digest)."""
    stamp = []
    for entry in os.scandir(path):
        try:
            info = entry.stat()  # follows the symlinks of a hub snapshot to their blobs
            if entry.is_dir():
                continue
            digest = _content_digest(entry.path, info.st_size)
        except OSError:
            continue
        stamp.append((entry.name, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, digest))
    return tuple(sorted(stamp))


STAMP_WHOLE = 4 * 2**20  # files up to this size (configs, tokenizers, small weights) are hashed whole
STAMP_HEAD, STAMP_SAMPLES, STAMP_SAMPLE = 2**20, 32, 4096


def _content_digest(file: str, size: int) -> str:
    """SHA-256 of a file's bytes; of a larger one (weights), of its first MiB (a safetensors header: names, dtypes,
    shapes, offsets), its last 4 KiB and 32 blocks of 4 KiB spread evenly between: about 1.2 MB read per file."""
    import hashlib
    import stat

    digest = hashlib.sha256()
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block here
    with open(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""  # a FIFO or device is refused later by check_folder
        if size <= STAMP_WHOLE:
            while block := handle.read(1 << 20):
                digest.update(block)
        else:
            digest.update(handle.read(STAMP_HEAD))
            for k in range(STAMP_SAMPLES + 1):
                handle.seek(STAMP_HEAD + (size - STAMP_HEAD - STAMP_SAMPLE) * k // STAMP_SAMPLES)
                digest.update(handle.read(STAMP_SAMPLE))
    return digest.hexdigest()


FINGERPRINT_FILES = ("*.safetensors", "*.bin", "*.json", "*.txt", "*.model")


def fingerprint(path: str | Path) -> str:
    """SHA-256 over a model folder's weights, config and tokenizer files (FINGERPRINT_FILES at its top level): each
    file's name and the SHA-256 of its bytes, in name order. Equal fingerprints: the same model. A file of the Hugging
    Face cache links to a blob named by the SHA-256 of its bytes (weights); that name is used instead of reading it."""
    import hashlib

    folder = Path(path)
    files = sorted({file for pattern in FINGERPRINT_FILES for file in folder.glob(pattern) if file.is_file()})
    total = hashlib.sha256()
    for file in files:
        real = file.resolve()
        if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
            digest = real.name
        else:
            status = real.stat()
            key = (str(real), status.st_size, status.st_mtime_ns)
            digest = _FILE_DIGESTS[key] = _FILE_DIGESTS.get(key) or _file_sha256(real)
        total.update(f"{file.name}\0{digest}\n".encode())
    return total.hexdigest()


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (file, size, mtime) -> SHA-256: each file is read once a process


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
