"""`posemb ablate`: run a text with its position information altered and measure, layer by layer, what changed.

An *intervention* (DESIGN.md) is one of the modes below. Each text is run once as it is (the normal run, through
`core.inspect_texts`: same tokenizer call, truncation and warnings as `inspect`) and once per mode; every measure
compares the two runs' hidden states (the embedding output, then each layer's output):

- cosine between each token's hidden state in the normal and in the ablated run, the same token matched by identity
  (for permute-tokens, the token wherever it went), as the mean and the minimum over tokens;
- linear CKA (`metrics.linear_cka`, Kornblith et al. 2019) between the two runs' (tokens × hidden) matrices;
- the change (ablated − normal) of the attention statistics of `attention.py` (entropy, distance, self, prev,
  next), each pooled over heads and query rows; they describe the sequence the model was given (for permute-tokens,
  the permuted order). None for isolate, which has no n × n map.

Position ids are given through the model's own forward argument (`Family.forward_position_ids`) in the convention
`inspect` shows (the table row: RoBERTa-style models from padding_idx + 1, OPT from 2). Texts run one at a time: a
text's runs differ in their position ids, and one text at a time keeps every run exactly what transformers computes
for that text alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import attention, runner
from .attention import BlockSums, LayerSums
from .backend import DEFAULT_MEMORY
from .core import TextResult, inspect_texts
from .errors import PosembError, PosembUsageError
from .finite import finite_number
from .metrics import linear_cka, row_cosines
from .models import LoadedModel, ModelInfo

DEFAULT_MODES = ("zero", "shuffle", "reverse", "isolate", "permute-tokens")
POSITION_KINDS = ("zero", "shuffle", "reverse", "shift", "ids")  # modes that change the position ids
PERMUTING_KINDS = ("shuffle", "reverse", "permute-tokens")  # modes with an equivariance check
KINDS = POSITION_KINDS + ("isolate", "permute-tokens")
ATTENTION_KEYS = attention.names(attention.LAYERS_VIEW, ablated=True)
MODE_SYNTAX = "zero, shuffle, reverse, shift:K, ids:I,J,..., isolate, permute-tokens"


@dataclass(frozen=True)
class Mode:
    """One intervention: `name` as the user wrote it (normalised), `kind` one of KINDS."""

    name: str
    kind: str
    shift: int = 0
    ids: tuple[int, ...] = ()

    @property
    def sets_positions(self) -> bool:
        return self.kind in POSITION_KINDS


MAX_MODE_INTEGER = 2**24  # registry.SIZE_BOUNDS' largest max_positions: no position id or shift goes beyond it


def _mode_integer(text: str) -> int:
    """An integer of a mode argument: ASCII digits with an optional sign, at most MAX_MODE_INTEGER in size (int()
    alone would take "1_0", non-ASCII digits and thousands of digits)."""
    text = text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9 or int(digits) > MAX_MODE_INTEGER:
        raise ValueError(text)
    return int(text)


def parse_mode(text: str) -> Mode:
    """`zero`, `shuffle`, `reverse`, `shift:K`, `ids:0,0,1,...`, `isolate` or `permute-tokens`; else a usage error.
    K and the ids are integers of at most MAX_MODE_INTEGER in size, in ASCII digits."""
    kind, _, value = text.strip().partition(":")
    kind = kind.strip().lower()
    bound = f"{-MAX_MODE_INTEGER}..{MAX_MODE_INTEGER}"
    if kind == "shift":
        try:
            shift = _mode_integer(value)
        except ValueError:
            raise PosembUsageError(f"--mode {text!r}: shift takes an integer in {bound}, e.g. shift:7") from None
        return Mode(f"shift:{shift}", "shift", shift=shift)
    if kind == "ids":
        try:
            ids = tuple(_mode_integer(v) for v in value.split(","))
        except ValueError:
            raise PosembUsageError(
                f"--mode {text!r}: ids takes one integer in {bound} per token, e.g. ids:0,0,1,2"
            ) from None
        return Mode("ids:" + ",".join(map(str, ids)), "ids", ids=ids)
    if kind in KINDS and not value:
        return Mode(kind, kind)
    raise PosembUsageError(f"--mode {text!r}: unknown mode; use {MODE_SYNTAX}")


def parse_modes(texts: Sequence[str] | None) -> list[Mode] | None:
    """The modes of repeated --mode options, each once, in the order given; None when none was given."""
    if not texts:
        return None
    modes: list[Mode] = []
    for text in texts:
        mode = parse_mode(text)
        if mode not in modes:
            modes.append(mode)
    return modes


def applicable_modes(loaded: LoadedModel, modes: list[Mode] | None) -> tuple[list[Mode], list[str]]:
    """The modes to run and notes for the user. Without --mode: the defaults this model can run. A mode that needs
    position ids on a model that takes none (ALiBi, T5) is a usage error naming the modes that apply."""
    takes_ids = loaded.family.forward_position_ids(loaded.model) is not None
    if modes is None:
        chosen = [parse_mode(name) for name in DEFAULT_MODES]
        if takes_ids:
            return chosen, []
        kept = [mode for mode in chosen if not mode.sets_positions]
        return kept, [f"{_no_ids(loaded)}: running {' and '.join(mode.name for mode in kept)} only"]
    refused = [mode.name for mode in modes if mode.sets_positions and not takes_ids]
    if refused:
        raise PosembUsageError(
            f"--mode {', '.join(refused)}: {_no_ids(loaded)}; the modes that apply are isolate and permute-tokens"
        )
    return modes, []


def _no_ids(loaded: LoadedModel) -> str:
    return f"{loaded.info.name} ({loaded.info.position_scheme}) takes no position ids"


# ---------------------------------------------------------------- results


@dataclass
class LayerChange:
    """One layer's comparison of the ablated run with the normal one; layer "embeddings" is the embedding output."""

    layer: str | int
    cosine_mean: float
    cosine_min: float
    cka: float
    attention: dict[str, float] | None  # ablated minus normal, ATTENTION_KEYS; None for isolate and the embeddings

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "cosine_mean": finite_number(self.cosine_mean),
            "cosine_min": finite_number(self.cosine_min),
            "cka": finite_number(self.cka),
            "attention": None if self.attention is None else {k: finite_number(v) for k, v in self.attention.items()},
        }


