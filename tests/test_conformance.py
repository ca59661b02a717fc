"""Conformance: transformers' position numbers (and posemb's) against the authors' formulas in
posemb_cli/schemes/reference.py; the RoPE audit against configs where they disagree and models whose buffers were
altered; Falcon's ALiBi as the model applies it; posemb's attention against the SDPA path."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import transformers
from conftest import FALCON_ON_INTERFACE, _tokenizer, run_cli

from posemb_cli.core import inspect_texts
from posemb_cli.models import load
from posemb_cli.positions import analyse_model
from posemb_cli.schemes import reference

TEXT = "Position matters, and so does order!"


def _save(config, folder, tokenizer_kind="bos", edit=None):
    torch.manual_seed(0)
    tokenizer = _tokenizer(tokenizer_kind)
    config.vocab_size = len(tokenizer)
    model = transformers.AutoModel.from_config(config)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _rel(found, expected):
    found, expected = np.asarray(found, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(found - expected) / np.abs(expected)))


# ------------------------------------------------------------------------------------------ reference vs transformers


def test_alibi_slopes_reference_vs_transformers_and_posemb():
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    from posemb_cli.schemes.alibi import alibi_slopes

    for heads in range(1, 41):
        expected = reference.alibi_slopes(heads)
        given = build_alibi_tensor(torch.ones(1, 2), heads, torch.float64)[:, 0, 1].numpy()
        assert _rel(given, expected) < 1e-6, heads  # transformers computes in float32
        np.testing.assert_allclose(alibi_slopes(heads), expected, rtol=1e-14)


@pytest.mark.parametrize("buckets,distance,bidirectional", [(32, 128, True), (32, 128, False), (8, 20, True)])
def test_t5_and_mpnet_buckets_reference_vs_transformers(buckets, distance, bidirectional):
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder
    from transformers.models.t5.modeling_t5 import T5Attention

    offsets = torch.arange(-600, 601)
    given = T5Attention._relative_position_bucket(offsets, bidirectional, buckets, distance).tolist()
    assert given == [reference.t5_bucket(o, bidirectional, buckets, distance) for o in offsets.tolist()]
    if bidirectional:
        mpnet = MPNetEncoder.relative_position_bucket(offsets, buckets, distance).tolist()
        assert mpnet == [reference.mpnet_bucket(o, buckets, distance) for o in offsets.tolist()]


def test_deberta_buckets_2021_and_the_2023_clamp():
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    offsets = torch.arange(-1500, 1501)
    given = make_log_bucket_position(offsets, 256, 512).long().tolist()
    assert given == [reference.deberta_log_bucket(o, 256, 512) for o in offsets.tolist()]
    clamped = [reference.deberta_log_bucket(o, 256, 512, clamp=True) for o in offsets.tolist()]
    within = [k for k, o in enumerate(offsets.tolist()) if abs(o) <= 511]
    assert [given[k] for k in within] == [clamped[k] for k in within]  # the same within max_relative_positions
    assert given[-1] > clamped[-1] == clamped[within[-1]]  # beyond it, 2021 goes on growing; 2023 stays put


def test_sinusoidal_reference_vaswani_and_tensor2tensor():
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    from posemb_cli.schemes.learned import sinusoidal_table

    vaswani = reference.sinusoidal_table(64, 32)
    out = torch.empty(64, 32)
    create_sinusoidal_embeddings(64, 32, out)
    np.testing.assert_allclose(out.numpy(), vaswani, atol=1e-6)
    np.testing.assert_allclose(sinusoidal_table(64, 32), vaswani, atol=1e-12)
    t2t = reference.sinusoidal_table(64, 32, spacing="tensor2tensor")
    assert t2t[1, 15] == pytest.approx(math.sin(1e-4))  # its slowest timescale is exactly 1/base
    assert vaswani[1, 30] == pytest.approx(math.sin(10000 ** (-30 / 32)))  # Vaswani's stops one step short
    np.testing.assert_allclose(t2t[:, 16:], np.cos(np.arange(64)[:, None] * 1e-4 ** (np.arange(16) / 15)))


def _rope_config(length=256, **rope):
    return transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=2, max_position_embeddings=length, rope_parameters=rope, vocab_size=8
    )


ROPE_REFERENCE = {  # rope type -> (config parameters, reference at `length`)
    "default": ({}, lambda n: reference.rope_default(32, 1e4)),
    "linear": ({"factor": 4.0}, lambda n: reference.rope_linear(32, 1e4, 4.0)),
    "dynamic": ({"factor": 4.0}, lambda n: reference.rope_dynamic(32, 1e4, 4.0, 256, n)),
    "yarn": (
        {"factor": 8.0, "original_max_position_embeddings": 32},
        lambda n: reference.rope_yarn(32, 1e4, 8.0, 32),
    ),
    "llama3": (
        {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        lambda n: reference.rope_llama3(32, 1e4, 8.0, 32),
    ),
    "longrope": (
        {
            "short_factor": list(np.linspace(1, 2, 16)),
            "long_factor": list(np.linspace(2, 9, 16)),
            "original_max_position_embeddings": 32,
        },
        lambda n: reference.rope_longrope(32, 1e4, np.linspace(1, 2, 16), np.linspace(2, 9, 16), 32, n),
    ),
}


@pytest.mark.parametrize("rope_type", list(ROPE_REFERENCE))
def test_rope_reference_vs_transformers(rope_type):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params, formula = ROPE_REFERENCE[rope_type]
    config = _rope_config(rope_type=rope_type, rope_theta=1e4, **params)
    init = (
        LlamaRotaryEmbedding.compute_default_rope_parameters
        if rope_type == "default"
        else ROPE_INIT_FUNCTIONS[rope_type]
    )
    for length in (32, 33, 256, 1024):  # LongRoPE switches between 32 and 33; dynamic grows past 256
        given = init(config, seq_len=length)[0].double().numpy()
        assert _rel(given, formula(length)) < 2e-6, (rope_type, length)


# ------------------------------------------------------------------------------------------ the audit


def _llama(folder, length=256, **rope):
    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=37,
        max_position_embeddings=length,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        rope_parameters={"rope_theta": 10000.0, **rope},
    )
    return _save(config, folder)


def test_audit_passes_on_an_ordinary_model(tiny_models):
    analysis = analyse_model(load(str(tiny_models["LLaMA"])), 16, at_length=200)
    audit = analysis.audit
    assert audit["ok"] and audit["lengths"] == [64, 200] and analysis.warnings == []
    assert all(c["reference"] < 1e-6 and c["buffers"] < 1e-6 for c in audit["checks"])


def test_audit_warns_where_transformers_and_the_authors_disagree(tmp_path):
    """Dynamic NTK with original_max_position_embeddings 64 but max_position_embeddings 256: transformers grows from
    256, the original formula from 64; at 256 positions transformers keeps the base, emozilla's rule does not."""
    folder = _llama(tmp_path / "dyn", rope_type="dynamic", factor=4.0, original_max_position_embeddings=64)
    loaded = load(str(folder))
    analysis = analyse_model(loaded, 16)
    audit = analysis.audit
    assert audit["lengths"] == [64, 256] and not audit["ok"]
    theta = reference.rope_default(32, 1e4)
    expected = _rel(theta, reference.rope_dynamic(32, 1e4, 4.0, 64, 256))  # transformers at 256 = start-up θ
    assert audit["max_reference_difference"] == pytest.approx(expected, rel=1e-5)
    assert audit["max_relative_difference"] < 1e-6  # the buffers do what transformers says
    (warning,) = analysis.warnings
    assert "emozilla" in warning and "max_position_embeddings (256)" in warning and "(64)" in warning


