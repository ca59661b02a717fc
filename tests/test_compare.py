"""`posemb compare`: CKA against its formula and invariances, word merging by hand, tokenization on the bundled model,
numbers against transformers called directly, scheme pseudo-models, the figure and the errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import run_cli, transformers_run
from rich.console import Console

from posemb_cli.core import Token
from posemb_cli.metrics import cka_matrix, linear_cka
from posemb_cli.words import merge_attention, split_words, units, word_pieces

HEADLINE = "我爱自然语言处理"
TEXT = "The cat sat on the mat."


def direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), linear CKA: ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F) on column-centred X, Y."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def compare_json(*args: str) -> dict:
    result = run_cli("compare", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------------ CKA


@pytest.mark.parametrize("n, d1, d2", [(40, 7, 5), (12, 30, 50)])  # more words than dims, and fewer
def test_cka_equals_the_formula(n, d1, d2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d1))
    y = x[:, :1] @ rng.normal(size=(1, d2)) + rng.normal(size=(n, d2))
    assert linear_cka(x, y) == pytest.approx(direct_cka(x, y), rel=1e-10)
    layers_x, layers_y = [x, x**2], [y, np.sin(y), y[:, ::-1]]
    expected = [[direct_cka(a, b) for b in layers_y] for a in layers_x]
    np.testing.assert_allclose(cka_matrix(layers_x, layers_y), expected, rtol=1e-10)


def test_cka_invariances():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 16)), rng.normal(size=(50, 9))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)  # orthogonal transform
    assert linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-10)  # isotropic scaling
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)  # a shift (centring)
    assert linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-12)
    anisotropic = x * np.linspace(0.1, 10, 16)  # CKA is not invariant to any invertible map
    assert abs(linear_cka(anisotropic, x) - 1) > 1e-3


# ------------------------------------------------------------------------------------------ words


def _tok(index, token, start, end, special=False):
    return Token(index, 0, token, index, None, start, end, special, False, None if special else 0)


def test_words_split_on_whitespace_and_cjk_characters():
    assert [w.text for w in split_words("The cat  sat on\tthe mat.")] == ["The", "cat", "sat", "on", "the", "mat."]
    assert [w.text for w in split_words(HEADLINE)] == list(HEADLINE)
    assert [w.text for w in split_words("BERT读书 ok")] == ["BERT", "读", "书", "ok"]
    assert [w.text for w in split_words("안녕하세요 세계")] == ["안녕하세요", "세계"]  # Korean has spaces
    assert [(w.start, w.end) for w in split_words(" ab c")] == [(1, 3), (4, 5)]


def test_word_attention_by_hand():
    """'ab cd' as [CLS] a ##b cd [SEP]: word 'ab' = tokens 1, 2. Clark et al.: sum over key pieces, mean over query
    pieces; [CLS] and [SEP] stay units."""
    text = "ab cd"
    tokens = [
        _tok(0, "[CLS]", None, None, True),
        _tok(1, "a", 0, 1),
        _tok(2, "##b", 1, 2),
        _tok(3, "cd", 3, 5),
        _tok(4, "[SEP]", None, None, True),
    ]
    a = np.array(
        [
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.1, 0.3, 0.4, 0.1, 0.1],
            [0.5, 0.1, 0.1, 0.2, 0.1],
            [0.0, 0.6, 0.2, 0.1, 0.1],
            [0.3, 0.1, 0.1, 0.1, 0.4],
        ]
    )
    words = split_words(text)
    parts = units(tokens, words, text)
    assert [(u.label, u.tokens, u.word) for u in parts] == [
        ("[CLS]", (0,), None),
        ("ab", (1, 2), 0),
        ("cd", (3,), 1),
        ("[SEP]", (4,), None),
    ]
    expected = np.array(
        [
            [0.2, 0.4, 0.2, 0.2],  # [CLS] -> ab = 0.2 + 0.2
            [0.3, 0.45, 0.15, 0.1],  # from ab: mean of rows 1, 2: [CLS] (0.1+0.5)/2, ab ((0.3+0.4)+(0.1+0.1))/2, ...
            [0.0, 0.8, 0.1, 0.1],
            [0.3, 0.2, 0.1, 0.4],
        ]
    )
    merged = merge_attention(a, parts)
    np.testing.assert_allclose(merged, expected, atol=1e-12)
    np.testing.assert_allclose(merged.sum(-1), 1.0, atol=1e-12)
    stacked = merge_attention(np.stack([a, a[::-1, :]])[None], parts)  # (layers, heads, n, n) at once
    assert stacked.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(stacked[0, 0], expected)


def test_byte_pieces_and_whitespace_tokens():
    text = "我 a"  # byte-level BPE: three tokens for 我, then 'Ġa' whose offsets include the space
    tokens = [_tok(0, "æ", 0, 1), _tok(1, "Ī", 0, 1), _tok(2, "ĳ", 0, 1), _tok(3, "Ġ", 1, 2), _tok(4, "Ġa", 1, 3)]
    words = split_words(text)
    assert word_pieces(tokens, words) == [[0, 1, 2], [4]]  # 'Ġ' only covers the space
    assert [(u.label, u.tokens) for u in units(tokens, words, text)] == [("我", (0, 1, 2)), ("␣", (3,)), ("a", (4,))]


def test_inspect_words_helpers(tiny_models):
    from posemb_cli.core import inspect_texts
    from posemb_cli.models import load
    from posemb_cli.render.data import words_json
    from posemb_cli.render.table import print_words

    result = next(inspect_texts(load(str(tiny_models["RoBERTa"])), ["Position matters, 我爱 you"], words=True))
    data = words_json(result.words, attention=True, layers=[1], heads=[0, 2])
    assert [w["text"] for w in data["words"]] == ["Position", "matters,", "我", "爱", "you"]
    assert all(w["tokens"] for w in data["words"])
    attention = np.array(data["word_attention"])
    assert attention.shape == (1, 2, len(data["word_units"]), len(data["word_units"]))
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    console = Console(file=io.StringIO(), width=160, no_color=True)
    print_words(console, result)
    assert "attention per layer between words" in console.file.getvalue()


# ------------------------------------------------------------------------------------------ the command


def test_bundled_headline_tokenization_and_json_keys(tiny_models):
    data = compare_json(HEADLINE, "-m", "bundled", "-m", str(tiny_models["GPT-2"]), "-m", "scheme:sinusoidal")
    assert set(data) == {
        "text",
        "corpus",
        "lines",
        "words_view",
        "position_length",
        "position_metric",
        "words",
        "models",
        "alignment",
        "similarity",
        "warnings",
    }
    bundled, gpt2, scheme = data["models"]
    assert set(bundled) == {
        "name",
        "kind",
        "facts",
        "tokenization",
        "tokens",
        "positions",
        "attention_unit",
        "attention",
        "warnings",
    }
    assert bundled["facts"] == {
        "type": "bert",
        "family": "BERT",
        "layers": 6,
        "heads": 12,
        "hidden_size": 384,
        "head_dim": 32,
        "parameters": 22713216,
        "vocab_size": 30522,
        "max_positions": 512,
        "position_scheme": "learned_absolute",
    }
    counts = bundled["tokenization"]
    assert (counts["tokens"], counts["unknown"], counts["special"]) == (8, 7, 2)
    assert counts["unknown_characters"] == "爱自然语言处理"
    assert counts["coverage"] == pytest.approx(1 / 8) and counts["unknown_rate"] == pytest.approx(7 / 8)
    assert gpt2["tokenization"]["unknown"] == 0 and gpt2["tokenization"]["coverage"] == 1.0
    assert gpt2["tokenization"]["tokens"] == 24  # three UTF-8 bytes per character
    # one row per character, [CLS]/[SEP] in rows of their own; GPT-2 has three byte pieces per character
    rows = data["alignment"]
    assert [row["text"] for row in rows] == [None, *HEADLINE, None]
    assert rows[0]["tokens"] == [["[CLS]"], [], None] and rows[-1]["tokens"] == [["[SEP]"], [], None]
    assert rows[1]["tokens"][0] == ["我"] and rows[2]["tokens"][0] == ["[UNK]"]
    assert all(len(row["tokens"][1]) == 3 for row in rows[1:-1])
    assert scheme["kind"] == "scheme" and scheme["tokenization"] is None and scheme["attention"] is None
    assert scheme["positions"]["source"] == "analytic: sinusoidal, dim 384, base 10000"  # the first model's width
    assert data["position_length"] == 64  # the tiny model has 64 positions
    assert len(bundled["attention"]) == 6 and set(bundled["attention"][0]) == {
        "layer",
        "entropy",
        "uniform_entropy",
        "distance",
        "special",
        "self",
        "prev",
        "next",
    }
    (pair,) = data["similarity"]
    assert pair["words"] == 8 and pair["labels_a"][:2] == ["embeddings", "layer 0"]
    assert np.array(pair["cka"]).shape == (7, 3)


def test_numbers_against_transformers(tiny_models):
    """Attention distance and CKA on word vectors, computed here from transformers' own outputs."""
    data = compare_json(TEXT, "-m", str(tiny_models["BERT"]), "-m", str(tiny_models["GPT-2"]))
    words = [(w["start"], w["end"]) for w in data["words"]]
    layers = []
    for family in ("BERT", "GPT-2"):
        _, _, encoding, out = transformers_run(tiny_models[family], TEXT, offsets=True)
        offsets = encoding["offset_mapping"][0].tolist()
        a = out.attentions[1][0].numpy()  # layer 1: (heads, n, n)
        n = a.shape[-1]
        distance = (a * np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])).sum(-1).mean()
        model = data["models"][0 if family == "BERT" else 1]
        assert model["attention"][1]["distance"] == pytest.approx(distance, rel=1e-5)
        hidden = torch.stack(out.hidden_states)[:, 0].numpy()  # (layers + 1, n, d)
        pieces = [[k for k, (s, e) in enumerate(offsets) if s < e and s < we and ws < e] for ws, we in words]
        layers.append([np.stack([h[p].mean(0) for p in pieces]) for h in hidden])
    expected = [[direct_cka(x, y) for y in layers[1]] for x in layers[0]]
    np.testing.assert_allclose(data["similarity"][0]["cka"], expected, rtol=1e-4)


