"""posemb's attention backend (posemb_cli/backend.py) and the one forward site (posemb_cli/runner.py), checked against
transformers itself: hidden states against its SDPA path, probabilities against its eager maps, for every registry
family whose attention goes through the AttentionInterface; softcap and learned sinks against transformers' own
eager functions of the models that have them."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from conftest import FALCON_ON_INTERFACE, FAMILIES, TINY, run_cli

# Families whose attention bypasses transformers' AttentionInterface with the installed version (docs say so)
BYPASS = {"BLOOM", "MPNet", "DeBERTa"} | (set() if FALCON_ON_INTERFACE else {"Falcon"})
# Small enough that a 19-token batch is cut into several query blocks (the blocking is what is tested)
SMALL_MEMORY = 4 * 6 * 4 * 2 * 20 * 3  # 3 rows per block for 2 texts × 4 heads × ~20 keys


@pytest.fixture(scope="module")
def batch_ids():
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 300, (2, 19), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0  # the second text is padded
    return ids, mask


def _reference(folder, implementation):
    import transformers

    model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation=implementation)
    if model.config.model_type == "t5":
        model = model.get_encoder()
    return model.eval()


def _inputs(loaded, ids, mask):
    return {"input_ids": ids.to(loaded.device), "attention_mask": mask.to(loaded.device)}


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in BYPASS])
def test_backend_equals_sdpa_hidden_states_and_eager_maps(family, tiny_models, batch_ids):
    import torch

    from posemb_cli import runner
    from posemb_cli.models import load

    loaded = load(str(tiny_models[family]))
    assert runner.uses_backend(loaded)
    ids, mask = batch_ids
    ids = ids.clamp(max=loaded.model.config.vocab_size - 1)
    blocks: dict[int, list] = {}
    forward = runner.run(
        loaded,
        _inputs(loaded, ids, mask),
        hidden_states=True,
        reduce=lambda layer, first, block: blocks.setdefault(layer, []).append((first, block.clone())),
        memory=SMALL_MEMORY,
    )
    assert forward.on_backend
    real = mask.bool()
    options = {"attention_mask": mask, "output_hidden_states": True}
    with torch.inference_mode():
        sdpa = _reference(tiny_models[family], "sdpa")(input_ids=ids, **options)
        eager = _reference(tiny_models[family], "eager")(input_ids=ids, output_attentions=True, **options)
    for ours, theirs in zip(forward.output.hidden_states, sdpa.hidden_states, strict=True):
        assert torch.allclose(ours[real], theirs[real], atol=1e-5, rtol=0)
    assert sorted(blocks) == list(range(loaded.info.layers))
    for layer, parts in blocks.items():
        assert len(parts) > 1  # blocked
        rebuilt = torch.zeros_like(eager.attentions[layer])
        for first, block in parts:
            rebuilt[:, :, first : first + block.shape[2], : block.shape[3]] = block
        difference = (rebuilt - eager.attentions[layer]).abs() * real[:, None, :, None]
        assert float(difference.max()) < 1e-5


def test_families_that_bypass_the_interface(tiny_models):
    from posemb_cli import backend
    from posemb_cli.models import load
    from posemb_cli.registry import FAMILIES as REGISTRY

    bypass = {family for family in FAMILIES if backend.bypasses_interface(load(str(tiny_models[family])).model)}
    assert bypass == BYPASS
    assert {family.name for family in REGISTRY if family.reads_eager()} == BYPASS  # what `posemb models` says
    listed = json.loads(run_cli("models", "--json").stdout)
    assert listed[0]["family"] == "BERT" and listed[0]["attention"] == "posemb"


@pytest.mark.parametrize("family", ["BLOOM", "DeBERTa"])
def test_eager_fallback_blocks_are_transformers_maps(family, tiny_models, batch_ids):
    import torch

    from posemb_cli import runner
    from posemb_cli.models import load

    loaded = load(str(tiny_models[family]))
    ids, mask = batch_ids
    maps = runner.Maps(layers=(1,), heads=(0, 2), rows=(4, 11))
    forward = runner.run(loaded, _inputs(loaded, ids, mask), maps=maps, memory=SMALL_MEMORY)
    assert not forward.on_backend and forward.maps[0] is None
    with torch.inference_mode():
        eager = _reference(tiny_models[family], "eager")(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert torch.allclose(forward.maps[1], eager.attentions[1][:, [0, 2], 4:11], atol=1e-6)


def test_kept_maps_are_the_asked_slice(tiny_models, batch_ids):
    import torch

    from posemb_cli import runner
    from posemb_cli.models import load

    loaded = load(str(tiny_models["LLaMA"]))
    ids, mask = batch_ids
    maps = runner.Maps(layers=(0,), heads=(1, 3), rows=(2, 17))
    forward = runner.run(loaded, _inputs(loaded, ids, mask), maps=maps, memory=SMALL_MEMORY)
    assert forward.maps[1] is None and forward.maps[0].shape == (2, 2, 15, 19)
    with torch.inference_mode():
        eager = _reference(tiny_models["LLaMA"], "eager")(input_ids=ids, attention_mask=mask, output_attentions=True)
    expected = eager.attentions[0][:, [1, 3], 2:17]
    assert torch.allclose(forward.maps[0][0], expected[0], atol=1e-6)
    assert torch.allclose(forward.maps[0][1, :, :11], expected[1, :, :11], atol=1e-6)  # real rows of text 2


def test_maps_beyond_the_budget_are_a_usage_error(tiny_models, batch_ids):
    from posemb_cli import runner
    from posemb_cli.errors import PosembUsageError
    from posemb_cli.models import load

    loaded = load(str(tiny_models["LLaMA"]))
    ids, mask = batch_ids
    with pytest.raises(PosembUsageError, match=r"need .* GB, more than .*; narrow it"):
        runner.run(loaded, _inputs(loaded, ids, mask), maps=runner.Maps(budget=1000, narrow="narrow it"))


def _module(heads, groups, **extra):
    return SimpleNamespace(num_key_value_groups=groups, training=False, is_causal=True, head_dim=8, **extra)


def _qkv(heads=4, kv_heads=2, n=11, seed=1):
    import torch

    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, n, 8, generator=generator)
    k = torch.randn(2, kv_heads, n, 8, generator=generator)
    v = torch.randn(2, kv_heads, n, 8, generator=generator)
    return q, k, v


def _causal_mask(n):
    import torch

    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None].expand(2, 1, n, n)


def test_a_model_that_computes_with_its_mask_gets_transformers_mask():
    """Falcon with ALiBi (transformers 5.25) reads the mask's dtype and hands it to torch.where: the LazyMask then
    becomes the tensor transformers' own sdpa_mask builds (a causal and a padding mask here, 11 rows)."""
    import torch
    from transformers.masking_utils import sdpa_mask

    from posemb_cli import backend

    padding = torch.ones(2, 11, dtype=torch.bool)  # as create_causal_mask passes it on
    padding[1, 8:] = False
    lazy = backend.mask_forward(2, 11, 11, attention_mask=padding)
    built = sdpa_mask(2, 11, 11, attention_mask=padding, allow_is_causal_skip=False)
    assert lazy.dtype == torch.bool and lazy.shape == tuple(built.shape)
    bias = torch.where(lazy, torch.full((), 0.0), torch.finfo(torch.float32).min)  # Falcon's own line
    assert torch.equal(bias, torch.where(built, 0.0, torch.finfo(torch.float32).min))
    assert torch.equal(torch.stack([lazy, built]), torch.stack([built, built]))  # one in a list, too


