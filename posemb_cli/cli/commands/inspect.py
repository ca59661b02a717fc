"""posemb inspect -> core.inspect_texts; render/emit.py (table.py, data.py; pictures: figures/inspect.py, html.py)."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...errors import PosembError, PosembUsageError
from ...lines import LINE_LIMIT
from ...output import Output, is_report
from .. import options as o
from ..errors import handle_errors

PICTURE = o.picture_options(
    o.INSPECT_PLOTS,
    plot_help="Draw a picture (needs -o).",
    output_help="Picture file (.png/.svg/.pdf; without --plot: the attention grid), a folder (every picture), or an "
    "interactive report (.html; without --plot: every view).",
)
FormatOpt = Annotated[Optional[str], o.format_option("inspect", o.FORMATS, "Output format on stdout [default: table].")]
EncodingOpt = Annotated[
    o.EncodingErrors, o.encoding_errors_option("What to do with invalid UTF-8 in TEXT, --pair or stdin.")
]


@handle_errors
def inspect(
    ctx: typer.Context,
    texts: Annotated[
        list[str],
        typer.Argument(
            metavar="TEXT...", help=f"Texts to inspect; `-` reads one text per line from stdin ({LINE_LIMIT})."
        ),
    ],
    pair: Annotated[
        Optional[str], typer.Option("--pair", metavar="TEXT", help="Second sentence (segment 1) for every text.")
    ] = None,
    model: o.ModelOpt = None,
    output_format: FormatOpt = None,
    json_flag: o.JsonOpt = False,
    vectors: Annotated[bool, typer.Option("--vectors", help="Add token/position/segment/sum vectors to JSON.")] = False,
    attention: Annotated[
        bool, typer.Option("--attention", help="Add attention maps [layer][head][query][key].")
    ] = False,
    words: Annotated[
        bool, typer.Option("--words", help="Also show words: tokens merged by offsets, word-level attention per layer.")
    ] = False,
    layer: Annotated[
        Optional[list[int]],
        typer.Option("--layer", metavar="N", help="Only these layers (from 0) in --attention and --plot attention."),
    ] = None,
    head: Annotated[
        Optional[list[int]],
        typer.Option("--head", metavar="N", help="Only these heads (from 0) in --attention and --plot attention."),
    ] = None,
    save: Annotated[
        Optional[Path], typer.Option("--save", metavar="FILE.npz", help="Write every array to this .npz file.")
    ] = None,
    batch_size: o.BatchSizeOpt = 16,
    no_truncate: o.NoTruncateOpt = False,
    encoding_errors: EncodingOpt = o.EncodingErrors.strict,
    plot: Annotated[Optional[str], PICTURE.plot] = None,
    output: Annotated[Optional[Path], PICTURE.output] = None,
    dpi: Annotated[float, PICTURE.dpi] = 150,
    n_positions: Annotated[
        Optional[int],
        o.number_option(
            "--positions", low=2, high=o.MAX_LENGTH, metavar="N", help="Positions in --plot positions (default 128)."
        ),
    ] = None,
    font: o.FontOpt = None,
    memory: o.MemoryOpt = o.MEMORY,
    device: o.DeviceOpt = o.Device.cpu,
    trust_remote_code: o.TrustOpt = False,
) -> None:
    """Tokens, position ids, segments, embedding norms and attention of each text.

    Example: posemb inspect "position matters" --pair "so does order" --json --vectors --attention
    """
    out: Output = ctx.obj
    if plot is None and output is not None:  # -o alone: the attention picture; a folder or a page: every view
        plot = "attention" if o.output_target(output) == "picture" else "all"
    # --plot or --save alone print nothing on stdout; --format/--json ask for output as well
    default = None if plot or save else "table"
    fmt = out.format("inspect", output_format, json_flag, o.FORMATS, default)
    if words and fmt == "csv":
        raise PosembUsageError("--words adds to the table or JSON output; CSV has one row per token")
    if plot is not None:
        _check_picture(plot, output, texts, font)
    if save is not None:
        if save.suffix != ".npz":
            raise PosembUsageError(f"--save {save}: the file name must end in .npz")
        from ...output import check_writable

        check_writable(save)

    from ...core import inspect_maps, inspect_texts
    from ...lines import argument_text, read_texts, stdin
    from ...models import load
    from ...render import emit

    budget = o.memory(memory)
    if "-" in texts:
        stdin()  # closed stdin: the error before the model loads
    loaded = load(model, device=device.value, trust_remote_code=trust_remote_code)
    info = loaded.info
    o.check_range("--layer", layer, info.layers, "layers", info.name)
    o.check_range("--head", head, info.heads, "heads", info.name)
    picture = None if plot is None else _picture(loaded, plot, output, dpi, n_positions, font)
    results = inspect_texts(
        loaded,
        read_texts(texts, encoding_errors.value),
        pair=None if pair is None else argument_text(pair, "--pair", encoding_errors.value),
        batch_size=batch_size,
        truncate=not no_truncate,
        words=words,
        maps=inspect_maps(
            layer,
            head,
            attention=attention and fmt in ("json", "jsonl"),
            picture=plot,
            report=output is not None and is_report(output),
            save=save is not None,
        ),
        memory=budget,
    )
    single = len(texts) == 1 and texts[0] != "-"  # one text: a JSON object; otherwise a JSON array
    emit.inspect(out, results, fmt, single, vectors, attention, layer, head, picture, save)


def _check_picture(plot: str, output: Optional[Path], texts: list[str], font: Optional[Path]) -> None:
    """Fail before loading the model when the picture cannot be written."""
    if output is None:
        raise PosembUsageError(f"--plot {plot} needs -o FILE (or -o FOLDER for --plot all)")
    if len(texts) != 1 or texts[0] == "-":
        raise PosembUsageError("a picture or report (-o) draws one text: give exactly one TEXT argument")
    o.check_font(font)
    if plot != "all" or is_report(output):
        Output.picture_path(output, report=True)


def _picture(
    loaded: Any, plot: str, output: Optional[Path], dpi: float, n_positions: Optional[int], font: Optional[Path]
) -> Any:
    """The picture request, with the model's Φ when the positions picture is drawn (an error before any text runs
    when the model's scheme has none)."""
    from ...positions import position_picture
    from ...render.pictures import InspectPicture

    positions = position_picture(loaded, n_positions) if plot in ("positions", "all") else None
    if plot == "positions" and positions is None:
        scheme = loaded.info.position_scheme
        raise PosembError(f"no positions picture: {loaded.info.name} uses position scheme {scheme!r}")
    return InspectPicture(kind=plot, path=output, dpi=dpi, font=font, positions=positions)
