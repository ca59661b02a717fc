"""posemb's numbers against transformers called directly on the same model, family by family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAMILIES, TINY, transformers_model, transformers_run

from posemb_cli.core import inspect_texts
from posemb_cli.models import load

TEXT = "Position matters, and so does order!"
PAIR = "The cat sat."
ATOL = 1e-5


def _expected_parts(family, model, encoding):
    """token / position / segment vectors by table look-up, with position ids from the closed form."""
    ids = encoding["input_ids"][0]
    n = len(ids)
    token = model.get_input_embeddings().weight[ids]
    if family == "Gemma 3":  # Gemma scales its token embeddings by sqrt(hidden size)
        token = token * model.config.hidden_size**0.5
    position = segment = None
    if family == "RoBERTa":
        position_ids = torch.arange(n) + model.config.pad_token_id + 1
    elif family == "MPNet":  # MPNet counts from its padding_idx (1) + 1, whatever the config says
        position_ids = torch.arange(n) + 2
    elif family == "OPT":  # OPTLearnedPositionalEmbedding: ids from the mask, table rows from 2
        position_ids = torch.cumsum(encoding["attention_mask"][0], 0) - 1 + 2
    else:  # absolute tables from 0; relative, rotary and ALiBi schemes: the token index
        position_ids = torch.arange(n)
    if family in ("BERT", "RoBERTa", "ELECTRA", "DistilBERT", "ALBERT", "MPNet"):
        position = model.embeddings.position_embeddings.weight[position_ids]
    if family == "GPT-2":
        position = model.wpe.weight[position_ids]
    if family == "OPT":
        position = model.decoder.embed_positions.weight[position_ids]
    if family in ("BERT", "RoBERTa", "ELECTRA", "ALBERT"):
        types = encoding.get("token_type_ids", torch.zeros_like(encoding["input_ids"]))[0]
        segment = model.embeddings.token_type_embeddings.weight[types]
    return token, position, segment, position_ids


def _first_layer_input(family, model, total):
    """What the first layer receives, from the parts, by each family's own recipe."""
    if family in ("BERT", "RoBERTa", "ELECTRA", "DistilBERT", "MPNet", "DeBERTa"):
        out = model.embeddings.LayerNorm(total)
        if family == "ELECTRA" and hasattr(model, "embeddings_project"):
            out = model.embeddings_project(out)
        return out
    if family == "ALBERT":  # factorized: LayerNorm in the embedding space, then the projection to the hidden size
        return model.encoder.embedding_hidden_mapping_in(model.embeddings.LayerNorm(total))
    if family == "ModernBERT":
        return model.embeddings.norm(total)
    if family == "BLOOM":
        return model.word_embeddings_layernorm(total)
    return total  # gpt2, opt: token + position; rotary, T5: the token embedding alone


def test_every_family_has_a_tiny_model():
    """A family added to the registry needs one row in conftest.TINY, of one of the family's model types."""
    from posemb_cli.registry import FAMILIES as REGISTRY

    assert set(FAMILIES) == {family.name for family in REGISTRY}
    assert [name for name in FAMILIES if name not in TINY] == []
    for family in REGISTRY:
        assert TINY[family.name].model_type in family.model_types, family.name


