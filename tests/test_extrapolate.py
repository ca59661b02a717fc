"""`posemb extrapolate` against transformers itself: every variant's losses equal the loss (`labels=`) of a model saved
with that rope scaling in its config, or whose frequencies / layer inputs the test altered by hand; the window and
stride accounting equals a loop written here; refusals are one line."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import CORPUS, _tokenizer, run_cli

TRAINED = 32  # the tiny model's max_position_embeddings: its "training length"
LENGTHS = (32, 80)
ATOL = 1e-5
DOC = Path(__file__).resolve().parents[1] / "docs" / "extrapolate.md"


def _text() -> str:
    import random

    rng = random.Random(0)
    return " ".join(rng.choice(CORPUS) for _ in range(120))


def _save_llama(folder: Path, rope: dict, max_positions: int = TRAINED, layers: int = 2) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer("bos")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        rope_parameters={"rope_theta": 10000.0, **rope},
        initializer_range=0.5,  # large weights: position changes the loss by 0.05-0.2 nats, not 1e-5
        tie_word_embeddings=True,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _with_rope(base: Path, folder: Path, rope: dict, max_positions: int = TRAINED) -> Path:
    """The same weights and tokenizer as `base`, with these rope parameters in config.json."""
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_theta": 10000.0, **rope}
    config["max_position_embeddings"] = max_positions
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("extrapolate")
    base = _save_llama(root / "base", {"rope_type": "default"})
    text = root / "text.txt"
    text.write_text(_text(), encoding="utf-8")
    return {"base": base, "text": text, "root": root}


def _ids(folder: Path, text: Path):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return torch.tensor(tokenizer(text.read_text(), add_special_tokens=False)["input_ids"])


def _model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def _transformers_losses(model, ids, length: int, shift: int = 0) -> tuple[float, list[float]]:
    """Mean of transformers' own loss over the non-overlapping windows, and the per-position token NLL (float64) of
    each window (position k at index k - 1), computed from the logits here."""
    import torch

    losses, per_position = [], []
    with torch.inference_mode():
        for start in range(0, len(ids) - length + 1, length):
            window = ids[start : start + length][None]
            positions = torch.arange(length)[None] + shift
            out = model(input_ids=window, labels=window, position_ids=positions)
            losses.append(float(out.loss))
            logp = out.logits[0, :-1].double().log_softmax(-1)
            per_position.append((-logp.gather(-1, window[0, 1:, None])[:, 0]).tolist())
    return sum(losses) / len(losses), per_position


def _run(*args: str) -> dict:
    result = run_cli("extrapolate", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _variant(report: dict, name: str) -> dict:
    return next(v for v in report["variants"] if v["name"] == name)


HAND_SAVED = {  # variant -> the rope parameters a model saved with that scaling has in its config
    "as-trained": {"rope_type": "default"},
    "linear:4": {"rope_type": "linear", "factor": 4.0},
    "dynamic:4": {"rope_type": "dynamic", "factor": 4.0},
    "yarn:4": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": TRAINED, "beta_fast": 16.0},
    "llama3:4": {
        "rope_type": "llama3",
        "factor": 4.0,
        "original_max_position_embeddings": TRAINED,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    },
}


@pytest.fixture(scope="module")
def report(lm) -> dict:
    variants = [*HAND_SAVED, "drop-low:0.5", "nope-layer:1", "shift:5"]
    args = [str(lm["text"]), "-m", str(lm["base"]), "--lengths", ",".join(map(str, LENGTHS)), "--bins", "6"]
    return _run(*args, *[f"--variant={v}" for v in variants], "--rope-param", "beta_fast=16")


@pytest.mark.parametrize("name", list(HAND_SAVED))
def test_rope_variants_equal_a_model_saved_with_that_scaling(lm, report, name):
    folder = _with_rope(lm["base"], lm["root"] / name.replace(":", "_"), HAND_SAVED[name])
    model, ids = _model(folder), _ids(folder, lm["text"])
    variant = _variant(report, name)
    for length in LENGTHS:
        expected, per_position = _transformers_losses(model, ids, length)
        assert variant["loss"][str(length)] == pytest.approx(expected, abs=ATOL)
        assert math.log(variant["perplexity"][str(length)]) == pytest.approx(expected, abs=ATOL)
        assert variant["tokens"][str(length)] == len(per_position) * (length - 1)
    by_position = variant["loss_by_position"]
    assert by_position["length"] == LENGTHS[-1]
    for (start, end), mean, tokens in zip(by_position["bins"], by_position["mean"], by_position["tokens"], strict=True):
        values = [row[k - 1] for row in per_position for k in range(start, end)]
        assert tokens == len(values)
        assert mean == pytest.approx(sum(values) / len(values), abs=ATOL)


def test_a_variant_with_the_same_cos_sin_is_not_run_again(report):
    """dynamic NTK changes nothing up to the training length (transformers' dynamic rope keeps the original
    frequencies there): at 32 it reuses as-trained's losses, which the test above checks against a model saved with
    dynamic scaling; at 80 it runs. No other variant has as-trained's cos/sin at any length."""
    dynamic = _variant(report, "dynamic:4")
    assert dynamic["same_as"] == {"32": "as-trained"}
    assert any(note.startswith("at length 32: the same cos/sin as as-trained") for note in dynamic["notes"])
    for variant in report["variants"]:
        assert variant["name"] == "dynamic:4" or variant["same_as"] == {}, variant["name"]