def test_self_similarity_has_ones_on_the_diagonal(tiny_models):
    data = compare_json(TEXT, "-m", str(tiny_models["LLaMA"]), "-m", str(tiny_models["LLaMA"]), "--words")
    cka = np.array(data["similarity"][0]["cka"])
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-6)
    model = data["models"][0]
    assert model["attention_unit"] == "word"
    assert [u["label"] for u in model["units"]] == ["<s>", "The", "cat", "sat", "on", "the", "mat."]
    assert [row["text"] for row in data["alignment"]] == TEXT.split()


def test_scheme_pseudo_models(tiny_models):
    data = compare_json(
        TEXT, "-m", str(tiny_models["BLOOM"]), "-m", "scheme:rotary", "-m", "scheme:alibi", "-m", "scheme:t5"
    )
    bloom, rotary, alibi, t5 = data["models"]
    assert data["position_length"] == 128  # BLOOM has no position limit
    assert bloom["positions"]["scheme"] == "alibi" and data["similarity"] == []
    assert rotary["positions"]["source"] == "analytic: rotary, dim 8, base 10000"  # head dim of BLOOM: 32 / 4
    assert alibi["positions"]["slopes"] == pytest.approx([2 ** (-8 * h / 4) for h in range(1, 5)])
    assert t5["facts"]["position_scheme"] == "relative_bucket" and t5["facts"]["layers"] is None
    assert rotary["positions"]["properties"]["translation_invariance"] == pytest.approx(1.0)
    table = run_cli("compare", TEXT, "-m", str(tiny_models["BLOOM"]), "-m", "scheme:rotary")
    assert table.exit_code == 0, table.output
    assert "scheme:rotary" in table.stdout and "translation invariance" in table.stdout


