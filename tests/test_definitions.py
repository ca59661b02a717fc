"""Where posemb's definitions differ from the code they cite, each difference checked against the cited definition
computed here on its own: Clark et al.'s notebook (clarkkev/attention-analysis, General_Analysis: per-text means,
prev/next divided by n, punctuation = "." and ","), a causal row's visible keys, Wang et al.'s identical-word probe,
linear CKA of unrelated vectors. Attention comes from transformers' `output_attentions`, called here directly."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from conftest import run_cli

from posemb_cli.models import load
from posemb_cli.stats import corpus_stats

TEXTS = [
    "The cat sat on the mat.",
    "Position matters, and so does order!",
    "Attention is all you need; embeddings add up, one layer after another.",
]


def maps_of(loaded, text: str) -> tuple[list[int], np.ndarray]:
    """Token ids and attention (layers, heads, n, n) from transformers directly, one text, no padding."""
    import torch

    encoding = loaded.tokenizer(text)
    ids = encoding["input_ids"]
    with torch.inference_mode():
        output = loaded.model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False)
    return ids, np.stack([a[0].double().numpy() for a in output.attentions])


def notebook_means(attns: np.ndarray, tokens: list[str]) -> dict[str, np.ndarray]:
    """Clark et al.'s General_Analysis cell "Computing token stats" for one document: (layers, heads) per key."""
    n = attns.shape[-1]
    seps = np.array([t == "[SEP]" for t in tokens], dtype=float)
    puncts = np.array([t in (".", ",") for t in tokens], dtype=float)
    selectors = {
        "self": np.eye(n, n),
        "right": np.eye(n, n, 1),
        "left": np.eye(n, n, -1),
        "sep": np.tile(seps[np.newaxis], [n, 1]),
        "punct": np.tile(puncts[np.newaxis], [n, 1]),
    }
    return {key: (attns * selector).sum(-1).sum(-1) / n for key, selector in selectors.items()}


def grid(result, column: str) -> np.ndarray:
    return np.array(result.grid(column), dtype=float)


@pytest.fixture(scope="module")
def per_text(bundled):
    """For each text: (n, its notebook means, posemb's stats of that text alone)."""
    out = []
    for text in TEXTS:
        ids, attns = maps_of(bundled, text)
        tokens = bundled.tokenizer.convert_ids_to_tokens(ids)
        out.append((len(ids), notebook_means(attns, tokens), corpus_stats(bundled, [text])))
    return out


def test_pooled_rows_are_the_length_weighted_mean_of_the_notebooks_per_text_means(bundled, per_text):
    """Notebook: mean over texts of each text's mean; posemb: every query row pooled = Σ n_t·m_t / Σ n_t."""
    lengths = np.array([n for n, _, _ in per_text], dtype=float)
    self_means = np.stack([means["self"] for _, means, _ in per_text])  # (texts, layers, heads)
    pooled = corpus_stats(bundled, TEXTS, batch_size=2)
    weighted = (lengths[:, None, None] * self_means).sum(0) / lengths.sum()
    np.testing.assert_allclose(grid(pooled, "self"), weighted, atol=2e-6)
    assert np.abs(grid(pooled, "self") - self_means.mean(0)).max() > 1e-3  # the notebook's mean of means differs


def test_prev_and_next_divide_by_the_rows_that_have_the_neighbour(per_text):
    """Notebook "left"/"right" (np.eye(n, n, ∓1)) divide by n; posemb's prev/next = those × n/(n − 1) per text."""
    for n, means, stats in per_text:
        np.testing.assert_allclose(grid(stats, "prev"), means["left"] * n / (n - 1), atol=2e-6)
        np.testing.assert_allclose(grid(stats, "next"), means["right"] * n / (n - 1), atol=2e-6)


def test_punct_counts_every_all_punctuation_token_not_only_period_and_comma(bundled, per_text):
    """posemb punct = the notebook's "." / "," mass + the mass on the other punctuation tokens ("!", ";")."""
    for (_, means, stats), text in zip(per_text, TEXTS, strict=True):
        ids, attns = maps_of(bundled, text)
        tokens = bundled.tokenizer.convert_ids_to_tokens(ids)
        other = np.array([t in ("!", ";") for t in tokens], dtype=float)
        extra = (attns * other).sum(-1).mean(-1)
        np.testing.assert_allclose(grid(stats, "punct"), means["punct"] + extra, atol=2e-6)
        assert (other.any() and extra.min() > 0) or text == TEXTS[0]


