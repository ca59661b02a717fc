"""Model-family registry: every fact posemb knows about an architecture, in one place.

Supporting a new architecture is one `Family` entry here (plus, for a new position scheme, one class in `schemes/`).
Module paths are relative to the base model that `transformers.AutoModel` returns (e.g. `BertModel`, `GPT2Model`,
`LlamaModel`). Configs may be transformers config objects or plain namespaces read from config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

# Config keys of each size, in the order they are tried (BERT-style, GPT-2-style, DistilBERT-style names).
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    "heads": ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    "hidden_size": ("hidden_size", "n_embd", "dim", "d_model"),
    "max_positions": ("max_position_embeddings", "n_positions"),
    "vocab_size": ("vocab_size",),
}
# The sizes posemb accepts (inclusive), checked before a model is built (models.check_config): a config past them is
# damaged or hostile (num_hidden_layers=100000 takes minutes to build; a negative size breaks deep inside torch).
# The largest released models stay well inside: 126 layers, 128 heads, hidden 16384, 10M positions, 262k tokens.
SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "layers": (1, 1024),
    "heads": (1, 1024),
    "hidden_size": (1, 65536),
    "max_positions": (1, 2**24),
    "vocab_size": (1, 2**22),
}


def config_value(config: Any, fact: str) -> Any:
    """The first of `CONFIG_KEYS[fact]` that the config sets (None if none does)."""
    for key in CONFIG_KEYS[fact]:
        value = getattr(config, key, None)
        if value is not None:
            return value
    return None


@cache
def _transformers_version() -> tuple[int, ...]:
    from importlib import metadata

    return tuple(int(part) for part in metadata.version("transformers").split(".")[:2] if part.isdigit())


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # empty for the generic path
    scheme: str  # DESIGN.md's position scheme; see `position_scheme` for the config-dependent cases
    token_embedding: str | None  # None: the generic path captures no embedding parts
    position_embedding: str | None = None  # module whose input ids are the position ids
    segment_embedding: str | None = None  # token-type embedding module
    rotary_embedding: str | None = None  # module called with position_ids= (rotary models)
    position_table: str | None = None  # where the learned or sinusoidal table lives
    relative_bias: str | None = None  # learned relative-bucket bias (buckets, heads), e.g. T5's
    positions_after_padding: bool = False  # RoBERTa-style: position ids start at padding_idx + 1
    padding_idx: int | None = None  # the padding_idx the model's code fixes (MPNet: 1); None: config.pad_token_id
    position_ids_kwarg: str | None = None  # the position module gets its ids by this keyword (OPT), not as input
    position_id_offset: int = 0  # added to those ids to find the table row the model reads (OPT: 2)
    relative_buckets: tuple[int, int] | None = None  # (buckets, max distance) the code uses whatever the config says
    causal: bool = False
    # the model's forward argument that takes position ids (`posemb ablate`), in the convention of `position_ids_kwarg`
    # ids (the table row less `position_id_offset`); None where the scheme has none (ALiBi, T5's encoder)
    position_ids_argument: str | None = "position_ids"
    # Each layer's self-attention module, `{layer}` = layer index from 0. Its forward returns a tuple whose item
    # `attention_weights` holds the weights with eager attention; `stats` hooks it to reduce one layer's maps at a
    # time. None: `stats` asks the model for all layers' maps at once (output_attentions=True).
    attention_module: str | None = None
    attention_weights: int = 1
    attention_when_asked: bool = False  # the module returns its weights only when the model gets output_attentions
    # (config attribute, scheme when it is true; "!attribute": when false), first match wins
    scheme_rules: tuple[tuple[str, str], ...] = ()
    # ALiBi slopes as the model applies them: "m" (BLOOM: the authors' m), or "bf16(m)/sqrt(head_dim)" (Falcon: its
    # build_alibi_tensor rounds m to bfloat16, and the mask carries it divided by √head_dim)
    alibi_slope_rule: str = "m"
    # a correction posemb applies to the model's eager attention at load (`eager_fixes.FIXES`), so that the maps and
    # hidden states are those of the production (SDPA) path; None: eager already equals SDPA
    eager_fix: str | None = None
    # its attention bypasses transformers' AttentionInterface, so posemb reads transformers' eager maps, heads × N × N
    # per layer, instead of its own backend; `interface_from`: the transformers version from which it goes through
    # the interface (tests/test_backend.py checks both against the installed transformers' own test of the models)
    eager_attention: bool = False
    interface_from: tuple[int, int] | None = None

    def reads_eager(self) -> bool:
        """Whether posemb reads this family's attention from transformers' eager maps with the installed
        transformers: DeBERTa-v2, MPNet and BLOOM, and Falcon before transformers 5.25. (The version is read from
        the package metadata: `posemb models` imports no modeling code.)"""
        if not self.eager_attention:
            return False
        return self.interface_from is None or _transformers_version() < self.interface_from

    def attention_cost(self) -> str:
        """How posemb reads this family's attention, for `posemb models`: its backend, or N × N eager maps."""
        return "eager N×N" if self.reads_eager() else "posemb"

    def position_scheme(self, config: Any) -> str:
        for attribute, scheme in self.scheme_rules:
            wanted = not attribute.startswith("!")
            if bool(getattr(config, attribute.lstrip("!"), False)) == wanted:
                return scheme
        return self.scheme

    @staticmethod
    def module(model: Any, path: str | None) -> Any:
        """The submodule at `path`, or None when there is no path or this model lacks it (a config switched it off,
        e.g. DeBERTa without `position_biased_input`)."""
        if not path:
            return None
        try:
            return model.get_submodule(path)
        except AttributeError:
            return None

    def takes_segments(self, model: Any) -> bool:
        """Whether token_type_ids go to the model: the family has a segment embedding (generic path: the model's
        forward takes them)."""
        if self.model_types:
            return self.module(model, self.segment_embedding) is not None
        import inspect

        return "token_type_ids" in inspect.signature(model.forward).parameters

    def first_position_id(self, config: Any) -> int:
        """The position id of a text's first token (RoBERTa-style: padding_idx + 1; OPT: 2; otherwise 0), by the
        model's own rule: its padding_idx is the config's pad_token_id, or a fixed one (MPNet: 1, whatever the
        config says)."""
        if not self.positions_after_padding:
            return self.position_id_offset
        pad = self.padding_idx if self.padding_idx is not None else (getattr(config, "pad_token_id", 0) or 0)
        return pad + 1 + self.position_id_offset

    def forward_position_ids(self, model: Any) -> str | None:
        """The forward argument through which position ids can be given to this model, or None: ALiBi computes its
        distances from the mask and T5 from token order; on the generic path, `position_ids` if forward takes it."""
        import inspect

        if "alibi" in self.position_scheme(model.config).split("+"):
            return None
        argument = self.position_ids_argument if self.model_types else "position_ids"
        if argument is None or argument not in inspect.signature(model.forward).parameters:
            return None
        return argument

    def max_positions(self, config: Any) -> int | None:
        """Tokens a text may have: the size of the position table less the ids before the first position."""
        value = config_value(config, "max_positions")
        if isinstance(value, int) and value > 0:  # OPT's table has its 2 extra rows beyond the configured count
            return value - self.first_position_id(config) + self.position_id_offset
        return None

    def head_dim(self, config: Any) -> int:
        """Width of one attention head: the config's `head_dim`, or hidden size / heads."""
        explicit = getattr(config, "head_dim", None)
        if explicit:
            return int(explicit)
        heads = config_value(config, "heads") or 0
        return int(config_value(config, "hidden_size") or 0) // heads if heads else 0

    def padding_free(self, config: Any) -> bool:
        """Whether a text's numbers are the same in a padded batch. Not so for RoPE that picks its frequencies from
        the padded length (dynamic NTK, LongRoPE's short/long factors): such models run one text at a time."""
        parameters = getattr(config, "rope_parameters", None) or {}
        kinds = parameters.values() if all(isinstance(v, dict) for v in parameters.values()) else [parameters]
        return not any(kind.get("rope_type") in ("dynamic", "longrope") for kind in kinds if kind)

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


