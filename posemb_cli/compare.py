"""`posemb compare`: two or more encoders side by side on the same text (or the lines of a corpus).

Pure computation: `compare(...)` returns a `Comparison` that every renderer (rich tables, JSON, the figure) reads.
Nothing here knows about Typer, rich or matplotlib.

Per model: its facts (type, size, scheme), how its tokenizer covers the text, the properties of its position encoding
(`positions.analyse_model`, cosine Φ over the first 128 positions), and attention statistics per layer
(`attention.layer_summary`, averaged over texts). Per pair of models: linear CKA between every layer of one and every
layer of the other, on word vectors (`words`), so the tokenizers need not agree.

`scheme:sinusoidal|rotary|alibi|t5` entries are pseudo-models: analytic position schemes with no weights and no
tokenizer, which contribute the position section only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import attention, schemes
from . import words as wordlib
from .attention import LayerSums
from .backend import DEFAULT_MEMORY
from .core import inspect_texts
from .errors import PosembError, PosembUsageError
from .metrics import cka_matrix
from .models import LoadedModel, load, read_config, resolve
from .positions import analyse_model, analyse_scheme
from .registry import describe
from .runner import Maps
from .schemes.base import PositionAnalysis, plain
from .tokens import Token

SCHEME_PREFIX = "scheme:"
POSITION_LENGTH = 128  # positions compared, or fewer when a model has fewer
POSITION_METRIC = "cosine"  # comparable across models whose position vectors differ in scale
MAX_CKA_WORDS = 2048  # word vectors kept per model for CKA: the first words of the texts, in order
MAX_UNKNOWN_CHARS = 200
ATTENTION_KEYS = attention.LAYERS_VIEW
FACT_KEYS = (
    "type",
    "family",
    "layers",
    "heads",
    "hidden_size",
    "head_dim",
    "parameters",
    "vocab_size",
    "max_positions",
    "position_scheme",
)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as given with -m
    scheme: str | None = None  # for scheme: pseudo-models

    @property
    def is_scheme(self) -> bool:
        return self.scheme is not None


def parse_specs(names: Sequence[str]) -> list[ModelSpec]:
    """`-m` values -> specs; a usage error for fewer than two or an unknown `scheme:` name."""
    choices = "|".join(schemes.ANALYTIC)
    if len(names) < 2:
        given = "none" if not names else f"only {names[0]!r}"
        raise PosembUsageError(
            f"compare needs at least two models (-m A -m B; scheme:{choices} count too), got {given}"
        )
    specs = []
    for name in names:
        if name.startswith(SCHEME_PREFIX):
            scheme = name[len(SCHEME_PREFIX) :]
            if scheme not in schemes.ANALYTIC:
                listed = ", ".join(SCHEME_PREFIX + s for s in schemes.ANALYTIC)
                raise PosembUsageError(f"unknown {name!r}; choose one of {listed}")
            specs.append(ModelSpec(name, scheme))
        else:
            specs.append(ModelSpec(name))
    return specs


# ------------------------------------------------------------------------------------------ result objects


@dataclass
class TokenCounts:
    """How one tokenizer covers the texts. Characters are non-whitespace characters."""

    texts: int = 0
    tokens: int = 0  # not counting special tokens
    special: int = 0
    unknown: int = 0
    words: int = 0
    characters: int = 0
    covered: int = 0  # characters inside a token that is not [UNK]
    in_unknown: int = 0  # characters inside an [UNK] token
    unknown_chars: str = ""  # distinct characters that fall into [UNK], in order of appearance

    @property
    def unknown_rate(self) -> float:
        return self.unknown / self.tokens if self.tokens else float("nan")

    @property
    def coverage(self) -> float:
        return self.covered / self.characters if self.characters else float("nan")

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "tokens": self.tokens,
            "special": self.special,
            "unknown": self.unknown,
            "unknown_rate": self.unknown_rate,
            "characters": self.characters,
            "covered_characters": self.covered,
            "unknown_characters_count": self.in_unknown,
            "coverage": self.coverage,
            "unknown_characters": self.unknown_chars,
            "words": self.words,
            "tokens_per_word": self.tokens_per_word,
        }


@dataclass
class ModelReport:
    name: str
    spec: ModelSpec
    facts: dict[str, Any]
    counts: TokenCounts | None = None
    tokens: list[Token] | None = None  # tokens of the first text
    units: list[wordlib.Unit] | None = None  # word-level units of the first text (with words=True)
    positions: PositionAnalysis | None = None
    attention: list[dict[str, float]] | None = None  # per layer, mean over texts
    layer_labels: list[str] | None = None  # rows of this model's CKA matrices
    warnings: list[str] = field(default_factory=list)
    vectors: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)  # (text, word) -> (L+1, d)

    @property
    def kind(self) -> str:
        return "scheme" if self.spec.is_scheme else "model"

    @property
    def attention_means(self) -> dict[str, float]:
        """entropy, distance and special over the layers (NaN layers left out; NaN when every layer is), for the
        summary line."""
        rows = self.attention or []
        return {key: _nanmean([row[key] for row in rows]) for key in ("entropy", "distance", "special")}

    def to_json(self, words: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "facts": self.facts,
            "tokenization": None if self.counts is None else self.counts.to_json(),
            "tokens": None
            if self.tokens is None
            else [
                {
                    "index": t.index,
                    "id": t.id,
                    "token": t.token,
                    "start": t.start,
                    "end": t.end,
                    "special": t.special,
                    "unknown": t.unknown,
                }
                for t in self.tokens
            ],
            "positions": None if self.positions is None else self.positions.to_json(),
            "attention_unit": None if self.attention is None else ("word" if words else "token"),
            "attention": self.attention,
            "warnings": list(self.warnings),
        }
        if words:
            data["units"] = None if self.units is None else [unit.to_json() for unit in self.units]
        return data


@dataclass(frozen=True)
class AlignedRow:
    """A span of the text that no token of any model crosses, with each model's tokens in it (None: a scheme)."""

    start: int | None  # None for the rows of special tokens (before and after the text)
    end: int | None
    text: str | None
    cells: list[list[int] | None]  # token indices per model

    def to_json(self, reports: Sequence[ModelReport]) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "tokens": [
                None if cell is None or report.tokens is None else [report.tokens[k].token for k in cell]
                for cell, report in zip(self.cells, reports, strict=True)
            ],
        }


