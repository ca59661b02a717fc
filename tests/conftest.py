"""Tiny random models of each family, built from configs and saved to a temp folder (the same loading path as a
real local model). Tokenizers: the bundled model's WordPiece for BERT-like models, a byte-level BPE trained here
for the others."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from posemb_cli.models import enable_load_cache
from posemb_cli.registry import FAMILIES as REGISTRY_FAMILIES

# Set before torch or numpy is imported (nothing above imports them): one intra-op thread. The models here are tiny
# or small, so threads gain nothing, and on a 2-core machine OpenMP workers waiting for a busy core make each op take
# milliseconds. The real processes that tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("COLUMNS", "200")
# Commands run in this process, and none starts a server (the first command on a machine would: auto-start); the real
# processes that tests start inherit it. tests/test_serve.py starts its own, in a temp XDG_RUNTIME_DIR, and stops it.
os.environ["POSEMB_SERVER"] = "off"
# Each model folder is loaded once per test run: later load() calls (the CLI run in-process included) get the same
# tokenizer and model back. No test changes a loaded model; one that must would load a copy of the folder.
enable_load_cache()

# transformers 5.25 routes Falcon's attention through AttentionInterface (posemb's backend); before: Falcon's own code
FALCON_ON_INTERFACE = tuple(int(part) for part in metadata.version("transformers").split(".")[:2]) >= (5, 25)

CORPUS = [
    "The cat sat on the mat.",
    "Position matters, and so does order!",
    "Attention is all you need; embeddings add up.",
    "A quick brown fox jumps over the lazy dog 12345 times.",
    "transformers encode position with learned tables, sines, rotations or biases",
]


@dataclass(frozen=True)
class Tiny:
    """One tiny random model: its transformers model type, its tokenizer kind and its config (vocab_size is added
    from the tokenizer). Tokenizer kinds: "wordpiece" = the bundled model's; the others are a byte-level BPE trained
    here on CORPUS: "roberta" (<s> A </s>), "bos" (<s> A) and "plain" (no special tokens, no pad token: posemb must
    cope, as with the real GPT-2)."""

    model_type: str
    tokenizer: str
    config: dict[str, Any]


# One row per registry family (posemb_cli.registry.FAMILIES, keyed by Family.name): a new family is covered by its
# registry entry plus one row here (test_every_family_has_a_tiny_model checks that none is missing).
_SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
_IDS = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)  # the BPE tokenizer's <s>, </s>, <pad>
_DECODER = dict(_SIZE, num_key_value_heads=2, max_position_embeddings=64, **_IDS)
TINY: dict[str, Tiny] = {
    "BERT": Tiny("bert", "wordpiece", dict(_SIZE, max_position_embeddings=64)),
    "ELECTRA": Tiny("electra", "wordpiece", dict(_SIZE, embedding_size=16, max_position_embeddings=64)),
    "RoBERTa": Tiny(
        "roberta",
        "roberta",
        dict(_SIZE, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1),
    ),
    "DistilBERT": Tiny(
        "distilbert", "wordpiece", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
    ),
    "GPT-2": Tiny(
        "gpt2", "plain", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=2)
    ),
    "LLaMA": Tiny("llama", "bos", _DECODER),
    "BLOOM": Tiny("bloom", "bos", dict(hidden_size=32, n_layer=2, n_head=4, **_IDS)),
    "Qwen 3": Tiny("qwen3", "bos", dict(_DECODER, head_dim=8)),
    "Phi-3": Tiny(  # LongRoPE: its own short and long factor per rotary pair (head dim 8: 4 pairs)
        "phi3",
        "bos",
        dict(
            _DECODER,
            original_max_position_embeddings=32,
            rope_parameters=dict(
                rope_type="longrope",
                rope_theta=10000.0,
                short_factor=[1.0, 1.1, 1.3, 1.6],
                long_factor=[2.0, 3.0, 5.0, 8.0],
                original_max_position_embeddings=32,
            ),
        ),
    ),
    "Gemma 3": Tiny(  # one local (sliding) and one global layer, with their own bases
        "gemma3_text",
        "bos",
        dict(_DECODER, head_dim=8, sliding_window=16, layer_types=["sliding_attention", "full_attention"]),
    ),
    "GPT-NeoX": Tiny("gpt_neox", "bos", dict(_SIZE, max_position_embeddings=64, rotary_pct=0.5, **_IDS)),
    "Falcon": Tiny(
        "falcon",
        "bos",
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, **_IDS),
    ),
    "OPT": Tiny(
        "opt",
        "bos",
        dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37, max_position_embeddings=64, **_IDS
        ),
    ),
    "ALBERT": Tiny("albert", "wordpiece", dict(_SIZE, embedding_size=16, max_position_embeddings=64)),
    "ModernBERT": Tiny(
        "modernbert",
        "wordpiece",
        dict(
            _SIZE,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=101,
            eos_token_id=102,
            cls_token_id=101,
            sep_token_id=102,
            global_attn_every_n_layers=2,
            local_attention=16,
        ),
    ),
    "MPNet": Tiny(
        "mpnet", "roberta", dict(_SIZE, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    ),
    "DeBERTa": Tiny(
        "deberta-v2",
        "wordpiece",
        dict(
            _SIZE,
            max_position_embeddings=64,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            share_att_key=True,  # as DeBERTa-v3
            norm_rel_ebd="layer_norm",
        ),
    ),
    "T5": Tiny(
        "t5",
        "plain",
        dict(
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            pad_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        ),
    ),
}
FAMILIES = tuple(family.name for family in REGISTRY_FAMILIES)  # parametrize family-wide tests over this


def _bpe(special_tokens: list[str]):
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS * 20, vocab_size=400, min_frequency=1, special_tokens=special_tokens)
    return trainer._tokenizer


def _tokenizer(kind: str):
    import transformers
    from tokenizers import processors

    from posemb_cli.models import bundled_model_path

    if kind == "wordpiece":
        return transformers.AutoTokenizer.from_pretrained(str(bundled_model_path()))
    inner = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if kind == "roberta":
        inner.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        names.update(cls_token="<s>", sep_token="</s>", pad_token="<pad>", mask_token="<mask>")
    elif kind == "bos":
        inner.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
        )
        names.update(pad_token="<pad>")
    elif kind != "plain":
        raise ValueError(kind)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=inner, **names)


def build_tiny_model(family: str, folder: Path, seed: int = 0) -> Path:
    """The tiny model of a registry family (a key of TINY), saved to `folder` like a downloaded model."""
    import torch
    import transformers

    row = TINY[family]
    torch.manual_seed(seed)
    tokenizer = _tokenizer(row.tokenizer)
    config = transformers.AutoConfig.for_model(row.model_type, vocab_size=len(tokenizer), **row.config)
    model = transformers.AutoModel.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


_tiny_folders: dict[str, Path] = {}
_tiny_built = threading.Event()


class TinyModels(dict):
    """Family name -> folder. A registry family without a row in TINY fails the tests that use it, by name."""

    def __missing__(self, family: str) -> Path:
        pytest.fail(f"no tiny model for the registry family {family!r}: add a row for it to TINY in tests/conftest.py")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folder of each family's tiny model, keyed by registry family name ("BERT", "GPT-2", ...)."""
    root = tmp_path_factory.mktemp("tiny")
    for family in FAMILIES:
        if family in TINY:
            _tiny_folders[family] = build_tiny_model(family, root / TINY[family].model_type)
    _tiny_built.set()
    return TinyModels(_tiny_folders)


