"""posemb command line: the app, its callback and its commands. Each command (cli/commands/) parses its options
(cli/options.py: every shared option once), calls one computation and hands the result to its `render.emit` entry
point; errors become one line (cli/errors.py). Nothing heavy is imported at module level (`posemb --help` never loads
torch, transformers, matplotlib, numpy).

Commands and where their work lives:
  inspect   -> core.inspect_texts
  positions -> positions.analyse_model / analyse_scheme (schemes/: one class per scheme)
  models    -> models.list_models
  compare   -> compare.compare
  stats     -> stats.run_shard (stats/run.py: shards, checkpoints; the partial file: partials.py)
  stats merge -> partials.merge
  ablate    -> ablate.ablate_texts
  extrapolate -> extrapolate.extrapolate
  serve     -> server/ (forks a child per command that runs this app)
  their output: render/emit.py (stdout, one function per command) and render/pictures.py (-o FILE|FOLDER|FILE.html)
Every command goes first to the per-user `posemb serve` (server/client.py, called from __main__.py before this package
is imported; the first command starts it); without one, it runs here. No `from __future__ import annotations` in the
commands: Typer would evaluate every command's string annotations at each start, which costs `posemb --help` ~25 ms.
Output (stdout/stderr, console width, formats, output paths) goes through one `output.Output`, the context object.
"""

from collections.abc import Callable
from typing import Annotated

import typer

from .._version import __version__
from ..output import Output
from .commands.ablate import ablate
from .commands.compare import compare
from .commands.extrapolate import extrapolate
from .commands.inspect import inspect
from .commands.models import models
from .commands.positions import positions
from .commands.serve import serve
from .commands.stats import stats, stats_merge
from .group import Commands

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


# The commands in the order --help lists them.
COMMANDS: dict[str, Callable[..., None]] = {
    "inspect": inspect,
    "positions": positions,
    "models": models,
    "compare": compare,
    "stats": stats,
    "stats merge": stats_merge,
    "ablate": ablate,
    "extrapolate": extrapolate,
    "serve": serve,
}
for name, command in COMMANDS.items():
    app.command(None if name == command.__name__ else name)(command)


def run() -> None:
    app()
