"""posemb positions -> positions.analyse_model / analyse_scheme (schemes/: one class per scheme); render/emit.py
(positions_table.py; pictures: figures/positions.py, html.py)."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...errors import PosembUsageError
from ...output import Output
from .. import options as o
from ..errors import handle_errors

PICTURE = o.picture_options(
    o.POSITIONS_PLOTS,
    plot_help="Draw Φ as a heatmap, or the bias per head (needs -o).",
    output_help="Picture file (.png/.svg/.pdf; without --plot: Φ), a folder (Φ, and the bias where the scheme has "
    "one), or an interactive report (.html).",
)
FormatOpt = Annotated[Optional[str], o.format_option("positions", o.TABLE_JSON)]


@handle_errors
def positions(
    ctx: typer.Context,
    model: o.ModelOpt = None,
    scheme: Annotated[
        Optional[o.Scheme],
        typer.Option("--scheme", metavar=o.SCHEME_METAVAR, help="Analyse an analytic scheme; no weights."),
    ] = None,
    length: Annotated[
        Optional[int],
        o.number_option(
            "--length", low=2, high=o.MAX_LENGTH, metavar="N", help="Positions to compare (default min(128, max))."
        ),
    ] = None,
    metric: Annotated[o.Metric, typer.Option("--metric", metavar="dot|cosine", help="Proximity Φ.")] = o.Metric.dot,
    window: Annotated[
        int, o.number_option("--window", low=1, high=o.MAX_LENGTH, metavar="W", help="Window of local monotonicity.")
    ] = 16,
    dim: Annotated[
        Optional[int],
        o.number_option("--dim", low=2, high=8192, metavar="D", help="Sinusoidal/rotary dimension [default: 512/64]."),
    ] = None,
    base: Annotated[
        Optional[float],
        o.number_option(
            "--base", low=1, high=1e12, metavar="B", help="Sinusoidal/rotary base [default: 10000].", kind=float
        ),
    ] = None,
    rope_type: Annotated[
        Optional[str],
        typer.Option(
            "--rope-type", metavar="TYPE", help="Rotary scaling: default|linear|dynamic|yarn|llama3 [default: default]."
        ),
    ] = None,
    factor: Annotated[
        Optional[float],
        o.number_option("--factor", low=1, high=10_000, metavar="F", help="Rotary scaling factor.", kind=float),
    ] = None,
    original_max: Annotated[
        Optional[int],
        o.number_option(
            "--original-max", low=1, high=10**7, metavar="N", help="Rotary: positions the model was trained on."
        ),
    ] = None,
    rope_param: Annotated[
        Optional[list[str]],
        typer.Option(
            "--rope-param",
            metavar="KEY=VALUE",
            help="A rope type's own parameter, e.g. beta_fast=32 or short_factor=1,1.2,long_factor=2,4.",
        ),
    ] = None,
    at_length: Annotated[
        Optional[int],
        o.number_option(
            "--at-length",
            low=2,
            high=2**24,
            metavar="N",
            help="Rotary: audit and report the frequencies used for a text of N positions [default: extended max].",
        ),
    ] = None,
    heads: Annotated[
        Optional[int], o.number_option("--heads", low=1, high=1024, metavar="H", help="ALiBi heads [default: 8].")
    ] = None,
    buckets: Annotated[
        Optional[int],
        o.number_option("--buckets", low=2, high=o.MAX_LENGTH, metavar="B", help="T5 relative buckets [default: 32]."),
    ] = None,
    max_distance: Annotated[
        Optional[int],
        o.number_option("--max-distance", low=1, high=10**7, metavar="D", help="T5 max distance [default: 128]."),
    ] = None,
    bidirectional: Annotated[
        Optional[bool],
        typer.Option("--bidirectional/--causal", help="T5 buckets: encoder or decoder [default: bidirectional]."),
    ] = None,
    probe: Annotated[
        Optional[str], typer.Option("--probe", metavar="identical-word", help="Layer-1 attention on a repeated word.")
    ] = None,
    words: Annotated[
        int, o.number_option("--words", low=1, high=1000, metavar="K", help="Random words averaged by the probe.")
    ] = 30,
    seed: Annotated[int, o.seed_option("Seed of the probe's word choice.")] = 0,
    matrix: Annotated[bool, typer.Option("--matrix", help="Add the matrix Φ to JSON.")] = False,
    vectors: Annotated[
        bool,
        typer.Option(
            "--vectors", help="Add the scheme's tables to JSON: rotary inv_freq, the sinusoidal table, DeBERTa buckets."
        ),
    ] = False,
    plot: Annotated[Optional[str], PICTURE.plot] = None,
    output: Annotated[Optional[Path], PICTURE.output] = None,
    dpi: Annotated[float, PICTURE.dpi] = 150,
    output_format: FormatOpt = "table",
    json_flag: o.JsonOpt = False,
    device: o.DeviceOpt = o.Device.cpu,
    trust_remote_code: o.TrustOpt = False,
    spectrum: Annotated[
        Optional[Path],
        typer.Option("--spectrum", metavar="FILE|-", help="Rotary: per-pair query/key norms over a corpus (-m)."),
    ] = None,
) -> None:
    """How a model (or an analytic scheme) encodes position: proximity Φ and its properties (Wang et al. 2021).

    Example: posemb positions --scheme rotary --dim 64 --base 10000
    """
    from ... import positions as compute
    from ...render import emit

    out: Output = ctx.obj
    fmt = out.format("positions", output_format, json_flag, o.TABLE_JSON, "table")
    if spectrum is not None:
        return _spectrum(out, model, spectrum, fmt, output, dpi, device.value, trust_remote_code)
    if vectors and fmt != "json":
        raise PosembUsageError("--vectors adds the scheme's tables to JSON: use it with --json")
    picture = _picture(plot, output, dpi)
    if scheme is not None:
        if model is not None or probe is not None:
            raise PosembUsageError("--scheme analyses a formula; it takes no --model and no --probe")
        from ...schemes.rotary import parse_rope_params

        options = dict(dim=dim, base=base, heads=heads, buckets=buckets, max_distance=max_distance)
        rope: dict[str, Any] = dict(rope_type=rope_type, factor=factor, original_max=original_max)
        rope["rope_params"] = parse_rope_params(rope_param)
        if vectors:
            compute.check_export_request(scheme.value, length, dim)
        analysis = compute.analyse_scheme(
            scheme.value,
            length,
            metric=metric.value,
            window=window,
            bidirectional=bidirectional,
            at_length=at_length,
            **options,
            **rope,
        )
    else:
        analytic = dict(
            dim=dim, base=base, heads=heads, buckets=buckets, max_distance=max_distance, rope_type=rope_type,
            factor=factor, original_max=original_max, rope_param=rope_param, bidirectional=bidirectional,
        )  # fmt: skip
        given = [f"--{key.replace('_', '-')}" for key, value in analytic.items() if value is not None]
        if given:
            raise PosembUsageError(
                f"{', '.join(given)} describe{'s' * (len(given) == 1)} an analytic scheme (--scheme); a model's own "
                "config sets them (use --at-length N for the frequencies a rotary model uses at N positions)"
            )
        from ...models import load

        loaded = load(model, device=device.value, trust_remote_code=trust_remote_code)
        analysis = compute.analyse_model(
            loaded, length, metric=metric.value, window=window, probe=probe, words=words, seed=seed, at_length=at_length
        )
    if vectors:
        compute.check_export_size(analysis)
    emit.positions(out, analysis, fmt, matrix, vectors, picture)


def _spectrum(
    out: Output,
    model: Optional[str],
    corpus: Path,
    fmt: str,
    output: Optional[Path],
    dpi: float,
    device: str,
    trust: bool,
) -> None:
    """--spectrum CORPUS: spectrum.spectrum computes, render/spectrum_output.py renders (table, JSON, -o FILE)."""
    from ... import spectrum as measure
    from ...models import load
    from ...render import emit

    if model is None:
        raise PosembUsageError("--spectrum needs a rotary model: give -m MODEL")
    if output is not None:
        Output.picture_path(output, report=True)
    loaded = load(model, device=device, trust_remote_code=trust)
    emit.spectrum(out, measure.spectrum(loaded, str(corpus)), fmt, output, dpi)


def _picture(plot: Optional[str], output: Optional[Path], dpi: float) -> Any:
    """--plot phi|bias and -o, checked before any work: -o alone draws Φ; a folder gets every picture."""
    from ...render.pictures import Request

    if plot is not None and output is None:
        raise PosembUsageError(f"--plot {plot} needs -o FILE")
    target = None if output is None else o.output_target(output)
    if output is not None and target == "folder":
        if plot is not None:
            raise PosembUsageError(f"--plot {plot} draws one picture: give -o FILE.png (a folder gets every picture)")
        from ...render.figures.toolkit import folder_paths

        folder_paths(output, ["phi"])
    elif output is not None:
        Output.picture_path(output, report=True)
        plot = plot or ("phi" if target == "picture" else None)
    return Request(kind=plot, path=output, dpi=dpi, folder=target == "folder")
