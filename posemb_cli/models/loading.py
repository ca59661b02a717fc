"""Loading a checked model folder: tokenizer, config and model (eager attention, or the causal-LM head with SDPA),
the LoadedModel every command runs, and the opt-in cache of loaded models (tests, `posemb serve`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from .. import eager_fixes
from ..errors import PosembError
from ..registry import Family
from .digest import files_stamp
from .locate import resolve
from .validate import (
    check_dtype,
    check_family,
    check_folder,
    check_rope_config,
    check_token_ids,
    check_weights,
    choose_device,
    one_line,
    read_config,
    weight_files,
)


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


def model_info(name: str, path: Path, config: Any, family: Family) -> ModelInfo:
    facts = family.facts(config)
    return ModelInfo(name=name, type=config.model_type, **{k: facts[k] for k in _INFO_FACTS}, path=str(path))


_INFO_FACTS = ("family", "position_scheme", "layers", "heads", "hidden_size", "max_positions")


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
    check_token_ids(path, tokenizer, vocabulary)
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
        raise PosembError(f"cannot load the tokenizer of {name!r}: {one_line(exc)}") from None
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
        raise PosembError(f"cannot read {path / 'config.json'}: {one_line(exc)}") from None


def _load_model(
    name: str, path: Path, config: Any, trust_remote_code: bool, dtype: Any = None, causal_lm: bool = False
) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM

    has_safetensors = weight_files(name, path)[0].suffix == ".safetensors"

    def attempt(implementation: str) -> Any:
        # transformers 5 reads *.bin with torch.load(weights_only=True), which cannot run code.
        return (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(
            str(path),
            config=config,
            attn_implementation=implementation,
            trust_remote_code=trust_remote_code,
            use_safetensors=has_safetensors,
            dtype=dtype,
        )

    try:
        try:
            model = attempt("sdpa" if causal_lm else "eager")
        except ValueError as exc:
            # a causal LM without an SDPA path (BLOOM in transformers 5.24): its eager path is the one it has
            if not causal_lm or "scaled_dot_product_attention" not in str(exc):
                raise
            model = attempt("eager")
    except Exception as exc:
        raise PosembError(f"cannot load the weights of {name!r}: {one_line(exc)}") from None
    # An encoder-decoder (T5) is inspected through its encoder: the text goes in there, no decoder inputs needed.
    return model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model


def _dtype_name(model: Any) -> str:
    parameter = next(iter(model.parameters()), None)
    return "float32" if parameter is None else str(parameter.dtype).removeprefix("torch.")
