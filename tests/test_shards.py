"""`posemb stats` in pieces: shards merged equal one run, the partial file as documented, refused merges and resumes,
hostile partial files, checkpoints that survive SIGINT, SIGTERM and SIGKILL, --dtype, and the recipes of
docs/shards.md (GNU parallel or a shell loop, run for real; Ray, run against a stand-in for `ray`; Slurm,
syntax-checked).

The per-head numbers themselves are checked against transformers in test_stats.py; here the reference is one
uninterrupted `posemb stats` run over the whole corpus, which is what a merge or a resume must reproduce. Counts,
line numbers and hashes are computed here from the corpus file directly."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, tiny_model_folder

from posemb_cli import partials
from posemb_cli.stats import STATISTICS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "shards.md"
LINES = [
    "The cat sat on the mat.",
    "Position matters, and so does order!",
    "",
    "Attention is all you need; embeddings add up.",
    "Hi",
    "A quick brown fox jumps over the lazy dog 12345 times...",
    "",
    "transformers encode position with learned tables, sines, rotations or biases",
    "Why?",
    'Tokens, tokens -- and (more) tokens: "quoted" ones too.',
    "One more line of moderate length for the corpus.",
    "Short one.",
    "x",
    "Heads attend to [CLS], [SEP] and full stops, says Clark et al. (2019).",
]
SUM_NAMES = ("cls", "sep", "punct", "sink", "self", "entropy", "distance", "within", "across", "prev", "next")
# from 0.5: the position measures (max length 64: offsets 0, 1, 2, 3-4, ..., 33-63 are 8 distance bins; 10 key bins)
SUM_NAMES += ("sink_texts", *(f"distance_bin_{b}" for b in range(8)), *(f"key_bin_{b}" for b in range(10)))
SUM_NAMES += ("key_first", "key_last")


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def largest_relative_difference(a: dict, b: dict) -> float:
    """Over every number of every head of two `stats --json` outputs (a zero must be matched by a zero)."""
    worst = 0.0
    assert [(h["layer"], h["head"]) for h in a["heads"]] == [(h["layer"], h["head"]) for h in b["heads"]]
    for x, y in zip(a["heads"], b["heads"], strict=True):
        assert x["pattern"] == y["pattern"]
        for key in STATISTICS:
            if y[key] is None or x[key] is None:
                assert x[key] is y[key] is None
            else:
                worst = max(worst, abs(x[key] - y[key]) / abs(y[key]) if y[key] else abs(x[key]) * np.inf)
    return worst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shards") / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert(tiny_models) -> str:
    return str(tiny_models["BERT"])


@pytest.fixture(scope="module")
def pieces(corpus, bert, tmp_path_factory) -> dict:
    """Three shards (the default --batch-size) and one run over the whole corpus, in-process. The corpus is one block
    of lines: shard 0 holds all its texts, shards 1 and 2 none."""
    folder = tmp_path_factory.mktemp("pieces")
    common = ["-m", bert, "--device", "cpu"]
    parts = []
    for index in range(3):
        part = folder / f"part-{index}.npz"
        result = run_cli("stats", str(corpus), *common, "--shard", f"{index}/3", "--partial", str(part))
        assert result.exit_code == 0 and result.stdout == "", result.stderr  # --partial alone prints nothing
        assert f"Wrote {part}" in result.stderr
        parts.append(part)
    return {"parts": parts, "one": _json(run_cli("stats", str(corpus), *common, "--json")), "folder": folder}


# ---------------------------------------------------------------- shards and merge


def test_merged_shards_equal_one_run(pieces, corpus):
    merged_file = pieces["folder"] / "merged.npz"
    merged = _json(run_cli("stats", "merge", *map(str, pieces["parts"]), "--json", "--partial", str(merged_file)))
    one = pieces["one"]
    assert merged["texts"] == one["texts"] == sum(1 for line in LINES if line.strip())
    assert merged["tokens"] == one["tokens"]
    assert merged["shards"] == {"count": 3, "indices": [0, 1, 2], "missing": []}
    measures = ["sink_threshold", "sink_rate", "distance_bins", "key_bins", "key_profile"]  # from 0.5
    assert list(merged) == ["model", "texts", "tokens", "shards", *measures, "heads"]
    assert list(one) == ["model", "texts", "tokens", *measures, "heads"]
    assert largest_relative_difference(merged, one) == 0  # shards 1 and 2 add zeros
    # the merged partial is itself mergeable and prints the same numbers; its header has the documented keys
    again = _json(run_cli("stats", "merge", str(merged_file), "--json"))
    assert again["heads"] == merged["heads"]
    header = partials.read_partial(merged_file).header
    assert list(header) == list(partials.read_partial(pieces["parts"][0]).header)
    assert header["shards"] == {"count": 3, "indices": [0, 1, 2], "block_lines": 1024} and header["resume"] is None


def _mixed_corpus(path: Path, count: int = 480, seed: int = 1) -> Path:
    """Lines of 0 to 34 words (blank lines among them), in random order: batches pad very differently."""
    rng = random.Random(seed)
    words = "the cat sat on a mat , position matters ! and so does order attention is all you need .".split()
    lengths = [0, 1, 2, 3, 5, 8, 13, 21, 34]
    lines = [" ".join(rng.choice(words) for _ in range(rng.choice(lengths))) for _ in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _largest_sum_difference(a: partials.Partial, b: partials.Partial) -> float:
    assert sorted(a.sums) == sorted(b.sums)
    return max(float(np.max(np.abs(a.sums[k] - b.sums[k]) / np.abs(b.sums[k]).clip(1e-300))) for k in b.sums)


def test_exact_merge_with_3_and_7_shards_at_the_default_batch_size(bert, tmp_path):
    """Blocks of 64 lines (two batches of the default 32), 480 lines of mixed lengths cut into 3 and into 7 shards:
    every shard batches each block as one run does, so the merge equals one run to 1e-12 relative (measured: bit for
    bit). The control, one run whose blocks are cut elsewhere (96 lines), differs by about 1e-8: the float32 forward
    pass depends on the batch's shape, so the test would see a merge that batched differently."""
    from posemb_cli.models import load
    from posemb_cli.stats import partial_stats, run_shard

    corpus = _mixed_corpus(tmp_path / "mixed.txt")
    loaded = load(bert)

    def piece(shard, block=64):
        part = run_shard(corpus, shard, model=loaded, block_lines=block)
        assert part.header["run"]["batch_size"] == 32 and part.header["shards"]["block_lines"] == block
        return part

    one = piece("0/1")
    assert one.counts["skipped"] > 30 and one.counts["texts"] > 400
    for count in (3, 7):
        shards = [piece((index, count)) for index in range(count)]
        assert all(shard.counts["texts"] for shard in shards)  # every shard has work
        merged = partials.merge(shards)
        assert _largest_sum_difference(merged, one) <= 1e-12, count
        assert {k: v for k, v in merged.counts.items() if k != "uniform"} == {
            k: v for k, v in one.counts.items() if k != "uniform"
        }
        assert merged.counts["uniform"] == pytest.approx(one.counts["uniform"], rel=1e-12)
        assert largest_relative_difference(partial_stats(merged).to_json(), partial_stats(one).to_json()) <= 1e-12
    assert _largest_sum_difference(piece("0/1", block=96), one) > 1e-12  # the control
    names = [str(tmp_path / f"part-{k}.npz") for k in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        shard.save(name)
    _resaved(Path(names[-1]), Path(names[-1]), header=_set("shards.block_lines", 96))
    refused = run_cli("stats", "merge", *names)
    assert refused.exit_code == 1 and "cannot merge: shard block size 64 in" in refused.stderr


def test_resume_at_every_kind_of_moment_equals_one_run(bert, tmp_path):
    """In-process stops (Ctrl-C) at block starts (after a block is read, before its first batch), mid-block and at
    block ends, over 3 blocks of 16 lines, then the same run again: sums bit for bit and every count (skipped and
    truncated too) equal to one uninterrupted run."""
    from posemb_cli.models import load
    from posemb_cli.stats import run_shard

    corpus = _mixed_corpus(tmp_path / "mixed.txt", count=44, seed=3)
    loaded = load(bert)
    options = dict(model=loaded, block_lines=16, batch_size=4, max_length=12, fingerprint=False)
    one = run_shard(corpus, "0/1", **options)
    assert one.counts["skipped"] and one.counts["truncated"]
    calls = []
    run_shard(corpus, "0/1", **options, on_batch=calls.append)
    for stop in (1, 2, 5, len(calls) // 2, len(calls) - 2):
        checkpoint = tmp_path / f"stop-{stop}.ckpt"
        seen = []

        def interrupt(done, stop=stop, seen=seen):
            seen.append(done)
            if len(seen) == stop:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_shard(corpus, "0/1", **options, checkpoint=checkpoint, on_batch=interrupt)
        assert not partials.read_partial(checkpoint).complete
        resumed = run_shard(corpus, "0/1", **options, checkpoint=checkpoint)
        assert resumed.counts == one.counts, stop
        assert all(np.array_equal(resumed.sums[k], one.sums[k]) for k in one.sums), stop


def test_partial_file_is_the_documented_npz(pieces, corpus, bert):
    """Read with NumPy alone (no pickle); every header field checked against the corpus and the model folder."""
    raw = corpus.read_bytes()
    lines = raw.splitlines(keepends=True)
    for index, part in enumerate(pieces["parts"]):
        with np.load(part, allow_pickle=False) as data:
            header = json.loads(data["header"].item())
            sums = {key: data[key] for key in data.files if key != "header"}
        assert list(header) == [
            "format",
            "version",
            "posemb",
            "model",
            "options",
            "shards",
            "corpus",
            "complete",
            "resume",
            "run",
            "counts",
            "checksum",
        ]
        assert header["format"] == "posemb-stats-partial" and header["version"] == 2
        assert header["posemb"] == __import__("posemb_cli").__version__
        assert header["model"]["fingerprint"] == _fingerprint(Path(bert)) and header["model"]["layers"] == 2
        assert header["options"] == {
            "pairs": False,
            "max_length": 64,
            "sink_k": 4,
            "sink_threshold": 0.3,
            "bins": 10,
            "dtype": "float32",
            "encoding_errors": "strict",
        }
        assert header["shards"] == {"count": 3, "indices": [index], "block_lines": 1024}
        assert header["corpus"] == {"name": str(corpus), "lines": len(LINES), "sha256": hashlib.sha256(raw).hexdigest()}
        assert header["complete"] is True and header["resume"] is None
        assert header["run"] == {"batch_size": 32, "device": "cpu"}
        mine = [line for k, line in enumerate(lines) if (k // 1024) % 3 == index]  # block k // 1024 mod N = I
        assert header["counts"]["texts"] == sum(1 for line in mine if line.strip())
        assert header["counts"]["skipped"] == sum(1 for line in mine if not line.strip())
        assert sorted(sums) == sorted(f"sum_{name}" for name in SUM_NAMES)
        assert all(value.dtype == np.float64 and value.shape == (2, 4) for value in sums.values())
    # the means are the sums over the counts, as documented
    merged = partials.merge(pieces["parts"])
    tokens = merged.counts["tokens"]
    for row in pieces["one"]["heads"]:
        at = (row["layer"], row["head"])
        assert row["entropy"] == pytest.approx(merged.sums["entropy"][at] / tokens, rel=1e-12)
        assert row["prev"] == pytest.approx(merged.sums["prev"][at] / merged.counts["edge_rows"], rel=1e-12)
        assert row["uniform_entropy"] == pytest.approx(merged.counts["uniform"] / tokens, rel=1e-12)


def _fingerprint(folder: Path) -> str:
    """The documented fingerprint: SHA-256 over (name, SHA-256 of the bytes) of the top-level model files."""
    patterns = ("*.safetensors", "*.bin", "*.json", "*.txt", "*.model")
    files = sorted({f for pattern in patterns for f in folder.glob(pattern)})
    text = "".join(f"{f.name}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in files)
    return hashlib.sha256(text.encode()).hexdigest()


def test_merge_refuses_what_does_not_fit(pieces, corpus, bert, tiny_models, tmp_path):
    parts = [str(p) for p in pieces["parts"]]

    def merge(*args: str):
        return run_cli("stats", "merge", *args)

    twice = merge(parts[0], parts[1], parts[1], parts[2])
    assert twice.exit_code == 1 and f"shard 1/3 is in both {parts[1]} and {parts[1]}" in twice.stderr
    missing = merge(parts[0], parts[2])
    assert missing.exit_code == 1 and "shard 1 of 3 is missing; pass --allow-missing" in missing.stderr
    allowed = merge(parts[0], parts[2], "--allow-missing", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["shards"]["missing"] == [1]
    assert "missing shard 1 of 3" in allowed.stderr
    table = merge(parts[0], parts[2], "--allow-missing")
    assert "shards 0,2 of 3 (missing: 1)" in " ".join(table.stdout.split())

    def piece(*args: str, name: str, source: Path = corpus, shard: str = "0/3") -> str:
        path = tmp_path / name
        result = run_cli("stats", str(source), "--shard", shard, "--partial", str(path), *args)
        assert result.exit_code == 0, result.stderr
        return str(path)

    other_option = merge(piece("-m", bert, "--sink-k", "2", name="k2.npz"), parts[1], parts[2])
    assert other_option.exit_code == 1 and "--sink-k 2 in" in other_option.stderr and "but 4 in" in other_option.stderr
    other_model = merge(piece("-m", str(tiny_models["ELECTRA"]), name="electra.npz"), parts[1], parts[2])
    assert other_model.exit_code == 1 and "cannot merge: model" in other_model.stderr
    assert str(tiny_models["ELECTRA"]) in other_model.stderr
    other_corpus = tmp_path / "other.txt"
    other_corpus.write_text("\n".join(LINES[::-1]) + "\n", encoding="utf-8")
    different = merge(piece("-m", bert, name="o.npz", source=other_corpus), parts[1], parts[2])
    assert different.exit_code == 1 and "cannot merge: corpus SHA-256" in different.stderr
    other_count = merge(parts[0], piece("-m", bert, name="n2.npz", shard="1/2"))
    assert other_count.exit_code == 1 and "cannot merge: shard count 3 in" in other_count.stderr

    not_a_partial = merge(str(corpus))
    assert not_a_partial.exit_code == 1
    assert f"{corpus} is not a valid posemb stats partial: not an .npz" in not_a_partial.stderr
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    not_a_file = merge(str(fifo))
    assert not_a_file.exit_code == 1 and "is not a valid posemb stats partial: not a regular file" in not_a_file.stderr
    newer = tmp_path / "newer.npz"
    partial = partials.read_partial(parts[0])
    partial.header["version"] = 99
    partial.save(newer)
    too_new = merge(str(newer))
    assert too_new.exit_code == 1 and "format version 99, newer than this posemb reads (2)" in too_new.stderr
    assert "Traceback" not in too_new.output


def test_shard_spec_errors(corpus):
    """ASCII digits only (Python's isdigit() takes "３" and "²"; int() then fails on "²"), a bounded N."""
    cases = {
        "3/3": "the index must be 0..2",
        "1-4": "expected I/N",
        "a/b": "expected I/N",
        "\uff13/4": "expected I/N in ASCII digits",
        "\u00b2/3": "expected I/N in ASCII digits",
        " 1/3": "expected I/N",
        "1/3/4": "expected I/N",
        "-1/3": "expected I/N",
        "+1/3": "expected I/N",
        "": "expected I/N",
        "0/0": "N must be 1..1,000,000",
        "0/1000001": "N must be 1..1,000,000",
        "0/99999999999999999999": "expected I/N",
    }
    for spec, message in cases.items():
        result = run_cli("stats", str(corpus), "--shard", spec)
        assert result.exit_code == 2 and message in result.stderr, (spec, result.stderr)
        assert "Traceback" not in result.output and "unexpected" not in result.stderr


# ---------------------------------------------------------------- hostile partial files


def _members(path: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _write_zip(path: Path, members: dict[str, bytes], compression: int = 0) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=compression) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)


def _header_text(members: dict[str, bytes]) -> str:
    import io

    return str(np.lib.format.read_array(io.BytesIO(members["header.npy"])).item())


def _resaved(valid: Path, target: Path, header=None, sums=None) -> None:
    """Edited, then saved by posemb itself (so its checksum matches): what the schema must catch."""
    part = partials.read_partial(valid)
    if header:
        header(part.header)
    if sums:
        sums(part.sums)
    part.save(target)


def _raw(valid: Path, target: Path, header_text=None, **members) -> None:
    """The valid file's members, some replaced by raw bytes (None removes one), rewritten without posemb."""
    found = _members(valid)
    if header_text is not None:
        found["header.npy"] = _npy(np.array(header_text(_header_text(found))))
    for name, data in members.items():
        found.pop(f"{name}.npy") if data is None else found.__setitem__(f"{name}.npy", data)
    _write_zip(target, found)


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {tempfile.gettempdir()}/posemb-pwned",))


def _pickled(valid, target):
    _raw(valid, target, sum_self=_npy(np.array([[Exploit()] * 4] * 2, dtype=object)))


def _bomb(valid, target):
    import zipfile

    found = _members(valid)
    found["sum_self.npy"] = b"\0" * 5_000_000  # deflates to ~5 kB
    _write_zip(target, found, zipfile.ZIP_DEFLATED)


def _checksum_off(valid, target):
    arrays = partials.read_partial(valid).sums
    _raw(valid, target, sum_self=_npy(arrays["self"] * 2))  # the header (and its checksum) as posemb wrote it


def _nested(valid, target):
    _raw(valid, target, header_text=lambda text: text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _nan_header(valid, target):
    _raw(valid, target, header_text=lambda text: re.sub(r'"uniform": [0-9.e+-]+', '"uniform": NaN', text))


def _set(path: str, value):
    def edit(header):
        *parents, last = path.split(".")
        where = header
        for key in parents:
            where = where[key]
        if value is KeyError:
            del where[last]
        else:
            where[last] = value

    return edit


def _edit(path, value):
    return lambda valid, target: _resaved(valid, target, header=_set(path, value))


HOSTILE = {  # name: (make target from a valid partial, what the one line says after "is not a valid ...: ")
    "header field missing": (_edit("counts.texts", KeyError), "its header has no field counts.texts"),
    "header field of the wrong type": (
        _edit("counts.texts", "5"),
        'header field counts.texts is "5", expected a whole',
    ),
    "an object that is a list": (_edit("model", [1]), "header field model is a list, not an object"),
    "header nested deeply": (_nested, "its header is nested too deeply"),
    "shard index outside 0..N-1": (_edit("shards.indices", [3]), "expected distinct shard indices 0..2"),
    "shard count too big": (_edit("shards.count", 2_000_000), "header field shards.count is 2000000, expected"),
    "negative count": (_edit("counts.skipped", -1), "header field counts.skipped is -1, expected a whole number"),
    "fractional count": (_edit("counts.texts", 2.5), "header field counts.texts is 2.5, expected a whole number"),
    "counts that do not add up": (_edit("counts.edge_rows", 1), "its counts do not add up: edge_rows 1 is not"),
    "an unknown dtype": (_edit("options.dtype", "float8"), 'header field options.dtype is "float8", expected one of'),
    "format version 1": (_edit("version", 1), "format version 1, not 2 (posemb before 0.5"),
    "NaN in the header": (_nan_header, "its header holds NaN, which is not JSON"),
    "NaN sum": (
        lambda v, t: _resaved(v, t, sums=lambda s: s["entropy"].__setitem__((1, 0), np.nan)),
        "sum_entropy is not finite (nan at layer 1, head 0)",
    ),
    "sum of another shape": (
        lambda v, t: _resaved(v, t, sums=lambda s: s.__setitem__("self", np.zeros((3, 4)))),
        "sum_self.npy has shape [3, 4], not [2, 4]",
    ),
    "sum of another dtype": (lambda v, t: _raw(v, t, sum_self=_npy(np.zeros((2, 4), np.float32))), "is float32, not"),
    "sum missing": (lambda v, t: _raw(v, t, sum_self=None), "it has no sum_self"),
    "pickled objects": (_pickled, "sum_self.npy holds Python objects (a pickle), which posemb never loads"),
    "zip bomb": (_bomb, "sum_self.npy declares 5,000,000 bytes, more than a [2, 4] array"),
    "a member no partial has": (lambda v, t: _raw(v, t, evil=b"x"), "its archive has a member 'evil.npy'"),
    "too many members": (
        lambda v, t: _write_zip(t, {f"m{k}": b"" for k in range(300)}),
        "its archive declares 300 members, over the limit of 256",
    ),
    "edited without the checksum": (
        _checksum_off,
        "it was changed after posemb wrote it (its checksum does not match)",
    ),
    "cut short": (lambda v, t: t.write_bytes(v.read_bytes()[: v.stat().st_size // 2]), "it is cut short or damaged"),
    "a symbolic link": (lambda v, t: t.symlink_to(v), "it is a symbolic link: give the file it points to"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_partial_is_refused_in_one_line(case, pieces, tmp_path):
    """Each class of edited, damaged or crafted file, given to `stats merge --allow-missing` with the other shards:
    one line naming the file and what is wrong, exit 1, nothing on stdout (nothing merged), nothing unpickled."""
    make, words = HOSTILE[case]
    target = tmp_path / "hostile.npz"
    make(pieces["parts"][0], target)
    marker = Path(tempfile.gettempdir()) / "posemb-pwned"
    marker.unlink(missing_ok=True)
    result = run_cli("stats", "merge", str(target), *map(str, pieces["parts"][1:]), "--allow-missing", "--json")
    assert result.exit_code == 1 and result.stdout == "", (case, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {target} is not a valid posemb stats partial: "), lines
    assert words in lines[0], lines[0]
    assert not marker.exists()


def test_duplicate_and_foreign_shards_are_refused_even_with_allow_missing(pieces, tmp_path):
    parts = [str(p) for p in pieces["parts"]]
    copy = tmp_path / "copy-of-0.npz"
    shutil.copy(parts[0], copy)
    twice = run_cli("stats", "merge", parts[0], str(copy), "--allow-missing")
    assert twice.exit_code == 1 and f"Error: shard 0/3 is in both {parts[0]} and {copy}" in twice.stderr
    for field, value, words in (
        ("options.dtype", "bfloat16", "cannot merge: --dtype float32 in"),
        ("shards.count", 4, "cannot merge: shard count 3 in"),
        ("corpus.sha256", "0" * 64, "cannot merge: corpus SHA-256"),
        ("model.fingerprint", "f" * 64, "cannot merge: model"),
    ):
        foreign = tmp_path / f"{field}.npz"
        _resaved(Path(parts[0]), foreign, header=_set(field, value))
        result = run_cli("stats", "merge", parts[1], str(foreign), "--allow-missing", "--json")
        assert result.exit_code == 1 and result.stdout == "" and words in result.stderr, (field, result.stderr)
    # a name from the file is shown inert: an escape sequence is printed escaped, never sent to the terminal
    evil = tmp_path / "evil.npz"
    _resaved(Path(parts[0]), evil, header=lambda h: h["model"].update(name="\x1b[2Jevil", fingerprint="e" * 64))
    result = run_cli("stats", "merge", parts[1], str(evil), "--allow-missing")
    assert result.exit_code == 1 and "\x1b" not in result.stderr and '"\\u001b[2Jevil"' in result.stderr


def test_hostile_checkpoint_is_refused_before_the_run(pieces, corpus, bert, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    _bomb(pieces["parts"][0], checkpoint)
    result = run_cli("stats", str(corpus), "-m", bert, "--checkpoint", str(checkpoint))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"Error: {checkpoint} is not a valid posemb stats partial: sum_self.npy declares" in result.stderr


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_of_another_run_is_refused(corpus, bert, tiny_models, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    base = ["stats", str(corpus), "-m", bert, "--checkpoint", str(checkpoint), "--batch-size", "2", "--json"]
    first = _json(run_cli(*base))
    assert partials.read_partial(checkpoint).complete
    again = run_cli(*base)  # a finished checkpoint: the same numbers, nothing left to run
    assert _json(again) == first and "Going on from checkpoint" in again.stderr
    other = tmp_path / "other.txt"
    other.write_text("\n".join(LINES[1:]) + "\n", encoding="utf-8")
    refusals = {
        "was made on another corpus": ["stats", str(other), *base[2:]],
        "is from another run: --sink-k 4 in": [*base, "--sink-k", "3"],
        "is from another run: --max-length 64 in": [*base, "--max-length", "9"],
        "is from another run: --batch-size 2 in": [*base, "--batch-size", "3"],
        "is from another run: shard count 1 in": [*base, "--shard", "0/2"],
        "is from another run: model": [*base, "-m", str(tiny_models["ELECTRA"])],
    }
    for words, args in refusals.items():
        result = run_cli(*args)
        assert result.exit_code == 1 and f"Error: checkpoint {checkpoint} {words}" in result.stderr, result.stderr


def test_sigterm_saves_the_checkpoint_and_the_resumed_run_equals_one_run(corpus, bert, tmp_path, monkeypatch):
    """SIGTERM (a scheduler's stop) mid-batch: exit 130, the checkpoint holds whole batches only; the same command
    again gives exactly the numbers of an uninterrupted run."""
    from posemb_cli import stats

    checkpoint = tmp_path / "run.ckpt"
    args = ["stats", str(corpus), "-m", bert, "--batch-size", "2", "--checkpoint-texts", "1", "--json"]
    real_run, calls = stats._Reducer.run, []

    def terminate_on_fourth(self, batch):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        real_run(self, batch)

    monkeypatch.setattr(stats._Reducer, "run", terminate_on_fourth)
    stopped = run_cli(*args, "--checkpoint", str(checkpoint))
    assert stopped.exit_code == 130 and stopped.stdout == ""
    assert f"Interrupted after 6 text(s); checkpoint {checkpoint} saved" in stopped.stderr
    saved = partials.read_partial(checkpoint)
    assert saved.counts["texts"] == 6 and not saved.complete and saved.header["resume"]["batches"] == 3
    monkeypatch.setattr(stats._Reducer, "run", real_run)
    resumed = run_cli(*args, "--checkpoint", str(checkpoint))
    assert "Going on from checkpoint" in resumed.stderr and "(6 text(s) done)" in resumed.stderr
    assert _json(resumed) == _json(run_cli(*args))


def test_sigterm_while_the_checkpoint_is_being_written_is_still_ctrl_c(corpus, bert, tmp_path, monkeypatch):
    """SIGTERM that lands while a checkpoint file is being written (its atomic write turns SIGTERM into exit 143 for
    other files) still ends `stats --checkpoint` as Ctrl-C: exit 130, a whole checkpoint saved and said so."""
    checkpoint = tmp_path / "run.ckpt"
    real_savez, saves = np.savez, []

    def terminate_inside_the_second_save(handle, **arrays):
        saves.append(1)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        real_savez(handle, **arrays)

    monkeypatch.setattr(np, "savez", terminate_inside_the_second_save)
    args = ["stats", str(corpus), "-m", bert, "--batch-size", "2", "--checkpoint-texts", "1", "--json"]
    stopped = run_cli(*args, "--checkpoint", str(checkpoint))
    assert stopped.exit_code == 130, stopped.stderr
    assert f"checkpoint {checkpoint} saved" in stopped.stderr
    assert not partials.read_partial(checkpoint).complete and not list(tmp_path.glob(".posemb-*"))


def _killed_and_resumed() -> dict:
    """Real processes: `posemb stats --checkpoint` stopped by SIGINT, then by SIGKILL, each at a random point after
    some progress, then the same command run to the end. Returns what the test checks."""
    folder = tiny_model_folder("BERT")
    work = Path(tempfile.mkdtemp(prefix="posemb-resume-"))
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    texts = [LINES[k % len(LINES)] + ("" if k % 7 else f" number {k}") for k in range(480)]
    (work / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    checkpoint = work / "run.ckpt"
    args = ["stats", str(work / "corpus.txt"), "-m", str(folder), "--batch-size", "2", "--device", "cpu", "--json"]
    command = [sys.executable, "-m", "posemb_cli", *args, "--checkpoint", str(checkpoint), "--checkpoint-texts", "6"]

    def done() -> int:
        try:
            return partials.read_partial(checkpoint).counts["texts"]
        except Exception:  # not written yet
            return 0

    stops = []
    total = sum(1 for text in texts if text.strip())
    for sig in (signal.SIGINT, signal.SIGKILL):
        before = done()
        # a random point in the first half of what is left: after some progress, well before the end (the tiny
        # model reads the rest in well under a second, so a random delay alone can land after the last text)
        target = before + 1 + rng.randrange(max(1, (total - before) // 2))
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while done() < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        stops.append({"signal": sig.name, "code": proc.returncode, "stderr": err.decode(), "texts": done()})
    final = subprocess.run(command, capture_output=True, timeout=300)
    shutil.rmtree(work, ignore_errors=True)
    return {"seed": seed, "args": args, "texts": texts, "stops": stops, "final": final}


@pytest.mark.early(job=_killed_and_resumed, tiny_models=True)
def test_sigint_and_sigkill_at_random_points_then_resume_equals_one_run(early, tmp_path):
    stops, final = early["stops"], early["final"]
    why = f"random seed {early['seed']}: {stops}"
    total = sum(1 for text in early["texts"] if text.strip())
    sigint, sigkill = stops
    assert sigint["code"] == 130 and "checkpoint" in sigint["stderr"] and "saved" in sigint["stderr"], why
    assert sigkill["code"] == -signal.SIGKILL, why
    assert 0 < sigint["texts"] <= sigkill["texts"] < total, why  # both landed mid-run, after some progress
    assert final.returncode == 0, final.stderr.decode()
    assert f"({sigkill['texts']} text(s) done)" in final.stderr.decode()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(early["texts"]) + "\n", encoding="utf-8")
    args = list(early["args"])
    args[1] = str(corpus)
    uninterrupted = _json(run_cli(*args))
    resumed = json.loads(final.stdout)
    assert resumed["texts"] == uninterrupted["texts"] == total
    assert largest_relative_difference(resumed, uninterrupted) <= 1e-12, why


# ---------------------------------------------------------------- --dtype


def test_bfloat16_on_the_cpu_stays_near_float32():
    """Stated tolerance (docs): masses within 0.01, entropy and distance within 1% or 0.02 (nats, tokens). (Pattern
    labels are thresholds on these means: a head near a threshold may flip.)"""
    from posemb_cli.models import load
    from posemb_cli.stats import corpus_stats

    texts = [line for line in LINES if line.strip()][:4]
    full = corpus_stats(load(None, dtype="float32"), texts, batch_size=4)
    half = load(None, dtype="bfloat16")
    assert str(next(half.model.parameters()).dtype) == "torch.bfloat16"
    low = corpus_stats(half, texts, batch_size=4)
    for a, b in zip(low.heads, full.heads, strict=True):
        for key in ("cls", "sep", "punct", "self", "prev", "next", "sink"):
            assert abs(a[key] - b[key]) <= 0.01, (key, a, b)
        for key in ("entropy", "distance"):
            assert a[key] == pytest.approx(b[key], rel=0.01, abs=0.02), (key, a, b)


def test_dtype_the_device_cannot_run_is_a_clear_error(bert, corpus, monkeypatch):
    import torch

    real_ones = torch.ones

    def no_half(*args, **kwargs):
        if kwargs.get("dtype") in (torch.float16, torch.bfloat16):
            raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")
        return real_ones(*args, **kwargs)

    monkeypatch.setattr(torch, "ones", no_half)
    result = run_cli("stats", str(corpus), "-m", bert, "--dtype", "float16", "--device", "cpu")
    assert result.exit_code == 1 and "Error: --dtype float16 is not supported on cpu" in result.stderr
    assert "use float32" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------- the recipes of docs/shards.md


def _block(title: str, language: str) -> str:
    """The code block of that language right after a line of docs/shards.md that contains `title`."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(re.escape(title) + r".*?```" + language + r"\n(.*?)```", text, flags=re.S)
    assert match, f"docs/shards.md has no {language} block after {title!r}"
    return match.group(1)


def _recipe_run() -> tuple[str, subprocess.CompletedProcess]:
    """The one-machine recipe of docs/shards.md in a real shell: GNU parallel if installed, else the plain shell
    loop; with N=2 shards and a small corpus. Returns which recipe ran and its result."""
    which = "GNU parallel" if shutil.which("parallel") else "shell loop"
    script = _block(f"Recipe: {which}", "sh").replace("N=4", "N=2")
    work = Path(tempfile.mkdtemp(prefix="posemb-recipe-"))
    (work / "corpus.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    heads = (work / "heads.json").read_text() if (work / "heads.json").exists() else ""
    shutil.rmtree(work, ignore_errors=True)
    return which, proc, heads


@pytest.mark.early(job=_recipe_run)
def test_docs_recipe_on_one_machine_runs(early, tmp_path):
    which, proc, heads = early
    assert proc.returncode == 0, (which, proc.stderr)
    merged = json.loads(heads)
    assert merged["shards"] == {"count": 2, "indices": [0, 1], "missing": []}
    assert merged["texts"] == sum(1 for line in LINES if line.strip())


def test_docs_slurm_recipe_is_valid_bash():
    script = _block("Recipe: Slurm", "sh")
    assert "#SBATCH --array=0-15" in script and "--shard $SLURM_ARRAY_TASK_ID/16" in script
    assert subprocess.run(["bash", "-n", "-c", script], capture_output=True).returncode == 0


def test_docs_ray_recipe_runs_against_a_stand_in_for_ray(tmp_path, monkeypatch, capsys):
    """ray is not installed here: the recipe is compiled, then run with a stand-in module whose remote functions run
    at once in this process, so that every posemb call in it is exercised."""
    import types

    code = _block("Recipe: Ray", "python")
    compile(code, "docs Ray recipe", "exec")
    fake = types.ModuleType("ray")

    class Remote:
        def __init__(self, function):
            self.function = function

        def remote(self, *args, **kwargs):
            return self.function(*args, **kwargs)

    fake.init = lambda *args, **kwargs: None
    fake.remote = lambda function=None, **options: Remote(function) if function else Remote
    fake.get = lambda values: values
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    exec(compile(code, "docs Ray recipe", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert "texts" in printed and str(sum(1 for line in LINES if line.strip())) in printed
