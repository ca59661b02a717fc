"""Hostile and unlucky model folders and numbers (issue 15): each gives one line `Error: ...` naming the file and the
field, exit 1, in bounded time; non-finite numbers are flagged with a warning and printed as null, never as NaN."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, run_posemb

LIMIT_S = 20  # every crafted folder is refused in well under this (num_hidden_layers=100000 used to take minutes)


@pytest.fixture
def deadline():
    """Fail, instead of hanging the suite, if a case takes more than LIMIT_S (e.g. a read of a FIFO)."""

    def expired(signum, frame):
        raise TimeoutError(f"took more than {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(LIMIT_S)
    start = time.monotonic()
    yield lambda: time.monotonic() - start
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _one_line_error(result, code=1):
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output and "unexpected" not in lines[0]
    return lines[0]


def _copy(tiny_models, family, tmp_path) -> Path:
    target = tmp_path / family
    shutil.copytree(tiny_models[family], target)
    return target


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as a strict parser (JavaScript's JSON.parse) does."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------------ 1. model folders


def _not_an_object(folder):
    (folder / "config.json").write_text("[1, 2]")


def _no_tokenizer(folder):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()


def _tokenizer_is_dev_zero(folder):
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to("/dev/zero")


def _tokenizer_is_fifo(folder):
    (folder / "tokenizer.json").unlink()
    os.mkfifo(folder / "tokenizer.json")


def _weights_are_fifo(folder):
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")


def _tokenizer_too_big(folder):
    with open(folder / "tokenizer.json", "r+b") as handle:
        handle.truncate(129 * 2**20)  # sparse: takes no disk


FOLDER_CASES = {  # name: (how to break the tiny BERT folder, what the one line must say)
    "config not an object": (_not_an_object, ["config.json is not a JSON object", "array"]),
    "model_type a number": (lambda f: _edit_config(f, model_type=5), ["config.json: model_type is number 5"]),
    "model_type missing": (lambda f: _edit_config(f, model_type=None), ["config.json: has no model_type"]),
    "absurd layers": (
        lambda f: _edit_config(f, num_hidden_layers=100000),
        ["config.json: num_hidden_layers is 100000", "from 1 to 1,024"],
    ),
    "negative heads": (lambda f: _edit_config(f, num_attention_heads=-4), ["config.json: num_attention_heads is -4"]),
    "heads as text": (lambda f: _edit_config(f, num_attention_heads="4"), ["num_attention_heads is '4'"]),
    "hidden size not the weights'": (
        lambda f: _edit_config(f, hidden_size=64),
        ["model.safetensors: embeddings.word_embeddings.weight has shape [30522, 32]", "hidden_size=64", "[30522, 64]"],
    ),
    "vocabulary not the weights'": (
        lambda f: _edit_config(f, vocab_size=100),
        ["embeddings.word_embeddings.weight has shape [30522, 32]", "(vocab_size=100)", "[100, 32]"],
    ),
    "more layers than the weights": (
        lambda f: _edit_config(f, num_hidden_layers=4),
        ["config.json (num_hidden_layers=4) makes a model with encoder.layer.2.", "(model.safetensors) do not have"],
    ),
    "no tokenizer files": (_no_tokenizer, ["has no tokenizer files"]),
    "tokenizer.json -> /dev/zero": (_tokenizer_is_dev_zero, ["tokenizer.json is not a regular file"]),
    "tokenizer.json a FIFO": (_tokenizer_is_fifo, ["tokenizer.json is not a regular file"]),
    "model.safetensors a FIFO": (_weights_are_fifo, ["model.safetensors is not a regular file"]),
    "tokenizer.json too big": (_tokenizer_too_big, ["tokenizer.json is 129 MiB, over posemb's limit of 128 MiB"]),
}


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_hostile_model_folder_is_one_line(case, tiny_models, tmp_path, deadline):
    folder = _copy(tiny_models, "BERT", tmp_path)
    breaks, expected = FOLDER_CASES[case]
    breaks(folder)
    line = _one_line_error(run_cli("inspect", "x", "-m", str(folder)))
    for part in expected:
        assert part in line, line
    assert deadline() < 10


def test_tokenizer_ids_past_the_vocabulary(tiny_models, tmp_path, deadline):
    """A model cut to 100 token rows (config and weights agree) with a tokenizer of ~400 ids."""
    folder = _copy(tiny_models, "GPT-2", tmp_path)
    _edit_config(folder, vocab_size=100)
    _edit_weights(folder, lambda state: state.update({"wte.weight": state["wte.weight"][:100].clone()}))
    top = max(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"].values())
    line = _one_line_error(run_cli("inspect", "x", "-m", str(folder)))
    assert f"tokenizer.json: token ids reach {top} but the model's token embedding has 100 rows" in line


def test_every_family_passes_the_checks(tiny_models):
    """The checks refuse nothing real: each family's folder is checked like a user's (inspect loads them all too)."""
    import transformers

    from posemb_cli import models

    for family, folder in tiny_models.items():
        raw = models.read_config(folder)
        models.check_folder(family, folder)
        config = transformers.AutoConfig.from_pretrained(str(folder))
        rows = models.check_weights(family, folder, config, raw, trust_remote_code=False)
        assert rows == raw["vocab_size"], family


# ------------------------------------------------------------------------------------------ 2. non-finite numbers


@pytest.fixture(scope="module")
def poisoned(tiny_models, tmp_path_factory):
    """BERT with a NaN row 3 in its position table; GPT-2 with an Inf in layer 1's query/key/value weights; BERT with
    a negative layer_norm_eps (the embedding LayerNorm takes the root of a negative number)."""
    root = tmp_path_factory.mktemp("poisoned")
    bert = _copy(tiny_models, "BERT", root / "position-row")

    def nan_row(state):
        state["embeddings.position_embeddings.weight"][3] = float("nan")

    _edit_weights(bert, nan_row)
    gpt2 = _copy(tiny_models, "GPT-2", root / "attention-inf")

    def inf_weight(state):
        state["h.1.attn.c_attn.weight"][0] = float("inf")

    _edit_weights(gpt2, inf_weight)
    eps = _copy(tiny_models, "BERT", root / "eps")
    _edit_config(eps, layer_norm_eps=-1e6)
    return {"position": bert, "attention": gpt2, "eps": eps}


def test_nan_position_row_is_flagged_and_null(poisoned):
    folder = poisoned["position"]
    result = run_cli("inspect", "hello world", "-m", str(folder), "--json", "--vectors", "--attention")
    assert result.exit_code == 0, result.stderr
    data = _strict_json(result.stdout)
    ids = [t["position_id"] for t in data["tokens"]]
    hit = [k for k, i in enumerate(ids) if i == 3]  # the tokens that read the poisoned row
    assert hit and data["norms"]["position"][hit[0]] is None and data["norms"]["sum"][hit[0]] is None
    clean = [k for k in range(len(ids)) if k not in hit]
    assert all(data["norms"]["position"][k] is not None for k in clean)
    (warning,) = [w for w in data["warnings"] if "non-finite" in w]
    assert warning.startswith(
        f"non-finite numbers (NaN or Inf) first appear in the position embedding (tokens {hit[0]})"
    )
    assert "Warning: non-finite numbers" in result.stderr
    table = run_cli("inspect", "hello world", "-m", str(folder))
    assert table.exit_code == 0 and "nan" not in table.stdout.lower() and "–" in table.stdout
    csv = run_cli("inspect", "hello world", "-m", str(folder), "--format", "csv")
    assert "nan" not in csv.stdout.lower()


def test_negative_layer_norm_eps_names_the_embedding_output(poisoned):
    result = run_cli("inspect", "hello world", "-m", str(poisoned["eps"]), "--json")
    data = _strict_json(result.stdout)
    assert data["norms"]["sum"][0] is not None and data["norms"]["embedding_output"][0] is None
    assert data["warnings"][0].startswith("non-finite numbers (NaN or Inf) first appear in the embedding output")
    assert "layer_norm_eps" in data["warnings"][0]


def test_inf_weight_names_the_layer_and_heads(poisoned):
    import torch
    import transformers

    folder = poisoned["attention"]
    model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        attentions = model(**tokenizer("hello world", return_tensors="pt"), output_attentions=True).attentions
    bad = [(layer, h) for layer, a in enumerate(attentions) for h in range(a.shape[1]) if not a[0, h].isfinite().all()]
    assert bad and {layer for layer, _ in bad} == {1}  # transformers itself: layer 1 only
    result = run_cli("inspect", "hello world", "-m", str(folder), "--json", "--attention")
    data = _strict_json(result.stdout)
    heads = sorted(h for _, h in bad)
    assert f"first appear in the attention of layer 1 (heads {heads[0]}–{heads[-1]})" in data["warnings"][0]
    assert data["attention"][1][heads[0]][0][0] is None and data["attention"][0][0][0][0] is not None

    stats = run_cli("stats", "-", "-m", str(folder), "--json", input="hello world\nthe cat sat\n")
    assert stats.exit_code == 0, stats.stderr
    rows = _strict_json(stats.stdout)["heads"]
    assert all(row["self"] is None and row["pattern"] is None for row in rows if row["layer"] == 1)
    assert all(isinstance(row["self"], float) for row in rows if row["layer"] == 0)
    assert "first appear in the attention of layer 1 (heads 0–3)" in stats.stderr


def test_positions_with_a_nan_row_names_it_and_no_lapack_message(poisoned, capfd):
    result = run_cli(
        "positions", "-m", str(poisoned["position"]), "--json", "--probe", "identical-word", "--words", "2"
    )
    assert result.exit_code == 0, result.stderr
    data = _strict_json(result.stdout)
    assert data["regression_mae"] is None and data["pca_explained_variance"] is None
    assert "the position table (position ids 3)" in data["warnings"][0]
    table = run_cli("positions", "-m", str(poisoned["position"]))
    assert table.exit_code == 0 and "nan" not in table.stdout.lower()
    leaked = capfd.readouterr().err  # LAPACK prints straight to file descriptor 2
    assert "DLASCL" not in leaked and "did not converge" not in leaked


def test_lapack_metrics_take_non_finite_input():
    from posemb_cli import metrics

    vectors = np.random.default_rng(0).normal(size=(10, 4))
    vectors[2, 1] = np.nan
    assert math.isnan(metrics.position_regression_mae(vectors))
    coords, ratio = metrics.pca_2d(vectors)
    assert np.isnan(coords).all() and np.isnan(ratio).all()
    assert math.isnan(metrics.linear_cka(vectors, np.random.default_rng(1).normal(size=(10, 20))))
    assert np.isnan(metrics.row_cosines(vectors, vectors)[2]) and not np.isnan(metrics.row_cosines(vectors, vectors)[0])


# ------------------------------------------------------------------------------------------ 5. tokenizer panics


def _panicking_tokenizer(folder: Path) -> None:
    """A lookahead with nested repetition makes Oniguruma hit its retry limit on a run of "a"; tokenizers (0.23)
    unwraps that error, a Rust panic, raised in Python as pyo3_runtime.PanicException (a BaseException)."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {
        "type": "Split",
        "pattern": {"Regex": "(?=(a+)+c)"},
        "behavior": "Isolated",
        "invert": False,
    }
    (folder / "tokenizer.json").write_text(json.dumps(spec))


