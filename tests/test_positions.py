"""`posemb positions` compute (posemb_cli.positions) against closed forms, the weights on disk and transformers."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import transformers_model
from rich.console import Console
from safetensors.numpy import load_file

from posemb_cli.errors import PosembError
from posemb_cli.models import LoadedModel, ModelInfo, load
from posemb_cli.positions import analyse_model, analyse_scheme
from posemb_cli.registry import Family
from posemb_cli.render.positions_table import print_positions

JSON_KEYS = {
    "scheme",
    "model",
    "source",
    "length",
    "metric",
    "properties",
    "slopes",
    "buckets",
    "probe",
    "regression_mae",
    "pca_explained_variance",
    "rope",
    "audit",
    "bias",
    "notes",
    "warnings",
}


@pytest.fixture(scope="module")
def tiny_bert(tiny_models):
    return load(str(tiny_models["BERT"]))


def _rendered(analysis) -> str:
    console = Console(file=io.StringIO(), width=160, no_color=True)
    print_positions(console, analysis)
    return console.file.getvalue()


# ------------------------------------------------------------------------------------------ learned tables


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_bundled_table_is_the_safetensors_weights(bundled, bundled_path, metric):
    weight = load_file(str(bundled_path / "model.safetensors"))["embeddings.position_embeddings.weight"]
    analysis = analyse_model(bundled, metric=metric)
    assert analysis.scheme == "learned_absolute" and analysis.length == 128  # min(128, 512 positions)
    expected = weight[:128].astype(np.float64)
    np.testing.assert_allclose(analysis.vectors, expected, rtol=0, atol=0)
    gram = expected @ expected.T
    if metric == "cosine":
        norms = np.linalg.norm(expected, axis=1)
        gram = gram / np.outer(norms, norms)
    np.testing.assert_allclose(analysis.matrix, gram, rtol=1e-12, atol=1e-12)
    assert analysis.source.startswith("embeddings.position_embeddings (rows 0..127")


def test_roberta_rows_start_after_padding_idx(tiny_models):
    path = tiny_models["RoBERTa"]
    loaded = load(str(path))
    pad = loaded.model.config.pad_token_id
    weight = load_file(str(path / "model.safetensors"))["embeddings.position_embeddings.weight"]
    analysis = analyse_model(loaded, length=20)
    np.testing.assert_array_equal(analysis.vectors, weight[pad + 1 : pad + 21].astype(np.float64))
    assert f"rows {pad + 1}..{pad + 20}" in analysis.source
    assert analyse_model(loaded).length == len(weight) - pad - 1  # the default stops at the last usable row
    with pytest.raises(PosembError, match=f"{len(weight) - pad - 1} positions"):
        analyse_model(loaded, length=len(weight) - pad)


# ------------------------------------------------------------------------------------------ analytic schemes


def test_sinusoidal_is_the_closed_form_and_purely_relative():
    analysis = analyse_scheme("sinusoidal", length=100, dim=32)
    p, k = np.arange(100)[:, None], np.arange(16)[None, :]
    expected = np.empty((100, 32))
    expected[:, 0::2] = np.sin(p / 10000 ** (2 * k / 32))
    expected[:, 1::2] = np.cos(p / 10000 ** (2 * k / 32))
    np.testing.assert_allclose(analysis.vectors, expected, atol=1e-12)
    # <PE_i, PE_j> = sum_k cos((i - j) w_k): a function of i - j only
    assert analysis.properties["translation_invariance"] == pytest.approx(1.0, abs=1e-9)
    assert analysis.properties["symmetry"] == pytest.approx(1.0, abs=1e-12)


def test_rotary_matches_sum_of_cosines():
    analysis = analyse_scheme("rotary", length=64, dim=64, base=10000.0)
    theta = 10000.0 ** (-np.arange(32) / 32)
    i = np.arange(64)
    expected = np.array([[np.cos((a - b) * theta).sum() for b in i] for a in i])
    np.testing.assert_allclose(analysis.matrix, expected, atol=1e-9)
    assert analysis.properties["translation_invariance"] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(np.diag(analyse_scheme("rotary", length=8, dim=64, metric="cosine").matrix), 1.0)


def test_alibi_slopes_and_bias_for_12_heads():
    analysis = analyse_scheme("alibi", length=16, heads=12)
    # Press et al.: 8 heads give 2^-1 .. 2^-8; the 4 extra are every other slope of 16 heads: 2^-0.5, 2^-1.5, ...
    expected = [2.0**-h for h in range(1, 9)] + [2.0 ** -(h + 0.5) for h in range(4)]
    np.testing.assert_allclose(analysis.slopes, expected, rtol=1e-15)
    distance = np.abs(np.subtract.outer(np.arange(16), np.arange(16)))
    np.testing.assert_allclose(analysis.head_matrices[11], -expected[11] * distance)
    np.testing.assert_allclose(analysis.matrix, -np.mean(expected) * distance)
    assert analysis.properties["translation_invariance"] == pytest.approx(1.0)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_transformers(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    analysis = analyse_scheme("t5", length=200, buckets=32, max_distance=128, bidirectional=bidirectional)
    offsets = torch.arange(-199, 200)
    expected = T5Attention._relative_position_bucket(offsets, bidirectional, 32, 128)
    assert analysis.buckets == dict(zip(offsets.tolist(), expected.tolist(), strict=True))
    assert analysis.properties["translation_invariance"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ scheme detection


def test_llama_is_rotary_with_config_base_and_head_dim(tiny_models):
    loaded = load(str(tiny_models["LLaMA"]))
    config = loaded.model.config
    analysis = analyse_model(loaded, length=40)
    head_dim = config.hidden_size // config.num_attention_heads
    assert analysis.scheme == "rotary"
    assert f"base {config.rope_parameters['rope_theta']:g}, dim {head_dim}" in analysis.source
    theta = loaded.model.rotary_emb.inv_freq.double().numpy()  # the frequencies transformers itself uses
    offsets = np.subtract.outer(np.arange(40), np.arange(40))
    np.testing.assert_allclose(analysis.matrix, np.cos(offsets[..., None] * theta).sum(-1), atol=1e-6)


def test_bloom_is_alibi_with_transformers_slopes(tiny_models):
    loaded = load(str(tiny_models["BLOOM"]))
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    heads = loaded.model.config.n_head
    analysis = analyse_model(loaded, length=10)
    alibi = build_alibi_tensor(torch.ones(1, 10), heads, torch.float64)  # (heads, 1, L): slope_h * key position
    assert analysis.scheme == "alibi"
    np.testing.assert_allclose(analysis.slopes, alibi[:, 0, 1].numpy(), rtol=1e-6)


def test_unknown_scheme_is_said_plainly():
    family = Family("Mystery", ("mystery",), "unknown", token_embedding="embed")
    info = ModelInfo("m", "mystery", "Mystery", "unknown", 1, 1, 8, 16, "")
    loaded = LoadedModel(info, family, None, SimpleNamespace(config=SimpleNamespace()), "cpu")
    with pytest.raises(PosembError, match="position scheme of mystery is unknown to posemb"):
        analyse_model(loaded)


# ------------------------------------------------------------------------------------------ probes


def test_identical_word_probe_is_first_layer_attention(tiny_models, tiny_bert):
    analysis = analyse_model(tiny_bert, length=24, probe="identical-word", words=5, seed=3)
    probe = analysis.probe
    ids = probe["word_ids"]
    special = set(tiny_bert.tokenizer.all_special_ids)
    assert len(ids) == len(set(ids)) == 5 and not special & set(ids)
    _, model = transformers_model(tiny_models["BERT"])
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids)[:, None].repeat(1, 24), output_attentions=True)
    expected = out.attentions[0].double().mean(dim=0).numpy()  # (heads, 24, 24)
    np.testing.assert_allclose(analysis.probe_matrices, expected, atol=1e-6)
    assert probe["properties"]["symmetry"] == pytest.approx(_symmetry(expected.mean(axis=0)))
    assert [row["head"] for row in probe["per_head"]] == list(range(expected.shape[0]))
    assert analyse_model(tiny_bert, length=24, probe="identical-word", words=5, seed=3).probe["word_ids"] == ids
    text = _rendered(analysis)
    assert "identical-word probe" in text and "mean" in text


def _symmetry(phi: np.ndarray) -> float:
    i, j = np.triu_indices(len(phi), k=1)
    return float(np.corrcoef(phi[i, j], phi[j, i])[0, 1])


def test_position_regression_reads_sinusoids_not_noise():
    sinusoidal = analyse_scheme("sinusoidal", length=128, dim=64)
    assert sinusoidal.regression_mae < 1
    from posemb_cli import metrics

    noise = np.random.default_rng(0).normal(size=(128, 64))
    assert metrics.position_regression_mae(noise) > 10 * max(sinusoidal.regression_mae, 0.1)
    assert sinusoidal.pca.shape == (128, 2) and sum(sinusoidal.pca_explained) <= 1


# ------------------------------------------------------------------------------------------ output


def test_json_keys_and_plain_values():
    alibi = analyse_scheme("alibi", length=8, heads=4)
    data = alibi.to_json()
    assert set(data) == JSON_KEYS
    assert data["properties"]["monotonicity"]["window"] == 16
    assert data["slopes"] == [0.25, 0.0625, 0.015625, 0.00390625]
    assert data["bias"]["offsets"] == list(range(-7, 8))  # key - query
    assert data["bias"]["per_head"][1] == [-0.0625 * abs(o) for o in range(-7, 8)]  # slope x -|offset|
    assert data["rope"] is None and data["audit"] is None
    full = alibi.to_json(matrix=True)
    assert set(full) == JSON_KEYS | {"matrix"} and full["matrix"][0][3] == pytest.approx(-3 * np.mean(data["slopes"]))
    t5 = analyse_scheme("t5", length=4, bidirectional=False).to_json()
    assert t5["buckets"] == {"-3": 3, "-2": 2, "-1": 1, "0": 0, "1": 0, "2": 0, "3": 0}
    assert t5["properties"]["monotonicity"]["forward"] is None  # causal: nothing after the query, NaN -> null
    json.dumps(full, allow_nan=False)
    assert "-3…" not in _rendered(analyse_scheme("t5", length=4, bidirectional=False))
    assert "0…3" in _rendered(analyse_scheme("t5", length=4, bidirectional=False))


# --- the command as a user runs it -------------------------------------------------------------------------------


def test_cli_positions_sinusoidal_json():
    import json as _json

    from conftest import run_cli

    result = run_cli("positions", "--scheme", "sinusoidal", "--dim", "768", "--length", "512", "--json")
    assert result.exit_code == 0, result.stderr
    data = _json.loads(result.stdout)
    assert {"scheme", "model", "length", "metric", "properties", "slopes", "buckets", "probe"} <= set(data)
    assert data["scheme"] == "sinusoidal" and data["length"] == 512 and "matrix" not in data
    assert abs(data["properties"]["translation_invariance"] - 1) < 1e-9


def test_cli_positions_alibi_slopes_and_bundled_table():
    import json as _json

    from conftest import run_cli

    data = _json.loads(run_cli("positions", "--scheme", "alibi", "--heads", "8", "--json").stdout)
    assert data["slopes"] == [2.0**-k for k in range(1, 9)]
    result = run_cli("positions", "--length", "16", "--json", "--matrix")
    data = _json.loads(result.stdout)
    from safetensors.numpy import load_file

    from posemb_cli.models import bundled_model_path

    table = load_file(str(bundled_model_path() / "model.safetensors"))["embeddings.position_embeddings.weight"][:16]
    np.testing.assert_allclose(np.array(data["matrix"]), table @ table.T, rtol=1e-5, atol=1e-5)
    table_text = run_cli("positions").stdout
    assert "translation invariance" in table_text and "learned_absolute" in table_text


def test_cli_positions_usage_errors():
    from conftest import run_cli

    result = run_cli("positions", "--length", "600")
    assert result.exit_code == 2 and "512" in result.stderr and "Traceback" not in result.output
    result = run_cli("positions", "--scheme", "rotary", "-m", "bert-base-uncased")
    assert result.exit_code == 2 and "--scheme" in result.stderr
