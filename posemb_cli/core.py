"""Pure computation: text in, token/position/segment/sum vectors and attention maps out.

Everything a user can see is computed here once; the renderers only read `TextResult`.
Nothing here knows about Typer, rich or matplotlib.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import charsets
from .attention import ROW_SUM_TOLERANCE, BlockSums, LayerSums
from .backend import DEFAULT_MEMORY
from .batches import chunks
from .errors import PosembError
from .finite import index_ranges, nonfinite_warning
from .metrics import row_cosines
from .models import LoadedModel, ModelInfo, load
from .runner import Maps
from .tokens import Token
from .words import WordView, word_view


@dataclass
class TextResult:
    text: str
    pair: str | None
    model: ModelInfo
    tokens: list[Token]
    token: np.ndarray | None  # (n, embedding_size) token embeddings; None on the generic path
    position: np.ndarray | None  # (n, embedding_size); None for rotary / ALiBi / no-vector schemes
    segment: np.ndarray | None  # (n, embedding_size); None where the model has no token-type embedding
    sum: np.ndarray | None  # token + position + segment, before normalisation; None on the generic path
    embedding_output: np.ndarray  # (n, hidden_size): what the first transformer layer receives
    # explicit maps, only where asked (`inspect_texts(maps=...)`): (layers kept, heads kept, n, n), rows are queries;
    # attention_layers / attention_heads: the layers and heads they are (`attention_of` picks by those ids; empty:
    # every one)
    attention: np.ndarray | None
    warnings: list[str] = field(default_factory=list)
    # (layers + 1, n, hidden): the embedding output, then each layer's output; only with hidden_states=True
    hidden_states: np.ndarray | None = None
    layers: list[dict[str, float]] = field(default_factory=list)  # attention.layer_summary: per layer, what tables show
    words: WordView | None = None  # the text word by word; only with words=True
    attention_layers: list[int] = field(default_factory=list)
    attention_heads: list[int] = field(default_factory=list)
    layer_sums: LayerSums | None = None  # the sums behind `layers`, reduced in blocks (compare and ablate pool them)
    # Computed once from the vectors (in __post_init__) and read by every renderer (table, JSON/CSV, HTML, figure):
    norms: dict[str, np.ndarray | None] = field(init=False)  # per part (token, ..., embedding_output): (n,) L2 norms
    token_sum_cosine: np.ndarray | None = field(init=False)  # (n,) cos(token, sum); None on the generic path

    def __post_init__(self) -> None:
        if self.attention is not None:  # maps made without naming their layers and heads: every one, in order
            self.attention_layers = self.attention_layers or list(range(self.attention.shape[0]))
            self.attention_heads = self.attention_heads or list(range(self.attention.shape[1]))
        parts = {"token": self.token, "position": self.position, "segment": self.segment, "sum": self.sum}
        parts["embedding_output"] = self.embedding_output
        self.norms = {name: None if v is None else np.linalg.norm(v, axis=-1) for name, v in parts.items()}
        self.token_sum_cosine = None  # 1 means position and segment changed nothing
        if self.token is not None and self.sum is not None:
            self.token_sum_cosine = row_cosines(self.token, self.sum).astype(self.token.dtype)

    def attention_of(self, layers: Iterable[int] | None = None, heads: Iterable[int] | None = None) -> np.ndarray:
        """The kept maps of these layers and heads (ids from 0; None: every kept one), (layers, heads, n, n)."""
        if self.attention is None:
            raise ValueError("no attention maps were kept for this text (inspect_texts(maps=...))")
        rows = [self.attention_layers.index(x) for x in layers] if layers is not None else None
        columns = [self.attention_heads.index(x) for x in heads] if heads is not None else None
        picked = self.attention if rows is None else self.attention[rows]
        return picked if columns is None else picked[:, columns]

    def head_mean(self, layers: Iterable[int]) -> np.ndarray:
        """(layers, n, n): these layers' attention averaged over all their heads (the attention grid's mean column)."""
        if len(self.attention_heads) != self.model.heads:
            raise ValueError("the mean over heads needs every head's maps")
        return self.attention_of(layers).mean(axis=1)

    @property
    def special_mask(self) -> np.ndarray:
        return np.array([t.special for t in self.tokens], dtype=bool)


EVERY_MAP = Maps(narrow="give a shorter text, or ask for fewer maps (inspect_texts(maps=...); maps=None: none)")


def inspect_text(text: str, pair: str | None = None, model: str | None = None, **options: Any) -> TextResult:
    """Python entry point: `from posemb_cli import inspect_text`; the same numbers the CLI prints."""
    loaded = load(model, device=options.pop("device", "cpu"), trust_remote_code=options.pop("trust_remote_code", False))
    return next(inspect_texts(loaded, [text], pair=pair, **options))


def inspect_texts(
    loaded: LoadedModel,
    texts: Iterable[str],
    pair: str | None = None,
    batch_size: int = 16,
    truncate: bool = True,
    hidden_states: bool = False,
    words: bool = False,
    maps: Maps | None = EVERY_MAP,
    memory: int = DEFAULT_MEMORY,
) -> Iterator[TextResult]:
    """Inspect texts lazily, `batch_size` at a time (padded and masked); yields results in input order.

    The per-layer summary (`TextResult.layers`) is reduced in blocks during the forward (`attention.BlockSums`). The
    explicit maps kept are those `maps` asks for (`runner.Maps`: layers, heads, within a budget); by default every
    map, as the Python API always gave; maps=None keeps none, so no N × N map exists. words=True (the word view,
    `inspect --words`, merges every map into words) keeps every map. hidden_states=True also keeps every layer's
    output in `TextResult.hidden_states` (for `compare`); `memory`: bytes for the attention blocks (`--memory`)."""
    if words:
        maps = Maps(budget=(maps or Maps()).budget, narrow=WORDS_NARROW)
    if not loaded.family.padding_free(loaded.model.config):
        batch_size = 1
    for chunk in chunks(texts, batch_size):
        for result in _inspect_batch(loaded, chunk, pair, truncate, hidden_states, maps, memory):
            if words:
                causal = loaded.family.causal
                result.words = word_view(result.tokens, result.attention_of(), result.text, result.pair, causal)
            yield result


WORDS_NARROW = "--words merges every layer's maps into words: give a shorter text, or drop --words"


def inspect_maps(
    layers: list[int] | None,
    heads: list[int] | None,
    *,
    attention: bool = False,
    picture: str | None = None,
    report: bool = False,
    save: bool = False,
) -> Maps | None:
    """The explicit maps `inspect` keeps: none for its tables and JSON (their per-layer numbers are reduced in
    blocks); the --layer/--head choice (None: all) for --attention in JSON, the attention picture and the report; every
    head of those layers for the attention grid (its mean column is over all heads); every map for --save."""
    narrow = "choose fewer with --layer N --head N, or give a shorter text (the per-layer table needs no maps)"
    if save:
        return Maps(narrow="--save writes every layer's maps: give a shorter text, or drop --save")
    drawn = picture in ("attention", "all")
    if not (attention or drawn):
        return None
    grid = drawn and not report and not (layers is not None and heads is not None and len(layers) == len(heads) == 1)
    chosen_layers = None if layers is None else tuple(dict.fromkeys(layers))
    chosen_heads = None if heads is None or grid else tuple(dict.fromkeys(heads))
    return Maps(layers=chosen_layers, heads=chosen_heads, narrow=narrow)


def _inspect_batch(
    loaded: LoadedModel,
    texts: list[str],
    pair: str | None,
    truncate: bool,
    hidden_states: bool = False,
    maps: Maps | None = None,
    memory: int = DEFAULT_MEMORY,
) -> list[TextResult]:
    import torch

    tokenizer, info = loaded.tokenizer, loaded.info
    pairs = [pair] * len(texts) if pair is not None else None
    warnings = [_truncation_warnings(tokenizer, info, text, pair, truncate) for text in texts]
    encoding = tokenize(
        tokenizer,
        texts,
        pairs,
        padding=True,
        truncation="longest_first" if info.max_positions else False,
        max_length=info.max_positions,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    lengths = encoding["attention_mask"].sum(-1).tolist()
    for i, length in enumerate(lengths):
        if length == 0:
            raise PosembError(f"text {texts[i]!r} gives no tokens with the tokenizer of {info.name}")
    real = encoding["attention_mask"].bool().to(loaded.device)
    special = encoding["special_tokens_mask"].bool().to(loaded.device)
    sums = BlockSums(info.layers, real, special, loaded.family.causal)
    with torch.inference_mode():
        captured = _forward(loaded, encoding, hidden_states, sums, maps, memory)
    deviation, nonfinite = sums.deviation.cpu().numpy(), sums.nonfinite.cpu().numpy()
    results = []
    for i, text in enumerate(texts):
        n = lengths[i]
        tokens = _tokens(loaded, encoding, captured, i, n)
        result = TextResult(
            text=text,
            pair=pair,
            model=info,
            tokens=tokens,
            token=None if captured["token"] is None else captured["token"][i, :n],
            position=None if captured["position"] is None else captured["position"][i, :n],
            segment=None if captured["segment"] is None else captured["segment"][i, :n],
            sum=_sum(captured, i, n),
            embedding_output=captured["embedding_output"][i, :n],
            attention=None if captured["attention"] is None else captured["attention"][i, :, :, :n, :n],
            warnings=warnings[i]
            + _unknown_warnings(tokens, text, pair, info)
            + _family_warnings(loaded)
            + _pair_warnings(loaded, tokens, pair),
            hidden_states=None if captured["hidden_states"] is None else captured["hidden_states"][i, :, :n],
            attention_layers=list(range(info.layers)) if maps is None or maps.layers is None else list(maps.layers),
            attention_heads=list(range(info.heads)) if maps is None or maps.heads is None else list(maps.heads),
            layer_sums=sums.text(i),
        )
        result.layers = result.layer_sums.means() if result.layer_sums is not None else []
        _check_attention(result, deviation[i])
        result.warnings += nonfinite_warning(_nonfinite_places(result, nonfinite[i]))
        results.append(result)
    return results


def _truncation_warnings(tokenizer: Any, info: ModelInfo, text: str, pair: str | None, truncate: bool) -> list[str]:
    if info.max_positions is None:
        return []
    total = len(tokenize(tokenizer, text, pair, truncation=False)["input_ids"])
    if total <= info.max_positions:
        return []
    cut = total - info.max_positions
    if not truncate:
        raise PosembError(
            f"text has {total} tokens but {info.name} takes at most {info.max_positions} (drop --no-truncate to cut it)"
        )
    return [f"text has {total} tokens but {info.name} takes at most {info.max_positions}: {cut} tokens were cut"]


_HELD: dict[int, int] = {}  # process id -> the descriptor of one unlinked temporary file, reused: where fd 2 points
# while the tokenizer runs (a raw descriptor, so no file object is left for the interpreter to warn about at exit;
# per process, so that the children the server forks never share one)


@contextlib.contextmanager
def rust_output_held() -> Iterator[None]:
    """Point file descriptor 2 at a temporary file while the (Rust) tokenizer runs. A Rust panic prints its message
    straight to fd 2 before Python sees the PanicException; that text is dropped (the CLI says it in one line, from
    the exception). Anything else written meanwhile goes to stderr afterwards, in order."""
    import os
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (closed): nothing to hold
        yield
        return
    if os.getpid() not in _HELD:
        descriptor, name = tempfile.mkstemp(prefix=".posemb-stderr-")
        os.unlink(name)
        _HELD.clear()
        _HELD[os.getpid()] = descriptor
    held = _HELD[os.getpid()]
    os.ftruncate(held, 0)
    os.lseek(held, 0, os.SEEK_SET)
    os.dup2(held, 2)
    panicked = False
    try:
        yield
    except BaseException as exc:
        panicked = type(exc).__name__ == "PanicException"
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if not panicked and os.fstat(held).st_size:
            os.lseek(held, 0, os.SEEK_SET)
            while data := os.read(held, 1 << 16):
                os.write(2, data)


def tokenize(tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    """`tokenizer(*args, **kwargs)`, with a Rust panic's own message kept off stderr (`rust_output_held`)."""
    with rust_output_held():
        return tokenizer(*args, **kwargs)