@dataclass
class Similarity:
    """Linear CKA between every layer of model a and every layer of model b, on their shared words."""

    a: int  # indices into Comparison.models
    b: int
    words: int  # words used (present in both models, at most MAX_CKA_WORDS)
    cka: np.ndarray  # (layers_a + 1, layers_b + 1); row/column 0 is the embedding output
    dimensions: int = 0  # the smaller of the two models' vector sizes
    closest_in_row: list[int | None] = field(init=False)  # per row, the column of the largest CKA (None: all NaN)
    closest: tuple[int, int] | None = field(init=False)  # (row, column) of the largest CKA; None when all are NaN

    def __post_init__(self) -> None:
        self.closest_in_row = [int(np.nanargmax(row)) if np.isfinite(row).any() else None for row in self.cka]
        self.closest = None
        if np.isfinite(self.cka).any():
            i, j = np.unravel_index(np.nanargmax(self.cka), self.cka.shape)
            self.closest = (int(i), int(j))

    @property
    def note(self) -> str | None:
        """Said when there are fewer words than dimensions: then even two unrelated random representations score high
        (independent Gaussian vectors, 384 dimensions: about 0.5 at 384 words, 0.9 at 50, 0.97 at 10)."""
        if self.words >= self.dimensions:
            return None
        return (
            f"only {self.words} words for {self.dimensions} dimensions: with fewer words than dimensions linear CKA "
            "leans towards 1, so compare the pattern, not the level; --corpus gives a steadier estimate"
        )

    def to_json(self, reports: Sequence[ModelReport]) -> dict[str, Any]:
        return plain(
            {
                "a": reports[self.a].name,
                "b": reports[self.b].name,
                "indices": [self.a, self.b],
                "words": self.words,
                "labels_a": reports[self.a].layer_labels,
                "labels_b": reports[self.b].layer_labels,
                "cka": self.cka,
                "note": self.note,
            }
        )


