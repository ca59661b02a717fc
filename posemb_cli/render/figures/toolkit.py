"""How a figure is laid out and saved: sizes in inches, title and footnote, fonts, formats and atomic writes.

Every picture of posemb is built here the same way and described by a `PlotData` holding the exact arrays handed to
matplotlib, so tests can compare them with the JSON output. A picture is written through `output.write_atomic` (a
temporary name renamed into place, so an interrupted run never leaves a half-written picture).

Headless by construction: figures are `matplotlib.figure.Figure` objects saved directly, never through pyplot, so no
window opens, no GUI backend is imported and the process-wide backend is left alone. matplotlib is imported lazily,
inside the functions, so `posemb --help` never imports it. The format comes from the file suffix: .png, .svg, .pdf.
"""

from __future__ import annotations

import logging
import warnings as pywarnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PosembError, PosembUsageError
from ...output import PICTURE_SUFFIXES, Output, check_writable, write_atomic
from .. import fonts
from .labels import plain

FORMATS = {suffix: suffix[1:] for suffix in PICTURE_SUFFIXES}  # ".png" -> "png"
DEFAULT_DPI = 150
FOLDER_KINDS = ("attention", "positions", "embeddings")  # --plot all: one file of each kind in a folder
FOLDER_FORMAT = "png"  # --plot all into a folder: attention.png, positions.png, embeddings.png

ATTENTION_CMAP = "viridis"
LINE_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
)  # one per model or mode
LINE_STYLES = ("-", "--", "-.", ":")  # with the colours: two lines with equal numbers both show
SIMILARITY_CMAP = "RdBu_r"

TITLE_INCHES = 0.95  # room for three title lines
TITLE_LINES = 3


