"""posemb command line: parse options, call one core function, hand its result to a renderer. No tensor or plotting
code here, and nothing heavy imported at module level (`posemb --help` never loads torch, transformers, matplotlib).

Commands and where their work lives:
  inspect   -> core.inspect_texts; render/table.py, render/data.py, render/figures/inspect.py
  positions -> positions.analyse_model / analyse_scheme (schemes/: one class per scheme); render/positions_table.py
  models    -> models.list_models; render/listing.py
  compare   -> compare.compare; render/compare_table.py, render/figures/compare.py
  stats     -> stats.run_shard (shards, checkpoints: stats.py; the partial file: partials.py);
               render/stats_output.py, render/figures/stats.py
  stats merge -> partials.merge; the same renderers
  ablate    -> ablate.ablate_texts; render/ablate_table.py, render/figures/ablate.py
  extrapolate -> extrapolate.extrapolate; render/extrapolate_output.py, render/figures/extrapolate.py
  -o FILE.html (inspect, positions, compare, stats, ablate) -> render/html.py, the page in render/static/
  serve     -> server/server.py (forks a child per command that runs this app); render/serve_status.py
Every command goes first to the per-user `posemb serve` (server/client.py, called from __main__.py before this module
is imported; the first command starts it); without one, it runs here. No `from __future__ import annotations` here:
Typer would evaluate every command's string annotations at each start, which costs `posemb --help` ~25 ms.
Output (stdout/stderr, console width, formats, output paths) goes through one `output.Output`, the context object.
"""

import contextlib
import functools
import itertools
import math
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from typer.core import TyperArgument, TyperGroup

from . import __version__
from . import lines as line_reader
from .errors import ExitCode, PosembError, PosembUsageError
from .lines import LINE_LIMIT
from .output import PICTURE_SUFFIXES, Output, is_report
from .schemes import ANALYTIC as ANALYTIC_SCHEMES


class Commands(TyperGroup):
    """posemb's command group.
    - `posemb stats merge ...` runs the command named "stats merge" (a corpus file named `merge` is still read with
      `posemb stats ./merge`).
    - A bad option value reads as one clean line: Typer validates with Pydantic, which puts "Value error, " before
      the message of a parser or a choice (`--format xml`).
    - `posemb` alone prints the help on stdout and exits 0 (Click's `no_args_is_help` exits 2, help on stderr).
    - Usage lines and argument lists read as a person writes them: `TEXT...`, `[TEXT...]`, `FILE|-` (see
      `CleanArgument`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            for param in command.params:
                if type(param) is TyperArgument:
                    param.__class__ = CleanArgument

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args[:2] == ["stats", "merge"]:
            args = ["stats merge", *args[2:]]
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            exc.message = exc.message.removeprefix("Value error, ")
            raise


class CleanArgument(TyperArgument):
    """An argument shown by its metavar alone: Typer would write a required list `{TEXT...}...` in the usage line
    and add the Python type (`TEXT... <list[str]>`) in the argument list."""

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return [name if self.required else f"[{name}]"]

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


app = typer.Typer(
    cls=Commands,
    name="posemb",
    help="See how a transformer turns text into token, position and segment embeddings, and where it attends.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (Typer's)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help and one-line usage errors: "Error: Invalid value for ..."
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


FORMATS = tuple(f.value for f in Format)
SCHEME_METAVAR = "|".join(ANALYTIC_SCHEMES)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class PlotKind(str, Enum):
    attention = "attention"
    positions = "positions"
    embeddings = "embeddings"
    all = "all"


class Profile(str, Enum):
    distance = "distance"
    keys = "keys"


def _memory(text: str) -> int:
    from .backend import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise PosembUsageError(f"--memory: {exc}") from None


MemoryOpt = Annotated[
    str,
    typer.Option(
        "--memory",
        metavar="SIZE",
        help="Memory for the attention blocks beyond the forward pass, e.g. 512MB, 4GB (changes no number).",
    ),
]


class EncodingErrors(str, Enum):
    strict = "strict"
    substitute = "replace"  # not `replace`: that name is str.replace


ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        metavar="NAME|FOLDER",
        help="Local model folder or Hugging Face hub id. Default: the bundled sentence-transformers/all-MiniLM-L6-v2.",
    ),
]
FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", metavar="table|json|jsonl|csv", help="Output format on stdout.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Short for --format json.")]
DeviceOpt = Annotated[Device, typer.Option("--device", metavar="auto|cpu|cuda|mps", help="Where the model runs.")]
TABLE_JSON = ("table", "json")
TableJsonFormatOpt = Annotated[
    Format, typer.Option("--format", "-f", metavar="|".join(TABLE_JSON), help="Output format on stdout.")
]
StatsFormatOpt = Annotated[
    Optional[Format],
    typer.Option("--format", "-f", metavar="table|json|csv", help="Output format on stdout [default: table]."),
]
SortOpt = Annotated[
    Optional[str], typer.Option("--sort", metavar="COLUMN", help="Order heads by a column, e.g. entropy.")
]
ReverseOpt = Annotated[bool, typer.Option("--reverse", help="Sort in descending order.")]
StatsPlotOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--plot",
        "--output",
        "-o",
        metavar="FILE|FOLDER",
        help="Heatmaps layers x heads, one per statistic (.png/.svg/.pdf; a folder: FOLDER/stats.png), or an "
        "interactive report (.html).",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors: no progress bar, no warnings.")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a model's own Python code to run (off: never runs).")
]


class Bounded:
    """The parser of every numeric option: a finite number from `low` to `high` (both included), or a usage error
    that names the range. The limits keep any value from asking for an absurd allocation (`--length 1000000` would
    be a 3.8 GiB matrix); `number_option` states them in --help."""

    def __init__(self, kind: type[int] | type[float], low: float, high: float) -> None:
        self.kind, self.low, self.high = kind, low, high

    def __str__(self) -> str:
        return f"{_shown(self.low)}..{_shown(self.high)}"

    def __call__(self, value: Any) -> Any:
        what = "an integer" if self.kind is int else "a number"
        try:
            number = self.kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{value!r} is not {what}; give {what} in {self}") from None
        if not math.isfinite(number):
            raise ValueError(f"{value} is not a finite number; give {what} in {self}")
        if not self.low <= number <= self.high:
            raise ValueError(f"{value} is out of range; give {what} in {self}")
        return number


def _shown(limit: float) -> str:
    return str(int(limit)) if limit == int(limit) and abs(limit) < 1e10 else f"{limit:.0e}".replace("+", "")


def number_option(
    *names: str, low: float, high: float, metavar: str, help: str, kind: type[int] | type[float] = int
) -> Any:
    """A numeric option (int, or float with kind=float) with its range checked by `Bounded` and shown in --help."""
    bounded = Bounded(kind, low, high)
    return typer.Option(*names, parser=bounded, metavar=metavar, help=f"{help}  [range: {bounded}]")


MAX_LENGTH = 4096  # positions in one Φ matrix (positions --length, inspect --positions): about 1 GB at 4096
BatchSizeOpt = Annotated[
    int, number_option("--batch-size", low=1, high=4096, metavar="N", help="Texts per forward pass.")
]
DpiOpt = Annotated[
    float, number_option("--dpi", low=1, high=600, metavar="DPI", help="Picture resolution.", kind=float)
]
MaxLinesOpt = Annotated[
    int, number_option("--max-lines", low=1, high=10**6, metavar="N", help="Non-empty --corpus lines to read.")
]


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        metavar="float32|bfloat16|float16",
        help="Precision of the weights and forward pass; half precision only where the device supports it.",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(command: F) -> F:
    """One-line errors with documented exit codes; the traceback only with --debug or POSEMB_DEBUG=1."""

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(ctx.obj, Output):  # called without the app's callback (e.g. from Python)
            ctx.obj = Output()
        out: Output = ctx.obj
        line_reader.WARN[0] = out.warn  # a line cut at its size limit is said as posemb's warning (silent with --quiet)
        try:
            with _library_warnings(out):
                return command(ctx, *args, **kwargs)
        except typer.Exit:
            raise
        except PosembError as exc:
            if out.debug:
                raise
            out.error(str(exc))
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            saved = out.saved or "no files were written."
            done = f"Interrupted after {out.done} text(s); {saved}" if out.done >= 0 else "Interrupted."
            print(done, file=sys.stderr, flush=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # The reader (e.g. `head`) closed the pipe: stop quietly, and keep Python's exit-time flush quiet too.
            out.silence_stdout()
            raise typer.Exit(int(ExitCode.OK)) from None
        except Exception as exc:
            if out.debug:
                raise
            if _out_of_memory(exc):
                out.error(_memory_message(ctx.info_name or "", exc))
            else:
                out.error(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (rerun with --debug)")
            raise typer.Exit(int(ExitCode.ERROR)) from None
        except BaseException as exc:
            # A Rust library (the tokenizer) panicked, e.g. on a pathological pre-tokenizer regex: pyo3 raises
            # PanicException, which derives from BaseException so that `except Exception` cannot swallow it.
            if type(exc).__name__ != "PanicException" or out.debug:
                raise
            out.error(
                f"the tokenizer library failed (Rust panic: {' '.join(str(exc).split())[:300]}); the model's tokenizer "
                "files are broken or hostile (rerun with --debug)"
            )
            raise typer.Exit(int(ExitCode.ERROR)) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _library_warnings(out: Output) -> Iterator[None]:
    """Python warnings of the libraries posemb calls (transformers, torch, NumPy) are kept off stderr: what matters
    of them posemb says itself, once (non-finite numbers, truncation, RoPE conventions). --debug shows them."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            if out.debug:
                for item in caught:
                    print(f"Warning (from {item.category.__name__}): {item.message}", file=sys.stderr)


