"""Resolve a model name to a local folder, load it safely, and list what is available offline.

locate.py    a name (the bundled model's aliases, a local folder, a hub id) -> a local folder; `posemb models`' list
validate.py  the checks a folder passes before anything is built from it (hostile files, config, family, RoPE
             parameters, weight shapes, token ids) and the device and --dtype asked for
loading.py   tokenizer, config and model loaded from a checked folder: LoadedModel, ModelInfo, load(), the load cache
digest.py    the folder's stamp (the load cache reads a changed folder again) and its fingerprint
"""

from .digest import FINGERPRINT_FILES, files_stamp, fingerprint
from .loading import CacheKey, LoadCache, LoadedModel, ModelInfo, enable_load_cache, load, model_info
from .locate import (
    BUNDLED_ALIASES,
    BUNDLED_NAME,
    BUNDLED_SHA256,
    HUB_FILES,
    HUB_PICKLES,
    bundled_model_path,
    hub_cache_dir,
    hub_patterns,
    list_models,
    resolve,
)
from .validate import (
    DTYPES,
    MAX_METADATA_BYTES,
    TOKENIZER_FILES,
    VOCABULARY_FILES,
    WEIGHT_FILES,
    check_config,
    check_dtype,
    check_family,
    check_file,
    check_folder,
    check_rope_config,
    check_weights,
    choose_device,
    read_config,
)

__all__ = [
    "BUNDLED_ALIASES",
    "BUNDLED_NAME",
    "BUNDLED_SHA256",
    "DTYPES",
    "FINGERPRINT_FILES",
    "HUB_FILES",
    "HUB_PICKLES",
    "MAX_METADATA_BYTES",
    "TOKENIZER_FILES",
    "VOCABULARY_FILES",
    "WEIGHT_FILES",
    "CacheKey",
    "LoadCache",
    "LoadedModel",
    "ModelInfo",
    "bundled_model_path",
    "check_config",
    "check_dtype",
    "check_family",
    "check_file",
    "check_folder",
    "check_rope_config",
    "check_weights",
    "choose_device",
    "enable_load_cache",
    "files_stamp",
    "fingerprint",
    "hub_cache_dir",
    "hub_patterns",
    "list_models",
    "load",
    "model_info",
    "read_config",
    "resolve",
]