@dataclass
class ModeResult:
    mode: str
    position_ids: list[list[int]] | None  # per text, the ids given to the model (None for isolate)
    layers: list[LayerChange]
    equivariance_max_deviation: float | None
    notes: list[str] = field(default_factory=list)
    token_order: list[list[int]] | None = None  # permute-tokens: per text, slot k of the ablated run held token [k]

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "position_ids": self.position_ids,
            "layers": [layer.to_json() for layer in self.layers],
            "equivariance_max_deviation": finite_number(self.equivariance_max_deviation),
            "token_order": self.token_order,
            "notes": self.notes,
        }


@dataclass
class Ablation:
    """What `posemb ablate` prints: one text, or (corpus mean) every text's tokens pooled."""

    model: ModelInfo
    text: str | None  # the text; None for a corpus mean
    texts: int
    tokens: int
    modes: list[ModeResult]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.to_json(),
            "text": self.text,
            "texts": self.texts,
            "tokens": self.tokens,
            "modes": [mode.to_json() for mode in self.modes],
            "warnings": self.warnings,
        }


# ---------------------------------------------------------------- computation


def ablate_texts(
    loaded: LoadedModel,
    texts: Iterable[str],
    modes: list[Mode],
    seed: int = 0,
    corpus_mean: bool = False,
    truncate: bool = True,
    on_text: Callable[[int], None] | None = None,
    memory: int = DEFAULT_MEMORY,
) -> Iterator[Ablation]:
    """One `Ablation` per text as it is computed, or with corpus_mean=True one for all texts (tokens pooled: every
    token weighs the same, every attention row too — the rule of `stats`). Empty texts are skipped. The attention
    statistics of every run are reduced in blocks during its forward (`attention.BlockSums`, `memory` bytes for the
    blocks): no N × N map is kept."""
    info = loaded.info
    pooled: list[_Accumulator] | None = None
    warnings: list[str] = []
    count = tokens = 0
    normal_runs = inspect_texts(
        loaded,
        (t for t in texts if t.strip()),
        batch_size=1,
        truncate=truncate,
        hidden_states=True,
        maps=None,
        memory=memory,
    )
    for normal in normal_runs:
        accumulators = pooled if pooled is not None else [_Accumulator(mode) for mode in modes]
        _ablate_one(loaded, normal, accumulators, seed, memory)
        count, tokens = count + 1, tokens + len(normal.tokens)
        if on_text is not None:  # progress: texts done
            on_text(count)
        if corpus_mean:
            pooled = accumulators
            warnings += [w for w in normal.warnings if w not in warnings]
        else:
            yield Ablation(
                info, normal.text, 1, len(normal.tokens), [a.result() for a in accumulators], normal.warnings
            )
    if corpus_mean:
        results = [a.result() for a in pooled] if pooled is not None else []
        yield Ablation(info, None, count, tokens, results, warnings)


