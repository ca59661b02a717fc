"""`-o` always writes (issue 24, item 3): `-o FILE.png|svg|pdf` without `--plot` draws the command's default picture,
`-o FOLDER` draws every picture of the command, and no command exits 0 having written nothing. Each file is opened
and checked to be the picture it claims to be (a PNG with a drawing in it, an SVG, a PDF), not only to exist."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def assert_drawn_png(path) -> None:
    """A PNG file with a picture in it: at least a few hundred pixels each way and many colours (not blank)."""
    from PIL import Image

    assert path.read_bytes()[:8] == PNG, path
    image = Image.open(path).convert("RGB")
    assert min(image.size) > 300
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50


def wrote(result, *paths) -> None:
    assert result.exit_code == 0, result.stderr
    for path in paths:
        assert f"Wrote {path}" in result.stderr


@pytest.fixture(scope="module")
def bert(tiny_models) -> str:
    return str(tiny_models["BERT"])


def test_inspect_file_draws_attention_and_folder_draws_every_picture(bert, tmp_path):
    picture = tmp_path / "pic.png"
    result = run_cli("inspect", "the cat sat", "-m", bert, "-o", str(picture))
    wrote(result, picture)
    assert result.stdout == ""  # like --plot: the picture instead of the table
    assert_drawn_png(picture)
    folder = tmp_path / "figs"
    result = run_cli("inspect", "the cat sat", "-m", bert, "-o", str(folder))
    names = ["attention", "positions", "embeddings"]
    wrote(result, *(folder / f"{name}.png" for name in names))
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.png" for name in names)


def test_positions_file_draws_phi_and_folder_adds_the_bias(tmp_path):
    picture = tmp_path / "phi.png"
    result = run_cli("positions", "--scheme", "alibi", "--length", "24", "-o", str(picture))
    wrote(result, picture)
    assert_drawn_png(picture)
    folder = tmp_path / "figs"
    result = run_cli("positions", "--scheme", "alibi", "--length", "24", "-o", str(folder))
    wrote(result, folder / "phi.png", folder / "bias.png")
    for name in ("phi.png", "bias.png"):
        assert_drawn_png(folder / name)
    result = run_cli("positions", "--scheme", "rotary", "--dim", "16", "--length", "24", "-o", str(tmp_path / "r"))
    wrote(result, tmp_path / "r" / "phi.png")  # rotary adds no bias: Φ only, and no bias.png
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["phi.png"]
    pdf = tmp_path / "phi.pdf"
    wrote(run_cli("positions", "--scheme", "sinusoidal", "--length", "24", "-o", str(pdf)), pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_ablate_file_draws_similarity_and_folder_draws_both(bert, tmp_path):
    picture = tmp_path / "a.png"
    result = run_cli("ablate", "the cat sat on the mat", "-m", bert, "-o", str(picture))
    wrote(result, picture)
    assert result.stdout == ""
    assert_drawn_png(picture)
    folder = tmp_path / "figs"
    result = run_cli("ablate", "the cat sat on the mat", "-m", bert, "-o", str(folder))
    wrote(result, folder / "similarity.png", folder / "attention.png")


def test_compare_and_stats_draw_into_a_folder(bert, tiny_models, tmp_path):
    folder = tmp_path / "figs"
    result = run_cli("compare", "the cat sat", "-m", bert, "-m", str(tiny_models["GPT-2"]), "-o", str(folder))
    wrote(result, folder / "compare.png")
    assert_drawn_png(folder / "compare.png")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\non the mat today\n", encoding="utf-8")
    result = run_cli("stats", str(corpus), "-m", bert, "-o", str(folder))
    wrote(result, folder / "stats.png")
    assert_drawn_png(folder / "stats.png")


def test_nothing_exits_0_having_written_nothing(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("ablate", "", "-m", bert, "-o", "a.png")  # no text: nothing to draw is an error
    assert result.exit_code == 1 and "a.png was not written" in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    result = run_cli("stats", str(empty), "-m", bert, "-o", "s.png")
    assert result.exit_code == 1 and "s.png was not written" in result.stderr
    for command in (["inspect", "x"], ["positions", "--scheme", "alibi"], ["ablate", "x"]):
        result = run_cli(*command, "-m", bert, "-o", "pic.txt") if command[0] != "positions" else None
        result = result or run_cli(*command, "-o", "pic.txt")
        assert result.exit_code == 2 and "use .png, .svg, .pdf or .html" in result.stderr, command
    result = run_cli("positions", "--scheme", "alibi", "--plot", "bias", "-o", "figs")
    assert result.exit_code == 2 and "draws one picture" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_phi_picture_draws_the_closed_form(tmp_path):
    """ALiBi with 8 heads (Press et al. 2022): slopes 2^-1 ... 2^-8, Φ(i, j) = −mean(m)·|i − j|."""
    from posemb_cli.positions import analyse_scheme
    from posemb_cli.render.figures.positions import plot_phi

    analysis = analyse_scheme("alibi", 24, heads=8)
    data = plot_phi(analysis, tmp_path / "phi.png", dpi=60)
    offsets = np.abs(np.subtract.outer(np.arange(24), np.arange(24)))
    np.testing.assert_allclose(data.arrays["phi"], -np.mean(2.0 ** -np.arange(1, 9)) * offsets, atol=1e-9)
    np.testing.assert_allclose(np.asarray(data.drawn["images"][0], dtype=float), data.arrays["phi"], atol=1e-9)
