"""Static plots: every kind renders for the bundled model and for tiny models of other families, the pictures have
the size asked for, the values handed to matplotlib equal the JSON values, CJK labels render as glyphs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from posemb_cli.errors import PosembError

HEADLINE = "我爱自然语言处理"
ENGLISH = "position matters"
MIXED = "Position matters, 我爱自然语言处理 and so does order!"


@pytest.fixture(scope="module")
def pictured(bundled):
    """The bundled model (conftest) and its results on the headline and on the English text."""
    from posemb_cli.core import inspect_texts

    loaded = bundled
    chinese, english = inspect_texts(loaded, [HEADLINE, ENGLISH])
    return loaded, chinese, english


@pytest.fixture(scope="module")
def tiny(tiny_models):
    from posemb_cli.core import inspect_texts
    from posemb_cli.models import load

    cache = {}

    def get(family: str):
        if family not in cache:
            loaded = load(str(tiny_models[family]))
            cache[family] = (loaded, next(inspect_texts(loaded, [MIXED])))
        return cache[family]

    return get


def json_of(result, **options):
    from posemb_cli.render.data import to_json

    return to_json(result, vectors=True, attention=True, **options)


def assert_pixels(path: Path, data) -> None:
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    # matplotlib makes a canvas of figsize * dpi pixels, truncated to whole pixels
    assert abs(width - data.figsize[0] * data.dpi) < 1, (width, data.figsize, data.dpi)
    assert abs(height - data.figsize[1] * data.dpi) < 1, (height, data.figsize, data.dpi)


def no_temp_files(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".")]


class GlyphCapture(logging.Handler):
    """Collects matplotlib's missing-glyph complaints from both warnings and logging."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> GlyphCapture:
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        logging.getLogger("matplotlib").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("matplotlib").removeHandler(self)
        self.messages += [str(w.message) for w in self._caught]
        self._warnings.__exit__(*exc)

    @property
    def glyph_messages(self) -> list[str]:
        return [m for m in self.messages if "missing from" in m or "Glyph" in m]


# ---------------------------------------------------------------- attention


