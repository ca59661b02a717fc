"""`posemb stats`: per-head statistics checked against a direct computation from transformers' own attentions.

The reference below runs each text alone through transformers with output_attentions=True and computes every
statistic with plain loops written here, independent of posemb's code (posemb_cli.attention and posemb_cli.stats).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import FAMILIES, run_cli, tiny_model_folder

from posemb_cli import attention
from posemb_cli.models import load
from posemb_cli.stats import STATISTICS, corpus_stats, pattern

LINES = [
    "The cat sat on the mat.",
    "Position matters, and so does order!",
    "Attention is all you need; embeddings add up.",
    "Hi",
    "A quick brown fox jumps over the lazy dog 12345 times...",
    "transformers encode position with learned tables, sines, rotations or biases",
    "Why?",
    'Tokens, tokens -- and (more) tokens: "quoted" ones too.',
    "One more line of moderate length for the corpus.",
    "Short one.",
    "x",
    "Heads attend to [CLS], [SEP] and full stops, says Clark et al. (2019).",
]
PAIRS = [
    ("The cat sat on the mat.", "It was happy."),
    ("Position matters!", "So does order, they say."),
    ("Why?", "Because attention spreads over both sentences, unevenly."),
]
KEYS = ["layer", "head", *STATISTICS, "pattern"]
JSON_KEYS = [*KEYS, "sink_rate", "distance_profile"]  # CSV and tables keep KEYS
TOLERANCE = 1e-5


# ---------------------------------------------------------------- the independent reference


def _is_punct(piece: str) -> bool:
    piece = piece.strip()
    return bool(piece) and all(unicodedata.category(c)[0] == "P" for c in piece)


def direct(folder: str, items: list, pairs: bool = False, sink_k: int = 4, max_length: int | None = None) -> dict:
    """Per-head means over all query rows of all texts, from transformers' attentions, one text at a time."""
    import torch
    from conftest import transformers_model

    tokenizer, model = transformers_model(folder)
    sums: dict = {}
    counts = {"rows": 0, "edge": 0, "uniform": 0.0}
    for item in items:
        first, second = item if pairs else (item, None)
        enc = tokenizer(
            first,
            second,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            truncation=max_length is not None,
            max_length=max_length,
        )
        ids = enc["input_ids"]
        n = len(ids)
        special = enc["special_tokens_mask"]
        sequence = enc.sequence_ids()
        sources = (first, second)
        punct = [
            not special[j]
            and sequence[j] is not None
            and _is_punct(sources[sequence[j]][enc["offset_mapping"][j][0] : enc["offset_mapping"][j][1]])
            for j in range(n)
        ]
        first_b = sequence.index(1) if pairs and 1 in sequence else n
        segment = [int(j >= first_b) for j in range(n)]
        inputs = {"input_ids": torch.tensor([ids])}
        if "token_type_ids" in enc and model.config.model_type == "bert":
            inputs["token_type_ids"] = torch.tensor([enc["token_type_ids"]])
        with torch.no_grad():
            maps = model(**inputs, output_attentions=True).attentions
        counts["rows"] += n
        counts["edge"] += n - 1
        visible = (maps[0][0, 0] > 0).sum(-1).double().numpy()  # keys each row can see: n, or i + 1 when causal
        counts["uniform"] += float(np.log(visible).sum())
        positions = np.arange(n)
        is_sep = np.array([bool(special[j]) and j > 0 for j in range(n)])
        is_punct, segment = np.array(punct, dtype=bool), np.array(segment)
        for layer, a_layer in enumerate(maps):
            for head in range(a_layer.shape[1]):
                a = a_layer[0, head].double().numpy()
                s = sums.setdefault((layer, head), dict.fromkeys(STATISTICS + ("within", "across"), 0.0))
                for i in range(n):
                    row = a[i]
                    s["cls"] += row[0] if special[0] else 0.0
                    s["sep"] += row[is_sep].sum()
                    s["punct"] += row[is_punct].sum()
                    s["self"] += row[i]
                    if i >= 1:
                        s["prev"] += row[i - 1]
                    if i <= n - 2:
                        s["next"] += row[i + 1]
                    smooth = 0.9999 * row + 1e-4 / n
                    s["entropy"] += -(smooth * np.log(smooth)).sum()
                    s["distance"] += (row * np.abs(i - positions)).sum()
                    s["sink"] += row[:sink_k].sum()
                    s["within"] += row[segment == segment[i]].sum()
                    s["across"] += row[segment != segment[i]].sum()
    out = {}
    for key, s in sums.items():
        means = {name: value / counts["edge" if name in ("prev", "next") else "rows"] for name, value in s.items()}
        means["uniform_entropy"] = counts["uniform"] / counts["rows"]
        out[key] = means
    return {"heads": out, "tokens": counts["rows"]}