def test_dynamic_ntk_reports_the_frequencies_used_at_the_chosen_length(tmp_path):
    folder = _llama(tmp_path / "dyn2", length=64, rope_type="dynamic", factor=4.0)
    loaded = load(str(folder))
    analysis = analyse_model(loaded, 16, at_length=200)
    rows = {row["positions"]: row for row in analysis.rope["lengths"]}
    base = 1e4 * (4.0 * 200 / 64 - 3.0) ** (32 / 30)  # emozilla's formula with training length 64
    assert rows[200]["base"] == pytest.approx(base, rel=1e-9)
    used = reference.rope_dynamic(32, 1e4, 4.0, 64, 200)
    assert rows[200]["wavelength_max"] == pytest.approx(2 * math.pi / used.min(), rel=1e-5)
    assert rows[200]["change_from_start"] > 0.5 and rows[64]["change_from_start"] == 0
    assert analysis.audit["ok"] and analysis.rope["extended_positions"] == 256
    np.testing.assert_allclose(loaded.model.rotary_emb.inv_freq.numpy(), reference.rope_default(32, 1e4), rtol=1e-6)


def test_longrope_short_and_long_factors_and_the_switch(tiny_models):
    loaded = load(str(tiny_models["Phi-3"]))
    params = loaded.model.config.rope_parameters
    for at, factors in ((32, "short"), (33, "long")):
        analysis = analyse_model(loaded, 16, at_length=at)
        assert analysis.audit["ok"] and analysis.audit["lengths"] == sorted({32, at})
        assert analysis.rope["lengths"][-1]["factors"] == factors
    rope = analysis.rope
    assert rope["factor"] == pytest.approx(64 / 32)  # max / original, as transformers fills it in
    assert rope["longrope"] == {
        "short_factor": params["short_factor"],
        "long_factor": params["long_factor"],
        "short_up_to": 32,
        "long_from": 33,
    }
    long_theta = reference.rope_longrope(8, 1e4, params["short_factor"], params["long_factor"], 32, 33)
    assert rope["lengths"][-1]["wavelength_max"] == pytest.approx(2 * math.pi / long_theta.min(), rel=1e-6)
    assert any("from 33" in note for note in analysis.notes)


