"""Rich tables for `posemb positions`: the properties of Phi, ALiBi slopes, T5 buckets and the probes."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from ..output import shown
from ..schemes.base import PositionAnalysis
from .table import fmt, print_table

PROPERTY_ROWS = (
    ("translation invariance", "translation_invariance", "Φ depends only on the offset j − i"),
    ("symmetry", "symmetry", "Φ(i, j) = Φ(j, i)"),
    ("monotonicity forward", ("monotonicity", "forward"), "Φ falls steadily as j moves past i (j > i)"),
    ("monotonicity backward", ("monotonicity", "backward"), "Φ falls steadily as j moves before i (j < i)"),
)
BUCKET_PAIRS_PER_ROW = 4
UNDEFINED = "–"  # a property with nothing to compare (a causal probe's symmetry and forward monotonicity)


def property_value(properties: dict[str, Any], key: str | tuple[str, str]) -> Any:
    if isinstance(key, tuple):
        return properties.get(key[0], {}).get(key[1])
    return properties.get(key)


def header(analysis: PositionAnalysis) -> str:
    who = f"[bold]{shown(analysis.model)}[/bold] · " if analysis.model else ""
    return (
        f"{who}position scheme [bold]{analysis.scheme}[/bold] · {shown(analysis.source)} · "
        f"first {analysis.length} positions"
    )


def properties_table(analysis: PositionAnalysis) -> Table:
    window = analysis.properties.get("monotonicity", {}).get("window")
    table = Table(title="properties of Φ (Wang et al., ICLR 2021)", title_justify="left", header_style="bold")
    table.add_column("property")
    table.add_column("Φ", justify="right")
    probe = analysis.probe["properties"] if analysis.probe and analysis.scheme != "none" else None
    if probe is not None:
        table.add_column("probe", justify="right")
    table.add_column("1 means")
    for label, key, meaning in PROPERTY_ROWS:
        if isinstance(key, tuple):
            meaning += f", within {window} positions"
        cells = [label, fmt(property_value(analysis.properties, key))]
        if probe is not None:
            cells.append(probe_cell(property_value(probe, key)))
        table.add_row(*cells, meaning)
    return table


def slopes_table(slopes: list[float]) -> Table:
    table = Table(title="ALiBi slopes: bias −m·|i − j|", title_justify="left", header_style="bold")
    for name in ("head", "slope m", "log₂ m"):
        table.add_column(name, justify="right")
    for head, slope in enumerate(slopes):
        table.add_row(str(head), f"{slope:.6g}", f"{math.log2(slope):.3g}")
    return table


def bucket_ranges(buckets: dict[int, int]) -> list[tuple[int, int, int]]:
    """Consecutive offsets with the same bucket as (first offset, last offset, bucket)."""
    ranges: list[tuple[int, int, int]] = []
    for offset in sorted(buckets):
        bucket = buckets[offset]
        if ranges and ranges[-1][2] == bucket and ranges[-1][1] == offset - 1:
            ranges[-1] = (ranges[-1][0], offset, bucket)
        else:
            ranges.append((offset, offset, bucket))
    return ranges


def buckets_table(buckets: dict[int, int]) -> Table:
    table = Table(title="T5 bucket of each offset (key − query)", title_justify="left", header_style="bold")
    for _ in range(BUCKET_PAIRS_PER_ROW):
        table.add_column("offsets", justify="right")
        table.add_column("bucket", justify="right", style="bold")
    cells = [
        (str(first) if first == last else f"{first}…{last}", str(bucket))
        for first, last, bucket in bucket_ranges(buckets)
    ]
    for start in range(0, len(cells), BUCKET_PAIRS_PER_ROW):
        row = [cell for pair in cells[start : start + BUCKET_PAIRS_PER_ROW] for cell in pair]
        table.add_row(*row, *[""] * (2 * BUCKET_PAIRS_PER_ROW - len(row)))
    return table


def probe_cell(value: Any) -> str:
    """A probe property: `fmt`, or "–" where it is undefined (NaN, or null from JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    return fmt(value)


def probe_table(analysis: PositionAnalysis) -> Table:
    probe = analysis.probe or {}
    table = Table(
        title=(
            f"identical-word probe: layer 1 attention on {analysis.length} copies of one word, "
            f"mean over {probe.get('words')} random words (seed {probe.get('seed')})"
        ),
        title_justify="left",
        header_style="bold",
    )
    table.add_column("head", justify="right")
    for label, _, _ in PROPERTY_ROWS:
        table.add_column(label, justify="right")
    for row in probe.get("per_head", []):
        table.add_row(str(row["head"]), *(probe_cell(property_value(row, key)) for _, key, _ in PROPERTY_ROWS))
    mean = probe.get("properties", {})
    cells = [f"[bold]{probe_cell(property_value(mean, key))}[/bold]" for _, key, _ in PROPERTY_ROWS]
    table.add_row("[bold]mean[/bold]", *cells)
    return table


def vector_lines(analysis: PositionAnalysis) -> list[str]:
    """What the position vectors know (Wang & Chen, EMNLP 2020)."""
    lines = []
    if analysis.regression_mae is not None:
        lines.append(
            f"absolute position read back from the vector (5-fold linear regression): mean error "
            f"[bold]{analysis.regression_mae:.2f}[/bold] positions (of {analysis.length}; 0 = perfectly linear)"
        )
    if analysis.pca_explained is not None:
        first, second = (100 * v for v in analysis.pca_explained)
        lines.append(f"first two principal components of the vectors explain {first:.1f}% + {second:.1f}% of variance")
    return lines


def rope_lines(rope: dict[str, Any], audit: dict[str, Any] | None) -> list[str]:
    """The rotary settings in a few lines: type, factor, original and extended positions, layer types, audit."""
    scaled = "" if rope["factor"] is None else f" ×{rope['factor']:g}"
    waves = rope["wavelengths"]
    never = waves["pairs"] - waves["full_turn_within_original"]
    lines = [
        f"RoPE [bold]{rope['type']}{scaled}[/bold] · base {rope['base']:g} · {rope['dim']} rotated dimensions "
        f"({waves['pairs']} pairs) · trained on {rope['original_max_positions']} positions, extended to "
        f"{rope.get('extended_positions') or rope['max_positions']} · attention factor {rope['attention_factor']:.4g}",
        f"{waves['full_turn_within_original']} of {waves['pairs']} pairs turn a full circle (wavelength 2π/θ) within "
        f"the original {rope['original_max_positions']} positions; {never} never do (YaRN, Peng et al. 2023, §3)",
    ]
    for name, kind in (rope["layer_types"] or {}).items():
        lines.append(f"layer type {name}: base {kind['base']:g}, layers {', '.join(map(str, kind['layers']))}")
    for key, value in rope.get("properties", {}).items():
        lines.append(
            f"monotonicity of Φ over the {key} {value['positions']} positions: {fmt(value['monotonicity'])} "
            "(translation invariance and symmetry are 1: Φ depends on |i − j| only)"
        )
    longrope = rope.get("longrope")
    if longrope:
        lines.append(
            f"LongRoPE factors per pair: short {_numbers(longrope['short_factor'])} up to {longrope['short_up_to']} "
            f"positions; long {_numbers(longrope['long_factor'])} from {longrope['long_from']}"
        )
    if audit is not None and (audit["modules"] or not audit["ok"]):  # an analytic scheme: only when it fails
        verdict = "[green]ok[/green]" if audit["ok"] else "[red]differs[/red]"
        at = " and ".join(str(n) for n in audit.get("lengths", []))
        buffers = (
            f"; against the {audit['modules']} live inv_freq buffer(s) of the loaded model: "
            f"{audit['max_relative_difference']:.2g}"
            if audit["modules"]
            else ""
        )
        lines.append(
            f"audit at {at} positions, largest relative difference of transformers' frequencies against the authors' "
            f"formula: {audit.get('max_reference_difference', 0.0):.2g}{buffers} ({verdict})"
        )
    return lines


def _numbers(values: list[float], shown: int = 6) -> str:
    text = ", ".join(f"{v:.4g}" for v in values[:shown])
    return f"[{text}{', …' if len(values) > shown else ''}] ({len(values)})"


def lengths_table(rope: dict[str, Any]) -> Table:
    """What the model rotates with for a text of each audited length (dynamic NTK's base, LongRoPE's factors)."""
    table = Table(title="frequencies used for a text of N positions", title_justify="left", header_style="bold")
    extra = "factors" if rope["type"] == "longrope" else "base" if rope["type"] == "dynamic" else None
    for name in ("positions", *([extra] if extra else []), "wavelength", "full turns within N", "change from start"):
        table.add_column(name, justify="right")
    for row in rope["lengths"]:
        cells = [str(row["positions"])]
        if extra == "factors":
            cells.append(row["factors"])
        elif extra == "base":
            cells.append(f"{row['base']:.6g}")
        cells += [
            f"{row['wavelength_min']:.4g} – {row['wavelength_max']:.4g}",
            f"{row['full_turn_within']} of {rope['wavelengths']['pairs']}",
            f"{100 * row['change_from_start']:.3g}%",
        ]
        table.add_row(*cells)
    return table


def wavelength_table(rope: dict[str, Any]) -> Table:
    table = Table(
        title="rotary pairs by wavelength (positions per full turn)", title_justify="left", header_style="bold"
    )
    for name in ("pairs", "wavelength", "full turn within original", "within extended"):
        table.add_column(name, justify="right")
    for row in rope["wavelengths"]["table"]:
        first, last = row["pairs"]
        count = last - first + 1
        table.add_row(
            f"{first}–{last}",
            f"{row['wavelength_min']:.4g} – {row['wavelength_max']:.4g}",
            f"{row['full_turn_within_original']} of {count}",
            f"{row['full_turn_within_extended']} of {count}",
        )
    return table


def print_positions(console: Console, analysis: PositionAnalysis) -> None:
    console.print(header(analysis), soft_wrap=True)
    console.print(
        f"[dim]{analysis.meaning}. Each property is 1 for a purely relative, symmetric Φ that "
        "falls with distance.[/dim]",
        soft_wrap=True,
    )
    print_table(console, properties_table(analysis))
    if analysis.rope is not None:
        for line in rope_lines(analysis.rope, analysis.audit):
            console.print(line, soft_wrap=True, highlight=False)
        print_table(console, wavelength_table(analysis.rope))
        if any(row["change_from_start"] for row in analysis.rope.get("lengths") or []):  # frequencies that move
            print_table(console, lengths_table(analysis.rope))
    if analysis.slopes is not None:
        print_table(console, slopes_table(analysis.slopes))
    if analysis.buckets is not None:
        print_table(console, buckets_table(analysis.buckets))
    if analysis.probe is not None:
        print_table(console, probe_table(analysis))
    for line in vector_lines(analysis):
        console.print(line, soft_wrap=True)
    for note in analysis.notes:
        console.print(f"[dim]note: {shown(note)}[/dim]", soft_wrap=True)
