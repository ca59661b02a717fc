"""`posemb extrapolate`: does a model's position encoding hold beyond its training length?

A causal language model reads one text in windows of each evaluation length; per *variant* (one way of changing the
model's positions) posemb reports the perplexity per length and the mean loss in position bins. Every RoPE variant is
built by transformers' own rope code: the model's rotary class is constructed again from a copy of the config whose
`rope_parameters` are overridden (`ROPE_INIT_FUNCTIONS[rope_type]` computes the frequencies, the attention factor and,
for dynamic and longrope, their change with the window length), and swapped in for the model's own while the variant
runs. No frequency formula is written here; `drop-low` and `nope-layer` only zero frequencies that transformers
computed. The model is loaded once for all variants.

Protocol. The text is one stream of tokens (no special tokens added). Windows of length n start at 0, s, 2s, ...
(s = `stride`, default n: non-overlapping) while the window fits in the text; a window scores the next-token loss of
the tokens no earlier window scored (the first window: positions 1..n-1; with s = n every window scores 1..n-1), the
sliding-window protocol of Press et al. (2022) that the YaRN paper (Peng et al. 2023, §4.1) uses with s = 256.
A token's loss is transformers' own `labels=` loss of that token (cross-entropy of the float32 logits, unreduced);
sums and means are float64. The position of a scored token is its index in its window. A variant whose rotary
module gives the same cos/sin at a length as an earlier variant's (dynamic NTK up to the training length, for one)
gets that variant's losses there without running again: the model's inputs would be the same.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import runner
from .errors import PosembError, PosembUsageError
from .finite import finite_number
from .models import LoadedModel, ModelInfo

KINDS = {  # variant kind -> type of its value (None: takes none)
    "as-trained": None,
    "none": None,
    "linear": float,
    "dynamic": float,
    "yarn": float,
    "llama3": float,
    "longrope": None,
    "drop-low": float,
    "nope-layer": int,
    "shift": int,
}
VARIANT_METAVAR = "as-trained|none|linear:F|dynamic:F|yarn:F|llama3:F|longrope|drop-low:P|nope-layer:L|shift:K"
ROPE_KINDS = ("none", "linear", "dynamic", "yarn", "llama3", "longrope", "drop-low", "nope-layer")
# --rope-param keys each scaled rope type reads (transformers' modeling_rope_utils)
ROPE_PARAMS = {
    "yarn": ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim"),
    "llama3": ("low_freq_factor", "high_freq_factor"),
    "longrope": ("attention_factor",),
}
LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0}  # Llama 3.1's released values
DEFAULT_BINS = 12
LOGITS_BUDGET = 2**22  # logits per forward pass (16 MiB in float32): windows are batched up to it (on CPU, batches
# of 2^22 logits ran 15% faster than of 2^25: the bench's model, 2 cores)
MAX_BATCH = 64
IGNORED = -100  # cross_entropy's ignore_index: the target of each window's last position (nothing follows it)
SHIFT_TOLERANCE = 1e-4  # a rotary model's shift:K may differ from as-trained by float32 rounding of larger angles


@dataclass(frozen=True)
class Variant:
    kind: str
    value: float | int | None = None

    @property
    def name(self) -> str:
        if self.value is None:
            return self.kind
        return f"{self.kind}:{self.value:g}" if isinstance(self.value, float) else f"{self.kind}:{self.value}"


def parse_variant(text: str) -> Variant:
    """`linear:4` -> Variant("linear", 4.0); a usage error naming the choices for anything else."""
    kind, colon, raw = text.strip().partition(":")
    if kind not in KINDS:
        raise PosembUsageError(f"unknown --variant {text!r}; choose from {VARIANT_METAVAR.replace('|', ', ')}")
    wanted = KINDS[kind]
    if wanted is None:
        if colon:
            raise PosembUsageError(f"--variant {kind} takes no value (got {text!r})")
        return Variant(kind)
    if not raw:
        raise PosembUsageError(f"--variant {kind} needs a value, e.g. {kind}:{_example(kind)}")
    try:
        value = wanted(raw)
    except ValueError:
        what = "an integer" if wanted is int else "a number"
        raise PosembUsageError(f"--variant {text!r}: {raw!r} is not {what}") from None
    if wanted is float and not math.isfinite(value):
        raise PosembUsageError(f"--variant {text!r}: the value must be finite")
    if kind in ("linear", "dynamic", "yarn", "llama3") and not value >= 1:
        raise PosembUsageError(f"--variant {text!r}: a scaling factor must be at least 1")
    if kind == "drop-low" and not 0 <= value <= 1:
        raise PosembUsageError(f"--variant {text!r}: the fraction of rotary pairs must be in 0..1")
    if kind in ("shift", "nope-layer") and value < 0:
        raise PosembUsageError(f"--variant {text!r}: must be 0 or more")
    return Variant(kind, value)


def _example(kind: str) -> str:
    return {"drop-low": "0.25", "nope-layer": "0", "shift": "512"}.get(kind, "4")


def parse_lengths(text: str) -> list[int]:
    """`512,2k,8k` -> [512, 2048, 8192] (k = 1024), sorted, without repeats."""
    lengths = set()
    for piece in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", piece)
        if not match:
            raise PosembUsageError(f"--lengths {text!r}: {piece.strip()!r} is not a length (e.g. 512, 2k, 8k)")
        value = int(match[1]) * (1024 if match[2] else 1)
        if not 2 <= value <= 2**20:
            raise PosembUsageError(f"--lengths {text!r}: {value} is out of range; give lengths in 2..1048576")
        lengths.add(value)
    return sorted(lengths)


def parse_bins(text: str) -> tuple[str, int]:
    """`12` or `log:12` (log-spaced) or `linear:8` -> (spacing, count)."""
    spacing, colon, count = text.partition(":")
    if not colon:
        spacing, count = "log", text
    if spacing not in ("log", "linear") or not count.strip().isdigit() or not 1 <= int(count) <= 1000:
        raise PosembUsageError(f"--bins {text!r}: give N, log:N or linear:N with N in 1..1000")
    return spacing, int(count)


def bin_edges(spacing: str, count: int, length: int, training: int | None = None) -> list[tuple[int, int]]:
    """Position bins [start, end) over the scored positions 1..length-1, log- or linearly spaced, integer edges
    (duplicates merged, so short windows may get fewer bins than asked). The training length is always an edge, so
    that a bin lies either within it or beyond it."""
    raw = np.geomspace(1, length, count + 1) if spacing == "log" else np.linspace(1, length, count + 1)
    edges = {int(round(x)) for x in raw} | {1, length}
    if training is not None and 1 < training < length:
        edges.add(training)
    ordered = sorted(edges)
    return list(zip(ordered[:-1], ordered[1:], strict=True))


# ---------------------------------------------------------------------------------------------- results


@dataclass
class VariantResult:
    name: str
    description: str  # the first line of its report: exactly what changed
    rope: dict[str, Any] | None  # as `positions --json` reports it (None: the model has no RoPE)
    perplexity: dict[int, float]
    loss: dict[int, float]  # mean token NLL per length (nats)
    tokens: dict[int, int]  # scored tokens per length
    bin_mean: list[float | None]
    bin_tokens: list[int]
    check: dict[str, Any] | None = None  # shift on a rotary model: against as-trained
    same_as: dict[int, str] = field(default_factory=dict)  # lengths whose losses are an earlier variant's
    notes: list[str] = field(default_factory=list)
    attention: dict[int, AttentionSums] | None = None  # --attention: per length

    def attention_means(self, length: int) -> dict[str, Any]:
        """--attention at `length`: sink, sink_rate and distance_profile, each the mean over layers and heads."""
        assert self.attention is not None
        return self.attention[length].means()

    def to_json(self, bins: list[tuple[int, int]], length: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "rope": self.rope,
            "perplexity": {str(n): finite_number(v) for n, v in self.perplexity.items()},
            "loss": {str(n): finite_number(v) for n, v in self.loss.items()},
            "tokens": {str(n): v for n, v in self.tokens.items()},
            "loss_by_position": {
                "length": length,
                "bins": [list(b) for b in bins],
                "mean": [finite_number(v) for v in self.bin_mean],
                "tokens": self.bin_tokens,
            },
            "check": self.check,
            "same_as": {str(n): name for n, name in self.same_as.items()},
            "attention": None if self.attention is None else {str(n): a.to_json() for n, a in self.attention.items()},
            "notes": self.notes,
        }


@dataclass
class Extrapolation:
    model: ModelInfo
    source: str  # the text's file name
    text_tokens: int
    lengths: list[int]
    stride: int | None  # None: non-overlapping windows
    windows: dict[int, int]
    training_length: int | None
    bins: list[tuple[int, int]]  # over the longest length's windows
    dtype: str
    variants: list[VariantResult]
    warnings: list[str] = field(default_factory=list)
    attention: dict[str, Any] | None = None  # --attention: sink_k, sink_threshold, distance_bins per length

    @property
    def bins_length(self) -> int:
        return self.lengths[-1]

    def best(self, length: int) -> str | None:
        """The variant with the lowest perplexity at `length` (None when none is finite)."""
        finite = [(v.perplexity[length], v.name) for v in self.variants if math.isfinite(v.perplexity[length])]
        return min(finite)[1] if finite else None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.to_json(),
            "text": {"source": self.source, "tokens": self.text_tokens},
            "training_length": self.training_length,
            "lengths": self.lengths,
            "stride": self.stride,
            "windows": {str(n): k for n, k in self.windows.items()},
            "dtype": self.dtype,
            "attention": self.attention,
            "variants": [v.to_json(self.bins, self.bins_length) for v in self.variants],
            "warnings": self.warnings,
        }


# ---------------------------------------------------------------------------------------------- the model


def check_causal(loaded: LoadedModel) -> None:
    """Only a causal language model has a next-token loss: one line for an encoder or a masked LM."""
    info, family = loaded.info, loaded.family
    if family.model_types and not family.causal:
        raise PosembError(
            f"extrapolate measures next-token loss, which needs a causal language model; {info.name} ({info.type}) "
            "is an encoder (masked LM)"
        )


def load_causal(name: str | None, device: str, dtype: str | None, trust_remote_code: bool) -> LoadedModel:
    """The model with its language-model head and SDPA attention; encoders and masked LMs are refused before any
    weight is read."""
    from .models import check_family, read_config, resolve

    display, path = resolve(name)
    raw = read_config(path)
    family = check_family(raw, display, trust_remote_code)
    if family.model_types and not family.causal:
        kind = raw.get("model_type", "?")
        raise PosembError(
            f"extrapolate measures next-token loss, which needs a causal language model; {display} ({kind}) is an "
            "encoder (masked LM)"
        )
    if not family.model_types:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if raw.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise PosembError(
                f"extrapolate needs a causal language model; transformers has no causal LM for {display} "
                f"(model_type {raw.get('model_type')!r})"
            )
    from .models import load

    return load(name, device=device, trust_remote_code=trust_remote_code, dtype=dtype, causal_lm=True)


@dataclass
class Rope:
    """The model's rotary module and the facts variants are built from."""

    path: str  # inside the base model
    module: Any
    parameters: dict[str, Any]  # the config's flat rope_parameters
    training_length: int