def check_segment_ids(loaded: LoadedModel, largest: int, option: str) -> None:
    """A one-line error when the tokenizer gives a token type the model's segment embedding has no row for (a BERT
    with type_vocab_size=1 given a pair): the embedding lookup would fail with an IndexError."""
    table = loaded.family.module(loaded.model, loaded.family.segment_embedding)
    rows = getattr(table, "num_embeddings", None)
    if isinstance(rows, int) and largest >= rows:
        raise PosembError(
            f"{loaded.info.name} has {rows} segment embedding row{'s' if rows != 1 else ''} "
            f"(type_vocab_size={rows}) but its tokenizer gives sentence B token type {largest}: this model reads no "
            f"sentence pairs; drop {option}"
        )


def _forward(
    loaded: LoadedModel,
    encoding: Any,
    hidden_states: bool,
    sums: BlockSums,
    maps: Maps | None,
    memory: int,
) -> dict[str, Any]:
    """Run the model once (`runner.run`), capturing what each embedding module receives and returns, reducing every
    layer's attention into `sums` block by block, and keeping the explicit maps `maps` asks for."""
    from . import runner

    family, model = loaded.family, loaded.model
    inputs = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
    if "token_type_ids" in encoding and family.takes_segments(model):
        check_segment_ids(loaded, int(encoding["token_type_ids"].max()), "--pair")
        inputs["token_type_ids"] = encoding["token_type_ids"]
    inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
    forward = runner.run(loaded, inputs, embeddings=True, hidden_states=True, reduce=sums, maps=maps, memory=memory)
    output, captured = forward.output, forward.captured
    kept = None
    if maps is not None:
        layers = range(loaded.info.layers) if maps.layers is None else maps.layers
        kept = [None if forward.maps is None else forward.maps[layer] for layer in layers]
        if any(m is None for m in kept):
            raise PosembError(f"{loaded.info.name} returned no attention weights (is attention eager?)")
    if sums.nonfinite is None:
        raise PosembError(f"{loaded.info.name} returned no attention weights (is attention eager?)")
    batch, length = encoding["input_ids"].shape

    def vectors(key: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        if key not in captured:
            return None, None
        ids, out = captured[key]
        ids = ids.expand(batch, length).cpu().numpy()
        return ids, None if out is None else _numpy(out.expand(batch, length, out.shape[-1]))

    result: dict[str, Any] = {}
    result["token_ids"], result["token"] = vectors("token")
    result["position_ids"], result["position"] = vectors("position")
    if result["position_ids"] is not None and family.position_id_offset:  # OPT: the table row is the id + 2
        result["position_ids"] = result["position_ids"] + family.position_id_offset
    result["segment_ids"], result["segment"] = vectors("segment")
    if result["position_ids"] is None:
        result["position_ids"] = vectors("rotary")[0]
    if result["position_ids"] is None and family.model_types:  # relative schemes and ALiBi: the token index
        result["position_ids"] = np.broadcast_to(np.arange(length), (batch, length))
    result["embedding_output"] = _numpy(output.hidden_states[0])
    result["hidden_states"] = (
        np.stack([_numpy(h) for h in output.hidden_states], axis=1) if hidden_states else None
    )  # (batch, layers + 1, n, hidden)
    result["attention"] = None if kept is None else np.stack([_numpy(a) for a in kept], axis=1)  # (batch, L, H, n, n)
    return result


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _sum(captured: dict[str, Any], i: int, n: int) -> np.ndarray | None:
    if captured["token"] is None:
        return None
    total = captured["token"][i, :n].copy()
    for key in ("position", "segment"):
        if captured[key] is not None:
            total += captured[key][i, :n]
    return total


def _tokens(loaded: LoadedModel, encoding: Any, captured: dict[str, Any], i: int, n: int) -> list[Token]:
    tokenizer = loaded.tokenizer
    ids = encoding["input_ids"][i, :n].tolist()
    pieces = tokenizer.convert_ids_to_tokens(ids)
    offsets = encoding["offset_mapping"][i, :n].tolist()
    special = encoding["special_tokens_mask"][i, :n].tolist()
    sequence_ids = encoding.sequence_ids(i)[:n]
    position_ids, segment_ids = captured["position_ids"], captured["segment_ids"]
    tokens = []
    for k in range(n):
        is_special = bool(special[k])
        start, end = (None, None) if is_special else offsets[k]
        tokens.append(
            Token(
                index=k,
                id=ids[k],
                token=pieces[k],
                position_id=None if position_ids is None else int(position_ids[i, k]),
                segment=None if segment_ids is None else int(segment_ids[i, k]),
                start=start,
                end=end,
                special=is_special,
                unknown=tokenizer.unk_token_id is not None and ids[k] == tokenizer.unk_token_id and not is_special,
                sequence=None if is_special else sequence_ids[k],
            )
        )
    return tokens


def _unknown_warnings(tokens: list[Token], text: str, pair: str | None, info: ModelInfo) -> list[str]:
    unknown = [t for t in tokens if t.unknown]
    if not unknown:
        return []
    chars: list[str] = []
    for t in unknown:
        source = pair if t.sequence == 1 and pair is not None else text
        for char in source[t.start : t.end] if t.start is not None else "":
            if char not in chars:
                chars.append(char)
    shown = "".join(chars[:40]) + ("..." if len(chars) > 40 else "")
    advice = _vocabulary_advice("".join(chars))
    return [
        f"{len(unknown)} of {len(tokens)} tokens are {unknown[0].token}: the vocabulary of {info.name} has no entry "
        f"for {shown!r}; try a model whose vocabulary covers them, {advice}"
    ]


# A model to suggest for characters of each kind (charsets.kind). A byte-level BPE vocabulary has a piece for every
# byte, so it never needs an unknown token.
SUGGESTED_MODELS = {
    "han": "bert-base-chinese",
    "cjk": "a multilingual model such as xlm-roberta-base",
    "emoji": "a byte-level BPE model such as roberta-base or gpt2 (no [UNK]: it spells any character in byte pieces)",
    "other": "a multilingual model such as xlm-roberta-base",
}


def _vocabulary_advice(chars: str) -> str:
    """`e.g. MODEL`, or with characters of several kinds, one model per kind and the characters it is for."""
    models: dict[str, str] = {}
    for kind, group in charsets.by_kind(chars).items():
        models[SUGGESTED_MODELS[kind]] = models.get(SUGGESTED_MODELS[kind], "") + group
    if len(models) == 1:
        return f"e.g. {next(iter(models))}"
    return "e.g. " + "; ".join(f"{model} for {group[:20]!r}" for model, group in models.items())


def _pair_warnings(loaded: LoadedModel, tokens: list[Token], pair: str | None) -> list[str]:
    """A pair on a model without a segment (token-type) embedding: nothing but separator tokens tells the sentences
    apart, and some tokenizers (GPT-2's) add none."""
    if pair is None or loaded.family.takes_segments(loaded.model):
        return []
    sequences = [t.sequence for t in tokens]
    last_a = max((k for k, s in enumerate(sequences) if s == 0), default=-1)
    first_b = next((k for k, s in enumerate(sequences) if s == 1), len(tokens))
    separated = any(t.special for t in tokens[last_a + 1 : first_b])
    how = (
        ": only the tokenizer's separator token marks"
        if separated
        else " and its tokenizer adds no separator: nothing marks"
    )
    return [f"{loaded.info.name} has no segment embedding{how} where the pair begins"]


def _family_warnings(loaded: LoadedModel) -> list[str]:
    if loaded.family.model_types:
        return []
    return [
        f"model type {loaded.info.type!r} is not in posemb's registry: tokens, attention and the embedding output are "
        "shown, but the embedding is not decomposed into token, position and segment parts"
    ]


_PARTS = (
    ("token", "the token embedding"),
    ("position", "the position embedding"),
    ("segment", "the segment embedding"),
    ("sum", "the sum"),
    ("embedding_output", "the embedding output"),
)


def _nonfinite_places(result: TextResult, heads: np.ndarray) -> list[str]:
    """Where NaN or Inf appear, in the order the model computes: embedding parts (which tokens), then each layer's
    attention (which heads: `heads`, layers × heads, true where a real row of a head has one) and output."""
    places = []
    for name, label in _PARTS:
        array = getattr(result, name)
        if array is not None and not np.isfinite(array).all():
            places.append(f"{label} (tokens {index_ranges(np.flatnonzero(~np.isfinite(array).all(axis=-1)))})")
    outputs = result.hidden_states
    for layer in range(len(heads)):
        if heads[layer].any():
            places.append(f"the attention of layer {layer} (heads {index_ranges(np.flatnonzero(heads[layer]))})")
        if outputs is not None and not np.isfinite(outputs[layer + 1]).all():
            places.append(f"the output of layer {layer}")
    return places


def _check_attention(result: TextResult, deviation: np.ndarray) -> None:
    """deviation: per layer, the largest |Σ_j a[i, j] − 1| of a finite real row (`BlockSums.deviation`); non-finite
    rows: nonfinite_warning says so."""
    if deviation.size and deviation.max() >= ROW_SUM_TOLERANCE:
        layer = int(deviation.argmax())
        raise PosembError(
            f"attention rows of {result.model.name} do not sum to 1 (layer {layer} is off by {deviation.max():.2g}); "
            "posemb needs softmax attention probabilities"
        )
