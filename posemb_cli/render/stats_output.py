"""`posemb stats` output: the heads as a table, one JSON object or CSV on stdout; the progress bar on stderr."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from ..output import Output
from ..stats import CorpusStats
from .listing import render_rows


def print_stats(out: Output, result: CorpusStats, fmt: str, sort: str | None = None, reverse: bool = False) -> None:
    """table | json | csv, rows in layer/head order or sorted by `sort` (descending with `reverse`)."""
    heads = result.sorted_heads(sort, reverse)
    if fmt == "json":
        out.json({**result.to_json(), "heads": heads})
        return
    info = result.model
    title = f"{info.name} · {result.texts} texts · {result.tokens} tokens · per head, means over all query rows"
    render_rows(out, heads, fmt, title=title, columns=result.columns())


@contextlib.contextmanager
def progress_bar(total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (texts, texts/s, ETA when the total is known); yields update(texts_done).

    Disabled: yields a no-op, so callers need no branches."""
    if not enabled:
        yield lambda done: None
        return
    from rich import progress as rp
    from rich.console import Console

    count = rp.MofNCompleteColumn() if total else rp.TextColumn("{task.completed} texts")
    columns = [rp.TextColumn("stats"), rp.BarColumn(), count]
    columns += [rp.TextColumn("{task.fields[rate]} texts/s"), rp.TimeElapsedColumn()]
    columns += [rp.TextColumn("ETA"), rp.TimeRemainingColumn()] if total else []
    start = time.perf_counter()
    with rp.Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("stats", total=total, rate="-")

        def update(done: int) -> None:
            elapsed = time.perf_counter() - start
            progress.update(task, completed=done, rate=f"{done / elapsed:.0f}" if elapsed > 0 else "-")

        yield update
