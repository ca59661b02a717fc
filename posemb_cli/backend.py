"""posemb's attention backend: one attention function and one mask function registered with transformers.

`register()` adds the implementation "posemb" to transformers' `AttentionInterface` (modeling_utils) and
`AttentionMaskInterface` (masking_utils). A model switched to it (`runner.run` does so for one forward) calls
`attention_forward` in every layer with the query, key and value it computed itself, after its own projections and
RoPE, so the rotation is always the model's. The function computes the attention output exactly, one block of query
rows at a time:

    logits = (q_block · kᵀ) · scaling        GQA / MQA: each key head with its group of query heads (no repeated keys)
    logits = tanh(logits / c) · c            soft-capping, where the model passes `softcap` (Gemma 2)
    logits = logits + position_bias          an additive bias the model passes (T5's relative buckets)
    logits = logits masked by the model's own mask function, evaluated for this block only
    p      = softmax(logits) in float32, with a learned sink logit per head where the model has one (`s_aux`)
    out    = p · v                           dropout off (posemb never trains)

and hands each block of probabilities p (batch, heads, rows, keys) to the observer of the forward (`Session`), which
adds its reductions to float64 accumulators and keeps explicit maps only where asked; then the block is let go. So no
`N × N` tensor exists: the mask function `mask_forward` returns a `LazyMask` (the mask's recipe) instead of a tensor,
and the largest temporaries are a few `heads × block × N` float32 arrays, with the block chosen from a memory budget.

Exactness. The output is the same sum as transformers' SDPA and eager paths (softmax of the same logits times the
same values), to float rounding: tests/test_backend.py checks the hidden states of every registry family that uses
the interface against SDPA's to 1e-5 in float32, and the probabilities against eager's maps. Keys past the last one
a block can see (causal masks) get a probability of exactly 0 and are not computed; observers receive the block's
columns up to there (`keys` ≤ N) and must treat the missing columns as zeros. A block is valid during its observer
call only: on the CPU the next block is computed into the same memory (an observer copies what it keeps, as
`runner._keep` does).

Families whose attention does not go through the interface (DeBERTa-v2, MPNet, BLOOM, and Falcon before transformers
5.25; `bypasses_interface`) keep transformers' eager path, which builds `heads × N × N` maps per layer.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NAME = "posemb"
DEFAULT_MEMORY = 1 << 28  # bytes for the blocks' temporaries (--memory): 256 MiB, the fastest of 128 MiB-1 GiB at 8k
# float32 arrays of one block that exist at once: logits, probabilities, and the reductions' temporaries (one of
# them float64: the running sums of distance_profile)
TEMPORARIES = 8

_registered = False
_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar("posemb_session", default=None)


def register() -> None:
    """Add "posemb" to transformers' attention and mask interfaces (once per process)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, mask_forward)
    _registered = True


def bypasses_interface(model: Any) -> bool:
    """Whether the model's attention ignores transformers' AttentionInterface (it has its own eager code, which the
    "posemb" implementation cannot reach): transformers' own test of the model's source."""
    return not type(model)._can_set_attn_implementation()


@dataclass
class LazyMask:
    """A mask recipe, in place of the `(batch, 1, q, kv)` tensor transformers' mask functions build: the model's own
    mask function (causal, sliding window, chunked, bidirectional; and with the padding mask) evaluated for one
    block of query rows at a time by `rows`."""

    batch_size: int
    q_length: int
    kv_length: int
    q_offset: Any
    kv_offset: Any
    mask_function: Callable[..., Any]
    use_vmap: bool
    device: Any

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, 1, self.q_length, self.kv_length)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def dtype(self) -> Any:
        import torch

        return torch.bool

    def materialize(self) -> Any:
        """The whole mask, (batch, 1, q, kv) bool, as transformers' `sdpa_mask` builds it: `q × kv` memory."""
        return self.rows(0, self.q_length)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        """A model that computes with its mask (Falcon with ALiBi in transformers 5.25 folds its bias into it: the
        model's own `heads × N × N` tensor, on SDPA as here) gets the mask built, as transformers would build it;
        posemb's attention function reads a `LazyMask` block by block and never comes here."""

        def real(value: Any) -> Any:
            if isinstance(value, LazyMask):
                return value.materialize()
            if isinstance(value, (list, tuple)):
                return type(value)(real(item) for item in value)
            return value

        return func(*real(args), **{key: real(value) for key, value in (kwargs or {}).items()})

    def rows(self, first: int, last: int) -> Any:
        """The boolean mask of query rows first..last − 1, (batch, 1, rows, kv): true where a key is seen."""
        import torch

        batch = torch.arange(self.batch_size, device=self.device)
        head = torch.arange(1, device=self.device)
        q = torch.arange(first, last, device=self.device) + self.q_offset
        kv = torch.arange(self.kv_length, device=self.device) + self.kv_offset
        if not self.use_vmap:
            from transformers.masking_utils import _non_vmap_expansion_sdpa

            mask = self.mask_function(*_non_vmap_expansion_sdpa(batch, head, q, kv))
        else:
            from transformers.masking_utils import TransformGetItemToIndex, _vmap_expansion_sdpa

            with TransformGetItemToIndex():
                mask = _vmap_expansion_sdpa(self.mask_function)(batch, head, q, kv)
        return mask.expand(self.batch_size, 1, last - first, self.kv_length)


