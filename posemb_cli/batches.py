"""Batches of a stream: `chunks` (core's batches of texts, stats' blocks of lines). A leaf above errors.py."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from .errors import PosembError

T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to `size` items, in order. When reading an item fails (invalid UTF-8 on line 7), the items read
    before it are yielded first and the error is raised after them: every line before a bad one gets its answer."""
    iterator = iter(items)
    while True:
        chunk: list[T] = []
        try:
            for item in iterator:
                chunk.append(item)
                if len(chunk) == size:
                    break
        except PosembError:
            if chunk:
                yield chunk
            raise
        if not chunk:
            return
        yield chunk
