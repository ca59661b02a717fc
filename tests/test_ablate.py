"""posemb ablate: every measure against transformers called directly and numpy formulas written here, never against
posemb's own computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAMILIES, run_cli

TEXT = "the cat sat on the mat"
MODES = ["zero", "shuffle", "reverse", "shift:7", "ids:0,0,1,1,2,2,3,3", "isolate", "permute-tokens"]


def _cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cos(x_i, y_i) per token, layer by layer: x, y (layers + 1, n, d)."""
    return (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))


def _cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) with Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X Xᵀ."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    gx, gy = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((gx * gy).sum() / np.sqrt((gx * gx).sum() * (gy * gy).sum()))


def _hidden(model, ids, position_ids=None, token_types=None) -> np.ndarray:
    """transformers directly: (layers + 1, n, d) for one sequence; the mask is given (as posemb does) so that
    transformers never reads non-increasing position ids as packed sequences."""
    import torch

    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if position_ids is not None:
        inputs["position_ids"] = torch.tensor([position_ids])
    if token_types is not None:
        inputs["token_type_ids"] = torch.tensor([token_types])
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    return np.stack([h[0].double().numpy() for h in out.hidden_states])


def _json(*args: str) -> dict:
    result = run_cli("ablate", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def ablation(bundled):
    """The bundled model (conftest), its hidden states on TEXT and `posemb ablate --json` of every mode."""
    loaded = bundled
    ids = loaded.tokenizer(TEXT)["input_ids"]
    report = _json(TEXT, *[f"--mode={m}" for m in MODES])
    return loaded.model, ids, _hidden(loaded.model, ids), {m["mode"]: m for m in report["modes"]}, report


def _check_measures(mode: dict, normal: np.ndarray, ablated: np.ndarray) -> None:
    cos = _cosines(normal, ablated)
    assert len(mode["layers"]) == len(normal)
    for k, layer in enumerate(mode["layers"]):
        assert layer["layer"] == ("embeddings" if k == 0 else k - 1)
        assert layer["cosine_mean"] == pytest.approx(cos[k].mean(), abs=1e-5)
        assert layer["cosine_min"] == pytest.approx(cos[k].min(), abs=1e-5)
        assert layer["cka"] == pytest.approx(_cka(normal[k], ablated[k]), abs=1e-5)


def test_position_modes_equal_transformers_with_the_same_position_ids(ablation):
    model, ids, normal, modes, report = ablation
    n = len(ids)
    assert report["texts"] == 1 and report["model"]["position_scheme"] == "learned_absolute"
    expected = {
        "zero": [0] * n,
        "reverse": list(range(n))[::-1],
        "shift:7": [k + 7 for k in range(n)],
        "ids:0,0,1,1,2,2,3,3": [0, 0, 1, 1, 2, 2, 3, 3],
    }
    for name, want in expected.items():
        assert modes[name]["position_ids"] == [want]
    shuffled = modes["shuffle"]["position_ids"][0]
    assert sorted(shuffled) == list(range(n)) and shuffled[0] == 0 and shuffled[-1] == n - 1  # [CLS], [SEP] stay
    assert shuffled != list(range(n))
    for name in ("zero", "shuffle", "reverse", "shift:7", "ids:0,0,1,1,2,2,3,3"):
        mode = modes[name]
        _check_measures(mode, normal, _hidden(model, ids, mode["position_ids"][0]))
        assert all(layer["attention"] is not None for layer in mode["layers"][1:])


def test_isolate_is_each_token_alone_and_the_articles_reshaped_call(ablation):
    import torch

    model, ids, normal, modes, _ = ablation
    alone = np.stack([_hidden(model, [token])[:, 0] for token in ids], axis=1)  # (layers + 1, n, d)
    with torch.inference_mode():  # the seed article: model(input_ids.view(-1, 1))
        out = model(torch.tensor([ids]).view(-1, 1), output_hidden_states=True)
    reshaped = np.stack([h[:, 0].double().numpy() for h in out.hidden_states])
    assert np.abs(reshaped - alone).max() < 1e-5
    mode = modes["isolate"]
    assert mode["position_ids"] is None and all(layer["attention"] is None for layer in mode["layers"])
    # posemb runs exactly the reshaped call; CKA of the last layers amplifies the 1e-6 between the two ways (the
    # tokens alone are nearly alike, so their centred Gram is small): compare the cosines with both
    _check_measures(mode, normal, reshaped)
    cos = _cosines(normal, alone)
    assert [layer["cosine_mean"] for layer in mode["layers"]] == pytest.approx(cos.mean(1), abs=1e-5)


def test_permute_tokens_matches_tokens_by_identity(ablation):
    model, ids, normal, modes, _ = ablation
    mode = modes["permute-tokens"]
    order = mode["token_order"][0]  # slot k held token order[k]
    assert sorted(order) == list(range(len(ids))) and order != sorted(order)
    assert order[0] == 0 and order[-1] == len(ids) - 1
    assert mode["position_ids"] == [list(range(len(ids)))]
    ablated = _hidden(model, [ids[t] for t in order])
    matched = ablated[:, np.argsort(order)]  # token t's state, wherever it sat
    _check_measures(mode, normal, matched)


def test_attention_change_is_ablated_minus_normal(ablation):
    import torch

    model, ids, _, modes, _ = ablation
    position_ids = modes["reverse"]["position_ids"][0]

    def summary(position_ids):
        with torch.inference_mode():
            # with its attention mask, as posemb gives it: without one, transformers >= 5.25 reads position ids
            # that do not count up by one as packed sequences and masks attention between them
            tokens = torch.tensor([ids])
            out = model(tokens, attention_mask=torch.ones_like(tokens), position_ids=torch.tensor([position_ids]),
                        output_attentions=True)  # fmt: skip
        a = np.stack([x[0].double().numpy() for x in out.attentions])  # (layers, heads, n, n)
        n = a.shape[-1]
        smoothed = 0.9999 * a + 1e-4 / n
        distance = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
        return {
            "entropy": -(smoothed * np.log(smoothed)).sum(-1).mean((1, 2)),
            "distance": (a * distance).sum(-1).mean((1, 2)),
            "self": np.einsum("lhii->lhi", a).mean((1, 2)),
            "prev": np.array(
                [[np.mean([a[z, h, i, i - 1] for i in range(1, n)]) for h in range(a.shape[1])] for z in range(len(a))]
            ).mean(1),
            "next": np.array(
                [[np.mean([a[z, h, i, i + 1] for i in range(n - 1)]) for h in range(a.shape[1])] for z in range(len(a))]
            ).mean(1),
        }

    before, after = summary(list(range(len(ids)))), summary(position_ids)
    for layer, row in enumerate(modes["reverse"]["layers"][1:]):
        for key, value in row["attention"].items():
            assert value == pytest.approx(after[key][layer] - before[key][layer], abs=1e-5), (layer, key)


def test_equivariance_with_equal_positions_on_a_tiny_bert(tiny_models):
    """With every position id 0 and every token type 0, BERT's output for permuted tokens is the permuted output."""
    from posemb_cli.models import load

    folder = str(tiny_models["BERT"])
    model = load(folder).model
    ids = load(folder).tokenizer(TEXT)["input_ids"]
    n = len(ids)
    order = np.random.default_rng(1).permutation(n)
    zeros = [0] * n
    straight = _hidden(model, ids, zeros, zeros)
    permuted = _hidden(model, [ids[t] for t in order], zeros, zeros)
    assert np.abs(permuted - straight[:, order]).max() < 1e-5
    assert np.abs(_hidden(model, ids)[:, order] - _hidden(model, [ids[t] for t in order])).max() > 1e-2
    report = _json(TEXT, "-m", folder, "--mode", "shuffle", "--mode", "reverse", "--mode", "permute-tokens")
    for mode in report["modes"]:
        assert 0 <= mode["equivariance_max_deviation"] < 1e-5


def test_rotary_shift_changes_nothing(tiny_models):
    """RoPE scores depend on i − j only: every id + K leaves attention and outputs as they were (tiny LLaMA)."""
    import torch

    from posemb_cli.models import load

    folder = str(tiny_models["LLaMA"])
    model, tokenizer = load(folder).model, load(folder).tokenizer
    ids = tokenizer("hello world, the cat sat")["input_ids"]
    n = len(ids)

    def attention(shift):
        with torch.inference_mode():
            out = model(torch.tensor([ids]), position_ids=torch.arange(n)[None] + shift, output_attentions=True)
        return np.stack([a.numpy() for a in out.attentions])

    assert np.abs(attention(100) - attention(0)).max() < 1e-5
    assert np.abs(_hidden(model, ids, list(range(100, 100 + n))) - _hidden(model, ids)).max() < 1e-4
    result = run_cli("ablate", "hello world, the cat sat", "-m", folder, "--mode", "shift:100", "--json")
    assert result.exit_code == 0, result.output
    mode = json.loads(result.stdout)["modes"][0]
    assert "trained on" in " ".join(mode["notes"])  # ids past the 64 trained positions: a note, not an error
    for layer in mode["layers"]:
        assert layer["cosine_min"] > 1 - 1e-5 and layer["cka"] > 1 - 1e-5
        assert layer["attention"] is None or max(abs(v) for v in layer["attention"].values()) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_and_its_own_ids_change_nothing(family, tiny_models):
    """shift:0 gives each model its own position ids through its forward argument (RoBERTa from padding_idx + 1,
    OPT from 2): the run must equal the normal one. Families without position ids run isolate and permute-tokens."""
    from posemb_cli.models import load

    folder = str(tiny_models[family])
    loaded = load(folder)
    takes_ids = loaded.family.forward_position_ids(loaded.model) is not None
    args = ["--mode", "shift:0", "--mode", "permute-tokens"] if takes_ids else []
    result = run_cli("ablate", "The cat sat on the mat.", "-m", folder, *args, "--json")
    assert result.exit_code == 0, result.output
    modes = {m["mode"]: m for m in json.loads(result.stdout)["modes"]}
    if not takes_ids:
        assert list(modes) == ["isolate", "permute-tokens"]
        assert modes["permute-tokens"]["equivariance_max_deviation"] is None
        return
    assert all(layer["cosine_min"] > 1 - 1e-5 for layer in modes["shift:0"]["layers"])
    first = loaded.family.first_position_id(loaded.model.config)
    assert modes["shift:0"]["position_ids"][0][0] == first
    if loaded.family.causal:
        assert modes["permute-tokens"]["equivariance_max_deviation"] is None
        assert "causal" in " ".join(modes["permute-tokens"]["notes"])


def test_alibi_refuses_position_modes(tiny_models):
    result = run_cli("ablate", TEXT, "-m", str(tiny_models["BLOOM"]), "--mode", "zero", "--mode", "isolate")
    assert result.exit_code == 2
    assert "takes no position ids" in result.stderr and "isolate and permute-tokens" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "sideways"], "unknown mode"),
        (["--mode", "shift:x"], "shift takes an integer"),
        (["--mode", "ids:0,1"], "gives 2 position ids, but 'the cat sat on the mat' has 8 tokens"),
        (["--mode", "shift:600"], "passes the maximum of sentence-transformers/all-MiniLM-L6-v2, whose 512 positions"),
        (["--mode", "shift:-1"], "below 0"),
        (["--plot", "similarity"], "needs -o FILE"),
        (["--format", "csv"], "ablate prints table or json"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message):
    result = run_cli("ablate", TEXT, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corpus_mean_pools_tokens(tmp_path):
    texts = ["the cat sat on the mat", "position matters, and so does order"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    pooled = _json("--corpus", str(corpus), "--corpus-mean", "--mode", "zero")
    singles = [_json(text, "--mode", "zero") for text in texts]
    assert pooled["texts"] == 2 and pooled["tokens"] == sum(s["tokens"] for s in singles)
    for k, layer in enumerate(pooled["modes"][0]["layers"]):
        parts = [s["modes"][0]["layers"][k] for s in singles]
        weights = [s["tokens"] for s in singles]
        mean = sum(p["cosine_mean"] * w for p, w in zip(parts, weights, strict=True)) / sum(weights)
        assert layer["cosine_mean"] == pytest.approx(mean, abs=1e-6)
        assert layer["cosine_min"] == pytest.approx(min(p["cosine_min"] for p in parts), abs=1e-6)
    assert pooled["modes"][0]["position_ids"] == [s["modes"][0]["position_ids"][0] for s in singles]


def test_table_and_plots(tmp_path):
    result = run_cli("ablate", TEXT, "--mode", "zero", "--mode", "isolate")
    assert result.exit_code == 0, result.output
    assert "mean cosine" in result.stdout and "change in attention" in result.stdout
    from posemb_cli.ablate import ablate_texts, parse_modes
    from posemb_cli.models import load
    from posemb_cli.render.figures.ablate import plot_ablation

    modes = parse_modes(["zero", "isolate"])
    assert modes is not None
    report = next(ablate_texts(load(None), [TEXT], modes))
    for kind in ("similarity", "attention"):
        data = plot_ablation(report, kind, tmp_path / f"{kind}.png")
        assert data.path.stat().st_size > 1000
    assert np.allclose(data.arrays["entropy/zero"], [row.attention["entropy"] for row in report.modes[0].layers[1:]])
    cli = run_cli("ablate", TEXT, "--plot", "similarity", "-o", str(tmp_path / "cli.png"))
    assert cli.exit_code == 0 and cli.stdout == "" and (tmp_path / "cli.png").is_file()


def test_progress_counts_texts_as_they_finish():
    """The progress bar's callback (shown on a terminal) is told the texts done, also under --corpus-mean."""
    from posemb_cli.ablate import ablate_texts, parse_modes
    from posemb_cli.models import load

    modes = parse_modes(["zero"])
    assert modes is not None
    done: list[int] = []
    reports = list(
        ablate_texts(load(None), ["the cat", "", "sat on the mat"], modes, corpus_mean=True, on_text=done.append)
    )
    assert done == [1, 2] and len(reports) == 1 and reports[0].texts == 2


def test_pooled_cka_keeps_a_bounded_number_of_tokens(monkeypatch):
    from posemb_cli import ablate
    from posemb_cli.models import load

    monkeypatch.setattr(ablate, "MAX_CKA_TOKENS", 6)
    modes = ablate.parse_modes(["zero"])
    assert modes is not None
    [report] = ablate.ablate_texts(load(None), ["the cat sat on the mat", "position matters"], modes, corpus_mean=True)
    mode = report.modes[0]
    assert any("first 6 tokens" in note for note in mode.notes)
    assert all(np.isfinite(layer.cka) for layer in mode.layers)