def assert_matches(result, reference: dict, names=STATISTICS) -> None:
    assert result.tokens == reference["tokens"]
    assert len(result.heads) == len(reference["heads"])
    for row in result.heads:
        want = reference["heads"][(row["layer"], row["head"])]
        for name in names:
            assert row[name] == pytest.approx(want[name], abs=TOLERANCE), (row["layer"], row["head"], name)


# ---------------------------------------------------------------- numbers


def test_matches_direct_computation_bundled(bundled, bundled_path):
    result = corpus_stats(bundled, LINES, batch_size=4)
    assert result.texts == len(LINES)
    assert_matches(result, direct(str(bundled_path), LINES))
    assert any(row["punct"] > 0.05 for row in result.heads) and any(row["cls"] > 0.3 for row in result.heads)


@pytest.mark.parametrize("family", ["LLaMA", "GPT-2"])
def test_matches_direct_computation_decoders(tiny_models, family):
    """LLaMA: cls is the BOS at position 0, sep stays 0; GPT-2's tokenizer adds no special token: both 0."""
    loaded = load(str(tiny_models[family]))
    result = corpus_stats(loaded, LINES, batch_size=3)
    assert_matches(result, direct(str(tiny_models[family]), LINES))
    assert all(row["sep"] == 0 for row in result.heads)
    assert all((row["cls"] > 0) == (family == "LLaMA") for row in result.heads)


def test_pairs_match_direct_computation(bundled, bundled_path):
    result = corpus_stats(bundled, PAIRS, pairs=True, batch_size=2)
    assert_matches(result, direct(str(bundled_path), PAIRS, pairs=True), names=(*STATISTICS, "within", "across"))
    for row in result.heads:
        assert row["within"] + row["across"] == pytest.approx(1.0, abs=1e-5)
        assert list(row) == ["layer", "head", *STATISTICS, "within", "across", "pattern", *JSON_KEYS[-2:]]


def test_truncation_matches_direct_computation_and_is_counted(bundled, bundled_path):
    result = corpus_stats(bundled, LINES, batch_size=4, max_length=8, sink_k=2)
    assert_matches(result, direct(str(bundled_path), LINES, sink_k=2, max_length=8))
    long = sum(len(bundled.tokenizer(line)["input_ids"]) > 8 for line in LINES)
    assert result.truncated == long > 0
    assert any(f"{long} of {len(LINES)} text(s) had more than 8 tokens" in w for w in result.warnings)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time_every_family(tiny_models, family):
    """Length-bucketed batches of 4 with padding masks = batch size 1; the order of the lines does not matter.
    Also proves that every family's attention module hands its weights to the hook."""
    loaded = load(str(tiny_models[family]))
    batched = corpus_stats(loaded, LINES, batch_size=4)
    single = corpus_stats(loaded, LINES[::-1], batch_size=1)
    assert len(batched.heads) == loaded.info.layers * loaded.info.heads
    for a, b in zip(batched.heads, single.heads, strict=True):
        for name in STATISTICS:
            assert a[name] == pytest.approx(b[name], abs=1e-6), (family, name)


def test_blocks_of_heads_and_rows_give_the_same_numbers(bundled, monkeypatch):
    """The backend works through blocks of query rows sized from `memory`; the block size changes no number beyond
    float32 rounding: QKᵀ of a block of rows is another matmul than QKᵀ of all rows (its summation order follows its
    shape), so probabilities differ in their last float32 bits (~1e-8 here), never more than rtol 1e-6."""
    from posemb_cli import stats

    blocks: list[int] = []
    real = stats._Reducer.reduce_block

    def counted(self, layer, first, block):
        blocks.append(block.shape[-2])
        return real(self, layer, first, block)

    monkeypatch.setattr(stats._Reducer, "reduce_block", counted)
    whole = corpus_stats(bundled, LINES, batch_size=4)
    whole_blocks, blocks[:] = len(blocks), []
    blocked = corpus_stats(bundled, LINES, batch_size=4, memory=1)  # the smallest blocks the backend allows
    assert len(blocks) > 4 * whole_blocks and max(blocks) <= 2, (whole_blocks, blocks[:8])
    for a, b in zip(whole.heads, blocked.heads, strict=True):
        for name in STATISTICS:
            assert b[name] == pytest.approx(a[name], rel=1e-6, abs=1e-9), name


