"""Subword tokens merged into words through their character offsets, so that models with different tokenizers can
be compared word by word. Used by `compare` and by `inspect --words`.

Words are defined on the text alone, never by a tokenizer, so they are the same for every model:

- a word is a run of characters between whitespace;
- a wide (CJK) character is a word of its own, because Chinese and Japanese text has no spaces between words
  ("我爱自然语言处理" is 8 words). Hangul is not split: Korean separates its words by spaces.

A token belongs to the word that holds its first non-whitespace character (the *partition* used for attention); a
token that spans two words (a byte-level BPE piece over two CJK characters) belongs to the first. Special tokens and
tokens of whitespace only belong to no word. Word vectors use every token that overlaps the word (`word_pieces`).

Word-level attention follows Clark et al. (2019, "What Does BERT Look At?", §2): the attention *to* a word is the sum
over its pieces (keys), the attention *from* a word the mean over its pieces (queries). Special tokens and
whitespace tokens stay units of their own, so every row of the merged map still sums to 1.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .attention import layer_summary

if TYPE_CHECKING:
    from .tokens import Token


@dataclass(frozen=True)
class Word:
    index: int
    text: str
    start: int  # character offsets into the text (sequence 0) or the pair (sequence 1)
    end: int
    sequence: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "start": self.start, "end": self.end, "sequence": self.sequence}


@dataclass(frozen=True)
class Unit:
    """One row/column of a word-level attention map: a word, a special token, or a whitespace token."""

    label: str
    tokens: tuple[int, ...]  # token indices, ascending
    word: int | None  # index into the words; None for a special or whitespace token
    special: bool

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "tokens": list(self.tokens), "word": self.word, "special": self.special}


def splits_alone(char: str) -> bool:
    """A wide (CJK) character is a word by itself; Hangul syllables and jamo are not (Korean uses spaces)."""
    code = ord(char)
    if 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return False
    return unicodedata.east_asian_width(char) in ("W", "F") and not char.isspace()


def split_words(text: str, sequence: int = 0, first_index: int = 0) -> list[Word]:
    """The words of `text`: whitespace-separated runs, with every wide (CJK) character a word of its own."""
    words: list[Word] = []
    start: int | None = None

    def close(end: int) -> None:
        nonlocal start
        if start is not None:
            words.append(Word(first_index + len(words), text[start:end], start, end, sequence))
            start = None

    for k, char in enumerate(text):
        if char.isspace():
            close(k)
        elif splits_alone(char):
            close(k)
            words.append(Word(first_index + len(words), char, k, k + 1, sequence))
        elif start is None:
            start = k
    close(len(text))
    return words


def text_words(text: str, pair: str | None = None) -> list[Word]:
    """Words of the text, then (numbered on) words of the pair."""
    words = split_words(text)
    if pair is not None:
        words += split_words(pair, sequence=1, first_index=len(words))
    return words


def _sequence(token: Token) -> int:
    return token.sequence if token.sequence is not None else 0


def _source(token: Token, text: str, pair: str | None) -> str:
    return pair if token.sequence == 1 and pair is not None else text


def _first_char(token: Token, text: str, pair: str | None) -> int | None:
    """Offset of the token's first non-whitespace character, or None (special, empty or whitespace-only token)."""
    if token.special or token.start is None or token.end is None:
        return None
    source = _source(token, text, pair)
    for k in range(token.start, min(token.end, len(source))):
        if not source[k].isspace():
            return k
    return None


def _word_at(words: Sequence[Word], sequence: int, offset: int) -> int | None:
    for word in words:
        if word.sequence == sequence and word.start <= offset < word.end:
            return word.index
    return None


def token_words(tokens: Sequence[Token], words: Sequence[Word], text: str, pair: str | None = None) -> list[int | None]:
    """The word of each token (the one holding its first non-whitespace character), or None."""
    out: list[int | None] = []
    for token in tokens:
        first = _first_char(token, text, pair)
        out.append(None if first is None else _word_at(words, _sequence(token), first))
    return out


