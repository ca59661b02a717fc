"""posemb models -> models.list_models; render/emit.py (listing.py)."""

from typing import Annotated, Optional

import typer

from ...output import Output
from .. import options as o
from ..errors import handle_errors

FormatOpt = Annotated[Optional[str], o.format_option("models", o.FORMATS)]


@handle_errors
def models(ctx: typer.Context, output_format: FormatOpt = "table", json_flag: o.JsonOpt = False) -> None:
    """The models usable here (bundled and in the local Hugging Face cache) and their position schemes."""
    from ...models import list_models
    from ...render import emit

    out: Output = ctx.obj
    fmt = out.format("models", output_format, json_flag, o.FORMATS, "table")
    rows, warnings = list_models()
    emit.models(out, rows, warnings, fmt)
