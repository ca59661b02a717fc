"""`posemb positions`: the position scheme of a model (or of an analytic scheme) and the properties of its
proximity matrix Phi over the first N positions.

Pure computation: returns a `PositionAnalysis` that every renderer (rich table, JSON, plot) reads.

What Phi is, per scheme (the first ``length`` positions):

- learned_absolute / sinusoidal: ``Phi(i, j) = <p_i, p_j>`` (or cosine) between the position embeddings the model
  adds for positions i and j -- the rows it actually uses (RoBERTa-style models start at padding_idx + 1).
- rotary: ``Phi(i, j) = sum_k cos((i - j) * theta_k)``, the score of two copies of one vector rotated to i and j
  (Su et al. 2021, RoFormer, §3.4.3); with ``metric="cosine"`` divided by ``dim / 2``, its value at i = j.
- alibi: the bias ``-m_h * |i - j|`` per head (Press et al. 2022, §3); properties on the head mean.
- relative_bucket (T5): analytic, ``Phi(i, j) = -level(j - i)`` where ``level`` is the bucket's rank within its
  direction (0 for offset 0, growing with ``|j - i|``): the coarsened distance T5 can tell apart. With weights,
  the learned bias ``b_h(bucket(j - i))`` per head; properties on the head mean (Raffel et al. 2020, §2.1).

Properties (Wang et al., ICLR 2021, §3) come from `metrics`; the identical-word probe follows the same paper (§4):
feed N copies of one word, so that the first layer's attention differs between positions only through position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import metrics, schemes
from .errors import PosembError, PosembUsageError
from .models import LoadedModel

DEFAULT_LENGTH = 128
DEFAULT_DIM = {"sinusoidal": 512, "rotary": 64}  # Vaswani et al.'s d_model; a common rotary head dim (RoFormer)
DEFAULT_HEADS = 8  # the ALiBi paper's worked example (slopes 1/2 .. 1/256)
ANALYTIC_SCHEMES = ("sinusoidal", "rotary", "alibi", "t5", "relative_bucket")
MAX_HEAD_MATRIX_VALUES = 50_000_000  # per-head matrices beyond this are not kept (memory); the head mean still is
PROBE_BATCH = 8  # words per forward pass of the identical-word probe


@dataclass
class PositionAnalysis:
    scheme: str
    model: str | None  # model name, or None for an analytic scheme
    source: str  # where the scheme lives, e.g. "embeddings.position_embeddings (rows 2..129 of 130)"
    length: int
    metric: str  # what Phi measures: "dot", "cosine", "bias" (ALiBi, T5 with weights) or "bucket_level" (T5)
    matrix: np.ndarray  # (length, length) Phi on which `properties` are computed
    properties: dict[str, Any]
    slopes: list[float] | None = None  # ALiBi slope per head
    buckets: dict[int, int] | None = None  # T5: relative offset (key - query) -> bucket
    head_matrices: np.ndarray | None = None  # (heads, length, length): ALiBi bias or T5 learned bias per head
    probe: dict[str, Any] | None = None  # identical-word probe; see `identical_word_probe`
    probe_matrices: np.ndarray | None = None  # (heads, length, length): first-layer attention averaged over words
    regression_mae: float | None = None  # Wang & Chen (EMNLP 2020): absolute position read back from the vector
    pca: np.ndarray | None = None  # (length, 2) first two principal components of the vectors
    pca_explained: list[float] | None = None
    vectors: np.ndarray | None = None  # (length, dim) position vectors, for learned and sinusoidal schemes
    notes: list[str] = field(default_factory=list)

    def to_json(self, matrix: bool = False) -> dict[str, Any]:
        """Plain JSON types; NaN becomes null. Phi itself (and the probe's head-mean Phi) only with ``matrix``."""
        probe = None
        if self.probe is not None:
            probe = dict(self.probe)
            if matrix and self.probe_matrices is not None:
                probe["matrix"] = self.probe_matrices.mean(axis=0)
        data: dict[str, Any] = {
            "scheme": self.scheme,
            "model": self.model,
            "source": self.source,
            "length": self.length,
            "metric": self.metric,
            "properties": self.properties,
            "slopes": self.slopes,
            "buckets": None if self.buckets is None else {str(k): v for k, v in self.buckets.items()},
            "probe": probe,
            "regression_mae": self.regression_mae,
            "pca_explained_variance": self.pca_explained,
            "notes": list(self.notes),
        }
        if matrix:
            data["matrix"] = self.matrix
        return plain(data)


def plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python; NaN/inf -> None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def properties(phi: np.ndarray, window: int = 16) -> dict[str, Any]:
    """Translation invariance, symmetry and local monotonicity of Phi (Wang et al., ICLR 2021, §3).

    Each is 1 for an ideal relative-position Phi: 1 = Phi depends only on j - i; 1 = Phi(i, j) = Phi(j, i);
    1 = Phi falls steadily with |j - i| within ``window`` positions (forward: j > i, backward: j < i).
    """
    forward, backward = metrics.local_monotonicity(phi, window)
    return {
        "translation_invariance": metrics.translation_invariance(phi),
        "symmetry": metrics.symmetry(phi),
        "monotonicity": {"forward": forward, "backward": backward, "window": window},
    }


def toeplitz(values_by_offset: np.ndarray, length: int) -> np.ndarray:
    """``M[i, j] = values_by_offset[(j - i) + length - 1]`` for offsets ``-(length-1) .. length-1``."""
    positions = np.arange(length)
    return values_by_offset[positions[None, :] - positions[:, None] + length - 1]


def rotary_phi(length: int, theta: np.ndarray, metric: str = "dot") -> np.ndarray:
    """``Phi(i, j) = sum_k cos((i - j) * theta_k)`` (Su et al. 2021, RoFormer, §3.4.3); cosine: over ``len(theta)``.

    Built from the ``2 * length - 1`` offsets only, so memory stays ``length^2``, not ``length^2 * dim``.
    """
    offsets = np.arange(-(length - 1), length)  # j - i; cos is even, so the sign does not matter
    by_offset = np.cos(offsets[:, None] * np.asarray(theta, dtype=np.float64)[None, :]).sum(axis=1)
    if metric == "cosine":
        by_offset = by_offset / max(len(theta), 1)
    return toeplitz(by_offset, length)


# ----------------------------------------------------------------------------------------------- analytic schemes


def analyse_scheme(
    scheme: str,
    length: int | None = None,
    dim: int | None = None,
    base: float = 10000.0,
    heads: int | None = None,
    buckets: int = 32,
    max_distance: int = 128,
    bidirectional: bool = True,
    metric: str = "dot",
    window: int = 16,
) -> PositionAnalysis:
    """An analytic scheme with no weights: sinusoidal, rotary, alibi, or t5 (alias relative_bucket).

    Defaults: ``length`` 128; ``dim`` 512 for sinusoidal (Vaswani et al.'s d_model), 64 for rotary (a head dim);
    ``heads`` 8 for ALiBi (Press et al.'s example). ``metric`` applies to sinusoidal and rotary only.
    """
    length = _check_length(DEFAULT_LENGTH if length is None else length, None, "")
    _check_options(metric, window)
    if scheme == "sinusoidal":
        return _analytic_sinusoidal(length, dim or DEFAULT_DIM["sinusoidal"], base, metric, window)
    if scheme == "rotary":
        return _analytic_rotary(length, dim or DEFAULT_DIM["rotary"], base, metric, window)
    if scheme == "alibi":
        return _alibi(length, heads or DEFAULT_HEADS, window, model=None, source="analytic: alibi")
    if scheme in ("t5", "relative_bucket"):
        return _analytic_t5(length, buckets, max_distance, bidirectional, window)
    raise PosembUsageError(f"unknown --scheme {scheme!r}; choose one of sinusoidal, rotary, alibi, t5")


def _analytic_sinusoidal(length: int, dim: int, base: float, metric: str, window: int) -> PositionAnalysis:
    if dim < 2:
        raise PosembUsageError(f"--dim must be at least 2, got {dim}")
    if base <= 0:
        raise PosembUsageError(f"--base must be positive, got {base:g}")
    vectors = schemes.sinusoidal_table(length, dim, base)
    source = f"analytic: sinusoidal, dim {dim}, base {base:g}"
    return _from_vectors("sinusoidal", None, source, vectors, metric, window)


def _analytic_rotary(length: int, dim: int, base: float, metric: str, window: int) -> PositionAnalysis:
    if dim < 2 or dim % 2:
        raise PosembUsageError(f"rotary --dim must be a positive even number (one frequency per plane), got {dim}")
    if base <= 0:
        raise PosembUsageError(f"--base must be positive, got {base:g}")
    theta = schemes.rotary_frequencies(dim, base)
    phi = rotary_phi(length, theta, metric)
    source = f"analytic: rotary, dim {dim}, base {base:g}"
    return PositionAnalysis("rotary", None, source, length, metric, phi, properties(phi, window))


def _analytic_t5(
    length: int, num_buckets: int, max_distance: int, bidirectional: bool, window: int
) -> PositionAnalysis:
    offsets = np.arange(-(length - 1), length)
    try:
        by_offset = schemes.t5_relative_bucket(offsets, bidirectional, num_buckets, max_distance)
    except ValueError as exc:
        raise PosembUsageError(f"--buckets/--max-distance: {exc}") from None
    level = by_offset - (offsets > 0) * (num_buckets // 2) if bidirectional else by_offset
    phi = toeplitz(-level.astype(np.float64), length)
    direction = "bidirectional" if bidirectional else "causal"
    source = f"analytic: t5 relative buckets, {num_buckets} buckets, max distance {max_distance}, {direction}"
    analysis = PositionAnalysis("relative_bucket", None, source, length, "bucket_level", phi, properties(phi, window))
    analysis.buckets = dict(zip(offsets.tolist(), by_offset.tolist(), strict=True))
    analysis.notes.append(
        "T5 learns one bias per bucket and head; with no weights Phi(i, j) = -(bucket level of j - i), the distance "
        "T5 can tell apart (0 for the same position, growing with |j - i|)"
    )
    return analysis


def _alibi(length: int, heads: int, window: int, model: str | None, source: str) -> PositionAnalysis:
    """ALiBi bias ``-m_h |i - j|`` (Press et al. 2022, §3); Phi is the head mean ``-mean(m) |i - j|``."""
    if heads < 1:
        raise PosembUsageError(f"--heads must be at least 1, got {heads}")
    slopes = schemes.alibi_slopes(heads)
    distance = np.abs(np.arange(length)[None, :] - np.arange(length)[:, None]).astype(np.float64)
    phi = -slopes.mean() * distance
    analysis = PositionAnalysis(
        "alibi", model, f"{source}, {heads} heads", length, "bias", phi, properties(phi, window)
    )
    analysis.slopes = slopes.tolist()
    if heads * length * length <= MAX_HEAD_MATRIX_VALUES:
        analysis.head_matrices = -slopes[:, None, None] * distance[None]
    analysis.notes.append("ALiBi adds a bias, not a vector: the dot/cosine metric does not apply")
    return analysis


def _from_vectors(
    scheme: str, model: str | None, source: str, vectors: np.ndarray, metric: str, window: int
) -> PositionAnalysis:
    """Phi between position vectors, its properties, and what the vectors know (Wang & Chen, EMNLP 2020, §3)."""
    phi = schemes.proximity(vectors, metric)
    analysis = PositionAnalysis(scheme, model, source, len(vectors), metric, phi, properties(phi, window))
    analysis.vectors = vectors
    if len(vectors) >= 5:
        analysis.regression_mae = metrics.position_regression_mae(vectors, folds=5)
    else:
        analysis.notes.append("fewer than 5 positions: no 5-fold position regression")
    coords, ratio = metrics.pca_2d(vectors)
    analysis.pca, analysis.pca_explained = coords, ratio.tolist()
    return analysis


def _check_options(metric: str, window: int) -> None:
    if metric not in ("dot", "cosine"):
        raise PosembUsageError(f"--metric must be dot or cosine, got {metric!r}")
    if window < 1:
        raise PosembUsageError(f"--window must be at least 1, got {window}")


def _check_length(length: int, maximum: int | None, name: str) -> int:
    if length < 2:
        raise PosembUsageError(f"--length must be at least 2, got {length}")
    if maximum is not None and length > maximum:
        raise PosembUsageError(f"--length {length} is more than the {maximum} positions {name} has")
    return length


# ---------------------------------------------------------------------------------------------------- models


def analyse_model(
    loaded: LoadedModel,
    length: int | None = None,
    metric: str = "dot",
    window: int = 16,
    probe: str | None = None,
    words: int = 30,
    seed: int = 0,
) -> PositionAnalysis:
    """Phi of a loaded model's own position scheme; ``probe="identical-word"`` adds the attention probe.

    ``length`` defaults to min(128, the model's positions). Learned and sinusoidal tables are read from the module
    the registry names (rows from the family's position offset on); rotary and ALiBi are computed in closed form
    from the config.
    """
    info, config = loaded.info, loaded.model.config
    scheme = loaded.family.position_scheme(config)
    if scheme == "unknown":
        raise PosembError(f"the position scheme of {info.type} is unknown to posemb")
    _check_options(metric, window)
    maximum = info.max_positions
    length = _check_length(
        min(DEFAULT_LENGTH, maximum or DEFAULT_LENGTH) if length is None else length, maximum, info.name
    )
    if probe not in (None, "identical-word"):
        raise PosembUsageError(f"unknown --probe {probe!r}; the only probe is identical-word")
    analysis = _scheme_analysis(loaded, scheme, length, metric, window, probe is not None)
    analysis.notes.extend(_causal_note(loaded))
    if probe is not None:
        identical_word_probe(loaded, analysis, words, seed, window)
    return analysis


def _scheme_analysis(
    loaded: LoadedModel, scheme: str, length: int, metric: str, window: int, probing: bool
) -> PositionAnalysis:
    if scheme in ("learned_absolute", "sinusoidal"):
        return _model_table(loaded, scheme, length, metric, window)
    if scheme == "rotary":
        return _model_rotary(loaded, length, metric, window)
    if scheme == "alibi":
        heads = loaded.info.heads
        return _alibi(length, heads, window, loaded.info.name, "config: slopes 2^(-8h/n)")
    if scheme == "relative_bucket":
        return _model_t5(loaded, length, window)
    if scheme == "none" and probing:  # nothing to read: the probe's head mean becomes Phi
        empty = np.zeros((length, length))
        analysis = PositionAnalysis("none", loaded.info.name, "none", length, "attention", empty, {})
        analysis.notes.append("the model adds no position information; Phi is the identical-word probe's")
        return analysis
    raise PosembError(f"{loaded.info.name} ({scheme}) adds no position information to analyse; try --probe")


def position_rows(loaded: LoadedModel) -> tuple[str, int]:
    """(module path of the position table, first row the model uses): RoBERTa-style models start at padding_idx+1."""
    family = loaded.family
    path = family.position_table or family.position_embedding
    if path is None:
        raise PosembError(f"the registry names no position table for {family.name}")
    offset = (getattr(loaded.model.config, "pad_token_id", 0) or 0) + 1 if family.position_offset else 0
    return path, offset


def _model_table(loaded: LoadedModel, scheme: str, length: int, metric: str, window: int) -> PositionAnalysis:
    path, offset = position_rows(loaded)
    weight = loaded.model.get_submodule(path).weight.detach().float().cpu().numpy().astype(np.float64)
    if offset + length > len(weight):
        raise PosembUsageError(
            f"--length {length} is more than the {len(weight) - offset} positions {loaded.info.name} has"
        )
    vectors = weight[offset : offset + length]
    source = f"{path} (rows {offset}..{offset + length - 1} of {len(weight)})"
    analysis = _from_vectors(scheme, loaded.info.name, source, vectors, metric, window)
    if offset:
        analysis.notes.append(f"positions 0..{length - 1} use rows {offset}.. (padding_idx + 1 onwards)")
    return analysis


def rope_settings(config: Any) -> dict[str, Any]:
    """Rotary base, rotated dimensions and rope type from a config (transformers 5 ``rope_parameters``, or 4.x keys).

    dim = head_dim (or hidden_size / num_attention_heads) times ``partial_rotary_factor`` (1 if absent).
    """
    params = getattr(config, "rope_parameters", None) or {}
    if params and "rope_theta" not in params and all(isinstance(v, dict) for v in params.values()):
        params = next(iter(params.values()))  # per-layer-type parameters: take the first (full attention)
    legacy = getattr(config, "rope_scaling", None) or {}
    base = params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    factor = params.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) or 1.0
    rope_type = params.get("rope_type") or legacy.get("rope_type") or legacy.get("type") or "default"
    dim = int(head_dim * factor)
    return {"base": float(base), "dim": dim - dim % 2, "rope_type": rope_type}


def _model_rotary(loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
    rope = rope_settings(loaded.model.config)
    theta = schemes.rotary_frequencies(rope["dim"], rope["base"])
    module = loaded.family.rotary_embedding
    inv_freq = getattr(loaded.model.get_submodule(module), "inv_freq", None) if module else None
    notes = []
    if inv_freq is not None and rope["rope_type"] != "default":
        theta = inv_freq.detach().double().cpu().numpy()  # scaled RoPE: trust the frequencies the model uses
        notes.append(f"rope_type {rope['rope_type']}: Phi uses the model's rescaled frequencies ({module}.inv_freq)")
    phi = rotary_phi(length, theta, metric)
    where = module or "rotary"
    source = f"{where}: base {rope['base']:g}, dim {rope['dim']} (from config)"
    analysis = PositionAnalysis("rotary", loaded.info.name, source, length, metric, phi, properties(phi, window))
    analysis.notes.extend(notes)
    return analysis


def _model_t5(loaded: LoadedModel, length: int, window: int) -> PositionAnalysis:
    """T5-style learned bias ``b_h(bucket(j - i))`` of the first layer that has one (Raffel et al. 2020, §2.1)."""
    config, model = loaded.model.config, loaded.model
    path = loaded.family.position_table or next(
        (name for name, _ in model.named_modules() if name.endswith("relative_attention_bias")), None
    )
    if path is None:
        raise PosembError(f"{loaded.info.name} has no relative_attention_bias module")
    bias = model.get_submodule(path).weight.detach().float().cpu().numpy().astype(np.float64)  # (buckets, heads)
    num_buckets = getattr(config, "relative_attention_num_buckets", bias.shape[0])
    max_distance = getattr(config, "relative_attention_max_distance", 128)
    bidirectional = not getattr(config, "is_decoder", False)
    offsets = np.arange(-(length - 1), length)
    by_offset = schemes.t5_relative_bucket(offsets, bidirectional, num_buckets, max_distance)
    head_matrices = np.stack([toeplitz(bias[by_offset, h], length) for h in range(bias.shape[1])])
    phi = head_matrices.mean(axis=0)
    source = f"{path} ({num_buckets} buckets, max distance {max_distance})"
    analysis = PositionAnalysis(
        "relative_bucket", loaded.info.name, source, length, "bias", phi, properties(phi, window)
    )
    analysis.buckets = dict(zip(offsets.tolist(), by_offset.tolist(), strict=True))
    analysis.head_matrices = head_matrices
    return analysis


def _causal_note(loaded: LoadedModel) -> list[str]:
    if not loaded.family.causal:
        return []
    return ["causal model: a query attends only to positions j <= i (for ALiBi and rotary, Phi at j > i is unused)"]


# ------------------------------------------------------------------------------------------ identical-word probe


def probe_word_ids(tokenizer: Any, vocab_size: int, words: int, seed: int) -> list[int]:
    """``words`` ordinary vocabulary ids, drawn with ``np.random.default_rng(seed)``.

    Ordinary: not special or added, below the model's vocabulary size, and alphabetic with at least two letters
    once a word-start marker (Ġ, ▁) is removed; WordPiece continuations (##...) are left out.
    """
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())

    def ordinary(token: str) -> bool:
        word = token.lstrip("Ġ▁")
        return not token.startswith("##") and len(word) >= 2 and word.isalpha()

    candidates = sorted(
        i for t, i in tokenizer.get_vocab().items() if i < vocab_size and i not in excluded and ordinary(t)
    )
    if not candidates:
        candidates = sorted(i for i in tokenizer.get_vocab().values() if i < vocab_size and i not in excluded)
    if not candidates:
        raise PosembError("the vocabulary has no ordinary (non-special) token to probe with")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(candidates), size=min(words, len(candidates)), replace=False)
    return [candidates[k] for k in chosen]


