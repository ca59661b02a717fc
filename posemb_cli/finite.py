"""NaN and infinity as null: JSON has neither, so every number posemb writes goes through here (the warnings say where
a value was not finite: core.nonfinite_warning). A leaf: it imports nothing of posemb, and NumPy only for arrays."""

from __future__ import annotations

import math
from typing import Any


def finite_number(value: Any) -> float | None:
    """A number as a float; None for None, NaN and ±inf."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite_lists(array: Any) -> Any:
    """An array as nested lists (its own element type), NaN and ±inf as None; None for None."""
    import numpy as np

    if array is None:
        return None
    array = np.asarray(array)
    if np.isfinite(array).all():
        return array.tolist()
    return np.where(np.isfinite(array), array.astype(object), np.array(None)).tolist()
