"""One self-contained HTML report (`-o FILE.html`): the page's script and style are package files
(render/static/report.js, report.css, report.html); this module only turns result objects into the JSON data the
script draws from and writes the file.

The file needs nothing else: no CDN, no web font, no image from elsewhere (pictures are inline `data:` SVG). Every
text, token and model name travels as JSON data inside `<script type="application/json">` with `<`, `>`, `&`,
U+2028 and U+2029 escaped, and the script only ever sets `textContent`, so nothing the user typed becomes markup.
The page is assembled in one pass over the package's template (its `{{NAME}}` slots are found in the template, never
in what was put in them), so a text that contains `{{SCRIPT}}` stays a text. A Content-Security-Policy allows the
page's own script (by hash) and nothing else: no request leaves the page.

Maps (attention, Φ) are stored as 8- or 16-bit integers, zlib-compressed, base64: value = offset + scale·q with
q = round((v − offset) / scale), so a stored value is within scale/2 of the true one; the largest integer (255 or
65535) marks a value that was not finite, drawn blank. The page inflates them with the browser's own
DecompressionStream and states the rounding. The attention of a text is stored as precisely as ATTENTION_BUDGET
allows (`attention_data`): a 512-token report of the bundled model holds every layer and head at 8 bits, about 3 MB.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tempfile
import zlib
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from ..errors import PosembUsageError
from ..finite import finite_number
from ..output import write_atomic
from .figures.labels import label_note, token_labels

if TYPE_CHECKING:
    from ..core import TextResult
    from ..schemes.base import PositionAnalysis, PositionPicture

ATTENTION_BUDGET = 4_000_000  # characters of stored attention (base64 of the compressed integers) in one report
PAGE_BUDGET = 5_000_000  # bytes: what a report of a text the model accepts stays within (stated in docs/html.md)
RAW_LAYER_LIMIT = 25 * ATTENTION_BUDGET  # bytes of one layer's chosen heads at 8 bits that are compressed at all
INSPECT_VIEWS = ("attention", "positions", "embeddings")
FIRST_SCREEN = 24  # the head view's first token is one of the text's first 24 (on the first screen)


# ---------------------------------------------------------------- the file


def write_report(path: Path, page: dict[str, Any]) -> None:
    """Fill the page template with the package's style, script and `page` as JSON; write it atomically."""
    static = resources.files("posemb_cli.render") / "static"
    template = (static / "report.html").read_text(encoding="utf-8")
    style = (static / "report.css").read_text(encoding="utf-8")
    script = (static / "report.js").read_text(encoding="utf-8")
    if "</" in style or "</script" in script.lower():
        raise AssertionError("report.css/report.js must not contain a closing tag")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    slots = {"SCRIPT_HASH": f"sha256-{digest}", "STYLE": style, "DATA": script_json(page), "SCRIPT": script}
    html = fill(template, slots)

    def write(temp: str) -> None:
        Path(temp).write_text(html, encoding="utf-8")

    write_atomic(path, write)


def fill(template: str, slots: dict[str, str]) -> str:
    """The template with each `{{NAME}}` replaced, in one pass over the template only: what a slot receives is never
    searched again, so user text holding `{{SCRIPT}}` or `{{DATA}}` is left as it is."""
    pieces = re.split(r"\{\{([A-Z_]+)\}\}", template)
    return "".join(slots[piece] if k % 2 else piece for k, piece in enumerate(pieces))


def script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no '<', '>', '&' or line separators left as they are."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def quantized(values: np.ndarray, low: float, high: float, bits: int = 16) -> dict[str, Any]:
    """An array as 8- or 16-bit integers (little-endian, zlib, base64) with the offset and scale that give the values
    back: value = offset + scale·q, within scale/2; q = 2^bits − 1 ("blank") marks a value that was not finite."""
    values = np.asarray(values, dtype=np.float64)
    blank = (1 << bits) - 1
    steps = blank - 1
    scale = (high - low) / steps if high > low else 1.0
    finite = np.isfinite(values)
    q = np.rint((np.where(finite, values, low) - low) / scale).clip(0, steps)
    q = np.where(finite, q, blank).astype("<u2" if bits == 16 else "u1")
    return {
        "shape": list(values.shape),
        "offset": float(low),
        "scale": float(scale),
        "bits": bits,
        "blank": blank,
        "zlib": base64.b64encode(zlib.compress(q.tobytes(), 6)).decode("ascii"),
    }


