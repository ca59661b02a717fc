"""What each token is called on a figure, and how many of those labels fit: readable token labels and tick fitting.

`token_labels` turns tokens into what the reader recognises (the source characters behind byte-level BPE pieces,
[UNK] shown as its source text, whitespace as ␣, pieces of one character numbered); the rest measures labels in
inches and puts them on an axis. Used by the pictures and by the terminal tables that show the same labels. No
matplotlib import here: the tick helpers only call methods of the axes they are given.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...tokens import Token

PIECES_NOTE = "x¹ x² …: byte-level pieces of one character"
SPECIAL_COLOUR = "#8a8a8a"
UNKNOWN_COLOUR = "#c0392b"


@dataclass(frozen=True)
class Label:
    text: str
    kind: str  # token | special | unknown

    @property
    def colour(self) -> str | None:
        return {"special": SPECIAL_COLOUR, "unknown": UNKNOWN_COLOUR}.get(self.kind)


# ---------------------------------------------------------------- token labels


def token_labels(tokens: Sequence[Token], text: str, pair: str | None = None) -> list[Label]:
    """What the reader recognises: the token string; the source characters when the token string is an encoding
    artefact (byte-level BPE such as 'Ġposition') or [UNK] (then kind 'unknown', drawn red). A token that is only
    whitespace shows as ␣. When one character is split over several byte-level tokens, each piece gets its number as
    a superscript (我¹ 我² 我³). `text` (and `pair`, for tokens of sequence 1) is what the token offsets point into."""
    labels = []
    for token in tokens:
        if token.special:
            labels.append(Label(token.token, "special"))
            continue
        raw = _source(text, pair, token)
        source = raw.strip()
        if token.unknown:
            labels.append(Label(source or token.token, "unknown"))
            continue
        shown = token.token
        bare = shown.removeprefix("##").replace("\u2581", "")  # WordPiece continuation, SentencePiece space
        if not source and (raw or not shown.strip("ĠĊĉ\u2581")):  # a whitespace token (GPT-2: 'Ġ', 'Ċ')
            shown = "␣"
        elif source and bare.lower() != source.lower() and _looks_encoded(shown, source):
            shown = source
        labels.append(Label(shown.replace("\u2581", " ").strip() or "␣", "token"))
    return _number_pieces(tokens, labels)


def _number_pieces(tokens: Sequence[Token], labels: list[Label]) -> list[Label]:
    out = list(labels)
    k = 0
    while k < len(tokens):
        span = (tokens[k].sequence, tokens[k].start, tokens[k].end)
        end = k + 1
        while (
            end < len(tokens)
            and not tokens[k].special
            and (tokens[end].sequence, tokens[end].start, tokens[end].end) == span
            and span[1] is not None
        ):
            end += 1
        if end - k > 1:
            for piece in range(k, end):
                out[piece] = Label(labels[piece].text + _superscript(piece - k + 1), labels[piece].kind)
        k = end
    return out


def _superscript(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def _source(text: str, pair: str | None, token: Token) -> str:
    if token.start is None or token.end is None:
        return ""
    source = pair if token.sequence == 1 and pair is not None else text
    return source[token.start : token.end]


def _looks_encoded(token: str, source: str) -> bool:
    """True for byte-level BPE strings (GPT-2's byte-to-unicode map: Ġ for space, Ċ for newline, U+0100..U+0143 for
    other bytes, Latin-1 letters for UTF-8 bytes of non-Latin text)."""
    if any(0x100 <= ord(c) <= 0x143 for c in token):
        return True
    return any(0x80 <= ord(c) <= 0xFF for c in token) and not any(0x80 <= ord(c) <= 0xFF for c in source)


def label_note(labels: Sequence[Label]) -> str | None:
    """The footnote explaining the label colours and superscripts that occur, or None."""
    parts = []
    if any(label.kind == "unknown" for label in labels):
        parts.append("red: not in the vocabulary, so the model sees [UNK] (the source text is shown)")
    if any(label.kind == "special" for label in labels):
        parts.append("grey: special tokens")
    if has_pieces(labels):
        parts.append(PIECES_NOTE)
    return "; ".join(parts) or None


def has_pieces(labels: Sequence[Label]) -> bool:
    """True when some label is a numbered byte-level piece of one character (我¹ 我²)."""
    return any(label.text[-1:] in "¹²³⁴⁵⁶⁷⁸⁹" and label.kind != "special" for label in labels)


# ---------------------------------------------------------------- text on a figure


def plain(text: str) -> str:
    """Text shown literally: matplotlib would read $...$ as mathtext."""
    return text.replace("$", r"\$")


def counted(n: int, noun: str) -> str:
    """'1 text', '2 texts': a count and its noun, for titles."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def shorten(text: str, limit: int = 80) -> str:
    """Whitespace runs made single spaces, then cut to `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_line(text: str, pair: str | None = None) -> str:
    """The inspected text (and its pair) in quotes, shortened for a title line."""
    line = f"“{shorten(text)}”"
    if pair is not None:
        line += f" + “{shorten(pair, 50)}”"
    return line


# ---------------------------------------------------------------- fitting labels on an axis


def width_chars(text: str) -> float:
    """Display width in 'average Latin character' units (CJK characters count as two)."""
    return sum(2.0 if unicodedata.east_asian_width(c) in ("W", "F") else 1.0 for c in text)


def label_inches(labels: Sequence[Label], fontsize: float) -> float:
    """Width of the widest label (capped at 24 characters), in inches."""
    widest = max((width_chars(label.text) for label in labels), default=1.0)
    return min(widest, 24) * fontsize * 0.6 / 72 + 0.06


def thin(n: int, space_inches: float, fontsize: float) -> int:
    """Label every step-th token so that labels of `fontsize` points fit in `space_inches`."""
    fits = max(1, int(space_inches * 72 / (fontsize * 1.3)))
    return max(1, math.ceil(n / fits))


def fits_upright(labels: Sequence[Label], fontsize: float, slot_inches: float) -> bool:
    """Key labels stay horizontal when the widest fits in the space of one labelled column."""
    return label_inches(labels, fontsize) <= slot_inches * 0.92


def set_token_ticks(
    ax: Any, axis: str, labels: Sequence[Label], fontsize: float, step: int, upright: bool = False
) -> None:
    """Every step-th label on the x or y axis, coloured by kind; x labels turned 90° unless `upright`."""
    ticks = list(range(0, len(labels), step))
    texts = [plain(labels[k].text) for k in ticks]
    if axis == "x":
        ax.set_xticks(ticks)
        artists = ax.set_xticklabels(texts, rotation=0 if upright else 90, fontsize=fontsize)
    else:
        ax.set_yticks(ticks)
        artists = ax.set_yticklabels(texts, fontsize=fontsize)
    for artist, k in zip(artists, ticks, strict=True):
        if axis == "x" and not upright and width_chars(artist.get_text()) <= 2:
            artist.set_rotation(0)  # a single CJK character (or two Latin ones) reads better upright
        colour = labels[k].colour
        if colour:
            artist.set_color(colour)
