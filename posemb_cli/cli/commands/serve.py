"""posemb serve -> server/client.py (--status, --stop, --detach) or server/lifecycle.py (the server itself, which forks
a child per command that runs the app); render/emit.py (serve_status.py)."""

from typing import Annotated, Any, Optional

import typer

from ...errors import PosembError, PosembUsageError
from ...output import Output
from .. import options as o
from ..errors import handle_errors

FormatOpt = Annotated[Optional[str], o.format_option("serve", o.TABLE_JSON)]


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
        o.number_option(
            "--max-models", low=1, high=64, metavar="N", help="Models kept; the least recently used goes first."
        ),
    ] = 2,
    idle_timeout: Annotated[
        float,
        o.number_option(
            "--idle-timeout",
            low=0,
            high=10**6,
            metavar="MINUTES",
            help="Stop after this long without a command (0: never).",
            kind=float,
        ),
    ] = 15,
    output_format: FormatOpt = "table",
    json_flag: o.JsonOpt = False,
) -> None:
    """Keep models loaded in a background server: every later posemb command is answered by it, much faster.

    Example: posemb serve --detach -m sentence-transformers/all-MiniLM-L6-v2
    """
    from ...server import client, protocol

    out: Output = ctx.obj
    fmt = out.format("serve", output_format, json_flag, o.TABLE_JSON, "table")
    if status + stop + detach > 1:
        raise PosembUsageError("give at most one of --status, --stop and --detach")
    try:
        if status or stop:
            info = client.status() if status else client.stop()
            if info is None:
                raise PosembError("no posemb server is running")
            if status:
                from ...render import emit

                emit.serve_status(out, info, fmt)
            else:
                out.info(f"Stopped the posemb server (pid {info['pid']}) after {info['requests_served']} command(s)")
        elif detach:
            options = [*(f"--model={name}" for name in model or []), f"--max-models={max_models}"]
            info = client.start_detached([*options, f"--idle-timeout={idle_timeout}"])
            out.info(f"posemb server running: pid {info['pid']}, socket {info['socket']}, log {info['log']}")
        else:
            _run_server(ctx.find_root().command, out, model or [], max_models, idle_timeout)
    except (protocol.UnsafeFolder, RuntimeError, TimeoutError) as exc:
        raise PosembError(str(exc)) from None


def _run_server(app: Any, out: Output, models: list[str], max_models: int, idle_timeout: float) -> None:
    """The server in this process, until it stops; it is given the command line it runs in each child: this
    command's root (the app's click group, so that nothing under server/ imports the cli)."""
    from ...server.lifecycle import serve as run_server

    code = run_server(app, models, max_models, idle_timeout * 60, out.info)
    if code:
        raise typer.Exit(code)
