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
from ..errors import PosembError, PosembUsageError
from ..rope_parameters import ROPE_TYPES, check_rope_parameters
from .base import PositionAnalysis, PositionPicture, PositionScheme, positive, toeplitz

if TYPE_CHECKING:
    from ..models import LoadedModel

AUDIT_TOLERANCE = 1e-5  # largest relative difference between config and buffer frequencies that is not a warning


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
    params: dict[str, Any] = field(default_factory=dict)  # the config's rope parameters of this layer type
    original_inferred: bool = False  # linear without original_max_position_embeddings: max / factor

    @property
    def extended_positions(self) -> int | None:
        """The length the scaling is meant for: dynamic NTK grows past its training length up to training × factor;
        the others are configured for `max_position_embeddings`."""
        if self.rope_type == "dynamic" and self.factor and self.original_max_positions:
            return int(self.original_max_positions * self.factor)
        return self.max_positions

    @property
    def wavelengths(self) -> np.ndarray:
        """2π/θ_i: positions one rotary pair takes to turn a full circle."""
        with np.errstate(divide="ignore"):
            return 2 * math.pi / self.inv_freq

    def full_turns_within(self, length: int | None) -> int | None:
        """Pairs that turn a full circle within `length` positions (YaRN, Peng et al. 2023, §3)."""
        return None if length is None else int((self.wavelengths <= length).sum())