def test_linear_without_original_max_reports_max_over_factor(tmp_path):
    analysis = analyse_model(load(str(_llama(tmp_path / "lin", rope_type="linear", factor=4.0))), 16)
    assert analysis.rope["original_max_positions"] == 64 and analysis.rope["max_positions"] == 256
    assert analysis.rope["original_inferred"] and any("256 / 4 = 64" in note for note in analysis.notes)


def test_analytic_longrope_with_rope_params():
    result = run_cli(
        "positions", "--scheme", "rotary", "--dim", "8", "--rope-type", "longrope", "--factor", "4",
        "--original-max", "64", "--rope-param", "short_factor=1,1.5,2,3,long_factor=2,4,8,16", "--at-length", "65",
        "--json", "--vectors",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    inv = data["vectors"]["inv_freq"]["all"]
    np.testing.assert_allclose(inv["64"], reference.rope_longrope(8, 1e4, [1, 1.5, 2, 3], [2, 4, 8, 16], 64, 64))
    np.testing.assert_allclose(inv["65"], reference.rope_longrope(8, 1e4, [1, 1.5, 2, 3], [2, 4, 8, 16], 64, 65))
    assert data["rope"]["longrope"]["long_from"] == 65 and data["audit"]["ok"]


# ------------------------------------------------------------------------------------------ exports


def test_vectors_export_sinusoidal_and_bounds():
    data = json.loads(run_cli("positions", "--scheme", "sinusoidal", "--dim", "16", "--length", "20", "--json",
                              "--vectors").stdout)  # fmt: skip
    np.testing.assert_allclose(data["vectors"]["sinusoidal_table"], reference.sinusoidal_table(20, 16), atol=1e-12)
    big = run_cli("positions", "--scheme", "sinusoidal", "--dim", "1024", "--length", "2048", "--json", "--vectors")
    assert big.exit_code == 2 and "2,000,000" in big.stderr
    assert run_cli("positions", "--scheme", "sinusoidal", "--vectors").exit_code == 2  # JSON only


def test_vectors_export_deberta_buckets_and_every_rotary_pair(tiny_models):
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    data = json.loads(run_cli("positions", "-m", str(tiny_models["DeBERTa"]), "--length", "40", "--json",
                              "--vectors").stdout)  # fmt: skip
    buckets = data["vectors"]["buckets"]
    relative = build_relative_position(torch.zeros(1, 40, 1), torch.zeros(1, 40, 1), 16, 64)[0]  # query − key
    assert buckets["offsets"] == list(range(-39, 40))
    assert buckets["buckets"] == [int(relative[max(0, -o), max(0, -o) + o]) for o in buckets["offsets"]]
    gemma = json.loads(run_cli("positions", "-m", str(tiny_models["Gemma 3"]), "--json", "--vectors").stdout)
    module = load(str(tiny_models["Gemma 3"])).model.rotary_emb
    for kind in ("sliding_attention", "full_attention"):
        np.testing.assert_allclose(gemma["vectors"]["inv_freq"][kind]["start"], getattr(module, f"{kind}_inv_freq"))


# ------------------------------------------------------------------------------------------ Falcon and SDPA


def _falcon(folder, edit=None):
    config = transformers.FalconConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True, bos_token_id=0, eos_token_id=2,
        pad_token_id=1,
    )  # fmt: skip
    return _save(config, folder, edit=edit)


