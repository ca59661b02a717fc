"""The options every command shares mean the same everywhere: `--format` lists in --help exactly the formats the
command prints and refuses every other in one line (exit 2); `--plot KIND` is the kind and `-o FILE` the file in every
command, and compare's and stats' 0.4 spelling `--plot FILE` still writes the same file, with a deprecation warning."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli

ALL_FORMATS = ("table", "json", "jsonl", "csv", "xml")


def _listed_formats(*command: str) -> list[str]:
    """The formats the --help of `command` offers: the metavar after `-f, --format`."""
    result = run_cli(*command, "--help")
    assert result.exit_code == 0, result.output
    found = re.search(r"-f, --format (\S+)", result.stdout)
    assert found, result.stdout
    return found[1].split("|")


def _invocations(tmp_path):
    """Per command, arguments that get past option parsing and then fail fast (exit 1) or finish quickly."""
    text = tmp_path / "text.txt"
    text.write_text("a few words\n")
    missing = str(tmp_path / "no-such-model")
    return {
        ("inspect",): ["x", "-m", missing],
        ("positions",): ["--scheme", "rotary", "--length", "4", "--dim", "4"],
        ("models",): [],
        ("compare",): ["x", "-m", missing, "-m", missing + "2"],
        ("stats",): [str(text), "-m", missing],
        ("stats", "merge"): [str(tmp_path / "no-such-part.npz")],
        ("ablate",): ["x", "-m", missing],
        ("extrapolate",): [str(text), "-m", missing],
        ("serve",): ["--status", "--stop"],  # a usage error of its own, after --format was parsed
    }


EXPECTED = {
    ("inspect",): ["table", "json", "jsonl", "csv"],
    ("positions",): ["table", "json"],
    ("models",): ["table", "json", "jsonl", "csv"],
    ("compare",): ["table", "json"],
    ("stats",): ["table", "json", "csv"],
    ("stats", "merge"): ["table", "json", "csv"],
    ("ablate",): ["table", "json"],
    ("extrapolate",): ["table", "json", "csv"],
    ("serve",): ["table", "json"],
}


@pytest.mark.parametrize("command", list(EXPECTED), ids=[" ".join(c) for c in EXPECTED])
def test_format_help_lists_exactly_the_formats_the_command_accepts(command, tmp_path):
    listed = _listed_formats(*command)
    assert listed == EXPECTED[command]  # what each command's docs page says it prints
    args = _invocations(tmp_path)[command]
    for fmt in listed:
        result = run_cli(*command, *args, "--format", fmt)
        assert "--format" not in result.stderr and "not " + fmt not in result.stderr, result.stderr
        if command == ("serve",):  # --status with --stop: refused after the options were parsed
            assert result.exit_code == 2 and "at most one of" in result.stderr
        else:
            assert result.exit_code != 2, result.output
    for fmt in (f for f in ALL_FORMATS if f not in listed):
        result = run_cli(*command, *args, "--format", fmt)
        lines = result.stderr.splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0] == f"Error: {' '.join(command)} prints {' or '.join(listed)}, not {fmt}: use " + (
            ", ".join(f"--format {f}" for f in listed if f != "json") + " or --json"
        ), lines[0]
        assert result.stdout == ""


def _deprecated(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "deprecated" in line]


def test_compare_plot_file_is_o_file_with_a_warning(tmp_path):
    """`compare --plot FILE` (0.4) writes what `compare -o FILE` writes, and says once that the spelling is
    deprecated; `--plot comparison -o FILE` is the same picture again."""
    schemes = ["x y z", "-m", "scheme:rotary", "-m", "scheme:t5"]
    old, new, kind = tmp_path / "old.png", tmp_path / "new.png", tmp_path / "kind.png"
    legacy = run_cli("compare", *schemes, "--plot", str(old))
    assert legacy.exit_code == 0, legacy.output
    assert _deprecated(legacy.stderr) == [
        f"Warning: --plot FILE is deprecated (posemb 0.5.0): use -o {old}; --plot takes a kind (comparison)"
    ]
    current = run_cli("compare", *schemes, "-o", str(new))
    assert current.exit_code == 0 and _deprecated(current.stderr) == [], current.output
    assert run_cli("compare", *schemes, "--plot", "comparison", "-o", str(kind)).exit_code == 0
    assert old.read_bytes() == new.read_bytes() == kind.read_bytes()
    assert legacy.stdout == current.stdout
    both = run_cli("compare", *schemes, "--plot", str(old), "-o", str(new))
    assert both.exit_code == 2 and both.stderr.count("\n") == 1 and "give the file with -o FILE" in both.stderr


def test_stats_plot_file_is_o_file_with_a_warning(tiny_models, tmp_path):
    """`stats --plot FILE` (0.4) and `stats -o FILE` write the same heatmaps; `--plot distance -o FILE` draws what
    `--profile distance -o FILE` draws; a kind without -o is a one-line usage error."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nposition matters here\n")
    base = ["stats", str(corpus), "-m", str(tiny_models["BERT"]), "--device", "cpu"]
    old, new = tmp_path / "old.png", tmp_path / "new.png"
    legacy = run_cli(*base, "--plot", str(old))
    assert legacy.exit_code == 0, legacy.output
    assert _deprecated(legacy.stderr) == [
        f"Warning: --plot FILE is deprecated (posemb 0.5.0): use -o {old}; --plot takes a kind (heads|distance|keys)"
    ]
    current = run_cli(*base, "-o", str(new))
    assert current.exit_code == 0 and _deprecated(current.stderr) == [], current.output
    assert old.read_bytes() == new.read_bytes() and legacy.stdout == current.stdout
    profile, kind = tmp_path / "profile.png", tmp_path / "kind.png"
    assert run_cli(*base, "--profile", "distance", "-o", str(profile)).exit_code == 0
    assert run_cli(*base, "--plot", "distance", "-o", str(kind)).exit_code == 0
    assert profile.read_bytes() == kind.read_bytes() and profile.read_bytes() != new.read_bytes()
    alone = run_cli(*base, "--plot", "keys")
    assert alone.exit_code == 2 and alone.stderr == "Error: --plot keys needs -o FILE\n"


@pytest.mark.parametrize("command", ["inspect", "positions", "ablate", "compare", "stats", "stats merge"])
def test_plot_and_o_read_the_same_in_every_command(command):
    """--help of every command that draws: `--plot KIND` with its kinds, and `-o, --output` for the file."""
    result = run_cli(*command.split(), "--help")
    assert re.search(r"^  --plot [a-z]+(\|[a-z]+)*( {2}|\n)", result.stdout, flags=re.M), result.stdout
    assert re.search(r"^  -o, --output FILE\|FOLDER( {2}|\n)", result.stdout, flags=re.M), result.stdout
