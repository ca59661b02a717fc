"""Model-family registry: every fact posemb knows about an architecture, in one place.

Supporting a new architecture is one `Family` entry here (plus, for a new position scheme, one class in `schemes/`).
Module paths are relative to the base model that `transformers.AutoModel` returns (e.g. `BertModel`, `GPT2Model`,
`LlamaModel`). Configs may be transformers config objects or plain namespaces read from config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Config keys of each size, in the order they are tried (BERT-style, GPT-2-style, DistilBERT-style names).
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "n_layers"),
    "heads": ("num_attention_heads", "n_head", "n_heads"),
    "hidden_size": ("hidden_size", "n_embd", "dim"),
    "max_positions": ("max_position_embeddings", "n_positions"),
}


def config_value(config: Any, fact: str) -> Any:
    """The first of `CONFIG_KEYS[fact]` that the config sets (None if none does)."""
    for key in CONFIG_KEYS[fact]:
        value = getattr(config, key, None)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    scheme: str  # DESIGN.md's position scheme; see `position_scheme` for the config-dependent cases
    token_embedding: str
    position_embedding: str | None = None  # module whose input ids are the position ids
    segment_embedding: str | None = None  # token-type embedding module
    rotary_embedding: str | None = None  # module called with position_ids= (rotary models)
    position_table: str | None = None  # where the learned or sinusoidal table lives
    relative_bias: str | None = None  # learned relative-bucket bias (buckets, heads), e.g. T5's
    positions_after_padding: bool = False  # RoBERTa-style: position ids start at padding_idx + 1
    causal: bool = False
    # Each layer's self-attention module, `{layer}` = layer index from 0. Its forward returns (output, weights) with
    # eager attention; `stats` hooks it to reduce one layer's maps at a time. None: `stats` cannot run the family.
    attention_module: str | None = None

    def position_scheme(self, config: Any) -> str:
        # DistilBERT can be trained with a frozen sinusoidal table instead of a learned one.
        if getattr(config, "sinusoidal_pos_embds", False):
            return "sinusoidal"
        return self.scheme

    def first_position_id(self, config: Any) -> int:
        """The position id of a text's first token (RoBERTa-style: padding_idx + 1; otherwise 0)."""
        return (getattr(config, "pad_token_id", 0) or 0) + 1 if self.positions_after_padding else 0

    def max_positions(self, config: Any) -> int | None:
        """Tokens a text may have: the size of the position table less the ids before the first position."""
        value = config_value(config, "max_positions")
        if isinstance(value, int) and value > 0:
            return value - self.first_position_id(config)
        return None

    def head_dim(self, config: Any) -> int:
        """Width of one attention head: the config's `head_dim`, or hidden size / heads."""
        explicit = getattr(config, "head_dim", None)
        if explicit:
            return int(explicit)
        heads = config_value(config, "heads") or 0
        return int(config_value(config, "hidden_size") or 0) // heads if heads else 0

    def rope(self, config: Any) -> dict[str, Any]:
        """Rotary base, rotated dimensions and rope type (transformers 5 ``rope_parameters``, or 4.x keys).

        dim = head_dim times ``partial_rotary_factor`` (1 if absent), rounded down to even."""
        params = getattr(config, "rope_parameters", None) or {}
        if params and "rope_theta" not in params and all(isinstance(v, dict) for v in params.values()):
            params = next(iter(params.values()))  # per-layer-type parameters: take the first (full attention)
        legacy = getattr(config, "rope_scaling", None) or {}
        base = params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
        factor = params.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) or 1.0
        rope_type = params.get("rope_type") or legacy.get("rope_type") or legacy.get("type") or "default"
        dim = int(self.head_dim(config) * factor)
        return {"base": float(base), "dim": dim - dim % 2, "rope_type": rope_type}

    def facts(self, config: Any) -> dict[str, Any]:
        """Family, type, scheme and sizes of a config: what `ModelInfo` and `posemb models` show."""
        return {
            "family": self.name,
            "type": getattr(config, "model_type", None),
            "position_scheme": self.position_scheme(config),
            "layers": int(config_value(config, "layers") or 0),
            "heads": int(config_value(config, "heads") or 0),
            "hidden_size": int(config_value(config, "hidden_size") or 0),
            "max_positions": self.max_positions(config),
        }


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
        positions_after_padding=True,
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


def describe(config: Any) -> dict[str, Any]:
    """`Family.facts` of the config's family; for a type outside the registry, the sizes its config names."""
    family = family_for(getattr(config, "model_type", None))
    if family is not None:
        return family.facts(config)
    facts: dict[str, Any] = {"family": None, "type": getattr(config, "model_type", None), "position_scheme": "unknown"}
    facts.update({fact: config_value(config, fact) for fact in CONFIG_KEYS})
    return facts