def finite_range(values: Any, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """min and max of the finite values (0, 1 when there are none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return (0.0, 1.0)
    return (float(finite.min()) if low is None else low, float(finite.max()) if high is None else high)


def finite(values: Any, digits: int = 6) -> Any:
    """A float array as a list of rounded floats, NaN and inf as None (JSON has neither)."""
    if values is None:
        return None
    out = np.round(np.asarray(values, dtype=np.float64), digits)
    return [finite_number(v) for v in out.ravel()]


def model_facts(info: Any) -> list[list[str]]:
    facts = [["model", info.name], ["type", info.type], ["position scheme", info.position_scheme]]
    facts += [["layers", str(info.layers)], ["heads", str(info.heads)], ["hidden size", str(info.hidden_size)]]
    return facts + [["positions", str(info.max_positions or "-")]]


# ---------------------------------------------------------------- inspect


def inspect_page(
    result: TextResult,
    views: Sequence[str] = INSPECT_VIEWS,
    position_picture: PositionPicture | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The inspect report: head view and model view of the attention, the positions map, the embedding parts."""
    labels = token_labels(result.tokens, result.text, result.pair)
    tokens = [
        {"index": t.index, "label": label.text, "kind": label.kind, "token": t.token, "position_id": t.position_id}
        for t, label in zip(result.tokens, labels, strict=True)
    ]
    notes, page_views, attention = [], [], None
    note = label_note(labels)
    if note:
        notes.append(note)
    if "attention" in views:
        attention, shown = attention_data(result, layers, heads)
        if shown:
            notes.append(shown)
            if on_warning is not None:
                on_warning(shown)
        page_views += [{"kind": "head"}, {"kind": "model"}]  # both draw from the page's one "attention"
        notes.append(attention["rounding"])
    if "positions" in views and position_picture is not None:
        page_views.append(positions_view(position_picture, used=len(result.tokens)))
    if "embeddings" in views and result.token is not None:
        page_views.append(embeddings_view(result))
    return {
        "title": f"posemb inspect · {result.model.name}",
        "text": result.text,
        "pair": result.pair,
        "facts": model_facts(result.model),
        "tokens": tokens,
        "notes": notes,
        "warnings": list(result.warnings),
        "attention": attention,
        "views": page_views,
    }


def attention_data(
    result: TextResult, layers: Sequence[int] | None, heads: Sequence[int] | None
) -> tuple[dict[str, Any], str | None]:
    """The chosen layers × heads (all by default), one packed array per layer, as precisely as ATTENTION_BUDGET
    allows: every layer at 16 bits (a shown weight within 0.00001 of the model's); else the first layer at 16 bits
    and the others at 8 (within 0.002); else all at 8; else (default choice only) the first layers that fit at 8.
    Returns the data and, when not every layer is stored, the sentence saying what is; a text whose first layer
    does not fit, or an explicit choice that does not fit, is a usage error naming what would."""
    n_layers, n_heads, n = result.model.layers, result.model.heads, len(result.tokens)
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    head_ids = list(range(n_heads)) if heads is None else [int(x) for x in heads]
    raw16 = 2 * len(head_ids) * n * n  # bytes of one layer at 16 bits, before compression
    if raw16 > 2 * RAW_LAYER_LIMIT:  # not even worth compressing: say what would fit before any work
        raise PosembUsageError(
            f"{len(head_ids)} head(s) of {n} tokens are too many attention weights for one HTML report: choose fewer "
            "with --layer N --head N, or a shorter text with --max-length"
        )
    per_layer = [result.attention_of([layer], head_ids)[0] for layer in layer_ids]
    eight: list[dict[str, Any]] = []
    for maps in per_layer:  # at 8 bits, until the budget is spent (the rest could not be stored anyway)
        eight.append(quantized(maps, 0.0, 1.0, bits=8))
        if sum(len(packed["zlib"]) for packed in eight) > ATTENTION_BUDGET:
            break
    size = [len(packed["zlib"]) for packed in eight]
    if len(eight) < len(per_layer):
        size.append(ATTENTION_BUDGET + 1)  # the layers not packed: over the budget
    sixteen: dict[int, dict[str, Any]] = {}

    def precise(k: int) -> dict[str, Any]:
        if k not in sixteen:
            sixteen[k] = quantized(per_layer[k], 0.0, 1.0, bits=16)
        return sixteen[k]

    stored: list[dict[str, Any]] | None = None
    if raw16 * len(layer_ids) <= 3 * ATTENTION_BUDGET:  # 16-bit weights compress about 2:1 at best
        candidate = [precise(k) for k in range(len(layer_ids))]
        if sum(len(x["zlib"]) for x in candidate) <= ATTENTION_BUDGET:
            stored = candidate
    if stored is None and raw16 <= 3 * ATTENTION_BUDGET and len(precise(0)["zlib"]) + sum(size[1:]) <= ATTENTION_BUDGET:
        stored = [precise(0), *eight[1:]]
    if stored is None and len(eight) == len(per_layer) and sum(size) <= ATTENTION_BUDGET:
        stored = eight
    shown = None
    if stored is None:
        fit = int(np.searchsorted(np.cumsum(size), ATTENTION_BUDGET, side="right"))
        if layers is not None or fit == 0:
            raise PosembUsageError(
                f"{len(layer_ids)} layer(s) × {len(head_ids)} head(s) of {n} tokens do not fit in one HTML report "
                f"(even at 8 bits): choose fewer with --layer N --head N, or a shorter text with --max-length"
            )
        stored, layer_ids = eight[:fit], layer_ids[:fit]  # fit ≤ len(eight): the packed layers within budget
        shown = (
            f"{n} tokens: to keep the file within {PAGE_BUDGET // 1_000_000} MB the report holds only layers "
            f"{layer_ids[0]} to {layer_ids[-1]}; choose others with --layer N"
        )
    bits = [packed["bits"] for packed in stored]
    rounding = {16: "within 0.00001", 8: "within 0.002"}
    if len(set(bits)) == 1:
        held = f"every layer at {bits[0]} bits (a shown weight is {rounding[bits[0]]} of the model's)"
    else:
        held = (
            f"layer {layer_ids[0]} at 16 bits ({rounding[16]} of the model's weight), the other layers at 8 bits "
            f"({rounding[8]})"
        )
    first_head, first_token = strongest_head(result, layer_ids[0], head_ids)
    data = {
        "layers": layer_ids,
        "heads": head_ids,
        "maps": stored,
        "first": {"layer": 0, "head": first_head, "token": first_token},  # indices into layers, heads, tokens
        "rounding": (f"The page holds layers {describe(layer_ids)} × heads {describe(head_ids)} of {n} tokens: {held}"),
    }
    return data, shown


def describe(ids: Sequence[int]) -> str:
    """[0, 1, 2, 3] -> "0–3"; [1, 4] -> "1, 4"."""
    if len(ids) > 2 and list(ids) == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}–{ids[-1]}"
    return ", ".join(map(str, ids))


