"""MkDocs hook (mkdocs.yml `hooks:`): the nav already lists the pages that other work adds (OPTIONAL); until such a
file exists in docs/, its nav entry is dropped, so that `mkdocs build --strict` passes before and after it arrives.
Any other nav entry without its file still fails the strict build."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks")
OPTIONAL = {"long-context.md", "extrapolate.md", "conventions.md"}


def _kept(item: Any, docs: Path) -> Any:
    """`item` (a nav entry: "page.md" or {title: page or [entries]}) without the optional pages that are missing."""
    if isinstance(item, dict):
        ((title, value),) = item.items()
        if isinstance(value, list):
            entries = [kept for kept in (_kept(entry, docs) for entry in value) if kept is not None]
            return {title: entries} if entries else None
        return item if _kept(value, docs) is not None else None
    if isinstance(item, str) and item in OPTIONAL and not (docs / item).is_file():
        log.info("nav: %s is not written yet; its entry is left out", item)
        return None
    return item


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    config["nav"] = [kept for kept in (_kept(item, docs) for item in config["nav"]) if kept is not None]
    return config
