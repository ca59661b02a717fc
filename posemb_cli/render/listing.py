"""Flat rows (lists of dicts) as a rich table, JSON, JSON lines or CSV: for `models`, `stats` and others."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from ..output import Output, inert, shown


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return inert(str(value))


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def render_rows(
    out: Output, rows: Sequence[dict[str, Any]], fmt: str, title: str = "", columns: Sequence[str] | None = None
) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        out.json(list(rows))
    elif fmt == "jsonl":
        out.data("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        out.data(buffer.getvalue())
    else:
        from rich.markup import escape
        from rich.table import Table

        from .table import print_table

        table = Table(title=shown(title), title_justify="left", header_style="bold")
        for column in columns:
            table.add_column(column.replace("size_bytes", "size").replace("_", " "))
        for row in rows:
            table.add_row(*(human_size(row[c]) if c == "size_bytes" else escape(_cell(row.get(c))) for c in columns))
        console = out.console()
        if not console.is_terminal:  # a pipe or file: rows of data are never cut to fit; the table takes its width
            from rich.measure import Measurement

            needed = Measurement.get(console, console.options.update_width(100_000), table).maximum
            console.width = max(console.width, needed)
        print_table(console, table)
