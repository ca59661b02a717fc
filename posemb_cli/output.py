"""Writing files so that an interrupted or failed run never leaves a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import PosembError


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
