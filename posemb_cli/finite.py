"""NaN and infinity as null: JSON has neither, so every number posemb writes goes through here (the warnings say where
a value was not finite: nonfinite_warning below). A leaf: it imports nothing of posemb, and NumPy only for arrays."""

from __future__ import annotations

import math
from collections.abc import Iterable
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


def nonfinite_warning(places: list[str]) -> list[str]:
    """The one warning for non-finite numbers (NaN or Inf), naming where they first appear; [] where there are none.
    Every renderer shows such numbers as null (JSON, CSV: an empty cell) or "–" (tables), never as a bare NaN."""
    if not places:
        return []
    also = f"; also in {', '.join(places[1:4])}{' and more' if len(places) > 4 else ''}" if len(places) > 1 else ""
    return [
        f"non-finite numbers (NaN or Inf) first appear in {places[0]}{also}: they are null in JSON and a dash in "
        "tables (check the model's weights, and layer_norm_eps in its config.json)"
    ]


def index_ranges(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> "0–2, 5"."""
    spans: list[list[int]] = []
    for i in sorted(int(i) for i in indices):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)
