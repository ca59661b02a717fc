"""`positions --spectrum`: the table (a per-layer summary), JSON, pictures and the HTML view of a `Spectrum`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..spectrum import Spectrum
from .figures.labels import counted


def print_spectrum(console: Any, result: Spectrum) -> None:
    from rich.table import Table

    pairs = result.rotary_dim // 2
    console.print(
        f"{result.model} · rotary spectrum · {result.corpus}: {counted(result.texts, 'text')}, "
        f"{counted(result.tokens, 'token')} · "
        f"{result.heads} heads, {result.kv_heads} KV heads, {pairs} rotary pairs"
    )
    table = Table(title="mean 2-norm of each rotary pair's query / key chunk (Barbero et al. 2025)")
    for column in ("layer", "train len", "pairs never turning", "query share", "key share", "top query pairs"):
        table.add_column(column, justify="left" if column == "top query pairs" else "right")
    for layer in result.layers:
        turns = layer.turns
        slow = "–" if turns is None else f"{int((~turns).sum())} of {pairs}"
        shares = [layer.slow_share(layer.query_norm), layer.slow_share(layer.key_norm)]
        top = ", ".join(f"{i} (λ {layer.wavelength[i]:.4g})" for i in layer.top_pairs())
        table.add_row(
            str(layer.layer),
            "–" if layer.training_length is None else str(layer.training_length),
            slow,
            *("–" if s is None else f"{s:.3f}" for s in shares),
            top,
        )
    console.print(table)
    console.print(
        "share: of the summed per-pair mean norms, the part in pairs whose wavelength λ = 2π/θ is longer than the "
        "training length (they never turn a full circle within it); pair 0 is the fastest."
    )
    for note in result.notes:
        console.print(f"note: {note}")


def plot_spectrum(result: Spectrum, path: Path, dpi: float = 150, columns: int = 4) -> None:
    """Per layer a heads × pairs heatmap of the query norm, wavelength on the axis, the training length marked;
    `columns` heatmaps a row (the HTML page uses 2, so that each stays legible at the page's width)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .figures.toolkit import picture_format, save

    picture_format(path)
    count = len(result.layers)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    pairs = result.rotary_dim // 2
    fig = Figure(figsize=(columns * max(3.2, 0.3 * pairs + 1.2), rows * (0.25 * result.heads + 1.8) + 0.6), dpi=dpi)
    fig.set_layout_engine("constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    high = max(float(layer.query_norm.max()) for layer in result.layers) or 1.0
    image = None
    for k in range(rows * columns):
        ax = axes[k // columns][k % columns]
        if k >= count:
            ax.set_visible(False)
            continue
        layer = result.layers[k]
        image = ax.imshow(layer.query_norm, aspect="auto", cmap="viridis", vmin=0, vmax=high, interpolation="nearest")
        ticks = sorted(set(np.linspace(0, pairs - 1, min(pairs, 6)).round().astype(int)))
        ax.set_xticks(ticks, [f"{layer.wavelength[i]:.3g}" for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(range(result.heads), [str(h) for h in range(result.heads)], fontsize=6)
        if layer.turns is not None and (~layer.turns).any():
            boundary = int(np.argmax(~layer.turns)) - 0.5
            ax.axvline(boundary, color="white", linestyle="--", linewidth=1)
        ax.set_title(f"layer {layer.layer}", fontsize=9)
        ax.set_xlabel(f"pair wavelength 2π/θ (dashed: training length {layer.training_length})", fontsize=7)
        ax.set_ylabel("head", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="mean query-chunk 2-norm")
    source = f"{counted(result.texts, 'text')} · {counted(result.tokens, 'token')}"
    fig.suptitle(f"rotary spectrum · {result.model} · {source}", fontsize=10)
    save(fig, path, dpi)


def spectrum_report(path: Path, result: Spectrum) -> None:
    """`-o spectrum.html`: the terminal's table and the heatmaps, on posemb's report page."""
    from .html import TableRecorder, picture_block, report_page, write_report

    recorder = TableRecorder()
    print_spectrum(recorder, result)
    blocks = recorder.blocks
    blocks.append(picture_block(lambda svg: plot_spectrum(result, svg, columns=2), "per layer, heads × rotary pairs"))
    write_report(path, report_page(f"posemb positions --spectrum · {result.model}", blocks))
