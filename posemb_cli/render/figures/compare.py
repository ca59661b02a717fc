"""How several models differ, in one figure (`posemb compare --plot FILE`): positions, attention per layer, CKA.

Three rows of panels:
1. Φ over the first positions for every entry that has one (cosine of position vectors, rotary score, ALiBi bias,
   T5 bucket level) — the matrices `posemb positions` analyses;
2. the attention statistics per layer (entropy, distance, special, previous, next), one line per model;
3. linear CKA between the layers of each pair of models.

Built and saved with `toolkit` (headless, written atomically), headed by the same model names as the compare tables.
Returns a `toolkit.PlotData` whose `arrays` are the exact arrays handed to matplotlib, for tests to compare with the
JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...attention import BY_NAME, LAYERS_VIEW
from ...compare import Comparison, Similarity
from ..compare_table import column_headers, layer_short
from .labels import plain, shorten
from .toolkit import (
    ATTENTION_CMAP,
    DEFAULT_DPI,
    LINE_COLOURS,
    SIMILARITY_CMAP,
    TITLE_INCHES,
    PlotData,
    add_axes,
    add_footnote,
    add_title,
    drawn_images,
    figure_settings,
    image_interpolation,
    marked_line,
    new_figure,
    picture_format,
    save_figure,
)

STATISTICS = tuple((n, label) for n in LAYERS_VIEW if (label := BY_NAME[n].compare_label) is not None)
PANEL, GAP, LEFT, RIGHT = 2.3, 0.75, 0.7, 0.8
ANNOTATE_MAX_CELLS = 14  # CKA values are written in the cells up to this many layers a side


def plot_comparison(
    comparison: Comparison, path: str | Path, dpi: float = DEFAULT_DPI, font: str | Path | None = None
) -> PlotData:
    path = Path(path)
    picture_format(path)
    headers = column_headers(comparison)
    positions = [k for k, report in enumerate(comparison.models) if report.positions is not None]
    attended = [k for k in comparison.real if comparison.models[k].attention]
    pairs = [pair for pair in comparison.similarity if pair.words >= 2]
    rows = [name for name, present in (("positions", positions), ("attention", attended), ("cka", pairs)) if present]
    columns = max(len(positions), len(STATISTICS) if attended else 0, len(pairs), 1)
    row_height = {"positions": PANEL + 1.1, "attention": 2.0 + 1.1, "cka": PANEL + 1.2}
    unit = "words" if comparison.words_view else "tokens"
    headings = {
        "positions": f"Position similarity Φ over the first {comparison.position_length} positions",
        "attention": f"Attention per layer (mean over heads and query {unit})",
        "cka": "Layer similarity: linear CKA on word vectors",
    }
    width = LEFT + columns * PANEL + (columns - 1) * GAP + RIGHT
    height = TITLE_INCHES + sum(row_height[r] for r in rows) + 0.35
    arrays: dict[str, np.ndarray] = {}
    sample = comparison.first_text + "".join(headers)
    with figure_settings(sample, font) as font_warnings:
        fig = new_figure(max(width, 7.0), height, dpi)
        top = height - TITLE_INCHES
        for row in rows:
            bottom = top - row_height[row] + (0.6 if row != "positions" else 0.55)
            if row == "positions":
                _positions_row(fig, comparison, positions, headers, bottom, dpi, arrays)
            elif row == "attention":
                _attention_row(fig, comparison, attended, headers, bottom, arrays)
            else:
                _cka_row(fig, comparison, pairs, headers, bottom, dpi, arrays)
            fig.text(
                0.12 / fig.get_figwidth(),
                1 - (height - top + 0.08) / height,
                headings[row],
                fontsize=10,
                fontweight="bold",
                va="top",
                ha="left",
            )
            top -= row_height[row]
        what = (
            f"“{shorten(comparison.first_text, 70)}”"
            if comparison.lines == 1
            else f"{comparison.lines} lines" + (f" of {comparison.corpus}" if comparison.corpus else "")
        )
        add_title(
            fig,
            [
                ("Comparison of " + ", ".join(headers), 11, "bold"),
                (f"on {what} · attention statistics over {unit}", 9, "normal"),
            ],
        )
        if pairs:
            add_footnote(
                fig,
                "CKA: linear centred kernel alignment on word vectors (Kornblith et al. 2019); "
                "emb = embedding output, k = output of layer k",
            )
        data = save_figure(
            fig,
            path,
            dpi,
            kind="compare",
            title="Comparison of " + ", ".join(headers),
            arrays=arrays,
            warnings=font_warnings,
        )
    data.drawn["images"] = drawn_images(fig)
    return data


def _positions_row(
    fig: Any,
    comparison: Comparison,
    entries: list[int],
    headers: list[str],
    bottom: float,
    dpi: float,
    arrays: dict[str, np.ndarray],
) -> None:
    n = comparison.position_length
    for column, k in enumerate(entries):
        analysis = comparison.models[k].positions
        assert analysis is not None
        matrix = np.asarray(analysis.matrix, dtype=float)
        arrays[f"positions/{comparison.models[k].name}"] = matrix
        ax = add_axes(fig, LEFT + column * (PANEL + GAP), bottom, PANEL, PANEL)
        if analysis.metric == "cosine":
            cmap, vmin, vmax, what = SIMILARITY_CMAP, -1.0, 1.0, "cosine"
        else:
            cmap, vmin, vmax = ATTENTION_CMAP, float(matrix.min()), float(matrix.max())
            what = {"bias": "bias", "bucket_level": "−bucket level"}.get(analysis.metric, analysis.metric)
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation=image_interpolation(n, PANEL, dpi))
        ax.set_title(plain(f"{headers[k]}\n{analysis.scheme.replace('_', ' ')} · Φ = {what}"), fontsize=8)
        ax.set_xlabel("position j", fontsize=8)
        if column == 0:
            ax.set_ylabel("position i", fontsize=8)
        ax.tick_params(labelsize=7)
        cax = add_axes(fig, LEFT + column * (PANEL + GAP) + PANEL + 0.06, bottom, 0.09, PANEL)
        fig.colorbar(image, cax=cax).ax.tick_params(labelsize=6)


def _attention_row(
    fig: Any,
    comparison: Comparison,
    models: list[int],
    headers: list[str],
    bottom: float,
    arrays: dict[str, np.ndarray],
) -> None:
    unit = "word" if comparison.words_view else "token"
    for column, (key, label) in enumerate(STATISTICS):
        ax = add_axes(fig, LEFT + column * (PANEL + GAP), bottom, PANEL, 2.0)
        for m, k in enumerate(models):
            rows = comparison.models[k].attention or []
            values = np.array([row[key] for row in rows], dtype=float)
            arrays[f"attention/{key}/{comparison.models[k].name}"] = values
            marked_line(
                ax,
                np.arange(len(values)),
                values,
                LINE_COLOURS[m % len(LINE_COLOURS)],
                plain(headers[k]),
                width=1.2,
            )
        ax.set_title(label + (f" ({unit}s)" if key == "distance" else ""), fontsize=8)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(linewidth=0.4, alpha=0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if column == 0:
            ax.legend(fontsize=7, frameon=False, loc="best")


def _cka_row(
    fig: Any,
    comparison: Comparison,
    pairs: list[Similarity],
    headers: list[str],
    bottom: float,
    dpi: float,
    arrays: dict[str, np.ndarray],
) -> None:
    image = None
    for column, pair in enumerate(pairs):
        a, b = comparison.models[pair.a], comparison.models[pair.b]
        matrix = np.asarray(pair.cka, dtype=float)
        arrays[f"cka/{a.name}|{b.name}"] = matrix
        ax = add_axes(fig, LEFT + column * (PANEL + GAP), bottom, PANEL, PANEL)
        image = ax.imshow(
            matrix,
            cmap=ATTENTION_CMAP,
            vmin=0.0,
            vmax=1.0,
            origin="lower",
            aspect="auto",
            interpolation=image_interpolation(max(matrix.shape), PANEL, dpi),
        )
        labels_a = [layer_short(x) for x in a.layer_labels or []]
        labels_b = [layer_short(x) for x in b.layer_labels or []]
        for axis, labels in (("y", labels_a), ("x", labels_b)):
            step = max(1, int(np.ceil(len(labels) / 13)))
            ticks = list(range(0, len(labels), step))
            getattr(ax, f"set_{axis}ticks")(ticks)
            getattr(ax, f"set_{axis}ticklabels")([labels[t] for t in ticks], fontsize=7)
        ax.set_ylabel(plain(headers[pair.a]), fontsize=8)
        ax.set_xlabel(plain(headers[pair.b]), fontsize=8)
        ax.set_title(f"layer CKA · {pair.words} words", fontsize=8)
        if max(matrix.shape) <= ANNOTATE_MAX_CELLS:
            size = 6 if max(matrix.shape) > 8 else 7
            for (i, j), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="black" if value > 0.6 else "white",
                    )
    if image is not None:
        x = LEFT + len(pairs) * (PANEL + GAP) - GAP + 0.1
        cax = add_axes(fig, x, bottom, 0.12, PANEL)
        fig.colorbar(image, cax=cax).set_label("linear CKA", fontsize=8)