def mask_forward(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable[..., Any] | None = None,
    attention_mask: Any = None,
    use_vmap: bool = False,
    device: Any = "cpu",
    **kwargs: Any,
) -> LazyMask:
    """The mask interface's function for "posemb": what transformers' `sdpa_mask` would build, as a `LazyMask`."""
    from transformers.masking_utils import (
        and_masks,
        causal_mask_function,
        padding_mask_function,
        prepare_padding_mask,
    )

    function = mask_function if mask_function is not None else causal_mask_function
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    if padding is not None:
        function = and_masks(function, padding_mask_function(padding))
    return LazyMask(batch_size, q_length, kv_length, q_offset, kv_offset, function, use_vmap, device)


class Session:
    """The observer of one forward: which layer each attention call is, the block size, and what to do with each
    block of probabilities. `runner.run` makes one per forward; `attention_forward` without one only computes."""

    def __init__(self, layers: int, memory: int = DEFAULT_MEMORY, observe: Callable[..., None] | None = None) -> None:
        self.layers = max(1, layers)
        self.memory = memory
        self.observe = observe  # (layer, first_row, probabilities (batch, heads, rows, keys ≤ N), rows_total)
        self.calls = 0
        self.on_layer: Callable[[int], None] | None = None  # progress: called after each layer
        # (layer, query (batch, heads, q, d), key (batch, kv_heads, kv, d)): the model's own, after its RoPE
        self.on_qk: Callable[[int, Any, Any], None] | None = None

    def next_layer(self) -> int:
        layer = self.calls % self.layers  # one module may serve several layers (ALBERT): calls come in layer order
        self.calls += 1
        return layer

    def __enter__(self) -> Session:
        self._token = _session.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _session.reset(self._token)


