"""Limits of what comes in and goes out: numeric options, input streams, output files, big outputs, full disks and
narrow terminals. Each case is one line on stderr and a documented exit code, never a hang or a traceback."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest
from conftest import run_cli

from posemb_cli import output
from posemb_cli.output import write_atomic


def _one_line_error(result, code=1):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith("Error")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and "unexpected" not in result.stderr
    return lines[0]


# ------------------------------------------------------------------------------ 3. numeric options


@pytest.mark.parametrize(
    "args, expected",
    [
        (["inspect", "x", "--dpi", "inf"], "inf is not a finite number; give a number in 1..600"),
        (["inspect", "x", "--dpi", "100000"], "100000 is out of range; give a number in 1..600"),
        (["inspect", "x", "--batch-size", "1e20"], "'1e20' is not an integer; give an integer in 1..4096"),
        (["inspect", "x", "--batch-size", "100000000000000000000"], "give an integer in 1..4096"),
        (["positions", "--length", "1000000"], "1000000 is out of range; give an integer in 2..4096"),
        (["positions", "--scheme", "rotary", "--base", "nan"], "nan is not a finite number; give a number in 1..1e12"),
        (["positions", "--scheme", "rotary", "--rope-param", "beta_fast=inf"], "the number must be finite"),
        (["positions", "--scheme", "alibi", "--heads", "0"], "give an integer in 1..1024"),
        (["positions", "--words", "-3"], "give an integer in 1..1000"),
        (["compare", "x", "--max-lines", "0"], "give an integer in 1..1000000"),
        (["stats", "-", "--sink-k", "nan"], "'nan' is not an integer"),
        (["ablate", "x", "--seed", "-1"], "give an integer in 0..4294967295"),
    ],
)
def test_numeric_options_are_bounded(args, expected):
    line = _one_line_error(run_cli(*args), code=2)
    assert expected in line, line


def _numeric_options() -> list[tuple[str, str, typing.Any]]:
    """(command, parameter, its typer.Option) for every int/float option of every command."""
    from posemb_cli.cli import app

    found = []
    for command in app.registered_commands:
        hints = typing.get_type_hints(command.callback, include_extras=True)
        for name, hint in hints.items():
            if typing.get_origin(hint) is not typing.Annotated:
                continue
            base, *extras = typing.get_args(hint)
            kinds = set(typing.get_args(base)) - {type(None)} or {base}
            if kinds & {int, float}:
                found.append((command.callback.__name__, name, extras[0]))
    return found


def test_every_numeric_option_has_a_stated_range():
    """A new numeric option cannot slip in unbounded: each uses the one shared parser (--layer/--head are lists,
    checked against the model)."""
    from posemb_cli.cli.options import Bounded

    options = _numeric_options()
    assert len(options) >= 20
    for command, name, option in options:
        assert isinstance(option.parser, Bounded), f"{command} --{name} has no range"
        assert f"[range: {option.parser}]" in option.help
    help_text = " ".join(run_cli("positions", "-h").stdout.split())
    assert "--length N Positions to compare (default min(128, max)). [range: 2..4096]" in help_text


def test_enum_errors_name_the_values_without_pydantic_prefix():
    line = _one_line_error(run_cli("inspect", "x", "--device", "tpu"), code=2)
    assert line == "Error: Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'."
    line = _one_line_error(run_cli("inspect", "x", "--format", "xml"), code=2)  # --format: the command's own words
    assert line == (
        "Error: inspect prints table or json or jsonl or csv, not xml: use --format table, --format jsonl, "
        "--format csv or --json"
    )
    line = _one_line_error(run_cli("stats", "-", "--encoding-errors", "ignore"), code=2)
    assert "'ignore' is not one of 'strict', 'replace'." in line and "Value error" not in line


# ------------------------------------------------------------------------------ 4. input streams


def test_a_10_mb_line_is_cut_with_a_warning(tiny_models):
    """Read up to 1 MB (on a character boundary: "é" is 2 bytes), the rest skipped; the tokenizer then cuts the text
    to the model's positions, as for any long text. The lines after it are read as usual."""
    data = b"first\n" + "é".encode() + b"attention positions " * 500_000 + b"\nlast\n"
    result = run_cli("inspect", "-", "--format", "jsonl", "-m", str(tiny_models["BERT"]), input=data)
    assert result.exit_code == 0, result.stderr
    texts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["text"] for t in texts[::2]] == ["first", "last"] and len(texts) == 3
    assert texts[1]["text"] == ("é" + "attention positions " * 50_000)[: 1 + 999_998]  # 999,998 bytes after é
    assert len(texts[1]["tokens"]) == 64  # the tiny BERT's maximum positions
    assert (
        "Warning: stdin line 2 is 10,000,002 bytes long: posemb read its first 1,000,000 bytes and skipped the rest"
        in result.stderr
    )