def _out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or torch's allocation failure (a RuntimeError: "can't allocate memory", "out of memory")."""
    text = str(exc).lower()
    words = ("can't allocate", "out of memory", "not enough memory")
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(w in text for w in words))


# What makes each command's largest arrays smaller (the attention maps: layers × heads × n² × 4 bytes per text).
_MEMORY_HINTS = {
    "inspect": "a shorter text (inspect holds the maps of every layer and head: layers × heads × n² × 4 bytes)",
    "compare": "shorter texts (the maps of every layer and head of each model are held)",
    "ablate": "a shorter text (the maps of every layer and head are held, twice)",
    "stats": "a smaller --batch-size or --max-length (one layer's maps of a batch are held: batch × heads × n² × 4 "
    "bytes), or --dtype bfloat16",
}


def _memory_message(command: str, exc: BaseException) -> str:
    """One line for an allocation that failed: how much was asked (when the message says), how much is free, and
    what would make it fit."""
    import os
    import re as regex

    asked = regex.search(r"allocate (?:memory: you tried to allocate )?([0-9]+) bytes", str(exc))
    size = f" (posemb asked for {int(asked[1]) / 2**30:.1f} GiB at once" if asked else " ("
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        size += f"{'; ' if asked else ''}{free:.1f} GiB of memory are free)"
    except (ValueError, OSError, AttributeError):
        size = size + ")" if asked else ""
    hint = _MEMORY_HINTS.get(command, "shorter texts, a smaller --batch-size or --max-length where the command has one")
    return f"out of memory{size}: what would fit is {hint}"


def _version(value: bool) -> None:
    if value:
        print(f"posemb {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="POSEMB_DEBUG", help="Show full tracebacks (for bug reports).")
    ] = False,
) -> None:
    """See how a transformer turns text into token, position and segment embeddings, and where it attends."""
    ctx.obj = Output(debug=debug)


def _check_range(option: str, values: Optional[list[int]], count: int, what: str, model: str) -> None:
    for value in values or []:
        if not 0 <= value < count:
            raise PosembUsageError(f"{option} {value} is out of range: {model} has {what} 0..{count - 1}")


