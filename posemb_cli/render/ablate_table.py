"""How `posemb ablate` reads in the terminal: mean cosine per layer and mode, then the change in attention.

Reads only `ablate.Ablation`; every number is the one in the JSON.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ..ablate import ATTENTION_KEYS, Ablation
from ..output import shown
from .table import Section, fmt


def print_ablation(console: Console, result: Ablation) -> None:
    m = result.model
    source = repr(result.text) if result.text is not None else f"{result.texts} texts pooled ({result.tokens} tokens)"
    console.print(
        f"[bold]{shown(m.name)}[/bold] · position scheme [bold]{m.position_scheme}[/bold] · {m.layers} layers · "
        f"{escape(source)}",
        highlight=False,
        soft_wrap=True,
    )
    similarity_section(result).show(console)
    attention = attention_section(result)
    if attention is not None:
        attention.show(console)
    for mode in result.modes:
        for note in mode.notes:
            console.print(f"[dim]{escape(mode.mode)}: {escape(note)}[/dim]", soft_wrap=True, highlight=False)


def similarity_section(result: Ablation) -> Section:
    """Rows: the embedding output and each layer; columns: modes; cells: mean cosine. Then, for the last layer, the
    minimum cosine and CKA, and the equivariance check."""
    section = Section(
        "mean cosine between each token's hidden state in the normal and the ablated run",
        caption="1 = the mode changed nothing; tokens matched by identity; CKA: linear CKA of the two runs "
        "(Kornblith et al. 2019); equivariance: largest |Δ| when the tokens are permuted with all position ids equal",
    )
    table = section.table
    table.add_column("layer", justify="right")
    for mode in result.modes:
        table.add_column(escape(mode.mode), justify="right")
    for index in range(len(result.modes[0].layers) if result.modes else 0):
        layer = result.modes[0].layers[index].layer
        last = index == len(result.modes[0].layers) - 1
        table.add_row(str(layer), *(fmt(mode.layers[index].cosine_mean) for mode in result.modes), end_section=last)
    if result.modes:
        table.add_row("min cosine, last layer", *(fmt(mode.layers[-1].cosine_min) for mode in result.modes))
        table.add_row("CKA, last layer", *(fmt(mode.layers[-1].cka) for mode in result.modes))
        table.add_row(
            "equivariance",
            *("-" if (value := mode.equivariance_max_deviation) is None else f"{value:.1e}" for mode in result.modes),
        )
    return section


def attention_section(result: Ablation) -> Section | None:
    """Per mode with attention maps and layer: ablated − normal of each attention statistic."""
    modes = [mode for mode in result.modes if any(layer.attention is not None for layer in mode.layers)]
    if not modes:
        return None
    section = Section(
        "change in attention, ablated − normal (mean over heads and query tokens)",
        caption="entropy in nats, distance in tokens, shares of attention on self, previous and next token, "
        "of the sequence the model was given",
    )
    table = section.table
    table.add_column("mode")
    table.add_column("layer", justify="right")
    for key in ATTENTION_KEYS:
        table.add_column(f"Δ{key}", justify="right")
    for mode in modes:
        rows = [layer for layer in mode.layers if layer.attention is not None]
        for k, layer in enumerate(rows):
            assert layer.attention is not None
            table.add_row(
                escape(mode.mode) if k == 0 else "",
                str(layer.layer),
                *(fmt(layer.attention[key], 3) for key in ATTENTION_KEYS),
                end_section=k == len(rows) - 1,
            )
    return section