def model_rope(loaded: LoadedModel) -> Rope | None:
    """The rotary module and flat rope parameters, or None for a model without RoPE."""
    if loaded.info.position_scheme.split("+")[0] != "rotary" or not loaded.family.rotary_embedding:
        return None
    base = loaded.model.base_model
    module = base.get_submodule(loaded.family.rotary_embedding)
    config = loaded.model.config
    parameters = dict(getattr(config, "rope_parameters", None) or {})
    if parameters and all(isinstance(v, dict) for v in parameters.values()):
        raise PosembError(
            f"{loaded.info.name} has a RoPE per layer type ({', '.join(sorted(parameters))}); extrapolate changes "
            "one flat rope_parameters only"
        )
    original = parameters.get("original_max_position_embeddings") or config.max_position_embeddings
    return Rope(loaded.family.rotary_embedding, module, parameters, int(original))


def variant_parameters(variant: Variant, rope: Rope, extra: dict[str, float]) -> tuple[dict[str, Any], int]:
    """The rope_parameters (and max_position_embeddings) of a RoPE variant's config, for transformers' code."""
    given = rope.parameters
    kept: dict[str, Any] = {k: given[k] for k in ("rope_theta", "partial_rotary_factor") if k in given}
    if variant.kind in ("as-trained", "drop-low", "nope-layer", "shift"):
        return copy.deepcopy(given), rope.module.config.max_position_embeddings
    if variant.kind == "longrope":
        if given.get("rope_type") != "longrope":
            raise PosembUsageError(
                f"--variant longrope uses the config's own short and long factors; this model's rope_type is "
                f"{given.get('rope_type', 'default')}"
            )
        return {**copy.deepcopy(given), **_params_for("longrope", extra)}, rope.module.config.max_position_embeddings
    if variant.kind == "none":
        return {"rope_type": "default", **kept}, rope.training_length
    params: dict[str, Any] = {"rope_type": variant.kind, **kept, "factor": float(variant.value or 1)}
    if variant.kind in ("yarn", "llama3"):
        params["original_max_position_embeddings"] = rope.training_length
    if variant.kind == "llama3":
        params.update(LLAMA3_DEFAULTS)
    params.update(_params_for(variant.kind, extra))
    return params, rope.training_length