@app.command()
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
    model: ModelOpt = None,
    output_format: Annotated[
        Optional[Format],
        typer.Option(
            "--format", "-f", metavar="table|json|jsonl|csv", help="Output format on stdout [default: table]."
        ),
    ] = None,
    json_flag: JsonOpt = False,
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
    batch_size: BatchSizeOpt = 16,
    no_truncate: Annotated[
        bool, typer.Option("--no-truncate", help="Error instead of cutting texts longer than the model's positions.")
    ] = False,
    encoding_errors: Annotated[
        EncodingErrors,
        typer.Option(
            "--encoding-errors",
            metavar="strict|replace",
            help="What to do with invalid UTF-8 in TEXT, --pair or stdin.",
        ),
    ] = EncodingErrors.strict,
    plot: Annotated[
        Optional[PlotKind],
        typer.Option("--plot", metavar="attention|positions|embeddings|all", help="Draw a picture (needs -o)."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="FILE|FOLDER",
            help="Picture file (.png/.svg/.pdf; without --plot: the attention grid), a folder (every picture), or an "
            "interactive report (.html; without --plot: every view).",
        ),
    ] = None,
    dpi: DpiOpt = 150,
    n_positions: Annotated[
        Optional[int],
        number_option(
            "--positions", low=2, high=MAX_LENGTH, metavar="N", help="Positions in --plot positions (default 128)."
        ),
    ] = None,
    font: Annotated[Optional[Path], typer.Option("--font", metavar="PATH", help="Font file for the labels.")] = None,
    device: DeviceOpt = Device.cpu,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Tokens, position ids, segments, embedding norms and attention of each text.

    Example: posemb inspect "position matters" --pair "so does order" --json --vectors --attention
    """
    out: Output = ctx.obj
    if plot is None and output is not None:  # -o alone: the attention picture; a folder or a page: every view
        plot = PlotKind.attention if _output_target(output) == "picture" else PlotKind.all
    # --plot or --save alone print nothing on stdout; --format/--json ask for output as well
    default = None if plot or save else "table"
    fmt = out.format("inspect", output_format and output_format.value, json_flag, FORMATS, default)
    if words and fmt == "csv":
        raise PosembUsageError("--words adds to the table or JSON output; CSV has one row per token")
    if plot is not None:
        _check_plot_options(plot, output, texts, font)
    if save is not None:
        if save.suffix != ".npz":
            raise PosembUsageError(f"--save {save}: the file name must end in .npz")
        from .output import check_writable

        check_writable(save)

    from .core import inspect_texts
    from .lines import argument_text, read_texts, stdin
    from .models import load

    if "-" in texts:
        stdin()  # closed stdin: the error before the model loads
    loaded = load(model, device=device.value, trust_remote_code=trust_remote_code)
    info = loaded.info
    _check_range("--layer", layer, info.layers, "layers", info.name)
    _check_range("--head", head, info.heads, "heads", info.name)
    results = inspect_texts(
        loaded,
        read_texts(texts, encoding_errors.value),
        pair=None if pair is None else argument_text(pair, "--pair", encoding_errors.value),
        batch_size=batch_size,
        truncate=not no_truncate,
        words=words,
    )
    kept: Optional[list[Any]] = (
        [] if save is not None or plot is not None else None
    )  # results the npz or the picture needs
    single = len(texts) == 1 and texts[0] != "-"  # one text: a JSON object; otherwise a JSON array
    _render_inspect(out, results, fmt, single, vectors, attention, layer, head, kept)
    if plot is not None and output is not None and kept:
        _draw(out, plot, kept[0], loaded, output, dpi, n_positions, font, layer, head)
    if save is not None and kept:
        from .render.data import save_npz

        save_npz(save, kept)
        out.info(f"Saved {len(kept)} text(s) to {save}")


def _check_plot_options(plot: PlotKind, output: Optional[Path], texts: list[str], font: Optional[Path]) -> None:
    """Fail before loading the model when the picture cannot be written."""
    if output is None:
        raise PosembUsageError(f"--plot {plot.value} needs -o FILE (or -o FOLDER for --plot all)")
    if len(texts) != 1 or texts[0] == "-":
        raise PosembUsageError("a picture or report (-o) draws one text: give exactly one TEXT argument")
    _check_font(font)
    if plot is not PlotKind.all or is_report(output):
        Output.picture_path(output, report=True)


def _output_target(output: Path) -> str:
    """What -o names: "report" (.html), "picture" (.png/.svg/.pdf) or "folder" (no suffix, or an existing folder:
    every picture of the command); any other suffix is a usage error."""
    if is_report(output):
        return "report"
    if output.suffix.lower() in PICTURE_SUFFIXES and not output.is_dir():
        return "picture"
    if not output.suffix or output.is_dir():
        return "folder"
    Output.picture_path(output, report=True)  # raises: names the suffixes -o takes
    raise AssertionError("unreachable")


def _check_font(font: Optional[Path]) -> None:
    if font is not None and not font.is_file():
        raise PosembError(f"--font {font}: no such font file")


def _draw(
    out: Output,
    plot: PlotKind,
    result: Any,
    loaded: Any,
    output: Path,
    dpi: float,
    n_positions: Optional[int],
    font: Optional[Path],
    layers: Optional[list[int]],
    heads: Optional[list[int]],
) -> None:
    from .positions import position_picture
    from .render.figures.inspect import render_plot

    picture = position_picture(loaded, n_positions) if plot in (PlotKind.positions, PlotKind.all) else None
    if plot is PlotKind.positions and picture is None:
        scheme = loaded.info.position_scheme
        raise PosembError(f"no positions picture: {loaded.info.name} uses position scheme {scheme!r}")
    if is_report(output):
        from .render.html import inspect_report

        inspect_report(output, result, plot.value, picture, layers, heads, on_warning=out.warn)
        out.info(f"Wrote {output}")
        return
    written = render_plot(
        plot.value,
        result,
        output,
        dpi=dpi,
        font=font,
        layers=layers,
        heads=heads,
        position_picture=picture,
        on_warning=out.warn,
    )
    for path, _ in written:
        out.info(f"Wrote {path}")


def _render_inspect(
    out: Output,
    results: Iterator[Any],
    fmt: str,
    single: bool,
    vectors: bool,
    attention: bool,
    layers: Optional[list[int]],
    heads: Optional[list[int]],
    kept: Optional[list[Any]],
) -> None:
    """Each result as soon as it is computed: a table, CSV rows, a JSON object or line; nothing for "" (--plot)."""

    from .render import data
    from .render.table import print_result

    console = out.console() if fmt == "table" else None
    if fmt == "csv":
        out.data(data.csv_header())
    count = out.done = 0
    for result in results:
        for warning in result.warnings:
            out.warn(warning)
        if console is not None:
            print_result(console, result)
        elif fmt == "csv":
            out.data(data.csv_rows(result, count))
        elif fmt:  # streamed: the attention maps of a long text would be gigabytes of JSON text
            obj = data.document(result, vectors=vectors, attention=attention, layers=layers, heads=heads)
            if fmt == "jsonl":
                out.stream(itertools.chain(data.iter_json(obj), ["\n"]))
            elif single:
                out.stream(itertools.chain(data.iter_json(obj, indent=2), ["\n"]))
            else:
                out.stream(itertools.chain(["[\n" if count == 0 else ",\n"], data.iter_json(obj, indent=2)))
        out.stdout.flush()
        if kept is not None:
            kept.append(result)
        count += 1
        out.done = count
    if fmt == "json" and not single:
        out.data("\n]\n" if count else "[]\n")
    if count == 0:
        out.warn("no texts were given (stdin was empty)")


Scheme = Enum("Scheme", {name: name for name in ANALYTIC_SCHEMES}, type=str)  # type: ignore[misc]


class Metric(str, Enum):
    dot = "dot"
    cosine = "cosine"


@app.command()
@handle_errors
def positions(
    ctx: typer.Context,
    model: ModelOpt = None,
    scheme: Annotated[
        Optional[Scheme],
        typer.Option("--scheme", metavar=SCHEME_METAVAR, help="Analyse an analytic scheme; no weights."),
    ] = None,
    length: Annotated[
        Optional[int],
        number_option(
            "--length", low=2, high=MAX_LENGTH, metavar="N", help="Positions to compare (default min(128, max))."
        ),
    ] = None,
    metric: Annotated[Metric, typer.Option("--metric", metavar="dot|cosine", help="Proximity Φ.")] = Metric.dot,
    window: Annotated[
        int, number_option("--window", low=1, high=MAX_LENGTH, metavar="W", help="Window of local monotonicity.")
    ] = 16,
    dim: Annotated[
        Optional[int],
        number_option("--dim", low=2, high=8192, metavar="D", help="Sinusoidal/rotary dimension [default: 512/64]."),
    ] = None,
    base: Annotated[
        Optional[float],
        number_option(
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
        number_option("--factor", low=1, high=10_000, metavar="F", help="Rotary scaling factor.", kind=float),
    ] = None,
    original_max: Annotated[
        Optional[int],
        number_option(
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
        number_option(
            "--at-length",
            low=2,
            high=2**24,
            metavar="N",
            help="Rotary: audit and report the frequencies used for a text of N positions [default: extended max].",
        ),
    ] = None,
    heads: Annotated[
        Optional[int], number_option("--heads", low=1, high=1024, metavar="H", help="ALiBi heads [default: 8].")
    ] = None,
    buckets: Annotated[
        Optional[int],
        number_option("--buckets", low=2, high=MAX_LENGTH, metavar="B", help="T5 relative buckets [default: 32]."),
    ] = None,
    max_distance: Annotated[
        Optional[int],
        number_option("--max-distance", low=1, high=10**7, metavar="D", help="T5 max distance [default: 128]."),
    ] = None,
    bidirectional: Annotated[
        Optional[bool],
        typer.Option("--bidirectional/--causal", help="T5 buckets: encoder or decoder [default: bidirectional]."),
    ] = None,
    probe: Annotated[
        Optional[str], typer.Option("--probe", metavar="identical-word", help="Layer-1 attention on a repeated word.")
    ] = None,
    words: Annotated[
        int, number_option("--words", low=1, high=1000, metavar="K", help="Random words averaged by the probe.")
    ] = 30,
    seed: Annotated[
        int, number_option("--seed", low=0, high=2**32 - 1, metavar="S", help="Seed of the probe's word choice.")
    ] = 0,
    matrix: Annotated[bool, typer.Option("--matrix", help="Add the matrix Φ to JSON.")] = False,
    vectors: Annotated[
        bool,
        typer.Option(
            "--vectors", help="Add the scheme's tables to JSON: rotary inv_freq, the sinusoidal table, DeBERTa buckets."
        ),
    ] = False,
    plot: Annotated[
        Optional[str],
        typer.Option("--plot", metavar="phi|bias", help="Draw Φ as a heatmap, or the bias per head (needs -o)."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="FILE|FOLDER",
            help="Picture file (.png/.svg/.pdf; without --plot: Φ), a folder (Φ, and the bias where the scheme has "
            "one), or an interactive report (.html).",
        ),
    ] = None,
    dpi: DpiOpt = 150,
    output_format: TableJsonFormatOpt = Format.table,
    json_flag: JsonOpt = False,
    device: DeviceOpt = Device.cpu,
    trust_remote_code: TrustOpt = False,
    spectrum: Annotated[
        Optional[Path],
        typer.Option("--spectrum", metavar="FILE|-", help="Rotary: per-pair query/key norms over a corpus (-m)."),
    ] = None,
) -> None:
    """How a model (or an analytic scheme) encodes position: proximity Φ and its properties (Wang et al. 2021).

    Example: posemb positions --scheme rotary --dim 64 --base 10000
    """
    from . import positions as compute

    out: Output = ctx.obj
    fmt = out.format("positions", output_format.value, json_flag, TABLE_JSON, "table")
    if spectrum is not None:  # issue 21: posemb_cli/spectrum.py computes, render/spectrum_output.py renders
        from . import spectrum as measure
        from .models import load
        from .render.spectrum_output import emit

        if model is None:
            raise PosembUsageError("--spectrum needs a rotary model: give -m MODEL")
        if output is not None:
            Output.picture_path(output, report=True)
        loaded = load(model, device=device.value, trust_remote_code=trust_remote_code)
        return emit(out, measure.spectrum(loaded, str(spectrum)), fmt, output, dpi)
    if vectors and fmt != "json":
        raise PosembUsageError("--vectors adds the scheme's tables to JSON: use it with --json")
    if plot is not None:
        if plot not in ("phi", "bias"):
            raise PosembUsageError(f"--plot {plot}: positions draws --plot phi or --plot bias")
        if output is None:
            raise PosembUsageError(f"--plot {plot} needs -o FILE")
    target = None if output is None else _output_target(output)
    if output is not None and target == "folder":
        if plot is not None:
            raise PosembUsageError(f"--plot {plot} draws one picture: give -o FILE.png (a folder gets every picture)")
        from .render.figures.toolkit import folder_paths

        folder_paths(output, ["phi"])
    elif output is not None:
        Output.picture_path(output, report=True)
        plot = plot or ("phi" if target == "picture" else None)
    if scheme is not None:
        if model is not None or probe is not None:
            raise PosembUsageError("--scheme analyses a formula; it takes no --model and no --probe")
        from .schemes.rotary import parse_rope_params

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
        from .models import load

        loaded = load(model, device=device.value, trust_remote_code=trust_remote_code)
        analysis = compute.analyse_model(
            loaded, length, metric=metric.value, window=window, probe=probe, words=words, seed=seed, at_length=at_length
        )
    if vectors:
        compute.check_export_size(analysis)
    for warning in analysis.warnings:
        out.warn(warning)
    if fmt == "json":
        out.json(analysis.to_json(matrix=matrix, vectors=vectors))
    else:
        from .render.positions_table import print_positions

        print_positions(out.console(), analysis)
    if output is not None and is_report(output):
        from .render.html import positions_report

        positions_report(output, analysis)
        out.info(f"Wrote {output}")
    elif output is not None:
        from .render.figures import positions as figures
        from .render.figures.toolkit import folder_paths

        kinds = ["phi"] + (["bias"] if analysis.bias is not None else [])
        jobs = folder_paths(output, kinds) if target == "folder" else [(plot or "phi", output)]
        for kind, path in jobs:
            draw = figures.plot_phi if kind == "phi" else figures.plot_bias
            for warning in draw(analysis, path, dpi=dpi).warnings:
                out.warn(warning)
            out.info(f"Wrote {path}")


@app.command()
@handle_errors
def models(
    ctx: typer.Context,
    output_format: FormatOpt = Format.table,
    json_flag: JsonOpt = False,
) -> None:
    """The models usable here (bundled and in the local Hugging Face cache) and their position schemes."""
    from .models import list_models
    from .render.listing import render_rows

    out: Output = ctx.obj
    fmt = out.format("models", output_format.value, json_flag, FORMATS, "table")
    columns = ["name", "source", "family", "type", "position_scheme", "layers", "max_positions", "attention"]
    columns.append("size_bytes")
    rows, warnings = list_models()
    for warning in warnings:
        out.warn(warning)
    render_rows(out, rows, fmt, title="models available offline", columns=None if fmt != "table" else columns)


@app.command()
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
            help=f"A model to compare; repeat, at least two. scheme:{SCHEME_METAVAR} adds an analytic "
            "position scheme (position section only).",
        ),
    ] = None,
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            "--corpus", metavar="FILE", help=f"Average over the lines of this UTF-8 file (`-`: stdin; {LINE_LIMIT})."
        ),
    ] = None,
    max_lines: MaxLinesOpt = 1000,
    words: Annotated[
        bool,
        typer.Option(
            "--words",
            help="Merge subword tokens into words (attention summed over key pieces, averaged over query pieces).",
        ),
    ] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot",
            "--output",
            "-o",
            metavar="FILE|FOLDER",
            help="Also draw the comparison figure (.png/.svg/.pdf; a folder: FOLDER/compare.png), or write an "
            "interactive report (.html).",
        ),
    ] = None,
    dpi: DpiOpt = 150,
    font: Annotated[Optional[Path], typer.Option("--font", metavar="PATH", help="Font file for the labels.")] = None,
    output_format: TableJsonFormatOpt = Format.table,
    json_flag: JsonOpt = False,
    batch_size: BatchSizeOpt = 16,
    encoding_errors: Annotated[
        EncodingErrors,
        typer.Option("--encoding-errors", metavar="strict|replace", help="Invalid UTF-8 in TEXT or --corpus."),
    ] = EncodingErrors.strict,
    device: DeviceOpt = Device.cpu,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Two or more models side by side: tokenization, position encodings, attention per layer, layer similarity (CKA).

    Example: posemb compare "The cat sat on the mat." -m sentence-transformers/all-MiniLM-L6-v2 -m scheme:rotary
    """
    from .compare import compare as run_compare
    from .compare import parse_specs
    from .lines import argument_text, read_corpus

    out: Output = ctx.obj
    fmt = out.format("compare", output_format.value, json_flag, TABLE_JSON, "table")
    parse_specs(model or [])
    if (text is None) == (corpus is None):
        raise PosembUsageError("give one TEXT or --corpus FILE (not both)")
    plot = _folder_picture(plot, "compare")
    if plot is not None:
        _check_font(font)
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
        on_progress=(lambda m: out.info(f"Running {m}")) if out.progress else None,
    )
    for report in comparison.models:  # a warning about one of several models names it
        for warning in report.warnings:
            out.warn(warning if report.name in warning else f"{report.name}: {warning}")
    for warning in comparison.warnings:
        out.warn(warning)
    if fmt == "json":
        out.json(comparison.to_json())
    else:
        from .render.compare_table import print_comparison

        print_comparison(out.console(), comparison)
    if plot is not None and is_report(plot):
        from .render.html import compare_report

        for warning in compare_report(plot, comparison, font=font):
            out.warn(warning)
        out.info(f"Wrote {plot}")
    elif plot is not None:
        from .render.figures.compare import plot_comparison

        data = plot_comparison(comparison, plot, dpi=dpi, font=font)
        for warning in data.warnings:
            out.warn(warning)
        out.info(f"Wrote {plot}")


