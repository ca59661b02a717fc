"""What the positions plot needs from a loaded model, read once here so that `plots` stays free of model code.

`position_data(loaded, n)` returns a `PositionData`: the first `n` rows of a learned or sinusoidal position table
(RoBERTa-style tables offset by padding_idx + 1, so that row 0 is the first position a text uses), the rotary
dimension and base, or the ALiBi head count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PosembUsageError
from ..positions import position_rows, rope_settings

DEFAULT_POSITIONS = 128
MAX_COMPUTED_POSITIONS = 4096  # rotary / ALiBi pictures are computed, not read: keep the n x n matrices reasonable


@dataclass(frozen=True)
class PositionData:
    scheme: str  # the model's position scheme (DESIGN.md's words)
    n: int  # how many positions the plot shows: 0 .. n-1 (counted from the first position a text uses)
    vectors: np.ndarray | None = None  # (n, d) learned / sinusoidal table rows; None for other schemes
    first_id: int = 0  # position id of row 0 (RoBERTa: padding_idx + 1)
    table: str | None = None  # module path of the table, for the plot's note
    rotary: tuple[int, float] | None = None  # (rotary dim, base) for rotary models
    rope_type: str | None = None  # rotary scaling variant from the config ("default" = none)
    alibi_heads: int | None = None  # number of heads for ALiBi models


def default_positions(max_positions: int | None) -> int:
    """--positions default: 128, or fewer when the model has fewer positions."""
    return min(DEFAULT_POSITIONS, max_positions) if max_positions else DEFAULT_POSITIONS


def position_data(loaded: Any, n: int | None = None) -> PositionData:
    """Read what `plots.plot_positions` shows for `loaded` (a `posemb_cli.models.LoadedModel`)."""
    info, family, model = loaded.info, loaded.family, loaded.model
    scheme = info.position_scheme
    if n is None:
        n = default_positions(info.max_positions)
    if n < 1:
        raise PosembUsageError(f"--positions must be at least 1, got {n}")
    if family.position_table and scheme in ("learned_absolute", "sinusoidal"):
        path, first = position_rows(loaded)  # RoBERTa-style tables start at padding_idx + 1
        weight = model.get_submodule(path).weight.detach().float().cpu().numpy()
        available = weight.shape[0] - first
        if n > available:
            raise PosembUsageError(f"--positions {n} is more than the {available} positions of {info.name}")
        return PositionData(
            scheme=scheme, n=n, vectors=weight[first : first + n].copy(), first_id=first, table=family.position_table
        )
    if scheme in ("rotary", "alibi") and n > MAX_COMPUTED_POSITIONS:
        raise PosembUsageError(f"--positions {n} is too many to draw; at most {MAX_COMPUTED_POSITIONS}")
    if scheme == "rotary":
        dim, base, rope_type = rotary_settings(model.config)
        return PositionData(scheme=scheme, n=n, rotary=(dim, base), rope_type=rope_type)
    if scheme == "alibi":
        return PositionData(scheme=scheme, n=n, alibi_heads=info.heads)
    return PositionData(scheme=scheme, n=n)


def rotary_settings(config: Any) -> tuple[int, float, str]:
    """(rotary dim, base, rope_type) from a transformers config; the rules live in `positions.rope_settings`."""
    rope = rope_settings(config)
    return rope["dim"], rope["base"], rope["rope_type"]
