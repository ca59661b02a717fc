"""The position measures of `posemb stats` (sink_rate, distance_profile, key_profile), checked against a direct
computation on full eager maps from transformers called directly, one text at a time; their shards merge; and the
CLI options that go with them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import CORPUS, run_cli, transformers_model

TEXTS = [*CORPUS, "short", "Order, order: the tokens sit where they sit, and attention knows it."]


def _maps(folder, texts):
    """Per text, transformers' eager maps (layers, heads, n, n) in float64, each text alone (no padding)."""
    import torch

    tokenizer, model = transformers_model(folder)
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            attentions = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
            out.append(torch.stack([a[0] for a in attentions]).double().numpy())
    return out


def _bin(offset: int) -> int:
    """Closed form of the log-spaced bins 0 | 1 | 2 | 3–4 | 5–8 | …: 1 + ⌈log₂ d⌉ for d ≥ 1."""
    return 0 if offset == 0 else 1 + math.ceil(math.log2(offset))


def _direct(maps, threshold, bins):
    layers, heads = maps[0].shape[:2]
    rows = sum(m.shape[-1] for m in maps)
    alpha0 = np.array([m[..., 0].mean(-1) for m in maps])  # (texts, layers, heads): mean attention on key 0
    sink_rate = (alpha0 > threshold).mean(0)
    width = max(_bin(m.shape[-1] - 1) for m in maps) + 1
    distance = np.zeros((layers, heads, width))
    keys = np.zeros((layers, bins))
    first = np.zeros(layers)
    last = np.zeros(layers)
    for m in maps:
        n = m.shape[-1]
        offsets = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
        for b in range(width):
            distance[..., b] += (m * (np.vectorize(_bin)(offsets) == b)).sum((-2, -1))
        received = m.sum(-2).sum(1)  # (layers, n): over rows and heads
        for j in range(n):
            keys[:, j * bins // n] += received[:, j]
        edge = math.ceil(0.01 * n)
        first += received[:, :edge].sum(-1)
        last += received[:, n - edge :].sum(-1)
    return {
        "sink_rate": sink_rate,
        "alpha0": alpha0,
        "distance": distance / rows,
        "keys": keys / (rows * heads),
        "first": first / (rows * heads),
        "last": last / (rows * heads),
    }


@pytest.mark.parametrize("family", ["LLaMA", "BERT", "BLOOM"])  # causal, bidirectional (padded batches), eager
def test_position_measures_match_direct_computation(family, tiny_models):
    from posemb_cli.models import load
    from posemb_cli.stats import corpus_stats

    folder = tiny_models[family]
    maps = _maps(folder, TEXTS)
    alpha0 = np.array([m[..., 0].mean(-1) for m in maps])
    threshold = float(np.median(alpha0))  # some heads of some texts above it, some below
    expected = _direct(maps, threshold, bins=4)
    assert 0 < expected["sink_rate"].mean() < 1
    result = corpus_stats(
        load(str(folder)), TEXTS, batch_size=3, sink_threshold=threshold, bins=4, memory=4 * 6 * 4 * 3 * 30 * 2
    )
    assert result.sink_threshold == threshold
    assert result.sink_rate == pytest.approx(float(expected["sink_rate"].mean()), abs=1e-12)
    width = expected["distance"].shape[-1]
    for row in result.heads:
        layer, head = row["layer"], row["head"]
        assert row["sink_rate"] == pytest.approx(expected["sink_rate"][layer, head], abs=1e-12)
        profile = np.array(row["distance_profile"])
        np.testing.assert_allclose(profile[:width], expected["distance"][layer, head], atol=1e-6)
        assert not profile[width:].any()  # bins past the longest text hold nothing
        assert profile.sum() == pytest.approx(1.0, abs=1e-5)
    for entry in result.key_profile:
        layer = entry["layer"]
        np.testing.assert_allclose(entry["bins"], expected["keys"][layer], atol=1e-6)
        assert entry["first"] == pytest.approx(expected["first"][layer], abs=1e-6)
        assert entry["last"] == pytest.approx(expected["last"][layer], abs=1e-6)
    assert result.distance_bins[:5] == [[0, 0], [1, 1], [2, 2], [3, 4], [5, 8]]
    assert result.distance_bins[-1][1] == (result.max_length or 2**24) - 1  # BLOOM: no maximum


def test_position_measures_merge_from_shards(tiny_models, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    model = str(tiny_models["LLaMA"])
    parts = []
    for index in range(2):
        part = tmp_path / f"part-{index}.npz"
        result = run_cli("stats", str(corpus), "-m", model, "--shard", f"{index}/2", "--partial", str(part), "-q")
        assert result.exit_code == 0, result.stderr
        parts.append(str(part))
    merged = json.loads(run_cli("stats", "merge", *parts, "--json").stdout)
    one = run_cli("stats", str(corpus), "-m", model, "--json", "--batch-size", "1")
    one_data = json.loads(one.stdout)
    assert merged["sink_rate"] == pytest.approx(one_data["sink_rate"], abs=1e-12)
    for a, b in zip(merged["heads"], one_data["heads"], strict=True):
        np.testing.assert_allclose(a["distance_profile"], b["distance_profile"], atol=1e-9)
    for a, b in zip(merged["key_profile"], one_data["key_profile"], strict=True):
        np.testing.assert_allclose(a["bins"], b["bins"], atol=1e-9)


def test_cli_sink_threshold_bins_and_memory(tiny_models, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    model = str(tiny_models["GPT-2"])
    base = ("stats", str(corpus), "-m", model, "--json")
    result = run_cli(*base, "--sink-threshold", "0.05", "--bins", "3", "--memory", "64KB")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["sink_threshold"] == 0.05 and data["key_bins"] == 3
    assert all(len(entry["bins"]) == 3 for entry in data["key_profile"])
    default = json.loads(run_cli(*base).stdout)  # another block size changes no number beyond rounding
    assert default["sink_threshold"] == 0.3
    for a, b in zip(data["heads"], default["heads"], strict=True):
        assert a["entropy"] == pytest.approx(b["entropy"], abs=1e-6)
        np.testing.assert_allclose(a["distance_profile"], b["distance_profile"], atol=1e-6)
    for bad, words in (("--sink-threshold", "1.5"), ("--memory", "lots"), ("--bins", "0")):
        result = run_cli(*base, bad, words)
        assert result.exit_code == 2 and "Error:" in result.stderr and "Traceback" not in result.stderr


def test_profile_pictures(tiny_models, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    model = str(tiny_models["LLaMA"])
    for kind, name in (("distance", "distance.png"), ("keys", "keys.svg")):
        picture = tmp_path / name
        result = run_cli("stats", str(corpus), "-m", model, "--profile", kind, "-o", str(picture), "-q")
        assert result.exit_code == 0, result.stderr
        assert picture.stat().st_size > 1000
    result = run_cli("stats", str(corpus), "-m", model, "--profile", "keys")
    assert result.exit_code == 2 and "-o" in result.stderr


def test_profile_pages_show_the_numbers_of_the_json(tiny_models, tmp_path):
    """`--plot distance|keys -o FILE.html`: the page's table holds the profile of `--json`, head by head (distance)
    and layer by layer (keys), with the picture beside it."""
    import re

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    model = str(tiny_models["LLaMA"])
    data = json.loads(run_cli("stats", str(corpus), "-m", model, "--json").stdout)
    for kind in ("distance", "keys"):
        page = tmp_path / f"{kind}.html"
        result = run_cli("stats", str(corpus), "-m", model, "--plot", kind, "-o", str(page), "-q")
        assert result.exit_code == 0, result.stderr
        html = page.read_text(encoding="utf-8")
        report = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S)[1])
        blocks = [block for view in report["views"] for block in view.get("blocks", []) if block.get("rows")]
        assert len(blocks) == 1 and "data:image/svg+xml" in html
        rows, columns = blocks[0]["rows"], blocks[0]["columns"]
        if kind == "distance":
            assert len(rows) == data["model"]["layers"] * data["model"]["heads"]
            for head in data["heads"]:
                row = next(r for r in rows if r[columns.index("layer")] == head["layer"] and r[1] == head["head"])
                shown = row[2:]
                np.testing.assert_allclose(shown, head["distance_profile"][: len(shown)], rtol=1e-12)
                assert not any(head["distance_profile"][len(shown) :])  # only bins no head uses are left out
        else:
            assert [r[0] for r in rows] == [entry["layer"] for entry in data["key_profile"]]
            for row, entry in zip(rows, data["key_profile"], strict=True):
                np.testing.assert_allclose(row[1:], [*entry["bins"], entry["first"], entry["last"]], rtol=1e-12)