@app.command()
@handle_errors
def stats(
    ctx: typer.Context,
    corpus: Annotated[
        str, typer.Argument(metavar="FILE|-", help=f"Text file, one text per line ({LINE_LIMIT}); `-` reads stdin.")
    ],
    model: ModelOpt = None,
    pairs: Annotated[bool, typer.Option("--pairs", help="Each line is a sentence pair 'A<TAB>B'.")] = False,
    batch_size: Annotated[
        int,
        number_option(
            "--batch-size", low=1, high=4096, metavar="N", help="Texts per forward pass (bucketed by length)."
        ),
    ] = 32,
    max_length: Annotated[
        Optional[int],
        number_option(
            "--max-length", low=2, high=10**7, metavar="N", help="Cut texts to N tokens (default: the model's maximum)."
        ),
    ] = None,
    sink_k: Annotated[
        int,
        number_option("--sink-k", low=1, high=MAX_LENGTH, metavar="K", help="sink = attention on the first K tokens."),
    ] = 4,
    sink_threshold: Annotated[
        float,
        number_option(
            "--sink-threshold",
            low=0,
            high=1,
            metavar="E",
            help="sink_rate: a head sinks in a text when its mean attention on key 0 exceeds E (Gu et al.).",
            kind=float,
        ),
    ] = 0.3,
    bins: Annotated[
        int, number_option("--bins", low=1, high=1000, metavar="B", help="key_profile: B equal bins of each text.")
    ] = 10,
    profile: Annotated[
        Optional[Profile],
        typer.Option(
            "--profile", metavar="distance|keys", help="With -o: draw distance_profile or key_profile instead."
        ),
    ] = None,
    memory: MemoryOpt = "1GiB",
    sort: SortOpt = None,
    reverse: ReverseOpt = False,
    plot: StatsPlotOpt = None,
    output_format: StatsFormatOpt = None,
    json_flag: JsonOpt = False,
    quiet: QuietOpt = False,
    encoding_errors: Annotated[
        EncodingErrors, typer.Option("--encoding-errors", metavar="strict|replace", help="Invalid UTF-8 in the corpus.")
    ] = EncodingErrors.strict,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            metavar="I/N",
            help="Only the blocks of 1024 lines (block b: lines 1024b.., from 0, blanks counted) with b mod N = I.",
        ),
    ] = None,
    partial: Annotated[
        Optional[Path],
        typer.Option(
            "--partial",
            metavar="FILE.npz",
            help="Write the exact sums for `posemb stats merge` (then nothing on stdout unless --format/--json).",
        ),
    ] = None,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="Save progress there (and on Ctrl-C or SIGTERM); if FILE exists, go on from it.",
        ),
    ] = None,
    checkpoint_texts: Annotated[
        int,
        number_option(
            "--checkpoint-texts", low=1, high=10**9, metavar="N", help="Save the checkpoint every N texts ..."
        ),
    ] = 1000,
    checkpoint_seconds: Annotated[
        float,
        number_option(
            "--checkpoint-seconds", low=0, high=10**7, metavar="T", help="... or every T seconds.", kind=float
        ),
    ] = 60.0,
    device: DeviceOpt = Device.auto,
    dtype: DtypeOpt = Dtype.float32,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Per-head attention statistics over a corpus: special tokens, neighbours, entropy, distance, sink, pattern.

    Big corpora: run shards anywhere (--shard I/N --partial FILE) and merge them with `posemb stats merge PARTS...`
    into the numbers of one run (see `posemb stats merge --help`); --checkpoint FILE makes a run resumable (run the
    same command again after a crash or Ctrl-C).

    Example: posemb stats corpus.txt --format csv --plot heads.png
    """
    from . import stats as compute
    from .lines import check_corpus, count_lines
    from .output import check_writable

    out: Output = ctx.obj
    out.quiet = quiet
    default = None if partial is not None else "table"  # --partial alone prints nothing on stdout
    fmt = out.format("stats", output_format and output_format.value, json_flag, ("table", "json", "csv"), default)
    compute.check_sort_column(sort, pairs)
    piece = compute.Shard.parse("0/1" if shard is None else shard)
    budget = _memory(memory)
    if sink_threshold >= 1:
        raise PosembUsageError(f"--sink-threshold {sink_threshold}: give a number from 0 up to (not including) 1")
    if profile is not None and plot is None:
        raise PosembUsageError(f"--profile {profile.value} draws a picture: give its file with -o FILE.png")
    if profile is not None and plot is not None:
        Output.picture_path(plot, report=False)
    plot = _folder_picture(plot, "stats")
    for path in (partial, checkpoint):
        if path is not None:
            check_writable(path)
    check_corpus(corpus)  # a missing corpus fails before the model loads
    if checkpoint is not None and checkpoint.exists():
        done = compute.read_partial(checkpoint).counts["texts"]
        out.info(f"Going on from checkpoint {checkpoint} ({done} text(s) done)")
    from .models import load

    loaded = load(model, device=device.value, trust_remote_code=trust_remote_code, dtype=dtype.value)
    total = count_lines(corpus, piece) if out.progress and corpus != "-" else None
    out.done = 0
    if checkpoint is not None:
        out.saved = f"checkpoint {checkpoint} saved: run the same command to go on from there."
    one_text = total == 1  # one long text: a bar over its layers instead of one over texts
    bar: Any = out.layer_bar("stats", loaded.info.layers) if one_text else out.progress_bar("stats", total)
    with bar as progress, _terminate_as_interrupt(checkpoint is not None):
        on_layer = progress if one_text else None

        def on_batch(done: int) -> None:
            out.done = done
            if not one_text and progress is not None:
                progress(done)

        result = compute.run_shard(
            corpus,
            piece,
            model=loaded,
            pairs=pairs,
            batch_size=batch_size,
            max_length=max_length,
            sink_k=sink_k,
            encoding_errors=encoding_errors.value,
            partial=partial,
            checkpoint=checkpoint,
            checkpoint_texts=checkpoint_texts,
            checkpoint_seconds=checkpoint_seconds,
            on_batch=on_batch,
            fingerprint=False,  # run_shard fingerprints the model anyway when it saves a partial or checkpoint
            sink_threshold=sink_threshold,
            bins=bins,
            memory=budget,
            on_layer=on_layer,
        )
    from .runner import fallback_check

    for warning in fallback_check(loaded):
        out.warn(warning)
    if profile is not None:
        _print_stats(out, result.stats(), fmt, sort, reverse, None)
        _draw_profile(out, result.stats(), profile.value, plot)
    else:
        _print_stats(out, result.stats(), fmt, sort, reverse, plot)
    if partial is not None:
        out.info(f"Wrote {partial}")


@app.command("stats merge")
@handle_errors
def stats_merge(
    ctx: typer.Context,
    parts: Annotated[
        list[Path],
        typer.Argument(metavar="PARTS...", help="Files of `posemb stats --partial` (or of a finished --checkpoint)."),
    ],
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Merge even if shards are missing; the output names them.")
    ] = False,
    partial: Annotated[
        Optional[Path],
        typer.Option("--partial", metavar="FILE.npz", help="Also write the merged sums (stdout: only if asked)."),
    ] = None,
    sort: SortOpt = None,
    reverse: ReverseOpt = False,
    plot: StatsPlotOpt = None,
    output_format: StatsFormatOpt = None,
    json_flag: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Combine the partials of `posemb stats FILE --shard I/N --partial PART` into the numbers of one run.

    Pieces of another model, option, posemb version or corpus, a shard given twice or a missing one are errors
    (exit 1) naming the difference; --allow-missing merges what is there and names the missing shards.

    Example: posemb stats merge part-*.npz --format json > heads.json
    """
    from .output import check_writable
    from .partials import merge
    from .stats import check_sort_column

    out: Output = ctx.obj
    out.quiet = quiet
    default = None if partial is not None else "table"
    fmt = out.format("stats merge", output_format and output_format.value, json_flag, ("table", "json", "csv"), default)
    check_sort_column(sort, pairs=True)  # within/across: checked again once the pieces say whether they are pairs
    plot = _folder_picture(plot, "stats")
    if partial is not None:
        check_writable(partial)
    merged = merge(parts, allow_missing=allow_missing)
    if partial is not None:
        merged.save(partial)
        out.info(f"Wrote {partial}")
    result = merged.stats()
    missing = merged.missing_shards()
    if missing:
        shown = ", ".join(map(str, missing))
        plural = "s" if len(missing) > 1 else ""
        result.warnings.append(f"missing shard{plural} {shown} of {merged.shard_count}: the numbers leave it out")
    _print_stats(out, result, fmt, sort, reverse, plot)


