"""The one place that calls a model's forward (`run`), with the hooks a caller asks for.

A caller says what it needs from one forward of a batch:
- `embeddings`: what the token / position / segment / rotary modules receive and return (forward hooks);
- `hidden_states`: every layer's output;
- `reduce(layer, first_row, block)`: called with every block of attention probabilities, (batch, heads, rows,
  keys), float32, rows first_row.. of the layer's map; keys beyond `block.shape[-1]` have probability 0 (a causal
  block stops at its last row). The caller adds its reductions and lets the block go;
- `maps`: explicit maps to keep (`Maps`: some layers, heads, query rows), within a budget;
- `own_attention`: the model's output alone, with the attention it was loaded with (SDPA for `posemb extrapolate`'s
  causal LM; DeBERTa's eager for the disentangled terms): no hooks, no maps.
- `qk(layer, query, key)`: the query (batch, heads, N, d) and key (batch, kv_heads, N, d) each layer's attention
  receives, after the model's own RoPE (posemb's backend only: `uses_backend`).

Families whose attention goes through transformers' AttentionInterface run on posemb's backend (`backend.py`): the
model computes its own q, k, v and RoPE, and posemb the attention, block by block, without any N × N tensor.
Families that bypass the interface (`backend.bypasses_interface`: DeBERTa-v2, MPNet, BLOOM; Falcon before
transformers 5.25) run eager: each layer's full (batch, heads, N, N) maps are read from a forward hook on the layer's
attention module (registry: `Family.attention_module`), cut into the same row blocks, and dropped after their layer.
For those, `fallback_check` compares eager and SDPA hidden states once per model and says when they differ (the eager
maps are then not what the model computes in production).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import backend
from .errors import PosembError, PosembUsageError
from .models import LoadedModel

DEFAULT_MAP_BUDGET = 2 << 30  # bytes of explicit maps a command may keep (float32)
FALLBACK_TOLERANCE = 1e-4  # relative difference of eager vs SDPA hidden states that `fallback_check` reports
Reduce = Callable[[int, int, Any], None]


@dataclass(frozen=True)
class Maps:
    """Which explicit attention maps to keep: `layers` / `heads` (None: all) and query rows first..last − 1
    (None: all). Kept maps are float32 (batch, heads kept, rows kept, N)."""

    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    rows: tuple[int, int] | None = None
    budget: int = DEFAULT_MAP_BUDGET
    narrow: str = "ask for fewer layers, heads or rows"  # how the command's user narrows it (the usage error says)


@dataclass
class Forward:
    """What one forward gave: the model's output, the embedding modules' (ids, output), the kept maps per layer
    (None where not kept) and whether posemb's backend computed the attention."""

    output: Any
    captured: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    maps: list[Any] | None = None
    on_backend: bool = True


def uses_backend(loaded: LoadedModel) -> bool:
    """Whether the model's attention goes through posemb's backend (else: transformers' eager path)."""
    return not backend.bypasses_interface(loaded.model)


def run(
    loaded: LoadedModel,
    inputs: dict[str, Any],
    *,
    embeddings: bool = False,
    hidden_states: bool = False,
    reduce: Reduce | None = None,
    maps: Maps | None = None,
    memory: int = backend.DEFAULT_MEMORY,
    on_layer: Callable[[int], None] | None = None,
    own_attention: bool = False,
    qk: Callable[[int, Any, Any], None] | None = None,
) -> Forward:
    """One forward of `inputs` (input_ids, attention_mask, ... on the model's device), in inference mode."""
    import torch

    if own_attention and (embeddings or reduce or maps or on_layer or qk):
        raise ValueError("own_attention runs the model as loaded: no embeddings, reductions, maps, layer calls or q/k")

    model, info = loaded.model, loaded.info
    if qk is not None and not uses_backend(loaded):
        raise PosembError(
            f"the attention of {info.name} does not go through posemb's backend: its q and k are not seen"
        )
    batch, length = inputs["input_ids"].shape
    if maps is not None:
        check_map_budget(loaded, maps, batch, length)
    kept: list[Any] = [None] * info.layers
    options: dict[str, Any] = {"output_hidden_states": hidden_states, "return_dict": True}
    if loaded.family.causal:
        options["use_cache"] = False

    def observe(layer: int, first: int, block: Any, rows_total: int | None = None) -> None:
        if reduce is not None:
            reduce(layer, first, block)
        if maps is not None and (maps.layers is None or layer in maps.layers):
            _keep(kept, maps, layer, first, block, length)

    captured: dict[str, tuple[Any, Any]] = {}
    with torch.inference_mode(), _embedding_hooks(loaded, captured, embeddings):
        if own_attention:  # the caller's inputs may set the options themselves (use_cache)
            return Forward(model(**{**options, **inputs}), captured, None, False)
        if uses_backend(loaded):
            backend.register()
            session = backend.Session(info.layers, memory, observe if reduce or maps else None)
            session.on_layer, session.on_qk = on_layer, qk
            with _implementation(model, backend.NAME), session:
                output = model(**inputs, **options)
            if reduce is not None or maps is not None or qk is not None:
                _check_calls(loaded, session.calls)
            return Forward(output, captured, kept if maps is not None else None, True)
        output = _eager(loaded, inputs, options, observe if reduce or maps else None, memory, on_layer)
    return Forward(output, captured, kept if maps is not None else None, False)


