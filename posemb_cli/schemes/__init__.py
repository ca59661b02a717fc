"""Which position schemes posemb knows, and the object that owns each (formula, reading, options, meaning, picture).

A new scheme is one module here with one `PositionScheme` subclass (see `base.py`) and one line in `CATALOG`.
The modules import numpy, so they load on first use and `posemb --help` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import PositionScheme

# DESIGN.md name -> (module in this package, name of the analytic form for `--scheme` and compare's `scheme:`, or None)
CATALOG: dict[str, tuple[str, str | None]] = {
    "learned_absolute": ("learned", None),
    "sinusoidal": ("learned", "sinusoidal"),
    "rotary": ("rotary", "rotary"),
    "alibi": ("alibi", "alibi"),
    "relative_bucket": ("relative_bucket", "t5"),
    "disentangled": ("disentangled", None),
}
ANALYTIC = {cli: name for name, (_, cli) in CATALOG.items() if cli}  # --scheme value -> scheme name


def get(name: str) -> PositionScheme | None:
    """The scheme object for a DESIGN.md name (or a `--scheme` value), None for none / unknown / combined names."""
    name = ANALYTIC.get(name, name)
    if name not in CATALOG:
        return None
    module = import_module(f"{__name__}.{CATALOG[name][0]}")
    return next(scheme for scheme in module.SCHEMES if scheme.name == name)