@dataclass
class Comparison:
    text: str | None  # the one text, or None for a corpus
    first_text: str  # the text the alignment and `words` are of
    corpus: str | None
    lines: int  # texts compared
    words_view: bool
    words: list[wordlib.Word]  # words of the first text
    position_length: int
    models: list[ModelReport]
    alignment: list[AlignedRow]  # the first text, tokens or words as rows
    similarity: list[Similarity]
    warnings: list[str] = field(default_factory=list)

    @property
    def real(self) -> list[int]:
        return [k for k, report in enumerate(self.models) if not report.spec.is_scheme]

    def to_json(self) -> dict[str, Any]:
        return plain(
            {
                "text": self.text,
                "corpus": self.corpus,
                "lines": self.lines,
                "words_view": self.words_view,
                "position_length": self.position_length,
                "position_metric": POSITION_METRIC,
                "words": [word.to_json() for word in self.words],
                "models": [report.to_json(self.words_view) for report in self.models],
                "alignment": [row.to_json(self.models) for row in self.alignment],
                "similarity": [pair.to_json(self.models) for pair in self.similarity],
                "warnings": list(self.warnings),
            }
        )


# ------------------------------------------------------------------------------------------ tokenization


def count_tokens(counts: TokenCounts, tokens: Sequence[Token], text: str, n_words: int) -> None:
    """Add one text's tokens to `counts`."""
    known = np.zeros(len(text), dtype=bool)
    unknown = np.zeros(len(text), dtype=bool)
    for token in tokens:
        if token.special:
            counts.special += 1
            continue
        counts.tokens += 1
        counts.unknown += token.unknown
        if token.start is not None and token.end is not None:
            (unknown if token.unknown else known)[token.start : token.end] = True
    solid = np.array([not c.isspace() for c in text], dtype=bool)
    counts.texts += 1
    counts.words += n_words
    counts.characters += int(solid.sum())
    counts.covered += int((known & solid).sum())
    in_unknown = unknown & ~known & solid
    counts.in_unknown += int(in_unknown.sum())
    for k in np.flatnonzero(in_unknown):
        if text[k] not in counts.unknown_chars and len(counts.unknown_chars) < MAX_UNKNOWN_CHARS:
            counts.unknown_chars += text[k]


def align_tokens(text: str, token_lists: Sequence[Sequence[Token] | None]) -> list[AlignedRow]:
    """Rows of the text that no token of any model crosses (the finest such spans), each with every model's tokens
    that start in it; special tokens in a first and a last row. Rows of whitespace that no token starts in are left
    out. `None` in token_lists (a scheme) gives None cells."""
    crossed = np.zeros(len(text) + 1, dtype=bool)
    cuts = {0, len(text)}
    for tokens in token_lists:
        for token in tokens or ():
            if not token.special and token.start is not None and token.end is not None:
                crossed[token.start + 1 : token.end] = True
                cuts.update((token.start, token.end))
    bounds = sorted(c for c in cuts if 0 <= c <= len(text) and not crossed[c])
    spans = list(zip(bounds[:-1], bounds[1:], strict=True)) or [(0, len(text))]
    starts = [s for s, _ in spans]
    middle: list[list[list[int] | None]] = [[None if t is None else [] for t in token_lists] for _ in spans]
    before: list[list[int] | None] = [None if t is None else [] for t in token_lists]
    after: list[list[int] | None] = [None if t is None else [] for t in token_lists]
    for m, tokens in enumerate(token_lists):
        if tokens is None:
            continue
        seen_text = False
        for k, token in enumerate(tokens):
            if token.special or token.start is None:
                (after if seen_text else before)[m].append(k)  # type: ignore[union-attr]
                continue
            seen_text = True
            row = max(0, min(len(spans) - 1, bisect.bisect_right(starts, token.start) - 1))
            middle[row][m].append(k)  # type: ignore[union-attr]
    rows = []
    if any(before_cell for before_cell in before):
        rows.append(AlignedRow(None, None, None, before))
    for (start, end), cells in zip(spans, middle, strict=True):
        if any(cells) or text[start:end].strip():
            rows.append(AlignedRow(start, end, text[start:end], cells))
    if any(after_cell for after_cell in after):
        rows.append(AlignedRow(None, None, None, after))
    return rows


def align_words(words: Sequence[wordlib.Word], reports: Sequence[ModelReport]) -> list[AlignedRow]:
    """One row per word, with each model's tokens that overlap it."""
    pieces = [None if r.tokens is None else wordlib.word_pieces(r.tokens, words) for r in reports]
    return [
        AlignedRow(word.start, word.end, word.text, [None if p is None else p[k] for p in pieces])
        for k, word in enumerate(words)
    ]


# ------------------------------------------------------------------------------------------ running models


