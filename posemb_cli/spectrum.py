"""`posemb positions -m MODEL --spectrum CORPUS`: which rotary frequency pairs each head's queries and keys use.

Barbero et al., "Round and Round We Go! What makes Rotary Positional Encodings useful?" (ICLR 2025), §5: RoPE
rotates the 2-dimensional chunk of pair i of a query or key by position · θ_i, which leaves its 2-norm unchanged; the
mean norm of the chunk over many tokens says how much a head uses that frequency. Pairs whose wavelength 2π/θ_i is
longer than the training length never turn a full circle within it: they carry little position and act as
"semantic channels" (the paper finds Gemma's queries concentrate there).

Per layer, head and rotary pair i: query_norm[h][i] = mean over every token of every text of ‖(q_i, q_{i+d/2})‖₂,
where q is the query the model hands its attention (after its projections, q_norm where it has one, and its own
RoPE: posemb's backend receives it, `runner.run(qk=...)`), d the rotated dimensions and pairs in transformers'
rotate_half layout (dimension i with i + d/2). key_norm likewise, per KV head (GQA/MQA: one row per key head).
Partial rotary: only the first d rotated dimensions count. The wavelengths are 2π/inv_freq from the model's config
through transformers' own rope functions (`schemes.rotary.rope_layer_types`), so scaling is the model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batches import chunks
from .core import tokenize
from .errors import PosembError, PosembUsageError
from .lines import check_corpus, decode_lines, open_lines
from .models import LoadedModel

BATCH = 8  # texts per forward
TOP = 3  # pairs named per layer in the table


@dataclass
class LayerSpectrum:
    layer: int
    rope_type: str
    training_length: int | None
    wavelength: np.ndarray  # (pairs,)
    query_norm: np.ndarray  # (heads, pairs)
    key_norm: np.ndarray  # (kv_heads, pairs)

    @property
    def turns(self) -> np.ndarray | None:
        """Per pair: whether it turns a full circle within the training length."""
        return None if self.training_length is None else self.wavelength <= self.training_length

    def slow_share(self, norms: np.ndarray) -> float | None:
        """Σ over heads and pairs that never turn of the mean norm / Σ over all pairs (None: no training length)."""
        turns = self.turns
        total = float(norms.sum())
        if turns is None or not total:
            return None
        return float(norms[:, ~turns].sum()) / total

    def top_pairs(self, count: int = TOP) -> list[int]:
        """The pairs with the largest head-mean query norm, largest first."""
        return [int(i) for i in np.argsort(-self.query_norm.mean(axis=0), kind="stable")[:count]]

    def to_json(self) -> dict[str, Any]:
        turns = self.turns
        return {
            "layer": self.layer,
            "rope_type": self.rope_type,
            "training_length": self.training_length,
            "wavelength": [float(w) for w in self.wavelength],
            "turns": None if turns is None else [bool(t) for t in turns],
            "query_share_slow": self.slow_share(self.query_norm),
            "key_share_slow": self.slow_share(self.key_norm),
            "top_pairs": self.top_pairs(),
            "query_norm": self.query_norm.tolist(),
            "key_norm": self.key_norm.tolist(),
        }


@dataclass
class Spectrum:
    model: str
    corpus: str
    texts: int
    tokens: int
    heads: int
    kv_heads: int
    head_dim: int
    rotary_dim: int
    layers: list[LayerSpectrum]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "spectrum": "rotary pair norms (Barbero et al., ICLR 2025)",
            "model": self.model,
            "corpus": self.corpus,
            "texts": self.texts,
            "tokens": self.tokens,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "rotary_dim": self.rotary_dim,
            "pairs": self.rotary_dim // 2,
            "layout": "rotate_half",
            "layers": [layer.to_json() for layer in self.layers],
            "notes": self.notes,
            "warnings": self.warnings,
        }


def check_model(loaded: LoadedModel) -> None:
    """A one-line error for a model --spectrum cannot read: not rotary, or attention outside posemb's backend."""
    from . import runner

    info = loaded.info
    if info.position_scheme.split("+")[0] != "rotary":
        raise PosembUsageError(f"--spectrum needs a rotary model; {info.name} is {info.position_scheme}")
    if not runner.uses_backend(loaded):
        raise PosembError(
            f"--spectrum reads q and k in posemb's attention backend, which {info.family} attention does not go "
            "through (it keeps transformers' eager path)"
        )


