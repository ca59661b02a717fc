"""Which kind of writing a character is, so that advice fits it: a model whose vocabulary covers it (core's [UNK]
warning) and a font that draws it (render/fonts.py). An emoji is wide like a CJK character (Unicode's East Asian
Width), yet neither a Chinese model nor a CJK font helps with it."""

from __future__ import annotations

import unicodedata

# Unicode names of the characters a CJK font draws: Han, kana, Hangul, Bopomofo, CJK punctuation, full-width forms.
_CJK_NAMES = ("CJK ", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "KANGXI", "FULLWIDTH", "HALFWIDTH")
_HAN_NAMES = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")
# Characters that join, tint or select emoji: zero-width joiner, emoji variation selector, keycap, tags (flags).
_EMOJI_PARTS = {0x200D, 0xFE0F, 0x20E3}


def kind(char: str) -> str:
    """`han` (Chinese characters), `cjk` (kana, Hangul and the other characters a CJK font draws), `emoji` (emoji and
    other pictographic symbols, Unicode category So) or `other` (every other script)."""
    name = unicodedata.name(char, "")
    if name.startswith(_HAN_NAMES):
        return "han"
    if name.startswith(_CJK_NAMES):
        return "cjk"
    code = ord(char)
    if code in _EMOJI_PARTS or 0x1F000 <= code <= 0x1FAFF or 0xE0000 <= code <= 0xE007F:
        return "emoji"
    return "emoji" if unicodedata.category(char) == "So" else "other"


def by_kind(chars: str) -> dict[str, str]:
    """The characters grouped by `kind`, in order of first appearance (groups and characters)."""
    groups: dict[str, str] = {}
    for char in chars:
        group = kind(char)
        groups[group] = groups.get(group, "") + char
    return groups