def _offset_bin(offset: int) -> int:
    """The distance_profile bins 0 | 1 | 2 | 3–4 | 5–8 | … in closed form: 1 + ⌈log₂ d⌉ for d ≥ 1."""
    return 0 if offset == 0 else 1 + math.ceil(math.log2(offset))


def test_attention_equals_eager_maps_of_transformers(lm):
    """--attention: sink (mass on the first 4 keys), sink_rate (windows whose mean attention on key 0 exceeds 0.3)
    and distance_profile (mass by offset bin), per layer and head, against transformers' eager maps of each window
    of a model saved with that scaling; the losses are the same as without --attention."""
    import numpy as np
    import torch

    args = [str(lm["text"]), "-m", str(lm["base"]), "--lengths", "32,80", "--variant=as-trained", "--variant=yarn:4"]
    report = _run(*args, "--attention")
    assert report["attention"]["sink_k"] == 4 and report["attention"]["sink_threshold"] == 0.3
    plain = _run(*args)
    for name, saved in (("as-trained", lm["base"]), ("yarn:4", None)):
        folder = saved or _with_rope(lm["base"], lm["root"] / "yarn_attention", HAND_SAVED["yarn:4"])
        model, ids = _model(folder), _ids(folder, lm["text"])
        variant = _variant(report, name)
        for length in LENGTHS:
            assert variant["loss"][str(length)] == pytest.approx(_variant(plain, name)["loss"][str(length)], abs=ATOL)
            maps = []
            with torch.inference_mode():
                for start in range(0, len(ids) - length + 1, length):
                    out = model(input_ids=ids[start : start + length][None], output_attentions=True)
                    maps.append(torch.stack([a[0] for a in out.attentions]).double().numpy())  # (layers, heads, n, n)
            maps = np.array(maps)  # (windows, layers, heads, n, n)
            offsets = np.arange(length)[:, None] - np.arange(length)[None, :]
            bins = np.vectorize(_offset_bin)(np.abs(offsets))
            width = _offset_bin(length - 1) + 1
            profile = np.stack([(maps * (bins == b)).sum(-1).mean((0, 3)) for b in range(width)], axis=-1)
            got = variant["attention"][str(length)]
            assert report["attention"]["distance_bins"][str(length)][-1] == [2 ** (width - 3) + 1, length - 1]
            np.testing.assert_allclose(got["sink"], maps[..., :4].sum(-1).mean((0, 3)), atol=1e-6)
            np.testing.assert_allclose(got["sink_rate"], (maps[..., 0].mean(-1) > 0.3).mean(0), atol=1e-12)
            np.testing.assert_allclose(got["distance_profile"], profile, atol=1e-6)
            assert got["mean"]["sink"] == pytest.approx(float(np.mean(got["sink"])), abs=1e-12)
    rates = np.array([_variant(report, "as-trained")["attention"][str(n)]["sink_rate"] for n in LENGTHS])
    assert 0 < rates.mean() < 1, rates  # some heads above the threshold, some below: the rate is tested
    assert _variant(report, "as-trained")["attention"]["80"]["mean"]["sink"] != pytest.approx(
        _variant(report, "yarn:4")["attention"]["80"]["mean"]["sink"], abs=1e-4
    )  # the variant changes the maps