def block_rows(batch: int, heads: int, keys: int, memory: int = DEFAULT_MEMORY) -> int:
    """Query rows per block so that TEMPORARIES float32 arrays of (batch, heads, rows, keys) fit in `memory`."""
    per_row = batch * heads * keys * 4 * TEMPORARIES
    return max(1, memory // max(1, per_row))


def attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    position_bias: Any = None,
    is_causal: bool | None = None,
    s_aux: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature: query (batch, heads, q, d), key/value (batch, kv_heads, kv, d);
    returns the output (batch, q, heads, d) and None for the weights (they are observed, not returned)."""
    import torch

    session = _session.get()
    layer = session.next_layer() if session is not None else 0
    if session is not None and session.on_qk is not None:
        session.on_qk(layer, query, key)
    batch, heads, q_length, _ = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads  # GQA / MQA: each key head serves `groups` query heads (as transformers' repeat_kv):
    # the block's query rows of a key head's group are one matrix product with that head's keys, not repeated keys
    kv_length = key.shape[2]
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    # 1/√d for d = 4, 16, 64, 256; not in float16, whose narrow range could make s·q subnormal (or s·(q·kᵀ) finite
    # where q·kᵀ overflows), so that the two orders would differ
    exact = scaling > 0 and math.frexp(scaling)[0] == 0.5 and query.dtype != torch.float16
    if attention_mask is None:  # transformers skipped the mask: causal per the module (as SDPA's is_causal)
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = causal and q_length > 1
    else:
        causal = False
    sinks = s_aux if s_aux is not None else kwargs.get("sinks")
    memory = session.memory if session is not None else DEFAULT_MEMORY
    step = block_rows(batch, heads, kv_length, memory)
    output = query.new_empty(batch, heads, q_length, value.shape[-1])
    min_value = torch.finfo(torch.float32).min
    keys_t = key.transpose(-1, -2)
    # On the CPU each block's logits and probabilities go into one buffer reused by every block of the call (the
    # softmax in place): a fresh array per block of 32 MiB (8k tokens, 32 heads, 256 MiB budget) is memory the
    # kernel maps and zeroes again each time, which took longer than the product or the softmax itself (18 against
    # 8 ms for q·kᵀ, 12 against 3 ms for the softmax, on one such block). Other devices cache their allocations.
    # Not with autograd on (products with out= have no gradient): posemb runs in inference mode.
    reuse = query.device.type == "cpu" and not torch.is_grad_enabled()
    buffer = query.new_empty(batch * heads * min(step, q_length) * kv_length) if reuse else None
    wide = None  # a half-precision model's logits, upcast to float32 as .float() gives them
    if buffer is not None and query.dtype != torch.float32:
        wide = torch.empty_like(buffer, dtype=torch.float32)
    for first in range(0, q_length, step):
        last = min(q_length, first + step)
        rows = last - first
        seen = _seen(attention_mask, first, last, kv_length, causal, query.device)
        end = kv_length if seen is None else _last_seen(seen, kv_length)
        # a key head's group of query heads, all the block's rows, in one product with that head's keys
        grouped = query[:, :, first:last].reshape(batch, kv_heads, groups * rows, -1)
        # a power of two scales the block's few query rows exactly: (s·q)·kᵀ = s·(q·kᵀ) bit for bit; any other
        # scaling multiplies the logits after the product, as transformers does (scaling q would round differently)
        scaled = grouped * scaling if exact else grouped
        if buffer is None:
            logits = torch.matmul(scaled, keys_t[..., :end]).view(batch, heads, rows, end).float()
        else:
            product = buffer[: batch * heads * rows * end].view(batch, kv_heads, groups * rows, end)
            torch.matmul(scaled, keys_t[..., :end], out=product)
            logits = product.view(batch, heads, rows, end)
            if wide is not None:
                logits = wide[: logits.numel()].view(logits.shape).copy_(logits)
        if not exact:
            logits.mul_(scaling)
        if softcap is not None:
            logits = torch.tanh_(logits.div_(softcap)).mul_(softcap)
        if position_bias is not None:
            logits += position_bias[:, :, first:last, :end].float()
        if seen is not None:
            _apply_mask(logits, seen[..., :end], min_value)
        if sinks is not None:  # a learned sink logit per head, in the softmax's denominator only (gpt-oss)
            sink = sinks.reshape(1, -1, 1, 1).float().expand(batch, -1, rows, 1)
            combined = torch.cat([logits, sink], dim=-1)
            combined = combined - combined.amax(dim=-1, keepdim=True)
            probabilities = torch.softmax(combined, dim=-1)[..., :-1]
        elif buffer is not None:  # in place: bit for bit what torch.softmax returns
            probabilities = torch.ops.aten._softmax.out(logits, -1, False, out=logits)
        else:
            probabilities = torch.softmax(logits, dim=-1)
        del logits
        if session is not None and session.observe is not None:
            session.observe(layer, first, probabilities, q_length)
        weights = probabilities.to(value.dtype).reshape(batch, kv_heads, groups * rows, end)
        output[:, :, first:last] = torch.matmul(weights, value[:, :, :end]).view(batch, heads, rows, -1)
    if session is not None and session.on_layer is not None:
        session.on_layer(layer)
    return output.transpose(1, 2).contiguous(), None


def _apply_mask(logits: Any, block: Any, min_value: float) -> None:
    """Mask the block's logits in place: a bool mask (true = seen) sets the unseen ones to the float32 minimum, only
    over the columns where some row sees less than all (causal blocks: the block's own rows); a float mask adds."""
    import torch

    if block.dtype != torch.bool:  # an additive float mask (a model that builds its own)
        logits += block.float()
        return
    unseen = ~block
    columns = unseen.reshape(-1, unseen.shape[-1]).any(dim=0).nonzero().flatten()
    if len(columns) == 0:
        return
    lo, hi = int(columns[0]), int(columns[-1]) + 1
    logits[..., lo:hi].masked_fill_(unseen[..., lo:hi], min_value)


def _seen(attention_mask: Any, first: int, last: int, kv_length: int, causal: bool, device: Any) -> Any:
    """The block's mask (batch or 1, 1 or heads, rows, kv): bool (true = seen) or additive float; None = all seen."""
    import torch

    if isinstance(attention_mask, LazyMask):
        return attention_mask.rows(first, last)
    if attention_mask is not None:  # a tensor the model built itself
        return attention_mask[:, :, first:last, :kv_length]
    if causal:
        rows = torch.arange(first, last, device=device)[:, None]
        return (rows >= torch.arange(kv_length, device=device)[None, :])[None, None]
    return None


def _last_seen(seen: Any, kv_length: int) -> int:
    """1 + the last key any row of the block sees (bool masks; float masks: all keys)."""
    import torch

    if seen.dtype != torch.bool:
        return kv_length
    columns = seen.reshape(-1, seen.shape[-1]).any(dim=0)
    if not bool(columns.any()):
        return kv_length  # rows that see nothing (padding queries): keep every column, as transformers does
    return int(columns.nonzero().max()) + 1


def parse_memory(text: str) -> int:
    """'512MB', '2GB', '1.5GiB', '100000000' -> bytes (decimal units: 1 GB = 1e9 B; binary: 1 GiB = 2³⁰ B)."""
    units = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgib")
    unit = cleaned[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a memory size (write e.g. 512MB, 2GB or 1GiB)")
    return int(value * units[unit])
