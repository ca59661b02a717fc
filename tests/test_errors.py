"""The failure matrix: every bad input gives a one-line error and a documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli


def _one_line_error(result, code=1):
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _copy(tiny_models, family, tmp_path):
    target = tmp_path / family
    shutil.copytree(tiny_models[family], target)
    return target


def test_missing_folder():
    assert "does not exist" in _one_line_error(run_cli("inspect", "x", "-m", "./no/such/model"))


def test_folder_without_config(tmp_path):
    assert "has no config.json" in _one_line_error(run_cli("inspect", "x", "-m", str(tmp_path)))


def test_truncated_weights(tiny_models, tmp_path):
    folder = _copy(tiny_models, "BERT", tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert "cannot load the weights" in _one_line_error(run_cli("inspect", "x", "-m", str(folder)))


def test_model_type_unknown_to_registry_and_transformers(tiny_models, tmp_path):
    folder = _copy(tiny_models, "BERT", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "no-such-type"
    (folder / "config.json").write_text(json.dumps(config))
    line = _one_line_error(run_cli("inspect", "x", "-m", str(folder)))
    assert "model type 'no-such-type'" in line and "neither in posemb's registry nor known to transformers" in line
    assert "BERT" in line


def test_remote_code_is_refused(tiny_models, tmp_path):
    folder = _copy(tiny_models, "BERT", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my-custom-model", auto_map={"AutoModel": "modeling_custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    line = _one_line_error(run_cli("inspect", "x", "-m", str(folder)))
    assert "--trust-remote-code" in line and "never runs remote code" in line


def test_hub_id_not_cached_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_line_error(run_cli("inspect", "x", "-m", "someone/not-cached-model"))
    assert "'someone/not-cached-model'" in line and "HF_HUB_OFFLINE" in line and "cache" in line


def test_pickle_weights_cannot_run_code(tiny_models, tmp_path):
    import torch

    folder = _copy(tiny_models, "BERT", tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"bert.embeddings.word_embeddings.weight": Exploit()}, folder / "pytorch_model.bin")
    line = _one_line_error(run_cli("inspect", "x", "-m", str(folder)))
    assert "cannot load the weights" in line
    assert not marker.exists()


def test_safe_pickle_weights_load(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = _copy(tiny_models, "BERT", tmp_path)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    assert run_cli("inspect", "x", "-m", str(folder), "--json").exit_code == 0


def test_device_cuda_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "no CUDA device" in _one_line_error(run_cli("inspect", "x", "--device", "cuda"))


def test_invalid_utf8_names_the_line():
    """stdin as raw bytes, in-process (a real process reading stdin: test_cli.test_stdin_jsonl_in_a_real_process)."""
    result = run_cli("inspect", "-", "--format", "jsonl", input=b"fine\n\xff\xfe broken\n")
    assert result.exit_code == 1
    assert "Error: stdin line 2 is not valid UTF-8" in result.stderr and "Traceback" not in result.output
    result = run_cli("inspect", "-", "--format", "jsonl", "--encoding-errors", "replace", input=b"fine\n\xff x\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "text",
    ["", "   ", "[CLS] [SEP]", "\x00\x01\x7f", "🙂👍🏽", "שלום עולם", "e\u0301\u0301", "中文 English العربية 日本語"],
)
def test_odd_texts_keep_offsets_consistent(text):
    result = run_cli("inspect", text, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    for token in data["tokens"]:
        if token["start"] is not None:
            assert 0 <= token["start"] <= token["end"] <= len(text)


def test_long_text_is_truncated_with_a_count():
    text = "word " * 20_000  # 100,000 characters
    result = run_cli("inspect", text, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data["tokens"]) == 512
    assert "20002 tokens" in data["warnings"][0] and "19490 tokens were cut" in data["warnings"][0]
    assert "19490 tokens were cut" in result.stderr
    line = _one_line_error(run_cli("inspect", text, "--no-truncate"))
    assert "20002 tokens" in line and "at most 512" in line


def test_output_file_in_missing_folder_or_wrong_suffix(tmp_path):
    assert "does not exist" in _one_line_error(run_cli("inspect", "x", "--save", str(tmp_path / "no" / "a.npz")))
    result = run_cli("inspect", "x", "--save", str(tmp_path / "a.txt"))
    assert result.exit_code == 2 and ".npz" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_atomically(tmp_path):
    target = tmp_path / "a.npz"
    target.write_bytes(b"old")
    assert run_cli("inspect", "x", "--save", str(target)).exit_code == 0
    assert target.read_bytes()[:2] == b"PK" and list(tmp_path.iterdir()) == [target]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert "not writable" in _one_line_error(run_cli("inspect", "x", "--save", str(tmp_path / "a.npz")))
    finally:
        tmp_path.chmod(0o700)


def _ctrl_c_during_stdin_stream():
    """A real process reads stdin, answers two lines, then gets SIGINT; what it printed and left behind."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "out.npz"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "posemb_cli",
                "inspect",
                "-",
                "--format",
                "jsonl",
                "--batch-size",
                "1",
                "--save",
                str(target),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdin.write(b"first line\nsecond line\n")
        proc.stdin.flush()
        first = proc.stdout.readline()  # the model has loaded and answered; stdin stays open
        proc.stdout.readline()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        return first, proc.returncode, err, list(Path(folder).iterdir())


@pytest.mark.early(job=_ctrl_c_during_stdin_stream)
def test_ctrl_c_during_stdin_stream(early):
    first, returncode, err, left = early
    assert json.loads(first)["text"] == "first line"
    assert returncode == 130
    assert b"Interrupted after 2 text(s)" in err and b"Traceback" not in err
    assert left == []


def test_debug_shows_the_traceback():
    """In-process: without --debug the error is one line; with it the PosembError leaves posemb's handler, and the
    interpreter prints its traceback (exit status 1)."""
    import traceback

    from posemb_cli.errors import PosembError

    assert "does not exist" in _one_line_error(run_cli("inspect", "x", "-m", "./no/such/model"))
    loud = run_cli("--debug", "inspect", "x", "-m", "./no/such/model")
    assert loud.exit_code == 1 and isinstance(loud.exception, PosembError)
    printed = "".join(traceback.format_exception(*loud.exc_info))
    assert "Traceback" in printed and "PosembError" in printed
