"""Exit codes and the error types that become one-line messages."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


class PosembError(Exception):
    """An error the user can act on: printed as one line `Error: ...`, exit 1."""

    exit_code = ExitCode.ERROR


class PosembUsageError(PosembError):
    """A bad option value or combination that Typer cannot see (e.g. --layer past the model's depth): exit 2."""

    exit_code = ExitCode.USAGE
