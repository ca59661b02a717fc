"""DeBERTa's disentangled attention (He et al. 2021, "DeBERTa", §3.1): relative positions enter the attention logits
through two terms, content-to-position (c2p: the query's content against the key's relative position embedding) and
position-to-content (p2c), on log buckets of the distance (`position_buckets`, `max_relative_positions`).

No vector is added, and the terms depend on the content. posemb measures them on a probe: `length` ordinary words
of the vocabulary (seed 0), run through the model; the first layer's `disentangled_attention_bias` (transformers' own
code) is called with c2p alone and with p2c alone on that layer's queries, keys and relative embeddings; for each
head and offset j − i, the term is averaged over the query/key pairs at that offset (one diagonal). The bias per head
is c2p + p2c; Phi is its mean over heads, laid out as Phi(i, j) = bias(j − i).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import runner
from ..errors import PosembError
from .base import PositionAnalysis, PositionPicture, PositionScheme, probe_word_ids, toeplitz

if TYPE_CHECKING:
    from ..models import LoadedModel

PROBE_SEED = 0


def by_offset(score: np.ndarray) -> np.ndarray:
    """(heads, n, n) -> (heads, 2n − 1): the mean of each diagonal j − i = −(n − 1) .. n − 1."""
    n = score.shape[-1]
    return np.stack([np.diagonal(score, offset=o, axis1=-2, axis2=-1).mean(axis=-1) for o in range(-(n - 1), n)], -1)


def bucket_map(loaded: LoadedModel, length: int) -> dict[str, Any]:
    """DeBERTa's relative position of each offset, as the model computes it (transformers' `build_relative_position`
    with the first layer's `position_buckets` and `max_relative_positions`): `offsets` are key − query (posemb's
    convention), `buckets` DeBERTa's bucketed query − key."""
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    family = loaded.family
    attention = family.module(
        loaded.model, family.attention_module.format(layer=0) if family.attention_module else None
    )
    buckets = int(getattr(attention, "position_buckets", -1))
    maximum = int(getattr(attention, "max_relative_positions", -1))
    offsets = torch.arange(-(length - 1), length)
    relative = -offsets  # DeBERTa: query − key
    if buckets > 0 and maximum > 0:
        relative = make_log_bucket_position(relative, buckets, maximum)
    return {
        "offsets": offsets.tolist(),
        "buckets": relative.long().tolist(),
        "position_buckets": buckets,
        "max_relative_positions": maximum,
    }


class Disentangled(PositionScheme):
    name = "disentangled"

    def meaning(self, metric: str) -> str:
        return "Φ(i, j) = c2p + p2c of the first layer at offset j − i on a probe text (mean over heads)"

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        terms = self.terms(loaded, length)
        per_head = terms["c2p"] + terms["p2c"]  # (heads, 2 * length - 1)
        phi = toeplitz(per_head.mean(axis=0), length)
        path = loaded.family.attention_module.format(layer=0) if loaded.family.attention_module else "?"
        source = f"{path}.disentangled_attention_bias on {length} probe words (seed {PROBE_SEED})"
        analysis = self.analysis(loaded.info.name, source, length, "bias", phi, window)
        offsets = list(range(-(length - 1), length))
        analysis.bias = {"offsets": offsets, "per_head": per_head.tolist(), **{k: v.tolist() for k, v in terms.items()}}
        analysis.head_matrices = np.stack([toeplitz(row, length) for row in per_head])
        analysis.exports["buckets"] = bucket_map(loaded, length)
        analysis.notes.append(
            "DeBERTa adds no position vector: c2p and p2c depend on the content, so they are measured on probe words "
            "and averaged over the pairs at each offset"
        )
        return analysis

    def terms(self, loaded: LoadedModel, length: int) -> dict[str, np.ndarray]:
        """c2p and p2c of the first layer on the probe, each (heads, 2 * length − 1) by offset j − i."""
        import torch

        family, model = loaded.family, loaded.model
        attention = family.module(model, family.attention_module.format(layer=0) if family.attention_module else None)
        if attention is None or not hasattr(attention, "disentangled_attention_bias"):
            raise PosembError(f"{loaded.info.name} has no disentangled attention in its first layer")
        vocab_size = getattr(model.config, "vocab_size", None) or len(loaded.tokenizer)
        ids = probe_word_ids(loaded.tokenizer, vocab_size, length, PROBE_SEED)
        ids = (ids * (length // len(ids) + 1))[:length]  # a small vocabulary repeats its words
        captured: list[tuple[Any, ...]] = []
        original = attention.disentangled_attention_bias

        def record(*args: Any) -> Any:
            if not captured:
                captured.append(args)
            return original(*args)

        attention.disentangled_attention_bias = record
        try:
            input_ids = torch.tensor([ids], device=loaded.device)
            inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            runner.run(loaded, inputs, own_attention=True)  # record() keeps the first layer's arguments
        finally:
            del attention.disentangled_attention_bias
        if not captured:
            raise PosembError(f"{loaded.info.name} computed no relative attention (relative_attention is off)")
        kinds, heads = list(attention.pos_att_type), attention.num_attention_heads
        out = {}
        try:
            for term in ("c2p", "p2c"):
                attention.pos_att_type = [term] if term in kinds else []
                with torch.inference_mode():
                    score = original(*captured[0])
                score = score if torch.is_tensor(score) else torch.zeros(heads, length, length)
                out[term] = by_offset(score.reshape(-1, heads, length, length)[0].double().cpu().numpy())
        finally:
            attention.pos_att_type = kinds
        return out

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        return self.bias_picture(
            analysis,
            f"DeBERTa position terms c2p + p2c of positions 0–{analysis.length - 1}",
            f"no position vectors (relative embeddings enter the attention logits): {analysis.source}",
            "position term of the attention logit",
        )


SCHEMES = (Disentangled(),)
