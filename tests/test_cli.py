"""The CLI as a user runs it: output contract, formats, options, and numbers against transformers directly."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli, run_posemb, transformers_run

TEXT, PAIR = "position matters", "so does order"


@pytest.fixture(scope="module")
def direct_bundled(bundled_path):
    return transformers_run(bundled_path, TEXT, PAIR)


def _command_names() -> list[str]:
    from posemb_cli.cli import app

    return [command.name or command.callback.__name__ for command in app.registered_commands]


@pytest.mark.parametrize("command", [[], *([name] for name in _command_names())], ids=["posemb", *_command_names()])
def test_help_on_every_command(command):
    for flag in ("--help", "-h"):
        result = run_cli(*command, flag)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output
        assert f"posemb {' '.join(command)}".strip() + " [OPTIONS]" in " ".join(result.output.split())


def test_version():
    from posemb_cli import __version__

    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"posemb {__version__}"


def test_help_and_version_import_nothing_heavy():
    code = (
        "import runpy, sys\n"
        "for argv in (['posemb', '--help'], ['posemb', '--version'], ['posemb', 'inspect', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        runpy.run_module('posemb_cli', run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out


def test_json_contract_and_numbers(direct_bundled):
    tokenizer, model, encoding, out = direct_bundled
    result = run_cli("inspect", TEXT, "--pair", PAIR, "--json", "--vectors", "--attention")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["text", "pair", "model", "tokens", "norms", "vectors", "attention", "warnings"]
    assert data["text"] == TEXT and data["pair"] == PAIR and data["warnings"] == []
    assert data["model"] == {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "type": "bert",
        "position_scheme": "learned_absolute",
        "layers": 6,
        "heads": 12,
        "hidden_size": 384,
        "max_positions": 512,
    }
    ids = encoding["input_ids"][0]
    assert [t["id"] for t in data["tokens"]] == ids.tolist()
    assert [t["token"] for t in data["tokens"]] == tokenizer.convert_ids_to_tokens(ids.tolist())
    assert [t["segment"] for t in data["tokens"]] == encoding["token_type_ids"][0].tolist()
    assert [t["position_id"] for t in data["tokens"]] == list(range(len(ids)))
    assert list(data["tokens"][0]) == [
        "index",
        "id",
        "token",
        "position_id",
        "segment",
        "start",
        "end",
        "special",
        "unknown",
    ]
    emb = model.embeddings
    expected = {
        "token": emb.word_embeddings.weight[ids],
        "position": emb.position_embeddings.weight[: len(ids)],
        "segment": emb.token_type_embeddings.weight[encoding["token_type_ids"][0]],
        "embedding_output": out.hidden_states[0][0],
    }
    expected["sum"] = expected["token"] + expected["position"] + expected["segment"]
    for name, value in expected.items():
        value = value.detach().numpy()
        np.testing.assert_allclose(np.array(data["vectors"][name]), value, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.array(data["norms"][name]), np.linalg.norm(value, axis=-1), atol=1e-5)
    np.testing.assert_allclose(np.array(data["attention"]), np.stack([a[0].numpy() for a in out.attentions]), atol=1e-5)


def test_attention_limited_to_layer_and_head(direct_bundled):
    *_, out = direct_bundled
    result = run_cli("inspect", TEXT, "--pair", PAIR, "--json", "--attention", "--layer", "2", "--head", "7")
    assert result.exit_code == 0, result.stderr
    attention = np.array(json.loads(result.stdout)["attention"])
    assert attention.shape[:2] == (1, 1)
    np.testing.assert_allclose(attention[0, 0], out.attentions[2][0, 7].numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "6"], "--layer 6 is out of range: sentence-transformers/all-MiniLM-L6-v2 has layers 0..5"),
        (["--head", "12"], "--head 12 is out of range: sentence-transformers/all-MiniLM-L6-v2 has heads 0..11"),
        (["--layer", "-1"], "--layer -1 is out of range: sentence-transformers/all-MiniLM-L6-v2 has layers 0..5"),
        (["--head", "abc"], "Error: Invalid value for '--head'"),
    ],
)
def test_bad_layer_or_head_is_a_usage_error(args, message):
    result = run_cli("inspect", TEXT, "--attention", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_table_output_and_unknown_warning():
    result = run_cli("inspect", "我爱自然语言处理")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any("[UNK] (爱)" in line for line in lines)
    assert any(line.strip().startswith("│ 0 │ [CLS]") for line in lines)
    assert "attention per layer" in result.stdout
    assert "Warning: 7 of 10 tokens are [UNK]" in result.stderr and "'爱自然语言处理'" in result.stderr
    assert "Warning" not in result.stdout


def test_csv_has_a_row_per_token():
    result = run_cli("inspect", TEXT, "another text", "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["text_index"] for r in rows].count("0") == 4 and [r["text_index"] for r in rows].count("1") == 4
    assert rows[0]["token"] == "[CLS]" and rows[0]["special"] == "true" and rows[1]["special"] == "false"


def test_many_texts_json_is_an_array():
    result = run_cli("inspect", "one", "two", "--json")
    assert [d["text"] for d in json.loads(result.stdout)] == ["one", "two"]


def _stdin_jsonl():
    return run_posemb("inspect", "-", "--format", "jsonl", input=b"one line\nanother line\n")


@pytest.mark.early(job=_stdin_jsonl)
def test_stdin_jsonl_in_a_real_process(early):
    proc = early
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["one line", "another line"]


def test_save_npz_matches_json(tmp_path):
    target = tmp_path / "arrays.npz"
    result = run_cli("inspect", TEXT, "--json", "--vectors", "--attention", "--save", str(target))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    arrays = np.load(target)
    np.testing.assert_array_equal(arrays["text0/token_ids"], [t["id"] for t in data["tokens"]])
    np.testing.assert_allclose(arrays["text0/position"], np.array(data["vectors"]["position"]))
    np.testing.assert_allclose(arrays["text0/attention"], np.array(data["attention"]))
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]  # no temp files left


def test_models_lists_bundled_and_cache(tmp_path, tiny_models, monkeypatch):
    # a hub cache laid out as huggingface_hub writes it: blobs + snapshot symlinks
    repo = tmp_path / "hub" / "models--tiny--gpt2"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for i, file in enumerate(sorted(tiny_models["GPT-2"].iterdir())):
        if file.is_file():
            blob = repo / "blobs" / f"{i:040d}"
            blob.write_bytes(file.read_bytes())
            (snapshot / file.name).symlink_to(blob)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants
    import huggingface_hub.utils._cache_manager as cache_manager

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # scan_cache_dir reads its own copy, bound when its module was first imported: patched (and restored) too, so
    # that later in-process `posemb models` runs see the real cache again
    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = run_cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["sentence-transformers/all-MiniLM-L6-v2"]["position_scheme"] == "learned_absolute"
    assert rows["tiny/gpt2"]["family"] == "GPT-2" and rows["tiny/gpt2"]["source"] == "hub cache"
    table = run_cli("models")
    assert "tiny/gpt2" in table.stdout and "learned_absolute" in table.stdout


def _pipes_closed_early():
    lines = "".join(f"line number {i}\n" for i in range(200)).encode()
    commands = [
        f"{sys.executable} -m posemb_cli inspect - {args}"
        for args in ("--format jsonl | head -1", "--json | head -c 10")
    ]
    return [subprocess.run(cmd, shell=True, input=lines, capture_output=True, timeout=300) for cmd in commands]


@pytest.mark.early(job=_pipes_closed_early)
def test_pipe_closed_early_gives_no_traceback(early):
    proc, proc_bytes = early
    assert json.loads(proc.stdout.decode().splitlines()[0])["text"] == "line number 0"
    assert b"Traceback" not in proc.stderr and b"Error" not in proc.stderr
    assert len(proc_bytes.stdout) == 10 and b"Traceback" not in proc_bytes.stderr


def test_plot_from_the_command_line(tmp_path):
    from PIL import Image

    result = run_cli(
        "inspect",
        "我爱自然语言处理",
        "--plot",
        "attention",
        "--layer",
        "3",
        "--head",
        "7",
        "-o",
        str(tmp_path / "head.png"),
        "--dpi",
        "100",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and f"Wrote {tmp_path / 'head.png'}" in result.stderr
    assert Image.open(tmp_path / "head.png").size[0] > 300
    result = run_cli("inspect", "position matters", "--plot", "all", "-o", str(tmp_path / "figs"))
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["attention.png", "embeddings.png", "positions.png"]
    assert oct((tmp_path / "figs" / "attention.png").stat().st_mode & 0o777) != oct(0o600)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-o", "a.jpg"], 2, "use .png, .svg, .pdf or .html"),
        ([], 2, "--plot attention needs -o FILE"),
        (["-o", "missing/a.png"], 1, "folder missing does not exist"),
    ],
)
def test_plot_errors_before_loading(args, code, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("inspect", "x", "--plot", "attention", *args)
    assert result.exit_code == code and message in result.stderr
    assert list(tmp_path.iterdir()) == []
