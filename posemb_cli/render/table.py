"""How one inspected text reads in the terminal: its tokens, its attention per layer and, with --words, its words.

Also the pieces the other terminal tables share: `fmt` for a number in a cell, `print_table` (a table that fits the
width by leaving out its last columns), `Section` (a table with its title and caption), `token_cells` (readable token
labels) and ATTENTION_COLUMNS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import attention
from ..core import TextResult
from ..output import shown
from ..tokens import Token
from ..words import WordView
from .figures.labels import PIECES_NOTE, has_pieces, token_labels

ATTENTION_COLUMNS = tuple(n for n in attention.LAYERS_VIEW if attention.BY_NAME[n].counted != "closed")


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: 3 decimals by default, "-" for None (not applicable), "–" for undefined or
    non-finite (NaN, Inf)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def print_table(console: Console, table: Table, keep: int = 2) -> None:
    """Print `table`. When it is wider than the console, leave out its last columns (the least important: tables put
    them last), keeping at least `keep`, rather than cutting every number to "…"; a note names them and how to get
    them back."""
    left_out: list[str] = []
    while len(table.columns) > keep and _natural_width(console, table) > console.width:
        left_out.insert(0, str(table.columns.pop().header))
    console.print(table)
    if left_out:
        console.print(
            f"[dim]{len(left_out)} column(s) left out to fit {console.width} characters: {', '.join(left_out)} "
            "(a wider terminal or COLUMNS=200 shows them; so does --json)[/dim]",
            soft_wrap=True,
            highlight=False,
        )


def _natural_width(console: Console, table: Table) -> int:
    return console.measure(table, options=console.options.update_width(100_000)).maximum


@dataclass
class Section:
    """A table with its title and caption, printed as whole lines: a narrow table (CKA) would wrap them."""

    title: str
    caption: str | None = None
    table: Table = field(default_factory=lambda: Table(header_style="bold"))

    def show(self, console: Console) -> None:
        console.print(f"[bold]{self.title}[/bold]", soft_wrap=True, highlight=False)
        print_table(console, self.table)
        if self.caption:
            console.print(f"[dim]{self.caption}[/dim]", soft_wrap=True, highlight=False)


def token_cells(tokens: Sequence[Token], text: str, pair: str | None = None) -> list[str]:
    """Readable label of each token (byte-level pieces numbered, [UNK] red, special tokens dim)."""
    labels = token_labels(tokens, text, pair)
    cells = []
    for token, label in zip(tokens, labels, strict=True):
        if token.unknown:
            cells.append(f"[red]{escape(token.token)}[/red]")
        elif token.special:
            cells.append(f"[dim]{escape(token.token)}[/dim]")
        else:
            cells.append(escape(label.text))
    return cells


def model_line(result: TextResult) -> str:
    m = result.model
    limit = f", {m.max_positions} positions" if m.max_positions else ""
    return (
        f"[bold]{shown(m.name)}[/bold] · {shown(str(m.type))} · position scheme [bold]{m.position_scheme}[/bold] · "
        f"{m.layers} layers × {m.heads} heads · hidden {m.hidden_size}{limit}"
    )


def token_table(result: TextResult) -> Table:
    """One row per token. The token column shows what `token_labels` makes of it (byte-level BPE pieces such as
    'Ġposition' as their text, as `compare` and the pictures show them); JSON keeps the raw token string."""
    title = repr(result.text) + (f" + {result.pair!r}" if result.pair is not None else "")
    labels = token_labels(result.tokens, result.text, result.pair)
    caption = PIECES_NOTE if has_pieces(labels) else None
    table = Table(title=escape(title), title_justify="left", header_style="bold", caption=caption)
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
    norms = result.norms
    cosine = result.token_sum_cosine
    for k, token in enumerate(result.tokens):
        label = escape(labels[k].text)
        if token.unknown:
            label = f"[red]{escape(token.token)}[/red] ({_source_text(result, token)})"
        elif token.special:
            label = f"[dim]{escape(token.token)}[/dim]"
        table.add_row(
            str(k),
            label,
            str(token.id),
            fmt(token.position_id),
            fmt(token.segment),
            *(
                fmt(None if (norm := norms[p]) is None else float(norm[k]))
                for p in ("token", "position", "segment", "sum")
            ),
            fmt(None if cosine is None else float(cosine[k])),
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
        caption=f"entropy in nats ({uniform_words(result.layers, len(result.tokens), 'tokens')}); "
        "distance in tokens; shares of attention on special tokens, self, previous and next token",
        caption_justify="left",
    )
    for name in ("layer", *ATTENTION_COLUMNS):
        table.add_column(name, justify="right")
    for row in result.layers:
        table.add_row(str(row["layer"]), *(fmt(row[key]) for key in ATTENTION_COLUMNS))
    return table


def uniform_words(layers: list[dict[str, float]], n: int, unit: str) -> str:
    """The uniform-entropy baseline of a layer summary in words: ln n, or for a causal model (whose rows see fewer
    keys) the mean of ln(i + 1) over its rows (`attention.uniform_entropy`)."""
    uniform = layers[0]["uniform_entropy"] if layers else math.log(max(n, 1))
    if not math.isclose(uniform, math.log(max(n, 1)), abs_tol=1e-9):
        return f"uniform over the {unit} each query sees, mean of ln(i + 1) = {uniform:.2f}"
    return f"uniform over {n} {unit} = {uniform:.2f}"


def print_result(console: Console, result: TextResult) -> None:
    """The model line, the token table, attention per layer and, for a result inspected with words=True, the word
    tables (`print_words`)."""
    console.print(model_line(result), highlight=False, soft_wrap=True)
    print_table(console, token_table(result))
    print_table(console, attention_table(result))
    if result.words is not None:
        print_words(console, result)


# ------------------------------------------------------------------------------------------ inspect --words


def word_section(result: TextResult, view: WordView) -> Section:
    """The words of one inspected text and the tokens each is made of."""
    labels = token_cells(result.tokens, result.text, result.pair)
    section = Section(
        "words (whitespace-separated; each CJK character is a word) and their tokens",
    )
    table = section.table
    for name, justify in (("#", "right"), ("word", "left"), ("tokens", "left"), ("indices", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for word, pieces in zip(view.words, view.pieces, strict=True):
        shown = " ".join(labels[k] for k in pieces) or "[dim](cut off)[/dim]"
        table.add_row(str(word.index), escape(word.text), shown, ",".join(map(str, pieces)))
    return section


def word_attention_section(view: WordView) -> Section:
    """`layer_summary` of the word-level maps (Clark et al. 2019 merging): distance in words."""
    section = Section(
        "attention per layer between words (pieces: attention summed over keys, averaged over queries)",
        caption=f"entropy in nats ({uniform_words(view.layers, len(view.units), 'units')}); "
        "distance in words; shares on special tokens, self, previous and next word",
    )
    table = section.table
    table.add_column("layer", justify="right")
    for name in ATTENTION_COLUMNS:
        table.add_column(name, justify="right")
    for row in view.layers:
        table.add_row(str(row["layer"]), *(fmt(row[key]) for key in ATTENTION_COLUMNS))
    return section


def print_words(console: Console, result: TextResult) -> None:
    """`inspect --words` (`result.words` is set): the words and their tokens, then attention per layer between
    words."""
    if result.words is None:
        raise ValueError("print_words needs a result inspected with words=True")
    word_section(result, result.words).show(console)
    word_attention_section(result.words).show(console)