def rope_layer_types(config: Any, rotary_class: Any, where: str = "config.json") -> list[RopeLayerType]:
    """Each layer type's RoPE from the config, computed by transformers itself: `ROPE_INIT_FUNCTIONS[rope_type]`, or
    the model's own rotary class's `compute_default_rope_parameters` for the default type (it knows e.g. partial
    rotary). `config` must be a transformers config. Every parameter is range-checked first (`check_rope_parameters`):
    a config that holds NaN, a zero divisor or an unknown rope type is one line naming the field, in `where`."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    parameters = getattr(config, "rope_parameters", None) or {}
    per_type = bool(parameters) and all(isinstance(v, dict) for v in parameters.values())
    layer_types = list(getattr(config, "layer_types", None) or [])
    names: list[str | None] = sorted(parameters) if per_type else [None]
    out = []
    for name in names:
        params = parameters[name] if name is not None else parameters
        prefix = f"rope_parameters.{name}." if name else "rope_parameters."
        check_rope_parameters(params, lambda key, p=prefix: f"{where}: {p}{key}", PosembError)
        rope_type = params.get("rope_type", "default")
        init = (
            rotary_class.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
        )
        extra = {"layer_type": name} if name else {}
        inv_freq, attention_factor = _quietly(lambda init=init, extra=extra: init(config, **extra))
        maximum = getattr(config, "max_position_embeddings", None)
        original = params.get("original_max_position_embeddings") or getattr(
            config, "original_max_position_embeddings", None
        )
        factor = params.get("factor")
        if factor is None and rope_type in ("longrope", "yarn") and original and maximum:
            factor = maximum / original  # what transformers itself uses when the config leaves it out
        inferred = rope_type == "linear" and not original and bool(maximum) and bool(factor)
        if inferred and maximum and factor:
            original = max(1, round(maximum / factor))  # position interpolation: the table was stretched by factor
        out.append(
            RopeLayerType(
                name=name,
                rope_type=rope_type,
                base=float(params.get("rope_theta", 10000.0)),
                dim=2 * len(inv_freq),
                factor=None if factor is None else float(factor),
                original_max_positions=original or maximum,
                max_positions=maximum,
                attention_factor=float(attention_factor),
                inv_freq=inv_freq.double().cpu().numpy(),
                layers=[k for k, kind in enumerate(layer_types) if kind == name] if name else [],
                params=dict(params),
                original_inferred=inferred,
            )
        )
    return out


def _quietly(compute: Any) -> Any:
    """transformers' rope functions log and warn about configs they accept (a factor below 1, unknown keys); posemb
    says what matters itself, once, so their messages are kept off stderr."""
    import logging
    import warnings

    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return compute()
    finally:
        logger.setLevel(level)


def parse_rope_params(values: list[str] | None) -> dict[str, Any] | None:
    """--rope-param KEY=VALUE options as a dict; a value may be a comma-separated list (LongRoPE's factors), and one
    option may hold several pairs: `short_factor=1,1.2,long_factor=2,4`. Numbers only; checked later against the
    rope type (`check_rope_parameters`)."""
    if not values:
        return None
    pairs: dict[str, Any] = {}
    for value in values:
        key = None
        for piece in value.split(","):
            name, sign, number = piece.partition("=")
            if sign:
                key = name.strip()
                if not key:
                    raise PosembUsageError(f"--rope-param {value!r}: expected KEY=NUMBER, e.g. beta_fast=32")
                pairs[key] = []
            elif key is None:
                raise PosembUsageError(f"--rope-param {value!r}: expected KEY=NUMBER, e.g. beta_fast=32")
            else:
                number = name
            try:
                pairs[key].append(float(number))
            except ValueError:
                raise PosembUsageError(f"--rope-param {value!r}: {number.strip()!r} is not a number") from None
            if not math.isfinite(pairs[key][-1]):
                raise PosembUsageError(f"--rope-param {value!r}: {key}: the number must be finite")
    lists = ("short_factor", "long_factor")
    return {
        key: numbers if key in lists else (numbers[0] if len(numbers) == 1 else numbers)
        for key, numbers in pairs.items()
    }


def transformers_frequencies(config: Any, kind: RopeLayerType, rotary_class: Any, length: int) -> np.ndarray:
    """The frequencies transformers' rope function gives this layer type for a sequence of `length` positions (what
    the model's rotary module switches to at that length: dynamic NTK grows, LongRoPE takes its long factors)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if kind.rope_type == "default":
        init = rotary_class.compute_default_rope_parameters
    else:
        init = ROPE_INIT_FUNCTIONS[kind.rope_type]
    extra = {"layer_type": kind.name} if kind.name else {}
    inv_freq, _ = _quietly(lambda: init(config, seq_len=length, **extra))
    return inv_freq.double().cpu().numpy()


def training_length(kind: RopeLayerType) -> int:
    """The training length of the original dynamic NTK formula: `original_max_position_embeddings` when the config
    has it, else `max_position_embeddings` (the only length transformers' dynamic rule reads)."""
    return int(kind.params.get("original_max_position_embeddings") or kind.original_max_positions or 1)


def reference_frequencies(kind: RopeLayerType, length: int) -> np.ndarray | None:
    """The authors' formula for this layer type at `length` positions (`schemes.reference`); None for a rope type
    posemb has no reference for."""
    from . import reference

    p, dim, base = kind.params, kind.dim, kind.base
    factor = float(kind.factor or 1.0)
    original = int(kind.original_max_positions or 1)
    if kind.rope_type == "linear":
        return reference.rope_linear(dim, base, factor)
    if kind.rope_type == "dynamic":
        return reference.rope_dynamic(dim, base, factor, training_length(kind), length)
    if kind.rope_type == "yarn":
        return reference.rope_yarn(dim, base, factor, original, p.get("beta_fast") or 32, p.get("beta_slow") or 1)
    if kind.rope_type == "llama3":
        return reference.rope_llama3(dim, base, factor, original, p["low_freq_factor"], p["high_freq_factor"])
    if kind.rope_type == "longrope":
        return reference.rope_longrope(dim, base, p["short_factor"], p["long_factor"], original, length)
    if kind.rope_type == "default":
        return reference.rope_default(dim, base)
    return None


def live_frequencies(module: Any, kind: RopeLayerType, length: int) -> np.ndarray | None:
    """The `inv_freq` buffer the model's rotary module rotates with once it has seen `length` positions: one forward
    with position id length − 1 (dynamic NTK and LongRoPE choose from the largest id), read, then the module's state
    put back as it was. None when the module has no such buffer."""
    import torch

    attribute = f"{kind.name}_inv_freq" if kind.name else "inv_freq"
    buffer = getattr(module, attribute, None)
    if buffer is None:
        return None
    plain = {k: v for k, v in vars(module).items() if k not in ("_buffers", "_parameters", "_modules")}
    buffers = {k: None if v is None else v.clone() for k, v in module._buffers.items()}
    try:
        x = torch.zeros(1, 1, 1, device=buffer.device)
        ids = torch.tensor([[length - 1]], device=buffer.device)
        with torch.inference_mode():
            module(x, position_ids=ids, **({"layer_type": kind.name} if kind.name else {}))
        return getattr(module, attribute).detach().double().cpu().numpy()
    finally:
        for key in [k for k in vars(module) if k not in plain and k not in ("_buffers", "_parameters", "_modules")]:
            delattr(module, key)
        module.__dict__.update(plain)
        module._buffers.clear()
        module._buffers.update(buffers)


def relative_difference(found: np.ndarray | None, expected: np.ndarray) -> float:
    """max |found − expected| / |expected| (inf when the shapes differ; NaN when there is nothing to compare)."""
    if found is None:
        return math.nan
    if found.shape != expected.shape:
        return math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.abs(found - expected) / np.abs(expected))) if expected.size else 0.0