def test_torch_statistics_agree_with_numpy():
    """The torch versions in attention.py (padded batches) implement the NumPy definitions."""
    import torch

    rng = np.random.default_rng(0)
    lengths = [5, 1, 3]
    size, heads, length = len(lengths), 2, max(lengths)
    maps = np.zeros((size, heads, length, length), dtype=np.float32)
    for b, n in enumerate(lengths):
        logits = rng.normal(size=(heads, n, n))
        maps[b, :, :n, :n] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    a = torch.from_numpy(maps)
    real = torch.tensor([[j < n for j in range(length)] for n in lengths])
    keys = torch.from_numpy(rng.random((size, length, 2)) > 0.5).float()
    got = {
        "entropy": attention.entropy_torch(a, real),
        "distance": attention.distance_torch(a),
        "self": attention.self_attention_torch(a),
        "prev": attention.previous_token_torch(a),
        "next": attention.next_token_torch(a),
        "mass": attention.mass_on_torch(a, keys),
    }
    for b, n in enumerate(lengths):
        one = maps[b, :, :n, :n]
        np.testing.assert_allclose(got["entropy"][b, :, :n], attention.entropy(one), atol=1e-6)
        np.testing.assert_allclose(got["distance"][b, :, :n], attention.distance(one), atol=1e-5)
        if n > 2:  # a block of rows 2.. of the map
            block = attention.distance_torch(a[b : b + 1, :, 2:n, :n], first_row=2)[0]
            np.testing.assert_allclose(block, attention.distance(one)[:, 2:], atol=1e-5)
        np.testing.assert_allclose(got["self"][b, :, :n], attention.self_attention(one), atol=1e-7)
        np.testing.assert_allclose(got["prev"][b, :, : n - 1], attention.previous_token(one), atol=1e-7)
        np.testing.assert_allclose(got["next"][b, :, : n - 1], attention.next_token(one), atol=1e-7)
        for k in range(2):
            mask = keys[b, :n, k].numpy().astype(bool)
            np.testing.assert_allclose(got["mass"][b, :, :n, k], attention.mass_on(one, mask), atol=1e-6)
        np.testing.assert_allclose(attention.sink(one, 2), attention.mass_on(one, np.arange(n) < 2))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kinds", [5, 16])  # the product on 16 columns (zero ones left out), on all of them
def test_block_reductions_equal_the_definitions(causal, kinds):
    """blocks.reduce (one matrix product per block, plus the near keys gathered) gives each row's key masses,
    distance and distance-bin masses as the definitions do: `attention.distance_torch`, `attention.mass_on_torch`
    and the bin of |i − j| summed key by key in float64 here, for blocks anywhere in the map, causal blocks cut at
    their last row, and one-row blocks."""
    import torch

    from posemb_cli import blocks
    from posemb_cli.stats import distance_bins

    torch.manual_seed(0)
    n, heads, size = 300, 3, 2
    edges = distance_bins(n)
    lookup = blocks.bin_lookup(edges, n, "cpu")
    logits = torch.randn(size, heads, n, n) * 3
    if causal:
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    maps = torch.softmax(logits, -1)
    key_masks = (torch.rand(size, n, kinds) > 0.5).float()
    key_masks[..., 4] = 0  # a kind of token the batch lacks: reduce leaves zero columns out of its product
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    bin_of = torch.tensor(
        [[next(b for b, (lo, hi) in enumerate(edges) if lo <= d <= hi) for d in row] for row in (i - j).abs().tolist()]
    )
    expected_profile = torch.zeros(size, heads, n, len(edges), dtype=torch.float64)
    expected_profile.scatter_add_(-1, bin_of.expand(size, heads, n, n), maps.double())
    for first, rows in [(0, 7), (7, 40), (150, 33), (299, 1), (64, 64), (0, n)]:
        keys = first + rows if causal else n  # a causal block stops at its last row
        block = maps[:, :, first : first + rows, :keys].contiguous()
        plan = blocks.plan(first, rows, keys, lookup, len(edges))
        masses, distance, profile = blocks.reduce(block, plan, key_masks[:, :keys])
        torch.testing.assert_close(masses, attention.mass_on_torch(block, key_masks[:, :keys]), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(distance, attention.distance_torch(block, first_row=first), atol=1e-4, rtol=1e-6)
        torch.testing.assert_close(profile.double(), expected_profile[:, :, first : first + rows], atol=1e-6, rtol=1e-5)


def test_lines_are_read_lazily(tiny_models):
    """Only a chunk of lines is read ahead of the first batch; a huge file is never held in memory."""
    from posemb_cli.partials import BLOCK_LINES

    loaded = load(str(tiny_models["BERT"]))
    pulled, at_first_batch = [0], []

    def lines():
        for k in range(10_000):
            pulled[0] += 1
            yield LINES[k % len(LINES)]

    class Stop(Exception):
        pass

    def on_batch(done: int) -> None:
        if not at_first_batch:
            at_first_batch.append(pulled[0])
        if done > BLOCK_LINES:  # the first batch of the second block
            raise Stop

    with pytest.raises(Stop):
        corpus_stats(loaded, lines(), batch_size=32, on_batch=on_batch)
    assert at_first_batch == [BLOCK_LINES]
    assert pulled[0] == 2 * BLOCK_LINES


def test_one_token_texts_have_no_neighbours(tiny_models):
    """GPT-2 adds no special tokens, so "x" is one token: no row has a previous or next token."""
    result = corpus_stats(load(str(tiny_models["GPT-2"])), ["x", "a"])
    assert result.tokens == 2
    for row in result.heads:
        assert row["prev"] is None and row["next"] is None and row["self"] == pytest.approx(1.0)
        assert row["uniform_entropy"] == 0.0 and row["pattern"] == "diagonal"


def test_pattern_thresholds():
    row = dict.fromkeys(STATISTICS, 0.0)
    assert pattern({**row, "cls": 0.3, "sep": 0.25}, False) == "vertical"
    assert pattern({**row, "self": 0.2, "prev": 0.2, "next": 0.1}, False) == "diagonal"
    assert pattern({**row, "cls": 0.5, "self": 0.6}, False) == "diagonal"  # both hold: the larger wins
    assert pattern({**row, "within": 0.85}, True) == "block"
    assert pattern({**row, "within": 0.85}, False) == "heterogeneous"
    assert pattern({**row, "within": 0.7}, True) == "heterogeneous"


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(LINES[:6]) + "\n\n", encoding="utf-8")
    return path