def spectrum(loaded: LoadedModel, corpus: str, encoding_errors: str = "strict") -> Spectrum:
    """The per-pair query and key norms of `loaded` over every non-empty line of `corpus` (`-`: stdin)."""
    import torch

    from . import runner
    from .schemes.rotary import rope_layer_types

    check_model(loaded)
    check_corpus(corpus)
    info = loaded.info
    module = loaded.model.get_submodule(loaded.family.rotary_embedding or "")
    kinds = rope_layer_types(loaded.model.config, type(module))

    def kind_of(layer: int) -> Any:
        return next((kind for kind in kinds if layer in kind.layers), kinds[0])

    sums: dict[int, list[Any]] = {}
    shape: dict[str, int] = {}
    tokens = texts = truncated = 0
    real: Any = None

    def on_qk(layer: int, query: Any, key: Any) -> None:
        rotated = kind_of(layer).dim
        half = rotated // 2
        if query.shape[2] != real.shape[1] or rotated > query.shape[-1]:
            raise PosembError(f"{info.name}: the query of layer {layer} does not have the shape --spectrum expects")
        shape.update(heads=query.shape[1], kv_heads=key.shape[1], head_dim=query.shape[-1])
        weight = real[:, None, :, None].double()
        out = []
        for tensor in (query, key):
            chunk = tensor[..., :rotated].double()
            norm = torch.sqrt(chunk[..., :half] ** 2 + chunk[..., half:rotated] ** 2)
            out.append((norm * weight).sum(dim=(0, 2)).cpu())
        if layer in sums:
            sums[layer] = [a + b for a, b in zip(sums[layer], out, strict=True)]
        else:
            sums[layer] = out

    stream, name = open_lines(corpus)
    limit = info.max_positions
    size = BATCH if loaded.family.padding_free(loaded.model.config) else 1  # as every command batches
    with stream:
        lines = (line for _, line in decode_lines(stream, name, encoding_errors) if line.strip())
        for batch in chunks(lines, size):
            encoding = tokenize(loaded.tokenizer, batch, truncation=limit is not None, max_length=limit)
            ids = encoding["input_ids"]
            truncated += sum(limit is not None and len(row) >= limit for row in ids)
            length = max(len(row) for row in ids)
            pad = loaded.tokenizer.pad_token_id or 0
            input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), length), dtype=torch.long)
            for b, row in enumerate(ids):
                input_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[b, : len(row)] = 1
            real = mask.bool().to(loaded.device)
            inputs = {"input_ids": input_ids.to(loaded.device), "attention_mask": mask.to(loaded.device)}
            runner.run(loaded, inputs, qk=on_qk)
            tokens += int(mask.sum())
            texts += len(ids)
    if not texts:
        raise PosembError(f"{name} has no text (no non-empty line)")
    layers = []
    for layer in range(info.layers):
        kind = kind_of(layer)
        query, key = (s.numpy() / tokens for s in sums[layer])
        wavelength = 2 * math.pi / np.asarray(kind.inv_freq, dtype=float)
        layers.append(LayerSpectrum(layer, kind.rope_type, kind.original_max_positions, wavelength, query, key))
    result = Spectrum(
        info.name, name, texts, tokens, shape["heads"], shape["kv_heads"], shape["head_dim"], kinds[0].dim, layers
    )
    if shape["kv_heads"] < shape["heads"]:
        result.notes.append(
            f"grouped-query attention: key norms are per KV head ({shape['kv_heads']} key heads for "
            f"{shape['heads']} query heads)"
        )
    if kinds[0].dim < shape["head_dim"]:
        result.notes.append(f"partial rotary: {kinds[0].dim} of {shape['head_dim']} dimensions rotate; pairs are those")
    if any(kind.attention_factor != 1 for kind in kinds):
        result.notes.append(
            f"{kinds[0].rope_type}: the model's RoPE scales cos and sin by attention_factor "
            f"{kinds[0].attention_factor:.4g}, so the norms include that factor"
        )
    if any(kind.rope_type == "dynamic" for kind in kinds):
        result.notes.append("dynamic NTK: wavelengths at the training length; longer texts rotate with a larger base")
    if truncated:
        result.warnings.append(f"{truncated} of {texts} text(s) were cut to {limit} tokens ({info.name}'s maximum)")
    return result