def model_facts(loaded: LoadedModel) -> dict[str, Any]:
    info = loaded.info
    return {
        "type": info.type,
        "family": info.family,
        "layers": info.layers,
        "heads": info.heads,
        "hidden_size": info.hidden_size,
        "head_dim": loaded.family.head_dim(loaded.model.config),
        "parameters": int(sum(p.numel() for p in loaded.model.parameters())),
        "vocab_size": len(loaded.tokenizer),
        "max_positions": info.max_positions,
        "position_scheme": info.position_scheme,
    }


def run_model(
    report: ModelReport,
    loaded: LoadedModel,
    texts: Sequence[str],
    text_words: Sequence[list[wordlib.Word]],
    cka_keys: set[tuple[int, int]],
    words_view: bool,
    batch_size: int,
    memory: int = DEFAULT_MEMORY,
) -> None:
    """Tokenization counts, attention per layer and word vectors of one real model over all texts. The attention
    means are reduced in blocks during each forward (`TextResult.layer_sums`); only the words view keeps every map,
    to merge it into words."""
    counts = TokenCounts()
    pooled = LayerSums(loaded.family.causal)
    truncated = 0
    maps = Maps(narrow=WORDS_NARROW) if words_view else None
    results = inspect_texts(loaded, texts, batch_size=batch_size, hidden_states=True, maps=maps, memory=memory)
    for t, (text, result) in enumerate(zip(texts, results, strict=True)):
        words = text_words[t]
        count_tokens(counts, result.tokens, text, len(words))
        truncated += any("tokens were cut" in w for w in result.warnings)
        if len(texts) == 1:
            report.warnings.extend(result.warnings)
        if words_view or t == 0:
            parts = wordlib.units(result.tokens, words, text)
            if t == 0:
                report.tokens, report.units = result.tokens, parts if words_view else None
            if words_view:
                special = np.array([unit.special for unit in parts], dtype=bool)
                pooled.add(wordlib.merge_attention(result.attention_of(), parts), special)
        if not words_view and result.layer_sums is not None:
            pooled.merge(result.layer_sums)
        if result.hidden_states is not None and any((t, w) in cka_keys for w in range(len(words))):
            vectors, present = wordlib.word_vectors(result.hidden_states, wordlib.word_pieces(result.tokens, words))
            for column, w in enumerate(present.tolist()):
                if (t, w) in cka_keys:
                    report.vectors[(t, w)] = vectors[:, column].astype(np.float32)
    report.counts = counts
    report.attention = pooled.means()
    report.layer_labels = ["embeddings"] + [f"layer {k}" for k in range(loaded.info.layers)]
    if len(texts) > 1:
        if truncated:
            report.warnings.append(
                f"{truncated} of {len(texts)} lines have more tokens than {report.name} takes "
                f"({loaded.info.max_positions}); they were cut"
            )
        if counts.unknown:
            shown = counts.unknown_chars[:40] + ("..." if len(counts.unknown_chars) > 40 else "")
            report.warnings.append(
                f"{counts.unknown} of {counts.tokens} tokens of {report.name} are unknown ({shown!r} among them)"
            )


WORDS_NARROW = "--words merges every layer's maps into words: give shorter texts, or drop --words"


def _pair_similarity(reports: Sequence[ModelReport], a: int, b: int, keys: Sequence[tuple[int, int]]) -> Similarity:
    shared = [key for key in keys if key in reports[a].vectors and key in reports[b].vectors]
    if len(shared) < 2:
        layers_a, layers_b = len(reports[a].layer_labels or []), len(reports[b].layer_labels or [])
        return Similarity(a, b, len(shared), np.full((layers_a, layers_b), np.nan))
    x = np.stack([reports[a].vectors[key] for key in shared], axis=1)  # (layers + 1, words, d)
    y = np.stack([reports[b].vectors[key] for key in shared], axis=1)
    dimensions = min(x.shape[-1], y.shape[-1])
    return Similarity(a, b, len(shared), cka_matrix(list(x), list(y)), dimensions)


def scheme_options(scheme: str, first: ModelReport | None) -> dict[str, Any]:
    """Options of a `scheme:` pseudo-model: sized like the first real model when there is one (the scheme object says
    how: sinusoidal its hidden size, rotary its head dimension, alibi its heads); otherwise `positions --scheme`'s
    defaults."""
    if first is None:
        return {}
    facts = first.facts
    return _scheme(scheme).options_for_model(facts["hidden_size"], facts["heads"], facts["head_dim"])