def word_pieces(tokens: Sequence[Token], words: Sequence[Word]) -> list[list[int]]:
    """For each word, the indices of the (non-special) tokens whose character span overlaps it."""
    pieces: list[list[int]] = [[] for _ in words]
    for k, token in enumerate(tokens):
        if token.special or token.start is None or token.end is None or token.end <= token.start:
            continue
        for word in words:
            if word.sequence == _sequence(token) and token.start < word.end and word.start < token.end:
                pieces[word.index - words[0].index].append(k)
    return pieces


def units(tokens: Sequence[Token], words: Sequence[Word], text: str, pair: str | None = None) -> list[Unit]:
    """Partition of the tokens into units, in order of their first token: words (merged pieces), special tokens and
    whitespace tokens (one unit each). Words whose characters no token starts in (cut off by truncation, or covered by
    a token that started in an earlier word) are not units."""
    assigned = token_words(tokens, words, text, pair)
    by_word: dict[int, list[int]] = {}
    order: list[tuple[int, Unit | int]] = []  # (first token, unit or word index)
    for k, (token, word) in enumerate(zip(tokens, assigned, strict=True)):
        if word is None:
            label = token.token if token.special else "␣"
            order.append((k, Unit(label, (k,), None, token.special)))
        elif word in by_word:
            by_word[word].append(k)
        else:
            by_word[word] = [k]
            order.append((k, word))
    first_index = words[0].index if words else 0
    out = []
    for _, item in order:
        if isinstance(item, Unit):
            out.append(item)
        else:
            out.append(Unit(words[item - first_index].text, tuple(by_word[item]), item, False))
    return out


def merge_attention(attention: np.ndarray, parts: Sequence[Unit]) -> np.ndarray:
    """Token attention (..., n, n) -> unit attention (..., U, U): the attention from unit u to unit v is the mean over
    the query pieces of u of the sum over the key pieces of v (Clark et al. 2019). `parts` must partition the n tokens,
    so each merged row sums to what a token row sums to (1)."""
    n = attention.shape[-1]
    queries = np.zeros((len(parts), n), dtype=attention.dtype)
    keys = np.zeros((n, len(parts)), dtype=attention.dtype)
    for u, unit in enumerate(parts):
        queries[u, list(unit.tokens)] = 1.0 / len(unit.tokens)
        keys[list(unit.tokens), u] = 1.0
    covered = keys.sum(axis=1)
    if not np.all(covered == 1):
        raise ValueError("units must cover every token exactly once")
    return queries @ attention @ keys


def word_vectors(hidden: np.ndarray, pieces: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each word's piece vectors. hidden: (..., n, d). Returns (vectors (..., W', d), indices of the W' words
    that have at least one piece)."""
    present = np.array([k for k, p in enumerate(pieces) if p], dtype=np.int64)
    if not len(present):
        return np.zeros((*hidden.shape[:-2], 0, hidden.shape[-1]), dtype=hidden.dtype), present
    vectors = np.stack([hidden[..., list(pieces[k]), :].mean(axis=-2) for k in present], axis=-2)
    return vectors, present


# ------------------------------------------------------------------------------------------ inspect --words


@dataclass
class WordView:
    """One inspected text seen word by word."""

    words: list[Word]
    pieces: list[list[int]]  # tokens overlapping each word
    units: list[Unit]
    attention: np.ndarray  # (layers, heads, U, U), merged
    layers: list[dict[str, float]]  # attention.layer_summary of the merged maps: distance in words

    @property
    def special_mask(self) -> np.ndarray:
        return np.array([unit.special for unit in self.units], dtype=bool)


def word_view(
    tokens: Sequence[Token], attention: np.ndarray, text: str, pair: str | None = None, causal: bool = False
) -> WordView:
    """One text word by word: its words, the tokens overlapping each, the units and the merged attention (`causal`:
    unit u sees units 0..u, for the uniform-entropy baseline)."""
    words = text_words(text, pair)
    parts = units(tokens, words, text, pair)
    merged = merge_attention(attention, parts)
    summary = layer_summary(merged, np.array([unit.special for unit in parts], dtype=bool), causal)
    return WordView(words, word_pieces(tokens, words), parts, merged, summary)