def test_tokenizer_panic_is_one_line(tiny_models, tmp_path, deadline):
    folder = _copy(tiny_models, "GPT-2", tmp_path)  # its tokenizer.json is loaded as it is (TokenizersBackend)
    _panicking_tokenizer(folder)
    line = _one_line_error(run_cli("inspect", "a" * 200, "-m", str(folder)))
    assert line.startswith("Error: the tokenizer library failed (Rust panic:") and "retry-limit" in line


def _panicking_processes() -> list[tuple[int, str]]:
    """Real processes (Rust writes its panic message to file descriptor 2 itself, which run_cli does not capture):
    inspect and stats, each tokenizing a run of "a" with the panicking tokenizer."""
    import tempfile

    from conftest import tiny_model_folder

    work = Path(tempfile.mkdtemp(prefix="posemb-panic-"))
    folder = work / "gpt2"
    shutil.copytree(tiny_model_folder("GPT-2"), folder)
    _panicking_tokenizer(folder)
    results = []
    for args, stdin in ((["inspect", "a" * 200], None), (["stats", "-"], b"a b\n" + b"a" * 200 + b"\n")):
        proc = run_posemb(*args, "-m", str(folder), input=stdin)
        results.append((proc.returncode, proc.stderr.decode()))
    shutil.rmtree(work, ignore_errors=True)
    return results


