"""Hostile RoPE options and configs, ablate mode integers, library warnings and names from files on a terminal
(issue 25, "RoPE options, scheme parameters, names on a terminal"): each class is a one-line usage error (2) or error
(1), never a traceback or numbers computed from NaN."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
from conftest import run_cli, run_posemb

ROTARY = ("positions", "--scheme", "rotary", "--dim", "8", "--length", "8")


def _one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    "option",
    [["--rope-type", "linear"], ["--factor", "2"], ["--original-max", "64"], ["--rope-param", "beta_fast=8"],
     ["--dim", "16"], ["--heads", "4"]],
)  # fmt: skip
def test_analytic_options_with_a_model_are_usage_errors(option, tiny_models):
    result = run_cli("positions", "-m", str(tiny_models["LLaMA"]), *option)
    _one_line_error(result, 2, option[0], "analytic scheme", "--at-length")


@pytest.mark.parametrize(
    "options,words",
    [
        (["--rope-type", "yarn", "--rope-param", "beta_fast=0"], ["beta_fast", "more than 0"]),
        (["--rope-type", "yarn", "--rope-param", "beta_fast=1,beta_slow=4"], ["beta_fast (1)", "beta_slow (4)"]),
        (["--rope-type", "linear", "--rope-param", "factor=nan"], ["factor", "finite"]),
        (["--rope-type", "linear", "--rope-param", "factor=inf"], ["factor", "finite"]),
        (["--rope-type", "linear", "--rope-param", "factor=-2"], ["factor", "at least 1"]),
        (["--rope-type", "linear", "--rope-param", "factor=0"], ["factor", "at least 1"]),
        (["--rope-type", "linear", "--rope-param", "factor=1e9"], ["factor", "at most 10000"]),
        (["--rope-type", "linear", "--rope-param", "rope_theta=0"], ["rope_theta", "at least 1"]),
        (["--rope-type", "linear", "--rope-param", "wobble=3"], ["wobble", "takes: factor"]),
        (["--rope-type", "llama3", "--rope-param", "low_freq_factor=2,high_freq_factor=2"], ["divides"]),
        (["--rope-type", "longrope", "--rope-param", "short_factor=1,1,1,1,long_factor=2,2"], ["long_factor"]),
        (["--rope-type", "longrope", "--rope-param", "short_factor=1,1,long_factor=2,2"], ["4 rotary pairs"]),
        (["--rope-type", "longrope", "--rope-param", "short_factor=1,1,1,1"], ["long_factor", "missing"]),
        (["--rope-type", "yarn", "--rope-param", "beta_fast=abc"], ["not a number"]),
        (["--rope-type", "yarn", "--rope-param", "=3"], ["KEY=NUMBER"]),
    ],
)
def test_rope_param_values_are_range_checked_like_named_options(options, words):
    result = run_cli(*ROTARY, "--factor", "4", "--original-max", "64", *options)
    _one_line_error(result, 2, *words)


def test_named_factor_nan_and_huge_are_usage_errors():
    for value in ("nan", "inf", "0", "-1", "1e9"):
        result = run_cli(*ROTARY, "--rope-type", "linear", "--factor", value, "--original-max", "64")
        assert result.exit_code == 2 and "--factor" in result.stderr, (value, result.output)


@pytest.mark.parametrize(
    "field,value,words",
    [("factor", float("nan"), ["finite"]), ("factor", 0, ["at least 1"]), ("factor", -4, ["at least 1"]),
     ("factor", 1e30, ["at most"]), ("rope_theta", 0, ["at least 1"]), ("rope_type", "warp", ["'warp'"])],
)  # fmt: skip
def test_a_config_with_such_a_value_is_one_line_naming_the_field(field, value, words, tiny_models, tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(tiny_models["LLaMA"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0, field: value}
    (folder / "config.json").write_text(json.dumps(config))
    for command in (["positions"], ["inspect", "hello"]):
        result = run_cli(*command, "-m", str(folder))
        _one_line_error(result, 1, f"config.json: rope_parameters.{field}", *words)


@pytest.mark.parametrize("mode", ["shift:1_0", "shift:\u0663", "shift:99999999999", "shift:+", "ids:0,1_1", "ids:"])
def test_ablate_mode_integers_are_bounded_ascii(mode, tiny_models):
    result = run_cli("ablate", "the cat sat", "-m", str(tiny_models["BERT"]), "--mode", mode)
    _one_line_error(result, 2, "--mode", "integer")


def test_library_warnings_stay_off_stderr(monkeypatch):
    from posemb_cli.schemes import rotary

    real = rotary.rotary_phi

    def noisy(*args, **kwargs):
        warnings.warn("a library's own advice", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rotary, "rotary_phi", noisy)
    assert run_cli(*ROTARY).stderr == ""
    assert "a library's own advice" in run_cli("--debug", *ROTARY).stderr


def _phi3_job():
    from conftest import tiny_model_folder

    return run_posemb("positions", "-m", str(tiny_model_folder("Phi-3")), "--at-length", "33", "--json")


@pytest.mark.early(job=_phi3_job, tiny_models=True)
def test_a_valid_rope_command_writes_nothing_on_stderr(early):
    """A real process (transformers' loggers and warnings as a user meets them): a LongRoPE model past its switch."""
    assert early.returncode == 0 and early.stderr == b"", early.stderr.decode()
    assert json.loads(early.stdout)["rope"]["lengths"][-1]["factors"] == "long"


def test_names_from_files_are_inert(tiny_models, tmp_path):
    """A folder name with a terminal escape, rich markup, a bidi override and an :emoji: code: shown as text."""
    folder = tmp_path / "evil\x1b]0;pwned\x07[red]x[/red]\u202e:smile:"
    shutil.copytree(tiny_models["BERT"], folder)
    result = run_cli("inspect", "the cat sat ᚠ", "-m", str(folder))
    assert result.exit_code == 0, result.output
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\u202e" not in stream and "\x07" not in stream
    assert "\\x1b]0;pwned\\x07[red]x[/red]\\u202e:smile:" in result.stdout  # the name, as text
    assert "\\x1b" in result.stderr  # the [UNK] warning names the model, inert
    compare = run_cli("compare", "the cat sat ᚠ", "-m", str(folder), "-m", str(tiny_models["RoBERTa"]))
    assert compare.exit_code == 0, compare.output
    assert "\x1b" not in compare.stdout + compare.stderr and ":smile:" in compare.stdout
    roberta = [line for line in compare.stderr.splitlines() if str(tiny_models["RoBERTa"]) in line]
    assert all(line.startswith("Warning: ") for line in roberta)


def test_cache_names_in_the_models_table_are_inert(capsys, monkeypatch):
    """`posemb models` rows (cached repo ids, folder names) through the same renderer: no escape, markup or emoji."""
    from posemb_cli.output import Output
    from posemb_cli.render.listing import render_rows

    monkeypatch.setenv("COLUMNS", "200")
    render_rows(Output(), [{"name": "org/m\x1b[2J[red]x[/red]:smile:", "layers": 2}], "table", title="t\x1b[5m[bold]")
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "😄" not in printed
    assert "org/m\\x1b[2J[red]x[/red]:smile:" in printed and "t\\x1b[5m[bold]" in printed