def _params_for(kind: str, extra: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in extra.items() if key in ROPE_PARAMS.get(kind, ())}


def build_rotary(loaded: LoadedModel, rope: Rope, parameters: dict[str, Any], max_positions: int) -> Any:
    """A fresh rotary module of the model's own class, from a copy of the config with these rope parameters."""
    config = copy.deepcopy(loaded.model.config)
    config.rope_parameters = parameters
    config.max_position_embeddings = max_positions
    module = type(rope.module)(config=config)
    for name, buffer in list(module.named_buffers(recurse=False)):
        old = getattr(rope.module, name, None)
        dtype = old.dtype if old is not None else buffer.dtype
        setattr(module, name, buffer.to(device=loaded.device, dtype=dtype))
    return module


def drop_low(module: Any, fraction: float) -> list[int]:
    """p-RoPE (Barbero et al. 2025): the lowest-frequency `fraction` of rotary pairs stop rotating (frequency 0).
    Returns the pairs dropped."""
    import torch

    inv_freq = module.inv_freq
    count = int(round(fraction * len(inv_freq)))
    dropped = sorted(torch.argsort(inv_freq.double())[:count].tolist())
    for name in ("inv_freq", "original_inv_freq"):
        buffer = getattr(module, name, None)
        if buffer is not None:
            buffer[dropped] = 0
    return dropped


@contextlib.contextmanager
def applied(loaded: LoadedModel, rope: Rope | None, rotary: Any | None, nope_layer: int | None) -> Iterator[None]:
    """Run the model with `rotary` in place of its rotary module, and with no rotation in layer `nope_layer`; the
    model's own module and no hook are left behind."""
    base = loaded.model.base_model
    parent_path, _, attribute = (rope.path if rope else "").rpartition(".")
    parent = base.get_submodule(parent_path) if parent_path else base
    handles = []
    try:
        if rope is not None and rotary is not None:
            setattr(parent, attribute, rotary)
        if nope_layer is not None and rope is not None and rotary is not None:
            handles.append(_nope_hook(loaded, rotary, nope_layer))
        yield
    finally:
        for handle in handles:
            handle.remove()
        if rope is not None:
            setattr(parent, attribute, rope.module)


