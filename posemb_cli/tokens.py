"""A token as every command reports it. A leaf: the core makes them; words, compare, the tables and the figures read
them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    index: int
    id: int
    token: str
    position_id: int | None
    segment: int | None
    start: int | None  # character offsets into the text (or the pair) the token came from
    end: int | None
    special: bool
    unknown: bool
    sequence: int | None  # 0 = text, 1 = pair, None = special token
