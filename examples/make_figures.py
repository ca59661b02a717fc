"""Regenerate the example pictures in examples/figures/ from the bundled model (offline).

    HF_HUB_OFFLINE=1 .venv/bin/python examples/make_figures.py

attention.png       every layer x head of all-MiniLM-L6-v2 for the headline text 我爱自然语言处理
attention_head.png  layer 3, head 7 alone
positions.png       cosine similarity of the first 128 learned position embeddings
embeddings.png      token / position / segment / sum norms per token of "position matters"
bias.png            ALiBi's bias per head against the offset (8 heads, offsets -32..32)
ablate.png          mean cosine and CKA per layer when the positions of "the cat sat on the mat" are altered
html_*.png          the four views of `posemb inspect "我爱自然语言处理" -o report.html`, screenshots taken in headless
                    Chromium (Debian's `chromium`, driven by Playwright; skipped with a note where there is none)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from posemb_cli.ablate import DEFAULT_MODES, ablate_texts, parse_modes
from posemb_cli.core import inspect_texts
from posemb_cli.models import load
from posemb_cli.positions import analyse_scheme, position_picture
from posemb_cli.render.figures.ablate import plot_ablation
from posemb_cli.render.figures.inspect import render_plot
from posemb_cli.render.figures.positions import plot_bias

FIGURES = Path(__file__).resolve().parent / "figures"
HEADLINE = "我爱自然语言处理"
ENGLISH = "position matters"
ABLATED = "the cat sat on the mat"


def main() -> None:
    FIGURES.mkdir(exist_ok=True)
    loaded = load(None)
    chinese, english = inspect_texts(loaded, [HEADLINE, ENGLISH])

    def warn(message: str) -> None:
        print(f"Warning: {message}", file=sys.stderr)

    jobs = [
        ("attention", chinese, "attention.png", {}),
        ("attention", chinese, "attention_head.png", {"layers": [3], "heads": [7]}),
        ("positions", english, "positions.png", {"position_picture": position_picture(loaded)}),
        ("embeddings", english, "embeddings.png", {}),
    ]
    for kind, result, name, options in jobs:
        for path, _ in render_plot(kind, result, FIGURES / name, on_warning=warn, **options):
            print(f"{path.relative_to(FIGURES.parent.parent)}  {path.stat().st_size // 1024} KB")
    bias = plot_bias(analyse_scheme("alibi", length=33, heads=8), FIGURES / "bias.png")
    print(f"examples/figures/bias.png  {bias.path.stat().st_size // 1024} KB")
    ablation = next(ablate_texts(loaded, [ABLATED], parse_modes(list(DEFAULT_MODES)) or []))
    ablate = plot_ablation(ablation, "similarity", FIGURES / "ablate.png")
    print(f"examples/figures/ablate.png  {ablate.path.stat().st_size // 1024} KB")
    html_screenshots(chinese, position_picture(loaded))


def html_screenshots(result, picture) -> None:
    """The report of `posemb inspect "我爱自然语言处理" -o report.html`, one screenshot per view."""
    from posemb_cli.render.html import inspect_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("note: no chromium/playwright: html_*.png not remade (apt-get install chromium; pip install playwright)")
        return
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        report = Path(folder) / "report.html"
        inspect_report(report, result, "all", picture)
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760}, device_scale_factor=1)
        page.goto(report.as_uri())
        page.select_option("select.layer", "2")
        for head in ("0", "4", "9"):  # three heads at once, one colour each
            page.check(f'.heads input[value="{head}"]')
        page.click('.tok[data-side="query"][data-i="2"]')
        page.mouse.move(1, 1)
        shots = [("html_head.png", None), ("html_model.png", "model"), ("html_positions.png", "positions")]
        shots.append(("html_embeddings.png", "embeddings"))
        for name, view in shots:
            if view is not None:
                page.click(f'[role=tab][data-view="{view}"]')
            if view == "model":
                page.click('button.cell[data-layer="3"][data-head="7"]')
                page.hover("canvas.large-map", position={"x": 120, "y": 40})
            if view == "positions":
                page.hover("canvas[data-panel]", position={"x": 150, "y": 60})
            page.screenshot(path=str(FIGURES / name), full_page=True)
            print(f"examples/figures/{name}  {(FIGURES / name).stat().st_size // 1024} KB")
        browser.close()


if __name__ == "__main__":
    main()