def _nope_hook(loaded: LoadedModel, rotary: Any, layer: int) -> Any:
    """The attention of `layer` gets the rotary module's cos/sin at position 0 for every token: no rotation (cos 1
    times the attention factor, sin 0), the other layers as trained."""
    import torch

    template = loaded.family.attention_module
    if template is None:
        raise PosembError(f"the registry names no attention module for {loaded.family.name}")
    attention = loaded.model.base_model.get_submodule(template.format(layer=layer))

    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        embeddings = kwargs.get("position_embeddings")
        if embeddings is None:
            raise PosembError(f"nope-layer: the attention of {loaded.family.name} takes no position_embeddings")
        cos = embeddings[0]
        zero = torch.zeros(cos.shape[:2], dtype=torch.long, device=cos.device)
        return args, {**kwargs, "position_embeddings": rotary(cos, zero)}

    return attention.register_forward_pre_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------------------------------------- losses


def windows(total: int, length: int, stride: int | None) -> list[tuple[int, int]]:
    """(start, first scored position in the window) of each window of `length` in `total` tokens."""
    step = stride or length
    out, scored_to = [], 0  # tokens [0, scored_to) have been scored (or cannot be: token 0)
    for start in range(0, total - length + 1, step):
        first = max(1, scored_to - start)
        out.append((start, first))
        scored_to = start + length
    return out


def window_losses(
    loaded: LoadedModel,
    ids: Any,
    starts: Sequence[int],
    length: int,
    shift: int,
    argument: str | None,
    observe: AttentionSums | None = None,
) -> np.ndarray:
    """Next-token NLL at positions 1..length-1 of each window: (windows, length - 1), float64. Each token's NLL is
    the cross-entropy of the float32 logits (upcast from the model's dtype) with the next token, computed as
    transformers' own `labels=` loss computes it (`cross_entropy`, here unreduced); the caller sums them in float64.
    With `observe`, the forward runs on posemb's backend and `observe` reduces its attention."""
    import torch

    windows = torch.stack([ids[s : s + length] for s in starts]).to(loaded.device)
    kwargs: dict[str, Any] = {"input_ids": windows}
    if argument is not None:
        kwargs[argument] = (torch.arange(length, device=loaded.device) + shift).expand(len(starts), -1)
    with torch.inference_mode():
        if observe is None:
            output = runner.run(loaded, {**kwargs, "use_cache": False}, own_attention=True).output
        else:
            output = observe.run(loaded, kwargs)
        logits = output.logits.float()  # every position: the last one's target is ignored (no copy of a slice)
        targets = torch.cat([windows[:, 1:], windows.new_full((len(starts), 1), IGNORED)], dim=1)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none", ignore_index=IGNORED
        ).view(len(starts), length)[:, :-1]
    return nll.double().cpu().numpy()


def rope_signature(
    loaded: LoadedModel, rotary: Any | None, length: int, shift: int, nope_layer: int | None
) -> tuple[Any, ...]:
    """Everything a variant changes in the model's inputs at one window length: the shift of the position ids, the
    layer without rotation, and the (cos, sin) its rotary module returns for the window's positions (after what
    dynamic NTK and LongRoPE do with the length: transformers' own code). Two runs with equal signatures give every
    layer the same inputs, so the same losses."""
    if rotary is None:
        return (shift, nope_layer, None, None)
    import torch

    positions = (torch.arange(length, device=loaded.device) + shift)[None]
    with torch.inference_mode():
        cos, sin = rotary(torch.zeros(1, 1, dtype=loaded.model.dtype, device=loaded.device), positions)
    return (shift, nope_layer, cos, sin)