def first_layer_attention(loaded: LoadedModel, word_ids: list[int], length: int) -> np.ndarray:
    """Mean over words of the first layer's attention to ``length`` copies of each word: (heads, length, length).

    Raw ids, no special tokens; position ids as the model computes them for an unpadded sequence.
    """
    import torch

    model = loaded.model
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    total = None
    with torch.inference_mode():
        for start in range(0, len(word_ids), PROBE_BATCH):
            ids = torch.tensor(word_ids[start : start + PROBE_BATCH], dtype=torch.long, device=loaded.device)
            input_ids = ids[:, None].expand(-1, length).contiguous()
            output = model(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_attentions=True, return_dict=True
            )
            if not output.attentions or output.attentions[0] is None:
                raise PosembError(f"{loaded.info.name} returned no attention weights (is attention eager?)")
            layer = output.attentions[0].double().sum(dim=0)
            total = layer if total is None else total + layer
    return (total / len(word_ids)).cpu().numpy()


def identical_word_probe(loaded: LoadedModel, analysis: PositionAnalysis, words: int, seed: int, window: int) -> None:
    """Wang et al. (ICLR 2021, §4): the first layer's attention on N copies of one word, averaged over ``words``
    random words; Phi is that attention (head mean) and per head. Fills ``analysis.probe`` and ``probe_matrices``."""
    if words < 1:
        raise PosembUsageError(f"--words must be at least 1, got {words}")
    vocab_size = getattr(loaded.model.config, "vocab_size", None) or len(loaded.tokenizer)
    word_ids = probe_word_ids(loaded.tokenizer, vocab_size, words, seed)
    if len(word_ids) < words:
        analysis.notes.append(f"the vocabulary has only {len(word_ids)} ordinary words; the probe uses all of them")
    per_head = first_layer_attention(loaded, word_ids, analysis.length)
    mean = per_head.mean(axis=0)
    analysis.probe_matrices = per_head
    analysis.probe = {
        "kind": "identical-word",
        "words": len(word_ids),
        "seed": seed,
        "layer": 0,
        "word_ids": word_ids,
        "tokens": loaded.tokenizer.convert_ids_to_tokens(word_ids),
        "properties": properties(mean, window),
        "per_head": [{"head": h, **properties(per_head[h], window)} for h in range(len(per_head))],
    }
    if loaded.family.causal:
        analysis.notes.append(
            "probe on a causal model: attention to j > i is 0, so its symmetry and forward monotonicity say little"
        )
    if analysis.scheme == "none":
        analysis.matrix, analysis.properties = mean, analysis.probe["properties"]
