"""Every option and option type the commands share, declared once: the value types (Format, Device, Dtype, ...),
the numeric parser (`Bounded`, `number_option`), `format_option` (the --format a command accepts, in its --help and in
its parse), `picture_options` (--plot KIND, -o FILE, --dpi: the same meaning in every command) and the checks of a
picture's file that run before any model loads. No `from __future__ import annotations` in the commands: their
annotations are these objects, which Typer reads without evaluating strings (`posemb --help` stays fast)."""

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

import typer
from typer._click.exceptions import ClickException

from ..backend import DEFAULT_MEMORY
from ..errors import ExitCode, PosembError, PosembUsageError
from ..output import PICTURE_SUFFIXES, Output, is_report
from ..schemes import ANALYTIC as ANALYTIC_SCHEMES


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


FORMATS = tuple(f.value for f in Format)
TABLE_JSON = ("table", "json")
TABLE_JSON_CSV = ("table", "json", "csv")
SCHEME_METAVAR = "|".join(ANALYTIC_SCHEMES)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class EncodingErrors(str, Enum):
    strict = "strict"
    substitute = "replace"  # not `replace`: that name is str.replace


class Profile(str, Enum):
    distance = "distance"
    keys = "keys"


class Metric(str, Enum):
    dot = "dot"
    cosine = "cosine"


Scheme = Enum("Scheme", {name: name for name in ANALYTIC_SCHEMES}, type=str)  # type: ignore[misc]

# The picture kinds of each command's --plot (the first is what -o FILE alone draws, except where said).
INSPECT_PLOTS = ("attention", "positions", "embeddings", "all")
POSITIONS_PLOTS = ("phi", "bias")
COMPARE_PLOTS = ("comparison",)
STATS_PLOTS = ("heads", "distance", "keys")
ABLATE_PLOTS = ("similarity", "attention")


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


class Refused(ClickException):
    """A value the command does not take, said in one line (`Error: ...`, exit 2) without Click's usage lines."""

    exit_code = int(ExitCode.USAGE)


class FormatChoice:
    """The parser of a command's --format: one of the formats it prints, or a one-line usage error that names them."""

    def __init__(self, command: str, formats: tuple[str, ...]) -> None:
        self.command, self.formats = command, formats

    def __call__(self, value: Any) -> str:
        try:
            return Output.format(self.command, str(value), False, self.formats, None)
        except PosembUsageError as exc:
            raise Refused(str(exc)) from None


def format_option(command: str, formats: tuple[str, ...], help: str = "Output format on stdout.") -> Any:
    """`--format/-f` of `command` (declare it `Annotated[Optional[str], format_option(...)]`): --help lists exactly
    `formats`, and any other value is refused while parsing."""
    return typer.Option("--format", "-f", metavar="|".join(formats), parser=FormatChoice(command, formats), help=help)


class PlotChoice:
    """The parser of --plot: one of the command's kinds (Click's usage error otherwise). `path_too`: any other value
    passes, for the 0.4 spelling `--plot FILE` of compare and stats (see `plot_and_file`)."""

    def __init__(self, kinds: tuple[str, ...], path_too: bool) -> None:
        self.kinds, self.path_too = kinds, path_too

    def __call__(self, value: Any) -> str:
        if value in self.kinds or self.path_too:
            return str(value)
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, self.kinds))}.")


class PictureOptions(NamedTuple):
    """Declare them `Annotated[Optional[str], P.plot]`, `Annotated[Optional[Path], P.output]`, `Annotated[float,
    P.dpi]`."""

    plot: Any
    output: Any
    dpi: Any


def picture_options(
    kinds: tuple[str, ...],
    plot_help: str,
    output_help: str,
    output_metavar: str = "FILE|FOLDER",
    path_too: bool = False,
) -> PictureOptions:
    """--plot KIND (one of `kinds`), -o/--output FILE (the picture, a folder of pictures or the .html report) and
    --dpi, the same three in every command that draws."""
    plot = typer.Option("--plot", metavar="|".join(kinds), parser=PlotChoice(kinds, path_too), help=plot_help)
    output = typer.Option("--output", "-o", metavar=output_metavar, help=output_help)
    dpi = number_option("--dpi", low=1, high=600, metavar="DPI", help="Picture resolution.", kind=float)
    return PictureOptions(plot, output, dpi)


