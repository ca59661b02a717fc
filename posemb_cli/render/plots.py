"""Static pictures of one inspected text: attention maps, position similarity, embedding parts.

Every function takes a `posemb_cli.core.TextResult` (plus, for positions, a `plot_data.PositionData`), writes one
file through `output.write_atomic` (a temporary name renamed into place, so an interrupted run never leaves a
half-written picture) and returns a `PlotData` holding the exact arrays handed to matplotlib, so tests can compare
them with the JSON output.

Headless by construction: figures are `matplotlib.figure.Figure` objects saved directly, never through pyplot, so no
window opens, no GUI backend is imported and the process-wide backend is left alone. matplotlib is imported lazily,
inside the functions, so `posemb --help` never imports it. The format comes from the file suffix: .png, .svg, .pdf.
"""

from __future__ import annotations

import logging
import math
import unicodedata
import warnings as pywarnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import TextResult, Token
from ..errors import PosembError, PosembUsageError
from ..output import check_writable, write_atomic
from ..schemes import alibi_slopes, proximity, rotary_frequencies
from . import fonts
from .plot_data import PositionData

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
KINDS = ("attention", "positions", "embeddings", "all")
DEFAULT_DPI = 150
FOLDER_FORMAT = "png"  # --plot all into a folder: attention.png, positions.png, embeddings.png

ATTENTION_CMAP = "viridis"
SIMILARITY_CMAP = "RdBu_r"
SPECIAL_COLOUR = "#8a8a8a"
UNKNOWN_COLOUR = "#c0392b"
PART_COLOURS = {"token": "#1f77b4", "position": "#ff7f0e", "segment": "#2ca02c", "sum": "#333333"}
COSINE_COLOUR = "#7b3294"
ALIBI_EXTRA_HEADS = 3  # the positions plot of an ALiBi model: head mean plus this many single heads


