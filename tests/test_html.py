"""`-o FILE.html`: one self-contained report, checked in a real headless Chromium (Debian's `chromium`, driven by
Playwright with the system browser; nothing is downloaded). The weights the page shows are compared with
`--json --attention` (itself checked against transformers in test_inspect_numbers.py); the page must make no
request, log no error, run no injected script and draw CJK glyphs, not tofu boxes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

HEADLINE = "我爱自然语言处理"
INJECTION = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
FILLER = (
    23  # words "word" that bring the bundled model's tokens to 64 (41 for [CLS], the headline, the injection, [SEP])
)
TEXT = f"{HEADLINE} {INJECTION} " + " ".join(["word"] * FILLER)
ROUNDING = 1e-4  # the page's own statement: a shown weight is within 0.0001 of the model's
BROWSER_HINT = (
    "no headless Chromium for the HTML report tests: install Debian's browser and the driver library "
    "(apt-get install chromium; pip install playwright) — `make test` does this as root on Debian/Ubuntu"
)


def find_chromium() -> str | None:
    for name in (os.environ.get("POSEMB_CHROMIUM", ""), "chromium", "chromium-browser"):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; skipped (saying how to install it) where there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(BROWSER_HINT)
    executable = find_chromium()
    if executable is None:
        pytest.skip(BROWSER_HINT)
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    yield chromium
    chromium.close()
    playwright.stop()


# What a reader cannot read whole on the shown view: a table title wider than the screen or than its own box, or a
# word of a picture drawn past the edge of its <svg>.
CUT_OFF = """() => {
  const cut = [];
  for (const title of document.querySelectorAll("caption, .caption")) {
    if (!title.offsetParent) continue;  // in a hidden view
    const box = title.getBoundingClientRect();
    if (box.right > window.innerWidth + 0.5 || title.scrollWidth > title.clientWidth + 0.5) cut.push(title.textContent);
  }
  for (const text of document.querySelectorAll("svg text")) {
    const frame = text.ownerSVGElement ? text.ownerSVGElement.getBoundingClientRect() : null;
    if (!frame || !frame.width) continue;
    const b = text.getBoundingClientRect();  // as drawn: rotated labels too
    if (b.left < frame.left - 0.5 || b.right > frame.right + 0.5) cut.push(text.textContent);
  }
  return cut;
}"""


class Page:
    """A page of the browser with everything it did recorded: console errors, requests, dialogs (alert)."""

    def __init__(self, browser, path: Path, width: int = 1300) -> None:
        self.width = width
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.url = path.resolve().as_uri()
        self.page.route("**/*", lambda route: route.continue_() if route.request.url == self.url else route.abort())
        self.page.goto(self.url)
        self.page.wait_for_selector("html[data-ready=true]")

    def check_clean(self) -> None:
        assert self.errors == []
        assert self.requests == [self.url]  # the file itself, nothing else
        assert self.dialogs == []

    def check_fits(self, what: str) -> None:
        """No sideways scroll of the page itself (a wide table may scroll inside its own box)."""
        width, inner = self.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= inner, f"{what}: the page is {width} px wide on a {inner} px screen"
        assert self.page.evaluate(CUT_OFF) == [], f"{what}: words cut off"

    def every_view_fits(self, name: str) -> None:
        for tab in self.page.locator("[role=tab]").all():
            tab.click()
            if tab.get_attribute("data-view") == "model":
                self.page.locator("button.cell").first.click()  # the large map too
            self.check_fits(f"{name}, {tab.text_content()}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The bundled model on a 64-token text (CJK, [UNK], the injection): the report and `--json --attention`."""
    path = tmp_path_factory.mktemp("html") / "report.html"
    result = run_cli("inspect", TEXT, "--json", "--attention", "-o", str(path))
    assert result.exit_code == 0, result.stderr
    assert f"Wrote {path}" in result.stderr
    data = json.loads(result.stdout)
    assert len(data["tokens"]) == 64
    return path, data, np.array(data["attention"])


