"""posemb compare -> compare.compare; render/emit.py (compare_table.py; pictures: figures/compare.py, html.py)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...errors import PosembUsageError
from ...lines import LINE_LIMIT
from ...output import Output
from .. import options as o
from ..errors import handle_errors

PICTURE = o.picture_options(
    o.COMPARE_PLOTS,
    plot_help="Draw the comparison figure (-o alone draws it too). --plot FILE, posemb 0.4's spelling of -o FILE, "
    "still works in 0.5 (deprecated).",
    output_help="The comparison figure (.png/.svg/.pdf; a folder: FOLDER/compare.png), or an interactive report "
    "(.html).",
    path_too=True,
)
FormatOpt = Annotated[Optional[str], o.format_option("compare", o.TABLE_JSON)]
EncodingOpt = Annotated[o.EncodingErrors, o.encoding_errors_option("Invalid UTF-8 in TEXT or --corpus.")]


@handle_errors
def compare(
    ctx: typer.Context,
    text: Annotated[Optional[str], typer.Argument(metavar="TEXT", help="The text to compare on (or --corpus).")] = None,
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            "-m",
            metavar="NAME|FOLDER|scheme:NAME",
            help=f"A model to compare; repeat, at least two. scheme:{o.SCHEME_METAVAR} adds an analytic "
            "position scheme (position section only).",
        ),
    ] = None,
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            "--corpus", metavar="FILE", help=f"Average over the lines of this UTF-8 file (`-`: stdin; {LINE_LIMIT})."
        ),
    ] = None,
    max_lines: o.MaxLinesOpt = 1000,
    words: Annotated[
        bool,
        typer.Option(
            "--words",
            help="Merge subword tokens into words (attention summed over key pieces, averaged over query pieces).",
        ),
    ] = False,
    plot: Annotated[Optional[str], PICTURE.plot] = None,
    output: Annotated[Optional[Path], PICTURE.output] = None,
    dpi: Annotated[float, PICTURE.dpi] = 150,
    font: o.FontOpt = None,
    output_format: FormatOpt = "table",
    json_flag: o.JsonOpt = False,
    batch_size: o.BatchSizeOpt = 16,
    memory: o.MemoryOpt = o.MEMORY,
    encoding_errors: EncodingOpt = o.EncodingErrors.strict,
    device: o.DeviceOpt = o.Device.cpu,
    trust_remote_code: o.TrustOpt = False,
) -> None:
    """Two or more models side by side: tokenization, position encodings, attention per layer, layer similarity (CKA).

    Example: posemb compare "The cat sat on the mat." -m sentence-transformers/all-MiniLM-L6-v2 -m scheme:rotary
    """
    from ...compare import compare as run_compare
    from ...compare import parse_specs
    from ...lines import argument_text, read_corpus
    from ...render import emit
    from ...render.pictures import Request

    out: Output = ctx.obj
    fmt = out.format("compare", output_format, json_flag, o.TABLE_JSON, "table")
    parse_specs(model or [])
    budget = o.memory(memory)
    if (text is None) == (corpus is None):
        raise PosembUsageError("give one TEXT or --corpus FILE (not both)")
    kind, output = o.plot_and_file(plot, output, o.COMPARE_PLOTS, out)
    if kind is not None and output is None:
        raise PosembUsageError(f"--plot {kind} needs -o FILE")
    output = o.folder_picture(output, "compare")
    if output is not None:
        o.check_font(font)
    if corpus is None:
        texts, name = [argument_text(text or "", "TEXT", encoding_errors.value)], None
    else:
        texts, more, name = read_corpus(str(corpus), max_lines, encoding_errors.value)
        if more:
            out.warn(f"read the first {max_lines} lines of {name} (--max-lines {max_lines})")
    comparison = run_compare(
        model or [],
        texts,
        corpus=name,
        words=words,
        device=device.value,
        trust_remote_code=trust_remote_code,
        batch_size=batch_size,
        memory=budget,
        on_progress=(lambda m: out.info(f"Running {m}")) if out.progress else None,
    )
    emit.compare(out, comparison, fmt, Request(kind=kind, path=output, dpi=dpi, font=font))