@dataclass
class PlotData:
    """What one picture shows: `arrays` are the exact arrays given to imshow / bar; `drawn` are read back from the
    figure's artists after drawing (images: AxesImage arrays in axes order; bars: bar heights per series)."""

    kind: str  # attention | attention_head | positions | embeddings
    path: Path
    title: str
    figsize: tuple[float, float]  # inches; the PNG is figsize * dpi pixels (matplotlib truncates to whole pixels)
    dpi: float
    arrays: dict[str, np.ndarray]
    labels: list[str] = field(default_factory=list)  # token labels as drawn
    drawn: dict[str, list[np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Label:
    text: str
    kind: str  # token | special | unknown

    @property
    def colour(self) -> str | None:
        return {"special": SPECIAL_COLOUR, "unknown": UNKNOWN_COLOUR}.get(self.kind)


# ---------------------------------------------------------------- entry point


def render_plot(
    kind: str,
    result: TextResult,
    path: str | Path,
    dpi: float = DEFAULT_DPI,
    font: str | Path | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    position_data: PositionData | None = None,
    image_format: str | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[tuple[Path, PlotData]]:
    """Draw `kind` (attention | positions | embeddings | all) for `result` into `path`.

    - attention: one head when exactly one layer and one head are chosen (`layers=[3], heads=[7]`), otherwise a grid
      of the chosen layers x heads (all by default) plus the mean over all heads of each layer.
    - positions: needs `position_data` (`plot_data.position_data(loaded, n)`).
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
        if job_kind == "positions" and kind == "all" and not has_position_picture(position_data):
            scheme = position_data.scheme if position_data else result.model.position_scheme
            warn(f"no positions picture: {result.model.name} uses position scheme {scheme!r}, which posemb cannot draw")
            continue
        if job_kind == "attention":
            data = plot_attention(result, job_path, dpi=dpi, font=font, layers=layers, heads=heads)
        elif job_kind == "positions":
            if position_data is None:
                raise ValueError("the positions plot needs position_data=plot_data.position_data(loaded, n)")
            data = plot_positions(result, job_path, position_data, dpi=dpi, font=font)
        else:
            data = plot_embeddings(result, job_path, dpi=dpi, font=font)
        for message in data.warnings:
            warn(message)
        out.append((job_path, data))
    return out


def picture_format(path: Path) -> str:
    """png | svg | pdf from the suffix, or a PosembError naming the choices."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        shown = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise PosembUsageError(f"cannot write a picture to {path}: {shown}; use .png, .svg or .pdf")
    return fmt


def output_paths(kind: str, path: Path, image_format: str | None = None) -> list[tuple[str, Path]]:
    """(kind, file) pairs to write, checked before any drawing: bad suffix or unwritable place -> PosembError."""
    if kind != "all":
        picture_format(path)
        check_writable(path)
        return [(kind, path)]
    ext = (image_format or FOLDER_FORMAT).lower().lstrip(".")
    if f".{ext}" not in FORMATS:
        raise PosembUsageError(f"unknown picture format {ext!r}; use png, svg or pdf")
    if path.suffix.lower() in FORMATS and not path.is_dir():
        raise PosembError(f"--plot all writes one file per kind into a folder, but {path} names a file")
    if path.exists() and not path.is_dir():
        raise PosembError(f"cannot write pictures into {path}: it is a file, not a folder")
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise PosembError(f"cannot create folder {path}: folder {parent} does not exist")
        try:
            path.mkdir()
        except OSError as exc:
            raise PosembError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    jobs = [(name, path / f"{name}.{ext}") for name in ("attention", "positions", "embeddings")]
    for _, file in jobs:
        check_writable(file)
    return jobs


def has_position_picture(data: PositionData | None) -> bool:
    return data is not None and (data.vectors is not None or data.rotary is not None or data.alibi_heads is not None)


# ---------------------------------------------------------------- labels and text


def token_labels(result: TextResult) -> list[Label]:
    """What the reader recognises: the token string; the source characters when the token string is an encoding
    artefact (byte-level BPE such as 'Ġposition') or [UNK] (then kind 'unknown', drawn red). A token that is only
    whitespace shows as ␣. When one character is split over several byte-level tokens, each piece gets its number as
    a superscript (我¹ 我² 我³)."""
    labels = []
    for token in result.tokens:
        if token.special:
            labels.append(Label(token.token, "special"))
            continue
        raw = _source(result, token)
        source = raw.strip()
        if token.unknown:
            labels.append(Label(source or token.token, "unknown"))
            continue
        text = token.token
        bare = text.removeprefix("##").replace("\u2581", "")  # WordPiece continuation, SentencePiece space
        if not source and (raw or not text.strip("ĠĊĉ\u2581")):  # a whitespace token (GPT-2: 'Ġ', 'Ċ')
            text = "␣"
        elif source and bare.lower() != source.lower() and _looks_encoded(text, source):
            text = source
        labels.append(Label(text.replace("\u2581", " ").strip() or "␣", "token"))
    return _number_pieces(result.tokens, labels)


def _number_pieces(tokens: Sequence[Token], labels: list[Label]) -> list[Label]:
    out = list(labels)
    k = 0
    while k < len(tokens):
        span = (tokens[k].sequence, tokens[k].start, tokens[k].end)
        end = k + 1
        while (
            end < len(tokens)
            and not tokens[k].special
            and (tokens[end].sequence, tokens[end].start, tokens[end].end) == span
            and span[1] is not None
        ):
            end += 1
        if end - k > 1:
            for piece in range(k, end):
                out[piece] = Label(labels[piece].text + _superscript(piece - k + 1), labels[piece].kind)
        k = end
    return out


def _superscript(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def _source(result: TextResult, token: Token) -> str:
    if token.start is None or token.end is None:
        return ""
    source = result.pair if token.sequence == 1 and result.pair is not None else result.text
    return source[token.start : token.end]


def _looks_encoded(token: str, source: str) -> bool:
    """True for byte-level BPE strings (GPT-2's byte-to-unicode map: Ġ for space, Ċ for newline, U+0100..U+0143 for
    other bytes, Latin-1 letters for UTF-8 bytes of non-Latin text)."""
    if any(0x100 <= ord(c) <= 0x143 for c in token):
        return True
    return any(0x80 <= ord(c) <= 0xFF for c in token) and not any(0x80 <= ord(c) <= 0xFF for c in source)


def _plain(text: str) -> str:
    """Text shown literally: matplotlib would read $...$ as mathtext."""
    return text.replace("$", r"\$")


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text_line(result: TextResult) -> str:
    line = f"“{_shorten(result.text)}”"
    if result.pair is not None:
        line += f" + “{_shorten(result.pair, 50)}”"
    return line


def _width_chars(text: str) -> float:
    """Display width in 'average Latin character' units (CJK characters count as two)."""
    return sum(2.0 if unicodedata.east_asian_width(c) in ("W", "F") else 1.0 for c in text)


def _label_inches(labels: Sequence[Label], fontsize: float) -> float:
    """Width of the widest label (capped at 24 characters), in inches."""
    widest = max((_width_chars(label.text) for label in labels), default=1.0)
    return min(widest, 24) * fontsize * 0.6 / 72 + 0.06


def _thin(n: int, space_inches: float, fontsize: float) -> int:
    """Label every step-th token so that labels of `fontsize` points fit in `space_inches`."""
    fits = max(1, int(space_inches * 72 / (fontsize * 1.3)))
    return max(1, math.ceil(n / fits))


def _upright(labels: Sequence[Label], fontsize: float, slot_inches: float) -> bool:
    """Key labels stay horizontal when the widest fits in the space of one labelled column."""
    return _label_inches(labels, fontsize) <= slot_inches * 0.92


def _set_token_ticks(
    ax: Any, axis: str, labels: Sequence[Label], fontsize: float, step: int, upright: bool = False
) -> None:
    ticks = list(range(0, len(labels), step))
    texts = [_plain(labels[k].text) for k in ticks]
    if axis == "x":
        ax.set_xticks(ticks)
        artists = ax.set_xticklabels(texts, rotation=0 if upright else 90, fontsize=fontsize)
    else:
        ax.set_yticks(ticks)
        artists = ax.set_yticklabels(texts, fontsize=fontsize)
    for artist, k in zip(artists, ticks, strict=True):
        if axis == "x" and not upright and _width_chars(artist.get_text()) <= 2:
            artist.set_rotation(0)  # a single CJK character (or two Latin ones) reads better upright
        colour = labels[k].colour
        if colour:
            artist.set_color(colour)


def _label_note(labels: Sequence[Label]) -> str | None:
    parts = []
    if any(label.kind == "unknown" for label in labels):
        parts.append("red: not in the vocabulary, so the model sees [UNK] (the source text is shown)")
    if any(label.kind == "special" for label in labels):
        parts.append("grey: special tokens")
    if any(label.text[-1:] in "¹²³⁴⁵⁶⁷⁸⁹" and label.kind != "special" for label in labels):
        parts.append("x¹ x² …: byte-level pieces of one character")
    return "; ".join(parts) or None


# ---------------------------------------------------------------- drawing and saving


class _FontLogFilter(logging.Filter):
    """Drop matplotlib's 'Failed to find font weight bold for <CJK font>' notes: the regular weight is used."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to find font weight" not in record.getMessage()


@contextmanager
def _matplotlib(text_sample: str, font: str | Path | None):
    """rc settings for fonts, only for the duration of the block; yields the font warnings."""
    import matplotlib

    rc, font_warnings = fonts.font_settings(text_sample, font)
    rc.update({"axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8})
    logger, log_filter = logging.getLogger("matplotlib.font_manager"), _FontLogFilter()
    logger.addFilter(log_filter)
    try:
        with matplotlib.rc_context(rc), pywarnings.catch_warnings():
            if font_warnings:  # the user was told once; matplotlib would repeat it for every glyph
                pywarnings.filterwarnings("ignore", message=r"Glyph .* missing from")
            yield font_warnings
    finally:
        logger.removeFilter(log_filter)


def _figure(width: float, height: float, dpi: float) -> Any:
    """A figure at the dpi it will be saved with, so that text measured for fitting is measured as it is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(round(width, 2), round(height, 2)), dpi=dpi)
    FigureCanvasAgg(fig)  # a renderer to measure text with; savefig still picks the backend from the format
    return fig


def _save(fig: Any, path: Path, dpi: float) -> None:
    fmt = picture_format(path)
    metadata = {"png": {"Software": "posemb (matplotlib)"}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}

    def write(temp: str) -> None:
        fig.savefig(temp, format=fmt, dpi=dpi, metadata=metadata[fmt])

    write_atomic(path, write)


def _save_figure(fig: Any, path: Path, dpi: float, **fields: Any) -> PlotData:
    """Write the figure (atomically, format from the suffix) and describe it, with the figure's own size."""
    data = PlotData(path=path, figsize=(float(fig.get_figwidth()), float(fig.get_figheight())), dpi=dpi, **fields)
    _save(fig, path, dpi)
    return data


def _drawn_images(fig: Any) -> list[np.ndarray]:
    return [np.asarray(image.get_array()) for ax in fig.axes for image in ax.images]


TITLE_INCHES = 0.95  # room for three title lines
TITLE_LINES = 3


def _title(fig: Any, lines: Sequence[tuple[str, float, str]]) -> None:
    """Title lines (text, points, weight) from the top-left corner, fitted to the figure's width: each is shrunk by up
    to 1.5 points, then wrapped at spaces while fewer than three lines are used, then shortened with an ellipsis."""
    renderer = fig.canvas.get_renderer()
    left = 0.12
    width_px = (fig.get_figwidth() - left - 0.45) * fig.dpi
    y, used = 0.1, 0
    for index, (text, size, weight) in enumerate(lines):
        spare = TITLE_LINES - used - (len(lines) - index - 1)  # lines this one may take
        artist = fig.text(left / fig.get_figwidth(), 0, "", ha="left", va="top", fontsize=size, fontweight=weight)

        def fits(candidate: str, artist: Any = artist) -> bool:
            artist.set_text(_plain(candidate))
            return artist.get_window_extent(renderer).width <= width_px

        while not fits(text) and artist.get_fontsize() > max(size - 1.5, 7):
            artist.set_fontsize(artist.get_fontsize() - 0.5)
        rest, pieces = text, []
        while rest and len(pieces) < spare - 1 and not fits(rest):
            words = rest.split(" ")
            cut = len(words) - 1
            while cut > 1 and not fits(" ".join(words[:cut])):
                cut -= 1
            pieces.append(" ".join(words[:cut]))
            rest = " ".join(words[cut:])
        shown = rest
        while not fits(shown + ("…" if shown != rest else "")) and len(shown) > 8:
            shown = shown[: int(len(shown) * 0.95)].rstrip()
        pieces.append(shown + ("…" if shown != rest else ""))
        artist.set_text(_plain("\n".join(pieces)))
        artist.set_linespacing(1.3)
        artist.set_y(1 - y / fig.get_figheight())
        y += artist.get_fontsize() / 72 * 1.5 * len(pieces)
        used += len(pieces)


def _footnote(fig: Any, text: str | None) -> None:
    if text:
        fig.text(
            0.12 / fig.get_figwidth(),
            0.08 / fig.get_figheight(),
            _plain(text),
            fontsize=7,
            color="#555555",
            va="bottom",
        )


def _interpolation(cells: int, inches: float, dpi: float) -> str:
    """Crisp cells when each gets a few pixels; smoothing when many cells share a pixel (no moiré)."""
    return "nearest" if inches * dpi / max(cells, 1) >= 2.5 else "antialiased"


def _axes(fig: Any, left: float, bottom: float, width: float, height: float) -> Any:
    """Axes placed in inches from the figure's bottom-left corner."""
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


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
    n_layers, n_heads = result.attention.shape[:2]
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    head_ids = list(range(n_heads)) if heads is None else [int(x) for x in heads]
    for name, chosen, limit in (("layer", layer_ids, n_layers), ("head", head_ids, n_heads)):
        bad = [x for x in chosen if not 0 <= x < limit]
        if bad or not chosen:
            shown = ", ".join(map(str, bad)) if bad else "(none)"
            raise PosembUsageError(f"--{name} {shown}: {result.model.name} has {name}s 0..{limit - 1}")
    labels = token_labels(result)
    sample = result.text + (result.pair or "") + "".join(label.text for label in labels)
    with _matplotlib(sample, font) as font_warnings:
        if len(layer_ids) == 1 and len(head_ids) == 1:
            data = _attention_head(result, path, dpi, layer_ids[0], head_ids[0], labels)
        else:
            data = _attention_grid(result, path, dpi, layer_ids, head_ids, labels)
    data.warnings = font_warnings
    return data


def _attention_head(result: TextResult, path: Path, dpi: float, layer: int, head: int, labels: list[Label]) -> PlotData:
    n = len(labels)
    matrix = np.array(result.attention[layer, head])
    side = min(max(0.32 * n, 4.0), 12.0)  # the heatmap grows with the text, within limits
    fontsize = min(max(side * 72 / max(n, 1) * 0.6, 5.0), 10.0)
    step = _thin(n, side, fontsize)
    upright = _upright(labels, fontsize, side / n * step)
    label_in = _label_inches(labels, fontsize)
    note = _label_note(labels)
    left, right, top = label_in + 0.5, 1.3, TITLE_INCHES + 0.05
    bottom = (fontsize / 72 * 1.6 if upright else label_in) + 0.5 + (0.2 if note else 0)
    fig = _figure(left + side + right, bottom + side + top, dpi)
    ax = _axes(fig, left, bottom, side, side)
    image = ax.imshow(
        matrix,
        cmap=ATTENTION_CMAP,
        vmin=0.0,
        vmax=float(matrix.max()) or 1.0,
        interpolation=_interpolation(n, side, dpi),
    )
    _set_token_ticks(ax, "x", labels, fontsize, step, upright)
    _set_token_ticks(ax, "y", labels, fontsize, step)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    cax = _axes(fig, left + side + 0.2, bottom, 0.16, side)
    fig.colorbar(image, cax=cax).set_label("attention weight")
    title = f"Attention of layer {layer}, head {head}"
    model = f"{result.model.name} · {result.model.layers} layers × {result.model.heads} heads"
    _title(fig, [(title, 11, "bold"), (model, 9, "normal"), (_text_line(result), 9, "normal")])
    _footnote(fig, note)
    data = _save_figure(
        fig,
        path,
        dpi,
        kind="attention_head",
        title=title,
        arrays={"attention": matrix, "layer": np.array(layer), "head": np.array(head)},
        labels=[label.text for label in labels],
        notes=[note] if note else [],
    )
    data.drawn["images"] = _drawn_images(fig)
    return data


def _attention_grid(
    result: TextResult, path: Path, dpi: float, layer_ids: list[int], head_ids: list[int], labels: list[Label]
) -> PlotData:
    n = len(labels)
    rows, cols = len(layer_ids), len(head_ids) + 1  # the last column is the mean over all heads of the layer
    attention = np.array(result.attention[np.ix_(layer_ids, head_ids)])  # (rows, heads, n, n)
    mean = np.array(result.attention[layer_ids].mean(axis=1))  # (rows, n, n): over all heads of each layer
    cell = min(max(min(1.3, 18.0 / cols, 14.0 / rows), 0.35), 1.3)
    gap, mean_gap = 0.07, 0.3
    fontsize = min(max(cell * 72 / max(n, 1) * 0.75, 4.5), 7.0)
    step = _thin(n, cell, fontsize)
    upright = _upright(labels, fontsize, cell / n * step)
    label_in = _label_inches(labels, fontsize)
    note = _label_note(labels)
    left = 0.45 + label_in
    bottom = (fontsize / 72 * 1.6 if upright else label_in) + 0.15 + (0.25 if note else 0)
    top, right = TITLE_INCHES + 0.2, 1.3
    grid_w = cols * cell + (cols - 2) * gap + mean_gap
    grid_h = rows * cell + (rows - 1) * gap
    fig = _figure(left + grid_w + right, bottom + grid_h + top, dpi)
    vmax = float(max(attention.max(), mean.max())) or 1.0
    interpolation = _interpolation(n, cell, dpi)
    image = None
    for r, layer in enumerate(layer_ids):
        y = bottom + (rows - 1 - r) * (cell + gap)
        for c in range(cols):
            x = left + c * (cell + gap) + (mean_gap - gap if c == cols - 1 else 0)
            ax = _axes(fig, x, y, cell, cell)
            matrix = mean[r] if c == cols - 1 else attention[r, c]
            image = ax.imshow(matrix, cmap=ATTENTION_CMAP, vmin=0.0, vmax=vmax, interpolation=interpolation)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("mean" if c == cols - 1 else f"head {head_ids[c]}", fontsize=8, pad=3)
            if c == 0:
                _set_token_ticks(ax, "y", labels, fontsize, step)
                ax.set_ylabel(f"layer {layer}", fontsize=8, fontweight="bold")
            if r == rows - 1:
                _set_token_ticks(ax, "x", labels, fontsize, step, upright)
            ax.tick_params(length=1.5, pad=1)
    cax = _axes(fig, left + grid_w + 0.25, bottom, 0.16, grid_h)
    fig.colorbar(image, cax=cax).set_label("attention weight (one scale for all panels)")
    heads_total = result.attention.shape[1]
    title = f"Attention, {rows} layers × {len(head_ids)} heads, and the mean of all {heads_total} heads per layer"
    how = f"{result.model.name} · in each panel, rows are query tokens and columns key tokens"
    _title(fig, [(title, 11, "bold"), (how, 9, "normal"), (_text_line(result), 9, "normal")])
    _footnote(fig, note)
    data = _save_figure(
        fig,
        path,
        dpi,
        kind="attention",
        title=title,
        arrays={"attention": attention, "mean": mean, "layers": np.array(layer_ids), "heads": np.array(head_ids)},
        labels=[label.text for label in labels],
        notes=[note] if note else [],
    )
    data.drawn["images"] = _drawn_images(fig)
    return data


# ---------------------------------------------------------------- positions


def position_matrices(data: PositionData) -> tuple[dict[str, np.ndarray], str, str]:
    """The matrices the positions picture shows, its title and a line on what they mean."""
    n = data.n
    if data.vectors is not None:
        similarity = proximity(data.vectors[:n], "cosine")
        where = f"rows {data.first_id}–{data.first_id + n - 1} of {data.table}" if data.table else "the position table"
        shift = f" (position ids start at {data.first_id})" if data.first_id else ""
        return (
            {"similarity": similarity},
            f"Cosine similarity of the position embeddings of positions 0–{n - 1}",
            f"{data.scheme.replace('_', ' ')} positions: {where}{shift}",
        )
    if data.rotary is not None:
        dim, base = data.rotary
        theta = rotary_frequencies(dim, base)
        # Phi(i, j) = sum_k cos((i - j) theta_k) depends on |i - j| only: one row, then a Toeplitz lookup. This is
        # schemes.rotary_proximity / (dim / 2) without its (n, n, dim/2) intermediate, so a large n stays cheap.
        row = np.cos(np.arange(n)[:, None] * theta[None, :]).sum(-1) / (dim / 2)
        offsets = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
        scaled = (
            "" if data.rope_type in (None, "default") else f"; its rope_type {data.rope_type!r} scaling is not drawn"
        )
        return (
            {"similarity": row[offsets]},
            f"Rotary score of positions 0–{n - 1}: Σₖ cos((i−j)·θₖ) / (d/2)",
            f"no position vectors (rotary rotates queries and keys): the score between rotated copies of a unit "
            f"vector, d={dim}, base={base:g}{scaled}",
        )
    if data.alibi_heads is not None:
        heads = data.alibi_heads
        slopes = alibi_slopes(heads)
        distance = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(float)
        chosen = sorted({0, heads // 2, heads - 1})[:ALIBI_EXTRA_HEADS]
        matrices = {"mean": -slopes.mean() * distance}
        for h in chosen:
            matrices[f"head {h}"] = -slopes[h] * distance
        return (
            matrices,
            f"ALiBi attention bias −mₕ·|i−j| of positions 0–{n - 1}",
            f"no position vectors (ALiBi adds a per-head bias to attention scores): mean of {heads} heads and heads "
            f"{', '.join(map(str, chosen))}, one scale",
        )
    raise PosembError(
        f"no positions picture for position scheme {data.scheme!r}: it adds no position vector and posemb has no "
        "closed form for it"
    )


def plot_positions(
    result: TextResult,
    path: str | Path,
    position_data: PositionData,
    dpi: float = DEFAULT_DPI,
    font: str | Path | None = None,
) -> PlotData:
    """Position x position heatmap: cosine of position-table rows, the rotary score or the ALiBi bias."""
    path = Path(path)
    picture_format(path)
    matrices, title, note = position_matrices(position_data)
    n = position_data.n
    used = len(result.tokens)
    panels = list(matrices)
    side = 5.2 if len(panels) == 1 else 3.2
    left, bottom, top, right, gap = 0.75, 0.85, TITLE_INCHES + 0.1, 1.4, 0.45
    alibi = position_data.alibi_heads is not None and position_data.vectors is None
    with _matplotlib(result.text + note + title, font) as font_warnings:
        fig = _figure(left + len(panels) * side + (len(panels) - 1) * gap + right, bottom + side + top, dpi)
        if alibi:
            vmin, vmax, cmap = float(min(m.min() for m in matrices.values())), 0.0, ATTENTION_CMAP
        else:
            vmin, vmax, cmap = -1.0, 1.0, SIMILARITY_CMAP
        image = None
        for p, name in enumerate(panels):
            ax = _axes(fig, left + p * (side + gap), bottom, side, side)
            image = ax.imshow(
                matrices[name], cmap=cmap, vmin=vmin, vmax=vmax, interpolation=_interpolation(n, side, dpi)
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
        cax = _axes(fig, x_end + 0.2, bottom, 0.16, side)
        bar_label = (
            "bias added to the attention logit"
            if alibi
            else ("cosine similarity" if position_data.vectors is not None else "normalised rotary score")
        )
        fig.colorbar(image, cax=cax).set_label(bar_label)
        _title(fig, [(title, 11, "bold"), (f"{result.model.name} · {note}", 9, "normal")])
        if used <= n:
            _footnote(fig, f"dashed box: the {used} positions of {_text_line(result)}")
        data = _save_figure(
            fig,
            path,
            dpi,
            kind="positions",
            title=title,
            arrays=dict(matrices),
            notes=[note],
            warnings=font_warnings,
        )
    data.drawn["images"] = _drawn_images(fig)
    return data


# ---------------------------------------------------------------- embeddings


def plot_embeddings(
    result: TextResult, path: str | Path, dpi: float = DEFAULT_DPI, font: str | Path | None = None
) -> PlotData:
    """Per token: norms of the token, position, segment and sum vectors, and cos(token, sum)."""
    path = Path(path)
    picture_format(path)
    labels = token_labels(result)
    n = len(labels)
    norms = result.norms()
    parts = [name for name in ("token", "position", "segment", "sum") if norms[name] is not None]
    arrays = {f"{name}_norm": np.array(norms[name]) for name in parts}
    arrays["cosine"] = np.array(result.token_sum_cosine())
    plot_w = min(max(0.13 * n * (len(parts) + 1), 5.5), 14.0)
    fontsize = min(max(plot_w * 72 / max(n, 1) * 0.55, 5.0), 9.0)
    step = _thin(n, plot_w, fontsize)
    upright = _upright(labels, fontsize, plot_w / n * step)
    label_in = _label_inches(labels, fontsize)
    note = _label_note(labels)
    left, right, top = 0.8, 1.75, TITLE_INCHES
    bottom = (fontsize / 72 * 1.6 if upright else label_in) + 0.3 + (0.2 if note else 0)
    norm_h, cos_h, gap = 3.0, 1.4, 0.2
    sample = result.text + (result.pair or "") + "".join(label.text for label in labels)
    with _matplotlib(sample, font) as font_warnings:
        fig = _figure(left + plot_w + right, bottom + cos_h + gap + norm_h + top, dpi)
        ax_norm = _axes(fig, left, bottom + cos_h + gap, plot_w, norm_h)
        ax_cos = _axes(fig, left, bottom, plot_w, cos_h)
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
        _set_token_ticks(ax_cos, "x", labels, fontsize, step, upright)
        title = "How much position and segment change each token's vector"
        model = (
            f"{result.model.name} · position scheme {result.model.position_scheme} · sum = token + position + segment"
        )
        _title(fig, [(title, 11, "bold"), (model, 9, "normal"), (_text_line(result), 9, "normal")])
        _footnote(fig, note)
        data = _save_figure(
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