def test_json_keys_exactly_as_documented(corpus, tiny_models):
    result = run_cli("stats", str(corpus), "-m", str(tiny_models["BERT"]), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    measures = ["sink_threshold", "sink_rate", "distance_bins", "key_bins", "key_profile"]  # from 0.5
    assert list(data) == ["model", "texts", "tokens", *measures, "heads"]
    assert data["texts"] == 6 and data["model"]["name"] == str(tiny_models["BERT"])
    assert [(h["layer"], h["head"]) for h in data["heads"]] == [(lay, head) for lay in range(2) for head in range(4)]
    assert all(list(h) == JSON_KEYS for h in data["heads"])
    assert all(h["pattern"] in ("vertical", "diagonal", "heterogeneous") for h in data["heads"])
    assert "Warning: 1 empty line(s) were skipped" in result.stderr


def test_csv_sort_and_plot(corpus, tmp_path, tiny_models):
    picture = tmp_path / "heads.png"
    result = run_cli(
        "stats",
        str(corpus),
        "-m",
        str(tiny_models["BERT"]),
        "--format",
        "csv",
        "--sort",
        "entropy",
        "--reverse",
        "--plot",
        str(picture),
    )
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == KEYS and len(rows) == 8
    entropies = [float(row["entropy"]) for row in rows]
    assert entropies == sorted(entropies, reverse=True)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["heads.png"]  # no temporary left behind


def test_plot_shows_the_json_numbers(bundled, tmp_path):
    from posemb_cli.render.figures.stats import panels, plot_stats

    result = corpus_stats(bundled, LINES[:4], batch_size=2)
    shown = plot_stats(result, tmp_path / "heads.svg")
    assert list(shown) == panels(result) and (tmp_path / "heads.svg").read_text().startswith("<?xml")
    for row in result.heads:
        assert shown["distance"][row["layer"], row["head"]] == row["distance"]


def test_constant_panel_gets_a_colour_bar_from_zero():
    import numpy as np

    from posemb_cli.render.figures.stats import _colour_range

    assert _colour_range(np.zeros((2, 3))) == (0.0, 1.0)  # matplotlib alone: -0.1..0.1
    assert _colour_range(np.full((2, 2), 0.5)) == (0.0, 0.5)
    assert _colour_range(np.array([[np.nan, 0.0]])) == (0.0, 1.0)
    assert _colour_range(np.array([[0.1, 0.2]])) == (None, None)  # varying values: matplotlib's own range


def test_table_and_usage_errors(corpus, tiny_models):
    table = run_cli("stats", str(corpus), "-m", str(tiny_models["GPT-2"]), "--sort", "sink")
    assert table.exit_code == 0, table.stderr
    assert "6 texts" in table.stdout and "pattern" in table.stdout
    bad = run_cli("stats", str(corpus), "--sort", "within")
    assert bad.exit_code == 2 and "within/across need --pairs" in bad.stderr
    missing = run_cli("stats", str(corpus.parent / "nope.txt"))
    assert missing.exit_code == 1 and "Error: cannot read" in missing.stderr


def test_pairs_without_tab_is_an_error(tmp_path, tiny_models):
    path = tmp_path / "pairs.txt"
    path.write_text("a\tb\nno tab here\n", encoding="utf-8")
    result = run_cli("stats", str(path), "--pairs", "-m", str(tiny_models["BERT"]))
    assert result.exit_code == 1 and "line 2 has no tab" in result.stderr


def test_empty_input_and_quiet(tiny_models):
    result = run_cli("stats", "-", "-m", str(tiny_models["BERT"]), "--json", input="")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["heads"] == [] and "no texts were given" in result.stderr
    quiet = run_cli(
        "stats",
        "-",
        "-m",
        str(tiny_models["BERT"]),
        "--json",
        "--quiet",
        "--max-length",
        "4",
        input="\n".join(LINES) + "\n\n",
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["texts"] == len(LINES)


def test_ctrl_c_reports_texts_done_and_writes_no_plot(corpus, tmp_path, tiny_models, monkeypatch):
    from posemb_cli import stats

    real_run, calls = stats._Reducer.run, []

    def interrupt_on_third(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_run(self, batch)

    monkeypatch.setattr(stats._Reducer, "run", interrupt_on_third)
    result = run_cli(
        "stats", str(corpus), "-m", str(tiny_models["BERT"]), "--batch-size", "2", "--plot", str(tmp_path / "p.png")
    )
    assert result.exit_code == 130
    assert "Interrupted after 4 text(s)" in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def _progress_bar_on_a_terminal():
    """A real process whose stderr is a terminal (pty): its stdout, exit status and what the terminal showed."""
    folder = tiny_model_folder("LLaMA")
    args = [sys.executable, "-m", "posemb_cli", "stats", "-", "-m", str(folder), "--format", "csv"]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=dict(os.environ, COLUMNS="120", TERM="xterm-256color"),
    )
    os.close(follower)
    proc.stdin.write(("\n".join(LINES) + "\n").encode())
    proc.stdin.close()
    err = b""
    while True:  # read the terminal while the process runs, so that it never blocks on a full pty
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        err += chunk
    out = proc.stdout.read().decode()
    returncode = proc.wait(timeout=120)
    os.close(leader)
    return out, returncode, err


@pytest.mark.early(job=_progress_bar_on_a_terminal, tiny_models=True)
def test_progress_bar_on_a_terminal(early):
    """The progress bar with texts/s on a terminal (--quiet shows nothing: test_empty_input_and_quiet)."""
    out, returncode, err = early
    assert returncode == 0, err
    assert out.splitlines()[0] == ",".join(KEYS)
    text = err.decode(errors="replace")
    assert "texts/s" in text and f"{len(LINES)} texts" in text


def test_reads_stdin_csv(tiny_models):
    """stdin as bytes, in-process (a real process reading stdin: test_progress_bar_on_a_terminal)."""
    result = run_cli(
        "stats",
        "-",
        "-m",
        str(tiny_models["BLOOM"]),
        "--format",
        "csv",
        "--batch-size",
        "3",
        input="\n".join(LINES).encode(),
    )
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 * 4 and float(rows[0]["uniform_entropy"]) > 0


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
@pytest.mark.parametrize("family", ["BERT", "LLaMA"])
def test_cuda_numbers_agree_with_cpu(family, tiny_models):
    """Devices: the per-head numbers on CUDA equal the CPU ones within 1e-4 (and so does inspect's attention)."""
    from posemb_cli.core import inspect_texts
    from posemb_cli.models import load
    from posemb_cli.stats import corpus_stats

    texts = ["The cat sat on the mat.", "Position matters, and so does order!", "a b c d e f g h i j k"]
    cpu, gpu = load(str(tiny_models[family]), device="cpu"), load(str(tiny_models[family]), device="cuda")
    on_cpu, on_gpu = corpus_stats(cpu, texts).to_json()["heads"], corpus_stats(gpu, texts).to_json()["heads"]
    for a, b in zip(on_cpu, on_gpu, strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert abs(value - b[key]) < 1e-4, (key, a, b)
    for a, b in zip(inspect_texts(cpu, texts), inspect_texts(gpu, texts), strict=True):
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-4)
        np.testing.assert_allclose(a.embedding_output, b.embedding_output, atol=1e-4)
