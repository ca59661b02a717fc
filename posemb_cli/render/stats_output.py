"""`posemb stats` output: the heads as a table, one JSON object or CSV on stdout; the progress bar on stderr."""

from __future__ import annotations

from ..output import Output
from ..stats import CorpusStats
from .figures.labels import counted
from .listing import render_rows


def print_stats(out: Output, result: CorpusStats, fmt: str, sort: str | None = None, reverse: bool = False) -> None:
    """table | json | csv, rows in layer/head order or sorted by `sort` (descending with `reverse`)."""
    heads = result.sorted_heads(sort, reverse)
    if fmt == "json":
        out.json({**result.to_json(), "heads": heads})
        return
    render_rows(out, heads, fmt, title=stats_title(result), columns=result.columns())


def stats_title(result: CorpusStats) -> str:
    """The heads table's title: what was read (`stats_source`) and what a row is."""
    return f"{stats_source(result)} · per head, means over all query rows"


def stats_source(result: CorpusStats) -> str:
    """Model, texts, tokens, and the shards a merged or sharded run holds."""
    title = f"{result.model.name} · {counted(result.texts, 'text')} · {counted(result.tokens, 'token')}"
    if result.shards is not None:
        held, count, missing = result.shards["indices"], result.shards["count"], result.shards["missing"]
        title += f" · shard{'s' if len(held) > 1 else ''} {','.join(map(str, held))} of {count}"
        title += f" (missing: {','.join(map(str, missing))})" if len(held) > 1 and missing else ""
    return title