def test_a_long_line_is_read_in_bounded_memory():
    """A 50 MB line from a stream that never holds it: at most a few MB are allocated while it is cut and skipped;
    the hash of the lines still covers every byte."""
    import hashlib
    import tracemalloc

    from posemb_cli.lines import CountedLines

    size = 50_000_000

    class Stream(io.RawIOBase):
        def __init__(self):
            self.left = size

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.left < 0:
                return 0
            n = min(len(buffer), self.left) if self.left else 0
            buffer[:n] = b"a" * n
            if self.left == 0:
                buffer[:5] = b"\nend\n"[:5]
                self.left = -1
                return 5
            self.left -= n
            return n

    tracemalloc.start()
    reader = CountedLines(io.BufferedReader(Stream()), "stream")
    lines = [raw for _, raw in reader]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [len(raw) for raw in lines] == [1_000_001, 4]
    assert peak < 8_000_000, peak
    assert reader.sha256() == hashlib.sha256(b"a" * size + b"\nend\n").hexdigest()


def test_dev_zero_as_stdin_ends_with_an_error(monkeypatch):
    """The device itself as stdin (typer's test runner takes only bytes, so stdin is swapped here): it has no line
    end, so it is skipped up to the limit of a line, then refused."""
    from posemb_cli.errors import PosembError
    from posemb_cli.lines import read_texts

    with open("/dev/zero", "rb") as zero:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(zero))
        with pytest.raises(PosembError, match="stdin line 1 is longer than 268,435,456 bytes: not a text file"):
            next(read_texts(["-"]))


def test_invalid_byte_mid_batch_prints_the_lines_before_it():
    result = run_cli("inspect", "-", "--format", "jsonl", input=b"one\ntwo\n\xff three\nfour\n")
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["one", "two"]
    assert "stdin line 3 is not valid UTF-8 (byte 0xff at byte 0)" in _one_line_error(result)


def test_closed_stdin_is_one_line(tmp_path):
    """`posemb inspect - <&-`: Python sets sys.stdin to None. A real process (no model is loaded: it fails first)."""
    code = "import os, runpy, sys; os.close(0); sys.stdin = None; sys.argv = ['posemb', 'inspect', '-']\n"
    code += "runpy.run_module('posemb_cli', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "Error: stdin is closed: pipe the texts in, or give them as arguments\n"


@pytest.fixture
def forced_progress(monkeypatch):
    """As on a terminal: the stats progress bar is on, with its pre-count of the corpus's lines."""
    monkeypatch.setattr(output.Output, "progress", property(lambda self: True))


def _feed(target: str | int, lines: list[str]) -> threading.Thread:
    """A thread that writes `lines` into a FIFO (its path) or a pipe (its write end) and closes it."""

    def write() -> None:
        with open(target, "w") as pipe:
            pipe.write("".join(line + "\n" for line in lines))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["named pipe", "process substitution"])
