"""The one entry point from a command to its output: `emit.<command>(out, result, ...)` writes the result on stdout in
the chosen format (streamed as it is computed where the command streams), says its warnings on stderr, and hands
the pictures and the page of -o to `render/pictures.py`. Heavy modules (rich tables, matplotlib) load only when used."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..output import Output
from . import pictures


def inspect(
    out: Output,
    results: Iterable[Any],
    fmt: str,
    single: bool,
    vectors: bool,
    attention: bool,
    layers: list[int] | None,
    heads: list[int] | None,
    picture: pictures.InspectPicture | None,
    save: Path | None,
) -> None:
    """Each result as soon as it is computed: a table, CSV rows, a JSON object or line; nothing for "" (-o alone);
    then the picture of the first text and the .npz of them all."""
    from . import data
    from .table import print_result

    kept: list[Any] | None = [] if save is not None or picture is not None else None  # what the npz or picture needs
    console = out.console() if fmt == "table" else None
    if fmt == "csv":
        out.data(data.csv_header())
    count = out.done = 0
    for result in results:
        for warning in result.warnings:
            out.warn(warning)
        if console is not None:
            print_result(console, result)
        elif fmt == "csv":
            out.data(data.csv_rows(result, count))
        elif fmt:  # streamed: the attention maps of a long text would be gigabytes of JSON text
            obj = data.document(result, vectors=vectors, attention=attention, layers=layers, heads=heads)
            if fmt == "jsonl":
                out.stream(itertools.chain(data.iter_json(obj), ["\n"]))
            elif single:
                out.stream(itertools.chain(data.iter_json(obj, indent=2), ["\n"]))
            else:
                out.stream(itertools.chain(["[\n" if count == 0 else ",\n"], data.iter_json(obj, indent=2)))
        out.stdout.flush()
        if kept is not None:
            kept.append(result)
        count += 1
        out.done = count
    if fmt == "json" and not single:
        out.data("\n]\n" if count else "[]\n")
    if count == 0:
        out.warn("no texts were given (stdin was empty)")
    if picture is not None and kept:
        pictures.inspect(out, kept[0], picture, layers, heads)
    if save is not None and kept:
        data.save_npz(save, kept)
        out.info(f"Saved {len(kept)} text(s) to {save}")


def positions(out: Output, analysis: Any, fmt: str, matrix: bool, vectors: bool, picture: pictures.Request) -> None:
    """Φ and its properties as a table or JSON; then the pictures or page of -o."""
    for warning in analysis.warnings:
        out.warn(warning)
    if fmt == "json":
        out.json(analysis.to_json(matrix=matrix, vectors=vectors))
    else:
        from .positions_table import print_positions

        print_positions(out.console(), analysis)
    pictures.positions(out, analysis, picture)


def models(out: Output, rows: list[dict[str, Any]], warnings: list[str], fmt: str) -> None:
    from .listing import render_rows

    columns = ["name", "source", "family", "type", "position_scheme", "layers", "max_positions", "attention"]
    columns.append("size_bytes")
    for warning in warnings:
        out.warn(warning)
    render_rows(out, rows, fmt, title="models available offline", columns=None if fmt != "table" else columns)


def compare(out: Output, comparison: Any, fmt: str, picture: pictures.Request) -> None:
    """A warning about one of several models names it; the comparison as tables or JSON; the figure or page."""
    for report in comparison.models:
        for warning in report.warnings:
            out.warn(warning if report.name in warning else f"{report.name}: {warning}")
    for warning in comparison.warnings:
        out.warn(warning)
    if fmt == "json":
        out.json(comparison.to_json())
    else:
        from .compare_table import print_comparison

        print_comparison(out.console(), comparison)
    pictures.compare(out, comparison, picture)


def stats(out: Output, result: Any, fmt: str, sort: str | None, reverse: bool, picture: pictures.Request) -> None:
    """Warnings on stderr, the heads on stdout (unless fmt is ""), then the heatmaps, a profile or the page."""
    from .stats_output import print_stats

    for warning in result.warnings:
        out.warn(warning)
    if fmt:
        print_stats(out, result, fmt, sort, reverse)
    pictures.stats(out, result, picture, sort, reverse)


def ablate(
    out: Output,
    run: Callable[[Callable[[int], None]], Iterable[Any]],
    total: int | None,
    fmt: str,
    single: bool,
    picture: pictures.Request,
) -> None:
    """Each result of `run(on_text)` as it is computed, under a progress bar over `total` texts (a table, or a JSON
    object; several texts: a JSON array); then the last one drawn."""
    with out.progress_bar("ablate", total) as advance:
        last = _ablations(out, run(advance), fmt, single)
    pictures.ablate(out, last, picture)


def _ablations(out: Output, results: Iterable[Any], fmt: str, single: bool) -> Any:
    from .ablate_table import print_ablation

    last, out.done = None, 0
    for result in results:
        for warning in result.warnings:
            out.warn(warning)
        if fmt == "table":
            print_ablation(out.console(), result)
        elif fmt == "json" and single:
            out.json(result.to_json())
        elif fmt == "json":
            out.data(("[\n" if out.done == 0 else ",\n") + json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        last = result
        out.done += 1
    if fmt == "json" and not single:
        out.data("\n]\n" if out.done else "[]\n")
    if last is None or not last.texts:
        out.warn("no texts were given (every text was empty)")
        return None
    return last


def _warnings_then_json(out: Output, result: Any, fmt: str) -> bool:
    """The result's warnings on stderr; its JSON on stdout if fmt is json. Whether it printed the JSON."""
    for warning in result.warnings:
        out.warn(warning)
    if fmt == "json":
        out.json(result.to_json())
    return fmt == "json"


def spectrum(out: Output, result: Any, fmt: str, output: Path | None, dpi: float) -> None:
    """`positions --spectrum`: the table or JSON, then -o FILE (.png/.svg/.pdf, or .html: the page)."""
    from . import spectrum_output as render

    if not _warnings_then_json(out, result, fmt):
        render.print_spectrum(out.console(), result)
    if output is None:
        return
    if output.suffix.lower() in (".html", ".htm"):
        render.spectrum_report(output, result)
    else:
        render.plot_spectrum(result, output, dpi)
    out.info(f"Wrote {output}")


def extrapolate(out: Output, result: Any, fmt: str, picture: pictures.Request) -> None:
    from . import extrapolate_output as render

    if _warnings_then_json(out, result, fmt):
        pass  # the JSON
    elif fmt == "csv":
        out.data(render.csv_text(result))
    else:
        render.print_extrapolation(out.console(), result)
    pictures.extrapolate(out, result, picture)


def serve_status(out: Output, info: dict[str, Any], fmt: str) -> None:
    from .serve_status import print_status

    print_status(out, info, fmt)
