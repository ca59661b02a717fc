"""`positions --spectrum`: per-pair query/key norms against a direct computation with transformers alone (hooks on
q_proj/k_proj and q_norm/k_norm, reshaped into heads and rotate_half pairs), wavelengths against 2π/inv_freq from
transformers' ROPE_INIT_FUNCTIONS (incl. LongRoPE), and the usage error for a non-rotary model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import CORPUS, build_tiny_model, run_cli


def _direct(folder, texts):
    """Mean per-pair 2-norms of q and k per layer, from transformers and forward hooks only."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    seen: dict = {}
    handles = []
    for layer, block in enumerate(model.layers):
        attn = block.self_attn
        for name in ("q", "k"):
            norm = getattr(attn, f"{name}_norm", None)
            proj = getattr(attn, f"{name}_proj", None) or attn.qkv_proj  # Phi-3: q, k, v in one projection
            width = (config.num_attention_heads if name == "q" else config.num_key_value_heads) * head_dim
            start = 0 if name == "q" or proj is not getattr(attn, "qkv_proj", None) else config.num_attention_heads

            def hook(module, args, output, key=(layer, name), after_norm=norm, lo=start * head_dim, width=width):
                output = output[..., lo : lo + width]
                heads = output.reshape(*output.shape[:-1], -1, head_dim)
                if after_norm is not None:
                    heads = after_norm(heads)
                seen.setdefault(key, []).append(heads[0].double())

            handles.append(proj.register_forward_hook(hook))
    with torch.no_grad():
        for text in texts:
            model(**tokenizer(text, return_tensors="pt"))
    for handle in handles:
        handle.remove()
    half = head_dim // 2
    out = {}
    for (layer, name), chunks in seen.items():
        x = torch.cat(chunks)  # (tokens, heads, d)
        out[(layer, name)] = torch.sqrt(x[..., :half] ** 2 + x[..., half:] ** 2).mean(dim=0).numpy()
    return out, model


@pytest.mark.parametrize("family", ["LLaMA", "Qwen 3", "Phi-3"])
def test_norms_and_wavelengths_match_transformers(family, tmp_path):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    folder = build_tiny_model(family, tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS[:4]) + "\n", encoding="utf-8")
    result = run_cli("positions", "-m", str(folder), "--spectrum", str(corpus), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    direct, model = _direct(folder, CORPUS[:4])
    assert data["texts"] == 4 and data["kv_heads"] == 2 and data["heads"] == 4
    rope_type = model.config.rope_parameters.get("rope_type", "default")
    if rope_type != "default":
        inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](model.config)
    else:
        inv_freq, factor = type(model.rotary_emb).compute_default_rope_parameters(model.config)
    for layer in data["layers"]:
        # the model's RoPE multiplies cos and sin by the rope type's attention_factor (LongRoPE, YaRN): q, k scale
        np.testing.assert_allclose(layer["query_norm"], factor * direct[(layer["layer"], "q")], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer["key_norm"], factor * direct[(layer["layer"], "k")], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer["wavelength"], 2 * math.pi / inv_freq.double().numpy(), rtol=1e-6)
        assert layer["turns"] == [w <= layer["training_length"] for w in layer["wavelength"]]


def test_non_rotary_model_is_a_usage_error(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text\n", encoding="utf-8")
    result = run_cli("positions", "-m", "bundled", "--spectrum", str(corpus))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: --spectrum needs a rotary model; sentence-transformers/all-MiniLM-L6-v2 is learned_absolute"
    ]


def test_picture_and_page(tmp_path):
    folder = build_tiny_model("LLaMA", tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS[:2]) + "\n", encoding="utf-8")
    for name in ("spectrum.png", "spectrum.html"):
        result = run_cli("positions", "-m", str(folder), "--spectrum", str(corpus), "-o", str(tmp_path / name))
        assert result.exit_code == 0, result.output
    assert (tmp_path / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "spectrum.html").read_text(encoding="utf-8")
    assert "rotary pair" in page and "data:image" not in page.split("<script")[0]
