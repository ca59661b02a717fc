"""posemb extrapolate -> extrapolate.extrapolate; render/emit.py (extrapolate_output.py; pictures:
figures/extrapolate.py, html.py)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...errors import PosembUsageError
from ...output import Output
from .. import options as o
from ..errors import handle_errors

PICTURE = o.picture_options(
    (),
    plot_help="",
    output_help="Loss against position and perplexity against length, one line per variant (.png/.svg/.pdf), or an "
    "interactive report (.html).",
    output_metavar="FILE",
)
FormatOpt = Annotated[
    Optional[str], o.format_option("extrapolate", o.TABLE_JSON_CSV, "Output format [default: table].")
]


@handle_errors
def extrapolate(
    ctx: typer.Context,
    text_file: Annotated[Path, typer.Argument(metavar="FILE", help="The text to read in windows (`-`: stdin).")],
    model: o.ModelOpt = None,
    variant: Annotated[
        Optional[list[str]],
        typer.Option(
            "--variant",
            metavar="VARIANT",
            help="Repeatable: as-trained, none (rope scaling removed), linear:F, dynamic:F, yarn:F, llama3:F, "
            "longrope, drop-low:P (p-RoPE: the lowest-frequency fraction P of pairs unrotated), nope-layer:L, shift:K "
            "[default: as-trained, none (if the config scales RoPE), linear:F, dynamic:F, yarn:F with F = longest "
            "length / training length; as-trained without RoPE].",
        ),
    ] = None,
    lengths: Annotated[
        Optional[str],
        typer.Option(
            "--lengths", metavar="N,N,...", help="Window lengths, e.g. 512,2k,8k [default: training ×1,2,4,8]."
        ),
    ] = None,
    stride: Annotated[
        Optional[int],
        o.number_option(
            "--stride",
            low=1,
            high=2**20,
            metavar="S",
            help="Sliding windows S tokens apart [default: non-overlapping].",
        ),
    ] = None,
    bins: Annotated[
        str, typer.Option("--bins", metavar="N|log:N|linear:N", help="Position bins of the loss-by-position curve.")
    ] = "12",
    rope_param: Annotated[
        Optional[list[str]],
        typer.Option("--rope-param", metavar="KEY=VALUE", help="A rope type's own parameter, e.g. beta_fast=32."),
    ] = None,
    attention: Annotated[
        bool,
        typer.Option(
            "--attention",
            help="Also the attention per variant and length: sink, sink_rate and distance_profile (posemb stats' "
            "measures) per layer and head, on posemb's attention backend (slower than SDPA).",
        ),
    ] = False,
    output: Annotated[Optional[Path], PICTURE.output] = None,
    dpi: Annotated[float, PICTURE.dpi] = 150,
    output_format: FormatOpt = None,
    json_flag: o.JsonOpt = False,
    dtype: o.DtypeOpt = o.Dtype.float32,
    device: o.DeviceOpt = o.Device.cpu,
    quiet: o.QuietOpt = False,
    trust_remote_code: o.TrustOpt = False,
) -> None:
    """Does a causal LM's position encoding hold beyond its training length? Loss by position under each variant.

    Example: posemb extrapolate book.txt -m ./model --variant as-trained --variant yarn:4 --lengths 2k,8k
    """
    from ... import extrapolate as compute
    from ...render import emit
    from ...render.pictures import Request

    out: Output = ctx.obj
    out.quiet = out.quiet or quiet
    fmt = out.format("extrapolate", output_format, json_flag, o.TABLE_JSON_CSV, "table")
    variants = [compute.parse_variant(v) for v in variant or []]
    chosen = compute.parse_lengths(lengths) if lengths else None
    spacing = compute.parse_bins(bins)
    if output is not None:
        Output.picture_path(output, report=True)
    from ...lines import read_document
    from ...schemes.rotary import parse_rope_params

    if model is None:
        raise PosembUsageError(
            "extrapolate needs a causal language model: give one with -m (the bundled model is BERT)"
        )
    text, source = read_document(str(text_file))
    loaded = compute.load_causal(model, device.value, dtype.value, trust_remote_code)
    plan = compute.prepare(
        loaded, text, source, variants, chosen, stride, parse_rope_params(rope_param), attention=attention
    )
    with out.progress_bar("extrapolate", plan.windows, unit="windows") as advance:
        result = compute.extrapolate(loaded, plan, spacing, advance)
    emit.extrapolate(out, result, fmt, Request(path=output, dpi=dpi))
