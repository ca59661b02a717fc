"""The pictures of `posemb positions`: Φ as a heatmap (`--plot phi`, the default picture of `-o FILE.png`) and a
model's relative bias (`--plot bias`), one line per head against the offset.

`plot_phi` draws the `matrix` of a `schemes.base.PositionAnalysis`, the numbers its properties are computed on;
`plot_bias` reads its `bias` ({"offsets": key − query, "per_head": [[float]]}): the learned T5 / MPNet bias of each
offset's bucket, ALiBi's −m·|offset|, DeBERTa's c2p + p2c on a probe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import PosembError
from ...schemes.base import PositionAnalysis
from .toolkit import (
    ATTENTION_CMAP,
    DEFAULT_DPI,
    SIMILARITY_CMAP,
    TITLE_INCHES,
    PlotData,
    add_axes,
    add_footnote,
    add_title,
    drawn_images,
    figure_settings,
    image_interpolation,
    new_figure,
    save_figure,
)

MAX_LEGEND_HEADS = 16  # more heads than this: no legend, the colour runs from the first head to the last
KINDS = ("phi", "bias")  # -o FOLDER: phi.<ext>, and bias.<ext> where the scheme has a relative bias


def plot_phi(analysis: PositionAnalysis, path: str | Path, dpi: float = DEFAULT_DPI) -> PlotData:
    """Φ(i, j) over the first `length` positions, one colour scale (−1..1 for a cosine that changes sign), its
    properties in the footnote; non-finite values are left blank."""
    path = Path(path)
    matrix = np.asarray(analysis.matrix, dtype=float)
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    diverging = analysis.metric == "cosine" and low < 0 < high
    clipped = None
    if diverging:
        low, high = -1.0, 1.0
    elif analysis.metric == "dot" and finite.size:  # one long vector (position 0 of BERT) would flatten the rest
        low, high = (float(x) for x in np.percentile(finite, [0.5, 99.5]))
        clipped = "colours clipped to the 0.5–99.5 percentiles"
    with figure_settings(analysis.source + (analysis.model or ""), None) as font_warnings:
        side, left, bottom, right = 5.2, 0.8, 0.95, 1.4
        fig = new_figure(left + side + right, bottom + side + TITLE_INCHES + 0.1, dpi)
        ax = add_axes(fig, left, bottom, side, side)
        image = ax.imshow(
            np.ma.masked_invalid(matrix),
            cmap=SIMILARITY_CMAP if diverging else ATTENTION_CMAP,
            vmin=low,
            vmax=high,
            interpolation=image_interpolation(len(matrix), side, dpi),
        )
        ax.set_xlabel("position j")
        ax.set_ylabel("position i")
        cax = add_axes(fig, left + side + 0.2, bottom, 0.16, side)
        fig.colorbar(image, cax=cax, extend="both" if clipped else "neither").set_label(f"Φ ({analysis.metric})")
        title = f"Φ over the first {analysis.length} positions ({analysis.metric})"
        who = f"{analysis.model} · {analysis.scheme} · " if analysis.model else f"{analysis.scheme} · "
        add_title(fig, [(title, 11, "bold"), (who + analysis.source, 9, "normal")])
        properties = analysis.properties or {}
        shown = [
            f"{name.replace('_', ' ')} {properties[name]:.3f}"
            for name in ("translation_invariance", "symmetry")
            if isinstance(properties.get(name), (int, float)) and np.isfinite(properties[name])
        ]
        footnote = ["properties (1 = ideal relative Φ): " + ", ".join(shown)] if shown else []
        add_footnote(fig, "; ".join(footnote + ([clipped] if clipped else [])) or None)
        data = save_figure(
            fig, path, dpi, kind="phi", title=title, arrays={"phi": matrix}, notes=[], warnings=font_warnings
        )
    data.drawn["images"] = drawn_images(fig)
    return data


def plot_bias(analysis: PositionAnalysis, path: str | Path, dpi: float = DEFAULT_DPI) -> PlotData:
    """One line per head: the bias added to the attention logit at each offset j − i."""
    if analysis.bias is None:
        raise PosembError(
            f"no bias picture: position scheme {analysis.scheme} adds no relative bias to attention "
            "(T5, MPNet, ALiBi and DeBERTa do)"
        )
    path = Path(path)
    offsets = np.array(analysis.bias["offsets"])
    per_head = np.array(analysis.bias["per_head"], dtype=float)
    with figure_settings(analysis.source + (analysis.model or ""), None) as font_warnings:
        return _draw(analysis, path, dpi, offsets, per_head, font_warnings)


def _draw(
    analysis: PositionAnalysis, path: Path, dpi: float, offsets: np.ndarray, per_head: np.ndarray, warnings: list[str]
) -> PlotData:
    import matplotlib

    heads = len(per_head)
    left, bottom, width, height, right = 0.8, 0.7, 7.0, 3.6, 1.6
    fig = new_figure(left + width + right, bottom + height + TITLE_INCHES, dpi)
    ax = add_axes(fig, left, bottom, width, height)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(heads, 1)))
    for h in range(heads):
        ax.plot(offsets, per_head[h], color=colours[h], linewidth=1.1, label=f"head {h}")
    ax.axvline(0, color="#888888", linewidth=0.6, linestyle="--")
    ax.set_xlabel("offset j − i (key − query)")
    ax.set_ylabel("bias added to the attention logit")
    ax.grid(linewidth=0.4, alpha=0.5)
    if heads <= MAX_LEGEND_HEADS:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    title = f"Relative position bias per head, offsets {offsets[0]}…{offsets[-1]}"
    who = f"{analysis.model} · {analysis.scheme} · " if analysis.model else ""
    add_title(fig, [(title, 11, "bold"), (who + analysis.source, 9, "normal")])
    note = "causal model: only offsets ≤ 0 are used" if any("causal model" in n for n in analysis.notes) else None
    add_footnote(fig, note)
    data = save_figure(
        fig,
        path,
        dpi,
        kind="bias",
        title=title,
        arrays={"offsets": offsets, "per_head": per_head},
        notes=[note] if note else [],
    )
    data.drawn["lines"] = [np.asarray(line.get_ydata()) for line in ax.lines if len(line.get_xdata()) == len(offsets)]
    return data