@pytest.mark.early(job=_panicking_processes, tiny_models=True)
def test_tokenizer_panic_in_a_real_process_prints_only_posembs_line(early):
    for code, stderr in early:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1, stderr
        assert lines[0].startswith("Error: the tokenizer library failed (Rust panic:") and "panicked" not in stderr


# ------------------------------------------------------------------------------------------ 8. posemb models


def test_models_survives_broken_cache_entries(tiny_models, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import _cache_manager

    cache = tmp_path / "hub"

    def repo(name: str) -> Path:
        snapshot = cache / f"models--{name.replace('/', '--')}" / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
        return snapshot

    good = repo("someone/tiny-bert")
    shutil.copy(tiny_models["BERT"] / "config.json", good / "config.json")
    (repo("someone/bad-json") / "config.json").write_text("{not json")
    (repo("someone/deep-json") / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    os.mkfifo(repo("someone/fifo-config") / "config.json")
    (cache / "models--someone--not-a-repo").mkdir()  # no snapshots folder: huggingface_hub calls it corrupted
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(cache))
    result = run_cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    names = [row["name"] for row in json.loads(result.stdout)]
    assert "someone/tiny-bert" in names and not any("bad" in n or "fifo" in n or "deep" in n for n in names)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert any("someone/bad-json" in w and "cannot read" in w for w in warnings), warnings
    assert any("someone/deep-json" in w and "its JSON is nested too deeply" in w for w in warnings), warnings
    assert any("someone/fifo-config" in w and "not a regular file" in w for w in warnings), warnings
    assert any("not-a-repo" in w for w in warnings), warnings


# ------------------------------------------------------------------------------------------ rough edges


def _fake_hub(monkeypatch, listing: list[str], folder: Path) -> list[list[str]]:
    """huggingface_hub's listing and download, faked: the hub is unreachable here. Returns the patterns asked for."""
    import huggingface_hub

    asked: list[list[str]] = []

    def snapshot_download(repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        asked.append(list(allow_patterns))
        return str(folder)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, **kwargs: listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return asked


def test_hub_repository_with_only_a_pickle(tiny_models, tmp_path, monkeypatch):
    import fnmatch

    import torch
    from safetensors.torch import load_file

    folder = _copy(tiny_models, "BERT", tmp_path)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    asked = _fake_hub(monkeypatch, ["config.json", "pytorch_model.bin", "tokenizer.json", "README.md"], folder)
    result = run_cli("inspect", "hello", "-m", "someone/old-bert", "--json")
    assert result.exit_code == 0, result.stderr
    assert any(fnmatch.fnmatch("pytorch_model.bin", pattern) for pattern in asked[0])

    asked = _fake_hub(monkeypatch, ["config.json", "model.safetensors", "pytorch_model.bin"], tiny_models["BERT"])
    assert run_cli("inspect", "hello", "-m", "someone/new-bert", "--json").exit_code == 0
    assert not any(fnmatch.fnmatch("pytorch_model.bin", pattern) for pattern in asked[0])


def test_hub_pickle_that_runs_code_is_refused(tiny_models, tmp_path, monkeypatch):
    import torch

    folder = _copy(tiny_models, "BERT", tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"embeddings.word_embeddings.weight": Exploit()}, folder / "pytorch_model.bin")
    _fake_hub(monkeypatch, ["config.json", "pytorch_model.bin", "tokenizer.json"], folder)
    line = _one_line_error(run_cli("inspect", "hello", "-m", "someone/evil-bert"))
    assert "cannot load the weights" in line and "pytorch_model.bin" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    "family, expected",
    [
        ("GPT-2", "has no segment embedding and its tokenizer adds no separator: nothing marks where the pair begins"),
        ("LLaMA", "has no segment embedding: only the tokenizer's separator token marks where the pair begins"),
        ("BERT", None),
    ],
)
def test_pair_without_segment_embedding_warns(tiny_models, family, expected):
    result = run_cli("inspect", "hello", "--pair", "world", "-m", str(tiny_models[family]), "--json")
    warnings = [w for w in json.loads(result.stdout)["warnings"] if "segment embedding" in w]
    assert warnings == ([] if expected is None else [f"{tiny_models[family]} {expected}"])