def test_a_pipe_as_corpus_is_read_once(kind, tiny_models, tmp_path, forced_progress):
    """A FIFO or `<(...)` (/dev/fd/N) is never pre-counted for the progress bar: that drained it or hung."""
    lines = ["the cat sat on the mat", "position matters", "order too"]
    if kind == "named pipe":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
        writer = _feed(path, lines)
    else:
        read, write = os.pipe()
        path = f"/dev/fd/{read}"  # what bash passes for <(...)
        writer = _feed(write, lines)
    try:
        result = run_cli("stats", path, "--json", "-m", str(tiny_models["BERT"]))
    finally:
        writer.join(timeout=10)
        if kind != "named pipe":
            os.close(read)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["texts"] == 3


def test_text_argument_that_is_not_utf8():
    """Python passes argv bytes that are not UTF-8 as lone surrogates (surrogateescape): b'caf\\xe9' is 'caf\\udce9'."""
    typed = b"caf\xe9".decode("utf-8", "surrogateescape")
    line = _one_line_error(run_cli("inspect", typed, "--json"))
    assert "TEXT argument 1 is not valid UTF-8 (byte 0xe9 at byte 3)" in line and "--encoding-errors replace" in line
    assert "--pair is not valid UTF-8" in _one_line_error(run_cli("inspect", "ok", "--pair", typed))
    assert "TEXT is not valid UTF-8" in _one_line_error(run_cli("compare", typed, "-m", "scheme:alibi", "-m", "x"))
    result = run_cli("inspect", typed, "--json", "--encoding-errors", "replace")
    assert result.exit_code == 0 and json.loads(result.stdout)["text"] == "caf\ufffd"