def test_softcap_matches_gemma2_eager():
    import torch
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    from posemb_cli import backend

    q, k, v = _qkv()
    module = _module(4, 2)
    mask = backend.mask_forward(2, 11, 11)  # causal: the default mask function
    with backend.Session(1, memory=4 * 6 * 4 * 2 * 11 * 2):
        ours, _ = backend.attention_forward(module, q, k, v, mask, scaling=0.3, softcap=2.0)
    theirs, _ = eager_attention_forward(module, q, k, v, _causal_mask(11), scaling=0.3, softcap=2.0)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_learned_sinks_match_gpt_oss_eager():
    import torch
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    from posemb_cli import backend

    q, k, v = _qkv()
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0])
    module = _module(4, 2, sinks=sinks)
    seen = []
    mask = backend.mask_forward(2, 11, 11)
    with backend.Session(1, memory=4 * 6 * 4 * 2 * 11 * 4, observe=lambda *a: seen.append(a[2].clone())):
        ours, _ = backend.attention_forward(module, q, k, v, mask, scaling=0.25, s_aux=sinks)
    theirs, weights = eager_attention_forward(module, q, k, v, _causal_mask(11), scaling=0.25)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert len(seen) > 1 and float(seen[0].sum(-1).max()) < 1  # the sink takes a share of every row
    first = seen[0]
    assert torch.allclose(first, weights[:, :, : first.shape[2], : first.shape[3]], atol=1e-6)