def test_corpus_averages_the_lines(tiny_models, tmp_path):
    lines = ["The cat sat on the mat.", "", "Position matters!", "A third line", "not read"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    models = ["-m", str(tiny_models["BERT"]), "-m", str(tiny_models["ELECTRA"])]
    result = run_cli("compare", *models, "--corpus", str(corpus), "--max-lines", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lines"] == 3 and data["text"] is None and data["alignment"]
    assert "first 3 lines" in result.stderr
    singles = [compare_json(line, *models)["models"][0] for line in lines[:1] + lines[2:4]]
    rows = np.array([len(s["tokens"]) for s in singles], dtype=float)  # query rows of each text
    for layer, row in enumerate(data["models"][0]["attention"]):
        # pooled over all query rows of all lines (the rule of `stats`): each text weighs by its rows
        entropy = [s["attention"][layer]["entropy"] for s in singles]
        assert row["entropy"] == pytest.approx(np.average(entropy, weights=rows), rel=1e-6)
        prev = [s["attention"][layer]["prev"] for s in singles]  # rows i >= 1 only
        assert row["prev"] == pytest.approx(np.average(prev, weights=rows - 1), rel=1e-6)
    words = sum(len(line.split()) for line in lines[:4])
    assert data["similarity"][0]["words"] == words


def test_plot_png(tiny_models, tmp_path):
    out = tmp_path / "cmp.png"
    result = run_cli(
        "compare",
        HEADLINE + " and more",
        "-m",
        str(tiny_models["RoBERTa"]),
        "-m",
        str(tiny_models["DistilBERT"]),
        "-m",
        "scheme:sinusoidal",
        "--plot",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(out).size
    assert width >= 1000 and height >= 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (["text", "-m", "bundled"], "at least two models"),
        (["text"], "at least two models"),
        (["text", "-m", "bundled", "-m", "scheme:fourier"], "scheme:sinusoidal"),
        (["-m", "scheme:rotary", "-m", "scheme:alibi"], "TEXT or --corpus"),
        (["text", "-m", "scheme:rotary", "-m", "scheme:alibi", "--format", "csv"], "--json"),
    ],
)
def test_usage_errors(args, message):
    result = run_cli("compare", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_errors_before_any_model_runs(tmp_path):
    result = run_cli("compare", "text", "-m", "scheme:rotary", "-m", str(tmp_path / "missing"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = run_cli("compare", "text", "-m", "scheme:rotary", "-m", "scheme:t5", "--plot", str(tmp_path / "x.gif"))
    assert result.exit_code == 2 and ".png" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe\n")
    result = run_cli("compare", "-m", "scheme:rotary", "-m", "scheme:t5", "--corpus", str(bad))
    assert result.exit_code == 1 and "line 2 is not valid UTF-8" in result.stderr