def test_falcon_alibi_slopes_measured_from_the_model(tmp_path):
    """Queries and keys zeroed: row i of the first layer's attention is softmax(m'·j) over j ≤ i, so the log ratio of
    neighbouring keys is the slope m' the model applies: m / √head_dim (SDPA; transformers' eager would give 2m')."""

    def zero_queries_and_keys(model):
        fused = model.h[0].self_attention.query_key_value
        fused.weight[: 32 + 8] = 0  # multi-query: 4 query heads of 8, then one key head, then one value head

    folder = _falcon(tmp_path / "falcon", edit=zero_queries_and_keys)
    loaded = load(str(folder))
    (result,) = inspect_texts(loaded, [TEXT])
    rows = result.attention[0, :, -1].astype(np.float64)  # (heads, keys) of the last query
    measured = np.log(rows[:, 1:] / rows[:, :-1]).mean(axis=1)
    expected = np.array(reference.alibi_slopes(4)) / math.sqrt(8)
    np.testing.assert_allclose(measured, expected, rtol=1e-4)
    np.testing.assert_allclose(analyse_model(loaded, 8).slopes, expected, rtol=1e-12)


def _sdpa_hidden(folder):
    """transformers' default path: SDPA where the family has it, its eager attention where that is all it has."""
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    model = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    encoding = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoding, output_hidden_states=True).hidden_states
    return model, encoding, [h[0].numpy() for h in hidden]


def test_falcon_hidden_states_from_posemb_maps_equal_sdpa(tmp_path):
    folder = _falcon(tmp_path / "falcon_sdpa")
    sdpa, encoding, expected = _sdpa_hidden(folder)
    assert sdpa.config._attn_implementation == "sdpa"
    (result,) = inspect_texts(load(str(folder)), [TEXT], hidden_states=True)
    np.testing.assert_allclose(result.hidden_states, np.stack(expected), atol=2e-5)
    # layer 0 by hand from posemb's maps: x + dense(maps @ v) + mlp(ln(x)) (Falcon's parallel attention)
    layer = sdpa.h[0]
    x = torch.tensor(expected[0])[None]
    with torch.no_grad():
        ln = layer.input_layernorm(x)
        # multi-query: 4 query heads of 8, then one key head, then the value head every query head shares
        value = layer.self_attention.query_key_value(ln).view(1, x.shape[1], 6, 8)[:, :, 5:]
        maps = torch.tensor(result.attention[0])[None]  # (1, heads, n, n)
        mixed = (maps @ value.transpose(1, 2)).transpose(1, 2).reshape(1, x.shape[1], -1)
        out = x + layer.self_attention.dense(mixed) + layer.mlp(ln)
    np.testing.assert_allclose(out[0].numpy(), expected[1], atol=2e-5)
    eager = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        plain = eager(**encoding, output_hidden_states=True).hidden_states[1][0].numpy()
    if FALCON_ON_INTERFACE:  # transformers 5.25 fixed its eager path (the bias once, in the mask)
        assert np.abs(plain - expected[1]).max() < 1e-5
    else:  # transformers' own eager path is not SDPA's (bias added twice)
        assert np.abs(plain - expected[1]).max() > 1e-3


@pytest.fixture(scope="module")
def xlnet_folder(tmp_path_factory):
    return _save(transformers.XLNetConfig(d_model=32, n_layer=2, n_head=4, d_inner=37),
                 tmp_path_factory.mktemp("xlnet") / "xlnet", "wordpiece")  # fmt: skip


@pytest.mark.parametrize("family", ["DeBERTa", "MPNet", "BLOOM", "XLNet"])
def test_attention_outside_the_interface_reproduces_sdpa(family, tiny_models, xlnet_folder):
    """Families whose attention bypasses transformers' AttentionInterface: posemb's (eager) forward, whose maps it
    reports, gives the hidden states of the SDPA model (or the family's only path, where it has no SDPA)."""
    folder = xlnet_folder if family == "XLNet" else tiny_models[family]
    _, _, expected = _sdpa_hidden(folder)
    (result,) = inspect_texts(load(str(folder)), [TEXT], hidden_states=True)
    np.testing.assert_allclose(result.hidden_states, np.stack(expected), atol=2e-5)


# ------------------------------------------------------------------------------------------ MPNet position ids


def test_mpnet_position_ids_follow_the_models_rule_with_pad_id_0(tmp_path):
    from transformers.models.mpnet.modeling_mpnet import create_position_ids_from_input_ids

    config = transformers.MPNetConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, max_position_embeddings=66,
        pad_token_id=0, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    folder = _save(config, tmp_path / "mpnet0", "roberta")
    loaded = load(str(folder))
    (result,) = inspect_texts(loaded, [TEXT])
    ids = torch.tensor([[t.id for t in result.tokens]])
    expected = create_position_ids_from_input_ids(ids, loaded.model.embeddings.padding_idx)[0].tolist()
    assert [t.position_id for t in result.tokens] == expected and expected[0] == 2
    analysis = analyse_model(loaded, 8)
    assert "rows 2..9" in analysis.source and loaded.info.max_positions == 66 - 2
    shutil.rmtree(folder)