@pytest.mark.parametrize("scaling", [0.25, 0.125, 8**-0.5, 0.3])
def test_probabilities_equal_eager_for_every_scaling(scaling):
    """A power-of-two scaling (1/√d for d = 16, 64) is applied to the block's queries (exact), any other to the
    logits, as transformers does: either way the probabilities are the eager path's to float32 rounding."""
    import torch
    from transformers.models.llama.modeling_llama import eager_attention_forward

    from posemb_cli import backend

    q, k, v = _qkv(n=23)
    module = _module(4, 2)
    seen = []
    mask = backend.mask_forward(2, 23, 23)
    with backend.Session(1, memory=4 * 6 * 4 * 2 * 23 * 4, observe=lambda *a: seen.append((a[1], a[2].clone()))):
        ours, _ = backend.attention_forward(module, q, k, v, mask, scaling=scaling)
    theirs, weights = eager_attention_forward(module, q, k, v, _causal_mask(23), scaling=scaling)
    assert len(seen) > 1
    for first, block in seen:
        rows = weights[:, :, first : first + block.shape[2]]
        assert float((block - rows[..., : block.shape[3]]).abs().max()) < 3e-7
        assert not rows[..., block.shape[3] :].any()  # the columns not computed are zeros
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_bfloat16_blocks_match_eager():
    """A half-precision model: each block's product in bfloat16 (into the reused buffer), its softmax in float32, as
    transformers' eager path computes them."""
    import torch
    from transformers.models.llama.modeling_llama import eager_attention_forward

    from posemb_cli import backend

    q, k, v = (t.to(torch.bfloat16) for t in _qkv(n=23))
    module = _module(4, 2)
    seen = []
    with backend.Session(1, memory=4 * 6 * 4 * 2 * 23 * 4, observe=lambda *a: seen.append((a[1], a[2].clone()))):
        ours, _ = backend.attention_forward(module, q, k, v, backend.mask_forward(2, 23, 23), scaling=0.3)
    theirs, weights = eager_attention_forward(module, q, k, v, _causal_mask(23).to(torch.bfloat16), scaling=0.3)
    assert len(seen) > 1 and ours.dtype == torch.bfloat16
    for first, block in seen:
        assert block.dtype == torch.float32
        rows = weights[:, :, first : first + block.shape[2], : block.shape[3]].float()
        assert float((block - rows).abs().max()) < 1e-2  # eager rounds its probabilities to bfloat16
    assert torch.allclose(ours.float(), theirs.float(), atol=2e-2)