def strongest_head(result: TextResult, layer: int, head_ids: Sequence[int]) -> tuple[int, int]:
    """What the head view shows before any hover: of the chosen heads of `layer`, the one whose attention between
    the text's own tokens is most concentrated (the largest mean, over the text's queries, of the largest weight on
    one of the text's keys; special tokens left out), and on it the query with the strongest such weight among the
    text's first FIRST_SCREEN tokens (so that the lines are on the first screen). Returns (index into head_ids, token
    index)."""
    text = np.array([not t.special for t in result.tokens], dtype=bool)
    if not text.any():
        text[:] = True
    maps = np.asarray(result.attention_of([layer], head_ids)[0], dtype=np.float64)
    strongest = np.nan_to_num(maps[:, text][:, :, text].max(axis=2), nan=-1.0)  # (heads, text queries)
    head = int(np.argmax(strongest.mean(axis=1)))
    return head, int(np.flatnonzero(text)[int(np.argmax(strongest[head][:FIRST_SCREEN]))])


def positions_view(picture: PositionPicture, used: int | None = None) -> dict[str, Any]:
    """The Φ heatmap(s) of a scheme's picture, on one colour scale, with Φ's properties."""
    matrices = picture.panels
    if picture.diverging:
        low, high = -1.0, 1.0
    else:  # non-finite values are left out of the scale and drawn blank
        low, high = finite_range(np.concatenate([np.ravel(m) for m in matrices.values()]))
        high = max(0.0, high)
    return {
        "kind": "positions",
        "title": picture.title,
        "note": picture.note,
        "colorbar": picture.colorbar,
        "diverging": picture.diverging,
        "low": low,
        "high": high,
        "used": used,
        "panels": [{"name": name, "matrix": quantized(m, low, high)} for name, m in matrices.items()],
        "properties": property_rows(picture.properties),
    }