def tiny_model_folder(family: str) -> Path:
    """For a job of an `early` test marked tiny_models=True: the folder, once the tiny_models fixture has built it."""
    _tiny_built.wait()
    return _tiny_folders[family]


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    from posemb_cli.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def bundled():
    """The bundled model as posemb loads it (`load(None)`), once per test run; no test changes it."""
    from posemb_cli.models import load

    return load(None)


# ---------------------------------------------------------------- the independent reference: transformers directly
#
# The numbers posemb shows are checked against transformers called here by hand, never through posemb_cli. A folder
# is read once per test run (tokenizer and eager model); no test changes what it gets back.
_transformers_cache: dict[tuple[str, str], tuple[Any, Any]] = {}


def transformers_model(path, auto: str = "AutoModel"):
    """(tokenizer, model) of a folder, loaded by transformers itself with eager attention, in eval mode. `auto`: the
    transformers Auto class (e.g. "AutoModelForCausalLM")."""
    import transformers

    key = (str(path), auto)
    if key not in _transformers_cache:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        model = getattr(transformers, auto).from_pretrained(str(path), attn_implementation="eager").eval()
        _transformers_cache[key] = tokenizer, model
    return _transformers_cache[key]


def transformers_run(path, text: str, pair: str | None = None, offsets: bool = False):
    """transformers' own forward pass on one text (or pair): (tokenizer, model, encoding, outputs with attentions and
    hidden states). T5: its encoder alone reads the text. offsets=True: the encoding keeps `offset_mapping`, which
    is not passed to the model."""
    import torch

    tokenizer, model = transformers_model(path)
    if model.config.is_encoder_decoder:
        model = model.get_encoder()
    encoding = tokenizer(text, pair, return_tensors="pt", return_offsets_mapping=offsets)
    inputs = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
    if "token_type_ids" in encoding and hasattr(getattr(model, "embeddings", None), "token_type_embeddings"):
        inputs["token_type_ids"] = encoding["token_type_ids"]
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    return tokenizer, model, encoding, out