@pytest.fixture(scope="module")
def page(browser, report):
    opened = Page(browser, report[0])
    yield opened
    opened.page.close()


def shown_weights(page, side: str, head: int) -> list[float]:
    """The weights written beside each token of `side` for `head` (after hovering a token on the other side)."""
    cells = page.locator(f'.weights[data-side="{side}"] tspan[data-head="{head}"]')
    return [float(text) for text in cells.all_text_contents()]


def choose(page, layer_index: int, heads: list[int]) -> None:
    page.select_option("select.layer", str(layer_index))
    for box in page.locator(".heads input").all():
        if box.is_checked() != (int(box.get_attribute("data-head")) in heads):
            box.click()


# ---------------------------------------------------------------- the file


def test_report_is_one_small_offline_file(report):
    path, _, _ = report
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size <= 1_500_000  # the budget for 64 tokens, 6 layers x 12 heads
    assert INJECTION not in html and "<img" not in html  # the text is data: its '<' travel as \u003c
    for external in ("http://", "https://", "//cdn", "@import", "url("):
        assert external not in html.replace("http://www.w3.org/2000/svg", "")
    assert "Content-Security-Policy" in html and list(path.parent.iterdir()) == [path]


def test_script_json_escapes_what_would_end_the_script():
    from posemb_cli.render.html import script_json

    value = {"text": INJECTION + " & \u2028\u2029 ]]>"}
    encoded = script_json(value)
    assert not set("<>&\u2028\u2029") & set(encoded)
    assert json.loads(encoded) == value


def unpacked(packed) -> np.ndarray:
    """The values a packed map holds, read with zlib and NumPy (not with the page's script): NaN where blank."""
    import base64
    import zlib

    raw = zlib.decompress(base64.b64decode(packed["zlib"]))
    q = np.frombuffer(raw, dtype="<u2" if packed["bits"] == 16 else "u1").reshape(packed["shape"])
    return np.where(q == packed["blank"], np.nan, packed["offset"] + packed["scale"] * q.astype(float))


def test_attention_is_stored_as_precisely_as_the_budget_allows(monkeypatch):
    from posemb_cli.core import inspect_text
    from posemb_cli.errors import PosembUsageError
    from posemb_cli.render import html

    result = inspect_text("a short text for the budget rule")
    full = html.inspect_page(result)["attention"]
    assert [m["bits"] for m in full["maps"]] == [16] * 6 and "every layer at 16 bits" in full["rounding"]
    for layer, packed in enumerate(full["maps"]):  # within half a step of 1/65534
        np.testing.assert_allclose(unpacked(packed), result.attention[layer], atol=0.5 / 65534 + 1e-12)
    sizes16 = [len(m["zlib"]) for m in full["maps"]]
    sizes8 = [len(html.quantized(result.attention[k], 0.0, 1.0, bits=8)["zlib"]) for k in range(6)]
    monkeypatch.setattr(html, "ATTENTION_BUDGET", sizes16[0] + sum(sizes8[1:]))  # room for layer 0 at 16 bits
    mixed = html.inspect_page(result)
    assert [m["bits"] for m in mixed["attention"]["maps"]] == [16, 8, 8, 8, 8, 8]
    assert "layer 0 at 16 bits" in mixed["attention"]["rounding"] and mixed["attention"]["rounding"] in mixed["notes"]
    np.testing.assert_allclose(unpacked(mixed["attention"]["maps"][3]), result.attention[3], atol=0.5 / 254 + 1e-12)
    monkeypatch.setattr(html, "ATTENTION_BUDGET", sum(sizes8[:2]))  # two layers at 8 bits
    told: list[str] = []
    short = html.inspect_page(result, on_warning=told.append)
    assert short["attention"]["layers"] == [0, 1] and "only layers 0 to 1" in told[0] and told[0] in short["notes"]
    chosen = html.inspect_page(result, layers=[2], heads=[1, 3])["attention"]  # a choice that fits is honoured
    assert chosen["layers"] == [2] and chosen["heads"] == [1, 3]
    np.testing.assert_allclose(unpacked(chosen["maps"][0]), result.attention[2][[1, 3]], atol=0.5 / 65534 + 1e-12)
    with pytest.raises(PosembUsageError, match="choose fewer"):
        html.inspect_page(result, layers=[1, 2, 3])
    monkeypatch.setattr(html, "ATTENTION_BUDGET", 10)
    with pytest.raises(PosembUsageError, match="--max-length"):
        html.inspect_page(result)


