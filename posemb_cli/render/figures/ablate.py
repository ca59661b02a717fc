"""What an intervention on positions changes, layer by layer (`posemb ablate --plot similarity|attention`).

similarity: mean cosine (left) and linear CKA (right) between the normal and the ablated run, one line per mode
against the layer (the embedding output first). attention: the change (ablated − normal) of each attention statistic,
one panel per statistic, one line per mode that has attention maps. Reads only `ablate.Ablation`, so the picture
shows the numbers of the table and the JSON; built and saved with `toolkit` (headless, atomic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ... import attention
from ...ablate import ATTENTION_KEYS, Ablation
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
    marked_line,
    new_figure,
    picture_format,
    save_figure,
)

PANEL_W, PANEL_H, GAP, LEFT, BOTTOM, LEGEND = 3.4, 2.6, 0.8, 0.75, 0.75, 1.5
UNITS = {s.name: s.unit for s in attention.TABLE}


def plot_ablation(
    result: Ablation, kind: str, path: str | Path, dpi: float = DEFAULT_DPI, font: str | Path | None = None
) -> PlotData:
    path = Path(path)
    picture_format(path)
    with figure_settings(result.text or "", font) as font_warnings:
        data = _similarity(result, path, dpi) if kind == "similarity" else _attention(result, path, dpi)
    data.warnings = list(font_warnings)
    return data


def _title(result: Ablation, what: str) -> list[tuple[str, float, str]]:
    source = repr(shorten(result.text)) if result.text is not None else f"{result.texts} texts, tokens pooled"
    who = f"{result.model.name} · {result.model.position_scheme} · {source}"
    return [(what, 11, "bold"), (who, 9, "normal")]


def _layer_ticks(ax: Any, labels: list[str]) -> None:
    step = max(1, len(labels) // 12)
    ax.set_xticks(range(0, len(labels), step))
    ax.set_xticklabels(labels[::step], rotation=0)
    ax.set_xlabel("layer (emb = embedding output)")
    ax.grid(linewidth=0.4, alpha=0.5)


def _similarity(result: Ablation, path: Path, dpi: float) -> PlotData:
    panels = (("cosine_mean", "mean cosine, normal vs ablated"), ("cka", "linear CKA, normal vs ablated"))
    fig = new_figure(LEFT + 2 * PANEL_W + GAP + LEGEND, BOTTOM + PANEL_H + TITLE_INCHES, dpi)
    arrays: dict[str, np.ndarray] = {}
    labels = ["emb"] + [str(layer.layer) for layer in result.modes[0].layers[1:]] if result.modes else []
    x = np.arange(len(labels))
    lowest = min(
        [0.0] + [v for mode in result.modes for layer in mode.layers for v in (layer.cosine_min, layer.cka) if v == v]
    )
    for column, (key, label) in enumerate(panels):
        ax = add_axes(fig, LEFT + column * (PANEL_W + GAP), BOTTOM, PANEL_W, PANEL_H)
        for m, mode in enumerate(result.modes):
            values = np.array([np.nan if (v := getattr(layer, key)) is None else v for layer in mode.layers])
            arrays[f"{key}/{mode.mode}"] = values
            colour, style = line_look(m)
            marked_line(ax, x, values, colour, plain(mode.mode), style)
        ax.set_title(label)
        ax.set_ylim(lowest - 0.05, 1.05)
        ax.axhline(1.0, color="#888888", linewidth=0.6, linestyle="--")
        _layer_ticks(ax, labels)
        if column == 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    title = "What the model loses when its positions are altered"
    add_title(fig, _title(result, title))
    add_footnote(fig, "1 = unchanged; each token compared with itself (matched by identity for permuted tokens)")
    return save_figure(fig, path, dpi, kind="ablate_similarity", title=title, arrays=arrays, labels=labels)


def _attention(result: Ablation, path: Path, dpi: float) -> PlotData:
    modes = [mode for mode in result.modes if any(layer.attention is not None for layer in mode.layers)]
    columns = 3
    rows = 2
    width = LEFT + columns * PANEL_W + (columns - 1) * GAP + 0.3
    fig = new_figure(width, BOTTOM + rows * PANEL_H + (rows - 1) * 0.9 + TITLE_INCHES, dpi)
    arrays: dict[str, np.ndarray] = {}
    for index, key in enumerate(ATTENTION_KEYS):
        row, column = divmod(index, columns)
        bottom = BOTTOM + (rows - 1 - row) * (PANEL_H + 0.9)
        ax = add_axes(fig, LEFT + column * (PANEL_W + GAP), bottom, PANEL_W, PANEL_H)
        for m, mode in enumerate(result.modes):
            if mode not in modes:
                continue
            layers = [layer for layer in mode.layers if layer.attention is not None]
            values = np.array([layer.attention[key] for layer in layers if layer.attention is not None])
            arrays[f"{key}/{mode.mode}"] = values
            colour, style = line_look(m)
            marked_line(ax, np.arange(len(values)), values, colour, plain(mode.mode), style)
        ax.axhline(0.0, color="#888888", linewidth=0.6, linestyle="--")
        ax.set_title(f"Δ {key} ({UNITS[key]})")
        ax.set_xlabel("layer")
        ax.grid(linewidth=0.4, alpha=0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if index == len(ATTENTION_KEYS) - 1 and modes:  # in the free slot of the grid
            ax.legend(loc="upper left", bbox_to_anchor=(1.15, 1.0), fontsize=8, frameon=False)
    title = "Change in attention when positions are altered (ablated − normal)"
    add_title(fig, _title(result, title))
    note = "statistics of the sequence the model was given, mean over heads and query tokens"
    if len(modes) < len(result.modes):
        note += "; isolate has no attention between tokens"
    add_footnote(fig, note)
    return save_figure(fig, path, dpi, kind="ablate_attention", title=title, arrays=arrays)