def test_ascii_stdout_with_cjk_text():
    """PYTHONIOENCODING=ascii (or a Latin-1 locale): characters the encoding lacks become JSON escapes, so JSON stays
    the same data and a table stays readable; one warning says so."""
    from typer.testing import CliRunner

    from posemb_cli.cli import app

    text = "我爱 NLP 🙂"
    result = CliRunner(charset="ascii").invoke(app, ["inspect", text, "--json"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.isascii()
    assert json.loads(result.stdout_bytes)["text"] == text
    assert "stdout's encoding (ascii) cannot show some characters" in result.stderr
    table = CliRunner(charset="ascii").invoke(app, ["inspect", text])
    assert table.exit_code == 0 and "\\u6211\\u7231" in table.stdout


# ------------------------------------------------------------------------------ 6. output files


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_temp_file_removed_on_sigterm_and_sighup(tmp_path, signum):
    target = tmp_path / "out.npz"
    before = signal.getsignal(signum)

    def write(temp: str) -> None:
        Path(temp).write_bytes(b"half")
        os.kill(os.getpid(), signum)  # a real signal, arriving mid-write
        time.sleep(5)
        pytest.fail("the signal did not end the write")

    with pytest.raises(SystemExit) as stopped:
        write_atomic(target, write)
    assert stopped.value.code == 128 + signum
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signum) == before


def test_long_legal_file_name(tmp_path):
    target = tmp_path / ("n" * 250 + ".npz")  # 254 bytes: legal (NAME_MAX 255), too long for a name-based temp
    result = run_cli("inspect", "x", "--save", str(target))
    assert result.exit_code == 0, result.stderr
    assert target.read_bytes()[:2] == b"PK" and list(tmp_path.iterdir()) == [target]


def test_replacing_keeps_permission_bits(tmp_path):
    target = tmp_path / "private.npz"
    target.write_bytes(b"old")
    target.chmod(0o600)
    assert run_cli("inspect", "x", "--save", str(target)).exit_code == 0
    assert target.read_bytes()[:2] == b"PK" and target.stat().st_mode & 0o777 == 0o600


def test_read_only_file_is_not_replaced(tmp_path):
    target = tmp_path / "kept.npz"
    target.write_bytes(b"old")
    target.chmod(0o444)
    line = _one_line_error(run_cli("inspect", "x", "--save", str(target)))
    assert line == f"Error: cannot write {target}: the file is read-only (make it writable or remove it first)"
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


# ------------------------------------------------------------------------------ 7. big outputs stream


def test_streamed_json_is_byte_identical_to_json_dumps():
    """iter_json against the standard library's encoder, on a document with every kind of value."""
    import numpy as np

    from posemb_cli.render.data import iter_json

    rng = np.random.default_rng(0)
    document = {
        "text": '中文 "quoted" \\ 🙂',
        "empty": [],
        "nothing": {},
        "maps": rng.random((2, 3, 4)).astype(np.float32),
        "no rows": np.zeros((2, 0)),
        "none": np.array([]),
        "tokens": [{"id": 1, "token": "a", "start": None, "special": True}],
        "odd": np.array([np.nan, np.inf, -0.0, 1e-30]),
        "nested": {"token": np.ones((2, 2)), "position": None},
    }
    # strict JSON: NaN and Inf are null (core.nonfinite_warning says where they appear)
    plain = {
        k: np.where(np.isfinite(v), v.astype(object), None).tolist() if isinstance(v, np.ndarray) else v
        for k, v in document.items()
    }
    plain["nested"] = {"token": [[1.0, 1.0], [1.0, 1.0]], "position": None}
    for indent in (None, 2):
        assert "".join(iter_json(document, indent)) == json.dumps(plain, ensure_ascii=False, indent=indent)


def test_inspect_json_output_unchanged_by_streaming():
    """The CLI's JSON (one object, an array, lines) equals json.dumps of `to_json`, as before streaming."""
    from posemb_cli.core import inspect_texts
    from posemb_cli.models import load
    from posemb_cli.render.data import to_json

    texts = ["position matters", "so does order"]
    options = dict(vectors=True, attention=True, layers=[0, 5], heads=[1])
    objs = [to_json(r, **options) for r in inspect_texts(load(None), texts, pair="b")]  # one batch, as the CLI's
    alone = to_json(next(inspect_texts(load(None), texts[:1], pair="b")), **options)
    args = ["--pair", "b", "--vectors", "--attention", "--layer", "0", "--layer", "5", "--head", "1"]
    single = run_cli("inspect", texts[0], "--json", *args).stdout
    assert single == json.dumps(alone, ensure_ascii=False, indent=2) + "\n"
    many = run_cli("inspect", *texts, "--json", *args).stdout
    assert many == "[\n" + ",\n".join(json.dumps(o, ensure_ascii=False, indent=2) for o in objs) + "\n]\n"
    lines = run_cli("inspect", *texts, "--format", "jsonl", *args).stdout
    assert lines == "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)


def _json_attention_512_tokens():
    """A real process printing `--json --attention` for 512 tokens (6 x 12 x 512 x 512 weights): its exit status,
    stderr, output size, output tail and its own peak RSS (reported at exit)."""
    import tempfile

    code = (
        "import atexit, resource, runpy, sys\n"
        "atexit.register(lambda: print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
        "sys.argv = ['posemb', 'inspect', 'word ' * 600, '--json', '--attention']\n"
        "runpy.run_module('posemb_cli', run_name='__main__')\n"
    )
    with tempfile.TemporaryFile() as sink:
        done = subprocess.run([sys.executable, "-c", code], stdout=sink, stderr=subprocess.PIPE, timeout=600)
        size = sink.tell()
        sink.seek(size - 200)
        tail = sink.read().decode()
    stderr = done.stderr.decode()
    peak = int(stderr.split("PEAK ")[-1]) * 1024 if "PEAK " in stderr else None
    return done.returncode, stderr, size, tail, peak


@pytest.mark.early(job=_json_attention_512_tokens)
def test_json_attention_on_512_tokens_stays_within_2_gb(early):
    returncode, stderr, size, tail, peak = early
    assert returncode == 0, stderr
    assert "90 tokens were cut" in stderr
    assert size > 300_000_000  # all of the 18.9 million weights were written
    assert '    ]\n  ],\n  "warnings": [\n' in tail and tail.endswith('"\n  ]\n}\n')  # and the document was closed
    assert peak is not None and peak < 2 * 1024**3, f"peak RSS {peak / 1024**3:.2f} GiB"  # 3.8 GB before streaming


def _table_into_head():
    shell = f"{sys.executable} -m posemb_cli positions --scheme rotary --length 512 | head -n 2"
    done = subprocess.run(["bash", "-c", shell + '; echo "exit ${PIPESTATUS[0]}"'], capture_output=True, text=True)
    return done.stdout, done.stderr


@pytest.mark.early(job=_table_into_head)
def test_table_into_head_exits_0(early):
    stdout, stderr = early
    assert stdout.splitlines()[0].startswith("position scheme rotary")
    assert stdout.splitlines()[-1] == "exit 0" and stderr == ""


# ------------------------------------------------------------------------------ 9. full disks, narrow terminals


def _stdout_on_dev_full():
    runs = {}
    for fmt in ("--json", "--format=table"):
        command = [sys.executable, "-m", "posemb_cli", "positions", "--scheme", "sinusoidal", fmt]
        with open("/dev/full", "w") as full:
            done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        runs[fmt] = done.returncode, done.stderr
    return runs


@pytest.mark.early(job=_stdout_on_dev_full)
def test_stdout_on_a_full_disk(early):
    for returncode, stderr in early.values():
        assert (returncode, stderr) == (1, "Error: cannot write to stdout (/dev/full): No space left on device\n")


def test_file_on_a_full_disk(tmp_path):
    """A real failing write: the file-size limit (RLIMIT_FSIZE) makes the npz write fail as a full disk does."""
    import resource

    target = tmp_path / "big.npz"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, hard))
    try:
        result = run_cli("inspect", "a longer text to save", "--save", str(target))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert _one_line_error(result) == f"Error: cannot write {target}: File too large"
    assert list(tmp_path.iterdir()) == []


