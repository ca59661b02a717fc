"""One self-contained HTML report (`-o FILE.html`): the page's script and style are package files
(render/static/report.js, report.css, report.html); this module only turns result objects into the JSON data the
script draws from and writes the file.

The file needs nothing else: no CDN, no web font, no image from elsewhere (pictures are inline `data:` SVG). Every
text, token and model name travels as JSON data inside `<script type="application/json">` with `<`, `>`, `&`,
U+2028 and U+2029 escaped, and the script only ever sets `textContent`, so nothing the user typed becomes markup.
A Content-Security-Policy allows the page's own script (by hash) and nothing else: no request leaves the page.

Attention and position maps are stored as uint16 integers, base64: value = offset + scale·q, q = round((v −
offset) / scale), so a stored value is within scale/2 of the true one; the page states the scale.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from ..errors import PosembUsageError
from ..output import write_atomic
from .figures.labels import label_note, token_labels

if TYPE_CHECKING:
    from ..core import TextResult
    from ..schemes.base import PositionAnalysis, PositionPicture

LEVELS = 65535  # uint16 quantization steps between offset and offset + 65535·scale
MAX_FULL_TOKENS = 512  # beyond this many tokens only the first layer (or the chosen --layer/--head) is stored
MAX_ATTENTION_VALUES = 8_000_000  # at most this many weights (16 MB before base64): more must be chosen
INSPECT_VIEWS = ("attention", "positions", "embeddings")


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
    html = (
        template.replace("{{SCRIPT_HASH}}", f"sha256-{digest}")
        .replace("{{STYLE}}", style)
        .replace("{{DATA}}", script_json(page))
        .replace("{{SCRIPT}}", script)
    )

    def write(temp: str) -> None:
        Path(temp).write_text(html, encoding="utf-8")

    write_atomic(path, write)


def script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no '<', '>', '&' or line separators left as they are."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def quantized(values: np.ndarray, low: float, high: float) -> dict[str, Any]:
    """An array as uint16 integers (little-endian, base64) with the offset and scale that give the values back."""
    values = np.asarray(values, dtype=np.float64)
    scale = (high - low) / LEVELS if high > low else 1.0
    q = np.rint((np.nan_to_num(values, nan=low) - low) / scale).clip(0, LEVELS).astype("<u2")
    return {
        "shape": list(values.shape),
        "offset": float(low),
        "scale": float(scale),
        "data": base64.b64encode(q.tobytes()).decode("ascii"),
    }


def finite(values: Any, digits: int = 6) -> Any:
    """A float array as a list of rounded floats, NaN and inf as None (JSON has neither)."""
    if values is None:
        return None
    out = np.round(np.asarray(values, dtype=np.float64), digits)
    return [None if not np.isfinite(v) else float(v) for v in out.ravel()]


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
    """The chosen layers × heads as uint16 (scale 1/65535); beyond MAX_FULL_TOKENS tokens only layer 0 (and only
    the heads that fit in MAX_ATTENTION_VALUES) unless --layer/--head chose; a choice beyond MAX_ATTENTION_VALUES is
    a usage error. Returns the data and, when not everything is stored, the sentence saying what is."""
    n_layers, n_heads, n = result.attention.shape[:3]
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    head_ids = list(range(n_heads)) if heads is None else [int(x) for x in heads]
    shown = None
    if n > MAX_FULL_TOKENS and layers is None and heads is None:
        fit = max(1, MAX_ATTENTION_VALUES // (n * n))
        layer_ids, head_ids = [0], head_ids[:fit]
        heads_shown = f"all {n_heads} heads" if fit >= n_heads else f"heads 0 to {len(head_ids) - 1}"
        shown = (
            f"{n} tokens: to keep the file small the report holds only layer 0, {heads_shown}; "
            "choose others with --layer N --head N"
        )
    values = len(layer_ids) * len(head_ids) * n * n
    if values > MAX_ATTENTION_VALUES and len(layer_ids) * len(head_ids) > 1:
        raise PosembUsageError(
            f"{len(layer_ids)} layers × {len(head_ids)} heads of {n} tokens are too many attention values for one "
            "HTML report: choose fewer with --layer N --head N"
        )
    matrix = result.attention[np.ix_(layer_ids, head_ids)]
    data = {
        "layers": layer_ids,
        "heads": head_ids,
        "attention": quantized(matrix, 0.0, 1.0),
        "rounding": (
            "Weights are stored as integers q = round(65535 · weight) and shown as q / 65535 to 4 decimals: "
            "a shown weight is within 0.0001 of the model's"
        ),
    }
    return data, shown


def positions_view(picture: PositionPicture, used: int | None = None) -> dict[str, Any]:
    """The Φ heatmap(s) of a scheme's picture, on one colour scale, with Φ's properties."""
    matrices = picture.panels
    if picture.diverging:
        low, high = -1.0, 1.0
    else:
        low = float(min(np.nanmin(m) for m in matrices.values()))
        high = max(0.0, float(max(np.nanmax(m) for m in matrices.values())))
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
    norms = result.norms()
    parts = {
        name: finite(norms[name], 4) for name in ("token", "position", "segment", "sum") if norms[name] is not None
    }
    return {
        "kind": "embeddings",
        "scheme": result.model.position_scheme,
        "parts": parts,
        "cosine": finite(result.token_sum_cosine(), 6),
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
            return None if not np.isfinite(value) else float(value)
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


def report_page(title: str, blocks: list[dict[str, Any]], extra_views: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A page of tables, lines and pictures (compare, stats, positions, ablate), plus any interactive views."""
    return {
        "title": title,
        "facts": [],
        "tokens": [],
        "notes": [],
        "warnings": [],
        "views": [*extra_views, {"kind": "report", "title": "tables", "blocks": blocks}],
    }


def analysis_view(analysis: PositionAnalysis) -> dict[str, Any]:
    """`posemb positions`: Φ as an interactive heatmap (its own range) with its properties."""
    from ..schemes.base import PositionPicture

    low, high = float(np.nanmin(analysis.matrix)), float(np.nanmax(analysis.matrix))
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
    write_report(path, report_page(f"posemb compare · {names}", blocks))
    return warnings


def stats_report(path: Path, result: Any, sort: str | None = None, reverse: bool = False) -> None:
    """`stats -o FILE.html`: a layers × heads heatmap per statistic (the PNG's panels, drawn by the page, with the
    value under the pointer) and the heads table (numbers sort as numbers)."""
    from .figures.stats import panels
    from .stats_output import stats_title

    info = result.model
    title = stats_title(result)
    grids = {name: finite(result.grid(name), 6) for name in panels(result) if name != "pattern"}
    blocks: list[dict[str, Any]] = [
        {
            "type": "grids",
            "title": "per layer × head (hover a cell)",
            "layers": info.layers,
            "heads": info.heads,
            "values": grids,
        },
        rows_block(title, result.sorted_heads(sort, reverse), result.columns()),
    ]
    write_report(path, report_page(f"posemb stats · {info.name}", blocks))


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
    write_report(path, report_page(f"posemb ablate · {result.model.name}", blocks))
    return warnings
