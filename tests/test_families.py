"""Modern position encodings: RoPE from the config (rope types, layer types, the audit), relative biases (T5, MPNet,
DeBERTa), and the generic path — each against transformers called directly or a closed form."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import transformers
from conftest import _tokenizer, run_cli

from posemb_cli.core import inspect_texts
from posemb_cli.models import load
from posemb_cli.positions import analyse_model, analyse_scheme

TEXT = "Position matters, and so does order!"


def _save(config, folder, tokenizer_kind="bos"):
    torch.manual_seed(0)
    tokenizer = _tokenizer(tokenizer_kind)
    config.vocab_size = len(tokenizer)
    transformers.AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _llama(folder, **rope):
    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=37,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        rope_parameters={"rope_theta": 10000.0, **rope},
    )
    return _save(config, folder)


# ------------------------------------------------------------------------------------------ RoPE


ROPE_CASES = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}


@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_rope_frequencies_are_transformers_own(case, tmp_path):
    """Phi and the wavelength counts use the frequencies ROPE_INIT_FUNCTIONS gives for the config; the audit against
    the loaded model's inv_freq passes."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    loaded = load(str(_llama(tmp_path / case, **ROPE_CASES[case])))
    analysis = analyse_model(loaded, 48)
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / case))
    init = LlamaRotaryEmbedding.compute_default_rope_parameters if case == "default" else ROPE_INIT_FUNCTIONS[case]
    theta, attention_factor = init(config)
    theta = theta.double().numpy()
    offsets = np.arange(48)[None, :] - np.arange(48)[:, None]
    np.testing.assert_allclose(analysis.matrix, np.cos(offsets[..., None] * theta).sum(-1), atol=1e-9)
    rope = analysis.rope
    assert rope["type"] == case and rope["dim"] == 32 and rope["wavelengths"]["pairs"] == 16
    assert rope["attention_factor"] == pytest.approx(attention_factor)
    original = rope["original_max_positions"]
    assert rope["wavelengths"]["full_turn_within_original"] == int((2 * math.pi / theta <= original).sum())
    assert analysis.audit["ok"] and analysis.audit["modules"] == 1 and analysis.warnings == []


def test_rope_closed_forms():
    """Linear scaling divides every frequency by the factor; Llama 3 keeps the fast pairs, divides the slow ones by
    the factor and interpolates between (Meta's reference rule, written out here)."""
    base = analyse_scheme("rotary", length=8, dim=64, base=500000.0).rope
    theta = 500000.0 ** (-np.arange(0, 64, 2) / 64)
    assert base["wavelengths"]["full_turn_within_original"] == int((2 * np.pi / theta <= 2048).sum())
    linear = analyse_scheme("rotary", length=8, dim=64, base=500000.0, rope_type="linear", factor=4, original_max=8192)
    fastest = 2 * np.pi / np.array([row["wavelength_min"] for row in linear.rope["wavelengths"]["table"]])
    np.testing.assert_allclose(fastest, theta[::4] / 4, rtol=1e-6)  # each group's fastest pair
    llama3 = analyse_scheme(
        "rotary",
        length=8,
        dim=64,
        base=500000.0,
        rope_type="llama3",
        factor=32,
        original_max=8192,
        rope_params={"low_freq_factor": 1.0, "high_freq_factor": 4.0},
    ).rope
    wavelength = 2 * np.pi / theta
    low, high = 8192 / 1.0, 8192 / 4.0
    smooth = (8192 / wavelength - 1.0) / (4.0 - 1.0)
    scaled = np.where(
        wavelength < high, theta, np.where(wavelength > low, theta / 32, (1 - smooth) * theta / 32 + smooth * theta)
    )
    turns = int((2 * np.pi / scaled <= 8192).sum())
    assert llama3["wavelengths"]["full_turn_within_original"] == turns == 16
    assert llama3["max_positions"] == 8192 * 32 and llama3["factor"] == 32