def audit_lengths(kinds: list[RopeLayerType], at_length: int | None) -> list[int]:
    """The lengths the audit checks: the original length (LongRoPE: its last short-factor length) and `at_length`
    (default: the extended length of the primary layer type)."""
    main = primary(kinds)
    chosen = at_length or main.extended_positions or main.original_max_positions or 2
    return sorted({int(main.original_max_positions or chosen), int(chosen)})


def audit(
    kinds: list[RopeLayerType], module: Any, config: Any, rotary_class: Any, at_length: int | None = None
) -> dict[str, Any]:
    """The RoPE audit, per layer type and length (`audit_lengths`): transformers' frequencies for the config against
    the authors' formula (`reference_frequencies`) and against the model's live buffers (`live_frequencies`); the
    largest relative difference of each check; ok when every one is within AUDIT_TOLERANCE."""
    checks: list[dict[str, Any]] = []
    for kind in kinds:
        for length in audit_lengths(kinds, at_length):
            given = transformers_frequencies(config, kind, rotary_class, length)
            formula = reference_frequencies(kind, length)
            reference = None if formula is None else relative_difference(given, formula)
            buffer = relative_difference(live_frequencies(module, kind, length), given) if module is not None else None
            checks.append(
                {
                    "layer_type": kind.name,
                    "positions": length,
                    "reference": reference,
                    "buffers": None if buffer is None or math.isnan(buffer) else buffer,
                }
            )
    buffer_checks = [c["buffers"] for c in checks if c["buffers"] is not None]
    worst_reference = max((c["reference"] for c in checks if c["reference"] is not None), default=0.0)
    worst_buffer = max(buffer_checks, default=0.0)
    return {
        "modules": len({c["layer_type"] for c in checks if c["buffers"] is not None}),
        "lengths": audit_lengths(kinds, at_length),
        "checks": checks,
        "max_relative_difference": worst_buffer,  # buffers against transformers, as before 0.5.0
        "max_reference_difference": worst_reference,
        "tolerance": AUDIT_TOLERANCE,
        "ok": worst_buffer <= AUDIT_TOLERANCE and worst_reference <= AUDIT_TOLERANCE,
    }


def audit_warnings(kinds: list[RopeLayerType], result: dict[str, Any], path: str) -> list[str]:
    """One warning per check that failed, naming the convention behind the difference."""
    warnings = []
    buffers = [c for c in result["checks"] if c["buffers"] is not None and c["buffers"] > AUDIT_TOLERANCE]
    if buffers:
        worst = max(buffers, key=lambda c: c["buffers"])
        warnings.append(
            f"RoPE audit: the inv_freq buffers of {path} differ from the frequencies its config gives by up to "
            f"{worst['buffers']:.3g} (relative; more than {AUDIT_TOLERANCE:g}) at {worst['positions']} positions"
        )
    for kind in kinds:
        failed = [
            c
            for c in result["checks"]
            if c["layer_type"] == kind.name and c["reference"] is not None and c["reference"] > AUDIT_TOLERANCE
        ]
        if not failed:
            continue
        worst = max(failed, key=lambda c: c["reference"])
        where = f" ({kind.name} layers)" if kind.name else ""
        size = f"by up to {worst['reference']:.3g} (relative) at {worst['positions']} positions"
        if kind.rope_type == "dynamic":
            warnings.append(
                f"RoPE audit{where}: dynamic NTK in transformers takes max_position_embeddings "
                f"({kind.max_positions}) as the training length, the original formula (emozilla) "
                f"original_max_position_embeddings ({training_length(kind)}): the frequencies differ {size}"
            )
        elif kind.rope_type == "longrope":
            warnings.append(
                f"RoPE audit{where}: LongRoPE switches to its long factors past original_max_position_embeddings "
                f"({kind.original_max_positions} positions use the short ones, "
                f"{(kind.original_max_positions or 0) + 1} the long ones); transformers' frequencies differ from "
                f"Phi-3's rule {size}"
            )
        else:
            warnings.append(
                f"RoPE audit{where}: transformers' {kind.rope_type} frequencies differ from the authors' formula "
                f"(posemb_cli/schemes/reference.py) {size}"
            )
    return warnings


