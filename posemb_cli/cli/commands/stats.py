"""posemb stats -> stats.run_shard (stats/run.py: shards, checkpoints; partials.py: the file); posemb stats merge
-> partials.merge; both render/emit.py (stats_output.py; pictures: figures/stats.py, figures/profiles.py, html.py)."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...errors import PosembUsageError
from ...lines import LINE_LIMIT
from ...output import Output
from .. import options as o
from ..errors import handle_errors, terminate_as_interrupt

PICTURE = o.picture_options(
    o.STATS_PLOTS,
    plot_help="What -o draws: heads (heatmaps layers x heads, one per statistic; the default), distance "
    "(distance_profile) or keys (key_profile). --plot FILE, posemb 0.4's spelling of -o FILE, still works in 0.5 "
    "(deprecated).",
    output_help="The picture (.png/.svg/.pdf; a folder: FOLDER/stats.png), or an interactive report (.html).",
    path_too=True,
)
FormatOpt = Annotated[
    Optional[str], o.format_option("stats", o.TABLE_JSON_CSV, "Output format on stdout [default: table].")
]
MergeFormatOpt = Annotated[
    Optional[str], o.format_option("stats merge", o.TABLE_JSON_CSV, "Output format on stdout [default: table].")
]
PlotOpt = Annotated[Optional[str], PICTURE.plot]
OutputOpt = Annotated[Optional[Path], PICTURE.output]
EncodingOpt = Annotated[o.EncodingErrors, o.encoding_errors_option("Invalid UTF-8 in the corpus.")]


@handle_errors
def stats(
    ctx: typer.Context,
    corpus: Annotated[
        str, typer.Argument(metavar="FILE|-", help=f"Text file, one text per line ({LINE_LIMIT}); `-` reads stdin.")
    ],
    model: o.ModelOpt = None,
    pairs: Annotated[bool, typer.Option("--pairs", help="Each line is a sentence pair 'A<TAB>B'.")] = False,
    batch_size: Annotated[
        int,
        o.number_option(
            "--batch-size", low=1, high=4096, metavar="N", help="Texts per forward pass (bucketed by length)."
        ),
    ] = 32,
    max_length: Annotated[
        Optional[int],
        o.number_option(
            "--max-length", low=2, high=10**7, metavar="N", help="Cut texts to N tokens (default: the model's maximum)."
        ),
    ] = None,
    sink_k: Annotated[
        int,
        o.number_option(
            "--sink-k", low=1, high=o.MAX_LENGTH, metavar="K", help="sink = attention on the first K tokens."
        ),
    ] = 4,
    sink_threshold: Annotated[
        float,
        o.number_option(
            "--sink-threshold",
            low=0,
            high=1,
            metavar="E",
            help="sink_rate: a head sinks in a text when its mean attention on key 0 exceeds E (Gu et al.).",
            kind=float,
        ),
    ] = 0.3,
    bins: Annotated[
        int, o.number_option("--bins", low=1, high=1000, metavar="B", help="key_profile: B equal bins of each text.")
    ] = 10,
    profile: Annotated[
        Optional[o.Profile],
        typer.Option("--profile", metavar="distance|keys", help="Same as --plot distance|keys (with -o)."),
    ] = None,
    memory: o.MemoryOpt = o.MEMORY,
    sort: o.SortOpt = None,
    reverse: o.ReverseOpt = False,
    plot: PlotOpt = None,
    output: OutputOpt = None,
    output_format: FormatOpt = None,
    json_flag: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
    encoding_errors: EncodingOpt = o.EncodingErrors.strict,
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
        o.number_option(
            "--checkpoint-texts", low=1, high=10**9, metavar="N", help="Save the checkpoint every N texts ..."
        ),
    ] = 1000,
    checkpoint_seconds: Annotated[
        float,
        o.number_option(
            "--checkpoint-seconds", low=0, high=10**7, metavar="T", help="... or every T seconds.", kind=float
        ),
    ] = 60.0,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.float32,
    trust_remote_code: o.TrustOpt = False,
) -> None:
    """Per-head attention statistics over a corpus: special tokens, neighbours, entropy, distance, sink, pattern.

    Big corpora: run shards anywhere (--shard I/N --partial FILE) and merge them with `posemb stats merge PARTS...`
    into the numbers of one run (see `posemb stats merge --help`); --checkpoint FILE makes a run resumable (run the
    same command again after a crash or Ctrl-C).

    Example: posemb stats corpus.txt --format csv -o heads.png
    """
    from ... import stats as compute
    from ...lines import check_corpus, count_lines
    from ...output import check_writable
    from ...render import emit

    out: Output = ctx.obj
    out.quiet = quiet
    default = None if partial is not None else "table"  # --partial alone prints nothing on stdout
    fmt = out.format("stats", output_format, json_flag, o.TABLE_JSON_CSV, default)
    compute.check_sort_column(sort, pairs)
    piece = compute.Shard.parse("0/1" if shard is None else shard)
    budget = o.memory(memory)
    if sink_threshold >= 1:
        raise PosembUsageError(f"--sink-threshold {sink_threshold}: give a number from 0 up to (not including) 1")
    picture = _picture(plot, output, profile, out)
    for path in (partial, checkpoint):
        if path is not None:
            check_writable(path)
    check_corpus(corpus)  # a missing corpus fails before the model loads
    if checkpoint is not None and checkpoint.exists():
        done = compute.read_partial(checkpoint).counts["texts"]
        out.info(f"Going on from checkpoint {checkpoint} ({done} text(s) done)")
    from ...models import load

    loaded = load(model, device=device.value, trust_remote_code=trust_remote_code, dtype=dtype.value)
    total = count_lines(corpus, piece.takes) if out.progress and corpus != "-" else None
    out.done = 0
    if checkpoint is not None:
        out.saved = f"checkpoint {checkpoint} saved: run the same command to go on from there."
    one_text = total == 1  # one long text: a bar over its layers instead of one over texts
    bar: Any = out.layer_bar("stats", loaded.info.layers) if one_text else out.progress_bar("stats", total)
    with bar as progress, terminate_as_interrupt(checkpoint is not None):
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
    from ...runner import fallback_check

    for warning in fallback_check(loaded):
        out.warn(warning)
    emit.stats(out, compute.partial_stats(result), fmt, sort, reverse, picture)
    if partial is not None:
        out.info(f"Wrote {partial}")


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
    sort: o.SortOpt = None,
    reverse: o.ReverseOpt = False,
    plot: PlotOpt = None,
    output: OutputOpt = None,
    output_format: MergeFormatOpt = None,
    json_flag: o.JsonOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Combine the partials of `posemb stats FILE --shard I/N --partial PART` into the numbers of one run.

    Pieces of another model, option, posemb version or corpus, a shard given twice or a missing one are errors
    (exit 1) naming the difference; --allow-missing merges what is there and names the missing shards.

    Example: posemb stats merge part-*.npz --format json > heads.json
    """
    from ... import stats as compute
    from ...output import check_writable
    from ...partials import merge
    from ...render import emit
    from ...stats import check_sort_column

    out: Output = ctx.obj
    out.quiet = quiet
    default = None if partial is not None else "table"
    fmt = out.format("stats merge", output_format, json_flag, o.TABLE_JSON_CSV, default)
    check_sort_column(sort, pairs=True)  # within/across: checked again once the pieces say whether they are pairs
    picture = _picture(plot, output, None, out)
    if partial is not None:
        check_writable(partial)
    merged = merge(parts, allow_missing=allow_missing)
    if partial is not None:
        merged.save(partial)
        out.info(f"Wrote {partial}")
    result = compute.partial_stats(merged)
    missing = merged.missing_shards()
    if missing:
        shown = ", ".join(map(str, missing))
        plural = "s" if len(missing) > 1 else ""
        result.warnings.append(f"missing shard{plural} {shown} of {merged.shard_count}: the numbers leave it out")
    emit.stats(out, result, fmt, sort, reverse, picture)


def _picture(plot: Optional[str], output: Optional[Path], profile: Optional[o.Profile], out: Output) -> Any:
    """--plot heads|distance|keys (or --profile distance|keys) and -o, checked before any work; a profile is a
    picture (.png/.svg/.pdf) or a page (.html), as the heatmaps are."""
    from ...render.pictures import Request

    kind, output = o.plot_and_file(plot, output, o.STATS_PLOTS, out)
    if profile is not None:
        if kind not in (None, profile.value):
            raise PosembUsageError(f"--plot {kind} and --profile {profile.value}: give one of them")
        if output is None:
            raise PosembUsageError(f"--profile {profile.value} draws a picture: give its file with -o FILE.png")
        kind = profile.value
    if kind is not None and output is None:
        raise PosembUsageError(f"--plot {kind} needs -o FILE")
    if kind in ("distance", "keys") and output is not None:
        Output.picture_path(output, report=True)
    return Request(kind=kind, path=o.folder_picture(output, "stats"))
