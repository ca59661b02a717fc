"""What a first-time user meets before any number: `posemb` alone, the usage lines and formats of --help, and the
advice an [UNK] or a missing glyph gets (it must fit the characters: an emoji is no Chinese character)."""

from __future__ import annotations

import re

import pytest
from conftest import _bpe, run_cli

FORMATS = ("table", "json", "jsonl", "csv")


def test_posemb_alone_prints_the_help_on_stdout_and_exits_0():
    result = run_cli()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: posemb [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in result.stdout and "inspect" in result.stdout
    assert result.stderr == ""


# (command, what its usage line ends with, the argument as listed under "Arguments:")
USAGE = [
    ("inspect", "inspect [OPTIONS] TEXT...", "TEXT..."),
    ("compare", "compare [OPTIONS] [TEXT]", "TEXT"),
    ("stats", "stats [OPTIONS] FILE|-", "FILE|-"),
    ("stats merge", "stats merge [OPTIONS] PARTS...", "PARTS..."),
    ("ablate", "ablate [OPTIONS] [TEXT...]", "TEXT..."),
]


@pytest.mark.parametrize("command, usage, argument", USAGE, ids=[row[0] for row in USAGE])
def test_usage_lines_read_as_written(command, usage, argument):
    """Typer writes `{TEXT...}...` for a required list and adds the Python type (`TEXT... <list[str]>`)."""
    result = run_cli(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Usage: posemb {usage}"
    listed = [line.split()[0] for line in lines[lines.index("Arguments:") + 1 :] if line.startswith("  ")][:1]
    assert listed == [argument]
    assert not re.search(r"[{}]|<(list|str|Path|int)\b", result.stdout), result.stdout


def _listed_formats(command: list[str]) -> tuple[str, ...]:
    result = run_cli(*command, "--help")
    match = re.search(r"-f, --format ([a-z|]+)", result.stdout)
    assert match, result.stdout
    return tuple(match[1].split("|"))


# A cheap call of each command: no corpus, no forward pass where the command allows it.
CALLS = {
    "inspect": ["inspect", "x"],
    "positions": ["positions", "--scheme", "sinusoidal", "--dim", "8", "--length", "8"],
    "compare": ["compare", "x", "-m", "scheme:sinusoidal", "-m", "scheme:rotary"],
    "serve": ["serve", "--status"],
    "models": ["models"],
    "ablate": ["ablate", "x", "--mode", "zero"],
    "stats": ["stats", "-"],
}


@pytest.mark.parametrize("command", list(CALLS))
def test_help_lists_exactly_the_formats_the_command_accepts(command, monkeypatch, tmp_path):
    """Each of the four formats is run: a listed one is accepted, an unlisted one refused (exit 2, naming it)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # serve --status looks for a server there: none
    tmp_path.chmod(0o700)
    args = CALLS[command]
    listed = _listed_formats(args[:1])
    assert listed[0] == "table" and set(listed) <= set(FORMATS)
    for fmt in FORMATS:
        result = run_cli(*args, "--format", fmt, input="a text\n")
        refused = result.exit_code == 2 and f"not {fmt}" in result.output
        assert refused == (fmt not in listed), (command, fmt, listed, result.exit_code, result.output)
        assert "Traceback" not in result.output


def test_an_emoji_in_unk_gets_byte_level_advice_not_chinese(bundled_path):
    """The bundled (WordPiece) vocabulary really has no entry for these emoji; the advice names a byte-level model, and
    a byte-level BPE vocabulary (trained here, as tests/conftest.py trains the tiny models') indeed has no [UNK] for
    them."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundled_path))
    assert tokenizer("I love 🤗 ✨")["input_ids"].count(tokenizer.unk_token_id) == 2
    byte_level = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    assert byte_level.token_to_id("<unk>") not in byte_level.encode("I love 🤗 ✨").ids

    result = run_cli("inspect", "I love 🤗 ✨", "--json")
    assert result.exit_code == 0, result.output
    (warning,) = [w for w in result.stderr.splitlines() if "[UNK]" in w]
    assert "'🤗✨'" in warning and "roberta-base" in warning and "byte" in warning
    assert "chinese" not in warning.lower() and "CJK" not in warning


def test_chinese_and_emoji_together_get_one_model_each():
    result = run_cli("inspect", "我爱🤗", "--format", "csv")
    assert result.exit_code == 0, result.output
    (warning,) = [w for w in result.stderr.splitlines() if "[UNK]" in w]
    assert "bert-base-chinese for '爱'" in warning and "roberta-base or gpt2" in warning and "for '🤗'" in warning


def test_a_missing_emoji_glyph_gets_emoji_font_advice_not_cjk():
    from posemb_cli.render import fonts

    _, told = fonts.font_settings("I love 🤗")
    (warning,) = told  # DejaVu Sans and the CJK fonts have no 🤗
    assert "'🤗'" in warning and "fonts-symbola" in warning and "--font" in warning
    assert "cjk" not in warning.lower()
    both = fonts.install_hint("爱🤗")
    assert "fonts-noto-cjk" in both and "fonts-symbola" in both
    assert "fonts-symbola" not in fonts.install_hint("爱") and "fonts-noto-core" in fonts.install_hint("ب")