def analytic_config(dim: int, base: float, rope_type: str, factor: float | None, original: int | None, **extra: Any):
    """A LLaMA config with one head of `dim` rotated dimensions and these RoPE settings, for transformers' own
    functions to compute the frequencies of a formula with no weights. Every value is range-checked first, the
    `--rope-param` ones as the named options are (`check_rope_parameters`)."""
    from transformers import LlamaConfig

    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": base, **extra}
    maximum = original
    if rope_type != "default":
        if factor is None or original is None:
            raise PosembUsageError(f"--rope-type {rope_type} needs --factor and --original-max")
        params.update(factor=factor, original_max_position_embeddings=original)
        maximum = int(original * factor)
    if rope_type == "dynamic":
        maximum = original  # transformers' dynamic rule reads max_position_embeddings as the training length
        del params["original_max_position_embeddings"]  # ... and nothing else: the key would only be warned about
    flags = {"rope_theta": "--base", "factor": "--factor", "original_max_position_embeddings": "--original-max"}
    check_rope_parameters(params, lambda key: flags.get(key, f"--rope-param {key}"))
    if rope_type == "longrope":
        for key in ("short_factor", "long_factor"):
            if len(params[key]) != dim // 2:
                raise PosembUsageError(
                    f"--rope-param {key} has {len(params[key])} values; --dim {dim} has {dim // 2} rotary pairs"
                )
    return _quietly(
        lambda: LlamaConfig(
            hidden_size=dim,
            num_attention_heads=1,
            head_dim=dim,
            max_position_embeddings=maximum or 2048,
            rope_parameters=params,
            num_hidden_layers=1,
            vocab_size=8,
        )
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
        "at_length": None,
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
        extra = dict(options["rope_params"] or {})
        check_rope_parameters({"rope_type": rope_type, **extra}, lambda key: f"--rope-param {key}")
        # --rope-param may also give what a named option does; the named option wins where both are given
        factor = options["factor"] if options["factor"] is not None else extra.pop("factor", None)
        extra.pop("factor", None)
        original = extra.pop("original_max_position_embeddings", None)
        original = options["original_max"] if options["original_max"] is not None else original
        if "rope_theta" in extra:
            raise PosembUsageError("--rope-param rope_theta: give the base with --base")
        if factor is not None:
            positive("--factor", float(factor))
        config = analytic_config(dim, base, rope_type, factor, None if original is None else int(original), **extra)
        kinds = rope_layer_types(config, LlamaRotaryEmbedding, where="--rope-param")
        phi = rotary_phi(length, kinds[0].inv_freq, metric)
        scaled = "" if rope_type == "default" else f", {rope_type} ×{factor:g} from {original}"
        analysis = self.analysis(
            None, f"analytic: rotary, dim {dim}, base {base:g}{scaled}", length, metric, phi, window
        )
        at_length = options.get("at_length")
        analysis.rope = rope_json(kinds, window, config, LlamaRotaryEmbedding, at_length)
        analysis.audit = audit(kinds, None, config, LlamaRotaryEmbedding, at_length)
        analysis.warnings += audit_warnings(kinds, analysis.audit, "the analytic scheme")
        analysis.notes += rope_notes(kinds)
        analysis.exports = {"inv_freq": inv_freq_export(kinds, config, LlamaRotaryEmbedding, analysis.audit)}
        return analysis

    def from_model(
        self, loaded: LoadedModel, length: int, metric: str, window: int, at_length: int | None = None
    ) -> PositionAnalysis:
        path = loaded.family.rotary_embedding
        if path is None:
            raise PosembUsageError(f"the registry names no rotary module for {loaded.family.name}")
        module = loaded.model.get_submodule(path)
        config = loaded.model.config
        where = f"{loaded.info.path}/config.json" if loaded.info.path else "config.json"
        kinds = rope_layer_types(config, type(module), where=where)
        main = primary(kinds)
        phi = rotary_phi(length, main.inv_freq, metric)
        kind_name = f" ({main.name})" if main.name else ""
        source = f"{path}{kind_name}: base {main.base:g}, dim {main.dim}, rope_type {main.rope_type} (from config)"
        analysis = self.analysis(loaded.info.name, source, length, metric, phi, window)
        analysis.rope = rope_json(kinds, window, config, type(module), at_length)
        analysis.audit = audit(kinds, module, config, type(module), at_length)
        analysis.warnings += audit_warnings(kinds, analysis.audit, path)
        analysis.exports = {"inv_freq": inv_freq_export(kinds, config, type(module), analysis.audit)}
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
        analysis.notes += rope_notes(kinds)
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


def rope_notes(kinds: list[RopeLayerType]) -> list[str]:
    """What a reader must know to read the lengths: an inferred original length, the dynamic and LongRoPE rules."""
    main, notes = primary(kinds), []
    if main.original_inferred:
        notes.append(
            f"linear scaling with no original_max_position_embeddings: trained on max_position_embeddings / factor = "
            f"{main.max_positions} / {main.factor:g} = {main.original_max_positions} positions (position interpolation)"
        )
    if main.rope_type == "dynamic":
        notes.append(
            f"dynamic NTK: the frequencies change with the length of the text, from the start-up ones up to "
            f"{main.max_positions} positions (transformers' training length) to a larger base beyond; see the table "
            "of lengths"
        )
    if main.rope_type == "longrope":
        notes.append(
            f"LongRoPE: texts of up to {main.original_max_positions} positions rotate with the short factors, longer "
            f"ones (from {(main.original_max_positions or 0) + 1}) with the long factors, at every position"
        )
    return notes


def rope_json(
    kinds: list[RopeLayerType],
    window: int,
    config: Any = None,
    rotary_class: Any = None,
    at_length: int | None = None,
) -> dict[str, Any]:
    """The `rope` object of `positions --json`: the primary layer type's settings, every type's base and layers,
    the wavelength counts, Phi's monotonicity over the original and the extended number of positions, and what the
    model rotates with at each audited length (`lengths`: dynamic NTK's grown base, LongRoPE's short or long
    factors)."""
    main = primary(kinds)
    lengths = {"original": main.original_max_positions, "extended": main.extended_positions}
    monotonicity = {}
    for key, length in lengths.items():
        if length:
            by_offset = np.cos(np.arange(min(window, length) + 1)[:, None] * main.inv_freq).sum(axis=1)
            monotonicity[key] = {"positions": length, "monotonicity": toeplitz_monotonicity(by_offset, length, window)}
    at_lengths = []
    if config is not None:
        for length in audit_lengths(kinds, at_length):
            used = transformers_frequencies(config, main, rotary_class, length)
            wavelengths = 2 * math.pi / used
            row: dict[str, Any] = {
                "positions": length,
                "wavelength_min": float(wavelengths.min()),
                "wavelength_max": float(wavelengths.max()),
                "full_turn_within": int((wavelengths <= length).sum()),
                "change_from_start": relative_difference(used, main.inv_freq),
            }
            if main.rope_type == "dynamic":
                row["base"] = _dynamic_base(main, length)
            if main.rope_type == "longrope":
                row["factors"] = "long" if length > (main.original_max_positions or 0) else "short"
            at_lengths.append(row)
    data = {
        "type": main.rope_type,
        "base": main.base,
        "dim": main.dim,
        "factor": main.factor,
        "original_max_positions": main.original_max_positions,
        "original_inferred": main.original_inferred,
        "max_positions": main.max_positions,
        "extended_positions": main.extended_positions,
        "attention_factor": main.attention_factor,
        "layer_types": {kind.name: {"base": kind.base, "layers": kind.layers} for kind in kinds if kind.name} or None,
        "wavelengths": {
            "pairs": len(main.inv_freq),
            "full_turn_within_original": main.full_turns_within(main.original_max_positions),
            "table": wavelength_table(main),
        },
        "lengths": at_lengths,
        "longrope": None,
        "properties": monotonicity,
    }
    if main.rope_type == "longrope":
        data["longrope"] = {
            "short_factor": [float(f) for f in main.params["short_factor"]],
            "long_factor": [float(f) for f in main.params["long_factor"]],
            "short_up_to": main.original_max_positions,
            "long_from": (main.original_max_positions or 0) + 1,
        }
    return data


def _dynamic_base(kind: RopeLayerType, length: int) -> float:
    """transformers' dynamic NTK base at `length` (`_compute_dynamic_ntk_parameters`, training length =
    max_position_embeddings)."""
    maximum = kind.max_positions or length
    seq = max(length, maximum)
    factor = float(kind.factor or 1.0)
    return float(kind.base * (factor * seq / maximum - (factor - 1)) ** (kind.dim / (kind.dim - 2)))


def inv_freq_export(
    kinds: list[RopeLayerType], config: Any, rotary_class: Any, audit_result: dict[str, Any]
) -> dict[str, Any]:
    """Every pair's inverse frequency, per layer type ("all" when every layer rotates alike): at start-up and at
    each audited length (`--vectors`; at most 4096 pairs × 3 lists per layer type)."""
    out = {}
    for kind in kinds:
        entry: dict[str, Any] = {"start": kind.inv_freq.tolist()}
        for length in audit_result["lengths"]:
            entry[str(length)] = transformers_frequencies(config, kind, rotary_class, length).tolist()
        out[kind.name or "all"] = entry
    return out


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
                "full_turn_within_extended": int((part <= (kind.extended_positions or 0)).sum()),
            }
        )
    return rows


SCHEMES = (Rotary(),)