def test_in_place_softmax_is_torch_softmax():
    """The backend's CPU softmax runs in place in its reused buffer (aten::_softmax.out with out = input): the same
    numbers as torch.softmax, masked rows included."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for shape in ((1, 32, 16, 8192), (2, 4, 3, 7), (1, 1, 1, 1)):
        logits = torch.randn(*shape, generator=generator) * 8
        logits[..., shape[-1] // 2 :] = torch.finfo(torch.float32).min  # masked keys, as _apply_mask leaves them
        expected = torch.softmax(logits, dim=-1)
        buffer = logits.clone()
        assert torch.equal(torch.ops.aten._softmax.out(buffer, -1, False, out=buffer), expected)


def test_memory_sizes_parse():
    from posemb_cli.backend import parse_memory

    assert parse_memory("512MB") == 512_000_000 and parse_memory("1GiB") == 2**30 and parse_memory("2gb") == 2 * 10**9
    for bad in ("", "lots", "-1GB", "5XB", "nan"):
        with pytest.raises(ValueError, match="not a memory size"):
            parse_memory(bad)


def test_tiny_rows_cover_every_registry_family():
    assert set(FAMILIES) <= set(TINY)


def test_eager_fallback_warns_when_sdpa_differs(tmp_path, tiny_models, monkeypatch):
    """Falcon with ALiBi: transformers 5.24's eager path adds the bias twice (2m/√d; SDPA m/√d). posemb's correction
    (eager_fixes) makes the two agree, so no warning; without it, the check sees the difference and says so once.
    transformers 5.25 sends Falcon through the interface (posemb's backend) with the eager path fixed: there the
    test puts 5.24's eager back by hand (the mask, which carries the bias, added twice) on a model made to fall
    back, so that the check meets the same difference."""
    import torch
    import transformers
    from conftest import Tiny, _tokenizer
    from transformers.models.falcon import modeling_falcon

    from posemb_cli import backend, eager_fixes, runner
    from posemb_cli.models import load

    if FALCON_ON_INTERFACE:
        assert not backend.bypasses_interface(load(str(tiny_models["Falcon"])).model)
        real_eager = modeling_falcon.eager_attention_forward

        def bias_twice(module, query, key, value, attention_mask, **kwargs):
            twice = attention_mask + attention_mask.clamp(min=-1e4)  # the bias again; masked keys stay masked
            return real_eager(module, query, key, value, twice, **kwargs)

        monkeypatch.setattr(backend, "bypasses_interface", lambda model: True)
        monkeypatch.setattr(modeling_falcon, "eager_attention_forward", bias_twice)
        monkeypatch.setitem(eager_fixes.FIXES, "falcon_alibi_once", lambda model: None)  # 5.24's eager as it is

    row = Tiny("falcon", "bos", dict(TINY["Falcon"].config, alibi=True))
    tokenizer = _tokenizer(row.tokenizer)
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(row.model_type, vocab_size=len(tokenizer), **row.config)
    transformers.AutoModel.from_config(config).save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    options = {"attention_mask": torch.ones_like(ids), "output_hidden_states": True, "use_cache": False}
    with torch.inference_mode():
        eager = transformers.AutoModel.from_pretrained(str(tmp_path), attn_implementation="eager")(ids, **options)
        sdpa = transformers.AutoModel.from_pretrained(str(tmp_path), attn_implementation="sdpa")(ids, **options)
    assert float((eager.hidden_states[-1] - sdpa.hidden_states[-1]).abs().max()) > 1e-3  # they do differ
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat on the mat.\n", encoding="utf-8")
    if not FALCON_ON_INTERFACE:
        assert runner.fallback_check(load(str(tmp_path))) == []  # posemb's corrected eager path equals SDPA
        corrected = run_cli("stats", str(corpus), "-m", str(tmp_path), "--format", "csv")
        assert corrected.exit_code == 0 and "give different hidden states" not in corrected.stderr
        monkeypatch.setitem(eager_fixes.FIXES, "falcon_alibi_once", lambda model: None)  # transformers' eager as it is
    uncorrected = shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-uncorrected")  # not a cached model
    (warning,) = runner.fallback_check(load(str(uncorrected)))
    assert "eager attention" in warning and "SDPA" in warning
    result = run_cli("stats", str(corpus), "-m", str(uncorrected), "--format", "csv")
    assert result.exit_code == 0 and "give different hidden states" in result.stderr
    rotary = run_cli("stats", str(corpus), "-m", str(tiny_models["Falcon"]), "--format", "csv")  # paths agree
    assert rotary.exit_code == 0 and "give different hidden states" not in rotary.stderr