def run_cli(*args: str, input: str | None = None):
    """posemb in-process, as a user calls it; stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from posemb_cli.cli import app

    return CliRunner().invoke(app, list(args), input=input)


def run_posemb(*args: str, input: bytes | None = None, timeout: float = 300):
    """posemb as a real subprocess, for pipes and stdin."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "posemb_cli", *args], input=input, capture_output=True, timeout=timeout
    )


# ---------------------------------------------------------------- real processes, started early
#
# A test marked `@pytest.mark.early(job=...)` checks a real posemb process (a shell pipe, stdin, Ctrl-C, a terminal, a
# clean interpreter), which spends seconds importing torch and transformers. `job` (no arguments, no fixtures: it
# makes its own temp folder) starts and talks to the process and returns what the test checks; the test receives that
# from the `early` fixture. The jobs start when collection ends, in a background thread, so that they run on the
# second CPU core while the in-process tests run on the first; the marked tests run last.


class EarlyJobs:
    """The jobs of the selected `early` tests. A background thread runs them from the front of the queue; a test
    whose job is not done meanwhile runs jobs from the back of the queue itself (its own first), so that both cores
    stay busy until the queue is empty."""

    def __init__(self, jobs: dict[Callable[[], Any], bool]) -> None:  # job -> needs the tiny models
        self._lock = threading.Lock()
        self._pending = list(jobs)
        self._needs_tiny = dict(jobs)
        self._futures: dict[Callable[[], Any], Future] = {job: Future() for job in jobs}
        threading.Thread(target=self._work, name="early-jobs", daemon=True).start()

    def _take(self, wanted: Callable[[], Any] | None = None) -> Callable[[], Any] | None:
        with self._lock:
            if wanted in self._pending:
                self._pending.remove(wanted)
                return wanted
            if wanted is None:  # the background thread: the first job
                return self._pending.pop(0) if self._pending else None
            for job in reversed(self._pending):  # a waiting test: the last job that can run now
                if not self._needs_tiny[job] or _tiny_built.is_set():
                    self._pending.remove(job)
                    return job
            return None

    def _run(self, job: Callable[[], Any]) -> None:
        future = self._futures[job]
        try:
            future.set_result(job())
        except BaseException as exc:
            future.set_exception(exc)
            if not isinstance(exc, Exception):  # Ctrl-C of the test run itself
                raise

    def _work(self) -> None:
        while (job := self._take()) is not None:
            self._run(job)

    def result(self, job: Callable[[], Any]) -> Any:
        future = self._futures.get(job)
        if future is None:
            return job()
        while not future.done() and (other := self._take(job)) is not None:
            self._run(other)
        return future.result()  # the background thread is running it

    def close(self) -> None:
        with self._lock:
            self._pending.clear()


_early_jobs: EarlyJobs | None = None


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "early(job, tiny_models=False, first=False): run job (a real process) in the background from the session "
        "start; first=True: before the other jobs",
    )


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("early")]
    items[:] = [item for item in items if not item.get_closest_marker("early")] + marked


def pytest_collection_finish(session):
    global _early_jobs
    marks = [item.get_closest_marker("early") for item in session.items]
    marks = [m for m in marks if m is not None]
    if marks and not session.config.option.collectonly:
        # jobs that wait for the tiny models go last, when the in-process tests have long built them
        marks.sort(key=lambda m: (not m.kwargs.get("first"), bool(m.kwargs.get("tiny_models"))))
        _early_jobs = EarlyJobs({m.kwargs["job"]: bool(m.kwargs.get("tiny_models")) for m in marks})


def pytest_sessionfinish(session):
    if _early_jobs is not None:
        _early_jobs.close()
    _tiny_built.set()  # a job still waiting for tiny models that were never built ends (KeyError), not hangs


@pytest.fixture
def early(request):
    """What this test's `early` job returned (its exception is raised here)."""
    mark = request.node.get_closest_marker("early")
    if mark.kwargs.get("tiny_models"):
        request.getfixturevalue("tiny_models")  # so that the job's wait for them ends
    job = mark.kwargs["job"]
    return _early_jobs.result(job) if _early_jobs is not None else job()
