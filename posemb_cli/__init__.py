"""posemb: see how a transformer turns text into tokens, positions and attention."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "inspect_text"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import posemb_cli` (and `posemb --help`) never imports torch.
    if name == "inspect_text":
        from .core import inspect_text

        return inspect_text
    raise AttributeError(name)
