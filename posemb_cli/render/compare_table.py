"""How several models compare in the terminal: the Rich tables of `posemb compare`.

Sections, in order: model facts, tokenization (counts and the tokens aligned by character offsets), position
encoding, attention per layer, layer similarity (CKA), and a short summary of what differs. Every number shown is
in `Comparison.to_json()`.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..compare import Comparison, Similarity
from ..output import inert
from .figures.labels import PIECES_NOTE
from .positions_table import PROPERTY_ROWS, property_value
from .table import ATTENTION_COLUMNS, Section, fmt, token_cells

FACT_ROWS = (
    ("type", "type"),
    ("family", "family"),
    ("layers", "layers"),
    ("heads", "heads"),
    ("hidden size", "hidden_size"),
    ("parameters", "parameters"),
    ("vocabulary", "vocab_size"),
    ("max positions", "max_positions"),
    ("position scheme", "position_scheme"),
)


def _percent(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def human_count(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def short_name(name: str) -> str:
    """Column header: the last part of a hub id or folder path."""
    return inert(name.rstrip("/").rsplit("/", 1)[-1] or name)


def column_headers(comparison: Comparison) -> list[str]:
    """One header per model: its short name, numbered when two models share one."""
    names = [short_name(report.name) for report in comparison.models]
    return [f"{name} ({k + 1})" if names.count(name) > 1 else name for k, name in enumerate(names)]


# ------------------------------------------------------------------------------------------ sections


def header(comparison: Comparison) -> str:
    if comparison.text is not None:
        what = f"on {escape(repr(comparison.text))}"
    elif comparison.corpus is not None:
        what = f"on {comparison.lines} lines of {escape(comparison.corpus)}"
    else:
        what = f"on {comparison.lines} texts"
    view = " · word view (--words)" if comparison.words_view else ""
    return f"[bold]compare[/bold] {len(comparison.models)} models {what}{view}"


def facts_section(comparison: Comparison) -> Section:
    section = Section("models")
    table = section.table
    table.add_column("")
    for name in column_headers(comparison):
        table.add_column(escape(name), justify="right")
    for label, key in FACT_ROWS:
        cells = []
        for report in comparison.models:
            value = report.facts.get(key)
            cells.append(human_count(value) if key in ("parameters",) and value is not None else fmt(value))
        table.add_row(label, *cells)
    return section


def tokenization_section(comparison: Comparison) -> Section:
    section = Section(
        "tokenization",
        caption="coverage: share of the non-space characters inside a token that is not [UNK]",
    )
    table = section.table
    table.add_column("")
    for name in column_headers(comparison):
        table.add_column(escape(name), justify="right")
    rows: list[tuple[str, Any]] = [
        ("tokens (no special)", lambda c: str(c.tokens)),
        ("special tokens", lambda c: str(c.special)),
        ("[UNK] tokens", lambda c: str(c.unknown)),
        ("[UNK] rate", lambda c: _percent(c.unknown_rate)),
        ("coverage", lambda c: _percent(c.coverage)),
        ("characters in [UNK]", lambda c: escape(_shorten(c.unknown_chars, 24)) or "none"),
        ("tokens per word", lambda c: fmt(c.tokens_per_word, 2)),
    ]
    for label, cell in rows:
        table.add_row(label, *("-" if r.counts is None else cell(r.counts) for r in comparison.models))
    return section


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def alignment_section(comparison: Comparison, text: str) -> Section:
    unit = "word" if comparison.words_view else "span"
    caption = (
        "one row per word of the text; each model's tokens that overlap it"
        if comparison.words_view
        else f"one row per span of the text that no model's token crosses; {PIECES_NOTE}"
    )
    section = Section("tokens aligned by character offsets", caption=caption)
    table = section.table
    table.add_column(unit)
    shown = [k for k, report in enumerate(comparison.models) if report.tokens is not None]
    headers = column_headers(comparison)
    for k in shown:
        table.add_column(escape(headers[k]))
    labels = {k: token_cells(comparison.models[k].tokens or [], text) for k in shown}
    for row in comparison.alignment:
        if row.text is None:
            span = "[dim](special)[/dim]"
        else:
            span = escape(row.text.strip()) or "␣"
        cells = []
        for k in shown:
            cell = row.cells[k] or []
            cells.append(" ".join(labels[k][t] for t in cell) if cell else "[dim]-[/dim]")
        table.add_row(span, *cells)
    return section


def positions_section(comparison: Comparison) -> Section:
    headers = column_headers(comparison)
    sources = "; ".join(
        f"{escape(headers[k])}: {escape(report.positions.source)}"
        for k, report in enumerate(comparison.models)
        if report.positions is not None
    )
    section = Section(
        f"position encoding: properties of Φ over the first {comparison.position_length} positions "
        "(Wang et al., ICLR 2021)",
        caption="Φ = cosine of position vectors, the rotary score ÷ (d/2), the ALiBi bias or the T5 bucket level; "
        "each property is 1 for a purely relative, symmetric Φ that falls with distance; MAE: absolute position read "
        f"back from the vector by linear regression (Wang & Chen 2020), in positions. Sources: {sources}",
    )
    table = section.table
    table.add_column("")
    for name in column_headers(comparison):
        table.add_column(escape(name), justify="right")
    analyses = [report.positions for report in comparison.models]
    table.add_row("scheme", *(fmt(a.scheme if a else None) for a in analyses))
    table.add_row("Φ measures", *(fmt(a.metric if a else None) for a in analyses))
    for label, key, _ in PROPERTY_ROWS:
        table.add_row(label, *(fmt(property_value(a.properties, key)) if a else "-" for a in analyses))
    table.add_row("position from vector (MAE)", *(fmt(a.regression_mae if a else None, 2) for a in analyses))
    return section


def attention_section(comparison: Comparison) -> Section:
    unit = "words" if comparison.words_view else "tokens"
    averaged = f", every row of {comparison.lines} texts pooled" if comparison.lines > 1 else ""
    section = Section(
        f"attention per layer (mean over heads and query {unit}{averaged})",
        caption=f"entropy in nats (uniform: ln n, or ln(i + 1) for query i of a causal model); distance in {unit}; "
        f"shares of attention on special tokens, self, previous and next {unit[:-1]}",
    )
    table = section.table
    table.add_column("model")
    table.add_column("layer", justify="right")
    table.add_column("uniform", justify="right")
    for name in ATTENTION_COLUMNS:
        table.add_column(name, justify="right")
    headers = column_headers(comparison)
    models = [k for k in comparison.real if comparison.models[k].attention]
    for position, k in enumerate(models):
        rows = comparison.models[k].attention or []
        for layer, row in enumerate(rows):
            table.add_row(
                escape(headers[k]) if layer == 0 else "",
                str(row["layer"]),
                fmt(row["uniform_entropy"], 2),
                *(fmt(row[key]) for key in ATTENTION_COLUMNS),
                end_section=layer == len(rows) - 1 and position < len(models) - 1,
            )
    return section


def cka_section(comparison: Comparison, pair: Similarity) -> Section:
    a, b = comparison.models[pair.a], comparison.models[pair.b]
    headers = column_headers(comparison)
    section = Section(
        f"layer similarity: linear CKA (Kornblith et al. 2019) on {pair.words} words · rows {escape(headers[pair.a])}, "
        f"columns {escape(headers[pair.b])}",
        caption="1 = the same representation up to rotation and scale; emb = embedding output, k = output of layer k; "
        "bold: the closest column of each row" + (f"; {pair.note}" if pair.note else ""),
    )
    table = section.table
    table.add_column("")
    for label in b.layer_labels or []:
        table.add_column(layer_short(label), justify="right")
    best = pair.closest_in_row
    for i, label in enumerate(a.layer_labels or []):
        cells = []
        for j in range(pair.cka.shape[1]):
            value = fmt(float(pair.cka[i, j]), 2)
            cells.append(f"[bold]{value}[/bold]" if best[i] == j else value)
        table.add_row(layer_short(label), *cells)
    return section


def layer_short(label: str) -> str:
    """A layer label as a narrow column header: emb for the embedding output, k for layer k."""
    return "emb" if label == "embeddings" else label.removeprefix("layer ")


# ------------------------------------------------------------------------------------------ summary


def summary_lines(comparison: Comparison) -> list[str]:
    """What differs, in a few sentences built from the numbers above."""
    headers = column_headers(comparison)
    real = [k for k in comparison.real if comparison.models[k].counts is not None]
    lines = []
    if real:
        parts = []
        for k in real:
            counts = comparison.models[k].counts
            assert counts is not None
            part = f"{escape(headers[k])} {_percent(counts.coverage)}"
            if counts.unknown_chars:
                part += f" ({escape(_shorten(counts.unknown_chars, 16))} → [UNK])"
            parts.append(part)
        lines.append("coverage of the text: " + "; ".join(parts))
        fertility = ", ".join(
            f"{escape(headers[k])} {fmt(comparison.models[k].counts.tokens_per_word, 2)}"  # type: ignore[union-attr]
            for k in real
        )
        lines.append(f"tokens per word: {fertility}")
    with_positions = [k for k, r in enumerate(comparison.models) if r.positions is not None]
    if with_positions:
        parts = [
            f"{escape(headers[k])} {fmt(comparison.models[k].positions.properties.get('translation_invariance'), 2)}"  # type: ignore[union-attr]
            f" ({comparison.models[k].positions.scheme})"  # type: ignore[union-attr]
            for k in with_positions
        ]
        lines.append("translation invariance of Φ (1 = relative): " + "; ".join(parts))
    attended = [k for k in comparison.real if comparison.models[k].attention]
    if attended:
        parts = []
        for k in attended:
            means = comparison.models[k].attention_means
            entropy, special, distance = means["entropy"], means["special"], means["distance"]
            numbers = f"entropy {fmt(entropy, 2)}, distance {fmt(distance, 2)}, special {fmt(special, 2)}"
            parts.append(f"{escape(headers[k])} {numbers}")
        lines.append("attention, mean over layers: " + "; ".join(parts))
    for pair in comparison.similarity:
        if pair.closest is None:
            continue
        i, j = pair.closest
        a, b = comparison.models[pair.a], comparison.models[pair.b]
        label_a, label_b = (a.layer_labels or [])[i], (b.layer_labels or [])[j]
        last = float(pair.cka[-1, -1])
        lines.append(
            f"layer similarity {escape(headers[pair.a])} ↔ {escape(headers[pair.b])}: closest {label_a} ↔ {label_b} "
            f"(CKA {pair.cka[i, j]:.2f}); last layers {fmt(last, 2)}"
        )
    return lines


def print_comparison(console: Console, comparison: Comparison) -> None:
    console.print(header(comparison), soft_wrap=True)
    facts_section(comparison).show(console)
    if comparison.real:
        tokenization_section(comparison).show(console)
        if comparison.lines == 1:
            alignment_section(comparison, comparison.first_text).show(console)
    positions_section(comparison).show(console)
    if any(comparison.models[k].attention for k in comparison.real):
        attention_section(comparison).show(console)
    for pair in comparison.similarity:
        if pair.words >= 2:
            cka_section(comparison, pair).show(console)
    lines = summary_lines(comparison)
    if lines:
        console.print("[bold]summary[/bold]")
        for line in lines:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