@dataclass
class _Input:
    """What one run feeds the model: token ids, segment ids (None: the model has none) and position ids."""

    token_ids: np.ndarray  # (n,)
    segments: np.ndarray | None
    position_ids: np.ndarray | None  # (n,) in the model's convention (inspect's `pos`); None: the model's own

    @classmethod
    def of(cls, result: TextResult) -> _Input:
        segments = [t.segment for t in result.tokens]
        return cls(
            np.array([t.id for t in result.tokens]),
            None if any(s is None for s in segments) else np.array(segments),
            None,
        )

    def permuted(self, order: np.ndarray) -> _Input:
        """The tokens (and their segments) in `order`: slot k holds token order[k]."""
        segments = None if self.segments is None else self.segments[order]
        return _Input(self.token_ids[order], segments, self.position_ids)

    def at(self, position_ids: np.ndarray | None) -> _Input:
        return _Input(self.token_ids, self.segments, position_ids)


@dataclass
class _Run:
    hidden: np.ndarray  # (layers + 1, n, hidden): the embedding output, then each layer's output
    attention: LayerSums | None  # its attention statistics' sums; None for isolate and runs that need none


def _run(
    loaded: LoadedModel,
    given: _Input,
    argument: str | None,
    isolate: bool = False,
    special: np.ndarray | None = None,
    memory: int = DEFAULT_MEMORY,
) -> _Run:
    """One forward pass. isolate=True: every token alone, as a batch of one-token sequences — exactly the seed
    article's `model(input_ids.view(-1, 1))`, with the segment ids reshaped alike. With `special` (the special-token
    mask of the tokens in the order given), the attention statistics are reduced in blocks into `_Run.attention`."""
    import torch

    shape = (-1, 1) if isolate else (1, -1)
    inputs = {"input_ids": torch.as_tensor(given.token_ids).view(*shape)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])  # also keeps transformers from reading shuffled
    # position ids as packed sequences
    if given.segments is not None and loaded.family.takes_segments(loaded.model):
        inputs["token_type_ids"] = torch.as_tensor(given.segments).view(*shape)
    if given.position_ids is not None and argument is not None:
        forward_ids = given.position_ids - loaded.family.position_id_offset  # OPT: the argument counts from 0
        inputs[argument] = torch.as_tensor(forward_ids).view(*shape)
    inputs = {key: value.to(loaded.device) for key, value in inputs.items()}
    sums = None
    if special is not None and not isolate:
        real = inputs["attention_mask"].bool()
        sums = BlockSums(loaded.info.layers, real, torch.as_tensor(special, device=loaded.device)[None])
    forward = runner.run(loaded, inputs, hidden_states=True, reduce=sums, memory=memory)
    hidden = np.stack([state.detach().float().cpu().numpy() for state in forward.output.hidden_states])
    if isolate:
        return _Run(hidden[:, :, 0], None)  # (layers + 1, n, 1, d) -> row i is token i alone
    if sums is not None and sums.nonfinite is None:
        raise PosembError(f"{loaded.info.name} returned no attention weights (is attention eager?)")
    return _Run(hidden[:, 0], None if sums is None else sums.text(0))


