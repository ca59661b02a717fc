"""Rotary position embedding (RoPE, Su et al. 2021): positions rotate queries and keys; nothing is added.

Phi(i, j) = sum_k cos((i - j) * theta_k), the score of two copies of one vector rotated to i and j (RoFormer, §3.4.3);
with ``metric="cosine"`` divided by the number of frequencies, its value at i = j. The frequencies of every layer type
come from the config through transformers' own `modeling_rope_utils` (`rope_layer_types`), and `audit` compares them
with the `inv_freq` buffers the loaded model rotates with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import metrics
from ..errors import PosembUsageError
from .base import PositionAnalysis, PositionPicture, PositionScheme, positive, toeplitz

if TYPE_CHECKING:
    from ..models import LoadedModel

AUDIT_TOLERANCE = 1e-5  # largest relative difference between config and buffer frequencies that is not a warning
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


@dataclass
class RopeLayerType:
    """The rotary settings of one kind of layer (all layers, or e.g. Gemma 3's sliding / full attention layers)."""

    name: str | None  # the config's layer type, or None when every layer rotates alike
    rope_type: str
    base: float
    dim: int  # rotated dimensions (partial rotary: fewer than the head dimension)
    factor: float | None
    original_max_positions: int | None
    max_positions: int | None
    attention_factor: float
    inv_freq: np.ndarray  # from the config, through transformers' own ROPE_INIT_FUNCTIONS
    layers: list[int] = field(default_factory=list)

    @property
    def wavelengths(self) -> np.ndarray:
        """2π/θ_i: positions one rotary pair takes to turn a full circle."""
        with np.errstate(divide="ignore"):
            return 2 * math.pi / self.inv_freq

    def full_turns_within(self, length: int | None) -> int | None:
        """Pairs that turn a full circle within `length` positions (YaRN, Peng et al. 2023, §3)."""
        return None if length is None else int((self.wavelengths <= length).sum())


def rope_layer_types(config: Any, rotary_class: Any) -> list[RopeLayerType]:
    """Each layer type's RoPE from the config, computed by transformers itself: `ROPE_INIT_FUNCTIONS[rope_type]`, or
    the model's own rotary class's `compute_default_rope_parameters` for the default type (it knows e.g. partial
    rotary). `config` must be a transformers config."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    parameters = getattr(config, "rope_parameters", None) or {}
    per_type = bool(parameters) and all(isinstance(v, dict) for v in parameters.values())
    layer_types = list(getattr(config, "layer_types", None) or [])
    names: list[str | None] = sorted(parameters) if per_type else [None]
    out = []
    for name in names:
        params = parameters[name] if name is not None else parameters
        rope_type = params.get("rope_type", "default")
        init = (
            rotary_class.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
        )
        inv_freq, attention_factor = init(config, layer_type=name) if name else init(config)
        maximum = getattr(config, "max_position_embeddings", None)
        original = params.get("original_max_position_embeddings") or getattr(
            config, "original_max_position_embeddings", None
        )
        out.append(
            RopeLayerType(
                name=name,
                rope_type=rope_type,
                base=float(params.get("rope_theta", 10000.0)),
                dim=2 * len(inv_freq),
                factor=params.get("factor"),
                original_max_positions=original or maximum,
                max_positions=maximum,
                attention_factor=float(attention_factor),
                inv_freq=inv_freq.double().cpu().numpy(),
                layers=[k for k, kind in enumerate(layer_types) if kind == name] if name else [],
            )
        )
    return out


def audit(rope: list[RopeLayerType], module: Any) -> dict[str, Any]:
    """Compare the frequencies recomputed from the config with the `inv_freq` buffers the loaded model rotates with
    (one per layer type: `inv_freq` or `{layer_type}_inv_freq`). Largest relative difference; ok below 1e-5."""
    worst, count = 0.0, 0
    for kind in rope:
        buffer = getattr(module, f"{kind.name}_inv_freq" if kind.name else "inv_freq", None)
        if buffer is None:
            continue
        used = buffer.detach().double().cpu().numpy()
        count += 1
        if used.shape != kind.inv_freq.shape:
            worst = math.inf
            continue
        worst = max(worst, float(np.max(np.abs(used - kind.inv_freq) / np.abs(kind.inv_freq))))
    return {"modules": count, "max_relative_difference": worst, "ok": bool(count) and worst <= AUDIT_TOLERANCE}


def analytic_config(dim: int, base: float, rope_type: str, factor: float | None, original: int | None, **extra: Any):
    """A LLaMA config with one head of `dim` rotated dimensions and these RoPE settings, for transformers' own
    functions to compute the frequencies of a formula with no weights."""
    from transformers import LlamaConfig

    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": base, **extra}
    maximum = original
    if rope_type != "default":
        if factor is None or original is None:
            raise PosembUsageError(f"--rope-type {rope_type} needs --factor and --original-max")
        params.update(factor=factor, original_max_position_embeddings=original)
        maximum = int(original * factor)
    return LlamaConfig(
        hidden_size=dim,
        num_attention_heads=1,
        head_dim=dim,
        max_position_embeddings=maximum or 2048,
        rope_parameters=params,
        num_hidden_layers=1,
        vocab_size=8,
    )


def rotary_frequencies(dim: int, base: float = 10000.0) -> np.ndarray:
    """Rotary angular frequencies ``theta_k = base ** (-2k / dim)``, ``k = 0 .. dim/2 - 1``.

    Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", §3.2.2 (eq. 15). ``dim`` must be even (one frequency per
    rotation plane).
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    return base ** (-2.0 * np.arange(dim // 2) / dim)


def rotary_phi(length: int, theta: np.ndarray, metric: str = "dot") -> np.ndarray:
    """``Phi(i, j) = sum_k cos((i - j) * theta_k)`` (Su et al. 2021, RoFormer, §3.4.3); cosine: over ``len(theta)``.

    With equal energy in every rotation plane, ``<R_i x, R_j x>`` reduces to this sum. It depends on ``i - j`` only
    and equals ``len(theta)`` on the diagonal. Built from the ``2 * length - 1`` offsets only, so memory stays
    ``length^2``, not ``length^2 * dim``.
    """
    by_offset = np.cos(np.arange(-(length - 1), length)[:, None] * np.asarray(theta, dtype=np.float64)).sum(axis=1)
    if metric == "cosine":
        by_offset = by_offset / max(len(theta), 1)
    return toeplitz(by_offset, length)


def rotary_proximity(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """`rotary_phi` for the frequencies of ``dim`` and ``base``: equals ``dim / 2`` on the diagonal."""
    return rotary_phi(length, rotary_frequencies(dim, base))


def toeplitz_monotonicity(by_offset: np.ndarray, length: int, window: int) -> float:
    """`metrics.local_monotonicity` of an even Toeplitz Phi (Phi(i, j) = f(|i − j|), as rotary's) over `length`
    positions, exactly, without building the length × length matrix: an anchor with k ≥ 2 neighbours on one side
    scores Spearman(d, −f(d)) over d = 1..k; there are length − window anchors with a full window and one with each
    k < window. Forward and backward are equal."""
    total, anchors = 0.0, 0
    for k in range(2, min(window, length - 1) + 1):
        count = max(0, length - window) if k == window else 1
        values = -by_offset[1 : k + 1]
        if count == 0 or np.ptp(values) == 0:
            continue
        total += count * metrics.spearman(np.arange(1, k + 1, dtype=np.float64), values)
        anchors += count
    return total / anchors if anchors else float("nan")


class Rotary(PositionScheme):
    name = "rotary"
    # a common head dimension (RoFormer); the rope type's own parameters (yarn's beta_fast, ...) go in rope_params
    options = {
        "dim": 64,
        "base": 10000.0,
        "rope_type": "default",
        "factor": None,
        "original_max": None,
        "rope_params": None,
    }

    def meaning(self, metric: str) -> str:
        scaled = " ÷ (dim/2)" if metric == "cosine" else ""
        return f"Φ(i, j) = Σₖ cos((i − j)·θₖ){scaled}: how rotation alone changes the score of one vector at i and j"

    def analyse(self, length: int, metric: str, window: int, **options: Any) -> PositionAnalysis:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        dim, base = int(options["dim"]), positive("--base", float(options["base"]))
        if dim < 2 or dim % 2:
            raise PosembUsageError(f"rotary --dim must be a positive even number (one frequency per plane), got {dim}")
        rope_type = options["rope_type"]
        if rope_type not in ROPE_TYPES:
            raise PosembUsageError(f"unknown --rope-type {rope_type!r}; choose one of {', '.join(ROPE_TYPES)}")
        if rope_type == "longrope":
            raise PosembUsageError("longrope needs a factor per rotary pair: analyse a model that has them with -m")
        factor = options["factor"]
        if factor is not None:
            positive("--factor", float(factor))
        config = analytic_config(
            dim, base, rope_type, factor, options["original_max"], **(options["rope_params"] or {})
        )
        kinds = rope_layer_types(config, LlamaRotaryEmbedding)
        phi = rotary_phi(length, kinds[0].inv_freq, metric)
        scaled = "" if rope_type == "default" else f", {rope_type} ×{factor:g} from {options['original_max']}"
        analysis = self.analysis(
            None, f"analytic: rotary, dim {dim}, base {base:g}{scaled}", length, metric, phi, window
        )
        analysis.rope = rope_json(kinds, window)
        return analysis

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        path = loaded.family.rotary_embedding
        if path is None:
            raise PosembUsageError(f"the registry names no rotary module for {loaded.family.name}")
        module = loaded.model.get_submodule(path)
        kinds = rope_layer_types(loaded.model.config, type(module))
        main = primary(kinds)
        phi = rotary_phi(length, main.inv_freq, metric)
        where = f" ({main.name})" if main.name else ""
        source = f"{path}{where}: base {main.base:g}, dim {main.dim}, rope_type {main.rope_type} (from config)"
        analysis = self.analysis(loaded.info.name, source, length, metric, phi, window)
        analysis.rope = rope_json(kinds, window)
        analysis.audit = audit(kinds, module)
        if not analysis.audit["ok"]:
            analysis.warnings.append(
                f"RoPE audit: the inv_freq buffers of {path} differ from the frequencies its config gives by up to "
                f"{analysis.audit['max_relative_difference']:.3g} (relative; more than {AUDIT_TOLERANCE:g})"
            )
        config = loaded.model.config
        local = getattr(config, "sliding_window", None)
        if local and len(kinds) > 1:
            analysis.notes.append(
                f"sliding_attention layers attend within a window (sliding_window={local}); the "
                "full_attention layers see every token"
            )
        for kind in kinds:
            if kind.name:
                analysis.notes.append(
                    f"{kind.name} layers {kind.layers}: base {kind.base:g}, rope_type {kind.rope_type}"
                    + (" (Phi above)" if kind is main else "")
                )
        return analysis

    def options_for_model(self, hidden_size: int, heads: int, head_dim: int) -> dict[str, Any]:
        return {"dim": head_dim - head_dim % 2} if head_dim >= 2 else {}

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        n = analysis.length
        return PositionPicture(
            {"similarity": analysis.matrix},
            f"Rotary score of positions 0–{n - 1}: Σₖ cos((i−j)·θₖ) / (d/2)",
            f"no position vectors (rotary rotates queries and keys): the score between rotated copies of a unit "
            f"vector, {analysis.source}",
            "normalised rotary score",
            diverging=True,
        )


def primary(kinds: list[RopeLayerType]) -> RopeLayerType:
    """The layer type Phi is drawn for: full (global) attention when the model has several types."""
    return next((kind for kind in kinds if kind.name == "full_attention"), kinds[0])


def rope_json(kinds: list[RopeLayerType], window: int) -> dict[str, Any]:
    """The `rope` object of `positions --json`: the primary layer type's settings, every type's base and layers,
    the wavelength counts, and Phi's monotonicity over the original and the extended number of positions."""
    main = primary(kinds)
    lengths = {"original": main.original_max_positions, "extended": main.max_positions}
    monotonicity = {}
    for key, length in lengths.items():
        if length:
            by_offset = np.cos(np.arange(min(window, length) + 1)[:, None] * main.inv_freq).sum(axis=1)
            monotonicity[key] = {"positions": length, "monotonicity": toeplitz_monotonicity(by_offset, length, window)}
    return {
        "type": main.rope_type,
        "base": main.base,
        "dim": main.dim,
        "factor": main.factor,
        "original_max_positions": main.original_max_positions,
        "max_positions": main.max_positions,
        "attention_factor": main.attention_factor,
        "layer_types": {kind.name: {"base": kind.base, "layers": kind.layers} for kind in kinds if kind.name} or None,
        "wavelengths": {
            "pairs": len(main.inv_freq),
            "full_turn_within_original": main.full_turns_within(main.original_max_positions),
            "table": wavelength_table(main),
        },
        "properties": monotonicity,
    }


def wavelength_table(kind: RopeLayerType, groups: int = 8) -> list[dict[str, Any]]:
    """Rotary pairs in `groups` consecutive groups: wavelength range and how many turn fully within the original
    and the extended number of positions."""
    wavelengths = kind.wavelengths
    rows = []
    for chunk in np.array_split(np.arange(len(wavelengths)), min(groups, len(wavelengths))):
        part = wavelengths[chunk]
        rows.append(
            {
                "pairs": [int(chunk[0]), int(chunk[-1])],
                "wavelength_min": float(part.min()),
                "wavelength_max": float(part.max()),
                "full_turn_within_original": int((part <= (kind.original_max_positions or 0)).sum()),
                "full_turn_within_extended": int((part <= (kind.max_positions or 0)).sum()),
            }
        )
    return rows


SCHEMES = (Rotary(),)