def test_a_typed_special_token_string_is_an_ordinary_token(bundled):
    """'[SEP]' typed in the text becomes id 102 like the real one; posemb's sep counts only the [SEP] the tokenizer
    added (the last position), the notebook's string match would count both; stats warns."""
    text = "first part [SEP] second part"
    ids, attns = maps_of(bundled, text)
    typed = [k for k, i in enumerate(ids) if i == bundled.tokenizer.sep_token_id]
    assert len(typed) == 2 and typed[-1] == len(ids) - 1  # the typed one and the real one: the same id
    result = corpus_stats(bundled, [text])
    np.testing.assert_allclose(grid(result, "sep"), attns[..., -1].mean(-1), atol=2e-6)
    notebook = notebook_means(attns, bundled.tokenizer.convert_ids_to_tokens(ids))["sep"]
    np.testing.assert_allclose(notebook, attns[..., typed].sum(-1).mean(-1), atol=1e-12)
    assert (notebook > grid(result, "sep")).all()
    assert grid(result, "punct").max() == 0.0  # "[SEP]" is not all punctuation either
    assert any("1 special-token string(s) typed in the text" in w for w in result.warnings)


# ------------------------------------------------------------------------------------------ causal models


def visible_uniform(attns: np.ndarray) -> float:
    """Mean over rows of ln(number of keys the row can see), the keys read off the map (nonzero attention)."""
    return float(np.log((attns[0, 0] > 0).sum(-1)).mean())


@pytest.mark.parametrize("family", ["LLaMA", "BERT"])
def test_uniform_entropy_uses_the_keys_a_row_can_see(tiny_models, family):
    loaded = load(str(tiny_models[family]))
    text = TEXTS[1]
    _, attns = maps_of(loaded, text)
    n = attns.shape[-1]
    expected = float(np.mean(np.log(np.arange(1, n + 1)))) if family == "LLaMA" else math.log(n)
    assert visible_uniform(attns) == pytest.approx(expected, abs=1e-12)  # the closed form matches the mask
    stats = corpus_stats(loaded, [text])
    assert stats.heads[0]["uniform_entropy"] == pytest.approx(expected, abs=1e-9)
    folder = str(tiny_models[family])
    compared = json.loads(run_cli("compare", text, "-m", folder, "-m", "scheme:alibi", "--json").stdout)
    for layer in compared["models"][0]["attention"]:
        assert layer["uniform_entropy"] == pytest.approx(expected, abs=1e-9)
    caption = " ".join(run_cli("inspect", text, "-m", folder).stdout.split())
    shown = f"mean of ln(i + 1) = {expected:.2f}" if family == "LLaMA" else f"uniform over {n} tokens = {expected:.2f}"
    assert shown in caption


def test_causal_probe_shows_undefined_properties_as_dash_and_null(tiny_models):
    folder = str(tiny_models["LLaMA"])
    loaded = load(folder)
    ids = loaded.tokenizer.convert_tokens_to_ids(["cat"]) * 8
    import torch

    with torch.inference_mode():
        first = loaded.model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False).attentions[0]
    assert np.triu(first[0].numpy(), 1).max() == 0.0  # nothing above the diagonal: symmetry has nothing to compare
    out = run_cli("positions", "-m", folder, "--probe", "identical-word", "--words", "2", "--length", "8", "--json")
    probe = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))["probe"]
    for row in [probe["properties"], *probe["per_head"]]:
        assert row["symmetry"] is None and row["monotonicity"]["forward"] is None
        assert row["monotonicity"]["backward"] is not None
    table = run_cli("positions", "-m", folder, "--probe", "identical-word", "--words", "2", "--length", "8").stdout
    assert "nan" not in table
    probe_part = table[table.index("identical-word probe") :]
    rows = [line for line in probe_part.splitlines() if re.match(r"^│\s+(\d+|mean) │", line)]
    assert len(rows) == loaded.info.heads + 1 and all(line.count("–") == 2 for line in rows)
    assert "symmetry and forward monotonicity are undefined" in " ".join(table.split())