@dataclass
class PlotData:
    """What one picture shows: `arrays` are the exact arrays given to imshow / bar; `drawn` are read back from the
    figure's artists after drawing (images: AxesImage arrays in axes order; bars: bar heights per series)."""

    kind: str  # attention | attention_head | positions | embeddings | compare
    path: Path
    title: str
    figsize: tuple[float, float]  # inches; the PNG is figsize * dpi pixels (matplotlib truncates to whole pixels)
    dpi: float
    arrays: dict[str, np.ndarray]
    labels: list[str] = field(default_factory=list)  # token labels as drawn
    drawn: dict[str, list[np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def line_look(index: int) -> tuple[str, str]:
    """The colour and line style of line `index` of a picture: styles differ too, so that two lines with equal
    numbers (ablate's zero and isolate, extrapolate's as-trained and shift) both show."""
    return LINE_COLOURS[index % len(LINE_COLOURS)], LINE_STYLES[index % len(LINE_STYLES)]


# ---------------------------------------------------------------- where pictures go


def picture_format(path: Path) -> str:
    """png | svg | pdf from the suffix, or a usage error naming the choices (`Output.picture_path`, which also checks
    that the file can be written: a picture fails before it is drawn)."""
    return Output.picture_path(path)


def output_paths(kind: str, path: Path, image_format: str | None = None) -> list[tuple[str, Path]]:
    """(kind, file) pairs to write, checked before any drawing: bad suffix or unwritable place -> PosembError.

    `kind` "all" makes `path` a folder (created when missing, its parent must exist) with one file of each of
    FOLDER_KINDS, in `image_format` or FOLDER_FORMAT."""
    if kind != "all":
        picture_format(path)
        check_writable(path)
        return [(kind, path)]
    return folder_paths(path, FOLDER_KINDS, image_format)


def folder_paths(path: Path, names: Sequence[str], image_format: str | None = None) -> list[tuple[str, Path]]:
    """(name, path/name.ext) for each picture of a command drawn into the folder `path` (`-o FOLDER`), checked
    before any drawing; the folder is created when missing (its parent must exist)."""
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
    jobs = [(name, path / f"{name}.{ext}") for name in names]
    for _, file in jobs:
        check_writable(file)
    return jobs


# ---------------------------------------------------------------- drawing


class _FontLogFilter(logging.Filter):
    """Drop matplotlib's 'Failed to find font weight bold for <CJK font>' notes: the regular weight is used."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to find font weight" not in record.getMessage()


@contextmanager
def figure_settings(text_sample: str, font: str | Path | None):
    """rc settings for fonts (chosen for the glyphs of `text_sample`) and text sizes, only for the duration of the
    block; yields the font warnings."""
    import matplotlib

    rc, font_warnings = fonts.font_settings(text_sample, font)
    rc.update({"axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8})
    logger, log_filter = logging.getLogger("matplotlib.font_manager"), _FontLogFilter()
    logger.addFilter(log_filter)
    try:
        with matplotlib.rc_context(rc), pywarnings.catch_warnings():  # type: ignore[arg-type]
            if font_warnings:  # the user was told once; matplotlib would repeat it for every glyph
                pywarnings.filterwarnings("ignore", message=r"Glyph .* missing from")
            yield font_warnings
    finally:
        logger.removeFilter(log_filter)


def new_figure(width: float, height: float, dpi: float) -> Any:
    """A figure at the dpi it will be saved with, so that text measured for fitting is measured as it is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(round(width, 2), round(height, 2)), dpi=dpi)
    FigureCanvasAgg(fig)  # a renderer to measure text with; savefig still picks the backend from the format
    return fig


def add_axes(fig: Any, left: float, bottom: float, width: float, height: float) -> Any:
    """Axes placed in inches from the figure's bottom-left corner."""
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def add_title(fig: Any, lines: Sequence[tuple[str, float, str]]) -> None:
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
            artist.set_text(plain(candidate))
            return artist.get_window_extent(renderer).width <= width_px

        while not fits(text) and artist.get_fontsize() > max(size - 1.5, 7):
            artist.set_fontsize(artist.get_fontsize() - 0.5)
        rest, pieces = text, list[str]()
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
        artist.set_text(plain("\n".join(pieces)))
        artist.set_linespacing(1.3)
        artist.set_y(1 - y / fig.get_figheight())
        y += artist.get_fontsize() / 72 * 1.5 * len(pieces)
        used += len(pieces)


def add_footnote(fig: Any, text: str | None) -> None:
    """A small grey line in the bottom-left corner (nothing for None or an empty text)."""
    if text:
        fig.text(
            0.12 / fig.get_figwidth(),
            0.08 / fig.get_figheight(),
            plain(text),
            fontsize=7,
            color="#555555",
            va="bottom",
        )


def image_interpolation(cells: int, inches: float, dpi: float) -> str:
    """Crisp cells when each gets a few pixels; smoothing when many cells share a pixel (no moiré)."""
    return "nearest" if inches * dpi / max(cells, 1) >= 2.5 else "antialiased"


# ---------------------------------------------------------------- saving


def save(fig: Any, path: Path, dpi: float) -> None:
    """Write `fig` to `path` atomically, in the format of its suffix, without a date (same figure, same bytes)."""
    fmt = picture_format(path)
    metadata = {"png": {"Software": "posemb (matplotlib)"}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}

    def write(temp: str) -> None:
        import matplotlib

        # SVG ids are salted with a random uuid per process unless svg.hashsalt is set: fix it, same bytes every run
        with matplotlib.rc_context({"svg.hashsalt": "posemb"}):
            fig.savefig(temp, format=fmt, dpi=dpi, metadata=metadata[fmt])

    write_atomic(path, write)


def save_figure(fig: Any, path: Path, dpi: float, **fields: Any) -> PlotData:
    """Write the figure (atomically, format from the suffix) and describe it, with the figure's own size."""
    data = PlotData(path=path, figsize=(float(fig.get_figwidth()), float(fig.get_figheight())), dpi=dpi, **fields)
    save(fig, path, dpi)
    return data


def marked_line(
    ax: Any, x: Any, values: Any, colour: Any, label: str, linestyle: str = "-", width: float = 1.3
) -> None:
    """One series against the layer (or another small integer axis): a line with a dot at each value."""
    ax.plot(x, values, marker="o", markersize=3, linewidth=width, color=colour, linestyle=linestyle, label=label)


def drawn_images(fig: Any) -> list[np.ndarray]:
    """The arrays of the figure's images as matplotlib holds them, in axes order."""
    return [np.asarray(image.get_array()) for ax in fig.axes for image in ax.images]