def _folder_picture(plot: Optional[Path], name: str) -> Optional[Path]:
    """The file `-o` names for a command with one picture (a folder: FOLDER/NAME.png), checked before any work."""
    if plot is not None and _output_target(plot) == "folder":
        from .render.figures.toolkit import folder_paths

        plot = folder_paths(plot, [name])[0][1]
    if plot is not None:
        Output.picture_path(plot, report=True)
    return plot


def _print_stats(out: Output, result: Any, fmt: str, sort: Optional[str], reverse: bool, plot: Optional[Path]) -> None:
    """Warnings on stderr, the heads on stdout (unless fmt is ""), and the heatmaps."""
    from .render.stats_output import print_stats

    for warning in result.warnings:
        out.warn(warning)
    if fmt:
        print_stats(out, result, fmt, sort, reverse)
    if plot is not None and result.texts and is_report(plot):
        from .render.html import stats_report

        stats_report(plot, result, sort, reverse)
        out.info(f"Wrote {plot}")
    elif plot is not None and result.texts:
        from .render.figures.stats import plot_stats

        plot_stats(result, plot)
        out.info(f"Wrote {plot}")
    elif plot is not None:
        raise PosembError(f"{plot} was not written: there were no texts to draw")


def _draw_profile(out: Output, result: Any, kind: str, path: Any) -> None:
    if not result.texts or result.key_profile is None:
        out.warn(f"{path} was not written: there were no texts to draw")
        return
    from .render.figures.profiles import plot_profile

    plot_profile(result, kind, path)
    out.info(f"Wrote {path}")


