"""Loss against position (`posemb extrapolate -o FILE.png`): one line per variant over the position bins of the
longest windows, positions on a log axis, the training length marked; beside it, perplexity against window length.
Reads only `extrapolate.Extrapolation`, so the picture shows the numbers of the table and the JSON."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...extrapolate import Extrapolation
from .labels import plain, shorten
from .toolkit import (
    DEFAULT_DPI,
    TITLE_INCHES,
    PlotData,
    add_axes,
    add_footnote,
    add_title,
    figure_settings,
    line_look,
    new_figure,
    picture_format,
    save_figure,
)

LEFT, BOTTOM, PANEL_H, LOSS_W, PPL_W, GAP, LEGEND = 0.8, 0.75, 3.0, 4.6, 2.6, 0.9, 1.9


def plot_extrapolation(
    result: Extrapolation, path: str | Path, dpi: float = DEFAULT_DPI, font: str | Path | None = None
) -> PlotData:
    path = Path(path)
    picture_format(path)
    with figure_settings(result.source, font) as font_warnings:
        data = _draw(result, path, dpi)
    data.warnings = list(font_warnings)
    return data


def _draw(result: Extrapolation, path: Path, dpi: float) -> PlotData:
    width = LEFT + LOSS_W + GAP + PPL_W + LEGEND
    fig = new_figure(width, BOTTOM + PANEL_H + TITLE_INCHES, dpi)
    loss_ax = add_axes(fig, LEFT, BOTTOM, LOSS_W, PANEL_H)
    ppl_ax = add_axes(fig, LEFT + LOSS_W + GAP, BOTTOM, PPL_W, PANEL_H)
    centres = np.array([math.sqrt(a * (b - 1)) if b - 1 > a else a for a, b in result.bins], dtype=float)
    lengths = np.array(result.lengths, dtype=float)
    arrays: dict[str, np.ndarray] = {"positions": centres, "lengths": lengths}
    for k, variant in enumerate(result.variants):
        colour, style = line_look(k)
        mean = np.array([np.nan if v is None else v for v in variant.bin_mean], dtype=float)
        ppl = np.array([variant.perplexity[n] for n in result.lengths], dtype=float)
        arrays[f"loss/{variant.name}"], arrays[f"perplexity/{variant.name}"] = mean, ppl
        loss_ax.plot(centres, mean, marker="o", markersize=3, linewidth=1.4, color=colour, linestyle=style)
        ppl_ax.plot(
            lengths,
            ppl,
            marker="o",
            markersize=3.5,
            linewidth=1.4,
            color=colour,
            linestyle=style,
            label=plain(variant.name),
        )
    for ax in (loss_ax, ppl_ax):
        ax.set_xscale("log", base=2)
        ax.grid(linewidth=0.4, alpha=0.5)
        ax.minorticks_off()
        if result.training_length:
            ax.axvline(result.training_length, color="#555555", linewidth=0.9, linestyle=":")
    if result.training_length:
        top = loss_ax.get_ylim()[1]
        loss_ax.annotate(
            f"training length {result.training_length} ",  # left of its line: inside the panel at any length
            (result.training_length, top),
            va="top",
            ha="right",
            fontsize=7,
            color="#555555",
        )
    ticks = [4**k for k in range(int(math.log(max(result.bins_length, 2), 4)) + 1)]
    loss_ax.set_xticks(ticks)
    loss_ax.set_xticklabels([str(t) for t in ticks], fontsize=7)
    loss_ax.set_xlabel("position in the window (log scale)")
    loss_ax.set_ylabel("mean next-token loss (nats)")
    loss_ax.set_title(f"loss by position, {result.bins_length}-token windows", fontsize=9)
    ppl_ax.set_xlabel("window length (log scale)")
    ppl_ax.set_ylabel("perplexity")
    ppl_ax.set_xticks(lengths)
    ppl_ax.set_xticklabels([str(int(n)) for n in lengths], fontsize=7)
    ppl_ax.set_title("perplexity by window length", fontsize=9)
    ppl_ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=7, frameon=False)
    title = "Does the position encoding hold beyond the training length?"
    windows = "non-overlapping windows" if result.stride is None else f"sliding windows, stride {result.stride}"
    who = (
        f"{result.model.name} · {result.model.position_scheme} · {shorten(result.source)}: {result.text_tokens} tokens"
    )
    add_title(fig, [(title, 11, "bold"), (who, 9, "normal")])
    add_footnote(fig, f"{windows}; each point of the left panel is a bin of positions (its geometric centre)")
    return save_figure(fig, path, dpi, kind="extrapolate", title=title, arrays=arrays)