def test_attention_grid_equals_json(pictured, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    loaded, chinese, _ = pictured
    [(path, data)] = render_plot("attention", chinese, tmp_path / "attn.png")
    assert path == tmp_path / "attn.png" and path.read_bytes().startswith(b"\x89PNG")
    assert_pixels(path, data)
    expected = np.array(json_of(chinese)["attention"], dtype=np.float32)  # [layer][head][query][key]
    layers, heads = loaded.info.layers, loaded.info.heads
    assert data.kind == "attention"
    assert np.array_equal(data.arrays["attention"], expected)
    assert np.allclose(data.arrays["mean"], expected.mean(axis=1), atol=1e-7)
    # what matplotlib holds: one image per panel, row by row, the head mean last in each row
    images = data.drawn["images"]
    assert len(images) == layers * (heads + 1)
    for layer in range(layers):
        for head in range(heads):
            assert np.array_equal(images[layer * (heads + 1) + head], expected[layer, head])
        assert np.allclose(images[layer * (heads + 1) + heads], expected[layer].mean(axis=0), atol=1e-7)
    assert "6 layers × 12 heads" in data.title
    assert no_temp_files(tmp_path)


def test_attention_one_head_svg_equals_json(pictured, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _, chinese, _ = pictured
    [(path, data)] = render_plot("attention", chinese, tmp_path / "head.svg", layers=[3], heads=[7])
    head = path.read_bytes()
    assert head.lstrip().startswith(b"<?xml") and b"<svg" in head[:2000]
    assert data.kind == "attention_head"
    expected = np.array(json_of(chinese, layers=[3], heads=[7])["attention"], dtype=np.float32)[0, 0]
    assert np.array_equal(data.arrays["attention"], expected)
    assert len(data.drawn["images"]) == 1 and np.array_equal(data.drawn["images"][0], expected)
    assert "layer 3, head 7" in data.title
    # [UNK] tokens are labelled with the characters the reader typed; special tokens keep their names
    assert data.labels == ["[CLS]", *HEADLINE, "[SEP]"]
    assert any("[UNK]" in note for note in data.notes)


def test_attention_selected_layers_and_heads(tiny, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    [(_, data)] = render_plot("attention", result, tmp_path / "a.pdf", layers=[1], heads=[0, 2])
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    expected = np.array(json_of(result, layers=[1], heads=[0, 2])["attention"], dtype=np.float32)
    assert np.array_equal(data.arrays["attention"], expected)
    full = np.array(json_of(result)["attention"], dtype=np.float32)
    assert np.allclose(data.arrays["mean"], full[[1]].mean(axis=1), atol=1e-7)  # mean of all heads of layer 1
    assert len(data.drawn["images"]) == 3


@pytest.mark.parametrize("family", ["GPT-2", "LLaMA"])
def test_attention_tiny_models(tiny, tmp_path, family):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny(family)
    [(path, data)] = render_plot("attention", result, tmp_path / "attn.png", dpi=100)
    assert_pixels(path, data)
    assert np.array_equal(data.arrays["attention"], np.array(json_of(result)["attention"], dtype=np.float32))
    # byte-level BPE strings are shown as the text they came from: no 'Ġ', no mojibake
    assert not any("Ġ" in label or "æ" in label for label in data.labels)
    assert "我¹" in data.labels and "␣" in data.labels


def test_bad_layer_or_head_is_a_usage_error(tiny, tmp_path):
    from posemb_cli.errors import PosembUsageError
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    with pytest.raises(PosembUsageError, match="heads 0..3"):
        render_plot("attention", result, tmp_path / "a.png", layers=[0], heads=[9])
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- positions


def cosine(rows: np.ndarray) -> np.ndarray:
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit @ unit.T


def test_positions_bundled_pdf(pictured, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot

    loaded, _, english = pictured
    table = loaded.model.embeddings.position_embeddings.weight.detach().numpy().astype(np.float64)
    info = position_picture(loaded)
    assert info.panels["similarity"].shape == (128, 128) and "start at" not in info.note  # default: 128 of 512
    [(path, data)] = render_plot("positions", english, tmp_path / "pos.pdf", position_picture=info)
    assert path.read_bytes().startswith(b"%PDF")
    assert np.allclose(data.arrays["similarity"], cosine(table[:128]), atol=1e-6)
    assert np.array_equal(data.drawn["images"][0], data.arrays["similarity"])
    # the first rows are the position vectors the JSON reports for the text's tokens
    vectors = np.array(json_of(english)["vectors"]["position"])
    k = len(vectors)
    assert np.allclose(data.arrays["similarity"][:k, :k], cosine(vectors), atol=1e-6)
    assert "cosine similarity" in data.title.lower()


def test_positions_count_and_limit(pictured, tmp_path):
    from posemb_cli.errors import PosembUsageError
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot

    loaded, _, english = pictured
    [(path, data)] = render_plot(
        "positions", english, tmp_path / "p.png", position_picture=position_picture(loaded, 16)
    )
    assert data.arrays["similarity"].shape == (16, 16)
    assert_pixels(path, data)
    with pytest.raises(PosembUsageError, match="512 positions"):
        position_picture(loaded, 513)


def test_positions_roberta_rows_start_after_padding(tiny, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot

    loaded, result = tiny("RoBERTa")
    info = position_picture(loaded, 20)
    assert "position ids start at 2" in info.note  # padding_idx 1 + 1
    weight = loaded.model.embeddings.position_embeddings.weight.detach().numpy()
    # row p is what the model adds at the p-th token: the JSON position vectors of the text are the first rows
    vectors = np.array(json_of(result)["vectors"]["position"], dtype=np.float32)
    assert [t["position_id"] for t in json_of(result)["tokens"]][:3] == [2, 3, 4]
    k = min(len(vectors), 20)
    assert np.allclose(weight[2 : 2 + k], vectors[:k])
    [(_, data)] = render_plot("positions", result, tmp_path / "p.png", position_picture=info)
    assert np.allclose(data.arrays["similarity"], cosine(weight[2:22].astype(np.float64)), atol=1e-6)


def test_positions_gpt2(tiny, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot

    loaded, result = tiny("GPT-2")
    info = position_picture(loaded)
    assert info.panels["similarity"].shape == (64, 64)  # the tiny model has 64 positions: fewer than the default 128
    [(path, data)] = render_plot("positions", result, tmp_path / "p.png", position_picture=info)
    assert_pixels(path, data)
    weight = loaded.model.wpe.weight.detach().numpy().astype(np.float64)
    assert np.allclose(data.arrays["similarity"], cosine(weight), atol=1e-6)


def test_positions_rotary_score(tiny, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot
    from posemb_cli.schemes.rotary import rotary_frequencies, rotary_proximity

    loaded, result = tiny("LLaMA")
    info = position_picture(loaded, 48)
    dim, base = 8, 10000.0
    assert "no position vectors" in info.note and f"base {base:g}, dim {dim}" in info.note
    # dim and base read from the config reproduce the frequencies the model itself rotates with
    inv_freq = loaded.model.get_submodule(loaded.family.rotary_embedding).inv_freq.numpy()
    assert np.allclose(rotary_frequencies(dim, base), inv_freq, rtol=1e-6)
    [(path, data)] = render_plot("positions", result, tmp_path / "rot.svg", position_picture=info)
    assert np.allclose(data.arrays["similarity"], rotary_proximity(48, dim, base) / (dim / 2), atol=1e-12)
    assert "rotary" in data.title.lower() and "no position vectors" in data.notes[0]


def test_positions_alibi_bias(tiny, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot
    from posemb_cli.schemes.alibi import alibi_bias

    loaded, result = tiny("BLOOM")
    info = position_picture(loaded, 40)
    assert list(info.panels) == ["mean", "head 0", "head 2", "head 3"]
    [(path, data)] = render_plot("positions", result, tmp_path / "alibi.png", position_picture=info)
    assert_pixels(path, data)
    bias = alibi_bias(40, 4)
    assert np.allclose(data.arrays["mean"], bias.mean(axis=0))
    for head in (0, 2, 3):
        assert np.allclose(data.arrays[f"head {head}"], bias[head])
    assert len(data.drawn["images"]) == 4 and "ALiBi" in data.title


# ---------------------------------------------------------------- embeddings


def test_embeddings_bundled_equals_json(pictured, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _, _, english = pictured
    [(path, data)] = render_plot("embeddings", english, tmp_path / "parts.png", dpi=120)
    assert_pixels(path, data)
    obj = json_of(english)
    for part in ("token", "position", "segment", "sum"):
        assert np.array_equal(data.arrays[f"{part}_norm"], np.array(obj["norms"][part], dtype=np.float32))
    token, total = (np.array(obj["vectors"][k], dtype=np.float64) for k in ("token", "sum"))
    expected_cos = (token * total).sum(1) / np.linalg.norm(token, axis=1) / np.linalg.norm(total, axis=1)
    assert np.allclose(data.arrays["cosine"], expected_cos, atol=1e-6)
    # bar heights as matplotlib holds them: token, position, segment, sum, then the cosine
    bars = data.drawn["bars"]
    assert len(bars) == 5
    for heights, part in zip(bars, ("token", "position", "segment", "sum"), strict=False):
        assert np.allclose(heights, obj["norms"][part], atol=1e-6)
    assert np.allclose(bars[4], expected_cos, atol=1e-6)
    assert data.labels == ["[CLS]", "position", "matters", "[SEP]"]


@pytest.mark.parametrize("family", ["GPT-2", "LLaMA"])
def test_embeddings_tiny_models(tiny, tmp_path, family):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny(family)
    [(path, data)] = render_plot("embeddings", result, tmp_path / "parts.png")
    assert_pixels(path, data)
    obj = json_of(result)
    parts = {"GPT-2": ("token", "position", "sum"), "LLaMA": ("token", "sum")}[family]
    assert sorted(k for k in data.arrays if k.endswith("_norm")) == sorted(f"{p}_norm" for p in parts)
    for part in parts:
        assert np.array_equal(data.arrays[f"{part}_norm"], np.array(obj["norms"][part], dtype=np.float32))
    if family == "LLaMA":  # rotary: nothing is added, the sum is the token vector
        assert np.allclose(data.arrays["cosine"], 1.0, atol=1e-6)


# ---------------------------------------------------------------- all, files and errors


def test_all_into_new_folder(pictured, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot

    loaded, _, english = pictured
    folder = tmp_path / "figures"
    written = render_plot("all", english, folder, position_picture=position_picture(loaded, 32))
    assert [p.name for p, _ in written] == ["attention.png", "positions.png", "embeddings.png"]
    assert sorted(p.name for p in folder.iterdir()) == ["attention.png", "embeddings.png", "positions.png"]
    for path, data in written:
        assert_pixels(path, data)


def test_all_svg_for_a_rotary_model(tiny, tmp_path):
    from posemb_cli.positions import position_picture
    from posemb_cli.render.figures.inspect import render_plot

    loaded, result = tiny("LLaMA")
    written = render_plot("all", result, tmp_path, position_picture=position_picture(loaded), image_format="svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.svg", "embeddings.svg", "positions.svg"]
    assert [d.kind for _, d in written] == ["attention", "positions", "embeddings"]


@pytest.mark.parametrize("name", ["attn.jpg", "attn", "attn.PNG.txt"])
def test_unknown_suffix_is_refused(tiny, tmp_path, name):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    with pytest.raises(PosembError, match=r"\.png, \.svg or \.pdf"):
        render_plot("attention", result, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_upper_case_suffix_works(tiny, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    [(path, _)] = render_plot("embeddings", result, tmp_path / "E.PNG")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_unwritable_places_are_refused(tiny, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    with pytest.raises(PosembError, match="does not exist"):
        render_plot("attention", result, tmp_path / "missing" / "a.png")
    with pytest.raises(PosembError, match="does not exist"):  # --plot all creates one folder, not its parents
        render_plot("all", result, tmp_path / "missing" / "figures")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PosembError, match="not a folder"):
        render_plot("all", result, tmp_path / "file.txt")
    with pytest.raises(PosembError, match="names a file"):
        render_plot("all", result, tmp_path / "figs.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(PosembError, match="is a folder"):
        render_plot("embeddings", result, tmp_path / "dir.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder_is_refused(tiny, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PosembError, match="not writable"):
            render_plot("attention", result, folder / "a.png")
    finally:
        folder.chmod(0o700)


def test_interrupted_write_leaves_nothing(tiny, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    (tmp_path / "old.png").write_bytes(b"old picture")

    def half_then_interrupt(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        render_plot("embeddings", result, tmp_path / "old.png")
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"old picture"


def test_unknown_kind_and_bad_dpi(tiny, tmp_path):
    from posemb_cli.errors import PosembUsageError
    from posemb_cli.render.figures.inspect import render_plot

    _, result = tiny("GPT-2")
    with pytest.raises(PosembUsageError, match="attention, positions, embeddings, all"):
        render_plot("heatmap", result, tmp_path / "a.png")
    with pytest.raises(PosembUsageError, match="dpi"):
        render_plot("attention", result, tmp_path / "a.png", dpi=0)


# ---------------------------------------------------------------- fonts


def _require_cjk_font():
    """`make test` installs a CJK font where it can (root + apt); CI must have one. Elsewhere, skip with the reason."""
    from posemb_cli.render.fonts import find_cjk_font

    if find_cjk_font(HEADLINE) is not None:
        return
    message = "no CJK font found: install one (Debian/Ubuntu: apt-get install fonts-wqy-microhei or fonts-noto-cjk)"
    if os.environ.get("CI") or os.environ.get("POSEMB_REQUIRE_CJK_FONT"):
        pytest.fail(message)
    pytest.skip(message)


def test_cjk_font_is_installed():
    _require_cjk_font()


def test_headline_renders_without_missing_glyphs(pictured, tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    _require_cjk_font()

    _, chinese, _ = pictured
    told: list[str] = []
    with GlyphCapture() as capture:
        render_plot("attention", chinese, tmp_path / "attn.png", dpi=50, on_warning=told.append)  # glyphs: any dpi
        render_plot("attention", chinese, tmp_path / "head.pdf", layers=[3], heads=[7], on_warning=told.append)
        render_plot("embeddings", chinese, tmp_path / "parts.svg", on_warning=told.append)
    assert capture.glyph_messages == []
    assert told == []


def test_glyph_capture_sees_missing_glyphs(tmp_path):
    """The capture above is not blind: DejaVu Sans alone, asked to draw 我, is reported."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with GlyphCapture() as capture, matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        fig = Figure()
        FigureCanvasAgg(fig)
        fig.text(0.5, 0.5, "我")
        fig.savefig(tmp_path / "box.png")
    assert capture.glyph_messages


def test_no_cjk_font_gives_one_warning_with_install_advice(tiny, tmp_path, monkeypatch):
    from posemb_cli.positions import position_picture
    from posemb_cli.render import fonts
    from posemb_cli.render.figures.inspect import render_plot

    loaded, result = tiny("GPT-2")
    monkeypatch.setattr(fonts, "find_cjk_font", lambda text=None: None)
    told: list[str] = []
    with GlyphCapture() as capture:
        written = render_plot(
            "all", result, tmp_path, position_picture=position_picture(loaded), on_warning=told.append
        )
    assert len(told) == 1
    assert "apt-get install fonts-noto-cjk" in told[0] and "--font" in told[0] and "我" in told[0]
    assert capture.glyph_messages == []  # matplotlib's per-glyph warnings are replaced by the one above
    assert all(data.warnings == told for _, data in written)


def test_latin_text_needs_no_cjk_font(monkeypatch):
    from posemb_cli.render import fonts

    monkeypatch.setattr(fonts, "find_cjk_font", lambda text=None: pytest.fail("looked for a CJK font"))
    rc, told = fonts.font_settings("position matters [CLS] ␣ ¹ × —")
    assert rc["font.family"] == ["DejaVu Sans"] and told == []


def test_font_file_override(tmp_path):
    import matplotlib

    from posemb_cli.render import fonts

    serif = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSerif.ttf"
    rc, told = fonts.font_settings(HEADLINE, serif)
    assert rc["font.family"][:2] == ["DejaVu Serif", "DejaVu Sans"]
    assert len(rc["font.family"]) == 3 and told == []  # the CJK fallback still follows
    with pytest.raises(PosembError, match="does not exist"):
        fonts.font_settings(HEADLINE, tmp_path / "nope.ttf")
    (tmp_path / "bad.ttf").write_bytes(b"not a font")
    with pytest.raises(PosembError, match="cannot use"):
        fonts.font_settings(HEADLINE, tmp_path / "bad.ttf")


# ---------------------------------------------------------------- long inputs, headless


def synthetic_result(n: int, text: str = "word"):
    from posemb_cli.core import TextResult, Token
    from posemb_cli.models import ModelInfo

    rng = np.random.default_rng(0)
    info = ModelInfo("synthetic", "bert", "BERT", "learned_absolute", 2, 3, 8, 512, "/nowhere")
    words = [f"{text}{k}" for k in range(n - 2)]
    source = " ".join(words)
    tokens, start = [Token(0, 101, "[CLS]", 0, 0, None, None, True, False, None)], 0
    for k, word in enumerate(words, 1):
        tokens.append(Token(k, 1000 + k, word, k, 0, start, start + len(word), False, False, 0))
        start += len(word) + 1
    tokens.append(Token(n - 1, 102, "[SEP]", n - 1, 0, None, None, True, False, None))
    vectors = {key: rng.normal(size=(n, 8)).astype(np.float32) for key in ("token", "position", "segment")}
    logits = rng.normal(size=(2, 3, n, n))
    attention = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    total = vectors["token"] + vectors["position"] + vectors["segment"]
    return TextResult(source, None, info, tokens, sum=total, embedding_output=total, attention=attention, **vectors)


def test_long_input_stays_readable_and_bounded(tmp_path):
    from posemb_cli.render.figures.inspect import render_plot

    result = synthetic_result(400)
    [(_, head)] = render_plot("attention", result, tmp_path / "h.png", layers=[0], heads=[1], dpi=50)
    [(_, grid)] = render_plot("attention", result, tmp_path / "g.png", dpi=50)
    [(_, parts)] = render_plot("embeddings", result, tmp_path / "e.png", dpi=50)
    for data in (head, grid, parts):
        assert data.figsize[0] <= 26 and data.figsize[1] <= 26, (data.kind, data.figsize)
        assert len(data.labels) == 400
    short = synthetic_result(8)
    [(_, small)] = render_plot("attention", short, tmp_path / "s.png", layers=[0], heads=[1], dpi=50)
    assert head.figsize[0] > small.figsize[0]  # the figure grows with the text


def test_plots_never_import_pyplot(tmp_path):
    code = (
        "import sys; sys.path.insert(0, {tests!r}); from test_plots import synthetic_result; "
        "from posemb_cli.render.figures.inspect import render_plot; "
        "render_plot('attention', synthetic_result(6), {out!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    ).format(tests=str(Path(__file__).parent), out=str(tmp_path / "a.png"))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["DISPLAY"] = ":99"  # even with a display announced, nothing may try to open a window
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.png").exists()
