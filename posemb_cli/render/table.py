"""Rich tables for the terminal."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..attention import layer_summary
from ..core import TextResult


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: 3 decimals by default, "-" for None (not applicable), "nan" for undefined."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def model_line(result: TextResult) -> str:
    m = result.model
    limit = f", {m.max_positions} positions" if m.max_positions else ""
    return (
        f"[bold]{m.name}[/bold] · {m.type} · position scheme [bold]{m.position_scheme}[/bold] · "
        f"{m.layers} layers × {m.heads} heads · hidden {m.hidden_size}{limit}"
    )


def token_table(result: TextResult) -> Table:
    title = repr(result.text) + (f" + {result.pair!r}" if result.pair is not None else "")
    table = Table(title=escape(title), title_justify="left", header_style="bold")
    for name, justify in [
        ("#", "right"),
        ("token", "left"),
        ("id", "right"),
        ("pos", "right"),
        ("seg", "right"),
        ("|token|", "right"),
        ("|position|", "right"),
        ("|segment|", "right"),
        ("|sum|", "right"),
        ("cos(token,sum)", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    norms = result.norms()
    cosine = result.token_sum_cosine()
    for k, token in enumerate(result.tokens):
        label = escape(token.token)
        if token.unknown:
            label = f"[red]{label}[/red] ({_source_text(result, token)})"
        elif token.special:
            label = f"[dim]{label}[/dim]"
        table.add_row(
            str(k),
            label,
            str(token.id),
            fmt(token.position_id),
            fmt(token.segment),
            *(fmt(None if norms[p] is None else float(norms[p][k])) for p in ("token", "position", "segment", "sum")),
            fmt(float(cosine[k])),
        )
    return table


def _source_text(result: TextResult, token: Any) -> str:
    source = result.pair if token.sequence == 1 and result.pair is not None else result.text
    return escape(source[token.start : token.end])


def attention_table(result: TextResult) -> Table:
    table = Table(
        title="attention per layer (mean over heads and query tokens)",
        title_justify="left",
        header_style="bold",
        caption=f"entropy in nats (uniform over {len(result.tokens)} tokens = "
        f"{math.log(len(result.tokens)):.2f}); "
        "distance in tokens; shares of attention on special tokens, self, previous and next token",
        caption_justify="left",
    )
    for name in ("layer", "entropy", "distance", "special", "self", "prev", "next"):
        table.add_column(name, justify="right")
    for row in layer_summary(result.attention, result.special_mask):
        table.add_row(
            str(row["layer"]), *(fmt(row[key]) for key in ("entropy", "distance", "special", "self", "prev", "next"))
        )
    return table


def print_result(console: Console, result: TextResult) -> None:
    console.print(model_line(result), highlight=False, soft_wrap=True)
    console.print(token_table(result))
    console.print(attention_table(result))