_BERT_LIKE: dict[str, Any] = dict(
    token_embedding="embeddings.word_embeddings",
    position_embedding="embeddings.position_embeddings",
    segment_embedding="embeddings.token_type_embeddings",
    position_table="embeddings.position_embeddings",
    attention_module="encoder.layer.{layer}.attention.self",
)

# A model type outside the registry that loads with AutoModel: tokens, attention and the embedding output only.
GENERIC = Family("generic", (), "unknown", token_embedding=None)

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
        scheme_rules=(("sinusoidal_pos_embds", "sinusoidal"),),
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
        eager_attention=True,
        token_embedding="word_embeddings",
        causal=True,
        position_ids_argument=None,
        attention_module="h.{layer}.self_attention",
    ),
)

_LLAMA_LIKE: dict[str, Any] = dict(
    token_embedding="embed_tokens",
    rotary_embedding="rotary_emb",
    causal=True,
    attention_module="layers.{layer}.self_attn",
)
FAMILIES += (
    Family("Qwen 3", ("qwen3",), "rotary", **_LLAMA_LIKE),
    Family("Phi-3", ("phi3",), "rotary", **_LLAMA_LIKE),
    Family("Gemma 3", ("gemma3_text", "gemma2", "gemma"), "rotary", **_LLAMA_LIKE),
    Family(
        "GPT-NeoX",
        ("gpt_neox",),
        "rotary",
        token_embedding="embed_in",
        rotary_embedding="rotary_emb",
        causal=True,
        attention_module="layers.{layer}.attention",
    ),
    Family(
        "Falcon",
        ("falcon",),
        "rotary",
        eager_attention=True,
        interface_from=(5, 25),
        token_embedding="word_embeddings",
        rotary_embedding="rotary_emb",
        causal=True,
        attention_module="h.{layer}.self_attention",
        scheme_rules=(("alibi", "alibi"),),
        alibi_slope_rule="bf16(m)/sqrt(head_dim)",
        eager_fix="falcon_alibi_once",  # eager adds the ALiBi bias twice before transformers 5.25 (SDPA: once)
    ),
    Family(
        "OPT",
        ("opt",),
        "learned_absolute",
        token_embedding="decoder.embed_tokens",
        position_embedding="decoder.embed_positions",
        position_table="decoder.embed_positions",
        position_ids_kwarg="position_ids",
        position_id_offset=2,
        causal=True,
        attention_module="decoder.layers.{layer}.self_attn",
    ),
    Family(
        "ALBERT",
        ("albert",),
        "learned_absolute",
        token_embedding="embeddings.word_embeddings",
        position_embedding="embeddings.position_embeddings",
        segment_embedding="embeddings.token_type_embeddings",
        position_table="embeddings.position_embeddings",
        # one attention module shared by every layer (ALBERT's parameter sharing)
        attention_module="encoder.albert_layer_groups.0.albert_layers.0.attention",
    ),
    Family(
        "ModernBERT",
        ("modernbert",),
        "rotary",
        token_embedding="embeddings.tok_embeddings",
        rotary_embedding="rotary_emb",
        attention_module="layers.{layer}.attn",
    ),
    Family(
        "MPNet",
        ("mpnet",),
        "learned_absolute+relative_bucket",
        eager_attention=True,
        token_embedding="embeddings.word_embeddings",
        position_embedding="embeddings.position_embeddings",
        position_table="embeddings.position_embeddings",
        positions_after_padding=True,
        padding_idx=1,  # MPNetEmbeddings sets self.padding_idx = 1 whatever pad_token_id is
        relative_bias="encoder.relative_attention_bias",
        relative_buckets=(32, 128),  # MPNetEncoder.compute_position_bias ignores the config's bucket count
        attention_module="encoder.layer.{layer}.attention.attn",
        attention_when_asked=True,
    ),
    Family(
        "DeBERTa",
        ("deberta-v2",),
        "disentangled",
        eager_attention=True,
        token_embedding="embeddings.word_embeddings",
        position_embedding="embeddings.position_embeddings",  # only with position_biased_input
        segment_embedding="embeddings.token_type_embeddings",  # only with type_vocab_size > 0
        position_table="embeddings.position_embeddings",
        attention_module="encoder.layer.{layer}.attention.self",
        attention_when_asked=True,
        scheme_rules=(
            ("!relative_attention", "learned_absolute"),
            ("position_biased_input", "learned_absolute+disentangled"),
        ),
    ),
    Family(
        "T5",
        ("t5", "mt5"),
        "relative_bucket",
        token_embedding="embed_tokens",  # paths inside the encoder, which posemb runs alone
        relative_bias="block.0.layer.0.SelfAttention.relative_attention_bias",
        position_ids_argument=None,
        attention_module="block.{layer}.layer.0.SelfAttention",
        attention_weights=2,  # T5Attention returns (output, position_bias, weights)
    ),
)

_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


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