def test_rope_audit_flags_an_altered_buffer(tiny_models, tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(tiny_models["LLaMA"], folder)  # a folder of its own: the shared cached model stays untouched
    loaded = load(str(folder))
    assert analyse_model(loaded, 16).audit["ok"]
    loaded.model.rotary_emb.inv_freq[1] *= 1.001
    analysis = analyse_model(loaded, 16)
    assert not analysis.audit["ok"] and analysis.audit["max_relative_difference"] == pytest.approx(1e-3, rel=1e-3)
    assert "RoPE audit" in analysis.warnings[0]


@pytest.mark.parametrize("family", ["Gemma 3", "ModernBERT"])
def test_layer_types_have_their_own_bases(family, tiny_models):
    loaded = load(str(tiny_models[family]))
    analysis = analyse_model(loaded, 16)
    config = loaded.model.config
    expected = {
        kind: {
            "base": config.rope_parameters[kind]["rope_theta"],
            "layers": [k for k, t in enumerate(config.layer_types) if t == kind],
        }
        for kind in set(config.layer_types)
    }
    assert analysis.rope["layer_types"] == expected and len(expected) == 2
    assert analysis.audit["ok"] and analysis.audit["modules"] == 2
    module = loaded.model.rotary_emb
    theta = module.full_attention_inv_freq.double().numpy()  # Phi is drawn for the global layers
    np.testing.assert_allclose(np.diag(analysis.matrix, 1), np.cos(theta).sum(), atol=1e-9)


def test_phi3_longrope_short_factors(tiny_models):
    loaded = load(str(tiny_models["Phi-3"]))
    analysis = analyse_model(loaded, 16)
    short = np.array(loaded.model.config.rope_parameters["short_factor"])
    theta = 1.0 / (short * 10000.0 ** (np.arange(0, 8, 2) / 8))  # LongRoPE within the original length
    np.testing.assert_allclose(np.diag(analysis.matrix, 3), np.cos(3 * theta).sum(), atol=1e-6)
    assert analysis.rope["type"] == "longrope" and analysis.rope["original_max_positions"] == 32


def test_gpt_neox_partial_rotary(tiny_models):
    analysis = analyse_model(load(str(tiny_models["GPT-NeoX"])), 8)
    assert analysis.rope["dim"] == 4  # head dim 8, rotary_pct 0.5


def test_positions_json_on_a_rotary_model(tiny_models):
    result = run_cli("positions", "-m", str(tiny_models["Qwen 3"]), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["rope"]) >= {"type", "base", "dim", "factor", "original_max_positions", "max_positions"}
    assert data["audit"]["ok"] is True and data["bias"] is None


# ------------------------------------------------------------------------------------------ relative biases


def _by_offset(matrix):
    n = matrix.shape[-1]
    return np.stack([np.diagonal(matrix, o, -2, -1).mean(-1) for o in range(-(n - 1), n)], -1)


def test_t5_bias_through_the_registry(tiny_models):
    loaded = load(str(tiny_models["T5"]))
    analysis = analyse_model(loaded, 30)
    attention = loaded.model.block[0].layer[0].SelfAttention
    with torch.no_grad():
        expected = attention.compute_bias(30, 30)[0].double().numpy()  # (heads, query, key)
    np.testing.assert_allclose(np.array(analysis.bias["per_head"]), _by_offset(expected), atol=1e-7)
    assert analysis.bias["offsets"] == list(range(-29, 30))
    np.testing.assert_allclose(analysis.head_matrices, expected, atol=1e-7)
    np.testing.assert_allclose(analysis.matrix, expected.mean(axis=0), atol=1e-7)
    assert analysis.metric == "bias" and analysis.buckets[-29] == 3 and analysis.buckets[29] == 7  # 8 buckets


def test_mpnet_bias_is_compute_position_bias(tiny_models):
    loaded = load(str(tiny_models["MPNet"]))
    analysis = analyse_model(loaded, 40)
    assert analysis.scheme == "learned_absolute+relative_bucket"
    with torch.no_grad():
        bias = loaded.model.encoder.compute_position_bias(torch.zeros(1, 40, 32))[0].double().numpy()
    np.testing.assert_allclose(np.array(analysis.bias["per_head"]), _by_offset(bias), atol=1e-7)
    assert analysis.vectors is not None  # Phi is the learned table's


def test_deberta_c2p_p2c_by_hand(tiny_models):
    """The c2p and p2c terms of the first layer written out (He et al. 2021, eq. 4, with transformers' log buckets):
    c2p[i, j] = q_i · k_r[δ(i, j)], p2c[i, j] = k_j · q_r[δ(j, i)], over sqrt(d · 3)."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    from posemb_cli.schemes.base import probe_word_ids

    loaded = load(str(tiny_models["DeBERTa"]))
    model, n = loaded.model, 12
    analysis = analyse_model(loaded, n)
    ids = probe_word_ids(loaded.tokenizer, model.config.vocab_size, n, 0)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[0][0]
        attention = model.encoder.layer[0].attention.self
        heads, d = attention.num_attention_heads, attention.attention_head_size
        span = attention.pos_ebd_size
        rel = model.encoder.LayerNorm(model.encoder.rel_embeddings.weight)[: 2 * span]

        def split(x):
            return x.view(x.shape[0], heads, d).transpose(0, 1).double().numpy()

        q, k = split(attention.query_proj(hidden)), split(attention.key_proj(hidden))
        q_r, k_r = split(attention.query_proj(rel)), split(attention.key_proj(rel))
        positions = torch.arange(n)
        delta = make_log_bucket_position(positions[:, None] - positions[None, :], 16, 64).long().numpy()
    index = np.clip(delta + span, 0, 2 * span - 1)
    scale = math.sqrt(d * 3)
    c2p = np.stack([np.einsum("id,ijd->ij", q[h], k_r[h][index]) for h in range(heads)]) / scale
    p2c = (
        np.stack([np.einsum("jd,jid->ij", k[h], q_r[h][np.clip(span - delta, 0, 2 * span - 1)]) for h in range(heads)])
        / scale
    )
    np.testing.assert_allclose(np.array(analysis.bias["c2p"]), _by_offset(c2p), atol=1e-5)
    np.testing.assert_allclose(np.array(analysis.bias["p2c"]), _by_offset(p2c), atol=1e-5)
    np.testing.assert_allclose(np.array(analysis.bias["per_head"]), _by_offset(c2p + p2c), atol=1e-5)


def test_plot_bias(tiny_models, tmp_path):
    out = tmp_path / "t5.png"
    result = run_cli("positions", "-m", str(tiny_models["T5"]), "--length", "20", "--plot", "bias", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000 and f"Wrote {out}" in result.stderr
    refused = run_cli("positions", "--scheme", "rotary", "--plot", "bias", "-o", str(tmp_path / "r.png"))
    assert refused.exit_code == 1 and "no bias picture" in refused.stderr


# ------------------------------------------------------------------------------------------ the generic path


@pytest.fixture(scope="module")
def xlnet(tmp_path_factory):
    config = transformers.XLNetConfig(d_model=32, n_layer=2, n_head=4, d_inner=37)
    return _save(config, tmp_path_factory.mktemp("xlnet") / "xlnet", "wordpiece")


def test_generic_path_inspect(xlnet):
    result = run_cli("inspect", TEXT, "-m", str(xlnet), "--json", "--vectors", "--attention")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["position_scheme"] == "unknown" and data["model"]["type"] == "xlnet"
    assert data["vectors"]["token"] is None and data["vectors"]["position"] is None and data["vectors"]["sum"] is None
    assert all(t["position_id"] is None for t in data["tokens"])
    assert len([w for w in data["warnings"] if "not in posemb's registry" in w]) == 1
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(xlnet))
    model = transformers.AutoModel.from_pretrained(str(xlnet), attn_implementation="eager").eval()
    encoding = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        out = model(**encoding, output_attentions=True, output_hidden_states=True)
    assert [t["id"] for t in data["tokens"]] == encoding["input_ids"][0].tolist()
    # XLNet's hidden states are (seq, batch, d) inside, but its outputs are batch-first like every model
    np.testing.assert_allclose(data["vectors"]["embedding_output"], out.hidden_states[0][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(data["attention"], np.stack([a[0].numpy() for a in out.attentions]), atol=1e-5)


def test_generic_path_stats_positions_compare(xlnet, tiny_models):
    lines = "the cat sat\nposition matters a lot\n"
    stats = run_cli("stats", "-", "-m", str(xlnet), "--json", input=lines)
    assert stats.exit_code == 0, stats.output
    heads = json.loads(stats.stdout)["heads"]
    loaded = load(str(xlnet))
    results = list(inspect_texts(loaded, lines.split("\n")[:2]))
    pooled = np.concatenate([np.diagonal(r.attention[0, 1], 0, -2, -1) for r in results])  # layer 0, head 1
    row = next(h for h in heads if h["layer"] == 0 and h["head"] == 1)
    assert row["self"] == pytest.approx(pooled.mean(), abs=1e-5)
    positions = run_cli("positions", "-m", str(xlnet))
    assert positions.exit_code == 1 and "unknown" in positions.stderr
    compare = run_cli("compare", "the cat sat", "-m", str(xlnet), "-m", str(tiny_models["BERT"]), "--json")
    assert compare.exit_code == 0, compare.output
    first = json.loads(compare.stdout)["models"][0]
    assert first["positions"] is None and len(first["attention"]) == 2