def same_signature(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Equal shift and layer, and bit-for-bit equal cos and sin."""
    import torch

    if a[:2] != b[:2] or (a[2] is None) != (b[2] is None):
        return False
    return a[2] is None or (torch.equal(a[2], b[2]) and torch.equal(a[3], b[3]))


@dataclass
class Sums:
    """Float64 sums of one variant at one length: total and by position in the window."""

    length: int
    nll: float = 0.0
    count: int = 0
    by_position: np.ndarray = field(default_factory=lambda: np.zeros(0))
    at_position: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.by_position = np.zeros(self.length)
        self.at_position = np.zeros(self.length, dtype=np.int64)

    def add(self, losses: np.ndarray, first: Sequence[int]) -> None:
        for row, start in zip(losses, first, strict=True):
            scored = row[start - 1 :]  # row k is position k + 1
            self.nll += float(scored.sum())
            self.count += len(scored)
            self.by_position[start:] += scored
            self.at_position[start:] += 1


class AttentionSums:
    """Float64 sums of one variant's attention at one length, over every query row of every window (`--attention`):
    per layer and head the mass on the first `sink_k` keys (`sink`), the windows whose mean attention on key 0 exceeds
    `threshold` (`sink_rate`), and the mass by offset i − j in the log-spaced bins of `stats.distance_bins`
    (`distance_profile`; causal: every key is at or before its row). The definitions of `posemb stats`."""

    def __init__(self, layers: int, heads: int, length: int, sink_k: int, threshold: float) -> None:
        from .stats import distance_bins

        self.length, self.sink_k, self.threshold = length, sink_k, threshold
        self.bins = distance_bins(length)
        self.sink = np.zeros((layers, heads))
        self.sink_windows = np.zeros((layers, heads))
        self.distance = np.zeros((layers, heads, len(self.bins)))
        self.rows = 0
        self.windows = 0
        self._key0: Any = None  # (windows of the batch, layers, heads): attention on key 0, summed over rows
        self._lookup: Any = None  # the distance bin of each offset (blocks.bin_lookup)

    def run(self, loaded: LoadedModel, inputs: dict[str, Any]) -> Any:
        """One forward of a batch of windows on posemb's backend, its attention reduced here; the model's output."""
        import torch

        size = inputs["input_ids"].shape[0]
        layers, heads = self.sink.shape
        self._key0 = torch.zeros(size, layers, heads, dtype=torch.float64, device=loaded.device)
        output = runner.run(loaded, inputs, reduce=self.reduce).output
        alpha0 = (self._key0 / self.length).cpu().numpy()
        self.sink_windows += (alpha0 > self.threshold).sum(0)
        self.rows += size * self.length
        self.windows += size
        return output

    def reduce(self, layer: int, top: int, block: Any) -> None:
        """One block (windows, heads, rows, keys) of rows top.. of a layer's probabilities into the sums."""
        import torch

        from . import blocks

        size, heads, count, keys = block.shape
        if self._lookup is None or len(self._lookup) < keys:
            self._lookup = blocks.bin_lookup(self.bins, max(keys, self.length), block.device)
        # the sink mass (a key mask) and distance_profile from one matrix product per block (blocks.py, as stats)
        sink_keys = (torch.arange(keys, device=block.device) < self.sink_k).to(block.dtype)
        plan = blocks.plan(top, count, keys, self._lookup, len(self.bins))
        masses, _, profile = blocks.reduce(block, plan, sink_keys[None, :, None].expand(size, keys, 1))
        self.sink[layer] += masses[..., 0].sum(dim=(0, 2), dtype=torch.float64).cpu().numpy()
        self._key0[:, layer] += block[..., 0].sum(-1, dtype=torch.float64)
        self.distance[layer] += profile.sum(dim=(0, 2), dtype=torch.float64).cpu().numpy()

    def per_head(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """sink and sink_rate (layers, heads) and distance_profile (layers, heads, bins): means over rows / windows."""
        rows, windows = max(self.rows, 1), max(self.windows, 1)
        return self.sink / rows, self.sink_windows / windows, self.distance / rows

    def means(self) -> dict[str, Any]:
        sink, rate, distance = self.per_head()
        return {
            "sink": finite_number(float(sink.mean())),
            "sink_rate": finite_number(float(rate.mean())),
            "distance_profile": [finite_number(float(x)) for x in distance.mean((0, 1))],
        }

    def to_json(self) -> dict[str, Any]:
        sink, rate, distance = self.per_head()
        return {
            "sink": _nested(sink),
            "sink_rate": _nested(rate),
            "distance_profile": _nested(distance),
            "mean": self.means(),
        }


def _nested(values: np.ndarray) -> list[Any]:
    return [_nested(v) for v in values] if values.ndim > 1 else [finite_number(float(x)) for x in values]


# ---------------------------------------------------------------------------------------------- the command


@dataclass
class Plan:
    """What a run will do, known before any forward pass (the progress bar's total)."""

    ids: Any  # the text's token ids, one stream (torch, long)
    source: str
    variants: list[Variant]  # as asked, repeats removed
    runs: list[Variant]  # those plus as-trained when a rotary shift needs it as its check
    lengths: list[int]
    stride: int | None
    plans: dict[int, list[tuple[int, int]]]  # per length: (window start, first scored position)
    rope: Rope | None
    rope_params: dict[str, float]
    attention: bool = False  # --attention: sink, sink_rate and distance_profile per variant and length

    @property
    def windows(self) -> int:
        """Forward passes of one window, over every run and length."""
        return len(self.runs) * sum(len(p) for p in self.plans.values())


def prepare(
    loaded: LoadedModel,
    text: str,
    source: str,
    variants: Sequence[Variant] = (),
    lengths: Sequence[int] | None = None,
    stride: int | None = None,
    rope_params: dict[str, float] | None = None,
    attention: bool = False,
) -> Plan:
    """Check the model, the variants and the lengths against the text's tokens, and plan the windows."""
    import torch

    check_causal(loaded)
    info = loaded.info
    rope = model_rope(loaded)
    extra = dict(rope_params or {})
    ids = torch.tensor(loaded.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    training = rope.training_length if rope else info.max_positions
    lengths = sorted(set(lengths or default_lengths(training, len(ids))))
    if len(ids) < lengths[0]:
        raise PosembError(
            f"{source} has {len(ids)} tokens, fewer than one window of {lengths[0]}: give a longer text or --lengths"
        )
    if len(ids) < lengths[-1]:
        raise PosembError(f"{source} has {len(ids)} tokens, fewer than one window of {lengths[-1]} (--lengths)")
    if stride is not None and stride > lengths[0]:
        raise PosembUsageError(
            f"--stride {stride} is more than the window length {lengths[0]}: tokens would be skipped"
        )
    wanted = list(dict.fromkeys(variants or default_variants(rope, training, lengths)))
    argument = loaded.family.forward_position_ids(loaded.model)
    for variant in wanted:
        _check_variant(loaded, rope, variant, lengths, argument)
    _check_rope_params(extra, wanted)
    if attention and not runner.uses_backend(loaded):
        raise PosembUsageError(
            f"--attention reads the attention on posemb's backend; {info.name} ({info.family}) computes its own"
        )
    reference = Variant("as-trained")
    needs_reference = rope is not None and any(v.kind == "shift" for v in wanted) and reference not in wanted
    return Plan(
        ids=ids,
        source=source,
        variants=wanted,
        runs=wanted + [reference] * needs_reference,
        lengths=lengths,
        stride=stride,
        plans={n: windows(len(ids), n, stride) for n in lengths},
        rope=rope,
        rope_params=extra,
        attention=attention,
    )


def default_variants(rope: Rope | None, training: int | None, lengths: Sequence[int]) -> list[Variant]:
    """as-trained, none, linear, dynamic and yarn with the factor longest length / training length (at least 2);
    as-trained alone without RoPE."""
    if rope is None or not training:
        return [Variant("as-trained")]
    factor = float(max(2, math.ceil(lengths[-1] / training)))
    scaled = [Variant(kind, factor) for kind in ("linear", "dynamic", "yarn")]
    untouched = rope.parameters.get("rope_type", "default") == "default"
    return [Variant("as-trained"), *([] if untouched else [Variant("none")]), *scaled]


def extrapolate(
    loaded: LoadedModel,
    plan: Plan,
    bins: tuple[str, int] = ("log", DEFAULT_BINS),
    on_window: Callable[[int], None] | None = None,
) -> Extrapolation:
    """Loss by position of the planned text under each variant (see the module docstring for the protocol)."""
    rope, lengths = plan.rope, plan.lengths
    argument = loaded.family.forward_position_ids(loaded.model)
    vocabulary = int(getattr(loaded.model.config, "vocab_size", 0) or len(loaded.tokenizer))
    done = 0
    sums: dict[Variant, dict[int, Sums]] = {}
    same: dict[Variant, dict[int, str]] = {}  # variant -> {length: the earlier variant whose losses it has}
    seen: dict[int, list[tuple[tuple[Any, ...], Variant]]] = {n: [] for n in lengths}
    observed: dict[Variant, dict[int, AttentionSums]] = {}
    info = loaded.info
    from .stats import DEFAULT_SINK_K as SINK_K  # posemb stats' defaults
    from .stats import DEFAULT_SINK_THRESHOLD as SINK_THRESHOLD

    for variant in plan.runs:
        sums[variant], same[variant] = {}, {}
        nope = int(variant.value or 0) if variant.kind == "nope-layer" else None
        shift = int(variant.value or 0) if variant.kind == "shift" else 0
        for n in lengths:
            rotary = _rotary_for(loaded, rope, variant, plan.rope_params)  # fresh per length: dynamic's state
            signature = rope_signature(loaded, rotary, n, shift, nope)
            twin = next((v for s, v in seen[n] if same_signature(s, signature)), None)
            if twin is not None:  # the model would get exactly the inputs it got for `twin`: same losses
                sums[variant][n], same[variant][n] = sums[twin][n], twin.name
                if plan.attention:
                    observed.setdefault(variant, {})[n] = observed[twin][n]
                done += len(plan.plans[n])
                if on_window is not None:
                    on_window(done)
                continue
            seen[n].append((signature, variant))
            total = Sums(n)
            observe = AttentionSums(info.layers, info.heads, n, SINK_K, SINK_THRESHOLD) if plan.attention else None
            if observe is not None:
                observed.setdefault(variant, {})[n] = observe
            batch = max(1, min(MAX_BATCH, LOGITS_BUDGET // (n * max(vocabulary, 1))))
            with applied(loaded, rope, rotary, nope):
                for k in range(0, len(plan.plans[n]), batch):
                    chunk = plan.plans[n][k : k + batch]
                    losses = window_losses(loaded, plan.ids, [s for s, _ in chunk], n, shift, argument, observe)
                    total.add(losses, [f for _, f in chunk])
                    done += len(chunk)
                    if on_window is not None:
                        on_window(done)
            sums[variant][n] = total
    training = rope.training_length if rope else loaded.info.max_positions
    edges = bin_edges(*bins, lengths[-1], training)
    reference = sums.get(Variant("as-trained"))
    results = [
        _result(loaded, rope, v, sums[v], lengths, edges, plan.rope_params, reference, same[v]) for v in plan.variants
    ]
    for done_result, v in zip(results, plan.variants, strict=True):
        done_result.attention = observed.get(v)  # None without --attention
    result = Extrapolation(
        model=loaded.info,
        source=plan.source,
        text_tokens=len(plan.ids),
        lengths=list(lengths),
        stride=plan.stride,
        windows={n: len(p) for n, p in plan.plans.items()},
        training_length=training,
        bins=edges,
        dtype=loaded.dtype,
        variants=results,
        attention=None
        if not plan.attention
        else {
            "sink_k": SINK_K,
            "sink_threshold": SINK_THRESHOLD,
            "distance_bins": {str(n): observed[plan.runs[0]][n].bins for n in lengths},
        },
    )
    for done_variant in results:
        check = done_variant.check
        if check is not None and not check["ok"]:
            result.warnings.append(
                f"{done_variant.name}: differs from as-trained by {check['max_abs_difference']:.2g} nats, more than "
                f"{SHIFT_TOLERANCE:g}; a rotary model's loss should not change when every position id moves by K"
            )
    return result


def default_lengths(training: int | None, tokens: int) -> list[int]:
    """The training length and 2x, 4x, 8x it, those the text holds (at least the first); without a training length,
    the text in one window."""
    if not training:
        return [tokens]
    lengths = [training * k for k in (1, 2, 4, 8) if training * k <= tokens]
    return lengths or [training]


def _check_rope_params(extra: dict[str, float], variants: Sequence[Variant]) -> None:
    readers = {key for v in variants for key in ROPE_PARAMS.get(v.kind, ())}
    unused = sorted(set(extra) - readers)
    if unused:
        known = ", ".join(f"{kind}: {' '.join(keys)}" for kind, keys in ROPE_PARAMS.items())
        raise PosembUsageError(f"--rope-param {', '.join(unused)} is read by none of the variants given ({known})")


def _check_variant(
    loaded: LoadedModel, rope: Rope | None, variant: Variant, lengths: Sequence[int], argument: str | None
) -> None:
    info = loaded.info
    if variant.kind in ROPE_KINDS and rope is None:
        raise PosembUsageError(
            f"--variant {variant.name} changes RoPE; {info.name} has {info.position_scheme} positions (try shift:K)"
        )
    if variant.kind == "nope-layer" and not int(variant.value or 0) < info.layers:
        raise PosembUsageError(f"--variant {variant.name}: {info.name} has layers 0..{info.layers - 1}")
    if variant.kind == "shift":
        if argument is None:
            raise PosembUsageError(f"--variant {variant.name}: {info.name} takes no position ids to shift")
        if (
            rope is None
            and info.max_positions is not None
            and lengths[-1] + int(variant.value or 0) > info.max_positions
        ):
            raise PosembUsageError(
                f"--variant {variant.name} at length {lengths[-1]} needs position ids up to "
                f"{lengths[-1] + int(variant.value or 0) - 1}; {info.name} has {info.max_positions} positions"
            )
    if rope is None and info.max_positions is not None and lengths[-1] > info.max_positions:
        raise PosembUsageError(
            f"--lengths {lengths[-1]} is more than the {info.max_positions} positions {info.name} has "
            f"({info.position_scheme})"
        )


def _rotary_for(loaded: LoadedModel, rope: Rope | None, variant: Variant, extra: dict[str, float]) -> Any:
    """A fresh rotary module for this variant, as a freshly loaded model's (dynamic and longrope keep state)."""
    if rope is None:
        return None
    module = build_rotary(loaded, rope, *variant_parameters(variant, rope, extra))
    if variant.kind == "drop-low":
        drop_low(module, float(variant.value or 0))
    return module


def _result(
    loaded: LoadedModel,
    rope: Rope | None,
    variant: Variant,
    sums: dict[int, Sums],
    lengths: Sequence[int],
    edges: list[tuple[int, int]],
    extra: dict[str, float],
    reference: dict[int, Sums] | None,
    same_as: dict[int, str],
) -> VariantResult:
    loss = {n: sums[n].nll / sums[n].count if sums[n].count else math.nan for n in lengths}
    longest = sums[lengths[-1]]
    bin_sum = [float(longest.by_position[a:b].sum()) for a, b in edges]
    bin_tokens = [int(longest.at_position[a:b].sum()) for a, b in edges]
    bin_mean = [s / t if t else None for s, t in zip(bin_sum, bin_tokens, strict=True)]
    description, rope_info = describe(loaded, rope, variant, extra, lengths[-1])
    result = VariantResult(
        name=variant.name,
        description=description,
        rope=rope_info,
        perplexity={n: math.exp(v) if math.isfinite(v) else math.nan for n, v in loss.items()},
        loss=loss,
        tokens={n: sums[n].count for n in lengths},
        bin_mean=bin_mean,
        bin_tokens=bin_tokens,
        same_as=dict(same_as),
    )
    for twin in dict.fromkeys(same_as.values()):
        at = ", ".join(str(n) for n, name in same_as.items() if name == twin)
        result.notes.append(
            f"at length {at}: the same cos/sin as {twin} at every position (transformers' rope code), so the same "
            "losses; not run again"
        )
    if variant.kind == "shift" and rope is not None and reference is not None:
        worst = 0.0
        for n in lengths:
            a, b = sums[n], reference[n]
            mean_a = np.divide(a.by_position, np.maximum(a.at_position, 1))
            mean_b = np.divide(b.by_position, np.maximum(b.at_position, 1))
            worst = max(worst, abs(loss[n] - b.nll / b.count), float(np.max(np.abs(mean_a - mean_b))))
        result.check = {"against": "as-trained", "max_abs_difference": worst, "ok": worst <= SHIFT_TOLERANCE}
        result.notes.append(
            f"rotary: scores depend only on offsets, so a shift must change nothing; largest |Δ loss| against "
            f"as-trained (per length and position) {worst:.1e} nats"
        )
    return result


# ---------------------------------------------------------------------------------------------- descriptions


def describe(
    loaded: LoadedModel, rope: Rope | None, variant: Variant, extra: dict[str, float], longest: int
) -> tuple[str, dict[str, Any] | None]:
    """The first line of a variant's report (what changed: base, factor, attention factor, which pairs) and its
    `rope` object as `positions --json` reports it."""
    if rope is None:
        scheme = loaded.info.position_scheme
        if variant.kind == "shift":
            return f"every position id + {variant.value} ({scheme} positions {variant.value}..)", None
        return f"the model as trained ({scheme} positions 0..)", None
    import torch

    from .schemes.rotary import rope_json, rope_layer_types

    parameters, max_positions = variant_parameters(variant, rope, extra)
    config = copy.deepcopy(loaded.model.config)
    config.rope_parameters, config.max_position_embeddings = parameters, max_positions
    kinds = rope_layer_types(config, type(rope.module))
    trained = build_rotary(loaded, rope, *variant_parameters(Variant("as-trained"), rope, extra)).inv_freq
    module = build_rotary(loaded, rope, parameters, max_positions)
    if variant.kind in ("dynamic", "longrope"):  # their frequencies depend on the window: those of the longest
        module(torch.zeros(1, 1, device=loaded.device), torch.arange(longest, device=loaded.device)[None])
    dropped = drop_low(module, float(variant.value or 0)) if variant.kind == "drop-low" else []
    inv_freq = module.inv_freq.double().cpu().numpy()
    kinds[0].inv_freq = inv_freq
    kinds[0].attention_factor = float(getattr(module, "attention_scaling", kinds[0].attention_factor))
    info = rope_json(kinds, 16)
    base, pairs = f"base {kinds[0].base:g}", len(inv_freq)
    factor = f"attention factor {kinds[0].attention_factor:.4g}"
    change = pair_changes(inv_freq, trained.double().cpu().numpy())
    trained_type = rope.parameters.get("rope_type", "default")
    return _sentence(variant, rope, parameters, trained_type, base, pairs, factor, change, dropped, longest), info


def _sentence(
    variant: Variant,
    rope: Rope,
    parameters: dict[str, Any],
    trained_type: str,
    base: str,
    pairs: int,
    factor: str,
    change: str,
    dropped: list[int],
    longest: int,
) -> str:
    kind, value, trained = variant.kind, variant.value, rope.training_length
    if kind == "as-trained":
        return f"the model as trained: rope_type {trained_type}, {base}, {pairs} rotary pairs, {factor}"
    if kind == "none":
        same = trained_type == "default"
        return f"rope scaling removed: rope_type default, {base}" + (
            " (the config has no scaling: same as as-trained)" if same else f"; {change}"
        )
    if kind == "linear":
        return f"linear (position interpolation) ×{value:g}: {change}"
    if kind == "dynamic":
        grows = f"the base grows with the window; at {longest}: {change}"
        return f"dynamic NTK ×{value:g} beyond {trained} positions ({grows})"
    if kind == "yarn":
        betas = f"beta_fast {parameters.get('beta_fast', 32):g}, beta_slow {parameters.get('beta_slow', 1):g}"
        return f"YaRN ×{value:g} from {trained} positions, {betas}, {factor}: {change}"
    if kind == "llama3":
        bands = (
            f"low_freq_factor {parameters['low_freq_factor']:g}, high_freq_factor {parameters['high_freq_factor']:g}"
        )
        return f"llama3 ×{value:g} from {trained} positions, {bands}: {change}"
    if kind == "longrope":
        return f"the config's LongRoPE factors (long ones beyond {trained} positions), {factor}; at {longest}: {change}"
    if kind == "drop-low":
        which = _ranges(dropped) or "none"
        return f"p-RoPE: {len(dropped)} of {pairs} pairs unrotated (lowest frequencies: {which}); others as trained"
    if kind == "nope-layer":
        return f"no rotation in layer {value} (NoPE there: cos 1, sin 0); the other layers as trained"
    return f"every position id + {value} (positions {value}..); RoPE as trained"


def pair_changes(new: np.ndarray, old: np.ndarray) -> str:
    """Which rotary pairs a variant changed, and how: `pairs 0–5 unchanged, 6–9 ÷1.3..÷3.6, 10–15 ÷4` (÷: the
    frequency divided by that much)."""
    labels = []
    for a, b in zip(new, old, strict=True):
        if b == 0 or abs(a / b - 1) < 1e-6:
            labels.append("unchanged")
        elif a == 0:
            labels.append("unrotated")
        else:
            labels.append(f"÷{b / a:.3g}" if b >= a else f"×{a / b:.3g}")
    groups: list[tuple[str, list[int]]] = []
    for k, label in enumerate(labels):
        if groups and groups[-1][0] == label:
            groups[-1][1].append(k)
        else:
            groups.append((label, [k]))
    merged: list[tuple[str, list[int]]] = []  # runs of single pairs with their own factor: one ramp a..b
    for label, ks in groups:
        ramp = len(ks) == 1 and label[0] in "÷×"
        if ramp and merged and merged[-1][0][0] in "÷×" and (len(merged[-1][1]) > 1) == (".." in merged[-1][0]):
            first = merged[-1][0].split("..")[0]
            merged[-1] = (f"{first}..{label}", merged[-1][1] + ks)
        else:
            merged.append((label, ks))
    if len(merged) == 1 and merged[0][0] == "unchanged":
        return "every rotary pair unchanged"
    return "pairs " + ", ".join(f"{_ranges(ks)} {label}" for label, ks in merged)


def _ranges(values: Sequence[int]) -> str:
    from .finite import index_ranges

    return index_ranges(np.asarray(values)) if len(values) else ""
