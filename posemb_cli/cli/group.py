"""posemb's command group and argument class: how `posemb stats merge`, a bare `posemb`, a bad option value and the
usage lines read."""

from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup


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