def test_drop_low_equals_frequencies_zeroed_by_hand(lm, report):
    import torch

    model, ids = _model(lm["base"]), _ids(lm["base"], lm["text"])
    rotary = model.model.rotary_emb
    lowest = torch.argsort(rotary.inv_freq)[: len(rotary.inv_freq) // 2]  # half of the 8 pairs: the 4 slowest
    rotary.inv_freq[lowest] = 0.0
    assert sorted(lowest.tolist()) == [4, 5, 6, 7]
    variant = _variant(report, "drop-low:0.5")
    assert "4 of 8 pairs unrotated" in variant["description"] and "4–7" in variant["description"]
    for length in LENGTHS:
        assert variant["loss"][str(length)] == pytest.approx(_transformers_losses(model, ids, length)[0], abs=ATOL)


def test_nope_layer_equals_a_layer_given_no_rotation_by_hand(lm, report):
    import torch

    model, ids = _model(lm["base"]), _ids(lm["base"], lm["text"])
    attention = model.model.layers[1].self_attn
    forward = attention.forward

    def unrotated(*args, position_embeddings, **kwargs):
        cos, sin = position_embeddings
        return forward(*args, position_embeddings=(torch.ones_like(cos), torch.zeros_like(sin)), **kwargs)

    attention.forward = unrotated
    variant = _variant(report, "nope-layer:1")
    for length in LENGTHS:
        assert variant["loss"][str(length)] == pytest.approx(_transformers_losses(model, ids, length)[0], abs=ATOL)
    assert _variant(report, "as-trained")["loss"][str(LENGTHS[-1])] != pytest.approx(
        variant["loss"][str(LENGTHS[-1])], abs=1e-4
    )


def test_shift_on_rotary_equals_as_trained(report):
    shifted, trained = _variant(report, "shift:5"), _variant(report, "as-trained")
    for length in LENGTHS:
        assert shifted["loss"][str(length)] == pytest.approx(trained["loss"][str(length)], abs=ATOL)
    assert shifted["check"]["against"] == "as-trained" and shifted["check"]["ok"]
    assert 0 <= shifted["check"]["max_abs_difference"] < 1e-4  # per position too: fewer tokens, float32 rounding
    assert trained["rope"]["type"] == "default" and trained["rope"]["dim"] == 16


def test_none_and_longrope_on_a_longrope_model(lm):
    """`none` removes the config's scaling (= the same weights saved with default RoPE); `longrope` is the config's
    own factors (= transformers on that model, which switches to the long factors past 32 positions)."""
    rope = {
        "rope_type": "longrope",
        "short_factor": [1.0, 1.0, 1.1, 1.2, 1.5, 2.0, 2.5, 3.0],
        "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
        "original_max_position_embeddings": TRAINED,
    }
    folder = _with_rope(lm["base"], lm["root"] / "longrope", rope, max_positions=4 * TRAINED)
    report = _run(str(lm["text"]), "-m", str(folder), "--lengths", "32,80", "--variant=longrope", "--variant=none")
    ids = _ids(folder, lm["text"])
    longrope, default = _model(folder), _model(lm["base"])
    for length in LENGTHS:
        got = _transformers_losses(longrope, ids, length)[0]
        assert _variant(report, "longrope")["loss"][str(length)] == pytest.approx(got, abs=ATOL)
        got = _transformers_losses(default, ids, length)[0]
        assert _variant(report, "none")["loss"][str(length)] == pytest.approx(got, abs=ATOL)
    assert report["training_length"] == TRAINED


def test_sliding_window_accounting_equals_a_loop(lm):
    """The stride protocol of Press et al. / the YaRN paper, as the Hugging Face perplexity guide writes it: windows
    `stride` apart, each scoring only the tokens the previous one did not."""
    import torch

    length, stride = 32, 12
    report = _run(str(lm["text"]), "-m", str(lm["base"]), "--lengths", str(length), "--stride", str(stride))
    model, ids = _model(lm["base"]), _ids(lm["base"], lm["text"])
    nll, count, windows, previous_end = 0.0, 0, 0, 0
    with torch.inference_mode():
        for begin in range(0, len(ids) - length + 1, stride):
            end = begin + length
            target = end - max(previous_end, begin + 1)  # new tokens (the window's first has no context)
            window = ids[begin:end][None]
            logp = model(input_ids=window).logits[0, :-1].double().log_softmax(-1)
            token_nll = -logp.gather(-1, window[0, 1:, None])[:, 0]
            nll += float(token_nll[-target:].sum())
            count += target
            windows += 1
            previous_end = end
    variant = _variant(report, "as-trained")
    assert report["windows"] == {str(length): windows} and report["stride"] == stride
    assert variant["tokens"][str(length)] == count
    assert variant["loss"][str(length)] == pytest.approx(nll / count, abs=ATOL)


def test_learned_positions_shift_equals_transformers(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _tokenizer("plain")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    text = tmp_path / "text.txt"
    text.write_text(_text(), encoding="utf-8")
    report = _run(
        str(text), "-m", str(tmp_path / "gpt2"), "--lengths", "24", "--variant=as-trained", "--variant=shift:40"
    )
    model, ids = _model(tmp_path / "gpt2"), _ids(tmp_path / "gpt2", text)
    assert _variant(report, "shift:40")["loss"]["24"] == pytest.approx(
        _transformers_losses(model, ids, 24, 40)[0], abs=ATOL
    )
    assert _variant(report, "as-trained")["loss"]["24"] == pytest.approx(
        _transformers_losses(model, ids, 24)[0], abs=ATOL
    )
    assert _variant(report, "shift:40")["rope"] is None
    refused = run_cli("extrapolate", str(text), "-m", str(tmp_path / "gpt2"), "--lengths", "32", "--variant=shift:40")
    assert refused.exit_code == 2 and "needs position ids up to 71; " in refused.stderr
    refused = run_cli("extrapolate", str(text), "-m", str(tmp_path / "gpt2"), "--lengths", "24", "--variant=yarn:2")
    assert refused.exit_code == 2 and "changes RoPE" in refused.stderr


def _one_line_error(result, code: int, words: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr and "Traceback" not in result.output


def test_refusals_are_one_line(lm, bundled_path):
    text, base = str(lm["text"]), str(lm["base"])
    _one_line_error(run_cli("extrapolate", text, "-m", str(bundled_path)), 1, "is an encoder (masked LM)")
    _one_line_error(run_cli("extrapolate", text), 2, "needs a causal language model: give one with -m")
    _one_line_error(run_cli("extrapolate", text, "-m", base, "--lengths", "4k"), 1, "fewer than one window of 4096")
    _one_line_error(run_cli("extrapolate", text, "-m", base, "--variant", "cubic:2"), 2, "unknown --variant 'cubic:2'")
    _one_line_error(run_cli("extrapolate", text, "-m", base, "--variant", "longrope"), 2, "rope_type is default")
    _one_line_error(run_cli("extrapolate", text, "-m", base, "--variant", "nope-layer:2"), 2, "has layers 0..1")
    _one_line_error(run_cli("extrapolate", text, "-m", base, "--lengths", "3x"), 2, "is not a length")
    _one_line_error(
        run_cli("extrapolate", text, "-m", base, "--variant", "linear:2", "--rope-param", "beta_fast=8"),
        2,
        "beta_fast is read by none of the variants",
    )


def test_table_csv_and_picture(lm, tmp_path):
    from posemb_cli.extrapolate import Variant, extrapolate, prepare
    from posemb_cli.models import load
    from posemb_cli.render.extrapolate_output import csv_text
    from posemb_cli.render.figures.extrapolate import plot_extrapolation

    table = run_cli("extrapolate", str(lm["text"]), "-m", str(lm["base"]), "--lengths", "32,64")
    assert table.exit_code == 0, table.output
    assert "perplexity by window length" in table.stdout and table.stdout.count(" *") == 2  # one best per column
    for name in ("as-trained", "linear:2", "dynamic:2", "yarn:2"):  # the default variants: factor 64 / 32
        assert re.search(rf"^│ {re.escape(name)} ", table.stdout, flags=re.M), table.stdout
    loaded = load(str(lm["base"]), causal_lm=True)
    plan = prepare(loaded, lm["text"].read_text(), "text", [Variant("as-trained"), Variant("linear", 2.0)], [32, 64])
    result = extrapolate(loaded, plan)
    rows = csv_text(result).splitlines()
    assert rows[0] == "variant,kind,length,bin_start,bin_end,mean_loss,perplexity,tokens"
    assert float(rows[1].split(",")[5]) == result.variants[0].loss[32]
    picture = plot_extrapolation(result, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 10_000
    assert list(picture.arrays["loss/linear:2"]) == pytest.approx([m for m in result.variants[1].bin_mean])
    assert list(picture.arrays["perplexity/as-trained"]) == [result.variants[0].perplexity[n] for n in (32, 64)]


def _doc_examples() -> list[tuple[str, list[str]]]:
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples and line.strip():
                examples[-1][1].append(line.rstrip())
    return examples


def test_doc_examples(tmp_path, monkeypatch):
    """docs/extrapolate.md's console examples, run on the example model untrained (`--steps 0`: seconds), as the doc
    says; the trained model's picture and table there are the real output of `make examples`."""
    import shlex
    import sys

    from test_readme import _same

    examples = _doc_examples()
    assert examples and examples[0][0].startswith("python examples/train_tiny_lm.py --steps 0")
    sys.path.insert(0, str(DOC.parents[1] / "examples"))
    try:
        import train_tiny_lm
    finally:
        sys.path.pop(0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    train_tiny_lm.build(Path(shlex.split(examples[0][0])[-1]), steps=0)
    for command, expected in examples[1:]:
        result = run_cli(*shlex.split(command)[1:])
        assert result.exit_code == 0, result.output
        actual = [line.rstrip() for line in result.output.splitlines() if line.strip()]
        assert len(actual) == len(expected) and all(map(_same, expected, actual)), (command, result.output)


def test_attention_refused_where_the_model_computes_its_own(lm, tiny_models):
    """BLOOM's attention bypasses transformers' attention interface, so posemb's backend never sees it: a usage
    error, one line."""
    folder = tiny_models["BLOOM"]
    args = ["extrapolate", str(lm["text"]), "-m", str(folder), "--lengths", "8"]
    _one_line_error(run_cli(*args, "--attention"), 2, "--attention reads the attention on posemb's backend")
    assert run_cli(*args).exit_code == 0


def test_alibi_model_without_sdpa_equals_its_own_loss(tmp_path):
    """BLOOM has no SDPA path in transformers 5: extrapolate loads its eager one (it asked for SDPA and failed to
    load before) and the loss is the model's own; position-id variants are refused (ALiBi takes none)."""
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    tokenizer = _tokenizer("plain")
    torch.manual_seed(0)
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4, initializer_range=0.5)
    BloomForCausalLM(config).save_pretrained(tmp_path / "bloom")
    tokenizer.save_pretrained(tmp_path / "bloom")
    text = tmp_path / "text.txt"
    text.write_text(_text(), encoding="utf-8")
    report = _run(str(text), "-m", str(tmp_path / "bloom"), "--lengths", "24")
    model, ids = _model(tmp_path / "bloom"), _ids(tmp_path / "bloom", text)
    with torch.inference_mode():
        windows = [ids[start : start + 24][None] for start in range(0, len(ids) - 23, 24)]
        losses = [float(model(input_ids=w, labels=w).loss) for w in windows]
    assert _variant(report, "as-trained")["loss"]["24"] == pytest.approx(sum(losses) / len(losses), abs=ATOL)
    refused = run_cli("extrapolate", str(text), "-m", str(tmp_path / "bloom"), "--lengths", "24", "--variant=shift:4")
    assert refused.exit_code == 2 and "takes no position ids to shift" in refused.stderr
