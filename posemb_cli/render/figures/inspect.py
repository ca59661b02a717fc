"""What one inspected text looks like: its attention maps, the similarity of its positions, the parts of its vectors.

Every function takes a `posemb_cli.core.TextResult` (plus, for positions, the `schemes.base.PositionPicture` that the
model's scheme object made: `positions.position_picture(loaded, n)`), writes one file through `toolkit.save_figure`
(atomic; the format comes from the suffix: .png, .svg, .pdf) and returns a `toolkit.PlotData` holding the exact
arrays handed to matplotlib, so tests can compare them with the JSON output. What the positions panels contain is the
scheme's business; this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core import TextResult
from ...errors import PosembError, PosembUsageError
from .labels import (
    Label,
    fits_upright,
    label_inches,
    label_note,
    set_token_ticks,
    text_line,
    thin,
    token_labels,
)
from .toolkit import (
    ATTENTION_CMAP,
    DEFAULT_DPI,
    FOLDER_KINDS,
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
    output_paths,
    picture_format,
    save_figure,
)

if TYPE_CHECKING:
    from ...schemes.base import PositionPicture

KINDS = (*FOLDER_KINDS, "all")
PART_COLOURS = {"token": "#1f77b4", "position": "#ff7f0e", "segment": "#2ca02c", "sum": "#333333"}
COSINE_COLOUR = "#7b3294"


# ---------------------------------------------------------------- entry point


def render_plot(
    kind: str,
    result: TextResult,
    path: str | Path,
    dpi: float = DEFAULT_DPI,
    font: str | Path | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    position_picture: PositionPicture | None = None,
    image_format: str | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[tuple[Path, PlotData]]:
    """Draw `kind` (attention | positions | embeddings | all) for `result` into `path`.

    - attention: one head when exactly one layer and one head are chosen (`layers=[3], heads=[7]`), otherwise a grid
      of the chosen layers x heads (all by default) plus the mean over all heads of each layer.
    - positions: needs `position_picture` (`positions.position_picture(loaded, n)`).
    - all: `path` is a folder; it is created when missing (its parent must exist) and gets attention.<ext>,
      positions.<ext> and embeddings.<ext>, ext = `image_format` or png. The positions picture is skipped, with a
      warning, for a model whose scheme has nothing to show.
    Font warnings (at most one per distinct message) go to `on_warning` and are kept in each PlotData.warnings.
    """
    if kind not in KINDS:
        raise PosembUsageError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    if dpi <= 0:
        raise PosembUsageError(f"--dpi must be positive, got {dpi}")
    path = Path(path)
    jobs = output_paths(kind, path, image_format)
    emitted: list[str] = []

    def warn(message: str) -> None:
        if message not in emitted:
            emitted.append(message)
            if on_warning is not None:
                on_warning(message)

    out: list[tuple[Path, PlotData]] = []
    for job_kind, job_path in jobs:
        if job_kind == "positions" and kind == "all" and position_picture is None:
            scheme = result.model.position_scheme
            warn(f"no positions picture: {result.model.name} uses position scheme {scheme!r}, which posemb cannot draw")
            continue
        if job_kind == "embeddings" and result.token is None:
            why = (
                f"no embeddings picture: {result.model.name} is not in posemb's registry, so its embedding is not split"
            )
            if kind != "all":
                raise PosembError(why)
            warn(why)
            continue
        if job_kind == "attention":
            data = plot_attention(result, job_path, dpi=dpi, font=font, layers=layers, heads=heads)
        elif job_kind == "positions":
            if position_picture is None:
                raise ValueError("the positions plot needs position_picture=positions.position_picture(loaded, n)")
            data = plot_positions(result, job_path, position_picture, dpi=dpi, font=font)
        else:
            data = plot_embeddings(result, job_path, dpi=dpi, font=font)
        for message in data.warnings:
            warn(message)
        out.append((job_path, data))
    return out


# ---------------------------------------------------------------- attention


def plot_attention(
    result: TextResult,
    path: str | Path,
    dpi: float = DEFAULT_DPI,
    font: str | Path | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> PlotData:
    """One head (exactly one layer and one head chosen) or the grid of layers x heads with per-layer head means."""
    path = Path(path)
    picture_format(path)
    n_layers, n_heads = result.model.layers, result.model.heads
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    head_ids = list(range(n_heads)) if heads is None else [int(x) for x in heads]
    for name, chosen, limit in (("layer", layer_ids, n_layers), ("head", head_ids, n_heads)):
        bad = [x for x in chosen if not 0 <= x < limit]
        if bad or not chosen:
            shown = ", ".join(map(str, bad)) if bad else "(none)"
            raise PosembUsageError(f"--{name} {shown}: {result.model.name} has {name}s 0..{limit - 1}")
    labels = token_labels(result.tokens, result.text, result.pair)
    sample = result.text + (result.pair or "") + "".join(label.text for label in labels)
    with figure_settings(sample, font) as font_warnings:
        if len(layer_ids) == 1 and len(head_ids) == 1:
            data = _attention_head(result, path, dpi, layer_ids[0], head_ids[0], labels)
        else:
            data = _attention_grid(result, path, dpi, layer_ids, head_ids, labels)
    data.warnings = font_warnings
    return data


def _attention_head(result: TextResult, path: Path, dpi: float, layer: int, head: int, labels: list[Label]) -> PlotData:
    n = len(labels)
    matrix = np.array(result.attention_of([layer], [head])[0, 0])
    side = min(max(0.32 * n, 4.0), 12.0)  # the heatmap grows with the text, within limits
    fontsize = min(max(side * 72 / max(n, 1) * 0.6, 5.0), 10.0)
    step = thin(n, side, fontsize)
    upright = fits_upright(labels, fontsize, side / n * step)
    label_in = label_inches(labels, fontsize)
    note = label_note(labels)
    left, right, top = label_in + 0.5, 1.3, TITLE_INCHES + 0.05
    bottom = (fontsize / 72 * 1.6 if upright else label_in) + 0.5 + (0.2 if note else 0)
    fig = new_figure(left + side + right, bottom + side + top, dpi)
    ax = add_axes(fig, left, bottom, side, side)
    image = ax.imshow(
        matrix,
        cmap=ATTENTION_CMAP,
        vmin=0.0,
        vmax=float(matrix.max()) or 1.0,
        interpolation=image_interpolation(n, side, dpi),
    )
    set_token_ticks(ax, "x", labels, fontsize, step, upright)
    set_token_ticks(ax, "y", labels, fontsize, step)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    cax = add_axes(fig, left + side + 0.2, bottom, 0.16, side)
    fig.colorbar(image, cax=cax).set_label("attention weight")
    title = f"Attention of layer {layer}, head {head}"
    model = f"{result.model.name} · {result.model.layers} layers × {result.model.heads} heads"
    arrays = {"attention": matrix, "layer": np.array(layer), "head": np.array(head)}
    return _finish_attention(fig, path, dpi, "attention_head", (title, model), result, labels, note, arrays)


def _attention_grid(
    result: TextResult, path: Path, dpi: float, layer_ids: list[int], head_ids: list[int], labels: list[Label]
) -> PlotData:
    n = len(labels)
    rows, cols = len(layer_ids), len(head_ids) + 1  # the last column is the mean over all heads of the layer
    attention = np.array(result.attention_of(layer_ids, head_ids))  # (rows, heads, n, n)
    mean = np.array(result.head_mean(layer_ids))  # (rows, n, n): over all heads of each layer
    cell = min(max(min(1.3, 18.0 / cols, 14.0 / rows), 0.35), 1.3)
    gap, mean_gap = 0.07, 0.3
    fontsize = min(max(cell * 72 / max(n, 1) * 0.75, 4.5), 7.0)
    step = thin(n, cell, fontsize)
    upright = fits_upright(labels, fontsize, cell / n * step)
    label_in = label_inches(labels, fontsize)
    note = label_note(labels)
    left = 0.45 + label_in
    bottom = (fontsize / 72 * 1.6 if upright else label_in) + 0.15 + (0.25 if note else 0)
    top, right = TITLE_INCHES + 0.2, 1.3
    grid_w = cols * cell + (cols - 2) * gap + mean_gap
    grid_h = rows * cell + (rows - 1) * gap
    fig = new_figure(left + grid_w + right, bottom + grid_h + top, dpi)
    vmax = float(max(attention.max(), mean.max())) or 1.0
    interpolation = image_interpolation(n, cell, dpi)
    image = None
    for r, layer in enumerate(layer_ids):
        y = bottom + (rows - 1 - r) * (cell + gap)
        for c in range(cols):
            x = left + c * (cell + gap) + (mean_gap - gap if c == cols - 1 else 0)
            ax = add_axes(fig, x, y, cell, cell)
            matrix = mean[r] if c == cols - 1 else attention[r, c]
            image = ax.imshow(matrix, cmap=ATTENTION_CMAP, vmin=0.0, vmax=vmax, interpolation=interpolation)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("mean" if c == cols - 1 else f"head {head_ids[c]}", fontsize=8, pad=3)
            if c == 0:
                set_token_ticks(ax, "y", labels, fontsize, step)
                ax.set_ylabel(f"layer {layer}", fontsize=8, fontweight="bold")
            if r == rows - 1:
                set_token_ticks(ax, "x", labels, fontsize, step, upright)
            ax.tick_params(length=1.5, pad=1)
    cax = add_axes(fig, left + grid_w + 0.25, bottom, 0.16, grid_h)
    fig.colorbar(image, cax=cax).set_label("attention weight (one scale for all panels)")
    heads_total = result.model.heads
    title = f"Attention, {rows} layers × {len(head_ids)} heads, and the mean of all {heads_total} heads per layer"
    how = f"{result.model.name} · in each panel, rows are query tokens and columns key tokens"
    arrays = {"attention": attention, "mean": mean, "layers": np.array(layer_ids), "heads": np.array(head_ids)}
    return _finish_attention(fig, path, dpi, "attention", (title, how), result, labels, note, arrays)


def _finish_attention(
    fig: Any,
    path: Path,
    dpi: float,
    kind: str,
    lines: tuple[str, str],
    result: TextResult,
    labels: list[Label],
    note: str | None,
    arrays: dict[str, np.ndarray],
) -> PlotData:
    """Title (bold line, model line, the text), footnote, atomic save and the images read back."""
    title, subtitle = lines
    add_title(fig, [(title, 11, "bold"), (subtitle, 9, "normal"), (text_line(result.text, result.pair), 9, "normal")])
    add_footnote(fig, note)
    notes = [note] if note else []
    data = save_figure(
        fig, path, dpi, kind=kind, title=title, arrays=arrays, labels=[x.text for x in labels], notes=notes
    )
    data.drawn["images"] = drawn_images(fig)
    return data


# ---------------------------------------------------------------- positions


def plot_positions(
    result: TextResult,
    path: str | Path,
    picture: PositionPicture,
    dpi: float = DEFAULT_DPI,
    font: str | Path | None = None,
) -> PlotData:
    """Position x position heatmaps on one colour scale: the panels of `picture` (cosine of position-table rows, the
    rotary score, or attention biases: ALiBi, T5 buckets), with the positions of this text boxed."""
    path = Path(path)
    picture_format(path)
    matrices, title, note = picture.panels, picture.title, picture.note
    n = len(next(iter(matrices.values())))
    used = len(result.tokens)
    panels = list(matrices)
    side = 5.2 if len(panels) == 1 else 3.2
    left, bottom, top, right, gap = 0.75, 0.85, TITLE_INCHES + 0.1, 1.4, 0.45
    with figure_settings(result.text + note + title, font) as font_warnings:
        fig = new_figure(left + len(panels) * side + (len(panels) - 1) * gap + right, bottom + side + top, dpi)
        if picture.diverging:
            vmin, vmax, cmap = -1.0, 1.0, SIMILARITY_CMAP
        else:  # a bias: from its minimum to 0 (ALiBi's maximum), or to its maximum where that is positive (T5)
            vmin = float(min(m.min() for m in matrices.values()))
            vmax, cmap = max(0.0, float(max(m.max() for m in matrices.values()))), ATTENTION_CMAP
        image = None
        for p, name in enumerate(panels):
            ax = add_axes(fig, left + p * (side + gap), bottom, side, side)
            image = ax.imshow(
                matrices[name], cmap=cmap, vmin=vmin, vmax=vmax, interpolation=image_interpolation(n, side, dpi)
            )
            ax.set_xlabel("position j")
            if p == 0:
                ax.set_ylabel("position i")
            if len(panels) > 1:
                ax.set_title("mean over heads" if name == "mean" else name, fontsize=9)
            if used <= n:  # the positions this text occupies
                from matplotlib.patches import Rectangle

                box = Rectangle((-0.5, -0.5), used, used, fill=False, edgecolor="black", linestyle="--", linewidth=0.9)
                ax.add_patch(box)
        x_end = left + len(panels) * side + (len(panels) - 1) * gap
        cax = add_axes(fig, x_end + 0.2, bottom, 0.16, side)
        fig.colorbar(image, cax=cax).set_label(picture.colorbar)
        add_title(fig, [(title, 11, "bold"), (f"{result.model.name} · {note}", 9, "normal")])
        if used <= n:
            add_footnote(fig, f"dashed box: the {used} positions of {text_line(result.text, result.pair)}")
        data = save_figure(
            fig,
            path,
            dpi,
            kind="positions",
            title=title,
            arrays=dict(matrices),
            notes=[note],
            warnings=font_warnings,
        )
    data.drawn["images"] = drawn_images(fig)
    return data


# ---------------------------------------------------------------- embeddings


def plot_embeddings(
    result: TextResult, path: str | Path, dpi: float = DEFAULT_DPI, font: str | Path | None = None
) -> PlotData:
    """Per token: norms of the token, position, segment and sum vectors, and cos(token, sum)."""
    path = Path(path)
    picture_format(path)
    labels = token_labels(result.tokens, result.text, result.pair)
    n = len(labels)
    norms = result.norms
    parts = [name for name in ("token", "position", "segment", "sum") if norms[name] is not None]
    arrays = {f"{name}_norm": np.array(norms[name]) for name in parts}
    arrays["cosine"] = np.array(result.token_sum_cosine)
    plot_w = min(max(0.13 * n * (len(parts) + 1), 5.5), 14.0)
    fontsize = min(max(plot_w * 72 / max(n, 1) * 0.55, 5.0), 9.0)
    step = thin(n, plot_w, fontsize)
    upright = fits_upright(labels, fontsize, plot_w / n * step)
    label_in = label_inches(labels, fontsize)
    note = label_note(labels)
    left, right, top = 0.8, 1.75, TITLE_INCHES
    bottom = (fontsize / 72 * 1.6 if upright else label_in) + 0.3 + (0.2 if note else 0)
    norm_h, cos_h, gap = 3.0, 1.4, 0.2
    sample = result.text + (result.pair or "") + "".join(label.text for label in labels)
    with figure_settings(sample, font) as font_warnings:
        fig = new_figure(left + plot_w + right, bottom + cos_h + gap + norm_h + top, dpi)
        ax_norm = add_axes(fig, left, bottom + cos_h + gap, plot_w, norm_h)
        ax_cos = add_axes(fig, left, bottom, plot_w, cos_h)
        ax_cos.sharex(ax_norm)
        x = np.arange(n)
        bars: list[np.ndarray] = []
        if n <= 64:  # grouped bars
            width = 0.8 / len(parts)
            for k, name in enumerate(parts):
                offset = (k - (len(parts) - 1) / 2) * width
                container = ax_norm.bar(x + offset, arrays[f"{name}_norm"], width, color=PART_COLOURS[name], label=name)
                bars.append(np.array([patch.get_height() for patch in container.patches]))
            container = ax_cos.bar(x, arrays["cosine"], 0.6, color=COSINE_COLOUR)
            bars.append(np.array([patch.get_height() for patch in container.patches]))
        else:  # long inputs: lines read better than hundreds of thin bars
            for name in parts:
                ax_norm.plot(x, arrays[f"{name}_norm"], color=PART_COLOURS[name], label=name, linewidth=1)
            ax_cos.plot(x, arrays["cosine"], color=COSINE_COLOUR, linewidth=1)
        legend = ax_norm.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        legend.set_title("vector", prop={"size": 8})
        absent = [name for name in ("position", "segment") if norms[name] is None]
        if absent:
            why = {
                "position": f"no position vector\n({result.model.position_scheme})",
                "segment": "no segment vector",
            }
            ax_norm.text(
                1.02,
                0.45,
                "\n".join(why[a] for a in absent),
                transform=ax_norm.transAxes,
                fontsize=7,
                color="#555555",
                va="top",
            )
        ax_norm.set_ylabel("L2 norm")
        ax_norm.set_xlim(-0.6, n - 0.4)
        ax_norm.tick_params(labelbottom=False)
        ax_norm.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax_norm.set_axisbelow(True)
        low = float(min(0.0, arrays["cosine"].min()))
        ax_cos.set_ylim(low - 0.05 * (1 - low), 1.1)
        ax_cos.axhline(1.0, color="#555555", linewidth=0.7, linestyle="--")
        ax_cos.set_ylabel("cos(token, sum)")
        ax_cos.text(
            1.02,
            0.5,
            "1 = position and\nsegment change\nnothing",
            transform=ax_cos.transAxes,
            fontsize=7,
            color="#555555",
            va="center",
        )
        ax_cos.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax_cos.set_axisbelow(True)
        set_token_ticks(ax_cos, "x", labels, fontsize, step, upright)
        title = "How much position and segment change each token's vector"
        model = (
            f"{result.model.name} · position scheme {result.model.position_scheme} · sum = token + position + segment"
        )
        add_title(fig, [(title, 11, "bold"), (model, 9, "normal"), (text_line(result.text, result.pair), 9, "normal")])
        add_footnote(fig, note)
        data = save_figure(
            fig,
            path,
            dpi,
            kind="embeddings",
            title=title,
            arrays=arrays,
            labels=[label.text for label in labels],
            notes=[note] if note else [],
            warnings=font_warnings,
        )
    data.drawn["bars"] = bars
    data.drawn["lines"] = [np.asarray(line.get_ydata()) for ax in (ax_norm, ax_cos) for line in ax.lines]
    return data