def property_rows(properties: dict[str, Any] | None) -> list[list[Any]]:
    """Φ's properties (Wang et al., ICLR 2021) as [name, value] rows; 1 is the ideal relative-position Φ."""
    if not properties:
        return []
    mono = properties.get("monotonicity") or {}
    rows = [
        ["translation invariance", properties.get("translation_invariance")],
        ["symmetry", properties.get("symmetry")],
        [f"monotonicity forward (window {mono.get('window')})", mono.get("forward")],
        [f"monotonicity backward (window {mono.get('window')})", mono.get("backward")],
    ]
    return [[name, finite([value], 4)[0] if value is not None else None] for name, value in rows]


def embeddings_view(result: TextResult) -> dict[str, Any]:
    norms = result.norms
    parts = {
        name: finite(norms[name], 4) for name in ("token", "position", "segment", "sum") if norms[name] is not None
    }
    return {
        "kind": "embeddings",
        "scheme": result.model.position_scheme,
        "parts": parts,
        "cosine": finite(result.token_sum_cosine, 6),
    }


# ---------------------------------------------------------------- the other commands: tables and pictures


class TableRecorder(Console):
    """A rich Console that keeps what a terminal renderer prints as blocks (tables, lines of text) instead of drawing
    it, so the report shows the very tables the terminal does, made sortable. Its width is unbounded: a page leaves
    out no column."""

    def __init__(self) -> None:
        super().__init__(file=io.StringIO(), width=100_000)
        self.blocks: list[dict[str, Any]] = []

    def print(self, *objects: Any, **_: Any) -> None:
        from rich.table import Table

        for obj in objects:
            if isinstance(obj, Table):
                self.blocks.append(table_block(obj))
            else:
                self.blocks.append({"type": "text", "text": plain_text(obj)})


def plain_text(obj: Any) -> str:
    from rich.errors import MarkupError
    from rich.text import Text

    if isinstance(obj, Text):
        return obj.plain
    try:
        return Text.from_markup(str(obj)).plain
    except MarkupError:
        return str(obj)


def table_block(table: Any) -> dict[str, Any]:
    columns = [plain_text(column.header) for column in table.columns]
    cells = [[plain_text(cell) for cell in column._cells] for column in table.columns]
    rows = [list(row) for row in zip(*cells, strict=True)] if cells else []
    return {"type": "table", "title": plain_text(table.title or ""), "columns": columns, "rows": rows}