def test_out_of_memory_is_one_line_that_says_what_would_fit(tiny_models, monkeypatch):
    """torch's CPU allocator raises RuntimeError("... can't allocate memory: you tried to allocate N bytes ..."),
    Python's a MemoryError: either is one line with the size asked and the options that make it smaller."""
    from posemb_cli import core, stats

    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 123480309760 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(core, "_forward", no_memory)
    line = _one_line_error(run_cli("inspect", "hello world", "-m", str(tiny_models["BERT"])))
    assert line.startswith("Error: out of memory (posemb asked for 115.0 GiB at once; ")
    assert "GiB of memory are free" in line
    assert "what would fit is a shorter text" in line

    def memory_error(self, batch):
        raise MemoryError

    monkeypatch.setattr(stats._Reducer, "run", memory_error)
    line = _one_line_error(run_cli("stats", "-", "-m", str(tiny_models["BERT"]), input="hello world\n"))
    assert line.startswith("Error: out of memory (") and "a smaller --batch-size or --max-length" in line


def test_one_segment_row_with_a_pair_is_one_line(tiny_models, tmp_path):
    """BERT with type_vocab_size=1 (config and weights agree): its tokenizer gives sentence B token type 1, a row
    the segment embedding does not have (transformers: IndexError)."""
    folder = _copy(tiny_models, "BERT", tmp_path)
    _edit_config(folder, type_vocab_size=1)
    key = "embeddings.token_type_embeddings.weight"
    _edit_weights(folder, lambda state: state.update({key: state[key][:1].clone()}))
    assert run_cli("inspect", "hello", "-m", str(folder)).exit_code == 0  # one sentence: fine
    expected = f"Error: {folder} has 1 segment embedding row (type_vocab_size=1) but its tokenizer gives sentence B"
    line = _one_line_error(run_cli("inspect", "hello", "--pair", "world", "-m", str(folder)))
    assert line.startswith(expected) and line.endswith("drop --pair")
    line = _one_line_error(run_cli("stats", "-", "--pairs", "-m", str(folder), input="hello\tworld\n"))
    assert line.startswith(expected) and line.endswith("drop --pairs")
