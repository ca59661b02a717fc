"""posemb ablate -> ablate.ablate_texts; render/emit.py (ablate_table.py; pictures: figures/ablate.py, html.py)."""

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...errors import PosembUsageError
from ...lines import LINE_LIMIT
from ...output import Output
from .. import options as o
from ..errors import handle_errors

PICTURE = o.picture_options(
    o.ABLATE_PLOTS,
    plot_help="Draw one line per mode against layer (needs -o).",
    output_help="Picture file (.png/.svg/.pdf; without --plot: similarity), a folder (similarity and attention), "
    "or an interactive report (.html; without --plot: both pictures).",
)
FormatOpt = Annotated[Optional[str], o.format_option("ablate", o.TABLE_JSON, "Output format [default: table].")]
EncodingOpt = Annotated[o.EncodingErrors, o.encoding_errors_option("What to do with invalid UTF-8 input.")]


@handle_errors
def ablate(
    ctx: typer.Context,
    texts: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="TEXT...", help=f"Texts to ablate; `-` reads one text per line from stdin ({LINE_LIMIT})."
        ),
    ] = None,
    mode: Annotated[
        Optional[list[str]],
        typer.Option(
            "--mode",
            metavar="MODE",
            help="Repeatable: zero (every id the first position), shuffle, reverse, shift:K, ids:I,J,... (one id per "
            "token), isolate (each token alone: the seed article's input_ids.view(-1, 1)), permute-tokens "
            "[default: zero, shuffle, reverse, isolate, permute-tokens].",
        ),
    ] = None,
    seed: Annotated[int, o.seed_option("Seed of shuffle and permute-tokens.")] = 0,
    memory: o.MemoryOpt = o.MEMORY,
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            "--corpus", metavar="FILE", help=f"Also read texts from this file, one per line, {LINE_LIMIT} (`-`: stdin)."
        ),
    ] = None,
    max_lines: o.MaxLinesOpt = 1000,
    corpus_mean: Annotated[
        bool, typer.Option("--corpus-mean", help="One result for all texts, every token weighing the same.")
    ] = False,
    model: o.ModelOpt = None,
    output_format: FormatOpt = None,
    json_flag: o.JsonOpt = False,
    plot: Annotated[Optional[str], PICTURE.plot] = None,
    output: Annotated[Optional[Path], PICTURE.output] = None,
    dpi: Annotated[float, PICTURE.dpi] = 150,
    font: o.FontOpt = None,
    no_truncate: o.NoTruncateOpt = False,
    encoding_errors: EncodingOpt = o.EncodingErrors.strict,
    device: o.DeviceOpt = o.Device.cpu,
    trust_remote_code: o.TrustOpt = False,
) -> None:
    """What position information does inside a model: alter the positions, measure the change layer by layer.

    Example: posemb ablate "the cat sat on the mat" --mode zero --mode shift:7 --json
    """
    from ...ablate import ablate_texts, applicable_modes, parse_modes
    from ...render import emit
    from ...render.pictures import Request

    out: Output = ctx.obj
    target = None if output is None else o.output_target(output)
    if target == "folder" and plot is not None:
        raise PosembUsageError(f"--plot {plot} draws one picture: give -o FILE.png (a folder gets both)")
    default = None if plot or output else "table"  # --plot or -o alone print nothing on stdout
    fmt = out.format("ablate", output_format, json_flag, o.TABLE_JSON, default)
    modes = parse_modes(mode)
    budget = o.memory(memory)
    texts = texts or []
    if not texts and corpus is None:
        raise PosembUsageError("give one or more TEXT arguments, `-` for stdin, or --corpus FILE")
    if plot is not None or output is not None:
        if output is None:
            raise PosembUsageError(f"--plot {plot or ''} needs -o FILE")
        if not corpus_mean and (len(texts) != 1 or texts[0] == "-" or corpus is not None):
            raise PosembUsageError("-o draws one result: give exactly one TEXT, or add --corpus-mean")
        if target == "folder":
            from ...render.figures.toolkit import folder_paths

            folder_paths(output, ["similarity"])
        else:
            Output.picture_path(output, report=True)
        o.check_font(font)

    from ...lines import read_corpus, read_texts
    from ...models import load

    lines: list[str] = []
    if corpus is not None:
        lines, more, name = read_corpus(str(corpus), max_lines, encoding_errors.value)
        if more:
            out.warn(f"read the first {max_lines} lines of {name} (--max-lines {max_lines})")
    loaded = load(model, device=device.value, trust_remote_code=trust_remote_code)
    modes, notes = applicable_modes(loaded, modes)
    for note in notes:
        out.info(note)
    source = itertools.chain(read_texts(texts, encoding_errors.value), lines)
    single = corpus_mean or (len(texts) == 1 and texts[0] != "-" and corpus is None)
    total = len(lines) + len(texts) if "-" not in texts else None
    picture = Request(kind=plot, path=output, dpi=dpi, font=font, folder=target == "folder")

    def run(advance: Callable[[int], None]) -> Iterator[Any]:
        truncate = not no_truncate
        return ablate_texts(
            loaded,
            source,
            modes,
            seed=seed,
            corpus_mean=corpus_mean,
            truncate=truncate,
            on_text=advance,
            memory=budget,
        )

    emit.ablate(out, run, total, fmt, single, picture)