def plot_and_file(
    plot: Optional[str], output: Optional[Path], kinds: tuple[str, ...], out: Output
) -> tuple[Optional[str], Optional[Path]]:
    """(kind, file) of --plot and -o. posemb 0.4 spelled compare's and stats' file `--plot FILE`: a --plot value that
    is not a kind is that file, with a deprecation warning (for one version)."""
    if plot is None or plot in kinds:
        return plot, output
    if output is not None:
        raise PosembUsageError(f"--plot {plot}: --plot takes a kind ({'|'.join(kinds)}); give the file with -o FILE")
    out.warn(f"--plot FILE is deprecated (posemb 0.5.0): use -o {plot}; --plot takes a kind ({'|'.join(kinds)})")
    return None, Path(plot)


def output_target(output: Path) -> str:
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


def folder_picture(output: Optional[Path], name: str) -> Optional[Path]:
    """The file `-o` names for a command with one picture (a folder: FOLDER/NAME.png), checked before any work."""
    if output is not None and output_target(output) == "folder":
        from ..render.figures.toolkit import folder_paths

        output = folder_paths(output, [name])[0][1]
    if output is not None:
        Output.picture_path(output, report=True)
    return output


def check_font(font: Optional[Path]) -> None:
    if font is not None and not font.is_file():
        raise PosembError(f"--font {font}: no such font file")


def check_range(option: str, values: Optional[list[int]], count: int, what: str, model: str) -> None:
    for value in values or []:
        if not 0 <= value < count:
            raise PosembUsageError(f"{option} {value} is out of range: {model} has {what} 0..{count - 1}")


def memory(text: str) -> int:
    """--memory SIZE in bytes (512MB, 4GiB), or a usage error."""
    from ..backend import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise PosembUsageError(f"--memory: {exc}") from None


MAX_LENGTH = 4096  # positions in one Φ matrix (positions --length, inspect --positions): about 1 GB at 4096

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        metavar="NAME|FOLDER",
        help="Local model folder or Hugging Face hub id. Default: the bundled sentence-transformers/all-MiniLM-L6-v2.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Short for --format json.")]
DeviceOpt = Annotated[Device, typer.Option("--device", metavar="auto|cpu|cuda|mps", help="Where the model runs.")]
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        metavar="float32|bfloat16|float16",
        help="Precision of the weights and forward pass; half precision only where the device supports it.",
    ),
]
MEMORY = f"{DEFAULT_MEMORY >> 20}MiB"  # --memory's default: backend.DEFAULT_MEMORY, written as the user would
MemoryOpt = Annotated[
    str,
    typer.Option(
        "--memory",
        metavar="SIZE",
        help="Memory for the attention blocks beyond the forward pass, e.g. 512MB, 4GB (changes no number).",
    ),
]
SortOpt = Annotated[
    Optional[str], typer.Option("--sort", metavar="COLUMN", help="Order heads by a column, e.g. entropy.")
]
ReverseOpt = Annotated[bool, typer.Option("--reverse", help="Sort in descending order.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors: no progress bar, no warnings.")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a model's own Python code to run (off: never runs).")
]
FontOpt = Annotated[Optional[Path], typer.Option("--font", metavar="PATH", help="Font file for the labels.")]
NoTruncateOpt = Annotated[
    bool, typer.Option("--no-truncate", help="Error instead of cutting texts longer than the model's positions.")
]
BatchSizeOpt = Annotated[
    int, number_option("--batch-size", low=1, high=4096, metavar="N", help="Texts per forward pass.")
]
MaxLinesOpt = Annotated[
    int, number_option("--max-lines", low=1, high=10**6, metavar="N", help="Non-empty --corpus lines to read.")
]


def encoding_errors_option(help: str) -> Any:
    """--encoding-errors strict|replace (an `EncodingErrors`), with the command's own words for what it reads."""
    return typer.Option("--encoding-errors", metavar="strict|replace", help=help)


def seed_option(help: str) -> Any:
    return number_option("--seed", low=0, high=2**32 - 1, metavar="S", help=help)