@contextlib.contextmanager
def _terminate_as_interrupt(active: bool) -> Iterator[None]:
    """SIGTERM (what a scheduler such as Slurm sends at the time limit) stops the run as Ctrl-C does, so that the
    checkpoint is saved; only with --checkpoint, and only where Python lets signals be handled (main thread)."""
    import signal
    import threading

    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    interrupt.posemb_interrupt = True  # type: ignore[attr-defined]  # a file being written meanwhile keeps this rule
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class AblatePlot(str, Enum):
    similarity = "similarity"
    attention = "attention"


@app.command()
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
    seed: Annotated[
        int, number_option("--seed", low=0, high=2**32 - 1, metavar="S", help="Seed of shuffle and permute-tokens.")
    ] = 0,
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            "--corpus", metavar="FILE", help=f"Also read texts from this file, one per line, {LINE_LIMIT} (`-`: stdin)."
        ),
    ] = None,
    max_lines: MaxLinesOpt = 1000,
    corpus_mean: Annotated[
        bool, typer.Option("--corpus-mean", help="One result for all texts, every token weighing the same.")
    ] = False,
    model: ModelOpt = None,
    output_format: Annotated[
        Optional[Format], typer.Option("--format", "-f", metavar="table|json", help="Output format [default: table].")
    ] = None,
    json_flag: JsonOpt = False,
    plot: Annotated[
        Optional[AblatePlot],
        typer.Option("--plot", metavar="similarity|attention", help="Draw one line per mode against layer (needs -o)."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="FILE|FOLDER",
            help="Picture file (.png/.svg/.pdf; without --plot: similarity), a folder (similarity and attention), "
            "or an interactive report (.html; without --plot: both pictures).",
        ),
    ] = None,
    dpi: DpiOpt = 150,
    font: Annotated[Optional[Path], typer.Option("--font", metavar="PATH", help="Font file for the labels.")] = None,
    no_truncate: Annotated[
        bool, typer.Option("--no-truncate", help="Error instead of cutting texts longer than the model's positions.")
    ] = False,
    encoding_errors: Annotated[
        EncodingErrors,
        typer.Option("--encoding-errors", metavar="strict|replace", help="What to do with invalid UTF-8 input."),
    ] = EncodingErrors.strict,
    device: DeviceOpt = Device.cpu,
    trust_remote_code: TrustOpt = False,
) -> None:
    """What position information does inside a model: alter the positions, measure the change layer by layer.

    Example: posemb ablate "the cat sat on the mat" --mode zero --mode shift:7 --json
    """
    from .ablate import ablate_texts, applicable_modes, parse_modes

    out: Output = ctx.obj
    target = None if output is None else _output_target(output)
    report = target == "report"
    if target == "folder" and plot is not None:
        raise PosembUsageError(f"--plot {plot.value} draws one picture: give -o FILE.png (a folder gets both)")
    default = None if plot or output else "table"  # --plot or -o alone print nothing on stdout
    fmt = out.format("ablate", output_format and output_format.value, json_flag, ("table", "json"), default)
    modes = parse_modes(mode)
    texts = texts or []
    if not texts and corpus is None:
        raise PosembUsageError("give one or more TEXT arguments, `-` for stdin, or --corpus FILE")
    if plot is not None or output is not None:
        if output is None:
            raise PosembUsageError(f"--plot {plot.value if plot else ''} needs -o FILE")
        if not corpus_mean and (len(texts) != 1 or texts[0] == "-" or corpus is not None):
            raise PosembUsageError("-o draws one result: give exactly one TEXT, or add --corpus-mean")
        if target == "folder":
            from .render.figures.toolkit import folder_paths

            folder_paths(output, ["similarity"])
        else:
            Output.picture_path(output, report=True)
        _check_font(font)

    from .lines import read_corpus, read_texts
    from .models import load

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
    with out.progress_bar("ablate", len(lines) + len(texts) if "-" not in texts else None) as advance:
        results = ablate_texts(
            loaded, source, modes, seed=seed, corpus_mean=corpus_mean, truncate=not no_truncate, on_text=advance
        )
        drawn = _render_ablations(out, results, fmt, single)
    if output is not None and drawn is None:
        raise PosembError(f"{output} was not written: there was no text to draw")
    if report and output is not None:
        from .render.html import ablate_report

        for warning in ablate_report(output, drawn, [plot.value] if plot else None, font=font):
            out.warn(warning)
        out.info(f"Wrote {output}")
    elif output is not None:
        from .render.ablate_table import attention_section
        from .render.figures.ablate import plot_ablation
        from .render.figures.toolkit import folder_paths

        kinds = ["similarity"] + (["attention"] if attention_section(drawn) is not None else [])
        jobs = folder_paths(output, kinds) if target == "folder" else [(plot.value if plot else "similarity", output)]
        for kind, path in jobs:
            for warning in plot_ablation(drawn, kind, path, dpi=dpi, font=font).warnings:
                out.warn(warning)
            out.info(f"Wrote {path}")


