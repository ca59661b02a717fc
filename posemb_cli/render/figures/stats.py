"""Which heads do what over a corpus (`posemb stats --plot FILE`): one heatmap per statistic, layers × heads.

Reads only `stats.CorpusStats.grid`, so the picture shows exactly the numbers of the table and the JSON. The last
panel colours each head by its pattern label. Saved with `toolkit.save` (a temporary name renamed into place: an
interrupted run leaves no half-written picture). matplotlib is imported inside `plot_stats`, figures are plain
`Figure` objects on the Agg canvas (no pyplot, no GUI backend), and the format comes from the suffix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ... import attention
from ...stats import PATTERNS, CorpusStats
from .labels import counted
from .toolkit import picture_format, save

DPI = 150
COLUMNS = 4
CMAP = "viridis"
PATTERN_COLOURS = {"vertical": "#1f77b4", "diagonal": "#ff7f0e", "block": "#2ca02c", "heterogeneous": "#d9d9d9"}
TITLES = {s.name: s.title for s in attention.TABLE if s.title is not None}


def panels(result: CorpusStats) -> list[str]:
    """The statistics drawn, in order (uniform_entropy is one number for all heads: it goes in the entropy title)."""
    drawn = attention.STATS_VIEW + (attention.PAIRS_VIEW if result.pairs else ())
    return [name for name in drawn if attention.BY_NAME[name].title is not None] + ["pattern"]


def plot_stats(result: CorpusStats, path: Path, dpi: float = DPI) -> dict[str, np.ndarray]:
    """Draw the heatmaps into `path` (.png, .svg or .pdf); returns the (layers, heads) array of each panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    picture_format(path)  # a bad suffix fails before any drawing
    layers, heads = result.model.layers, result.model.heads
    keys = panels(result)
    rows = math.ceil(len(keys) / COLUMNS)
    cell_w = min(max(2.4 / heads, 0.14), 0.4)  # inches per head / layer: readable for 4 heads and for 32
    cell_h = min(max(1.4 / layers, 0.12), 0.4)
    panel_w, panel_h = heads * cell_w + 1.3, layers * cell_h + 1.0
    fig = Figure(figsize=(COLUMNS * panel_w, rows * panel_h + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    info = result.model
    fig.suptitle(
        f"{info.name} · attention statistics per head over {counted(result.texts, 'text')} "
        f"({counted(result.tokens, 'token')})",
        fontsize=10,
    )
    shown: dict[str, np.ndarray] = {}
    axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        if key == "pattern":
            labels = [p for p in PATTERNS if p != "block" or result.pairs]  # block needs sentence pairs
            grid = _pattern_grid(result, labels)
            cmap = ListedColormap([PATTERN_COLOURS[p] for p in labels])
            image = ax.imshow(
                np.ma.masked_invalid(grid),
                cmap=cmap,
                norm=BoundaryNorm(np.arange(len(labels) + 1) - 0.5, cmap.N),
                aspect="auto",
                interpolation="nearest",
            )
            bar = fig.colorbar(image, ax=ax, ticks=range(len(labels)), shrink=0.9)
            bar.ax.set_yticklabels(labels, fontsize=6)
            ax.set_title("pattern (Kovaleva et al.)", fontsize=8)
        else:
            grid = result.grid(key)
            low, high = _colour_range(grid)
            image = ax.imshow(
                np.ma.masked_invalid(grid), cmap=CMAP, vmin=low, vmax=high, aspect="auto", interpolation="nearest"
            )
            bar = fig.colorbar(image, ax=ax, shrink=0.9)
            bar.ax.tick_params(labelsize=6)
            title = TITLES[key].format(k=result.sink_k)
            if key == "entropy" and result.heads:
                title += f"; uniform {result.heads[0]['uniform_entropy']:.2f}"
            ax.set_title(title, fontsize=8)
        shown[key] = grid
        _ticks(ax, layers, heads)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)

    save(fig, path, dpi)
    return shown


def _colour_range(grid: np.ndarray) -> tuple[float | None, float | None]:
    """The colour bar's range: matplotlib's (the finite values' min and max), except where every head has the same
    value c, which matplotlib would draw on c ± 0.1 (a bar from −0.1 for a mass that is 0 everywhere): then 0..c, or
    0..1 where c is 0."""
    finite = grid[np.isfinite(grid)]
    if finite.size == 0 or finite.min() != finite.max():
        return None, None
    value = float(finite[0])
    return (min(0.0, value), max(0.0, value)) if value != 0 else (0.0, 1.0)


def _pattern_grid(result: CorpusStats, labels: list[str]) -> np.ndarray:
    grid = np.full((result.model.layers, result.model.heads), np.nan)
    for row in result.heads:
        if row["pattern"] is not None:  # None: the head's maps were not finite (left blank)
            grid[row["layer"], row["head"]] = labels.index(row["pattern"])
    return grid


def _ticks(ax: Any, layers: int, heads: int) -> None:
    step_h, step_l = max(1, math.ceil(heads / 12)), max(1, math.ceil(layers / 12))
    ax.set_xticks(range(0, heads, step_h))
    ax.set_yticks(range(0, layers, step_l))
    ax.tick_params(labelsize=6, length=2)
    ax.set_xlabel("head", fontsize=7, labelpad=1)
    ax.set_ylabel("layer", fontsize=7, labelpad=1)