def test_alibi_picture_names_its_heads_and_the_unused_half(tiny_models):
    """The heads drawn are the ones the note names, each the bias of transformers' own build_alibi_tensor."""
    import torch
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    from posemb_cli.positions import position_picture

    loaded = load(str(tiny_models["BLOOM"]))
    n, heads = 12, loaded.info.heads
    picture = position_picture(loaded, n)
    assert "panels are the mean of all 4 heads, then heads 0, 2 and 3" in picture.note
    assert "causal model: Φ at j > i (above the diagonal) is unused" in picture.note
    # build_alibi_tensor gives slope·j per head (softmax drops the per-row constant); the slope is its value at j = 1
    slopes = build_alibi_tensor(torch.ones(1, 2), heads, torch.float64)[:, 0, 1].numpy()
    distance = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    for h in (0, 2, 3):
        np.testing.assert_allclose(picture.panels[f"head {h}"], -slopes[h] * distance, rtol=1e-12)


# ------------------------------------------------------------------------------------------ display and notes


def test_byte_level_tokens_show_their_text_in_the_table_and_stay_raw_in_json(tiny_models):
    folder = str(tiny_models["GPT-2"])
    loaded = load(folder)
    text = "position matters 我"
    raw = loaded.tokenizer.convert_ids_to_tokens(loaded.tokenizer(text)["input_ids"])
    assert "Ġmatters" in raw and any(0x80 <= ord(c) <= 0x143 for c in "".join(raw))  # byte-level pieces
    table = run_cli("inspect", text, "-m", folder).stdout
    cells = [line.split("│")[2].strip() for line in table.splitlines() if re.match(r"^│\s+\d+ │", line)]
    assert cells[:2] == ["position", "matters"] and "Ġ" not in table
    assert [c for c in cells if c.startswith("我")] == ["我¹", "我²", "我³"][: sum(c.startswith("我") for c in cells)]
    assert "x¹ x² …: byte-level pieces of one character" in table
    data = json.loads(run_cli("inspect", text, "-m", folder, "--json").stdout)
    assert [t["token"] for t in data["tokens"]] == raw
    keys = {"index", "id", "token", "position_id", "segment", "start", "end", "special", "unknown"}
    assert all(set(t) == keys for t in data["tokens"])  # the contract's token object, nothing added


def test_identical_word_probe_is_raw_ids_without_special_tokens(bundled):
    """The probe's Φ is the first layer's attention on the bare repeated ids (no [CLS]/[SEP]), head mean."""
    import torch

    from posemb_cli.positions import analyse_model

    length = 10
    analysis = analyse_model(bundled, length=length, probe="identical-word", words=2, seed=0)
    words = analysis.probe["word_ids"]
    with torch.inference_mode():
        bare = bundled.model(input_ids=torch.tensor([[w] * length for w in words]), output_attentions=True)
        cls, sep = bundled.tokenizer.cls_token_id, bundled.tokenizer.sep_token_id
        wrapped = bundled.model(
            input_ids=torch.tensor([[cls] + [w] * (length - 2) + [sep] for w in words]), output_attentions=True
        )
    expected = bare.attentions[0].double().mean(dim=0).numpy()  # mean over words: (heads, n, n)
    np.testing.assert_allclose(analysis.probe_matrices, expected, atol=1e-6)
    assert np.abs(analysis.probe_matrices - wrapped.attentions[0].double().mean(dim=0).numpy()).max() > 1e-2


def cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from Gram matrices with the centring matrix H (Kornblith et al. 2019, eq. 3 and 5)."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l_).sum() / math.sqrt((k * k).sum() * (l_ * l_).sum()))


def test_cka_note_threshold_is_its_reason_fewer_words_than_dimensions():
    """The note appears exactly when words < dimensions, where even unrelated vectors score above one half."""
    from posemb_cli.compare import Similarity

    rng = np.random.default_rng(0)
    d = 64
    fewer = np.mean([cka(rng.standard_normal((d // 2, d)), rng.standard_normal((d // 2, d))) for _ in range(3)])
    more = np.mean([cka(rng.standard_normal((4 * d, d)), rng.standard_normal((4 * d, d))) for _ in range(3)])
    assert fewer > 0.5 > more
    empty = np.zeros((1, 1))
    assert "fewer words than dimensions" in (Similarity(0, 1, d - 1, empty, d).note or "")
    assert Similarity(0, 1, d, empty, d).note is None and Similarity(0, 1, 500, empty, 384).note is None
    assert "only 60 words for 384 dimensions" in (Similarity(0, 1, 60, empty, 384).note or "")
