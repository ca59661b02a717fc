"""What -o FILE|FOLDER writes for each command: the picture of --plot KIND (.png/.svg/.pdf), every picture of the
command (a folder) or the interactive page (.html, render/html.py). The command has checked the request before any
work (cli/options.py); here it is drawn, and each file written is said on stderr ("Wrote FILE")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PosembError
from ..output import Output, is_report


@dataclass
class Request:
    """--plot KIND (None: what -o alone draws), -o FILE|FOLDER (None: nothing drawn), --dpi, --font."""

    kind: str | None = None
    path: Path | None = None
    dpi: float = 150
    font: Path | None = None
    folder: bool = False  # -o names a folder: every picture of the command, one file each


@dataclass
class InspectPicture(Request):
    positions: Any = None  # positions.position_picture's Φ of the model (for --plot positions and all)


def _wrote(out: Output, path: Any, warnings: Any = ()) -> None:
    for warning in warnings:
        out.warn(warning)
    out.info(f"Wrote {path}")


def inspect(out: Output, result: Any, request: InspectPicture, layers: Any, heads: Any) -> None:
    assert request.path is not None and request.kind is not None
    if is_report(request.path):
        from .html import inspect_report

        inspect_report(request.path, result, request.kind, request.positions, layers, heads, on_warning=out.warn)
        out.info(f"Wrote {request.path}")
        return
    from .figures.inspect import render_plot

    written = render_plot(
        request.kind,
        result,
        request.path,
        dpi=request.dpi,
        font=request.font,
        layers=layers,
        heads=heads,
        position_picture=request.positions,
        on_warning=out.warn,
    )
    for path, _ in written:
        out.info(f"Wrote {path}")


def positions(out: Output, analysis: Any, request: Request) -> None:
    if request.path is None:
        return
    if is_report(request.path):
        from .html import positions_report

        positions_report(request.path, analysis)
        _wrote(out, request.path)
        return
    from .figures import positions as figures
    from .figures.toolkit import folder_paths

    kinds = ["phi"] + (["bias"] if analysis.bias is not None else [])
    jobs = folder_paths(request.path, kinds) if request.folder else [(request.kind or "phi", request.path)]
    for kind, path in jobs:
        draw = figures.plot_phi if kind == "phi" else figures.plot_bias
        _wrote(out, path, draw(analysis, path, dpi=request.dpi).warnings)


def compare(out: Output, comparison: Any, request: Request) -> None:
    if request.path is None:
        return
    if is_report(request.path):
        from .html import compare_report

        _wrote(out, request.path, compare_report(request.path, comparison, font=request.font))
        return
    from .figures.compare import plot_comparison

    _wrote(out, request.path, plot_comparison(comparison, request.path, dpi=request.dpi, font=request.font).warnings)


def stats(out: Output, result: Any, request: Request, sort: str | None, reverse: bool) -> None:
    """--plot heads (the default): heatmaps layers × heads, or the page; --plot distance|keys: a profile."""
    path = request.path
    if path is None:
        return
    if request.kind in ("distance", "keys"):
        if not result.texts or result.key_profile is None:
            out.warn(f"{path} was not written: there were no texts to draw")
            return
        if is_report(path):
            from .html import profile_report

            profile_report(path, result, request.kind)
        else:
            from .figures.profiles import plot_profile

            plot_profile(result, request.kind, path)
        _wrote(out, path)
    elif not result.texts:
        raise PosembError(f"{path} was not written: there were no texts to draw")
    elif is_report(path):
        from .html import stats_report

        stats_report(path, result, sort, reverse)
        _wrote(out, path)
    else:
        from .figures.stats import plot_stats

        plot_stats(result, path)
        _wrote(out, path)


def ablate(out: Output, drawn: Any, request: Request) -> None:
    """The last result (or the corpus mean): the similarity or attention lines, both in a folder, or the page."""
    if request.path is None:
        return
    if drawn is None:
        raise PosembError(f"{request.path} was not written: there was no text to draw")
    if is_report(request.path):
        from .html import ablate_report

        kinds = [request.kind] if request.kind else None
        _wrote(out, request.path, ablate_report(request.path, drawn, kinds, font=request.font))
        return
    from .ablate_table import attention_section
    from .figures.ablate import plot_ablation
    from .figures.toolkit import folder_paths

    kinds = ["similarity"] + (["attention"] if attention_section(drawn) is not None else [])
    jobs = folder_paths(request.path, kinds) if request.folder else [(request.kind or "similarity", request.path)]
    for kind, path in jobs:
        _wrote(out, path, plot_ablation(drawn, kind, path, dpi=request.dpi, font=request.font).warnings)


def extrapolate(out: Output, result: Any, request: Request) -> None:
    if request.path is None:
        return
    if is_report(request.path):
        from .html import extrapolate_report

        _wrote(out, request.path, extrapolate_report(request.path, result))
        return
    from .figures.extrapolate import plot_extrapolation

    _wrote(out, request.path, plot_extrapolation(result, request.path, dpi=request.dpi).warnings)
