"""The RoPE parameters posemb accepts: each rope type's parameters (as transformers reads them) and one range per
parameter, checked the same way for `--rope-type`/`--factor`/`--rope-param` (schemes.rotary) and a config's
rope_parameters (models.validate). Below both: it imports nothing of posemb but the errors."""

from __future__ import annotations

import math
from typing import Any

from .errors import PosembUsageError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


# rope type -> the parameters it reads (besides rope_type, rope_theta, partial_rotary_factor), as transformers does
ROPE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor", "original_max_position_embeddings"),
    "dynamic": ("factor", "original_max_position_embeddings"),
    "yarn": (
        "factor",
        "original_max_position_embeddings",
        "attention_factor",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "truncate",
    ),
    "longrope": ("short_factor", "long_factor", "factor", "attention_factor", "original_max_position_embeddings"),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
}
COMMON_PARAMETERS = ("rope_type", "type", "rope_theta", "partial_rotary_factor")
MAX_FACTOR = 10_000.0  # the largest scaling factor (and per-pair LongRoPE factor) posemb accepts: 10,000 × the length
# parameter -> (lowest, highest, lowest included): one range for --factor, --rope-param and a config's values
PARAMETER_RANGES: dict[str, tuple[float, float, bool]] = {
    "rope_theta": (1.0, 1e12, True),
    "factor": (1.0, MAX_FACTOR, True),
    "original_max_position_embeddings": (1, 1e7, True),
    "attention_factor": (0.0, 1e3, False),
    "beta_fast": (0.0, 1e4, False),
    "beta_slow": (0.0, 1e4, False),
    "mscale": (0.0, 1e3, True),
    "mscale_all_dim": (0.0, 1e3, True),
    "low_freq_factor": (0.0, 1e4, False),
    "high_freq_factor": (0.0, 1e4, False),
    "partial_rotary_factor": (0.0, 1.0, False),
    "short_factor": (0.0, MAX_FACTOR, False),
    "long_factor": (0.0, MAX_FACTOR, False),
}


def check_rope_parameters(params: dict[str, Any], name: Any, error: type[Exception] = PosembUsageError) -> None:
    """Range checks of one rope parameter set; `name(key)` says where a value came from ("--rope-param beta_fast",
    "config.json: rope_parameters.factor"). Unknown rope types and parameters, non-numbers, NaN/inf, values out of
    `PARAMETER_RANGES` and zero divisors (llama3's high_freq_factor = low_freq_factor, yarn's beta_fast ≤
    beta_slow) are an `error`."""
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_PARAMETERS and error is not PosembUsageError:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        if rope_type in ROPE_INIT_FUNCTIONS:  # a newer type transformers knows: its own checks apply
            return
    if rope_type not in ROPE_PARAMETERS:
        raise error(f"{name('rope_type')} is {rope_type!r}; posemb knows {', '.join(ROPE_TYPES)}")
    for key, value in params.items():
        if key in COMMON_PARAMETERS and key not in PARAMETER_RANGES:
            continue
        if key not in ROPE_PARAMETERS[rope_type] and key not in COMMON_PARAMETERS:
            if error is PosembUsageError:
                known = ", ".join(ROPE_PARAMETERS[rope_type]) or "none"
                raise error(f"{name(key)}: rope type {rope_type} takes no parameter {key!r} (it takes: {known})")
            continue  # a config may carry keys of other code; transformers ignores them too
        if key == "truncate":
            if not isinstance(value, bool):
                raise error(f"{name(key)} must be true or false, got {value!r}")
            continue
        values = value if key in ("short_factor", "long_factor") else [value]
        if key in ("short_factor", "long_factor") and (not isinstance(value, (list, tuple)) or not value):
            raise error(f"{name(key)} must be a list of numbers, one per rotary pair, got {value!r}")
        if value is None and key in (
            "factor",
            "attention_factor",
            "mscale",
            "mscale_all_dim",
            "beta_fast",
            "beta_slow",
        ):
            continue  # transformers fills these in
        low, high, closed = PARAMETER_RANGES.get(key, (-math.inf, math.inf, True))
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise error(f"{name(key)} must be a number, got {item!r}")
            if not math.isfinite(item):
                raise error(f"{name(key)} is {item}: it must be a finite number")
            if not (low <= item if closed else low < item) or item > high:
                side = "at least" if closed else "more than"
                raise error(f"{name(key)} is {item:g}: it must be {side} {low:g} and at most {high:g}")
    if rope_type == "llama3" and params.get("high_freq_factor") == params.get("low_freq_factor") is not None:
        raise error(f"{name('high_freq_factor')} equals low_freq_factor: llama3's blend divides by their difference")
    fast, slow = params.get("beta_fast"), params.get("beta_slow")
    if rope_type == "yarn" and fast is not None and slow is not None and fast <= slow:
        raise error(f"{name('beta_fast')} ({fast:g}) must be more than beta_slow ({slow:g})")
    if rope_type == "longrope":
        for key in ("short_factor", "long_factor"):
            if key not in params:
                raise error(f"{name(key)} is missing: longrope needs a short and a long factor per rotary pair")
        if len(params["short_factor"]) != len(params["long_factor"]):
            raise error(
                f"{name('long_factor')} has {len(params['long_factor'])} values, short_factor "
                f"{len(params['short_factor'])}: one each per rotary pair"
            )
