"""Property-based tests: arbitrary Unicode never breaks posemb.

POSEMB_FUZZ_EXAMPLES raises the number of examples per family (default 50); `make fuzz` is the long run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posemb_cli.core import inspect_texts
from posemb_cli.errors import PosembError
from posemb_cli.models import load
from posemb_cli.render.data import to_json

EXAMPLES = int(os.environ.get("POSEMB_FUZZ_EXAMPLES", "50"))
TEXTS = st.text(st.characters(codec="utf-8"), max_size=80)


@pytest.fixture(scope="module")
def loaded_models(tiny_models):
    return {family: load(str(tiny_models[family])) for family in ("BERT", "GPT-2")}


def _check(result, text):
    data = json.loads(json.dumps(to_json(result, vectors=True, attention=True), ensure_ascii=False))
    assert data["text"] == text
    for token in data["tokens"]:
        if token["start"] is not None:
            assert 0 <= token["start"] <= token["end"] <= len(text)
    np.testing.assert_allclose(result.attention.sum(-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("family", ["BERT", "GPT-2"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
def test_arbitrary_text(family, loaded_models, texts):
    loaded = loaded_models[family]
    try:
        batched = list(inspect_texts(loaded, texts, batch_size=4))
    except PosembError as exc:  # GPT-2 has no special tokens: an empty text gives no tokens at all
        assert "gives no tokens" in str(exc)
        return
    for text, result in zip(texts, batched, strict=True):
        _check(result, text)
        single = next(inspect_texts(loaded, [text], batch_size=1))
        assert [t.id for t in single.tokens] == [t.id for t in result.tokens]
        np.testing.assert_allclose(single.attention, result.attention, atol=1e-5)
        np.testing.assert_allclose(single.embedding_output, result.embedding_output, atol=1e-5)