def check_map_budget(loaded: LoadedModel, maps: Maps, batch: int, length: int) -> None:
    """Refuse (a usage error that says how to narrow it) explicit maps beyond `maps.budget` bytes."""
    layers = loaded.info.layers if maps.layers is None else len(maps.layers)
    heads = loaded.info.heads if maps.heads is None else len(maps.heads)
    rows = length if maps.rows is None else max(0, min(length, maps.rows[1]) - maps.rows[0])
    need = 4 * batch * layers * heads * rows * length
    if need > maps.budget:
        raise PosembUsageError(
            f"explicit attention maps of {layers} layer(s) × {heads} head(s) × {rows} row(s) × {length} keys need "
            f"{need / 1e9:.1f} GB, more than the {maps.budget / 1e9:.1f} GB posemb keeps; {maps.narrow}"
        )


def _keep(kept: list[Any], maps: Maps, layer: int, first: int, block: Any, length: int) -> None:
    import torch

    rows = block.shape[2]
    top, bottom = maps.rows if maps.rows is not None else (0, length)
    lo, hi = max(first, top), min(first + rows, bottom)
    if lo >= hi:
        return
    if kept[layer] is None:
        heads = block.shape[1] if maps.heads is None else len(maps.heads)
        kept[layer] = torch.zeros(block.shape[0], heads, bottom - top, length, dtype=torch.float32, device=block.device)
    part = block[:, :, lo - first : hi - first]
    if maps.heads is not None:
        part = part[:, list(maps.heads)]
    kept[layer][:, :, lo - top : hi - top, : block.shape[-1]] = part.float()


@contextlib.contextmanager
def _implementation(model: Any, name: str) -> Iterator[None]:
    """The model's attention implementation switched to `name` for one forward (the config field transformers' own
    `set_attn_implementation` sets, without its checks: the model was loaded and checked with eager)."""
    config = model.config
    before = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = before


