"""Model-family registry: the one place that knows where each architecture keeps its embeddings.

Supporting a new architecture is one `Family` entry here. Module paths are relative to the base model
that `transformers.AutoModel` returns (e.g. `BertModel`, `GPT2Model`, `LlamaModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POSITION_SCHEMES = ("learned_absolute", "sinusoidal", "rotary", "alibi", "relative_bucket", "none", "unknown")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    scheme: str
    token_embedding: str
    position_embedding: str | None = None  # module whose input ids are the position ids
    segment_embedding: str | None = None  # token-type embedding module
    rotary_embedding: str | None = None  # module called with position_ids= (rotary models)
    position_offset: int = 0  # RoBERTa-style models start position ids at padding_idx + 1
    position_table: str | None = None  # where the learned table lives, for reports
    causal: bool = False
    # Each layer's self-attention module, `{layer}` = layer index from 0. Its forward returns (output, weights) with
    # eager attention; `stats` hooks it to reduce one layer's maps at a time. None: `stats` cannot run the family.
    attention_module: str | None = None

    def position_scheme(self, config: Any) -> str:
        # DistilBERT can be trained with a frozen sinusoidal table instead of a learned one.
        if getattr(config, "sinusoidal_pos_embds", False):
            return "sinusoidal"
        return self.scheme

    def max_positions(self, config: Any) -> int | None:
        for key in ("max_position_embeddings", "n_positions"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                offset = (getattr(config, "pad_token_id", 0) or 0) + 1 if self.position_offset else 0
                return value - offset
        return None


_BERT_LIKE = dict(
    token_embedding="embeddings.word_embeddings",
    position_embedding="embeddings.position_embeddings",
    segment_embedding="embeddings.token_type_embeddings",
    position_table="embeddings.position_embeddings",
    attention_module="encoder.layer.{layer}.attention.self",
)

FAMILIES: tuple[Family, ...] = (
    Family("BERT", ("bert",), "learned_absolute", **_BERT_LIKE),
    Family("ELECTRA", ("electra",), "learned_absolute", **_BERT_LIKE),
    Family(
        "RoBERTa",
        ("roberta", "xlm-roberta", "camembert"),
        "learned_absolute",
        position_offset=1,
        **_BERT_LIKE,
    ),
    Family(
        "DistilBERT",
        ("distilbert",),
        "learned_absolute",
        token_embedding="embeddings.word_embeddings",
        position_embedding="embeddings.position_embeddings",
        position_table="embeddings.position_embeddings",
        attention_module="transformer.layer.{layer}.attention",
    ),
    Family(
        "GPT-2",
        ("gpt2",),
        "learned_absolute",
        token_embedding="wte",
        position_embedding="wpe",
        position_table="wpe",
        causal=True,
        attention_module="h.{layer}.attn",
    ),
    Family(
        "LLaMA",
        ("llama", "mistral", "qwen2"),
        "rotary",
        token_embedding="embed_tokens",
        rotary_embedding="rotary_emb",
        causal=True,
        attention_module="layers.{layer}.self_attn",
    ),
    Family(
        "BLOOM",
        ("bloom",),
        "alibi",
        token_embedding="word_embeddings",
        causal=True,
        attention_module="h.{layer}.self_attention",
    ),
)

_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def family_for(model_type: str | None) -> Family | None:
    return _BY_TYPE.get(model_type or "")


def scheme_for_config(config: Any) -> str:
    family = family_for(getattr(config, "model_type", None))
    return family.position_scheme(config) if family else "unknown"