def _ablate_one(
    loaded: LoadedModel, normal: TextResult, accumulators: list[_Accumulator], seed: int, memory: int
) -> None:
    """Run one text in every mode and add its measures to the accumulators (one per mode)."""
    assert normal.hidden_states is not None
    family = loaded.family
    argument = family.forward_position_ids(loaded.model)
    given = _Input.of(normal)
    n = len(given.token_ids)
    first = family.first_position_id(loaded.model.config)
    normal_ids = np.array([first + k if t.position_id is None else t.position_id for k, t in enumerate(normal.tokens)])
    special = normal.special_mask
    zeroed: _Run | None = None  # the zero-position run in normal order, shared by the equivariance checks
    for accumulator in accumulators:
        mode = accumulator.mode
        order = _order(mode, special, seed)  # slot k of the ablated run holds token order[k]
        ids = _position_ids(mode, normal_ids, first, order, normal.text)
        if ids is not None and (note := _check_limits(loaded, mode, ids, first)) is not None:
            accumulator.note(note)
        if mode.kind == "isolate":
            ablated = _run(loaded, given, argument, isolate=True)
        elif mode.kind == "permute-tokens":
            permuted = given.permuted(order).at(normal_ids if argument else None)
            ablated = _run(loaded, permuted, argument, special=special[order], memory=memory)
        else:
            ablated = _run(
                loaded, given.at(ids if ids is not None else normal_ids), argument, special=special, memory=memory
            )
        equivariance = None
        if mode.kind in PERMUTING_KINDS:
            if zeroed is None and argument is not None and not family.causal:
                zeroed = _run(loaded, given.at(np.full(n, first)), argument)
            equivariance = _equivariance(loaded, given, order, first, argument, zeroed, accumulator)
        slots = order if mode.kind == "permute-tokens" else np.arange(n)  # shuffle, reverse: tokens stay in place
        shown_ids = None if mode.kind == "isolate" else (ids if ids is not None else normal_ids)
        accumulator.add(normal, ablated, slots, shown_ids, equivariance)


def _order(mode: Mode, special: np.ndarray, seed: int) -> np.ndarray:
    """The permutation of the mode (identity for the others). shuffle and permute-tokens move only the tokens the
    tokenizer did not add ([CLS], [SEP], BOS stay where they are), drawn with numpy's default_rng(seed) and never the
    identity when two or more can move; reverse reverses every slot."""
    n = len(special)
    if mode.kind == "reverse":
        return np.arange(n)[::-1].copy()
    order = np.arange(n)
    if mode.kind not in ("shuffle", "permute-tokens"):
        return order
    movable = np.flatnonzero(~special)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        drawn = rng.permutation(movable)
        if len(movable) < 2 or not np.array_equal(drawn, movable):
            break
    order[movable] = drawn
    return order


def _position_ids(mode: Mode, normal: np.ndarray, first: int, order: np.ndarray, text: str) -> np.ndarray | None:
    """The position ids a mode gives the model, in the model's convention; None for modes that keep them."""
    n = len(normal)
    if mode.kind == "zero":
        return np.full(n, first)
    if mode.kind in ("shuffle", "reverse"):
        return normal[order]  # token k gets the id of token order[k]
    if mode.kind == "shift":
        return normal + mode.shift
    if mode.kind == "ids":
        if len(mode.ids) != n:
            raise PosembUsageError(
                f"--mode ids:… gives {len(mode.ids)} position ids, but {text!r} has {n} tokens (special tokens "
                "included; `posemb inspect` lists them)"
            )
        return np.array(mode.ids)
    return None


def _check_limits(loaded: LoadedModel, mode: Mode, ids: np.ndarray, first: int) -> str | None:
    """Ids that index a position table must lie inside it (a usage error naming the range). Other schemes compute
    any id, so ids past the positions the model was trained on only earn a note, which is returned."""
    name, limit = loaded.info.name, loaded.info.max_positions
    table = loaded.family.module(loaded.model, loaded.family.position_embedding) is not None
    low = first if table else 0
    if ids.min() < low:
        raise PosembUsageError(
            f"--mode {mode.name}: position id {int(ids.min())} is below {low}, the first {name} uses"
        )
    if limit is None or ids.max() <= first + limit - 1:
        return None
    if not table:
        return f"position ids up to {int(ids.max())} pass the {limit} positions {name} was trained on"
    largest = (
        f"; the largest shift for this {len(ids)}-token text is {limit - len(ids)}" if mode.kind == "shift" else ""
    )
    raise PosembUsageError(
        f"--mode {mode.name}: position id {int(ids.max())} passes the maximum of {name}, whose {limit} positions "
        f"have ids {first}..{first + limit - 1}{largest}"
    )