def test_narrow_terminal_leaves_out_columns_not_numbers(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    result = run_cli("inspect", "the cat sat")
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert any("4937" in row for row in rows)  # the id of "cat", not "…"
    assert all(len(row) <= 40 and "…" not in row for row in rows)
    assert "column(s) left out to fit 40 characters: |token|, |position|, |segment|, |sum|, cos(token,sum)" in (
        result.stdout
    )
    assert "COLUMNS=200" in result.stdout


def test_piped_tables_have_no_trailing_spaces():
    result = run_cli("inspect", "the cat sat", "--words")
    assert result.exit_code == 0 and result.stdout.count("\n") > 20
    assert [line for line in result.stdout.splitlines() if line != line.rstrip()] == []


# ------------------------------------------------------------------------------ shell completion


def test_shell_completion_works_and_help_stays_light():
    """`posemb --show-completion bash` prints Typer's script; a completion request (what the script asks) completes a
    command name; neither it nor --help imports anything heavy. Each a real process, as the shell runs them."""
    posemb = Path(sys.executable).with_name("posemb")  # the console script: Click names the program after argv[0]
    # Typer detects the shell from the parent processes (under `make` that is sh, which it does not support): run it
    # from bash, as a bash user does (`; true` keeps bash from replacing itself with posemb)
    shell = f"'{posemb}' --show-completion; true"
    script = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert not script.stderr, script.stderr
    assert "_posemb_completion()" in script.stdout, (script.stdout, script.stderr)
    assert "complete -o default -F _posemb_completion posemb" in script.stdout
    code = (
        "import os, runpy, sys\n"
        "def run(*argv):\n"
        "    sys.argv = ['posemb', *argv]\n"
        "    try:\n"
        "        runpy.run_module('posemb_cli', run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "os.environ.update(_POSEMB_COMPLETE='complete_bash', COMP_WORDS='posemb ins', COMP_CWORD='1')\n"
        "run()\n"
        "del os.environ['_POSEMB_COMPLETE']\n"
        "run('--help')\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'matplotlib', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("inspect\n"), (done.stdout, done.stderr)
    assert "--install-completion" in done.stdout and "HEAVY []" in done.stdout, (done.stdout, done.stderr)
