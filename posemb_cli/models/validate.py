"""The checks a model folder passes before anything is built from it: plain files of bounded size (a hostile folder's
links to /dev/zero, pipes and huge files are refused), a sane config.json, a known family, RoPE parameters within
range, weights whose shapes match the config, token ids within the embedding; and the device and --dtype asked for."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

from ..errors import PosembError
from ..registry import CONFIG_KEYS, FAMILIES, GENERIC, SIZE_BOUNDS, Family, family_for
from ..rope_parameters import check_rope_parameters

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


def check_rope_config(config: Any, path: Path) -> None:
    """A config's RoPE parameters within posemb's ranges (`rope_parameters.check_rope_parameters`), before anything is
    built from them: NaN, a zero or huge factor, a zero divisor is one line naming the field, never numbers computed
    from it."""
    parameters = getattr(config, "rope_parameters", None)
    if not isinstance(parameters, dict) or not parameters:
        return
    nested = all(isinstance(value, dict) for value in parameters.values())
    for name, params in parameters.items() if nested else [(None, parameters)]:
        prefix = f"rope_parameters.{name}." if name else "rope_parameters."
        check_rope_parameters(params, lambda key, p=prefix: f"{path / 'config.json'}: {p}{key}", PosembError)


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
        raise PosembError(f"--dtype {dtype} is not supported on {device}: {one_line(exc)}; use float32") from None
    return torch_dtype


def weight_files(name: str, path: Path) -> list[Path]:
    """The files transformers loads: safetensors if there are any, else the pickles."""
    for pattern in WEIGHT_FILES:
        if files := sorted(path.glob(pattern)):
            return files
    raise PosembError(f"model folder of {name!r} has no weights ({' or '.join(WEIGHT_FILES)})")


def _weight_shapes(name: str, path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, file name) of the weights, from the file headers: no tensor is read."""
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in weight_files(name, path):
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
            raise PosembError(f"cannot load the weights of {name!r}: {file.name}: {one_line(exc)}") from None
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
        raise PosembError(f"cannot build {name!r} from {path / 'config.json'}: {one_line(exc)}") from None
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


def check_token_ids(path: Path, tokenizer: Any, rows: int | None) -> None:
    """Every id the tokenizer can produce must have a row in the token embedding."""
    top = max(tokenizer.get_vocab().values(), default=-1)
    if rows is not None and top >= rows:
        where = path / "tokenizer.json" if (path / "tokenizer.json").exists() else path
        raise PosembError(
            f"{where}: token ids reach {top} but the model's token embedding has {rows} rows (vocab_size in "
            f"{path / 'config.json'}): those tokens could not be embedded"
        )


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(exc).__name__
