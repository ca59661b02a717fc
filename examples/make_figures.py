"""Regenerate the example pictures in examples/figures/ from the bundled model (offline).

    HF_HUB_OFFLINE=1 .venv/bin/python examples/make_figures.py

attention.png       every layer x head of all-MiniLM-L6-v2 for the headline text 我爱自然语言处理
attention_head.png  layer 3, head 7 alone
positions.png       cosine similarity of the first 128 learned position embeddings
embeddings.png      token / position / segment / sum norms per token of "position matters"
bias.png            ALiBi's bias per head against the offset (8 heads, offsets -32..32)
ablate.png          mean cosine and CKA per layer when the positions of "the cat sat on the mat" are altered
"""

from __future__ import annotations

import sys
from pathlib import Path

from posemb_cli.ablate import DEFAULT_MODES, ablate_texts, parse_modes
from posemb_cli.core import inspect_texts
from posemb_cli.models import load
from posemb_cli.positions import analyse_scheme, position_picture
from posemb_cli.render.figures.ablate import plot_ablation
from posemb_cli.render.figures.inspect import render_plot
from posemb_cli.render.figures.positions import plot_bias

FIGURES = Path(__file__).resolve().parent / "figures"
HEADLINE = "我爱自然语言处理"
ENGLISH = "position matters"
ABLATED = "the cat sat on the mat"


def main() -> None:
    FIGURES.mkdir(exist_ok=True)
    loaded = load(None)
    chinese, english = inspect_texts(loaded, [HEADLINE, ENGLISH])

    def warn(message: str) -> None:
        print(f"Warning: {message}", file=sys.stderr)

    jobs = [
        ("attention", chinese, "attention.png", {}),
        ("attention", chinese, "attention_head.png", {"layers": [3], "heads": [7]}),
        ("positions", english, "positions.png", {"position_picture": position_picture(loaded)}),
        ("embeddings", english, "embeddings.png", {}),
    ]
    for kind, result, name, options in jobs:
        for path, _ in render_plot(kind, result, FIGURES / name, on_warning=warn, **options):
            print(f"{path.relative_to(FIGURES.parent.parent)}  {path.stat().st_size // 1024} KB")
    bias = plot_bias(analyse_scheme("alibi", length=33, heads=8), FIGURES / "bias.png")
    print(f"examples/figures/bias.png  {bias.path.stat().st_size // 1024} KB")
    ablation = next(ablate_texts(loaded, [ABLATED], parse_modes(list(DEFAULT_MODES)) or []))
    ablate = plot_ablation(ablation, "similarity", FIGURES / "ablate.png")
    print(f"examples/figures/ablate.png  {ablate.path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
