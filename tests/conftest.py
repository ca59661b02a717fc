"""Tiny random models of each family, built from configs and saved to a temp folder (the same loading path as a
real local model). Tokenizers: the bundled model's WordPiece for BERT-like models, a byte-level BPE trained here
for the others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("COLUMNS", "200")

CORPUS = [
    "The cat sat on the mat.",
    "Position matters, and so does order!",
    "Attention is all you need; embeddings add up.",
    "A quick brown fox jumps over the lazy dog 12345 times.",
    "transformers encode position with learned tables, sines, rotations or biases",
]
FAMILIES = ("bert", "roberta", "distilbert", "electra", "gpt2", "llama", "bloom")
TINY = dict(hidden=32, layers=2, heads=4, positions=64)


def _bpe(special_tokens: list[str]):
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS * 20, vocab_size=400, min_frequency=1, special_tokens=special_tokens)
    return trainer._tokenizer


def _tokenizer(family: str):
    import transformers
    from tokenizers import processors

    from posemb_cli.models import bundled_model_path

    if family in ("bert", "distilbert", "electra"):
        return transformers.AutoTokenizer.from_pretrained(str(bundled_model_path()))
    inner = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if family == "roberta":
        inner.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        names.update(cls_token="<s>", sep_token="</s>", pad_token="<pad>", mask_token="<mask>")
    elif family in ("llama", "bloom"):
        inner.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
        )
        names.update(pad_token="<pad>")
    # gpt2: no special tokens added, no pad token (posemb must cope, as with the real GPT-2)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=inner, **names)


def _config(family: str, vocab_size: int):
    import transformers as t

    h, n_layers, n_heads, n_pos = TINY["hidden"], TINY["layers"], TINY["heads"], TINY["positions"]
    common = dict(vocab_size=vocab_size)
    if family == "bert":
        return t.BertConfig(
            hidden_size=h,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=37,
            max_position_embeddings=n_pos,
            **common,
        )
    if family == "roberta":
        return t.RobertaConfig(
            hidden_size=h,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=37,
            max_position_embeddings=n_pos + 2,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            **common,
        )
    if family == "distilbert":
        return t.DistilBertConfig(
            dim=h, n_layers=n_layers, n_heads=n_heads, hidden_dim=37, max_position_embeddings=n_pos, **common
        )
    if family == "electra":
        return t.ElectraConfig(
            embedding_size=16,
            hidden_size=h,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=37,
            max_position_embeddings=n_pos,
            **common,
        )
    if family == "gpt2":
        return t.GPT2Config(
            n_embd=h, n_layer=n_layers, n_head=n_heads, n_positions=n_pos, bos_token_id=0, eos_token_id=2, **common
        )
    if family == "llama":
        return t.LlamaConfig(
            hidden_size=h,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=2,
            intermediate_size=37,
            max_position_embeddings=n_pos,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            **common,
        )
    if family == "bloom":
        return t.BloomConfig(
            hidden_size=h, n_layer=n_layers, n_head=n_heads, bos_token_id=0, eos_token_id=2, pad_token_id=1, **common
        )
    raise ValueError(family)


def build_tiny_model(family: str, folder: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = _tokenizer(family)
    config = _config(family, len(tokenizer))
    model = transformers.AutoModel.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    from posemb_cli.models import bundled_model_path

    return bundled_model_path()


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
