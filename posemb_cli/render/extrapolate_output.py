"""How `posemb extrapolate` reads in the terminal and as CSV: perplexity per variant and length (best per column
marked), what each variant changed, the loss by position. Reads only `extrapolate.Extrapolation`; every number is the
one in the JSON."""

from __future__ import annotations

import csv
import io

from rich.console import Console
from rich.markup import escape

from ..extrapolate import Extrapolation
from ..output import shown
from .table import Section, fmt


def print_extrapolation(console: Console, result: Extrapolation) -> None:
    m = result.model
    trained = f"training length {result.training_length}" if result.training_length else "no training length"
    windows = "non-overlapping windows" if result.stride is None else f"sliding windows, stride {result.stride}"
    console.print(
        f"[bold]{shown(m.name)}[/bold] · {m.position_scheme} · {trained} · {shown(result.source)}: "
        f"{result.text_tokens} tokens, {windows}, {result.dtype}",
        highlight=False,
        soft_wrap=True,
    )
    perplexity_section(result).show(console)
    position_section(result).show(console)
    if result.attention is not None:
        attention_section(result).show(console)
        distance_section(result).show(console)
    for variant in result.variants:
        console.print(f"[bold]{escape(variant.name)}[/bold]: {escape(variant.description)}", soft_wrap=True)
        for note in variant.notes:
            console.print(f"[dim]  {escape(note)}[/dim]", soft_wrap=True, highlight=False)


def _length(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def perplexity_section(result: Extrapolation) -> Section:
    windows = ", ".join(f"{_length(n)}: {k}" for n, k in result.windows.items())
    section = Section(
        "perplexity by window length",
        caption=f"* lowest in its column; windows per length {windows}; "
        + (f"lengths past {result.training_length} are longer than training" if result.training_length else ""),
    )
    table = section.table
    table.add_column("variant")
    for n in result.lengths:
        past = result.training_length is not None and n > result.training_length
        table.add_column(_length(n) + (" ›" if past else ""), justify="right")
    best = {n: result.best(n) for n in result.lengths}
    for variant in result.variants:
        cells = []
        for n in result.lengths:
            cell = fmt(variant.perplexity[n], 2)
            cells.append(f"[bold]{cell} *[/bold]" if best[n] == variant.name else f"{cell}  ")
        table.add_row(escape(variant.name), *cells)
    return section


def position_section(result: Extrapolation) -> Section:
    section = Section(
        f"mean loss (nats) by position in the {_length(result.bins_length)}-token windows",
        caption="positions in the window, both ends included; a token's loss is predicted from the tokens before it"
        + (f"; › past the training length {result.training_length}" if result.training_length else ""),
    )
    table = section.table
    table.add_column("positions", justify="right")
    for variant in result.variants:
        table.add_column(escape(variant.name), justify="right")
    for k in range(len(result.bins)):
        table.add_row(bin_label(result, k, "  "), *(fmt(v.bin_mean[k], 3) for v in result.variants))
    return section


def attention_section(result: Extrapolation) -> Section:
    """--attention: per variant and length, sink and sink_rate, each the mean over every layer and head."""
    assert result.attention is not None
    k, threshold = result.attention["sink_k"], result.attention["sink_threshold"]
    section = Section(
        "attention by window length: sink / sink_rate (mean over layers and heads)",
        caption=f"sink: attention mass on the first {k} tokens, mean over query rows; sink_rate: share of windows "
        f"whose mean attention on token 0 exceeds {threshold:g}; per layer and head in --json",
    )
    table = section.table
    table.add_column("variant")
    for n in result.lengths:
        past = result.training_length is not None and n > result.training_length
        table.add_column(_length(n) + (" ›" if past else ""), justify="right")
    for variant in result.variants:
        means = [variant.attention_means(n) for n in result.lengths]
        table.add_row(escape(variant.name), *(f"{fmt(m['sink'], 3)} / {fmt(m['sink_rate'], 2)}" for m in means))
    return section


def distance_section(result: Extrapolation) -> Section:
    """--attention: the distance profile of the longest windows, mean over layers and heads, one column per variant."""
    assert result.attention is not None
    n = result.bins_length
    bins = result.attention["distance_bins"][str(n)]
    section = Section(
        f"attention mass by offset i − j in the {_length(n)}-token windows (mean over layers and heads)",
        caption="offsets both ends included; each row of a map sums to 1 over the bins"
        + (
            f"; › every offset of the bin at least the training length {result.training_length}"
            if result.training_length
            else ""
        ),
    )
    table = section.table
    table.add_column("offsets", justify="right")
    for variant in result.variants:
        table.add_column(escape(variant.name), justify="right")
    profiles = [variant.attention_means(n)["distance_profile"] for variant in result.variants]
    for b, (low, high) in enumerate(bins):
        past = result.training_length is not None and low >= result.training_length
        label = (f"{low}–{high}" if high > low else str(low)) + (" ›" if past else "  ")
        table.add_row(label, *(fmt(profile[b], 3) for profile in profiles))
    return section


def bin_label(result: Extrapolation, k: int, within: str = "") -> str:
    """Position bin k as the table shows it: its first and last position, › when it lies past the training length."""
    start, end = result.bins[k]
    past = result.training_length is not None and start >= result.training_length
    return (f"{start}–{end - 1}" if end - start > 1 else str(start)) + (" ›" if past else within)


CSV_COLUMNS = ("variant", "kind", "length", "bin_start", "bin_end", "mean_loss", "perplexity", "tokens")


def csv_text(result: Extrapolation) -> str:
    """One row per variant and length (kind=length: mean loss, perplexity, tokens), then one per variant and position
    bin of the longest windows (kind=bin: positions [bin_start, bin_end))."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in result.variants:
        for n in result.lengths:
            writer.writerow([v.name, "length", n, "", "", _num(v.loss[n]), _num(v.perplexity[n]), v.tokens[n]])
    for v in result.variants:
        for (start, end), mean, tokens in zip(result.bins, v.bin_mean, v.bin_tokens, strict=True):
            writer.writerow([v.name, "bin", result.bins_length, start, end, _num(mean), "", tokens])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None or value != value or value in (float("inf"), float("-inf")) else repr(float(value))