def _equivariance(
    loaded: LoadedModel,
    given: _Input,
    order: np.ndarray,
    first: int,
    argument: str | None,
    zeroed: _Run | None,
    accumulator: _Accumulator,
) -> float | None:
    """With every position id equal (and the segments moved with their tokens), an encoder whose only position
    information is the ids is permutation-equivariant: the tokens in `order` give the hidden states of the normal
    order, permuted alike. Returns the largest absolute deviation over all layers, tokens and dimensions (float
    error when the symmetry holds); None, with a note, where the check does not apply."""
    scheme = loaded.info.position_scheme
    if argument is None:
        accumulator.note(f"no equivariance check: {scheme} takes no position ids to make equal")
        return None
    if loaded.family.causal:
        accumulator.note(
            "no equivariance check: a causal mask lets token i see only the tokens before it, so permuting the "
            "tokens is no symmetry of this model even with equal positions"
        )
        return None
    assert zeroed is not None
    n = len(order)
    permuted = _run(loaded, given.permuted(order).at(np.full(n, first)), argument)
    if any(part in scheme for part in ("relative", "disentangled")):
        accumulator.note(
            f"{scheme} also computes relative positions from the token order, so equal position ids do not make "
            "the model permutation-equivariant"
        )
    return float(np.abs(permuted.hidden - zeroed.hidden[:, order]).max())


MAX_CKA_TOKENS = 4096  # hidden states kept for the pooled CKA: the first tokens of the texts (memory stays bounded)


class _Accumulator:
    """One mode's measures over the texts seen so far, pooled by token (cosines, CKA) and by attention row."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.cosines: list[np.ndarray] = []  # per text: (layers + 1, n)
        self.normal: list[np.ndarray] = []  # per text: (layers + 1, n, d), for the pooled CKA
        self.ablated: list[np.ndarray] = []  # the same tokens, matched by identity
        self.normal_attention = LayerSums()
        self.ablated_attention = LayerSums()
        self.position_ids: list[list[int]] = []
        self.orders: list[list[int]] = []
        self.deviation: float | None = None
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def add(
        self,
        normal: TextResult,
        ablated: _Run,
        slots: np.ndarray,
        ids: np.ndarray | None,
        deviation: float | None,
    ) -> None:
        """One text: slot k of the ablated run held token slots[k] of the normal run."""
        assert normal.hidden_states is not None
        self.orders.append([int(t) for t in slots])
        matched = ablated.hidden[:, np.argsort(slots)]  # token t of the text, wherever the mode put it
        self.cosines.append(row_cosines(normal.hidden_states, matched))
        room = MAX_CKA_TOKENS - sum(h.shape[1] for h in self.normal)
        if room < matched.shape[1]:
            self.note(f"CKA uses the first {MAX_CKA_TOKENS} tokens of the texts; the cosines use every token")
        if room > 0:
            self.normal.append(normal.hidden_states[:, :room])
            self.ablated.append(matched[:, :room])
        if ablated.attention is not None and normal.layer_sums is not None:
            self.normal_attention.merge(normal.layer_sums)
            self.ablated_attention.merge(ablated.attention)
        if ids is not None:
            self.position_ids.append([int(i) for i in ids])
        if deviation is not None:
            self.deviation = max(deviation, self.deviation or 0.0)

    def result(self) -> ModeResult:
        cosines = np.concatenate(self.cosines, axis=1)  # (layers + 1, tokens of every text)
        normal = np.concatenate(self.normal, axis=1)
        ablated = np.concatenate(self.ablated, axis=1)
        changes = _attention_changes(self.normal_attention, self.ablated_attention)
        layers = []
        for index in range(cosines.shape[0]):
            layers.append(
                LayerChange(
                    layer="embeddings" if index == 0 else index - 1,
                    cosine_mean=float(cosines[index].mean()),
                    cosine_min=float(cosines[index].min()),
                    cka=linear_cka(normal[index], ablated[index]),
                    attention=None if changes is None or index == 0 else changes[index - 1],
                )
            )
        ids = None if self.mode.kind == "isolate" else self.position_ids
        order = self.orders if self.mode.kind == "permute-tokens" else None
        return ModeResult(self.mode.name, ids, layers, self.deviation, list(self.notes), order)


def _attention_changes(normal: LayerSums, ablated: LayerSums) -> list[dict[str, float]] | None:
    """Per layer, ablated − normal of each statistic in ATTENTION_KEYS (means pooled over heads and rows)."""
    before, after = normal.means(), ablated.means()
    if not after:
        return None
    return [{key: b[key] - a[key] for key in ATTENTION_KEYS} for a, b in zip(before, after, strict=True)]