def _scheme(cli_name: str) -> schemes.base.PositionScheme:
    found = schemes.get(cli_name)
    assert found is not None, cli_name  # parse_specs checked the name
    return found


def _scheme_facts(scheme: str) -> dict[str, Any]:
    facts: dict[str, Any] = dict.fromkeys(FACT_KEYS)
    facts["position_scheme"] = _scheme(scheme).name
    return facts


def compare(
    names: Sequence[str],
    texts: Iterable[str],
    *,
    corpus: str | None = None,
    words: bool = False,
    device: str = "cpu",
    trust_remote_code: bool = False,
    batch_size: int = 16,
    on_progress: Callable[[str], None] | None = None,
    memory: int = DEFAULT_MEMORY,
) -> Comparison:
    """Compare the models named in `names` (hub ids, folders, the bundled model, `scheme:NAME`) on `texts`.

    Real models are loaded one at a time and released before the next, so memory holds one model at once."""
    specs = parse_specs(names)
    texts = list(texts)
    if not texts:
        raise PosembError("no text to compare on (the corpus has no non-empty line)")
    text_words = [wordlib.split_words(text) for text in texts]
    keys = [(t, w) for t, ws in enumerate(text_words) for w in range(len(ws))][:MAX_CKA_WORDS]
    key_set = set(keys)
    length = position_length([spec for spec in specs if not spec.is_scheme])
    reports: list[ModelReport] = []
    for spec in specs:
        if spec.is_scheme:
            reports.append(ModelReport(spec.name, spec, _scheme_facts(spec.scheme or "")))
            continue
        if on_progress is not None:
            on_progress(f"{spec.name}: {len(texts)} text(s)")
        loaded = load(spec.name, device=device, trust_remote_code=trust_remote_code)
        report = ModelReport(loaded.info.name, spec, model_facts(loaded))
        run_model(report, loaded, texts, text_words, key_set, words, batch_size, memory)
        report.positions = _model_positions(report, loaded, length)
        reports.append(report)
        del loaded
    first = next((r for r in reports if not r.spec.is_scheme), None)
    warnings: list[str] = []
    for report in reports:
        if report.spec.is_scheme:
            scheme = report.spec.scheme or ""
            report.positions = analyse_scheme(scheme, length, metric=POSITION_METRIC, **scheme_options(scheme, first))
    real = [k for k, r in enumerate(reports) if not r.spec.is_scheme]
    similarity = [_pair_similarity(reports, a, b, keys) for i, a in enumerate(real) for b in real[i + 1 :]]
    for pair in similarity:
        if pair.words < 2:
            warnings.append(
                f"no layer similarity for {reports[pair.a].name} and {reports[pair.b].name}: CKA needs at least 2 "
                f"words that both models cover, found {pair.words}"
            )
    total_words = sum(len(ws) for ws in text_words)
    if len(keys) < total_words:
        warnings.append(f"layer similarity uses the first {len(keys)} words of the texts (of {total_words})")
    for report in reports:
        report.vectors = {}  # large, and not part of any output
    alignment = align_words(text_words[0], reports) if words else align_tokens(texts[0], [r.tokens for r in reports])
    return Comparison(
        text=texts[0] if corpus is None and len(texts) == 1 else None,
        first_text=texts[0],
        corpus=corpus,
        lines=len(texts),
        words_view=words,
        words=text_words[0],
        position_length=length,
        models=reports,
        alignment=alignment,
        similarity=similarity,
        warnings=warnings,
    )


def position_length(specs: Sequence[ModelSpec]) -> int:
    """Positions every entry is compared on: 128, or the fewest positions of any model (read from its config before
    anything is loaded, so a missing model folder fails at once)."""
    lengths = [POSITION_LENGTH]
    for spec in specs:
        _, path = resolve(spec.name)
        maximum = describe(SimpleNamespace(**read_config(path)))["max_positions"]
        if maximum:
            lengths.append(maximum)
    return min(lengths)


def _model_positions(report: ModelReport, loaded: LoadedModel, length: int) -> PositionAnalysis | None:
    scheme = loaded.info.position_scheme
    if scheme in ("none", "unknown"):
        report.warnings.append(f"{report.name} has position scheme {scheme!r}: no position section")
        return None
    return analyse_model(loaded, length, metric=POSITION_METRIC)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")
