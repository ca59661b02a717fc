"""Regenerate the example pictures in examples/figures/ from the bundled model (offline).

    HF_HUB_OFFLINE=1 .venv/bin/python examples/make_figures.py

attention.png       every layer x head of all-MiniLM-L6-v2 for the headline text 我爱自然语言处理
attention_head.png  layer 3, head 7 alone
positions.png       cosine similarity of the first 128 learned position embeddings
embeddings.png      token / position / segment / sum norms per token of "position matters"
bias.png            ALiBi's bias per head against the offset (8 heads, offsets -32..32)
ablate.png          mean cosine and CKA per layer when the positions of "the cat sat on the mat" are altered
html_*.png          screenshots of the HTML reports in headless Chromium (Debian's `chromium`, driven by Playwright;
                    skipped with a note where there is none), at desktop width (1280 px) and, *_phone.png, on a
                    390 px phone screen: the four views of `posemb inspect "我爱自然语言处理 ..." -o report.html`
                    (html_head, html_model, html_positions, html_embeddings), the model view of a 512-token text
                    (html_long_model), `posemb stats` (html_stats) and `posemb ablate` (html_ablate)
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
REPORT_TEXT = "我爱自然语言处理 Position embeddings tell the model where each token sits."
LONG_WORDS = "position embeddings tell the model where each token sits while attention decides what to read".split()
CORPUS = ["the cat sat on the mat", "position embeddings tell the model where each token sits", "attention reads."]


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
    html_screenshots(loaded, ablation)


def html_screenshots(loaded, ablation) -> None:
    """The HTML reports at 1280 px and at 390 px (a phone), one screenshot per view."""
    from posemb_cli.render.html import ablate_report, inspect_report, stats_report
    from posemb_cli.stats import partial_stats, run_shard

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("note: no chromium/playwright: html_*.png not remade (apt-get install chromium; pip install playwright)")
        return
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        folder = Path(folder)
        (result,) = inspect_texts(loaded, [REPORT_TEXT])
        inspect_report(folder / "inspect.html", result, "all", position_picture(loaded))
        (long,) = inspect_texts(loaded, [" ".join(LONG_WORDS[k % len(LONG_WORDS)] for k in range(600))])
        inspect_report(folder / "long.html", long, "attention", None)
        corpus = folder / "corpus.txt"
        corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
        stats_report(folder / "stats.html", partial_stats(run_shard(str(corpus), "0/1", model=loaded)))
        ablate_report(folder / "ablate.html", ablation)
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        shots = [
            ("inspect", "html_head", "head"),
            ("inspect", "html_model", "model"),
            ("inspect", "html_positions", "positions"),
            ("inspect", "html_embeddings", "embeddings"),
            ("long", "html_long_model", "model"),
            ("stats", "html_stats", None),
            ("ablate", "html_ablate", None),
        ]
        for width, suffix in ((1280, ""), (390, "_phone")):
            for report, name, view in shots:
                page = browser.new_page(viewport={"width": width, "height": 820 if width > 400 else 844})
                page.goto((folder / f"{report}.html").as_uri())
                page.wait_for_selector("html[data-ready=true]")
                if view is not None:
                    page.click(f'[role=tab][data-view="{view}"]')
                if view == "model" and report == "inspect":
                    page.click('button.cell[data-layer="3"][data-head="7"]')
                    if width > 400:
                        page.hover("canvas.large-map", position={"x": 120, "y": 40})
                    page.evaluate("window.scrollTo(0, 0)")
                if view == "positions":
                    page.hover("canvas[data-panel]", position={"x": 150, "y": 60})
                path = FIGURES / f"{name}{suffix}.png"
                page.screenshot(path=str(path), full_page=report == "inspect" and view == "model" and width > 400)
                print(f"examples/figures/{path.name}  {path.stat().st_size // 1024} KB")
                page.close()
        browser.close()


if __name__ == "__main__":
    main()