def rows_block(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Rows of plain values (numbers stay numbers, so they sort as numbers)."""

    def cell(value: Any) -> Any:
        if isinstance(value, (float, np.floating)):
            return finite_number(value)
        return value if isinstance(value, (int, str)) or value is None else str(value)

    return {
        "type": "table",
        "title": title,
        "columns": list(columns),
        "rows": [[cell(row.get(c)) for c in columns] for row in rows],
    }


def picture_block(draw: Callable[[Path], Any], alt: str) -> dict[str, Any]:
    """Call draw(path.svg) (one of render/figures' functions) and keep the SVG as a data: image (no script in it
    can run: an <img> never runs scripts)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "picture.svg"
        draw(path)
        svg = path.read_bytes()
    return {"type": "picture", "alt": alt, "svg": base64.b64encode(svg).decode("ascii")}


def report_page(
    title: str, blocks: list[dict[str, Any]], extra_views: Sequence[dict[str, Any]] = (), tab: str = "tables"
) -> dict[str, Any]:
    """A page of tables, lines and pictures (compare, stats, positions, ablate), plus any interactive views."""
    return {
        "title": title,
        "facts": [],
        "tokens": [],
        "notes": [],
        "warnings": [],
        "views": [*extra_views, {"kind": "report", "title": tab, "blocks": blocks}],
    }


def analysis_view(analysis: PositionAnalysis) -> dict[str, Any]:
    """`posemb positions`: Φ as an interactive heatmap (its own range) with its properties."""
    from ..schemes.base import PositionPicture

    low, high = finite_range(analysis.matrix)
    diverging = low < 0 < high and analysis.metric == "cosine"
    picture = PositionPicture(
        {"Φ": analysis.matrix},
        f"Φ over the first {analysis.length} positions ({analysis.metric})",
        analysis.meaning or analysis.source,
        f"Φ ({analysis.metric})",
        diverging,
        properties=analysis.properties,
    )
    return positions_view(picture)


# ---------------------------------------------------------------- one entry point per command


def inspect_report(
    path: Path,
    result: TextResult,
    kind: str,
    position_picture: PositionPicture | None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`inspect -o FILE.html`: `kind` attention | positions | embeddings | all. Returns the page data."""
    from ..errors import PosembError

    views = INSPECT_VIEWS if kind == "all" else (kind,)
    if kind == "embeddings" and result.token is None:
        raise PosembError(
            f"no embeddings view: {result.model.name} is not in posemb's registry, so its embedding is not split"
        )
    if kind == "all" and position_picture is None and on_warning is not None:
        scheme = result.model.position_scheme
        on_warning(f"no positions view: {result.model.name} uses position scheme {scheme!r}, which posemb cannot draw")
    page = inspect_page(result, views, position_picture, layers, heads, on_warning=on_warning)
    write_report(path, page)
    return page


def positions_report(path: Path, analysis: PositionAnalysis) -> None:
    """`positions -o FILE.html`: Φ interactive, the tables of the terminal, the bias picture where there is one."""
    from .figures.positions import plot_bias
    from .positions_table import print_positions

    recorder = TableRecorder()
    print_positions(recorder, analysis)
    blocks = recorder.blocks
    if analysis.bias is not None:
        blocks.append(picture_block(lambda svg: plot_bias(analysis, svg), "relative bias per head against offset"))
    name = analysis.model or f"scheme {analysis.scheme}"
    write_report(path, report_page(f"posemb positions · {name}", blocks, [analysis_view(analysis)]))


def compare_report(path: Path, comparison: Any, font: Path | None = None) -> list[str]:
    """`compare -o FILE.html`: the terminal's tables, sortable, and the comparison figure. Returns font warnings."""
    from .compare_table import print_comparison
    from .figures.compare import plot_comparison

    recorder = TableRecorder()
    print_comparison(recorder, comparison)
    warnings: list[str] = []
    draw = lambda svg: warnings.extend(plot_comparison(comparison, svg, font=font).warnings)  # noqa: E731
    blocks = [*recorder.blocks, picture_block(draw, "comparison of the models")]
    names = ", ".join(report.name for report in comparison.models)
    views = [cka_view(comparison)] if comparison.similarity else []
    write_report(path, report_page(f"posemb compare · {names}", blocks, views))
    return warnings


def cka_view(comparison: Any) -> dict[str, Any]:
    """Layer similarity of each pair of models: the linear CKA matrix (rows: layers of a, columns: layers of b)."""
    pairs = []
    for pair in comparison.similarity:
        a, b = comparison.models[pair.a], comparison.models[pair.b]
        pairs.append(
            {
                "a": a.name,
                "b": b.name,
                "labels_a": list(a.layer_labels or []),
                "labels_b": list(b.layer_labels or []),
                "shape": list(pair.cka.shape),
                "values": finite(pair.cka, 4),
                "words": pair.words,
                "note": pair.note,
            }
        )
    return {"kind": "cka", "title": "layer similarity (CKA)", "pairs": pairs}


def stats_report(path: Path, result: Any, sort: str | None = None, reverse: bool = False) -> None:
    """`stats -o FILE.html`: a layers × heads heatmap per statistic (the PNG's panels, drawn by the page, with the
    value under the pointer) and the heads table (numbers sort as numbers)."""
    from ..stats import PATTERNS
    from .figures.stats import PATTERN_COLOURS, panels
    from .stats_output import stats_title

    info = result.model
    title = stats_title(result)
    grids = {name: finite(result.grid(name), 6) for name in panels(result) if name != "pattern"}
    labels = [p for p in PATTERNS if p != "block" or result.pairs]  # the PNG's pattern panel: block needs pairs
    pattern = [None] * (info.layers * info.heads)
    for row in result.heads:
        if row["pattern"] is not None:  # None: the head's maps were not finite (left blank)
            pattern[row["layer"] * info.heads + row["head"]] = row["pattern"]
    blocks: list[dict[str, Any]] = [
        {
            "type": "grids",
            "title": "per layer × head (point at a cell)",
            "layers": info.layers,
            "heads": info.heads,
            "values": grids,
            "pattern": {
                "title": "pattern (Kovaleva et al.)",
                "labels": labels,
                "colours": [PATTERN_COLOURS[p] for p in labels],
                "values": pattern,
            },
        },
        rows_block(title, result.sorted_heads(sort, reverse), result.columns()),
    ]
    write_report(path, report_page(f"posemb stats · {info.name}", blocks, tab="heads"))


def profile_report(path: Path, result: Any, kind: str) -> None:
    """`stats --plot distance|keys -o FILE.html`: the profile's picture and its numbers as a table that sorts (per
    head and distance bin, or per layer and key bin)."""
    from .figures.profiles import distance_grid, plot_profile
    from .stats_output import stats_source

    if kind == "distance":
        grid, labels = distance_grid(result)
        columns = ["layer", "head", *labels]
        rows = [
            {"layer": layer, "head": head, **dict(zip(labels, map(float, grid[layer, head]), strict=True))}
            for layer in range(grid.shape[0])
            for head in range(grid.shape[1])
        ]
        alt, what = "per layer, heads × distance bins", "per head: attention mass at offset |i − j| per query row"
    else:
        bins = result.key_bins or 0
        labels = [f"{100 * b // bins}–{100 * (b + 1) // bins}%" for b in range(bins)]
        columns = ["layer", *labels, "first", "last"]
        rows = [
            {"layer": e["layer"], **dict(zip(labels, e["bins"], strict=True)), "first": e["first"], "last": e["last"]}
            for e in result.key_profile or []
        ]
        alt = "one curve per layer"
        what = "per layer: attention mass received per bin of the text (first / last 1% of keys)"
    blocks = [
        picture_block(lambda svg: plot_profile(result, kind, svg), alt),
        rows_block(f"{stats_source(result)} · {what}", rows, columns),
    ]
    name = "distance_profile" if kind == "distance" else "key_profile"
    write_report(path, report_page(f"posemb stats {name} · {result.model.name}", blocks))


def ablate_report(path: Path, result: Any, kinds: Sequence[str] | None = None, font: Path | None = None) -> list[str]:
    """`ablate -o FILE.html`: the terminal's tables and the pictures (`kinds`; None: similarity, and attention
    where some mode has attention maps). Returns font warnings."""
    from .ablate_table import attention_section, print_ablation
    from .figures.ablate import plot_ablation

    recorder = TableRecorder()
    print_ablation(recorder, result)
    if kinds is None:
        kinds = ["similarity"] + (["attention"] if attention_section(result) is not None else [])
    warnings: list[str] = []
    blocks = recorder.blocks
    for kind in kinds:
        draw = lambda svg, kind=kind: warnings.extend(plot_ablation(result, kind, svg, font=font).warnings)  # noqa: E731
        blocks.append(picture_block(draw, f"{kind} per layer and mode"))
    write_report(path, report_page(f"posemb ablate · {result.model.name}", blocks, [ablation_view(result)]))
    return warnings


def ablation_view(result: Any) -> dict[str, Any]:
    """Per-layer lines, one per mode: mean cosine and CKA of the ablated run against the normal one, and the change
    of each attention statistic where the mode has attention maps."""
    layers = [str(layer.layer) for layer in result.modes[0].layers] if result.modes else []
    charts = [
        {
            "title": title,
            "ylabel": ylabel,
            "series": [
                {"name": mode.mode, "values": finite([getattr(x, key) for x in mode.layers], 4)}
                for mode in result.modes
            ],
        }
        for key, title, ylabel in (
            ("cosine_mean", "mean cosine, normal against ablated run (1 = no change)", "mean cosine"),
            ("cka", "linear CKA, normal against ablated run", "CKA"),
        )
    ]
    with_attention = [m for m in result.modes if any(x.attention is not None for x in m.layers)]
    keys = list(dict.fromkeys(k for m in with_attention for x in m.layers if x.attention for k in x.attention))
    for key in keys:
        series = [
            {"name": m.mode, "values": finite([(x.attention or {}).get(key, np.nan) for x in m.layers], 4)}
            for m in with_attention
        ]
        charts.append({"title": f"change in attention {key}, ablated − normal", "ylabel": f"Δ{key}", "series": series})
    return {"kind": "lines", "title": "per layer", "layers": layers, "charts": charts}


def extrapolate_report(path: Path, result: Any, font: Path | None = None) -> list[str]:
    """`extrapolate -o FILE.html`: perplexity against the window length and loss against the position, one line per
    variant (drawn by the page), the terminal's tables and the picture. Returns font warnings."""
    from .extrapolate_output import print_extrapolation
    from .figures.extrapolate import plot_extrapolation

    recorder = TableRecorder()
    print_extrapolation(recorder, result)
    warnings: list[str] = []
    blocks = recorder.blocks
    draw = lambda svg: warnings.extend(plot_extrapolation(result, svg, font=font).warnings)  # noqa: E731
    blocks.append(picture_block(draw, "loss by position and perplexity by window length, one line per variant"))
    views = extrapolation_views(result)
    write_report(path, report_page(f"posemb extrapolate · {result.model.name}", blocks, views))
    return warnings


def extrapolation_views(result: Any) -> list[dict[str, Any]]:
    """Two line views, one line per variant: perplexity per window length, and mean loss per position bin of the
    longest windows (bins past the training length marked ›, as in the table)."""
    from .extrapolate_output import bin_label

    bins = [bin_label(result, k) for k in range(len(result.bins))]
    intro = "One line per variant. Point at a dot to read it."
    by_length = {
        "title": "perplexity by window length",
        "ylabel": "perplexity",
        "series": [
            {"name": v.name, "values": finite([v.perplexity[n] for n in result.lengths], 4)} for v in result.variants
        ],
    }
    by_position = {
        "title": f"mean loss (nats) by position in the {result.bins_length}-token windows",
        "ylabel": "mean loss",
        "series": [
            {"name": v.name, "values": finite([np.nan if x is None else x for x in v.bin_mean], 4)}
            for v in result.variants
        ],
    }
    return [
        {
            "kind": "lines",
            "tab": "by length",
            "xlabel": "window length",
            "intro": intro,
            "layers": [str(n) for n in result.lengths],
            "charts": [by_length],
        },
        {
            "kind": "lines",
            "tab": "by position",
            "xlabel": "positions",
            "intro": intro,
            "layers": bins,
            "charts": [by_position],
        },
    ]