@pytest.mark.parametrize("family", FAMILIES)
def test_numbers_match_transformers(family, tiny_models):
    path = tiny_models[family]
    pair = PAIR if family in ("BERT", "ELECTRA", "RoBERTa", "ALBERT") else None
    tokenizer, model, encoding, out = transformers_run(path, TEXT, pair)
    result = next(inspect_texts(load(str(path)), [TEXT], pair=pair))

    assert [t.id for t in result.tokens] == encoding["input_ids"][0].tolist()
    token, position, segment, position_ids = _expected_parts(family, model, encoding)
    assert [t.position_id for t in result.tokens] == position_ids.tolist()
    np.testing.assert_allclose(result.token, token.detach().numpy(), atol=ATOL)
    for name, expected in (("position", position), ("segment", segment)):
        got = getattr(result, name)
        assert (got is None) == (expected is None), name
        if expected is not None:
            np.testing.assert_allclose(got, expected.detach().numpy(), atol=ATOL)
    total = token + (0 if position is None else position) + (0 if segment is None else segment)
    np.testing.assert_allclose(result.sum, total.detach().numpy(), atol=ATOL)
    # the decomposition is what the model computes: the parts add up to the first layer's input
    with torch.no_grad():
        rebuilt = _first_layer_input(family, model, total).numpy()
    np.testing.assert_allclose(result.embedding_output, rebuilt, atol=ATOL)
    np.testing.assert_allclose(result.embedding_output, out.hidden_states[0][0].numpy(), atol=ATOL)
    expected_attention = np.stack([a[0].numpy() for a in out.attentions])
    np.testing.assert_allclose(result.attention, expected_attention, atol=ATOL)
    np.testing.assert_allclose(result.attention.sum(-1), 1.0, atol=1e-5)


def test_segments_and_offsets_with_pair(tiny_models):
    path = tiny_models["BERT"]
    tokenizer, _ = transformers_model(path)
    encoding = tokenizer(TEXT, PAIR)
    result = next(inspect_texts(load(str(path)), [TEXT], pair=PAIR))
    assert [t.segment for t in result.tokens] == encoding["token_type_ids"]
    for token in result.tokens:
        if token.special:
            assert token.start is None and token.end is None
        else:
            source = PAIR if token.segment == 1 else TEXT
            assert source[token.start : token.end].lower() == token.token.removeprefix("##")


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time(family, tiny_models):
    texts = ["a", "The cat sat on the mat.", "Position matters, and so does order! " * 3, "dog"]
    loaded = load(str(tiny_models[family]))
    batched = list(inspect_texts(loaded, texts, batch_size=4))
    single = [next(inspect_texts(loaded, [t], batch_size=1)) for t in texts]
    for b, s in zip(batched, single, strict=True):
        assert [t.id for t in b.tokens] == [t.id for t in s.tokens]
        assert [t.position_id for t in b.tokens] == [t.position_id for t in s.tokens]
        for name in ("token", "sum", "embedding_output", "attention"):
            np.testing.assert_allclose(getattr(b, name), getattr(s, name), atol=ATOL)


def test_bundled_model_matches_transformers(bundled_path):
    text = "我爱自然语言处理"
    tokenizer, model, encoding, out = transformers_run(bundled_path, text)
    result = next(inspect_texts(load(None), [text]))
    assert [t.id for t in result.tokens] == encoding["input_ids"][0].tolist()
    token, position, segment, _ = _expected_parts("BERT", model, encoding)
    np.testing.assert_allclose(result.position, position.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(result.embedding_output, out.hidden_states[0][0].numpy(), atol=ATOL)
    np.testing.assert_allclose(result.attention, np.stack([a[0].numpy() for a in out.attentions]), atol=ATOL)
    unknown = [t for t in result.tokens if t.unknown]
    assert len(unknown) == 7 and all(t.id == tokenizer.unk_token_id for t in unknown)
    assert "7 of 10 tokens are [UNK]" in result.warnings[0] and "bert-base-chinese" in result.warnings[0]


def test_bundled_weights_are_the_recorded_ones(bundled_path):
    import hashlib

    from posemb_cli.models import BUNDLED_SHA256

    digest = hashlib.sha256((bundled_path / "model.safetensors").read_bytes()).hexdigest()
    assert digest == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" == BUNDLED_SHA256


def test_truncation_warns_with_count(tiny_models):
    loaded = load(str(tiny_models["BERT"]))
    text = " ".join(["word"] * 100)  # 100 word pieces + [CLS] + [SEP] against 64 positions
    result = next(inspect_texts(loaded, [text]))
    assert len(result.tokens) == 64
    assert result.warnings == [f"text has 102 tokens but {loaded.info.name} takes at most 64: 38 tokens were cut"]