def test_non_finite_values_are_stored_blank():
    from posemb_cli.render.html import quantized

    values = np.array([[0.0, np.nan, 1.0], [np.inf, 0.5, -np.inf]])
    back = unpacked(quantized(values, 0.0, 1.0, bits=8))
    assert np.isnan(back[0, 1]) and np.isnan(back[1, 0]) and np.isnan(back[1, 2])
    np.testing.assert_allclose(back[[0, 0, 1], [0, 2, 1]], [0.0, 1.0, 0.5], atol=0.5 / 254)


def test_html_suffix_errors_before_loading(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("inspect", "x", "-o", "a.htm", "--plot", "attention")
    assert result.exit_code == 2 and "use .png, .svg, .pdf or .html" in result.stderr
    result = run_cli("inspect", "x", "-o", "missing/a.html")
    assert result.exit_code == 1 and "folder missing does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- in the browser


def test_page_loads_with_no_error_no_request_and_no_injected_script(page):
    page.check_clean()
    text = page.page.locator("p.text").text_content()
    assert INJECTION in text  # shown as text
    assert page.page.locator("#report img, #report script").count() == 0
    tabs = page.page.locator("[role=tab]").all_text_contents()
    assert tabs == ["head view", "model view", "positions", "embeddings"]


def test_head_view_shows_the_json_weights(page, report):
    _, data, attention = report
    p = page.page
    p.click('[role=tab][data-view="head"]')
    layer, head, query, key = 3, 7, 5, 12
    choose(p, layer, [head])
    p.hover(f'.tok[data-side="query"][data-i="{query}"]')
    shown = shown_weights(p, "key", head)
    assert len(shown) == 64
    np.testing.assert_allclose(shown, attention[layer, head, query], atol=ROUNDING)
    readout = p.locator(".readout").first.text_content()
    assert f"query {query}" in readout and data["tokens"][query]["token"] in readout
    p.hover(f'.tok[data-side="key"][data-i="{key}"]')  # the other side: who attends to this key
    np.testing.assert_allclose(shown_weights(p, "query", head), attention[layer, head, :, key], atol=ROUNDING)
    opacities = [
        float(x)
        for x in p.locator("line[data-head]").evaluate_all("ls => ls.map(l => l.getAttribute('stroke-opacity'))")
    ]
    np.testing.assert_allclose(opacities, attention[layer, head, :, key], atol=ROUNDING)
    page.check_clean()


def drawn_lines(p) -> list[tuple[str, str]]:
    return p.locator("line[data-head]").evaluate_all(
        "ls => ls.map(l => [l.getAttribute('data-head'), l.getAttribute('stroke-opacity')])"
    )


def test_changing_layer_and_heads_changes_the_drawing(page, report):
    attention = report[2]
    p = page.page
    p.click('[role=tab][data-view="head"]')
    choose(p, 0, [0])
    assert p.evaluate("JSON.parse(document.getElementById('report-data').textContent).attention.first.token") != 9
    p.click('.tok[data-side="query"][data-i="9"]')  # tap: the token stays chosen when the pointer leaves
    p.mouse.move(5, 5)
    first = drawn_lines(p)
    assert len(first) == 64
    choose(p, 4, [0])
    assert drawn_lines(p) != first
    choose(p, 4, [2, 11])  # two heads at once, one colour each
    lines = drawn_lines(p)
    assert sorted({head for head, _ in lines}) == ["11", "2"] and len(lines) == 128
    colours = set(p.locator("line[data-head]").evaluate_all("ls => ls.map(l => l.getAttribute('stroke'))"))
    assert len(colours) == 2
    np.testing.assert_allclose(shown_weights(p, "key", 11), attention[4, 11, 9], atol=ROUNDING)
    p.focus('.tok[data-side="query"][data-i="9"]')  # the keyboard: arrows move the chosen token
    p.keyboard.press("ArrowDown")
    np.testing.assert_allclose(shown_weights(p, "key", 2), attention[4, 2, 10], atol=ROUNDING)
    page.check_clean()


def strongest(data, attention) -> tuple[int, int]:
    """The head view's first picture, as docs/html.md defines it: in layer 0, the head with the largest mean over
    the text's queries of the largest weight on one of the text's keys (special tokens left out), and its query
    with the largest such weight among the text's first 24 tokens."""
    text = np.array([not t["special"] for t in data["tokens"]])
    best = attention[0][:, text][:, :, text].max(axis=2)
    head = int(np.argmax(best.mean(axis=1)))
    return head, int(np.flatnonzero(text)[np.argmax(best[head][:24])])


def test_head_view_shows_the_strongest_head_of_layer_0_before_any_hover(browser, report):
    _, data, attention = report
    opened = Page(browser, report[0])
    p = opened.page
    head, token = strongest(data, attention)
    assert [b.get_attribute("data-head") for b in p.locator(".heads input:checked").all()] == [str(head)]
    assert p.locator("select.layer").input_value() == "0"
    np.testing.assert_allclose(shown_weights(p, "key", head), attention[0, head, token], atol=ROUNDING)
    assert f"query {token} " in p.locator(".readout").first.text_content()
    opened.check_clean()
    p.close()


def test_enter_keeps_a_token_and_escape_lets_it_go(page, report):
    attention = report[2]
    p = page.page
    p.click('[role=tab][data-view="head"]')
    choose(p, 1, [4])
    p.mouse.move(5, 5)
    p.focus('.tok[data-side="query"][data-i="5"]')
    p.keyboard.press("Enter")
    p.focus("select.layer")  # the keyboard moves on: the kept token stays drawn
    np.testing.assert_allclose(shown_weights(p, "key", 4), attention[1, 4, 5], atol=ROUNDING)
    p.focus('.tok[data-side="query"][data-i="5"]')
    p.keyboard.press("Enter")  # a second Enter keeps it too
    p.focus("select.layer")
    assert len(shown_weights(p, "key", 4)) == 64
    p.focus('.tok[data-side="query"][data-i="5"]')
    p.keyboard.press("Escape")
    p.focus("select.layer")
    assert shown_weights(p, "key", 4) == [] and p.locator(".readout").first.text_content() == "Hover or tap a token."
    page.check_clean()


def test_model_view_opens_a_head_and_reads_the_value_under_the_pointer(page, report):
    attention = report[2]
    p = page.page
    p.click('[role=tab][data-view="model"]')
    assert p.locator("button.cell").count() == 6 * 12
    p.click('button.cell[data-layer="2"][data-head="5"]')
    large = p.locator('canvas.large-map[data-layer="2"][data-head="5"]')
    box = large.bounding_box()
    i, j = 7, 20
    large.hover(position={"x": (j + 0.5) * box["width"] / 64, "y": (i + 0.5) * box["height"] / 64})
    readout = p.locator('[data-view="model"] .readout').text_content()
    assert f"query {i} " in readout and f"key {j} " in readout
    assert abs(float(readout.rsplit(": ", 1)[1]) - attention[2, 5, i, j]) <= ROUNDING
    page.check_clean()


def test_positions_and_embeddings_views(page, report):
    _, data, _ = report
    p = page.page
    p.click('[role=tab][data-view="positions"]')
    canvas = p.locator("canvas[data-panel]").first
    canvas.hover(position={"x": 1, "y": 1})
    assert "(i 0, j 0, value 1.0000)" in p.locator('[data-view="positions"] .readout').text_content()  # cos(v, v)
    assert "translation invariance" in p.locator('[data-view="positions"] table').text_content()
    p.click('[role=tab][data-view="embeddings"]')
    rows = p.locator('[data-view="embeddings"] tbody tr')
    assert rows.count() == 64
    cells = rows.nth(1).locator("td").all_text_contents()
    assert float(cells[2]) == pytest.approx(data["norms"]["token"][1], abs=1e-4)
    assert float(cells[5]) == pytest.approx(data["norms"]["sum"][1], abs=1e-4)
    page.check_clean()


def glyph_mask(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return grey < 160


def test_screenshot_is_drawn_with_cjk_glyphs(page, tmp_path):
    """Not blank, and the Chinese labels are glyphs: different characters give different shapes, unlike the box
    drawn for a character no font has (U+0378 is unassigned)."""
    from PIL import Image

    p = page.page
    p.click('[role=tab][data-view="head"]')
    shot = tmp_path / "head.png"
    p.screenshot(path=str(shot), full_page=True)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, lines and controls, not a blank page
    p.evaluate(
        """() => { for (const [id, ch] of [["probe-a", "我"], ["probe-b", "爱"], ["probe-c", "\\u0378"],
                                          ["probe-d", "\\u0379"]]) {
            const s = document.createElement("span"); s.id = id; s.textContent = ch;
            s.style.fontSize = "40px"; s.style.color = "black";
            document.getElementById("report").prepend(s); } }"""
    )
    masks = {c: glyph_mask(p.locator(f"#probe-{c}").screenshot()) for c in "abcd"}
    tofu_a, tofu_b = masks["c"], masks["d"]
    assert tofu_a.shape == tofu_b.shape and (tofu_a == tofu_b).all()  # the check sees tofu as tofu
    for c in "ab":
        assert masks[c].sum() > 20
        assert masks[c].shape != tofu_a.shape or (masks[c] != tofu_a).any(), "a CJK character drew as a box"
    assert masks["a"].shape != masks["b"].shape or (masks["a"] != masks["b"]).any()
    token = p.locator('.tok[data-side="query"][data-i="1"] text')  # 我 in the head view itself
    assert token.text_content() == "我" and glyph_mask(token.screenshot()).sum() > 10


# ---------------------------------------------------------------- the other commands


def test_other_commands_draw_real_views_that_fit_a_phone(browser, tiny_models, tmp_path):
    """compare: the CKA matrix; stats: the heatmaps and the pattern map; ablate: per-layer lines; extrapolate: lines
    per variant; each value read from the page equals the command's JSON; and every page fits a 390 px screen."""
    bert, gpt2 = str(tiny_models["BERT"]), str(tiny_models["GPT-2"])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\non the mat today\n", encoding="utf-8")
    document = tmp_path / "document.txt"
    document.write_text("the cat sat on the mat today and so does order " * 12, encoding="utf-8")
    runs = {
        "positions": ["positions", "--scheme", "alibi", "--length", "24"],
        "compare": ["compare", "the cat sat", "-m", bert, "-m", gpt2],
        "stats": ["stats", str(corpus), "-m", bert],
        "ablate": ["ablate", "the cat sat on the mat", "-m", bert],
        "extrapolate": [
            *("extrapolate", str(document), "-m", str(tiny_models["LLaMA"]), "--lengths", "16,32"),
            *("--variant", "as-trained", "--variant", "linear:2"),
        ],
    }
    for name, args in runs.items():
        path = tmp_path / f"{name}.html"
        result = run_cli(*args, "--json", "-o", str(path))  # the page and the JSON of one run
        assert result.exit_code == 0, (name, result.stderr)
        data = json.loads(result.stdout)
        opened = Page(browser, path)
        p = opened.page
        if name == "positions":
            assert p.locator("canvas[data-panel]").count() == 1
        elif name == "compare":
            pair = data["similarity"][0]
            cka = np.array(pair["cka"], dtype=float)
            cell = p.locator('svg.cka rect[data-i="2"][data-j="1"] title').text_content()
            assert float(cell.rsplit(": ", 1)[1]) == pytest.approx(cka[2, 1], abs=1e-3)
            assert p.locator("svg.cka rect").count() == cka.size
        elif name == "ablate":
            mode = data["modes"][1]
            dots = p.locator("figure.chart").first.locator("circle")
            assert dots.count() == sum(len(m["layers"]) for m in data["modes"])
            shown = p.locator("figure.chart").first.locator("circle title").nth(len(mode["layers"]) + 2)
            assert shown.text_content().startswith(mode["mode"] + " · layer ")
            assert float(shown.text_content().rsplit(": ", 1)[1]) == pytest.approx(
                mode["layers"][2]["cosine_mean"], abs=1e-3
            )
        elif name == "extrapolate":  # perplexity per length, one line per variant, as in the JSON
            variant = data["variants"][1]
            dots = p.locator("figure.chart").first.locator("circle title")
            assert dots.count() == len(data["variants"]) * len(data["lengths"])
            shown = dots.nth(len(data["lengths"]) + 1).text_content()
            assert shown.startswith(variant["name"] + " · window length 32: ")
            assert float(shown.rsplit(": ", 1)[1]) == pytest.approx(variant["perplexity"]["32"], rel=1e-3)
            p.click('[role=tab]:has-text("by position")')
            assert p.locator("figure.chart:visible circle").count() > 0
        p.click('[role=tab]:has-text("tables"), [role=tab]:has-text("heads")')
        assert p.locator("table.sortable").count() >= 1
        assert p.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 100)")
        if name == "stats":  # the layers x heads maps and the pattern map, from the same numbers as the table
            assert p.locator('figure[data-statistic="entropy"] rect').count() == 2 * 4
            tooltip = p.locator('figure[data-statistic="self"] rect[data-layer="1"][data-head="2"] title')
            row = next(r for r in data["heads"] if (r["layer"], r["head"]) == (1, 2))
            assert float(tooltip.text_content().rsplit(": ", 1)[1]) == pytest.approx(row["self"], abs=1e-4)
            patterns = p.locator('figure[data-statistic="pattern"] rect title').all_text_contents()
            assert [t.rsplit(": ", 1)[1] for t in patterns] == [r["pattern"] or "–" for r in data["heads"]]
            column = 3  # sort the heads by a statistic, then back
            p.locator("th button").nth(column).click()
            values = [float(x) for x in p.locator(f"tbody tr td:nth-child({column + 1})").all_text_contents()]
            assert values == sorted(values) and len(values) == 2 * 4
            p.locator("th button").nth(column).click()
            values = [float(x) for x in p.locator(f"tbody tr td:nth-child({column + 1})").all_text_contents()]
            assert values == sorted(values, reverse=True)
        opened.check_clean()
        p.close()
        phone = Page(browser, path, width=390)
        phone.every_view_fits(name)
        phone.check_clean()
        phone.page.close()


def test_inspect_page_fits_a_phone(browser, report):
    phone = Page(browser, report[0], width=390)
    phone.every_view_fits("inspect")
    phone.check_clean()
    phone.page.close()


def ready_ms(browser, path: Path) -> float:
    """Navigation start to the page's own ready mark (maps inflated, first view drawn), in ms."""
    opened = Page(browser, path)
    ms = opened.page.evaluate("Number(document.documentElement.dataset.readyMs)")
    opened.check_clean()
    opened.page.close()
    return ms


@pytest.fixture(scope="module")
def reference_ms(browser, tmp_path_factory) -> float:
    """How long this machine, as loaded as it is now, takes to open a report with no maps at all (the same script
    and style): the yardstick of the render-time budgets. The best of three loads."""
    from posemb_cli.render.html import report_page, write_report

    path = tmp_path_factory.mktemp("reference") / "reference.html"
    write_report(path, report_page("reference", [{"type": "text", "text": "nothing to draw"}]))
    return min(ready_ms(browser, path) for _ in range(3))


def test_render_time_of_the_64_token_report(browser, report, reference_ms, capsys):
    """The issue's budget: drawn within 1 s on a quiet machine (navigation start to the page's "ready", which
    includes inflating the maps and drawing the head view; then the 72 heatmaps of the model view). On a machine
    busy with other jobs the budget grows with the time the same browser needs for an empty report right now
    (`reference_ms`): within max(1 s, 4 × that). The best of three loads."""
    loads, models = [], []
    for _ in range(3):
        opened = Page(browser, report[0])
        loads.append(opened.page.evaluate("Number(document.documentElement.dataset.readyMs)"))
        models.append(
            opened.page.evaluate(
                "() => { const t = performance.now(); document.querySelector('[data-view=model]').click();"
                " return performance.now() - t; }"
            )
        )
        opened.check_clean()
        opened.page.close()
    with capsys.disabled():
        size = report[0].stat().st_size / 1e6
        shown = f"ready in {[round(x) for x in loads]} ms, model view in {[round(x) for x in models]} ms"
        print(f"\n64-token report: {size:.2f} MB; {shown}; an empty report: {reference_ms:.0f} ms")
    budget = max(1000.0, 4 * reference_ms)
    assert min(loads) < budget and min(models) < budget


# ---------------------------------------------------------------- a text as long as the model takes


@pytest.fixture(scope="module")
def long_report(tmp_path_factory):
    """The bundled model on 512 tokens (a longer text, cut by the model's limit): the report and its JSON."""
    words = "position embeddings tell the model where each token sits while attention decides what to read".split()
    text = " ".join(words[k % len(words)] for k in range(600))
    path = tmp_path_factory.mktemp("long") / "long.html"
    result = run_cli("inspect", text, "-o", str(path))
    assert result.exit_code == 0, result.stderr
    return path


def test_a_512_token_report_holds_every_view_within_5_mb(browser, long_report, reference_ms, capsys):
    size = long_report.stat().st_size
    assert size <= 5_000_000
    timings = []
    for width in (1300, 390):
        opened = Page(browser, long_report, width=width)
        p = opened.page
        timings.append(p.evaluate("Number(document.documentElement.dataset.readyMs)"))
        assert p.locator('.tok[data-side="query"]').count() == 512
        assert p.locator("line[data-head]").count() == 512  # the strongest head of layer 0, before any hover
        notes = p.locator("p.note").all_text_contents()
        assert any("layers 0–5 × heads 0–11 of 512 tokens" in n and "8 bits" in n for n in notes)
        p.click('[role=tab][data-view="model"]')
        assert p.locator("button.cell").count() == 6 * 12
        p.locator('button.cell[data-layer="5"][data-head="11"]').click()
        assert p.locator('canvas.large-map[data-layer="5"]').count() == 1
        if width == 390:
            opened.every_view_fits("512-token inspect")
        opened.check_clean()
        p.close()
    with capsys.disabled():
        shown = f"ready in {[round(t) for t in timings]} ms (desktop, phone); an empty report: {reference_ms:.0f} ms"
        print(f"\n512-token report: {size / 1e6:.2f} MB; {shown}")
    assert min(timings) < max(3000.0, 10 * reference_ms)  # about 1 s on a quiet machine


def test_the_long_text_folds(browser, long_report):
    opened = Page(browser, long_report)
    p = opened.page
    text = p.locator("p.text")
    folded = text.bounding_box()["height"]
    p.click("button.fold")
    assert text.bounding_box()["height"] > 5 * folded
    assert p.locator("button.fold").get_attribute("aria-expanded") == "true"
    opened.page.close()


# ---------------------------------------------------------------- hostile text and names


TRAP = (
    "</script><script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    "{{SCRIPT}}{{DATA}}{{STYLE}}\"'`\u2028\u2029 \u202eevil\u2069 after"
)


def test_hostile_text_and_folder_names_are_inert_data(browser, tiny_models, tmp_path):
    """A text, its tokens and the model's folder name holding script, markup, the template's own slot names, line
    separators, a bidi override (with a stray isolate close) and a NUL: shown as text, no script runs (the payload
    would change document.title), the page and its JSON stay whole, and the override cannot reorder the page."""
    import shutil as sh

    from posemb_cli.core import inspect_texts
    from posemb_cli.models import load
    from posemb_cli.positions import position_picture
    from posemb_cli.render.html import inspect_report

    folder = tmp_path / "<img src=x onerror=\"document.title='pwned'\">{{SCRIPT}}\u202e"
    sh.copytree(tiny_models["BERT"], folder)
    text = TRAP + " nul:\x00 end"
    loaded = load(str(folder))
    result = next(inspect_texts(loaded, [text]))
    path = tmp_path / "trap.html"
    inspect_report(path, result, "all", position_picture(loaded, 32))
    html = path.read_text(encoding="utf-8")
    assert "<img" not in html and "document.title='pwned'</script>" not in html and html.count("<script") == 2
    opened = Page(browser, path)
    p = opened.page
    assert p.evaluate("document.title").startswith("posemb inspect · ") and "pwned" != p.evaluate("document.title")
    assert p.locator("#report img, #report script").count() == 0
    data = json.loads(p.locator("#report-data").text_content())
    assert data["text"] == text and str(folder) in data["title"]  # the embedded JSON is whole
    shown = p.locator("p.text").text_content()
    assert TRAP.replace("\u2069", "") in shown and "nul:\u2400 end" in shown  # NUL shown as its picture
    assert shown.endswith("\u202c”")  # the stray isolate close is dropped; the override is closed at the text's end
    assert str(folder) in p.locator("h1").text_content()
    # the override inside the text is isolated: the closing quote after it stays after it, left to right
    after, last = p.evaluate(
        """() => { const bdi = document.querySelector('p.text bdi'); const range = document.createRange();
            range.selectNodeContents(bdi.nextSibling); const rects = bdi.getClientRects();
            const r = range.getClientRects()[0], b = rects[rects.length - 1];
            return [[r.left, r.top], [b.right, b.top]]; }"""
    )
    assert after[1] > last[1] + 1 or after[0] >= last[0] - 1
    opened.check_clean()
    p.close()


def test_non_finite_values_are_drawn_blank(browser, tmp_path):
    """A Φ with NaN and inf cells: the page draws them grey (as the PNGs leave them blank), reads "–" under the
    pointer, keeps the colour scale of the finite cells, and its JSON stays valid."""
    from posemb_cli.render.html import positions_view, report_page, write_report
    from posemb_cli.schemes.base import PositionPicture

    matrix = np.arange(16, dtype=float).reshape(4, 4) / 15
    matrix[1, 2], matrix[3, 0] = np.nan, np.inf
    picture = PositionPicture({"Φ": matrix}, "a Φ with holes", "NaN and inf cells", "Φ", False)
    path = tmp_path / "holes.html"
    write_report(path, report_page("holes", [], [positions_view(picture)]))
    opened = Page(browser, path)
    p = opened.page
    pixels = p.evaluate(
        """() => { const c = document.querySelector('canvas[data-panel]');
            const d = c.getContext('2d').getImageData(0, 0, 4, 4).data;  // one read: the 4 x 4 map
            return [[1, 2], [3, 0], [0, 0], [3, 3]].map(([i, j]) => [...d.slice(4 * (4 * i + j), 4 * (4 * i + j) + 3)]);
        }"""
    )
    assert pixels[0] == [238, 238, 238] and pixels[1] == [238, 238, 238]
    assert pixels[2] == [68, 1, 84] and pixels[3] == [253, 231, 37]  # viridis ends: the finite range 0 .. 1
    canvas = p.locator("canvas[data-panel]")
    box = canvas.bounding_box()
    canvas.hover(position={"x": 2.5 * box["width"] / 4, "y": 1.5 * box["height"] / 4})
    assert "(i 1, j 2, value –)" in p.locator('[data-view="positions"] .readout').text_content()
    opened.check_clean()
    p.close()