def _render_ablations(out: Output, results: Iterator[Any], fmt: str, single: bool) -> Any:
    """Each result as it is computed (a table, or a JSON object; several texts: a JSON array); returns the last."""
    import json

    from .render.ablate_table import print_ablation

    last, out.done = None, 0
    for result in results:
        for warning in result.warnings:
            out.warn(warning)
        if fmt == "table":
            print_ablation(out.console(), result)
        elif fmt == "json" and single:
            out.json(result.to_json())
        elif fmt == "json":
            out.data(("[\n" if out.done == 0 else ",\n") + json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        last = result
        out.done += 1
    if fmt == "json" and not single:
        out.data("\n]\n" if out.done else "[]\n")
    if last is None or not last.texts:
        out.warn("no texts were given (every text was empty)")
        return None
    return last


@app.command()
@handle_errors
def extrapolate(
    ctx: typer.Context,
    text_file: Annotated[Path, typer.Argument(metavar="FILE", help="The text to read in windows (`-`: stdin).")],
    model: ModelOpt = None,
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
        number_option(
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
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Loss against position and perplexity against length, one line per variant (.png/.svg/.pdf), or an "
            "interactive report (.html).",
        ),
    ] = None,
    dpi: DpiOpt = 150,
    output_format: Annotated[
        Optional[Format],
        typer.Option("--format", "-f", metavar="table|json|csv", help="Output format [default: table]."),
    ] = None,
    json_flag: JsonOpt = False,
    dtype: DtypeOpt = Dtype.float32,
    device: DeviceOpt = Device.cpu,
    quiet: QuietOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Does a causal LM's position encoding hold beyond its training length? Loss by position under each variant.

    Example: posemb extrapolate book.txt -m ./model --variant as-trained --variant yarn:4 --lengths 2k,8k
    """
    from . import extrapolate as compute

    out: Output = ctx.obj
    out.quiet = out.quiet or quiet
    fmt = out.format("extrapolate", output_format and output_format.value, json_flag, ("table", "json", "csv"), "table")
    variants = [compute.parse_variant(v) for v in variant or []]
    chosen = compute.parse_lengths(lengths) if lengths else None
    spacing = compute.parse_bins(bins)
    if output is not None:
        Output.picture_path(output, report=True)
    from .lines import read_document
    from .schemes.rotary import parse_rope_params

    if model is None:
        raise PosembUsageError(
            "extrapolate needs a causal language model: give one with -m (the bundled model is BERT)"
        )
    text, source = read_document(str(text_file))
    loaded = compute.load_causal(model, device.value, dtype.value, trust_remote_code)
    plan = compute.prepare(loaded, text, source, variants, chosen, stride, parse_rope_params(rope_param))
    with out.progress_bar("extrapolate", plan.windows, unit="windows") as advance:
        result = compute.extrapolate(loaded, plan, spacing, advance)
    for warning in result.warnings:
        out.warn(warning)
    from .render import extrapolate_output as render

    if fmt == "json":
        out.json(result.to_json())
    elif fmt == "csv":
        out.data(render.csv_text(result))
    else:
        render.print_extrapolation(out.console(), result)
    if output is not None and is_report(output):
        from .render.html import extrapolate_report

        for warning in extrapolate_report(output, result):
            out.warn(warning)
        out.info(f"Wrote {output}")
    elif output is not None:
        from .render.figures.extrapolate import plot_extrapolation

        for warning in plot_extrapolation(result, output, dpi=dpi).warnings:
            out.warn(warning)
        out.info(f"Wrote {output}")


@app.command()
@handle_errors
def serve(
    ctx: typer.Context,
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            "-m",
            metavar="NAME|FOLDER",
            help="Load this model at start (repeat for more); others are kept once a command has used them.",
        ),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background; return once it answers.")] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Show the running server: pid, uptime, models, memory, requests, log.")
    ] = False,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the running server (it finishes the commands it is running).")
    ] = False,
    max_models: Annotated[
        int,
        number_option(
            "--max-models", low=1, high=64, metavar="N", help="Models kept; the least recently used goes first."
        ),
    ] = 2,
    idle_timeout: Annotated[
        float,
        number_option(
            "--idle-timeout",
            low=0,
            high=10**6,
            metavar="MINUTES",
            help="Stop after this long without a command (0: never).",
            kind=float,
        ),
    ] = 15,
    output_format: TableJsonFormatOpt = Format.table,
    json_flag: JsonOpt = False,
) -> None:
    """Keep models loaded in a background server: every later posemb command is answered by it, much faster.

    Example: posemb serve --detach -m sentence-transformers/all-MiniLM-L6-v2
    """
    from .server import client, protocol

    out: Output = ctx.obj
    fmt = out.format("serve", output_format.value, json_flag, TABLE_JSON, "table")
    if status + stop + detach > 1:
        raise PosembUsageError("give at most one of --status, --stop and --detach")
    try:
        if status or stop:
            info = client.status() if status else client.stop()
            if info is None:
                raise PosembError("no posemb server is running")
            if status:
                from .render.serve_status import print_status

                print_status(out, info, fmt)
            else:
                out.info(f"Stopped the posemb server (pid {info['pid']}) after {info['requests_served']} command(s)")
        elif detach:
            options = [*(f"--model={name}" for name in model or []), f"--max-models={max_models}"]
            info = client.start_detached([*options, f"--idle-timeout={idle_timeout}"])
            out.info(f"posemb server running: pid {info['pid']}, socket {info['socket']}, log {info['log']}")
        else:
            from .server.server import serve as run_server

            code = run_server(model or [], max_models, idle_timeout * 60, out.info)
            if code:
                raise typer.Exit(code)
    except (protocol.UnsafeFolder, RuntimeError, TimeoutError) as exc:
        raise PosembError(str(exc)) from None


def run() -> None:
    app()