@contextlib.contextmanager
def _embedding_hooks(loaded: LoadedModel, captured: dict[str, tuple[Any, Any]], wanted: bool) -> Iterator[None]:
    """Forward hooks that keep what each embedding module receives (the ids) and returns (its first call only)."""
    if not wanted:
        yield
        return
    family, model = loaded.family, loaded.model

    def capture(key: str, ids_from_kwarg: str | None, keep_output: bool) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if key in captured:  # keep the first call: the one on the input ids
                return
            ids = kwargs.get(ids_from_kwarg) if ids_from_kwarg else None
            if ids is None:
                ids = args[1] if ids_from_kwarg and len(args) > 1 else (args[0] if args else kwargs.get("input"))
            captured[key] = (ids, output if keep_output else None)

        return hook

    modules = [  # (what, module path, keyword that carries the ids (None: the first argument), keep the output)
        ("token", family.token_embedding, None, True),
        ("position", family.position_embedding, family.position_ids_kwarg, True),
        ("segment", family.segment_embedding, None, True),
        ("rotary", family.rotary_embedding, "position_ids", False),
    ]
    handles = [
        module.register_forward_hook(capture(key, kwarg, keep), with_kwargs=True)
        for key, path, kwarg, keep in modules
        if (module := family.module(model, path)) is not None
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _eager(
    loaded: LoadedModel,
    inputs: dict[str, Any],
    options: dict[str, Any],
    observe: Callable[..., None] | None,
    memory: int,
    on_layer: Callable[[int], None] | None,
) -> Any:
    """The eager path: a hook on each layer's attention module hands its full maps to `observe` in row blocks."""
    info, family = loaded.info, loaded.family
    path = family.attention_module
    paths = [path.format(layer=layer) for layer in range(info.layers)] if path else []
    calls = [0] * info.layers
    index = family.attention_weights

    def blocks(layer: int, weights: Any) -> None:
        calls[layer] += 1
        if observe is not None:
            batch, heads, rows, keys = weights.shape
            step = backend.block_rows(batch, heads, keys, memory)
            for first in range(0, rows, step):
                observe(layer, first, weights[:, :, first : first + step].float(), rows)
        if on_layer is not None:
            on_layer(layer)

    def hook_for(layers: list[int], where: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            weights = output[index] if isinstance(output, tuple) and len(output) > index else None
            if weights is None:
                raise PosembError(f"{info.name} returned no attention weights from {where} (is attention eager?)")
            done = sum(calls[layer] for layer in layers)
            blocks(layers[done % len(layers)], weights)

        return hook

    handles = []
    modules: dict[int, tuple[Any, list[int], str]] = {}  # one module may serve several layers (ALBERT)
    if observe is not None or on_layer is not None:
        for layer, where in enumerate(paths):
            module = family.module(loaded.model, where)
            if module is None:
                raise PosembError(f"{info.name} has no attention module {where}")
            modules.setdefault(id(module), (module, [], where))[1].append(layer)
    asked = observe is not None and (not paths or family.attention_when_asked)
    try:
        for module, layers, where in modules.values():
            handles.append(module.register_forward_hook(hook_for(layers, where)))
        output = loaded.model(**inputs, output_attentions=asked, **options)
    finally:
        for handle in handles:
            handle.remove()
    if observe is not None and not paths:  # the generic path: the model returns every layer's maps
        if not output.attentions or output.attentions[0] is None:
            raise PosembError(f"{info.name} returned no attention weights (is attention eager?)")
        for layer, weights in enumerate(output.attentions):
            blocks(layer, weights)
    if observe is not None:
        missing = [layer for layer, count in enumerate(calls) if not count]
        if missing:
            raise PosembError(f"the attention of layer {missing[0]} of {info.name} was never computed")
    return output


def _check_calls(loaded: LoadedModel, calls: int) -> None:
    if calls < loaded.info.layers:
        raise PosembError(
            f"only {calls} of {loaded.info.layers} layers of {loaded.info.name} called posemb's attention backend"
        )


_checked: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()  # model -> warnings (an id
# could be reused by a later model once the first is freed)


def fallback_check(loaded: LoadedModel) -> list[str]:
    """For a model on the eager fallback that also has an SDPA path: run a short probe both ways, once per loaded
    model, and return a warning when the hidden states differ by more than FALLBACK_TOLERANCE (relative): then the
    eager maps posemb reads are not the attention the model computes in production. [] otherwise."""
    key = loaded.model
    if key in _checked:
        return _checked[key]
    _checked[key] = []
    model = loaded.model
    if uses_backend(loaded) or not getattr(type(model), "_supports_sdpa", False):
        return []
    import torch

    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 2:
        return []
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, 16), generator=generator).to(loaded.device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    options: dict[str, Any] = {"output_hidden_states": True, "return_dict": True}
    if loaded.family.causal:
        options["use_cache"] = False
    try:
        with torch.inference_mode():
            eager = model(**inputs, **options).hidden_states
            with _implementation(model, "sdpa"):
                sdpa = model(**inputs, **options).hidden_states
    except Exception:  # noqa: BLE001 - a model whose SDPA path does not run here: nothing to compare
        return []
    worst, where = 0.0, 0
    for layer, (a, b) in enumerate(zip(eager[1:], sdpa[1:], strict=True)):
        scale = float(b.float().abs().max()) or 1.0
        difference = float((a.float() - b.float()).abs().max()) / scale
        if difference > worst:
            worst, where = difference, layer
    if worst > FALLBACK_TOLERANCE:
        _checked[key] = [
            f"{loaded.info.name}: transformers' eager attention (which posemb reads for this family) and its SDPA "
            f"path give different hidden states (relative difference {worst:.2g} at layer {where}); the attention "
            "maps shown may not be what the model computes in production"
        ]
    return _checked[key]
