"""The position measures of `posemb stats` as pictures (`--profile distance|keys -o FILE`).

- distance: one heatmap per layer, heads × log-spaced distance bins, the attention mass at each offset |i − j|
  (`distance_profile`); bins past the longest offset of the corpus are left out.
- keys: one curve per layer, the mass received by each equal bin of the text (`key_profile`), the "lost in the
  middle" curve; the first / last 1% of keys in the legend.

Reads only the `CorpusStats` fields the JSON shows. matplotlib is imported here only; saved with `toolkit.save`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...stats import CorpusStats
from .labels import counted
from .toolkit import LINE_COLOURS, picture_format, save

DPI = 150
CMAP = "viridis"


def distance_grid(result: CorpusStats) -> tuple[np.ndarray, list[str]]:
    """(layers, heads, bins) of distance_profile, cut after the last bin any head uses, and the bins' labels."""
    grid = np.full((result.model.layers, result.model.heads, len(result.distance_bins or [])), np.nan)
    for row in result.heads:
        if row["distance_profile"] is not None:
            grid[row["layer"], row["head"]] = [np.nan if v is None else v for v in row["distance_profile"]]
    used = np.flatnonzero(np.nansum(grid, axis=(0, 1)) > 0)
    width = int(used.max()) + 1 if used.size else 1
    labels = [str(a) if a == b else f"{a}–{b}" for a, b in (result.distance_bins or [])[:width]]
    return grid[..., :width], labels


def plot_profile(result: CorpusStats, kind: str, path: Path, dpi: float = DPI) -> np.ndarray:
    """Draw `kind` ("distance" or "keys") into `path` (.png/.svg/.pdf); returns the array drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture_format(path)
    info = result.model
    title = f"{info.name} · {counted(result.texts, 'text')} · {counted(result.tokens, 'token')}"
    if kind == "distance":
        grid, labels = distance_grid(result)
        columns = min(4, info.layers)
        rows = -(-info.layers // columns)
        width = max(3.0, 0.35 * len(labels) + 1.5)
        fig = Figure(figsize=(columns * width, rows * (0.25 * info.heads + 1.4) + 0.6), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, columns, squeeze=False)
        image = None
        for layer in range(rows * columns):
            ax = axes[layer // columns][layer % columns]
            if layer >= info.layers:
                ax.set_visible(False)
                continue
            image = ax.imshow(grid[layer], aspect="auto", cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {layer}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(info.heads), [str(h) for h in range(info.heads)], fontsize=7)
            ax.set_xlabel("offset |i − j| (tokens, log-spaced bins)", fontsize=8)
            ax.set_ylabel("head", fontsize=8)
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="attention mass per query row")
        fig.suptitle(f"distance_profile · {title}", fontsize=10)
        save(fig, path, dpi)
        return grid
    profile = np.array(
        [[np.nan if v is None else v for v in entry["bins"]] for entry in result.key_profile or []], dtype=float
    )
    fig = Figure(figsize=(7.0, 4.2), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bins = result.key_bins or 0
    centres = (np.arange(bins) + 0.5) / max(bins, 1) * 100
    for entry, curve in zip(result.key_profile or [], profile, strict=True):
        label = f"layer {entry['layer']} (first 1%: {entry['first']:.3f}, last 1%: {entry['last']:.3f})"
        colour = LINE_COLOURS[entry["layer"] % len(LINE_COLOURS)]
        ax.plot(centres, curve, marker="o", markersize=3, color=colour, label=label)
    ax.set_xlabel("key position (% of the text, equal bins)")
    ax.set_ylabel("attention mass received per query row")
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title(f"key_profile · {title}", fontsize=10)
    save(fig, path, dpi)
    return profile
