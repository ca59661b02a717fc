"""The original authors' position formulas, written out independently of transformers, to check its results.

This is the one place where posemb re-derives a formula. Nothing here feeds a number that posemb reports: the RoPE
audit (`schemes.rotary.audit`) and the tests compare transformers' frequencies, slopes and buckets with these.
Each function names its source (repository, file, function) and keeps the source's arithmetic (float32 where the
source computes in float32, float64 elsewhere), so a difference means a different rule, not a different rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# ------------------------------------------------------------------------------------------ ALiBi


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's head slopes m_h (Press et al. 2022, "Train Short, Test Long", §3).

    Source: ofirpress/attention_with_linear_biases, fairseq/models/transformer.py, `get_slopes`: for n a power of two,
    a geometric sequence starting at and multiplied by 2^(−8/n); otherwise the slopes of the closest lower power of
    two, then every other slope of twice that power, until there are n.
    """

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


# ------------------------------------------------------------------------------------------ relative buckets


def t5_bucket(
    relative_position: int, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> int:
    """T5's bucket of one offset (memory position − query position; Raffel et al. 2020, §2.1).

    Source: tensorflow/mesh, mesh_tensorflow/transformer/transformer_layers.py, `_relative_position_bucket`:
    n = −offset; bidirectional: half the buckets for n < 0 (keys after the query); |n| < max_exact gets its own
    bucket, beyond that max_exact + int(log(n / max_exact) / log(max_distance / max_exact) · (buckets − max_exact)),
    capped. `mtf.log` of `mtf.to_float` runs in float32, as here.
    """
    ret, n = 0, -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += int(n < 0) * num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    ratio = np.float32(np.float32(n) / np.float32(max_exact))
    large = max_exact + int(np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def mpnet_bucket(relative_position: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """MPNet's bucket of one offset (Song et al. 2020): T5's bidirectional rule (`t5_bucket`).

    Source: microsoft/MPNet, pretraining/fairseq/modules/transformer_sentence_encoder.py, `relative_position_bucket`
    ("this is from T5"); transformers' `MPNetEncoder.relative_position_bucket` copies it and calls it with
    num_buckets=32 whatever the config says.
    """
    return t5_bucket(relative_position, True, num_buckets, max_distance)


def deberta_log_bucket(relative_position: int, bucket_size: int, max_position: int, clamp: bool = False) -> int:
    """DeBERTa's log bucket of one offset (query − key; He et al. 2021, §3.1 and DeBERTa-v2).

    Source: microsoft/DeBERTa, DeBERTa/deberta/da_utils.py, `make_log_bucket_position` (2021, numpy): offsets within
    ±bucket_size/2 keep their value, beyond that sign · (ceil(log(|r| / mid) / log((max_position − 1) / mid)
    · (mid − 1)) + mid). `clamp=True`: the 2023 revision (`make_log_bucket_dict`), which first clamps the offset to
    ±(max_position − 1), so beyond `max_relative_positions` every offset shares the last bucket.
    """
    if clamp:
        relative_position = max(-max_position + 1, min(max_position - 1, relative_position))
    mid = bucket_size // 2
    sign = (relative_position > 0) - (relative_position < 0)
    absolute = mid - 1 if -mid < relative_position < mid else abs(relative_position)
    if absolute <= mid:
        return relative_position
    log_position = math.ceil(math.log(absolute / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    return int(log_position * sign)


# ------------------------------------------------------------------------------------------ sinusoids


def sinusoidal_table(length: int, dim: int, base: float = 10000.0, spacing: str = "vaswani") -> np.ndarray:
    """The sinusoidal position table, (length, dim).

    "vaswani": Vaswani et al. 2017, "Attention Is All You Need", §3.5: PE(p, 2i) = sin(p / base^(2i/d)),
    PE(p, 2i+1) = cos(p / base^(2i/d)), interleaved (transformers' `create_sinusoidal_embeddings`, DistilBERT).
    "tensor2tensor": tensorflow/tensor2tensor, tensor2tensor/layers/common_attention.py, `get_timing_signal_1d`:
    d/2 timescales spaced log(base)/(d/2 − 1) apart (so the slowest is exactly 1/base), sines in the first half of
    the columns and cosines in the second (concatenated, not interleaved).
    """
    half = dim // 2
    positions = np.arange(length, dtype=np.float64)[:, None]
    if spacing == "vaswani":
        table = np.zeros((length, dim))
        for i in range((dim + 1) // 2):
            angle = positions[:, 0] / base ** (2 * i / dim)
            table[:, 2 * i] = np.sin(angle)
            if 2 * i + 1 < dim:
                table[:, 2 * i + 1] = np.cos(angle)
        return table
    if spacing == "tensor2tensor":
        increment = math.log(base) / max(half - 1, 1)
        inverse = np.exp(np.arange(half) * -increment)
        angles = positions * inverse[None, :]
        table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
        return np.pad(table, ((0, 0), (0, dim % 2)))
    raise ValueError(f"unknown spacing {spacing!r}; expected 'vaswani' or 'tensor2tensor'")


# ------------------------------------------------------------------------------------------ RoPE


def rope_default(dim: int, base: float) -> np.ndarray:
    """θ_i = base^(−2i/d), i = 0 .. d/2 − 1 (Su et al. 2021, RoFormer, eq. 15).

    Source: ZhuiyiTechnology/roformer, roformer.py (bert4keras `SinusoidalPositionEmbedding`, merge_mode 'zero'):
    `pow(10000, -2 * arange(d/2) / d)`.
    """
    return np.array([base ** (-2.0 * i / dim) for i in range(dim // 2)])


def rope_linear(dim: int, base: float, factor: float) -> np.ndarray:
    """Position interpolation: θ_i / factor (Chen et al. 2023; kaiokendev, "Things I'm learning while training
    SuperHOT", `scale = 1/4` on the positions). Source: kaiokendev/cutoff-len-is-context-len, util/llama_rope_scaled_
    monkey_patch.py, `ScaledRotaryEmbedding`: `t *= self.scale`, equal to dividing every frequency by the factor."""
    return rope_default(dim, base) / factor


def rope_dynamic(dim: int, base: float, factor: float, training_length: int, length: int) -> np.ndarray:
    """Dynamic NTK scaling at a sequence of `length` positions (emozilla, r/LocalLLaMA 2023).

    Source: jquesnelle/yarn, scaled_rope/LlamaDynamicScaledRotaryEmbedding.py, `_set_cos_sin_cache`: past the
    training length, base' = base · (factor · length / training − (factor − 1))^(d / (d − 2)); at or within it, the
    base itself. `training_length` is the `max_position_embeddings` that class is built with: the length the model
    was trained on.
    """
    if length > training_length:
        base = base * (factor * length / training_length - (factor - 1)) ** (dim / (dim - 2))
    return rope_default(dim, base)


def yarn_attention_factor(factor: float) -> float:
    """YaRN's mscale 0.1 · ln(s) + 1 (1 for s ≤ 1). Source: jquesnelle/yarn, scaled_rope/LlamaYaRNScaledRotaryEmbedding
    .py, `_yarn_get_mscale`."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def rope_yarn(
    dim: int, base: float, factor: float, original: int, beta_fast: float = 32.0, beta_slow: float = 1.0
) -> np.ndarray:
    """YaRN's "NTK-by-parts" frequencies (Peng et al. 2023, §3.2).

    Source: jquesnelle/yarn, scaled_rope/LlamaYaRNScaledRotaryEmbedding.py, `_yarn_find_correction_dim`,
    `_yarn_find_correction_range`, `_yarn_linear_ramp_mask` and `_set_cos_sin_cache`: pairs that turn more than
    beta_fast times within the original length keep θ_i, those that turn fewer than beta_slow times get θ_i / factor,
    and a linear ramp over the pair index joins them (extrapolation_factor 1).
    """

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low: float = max(math.floor(correction_dim(beta_fast)), 0)
    high: float = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    theta = rope_default(dim, base)
    return theta / factor * (1 - extrapolation) + theta * extrapolation


def rope_llama3(
    dim: int, base: float, factor: float, original: int, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0
) -> np.ndarray:
    """Llama 3.1's frequency scaling.

    Source: meta-llama/llama-models, models/llama3/reference_impl/model.py, `apply_scaling` (there old_context_len =
    8192, low_freq_factor = 1, high_freq_factor = 4; here parameters): wavelengths below original / high_freq_factor
    keep θ, above original / low_freq_factor get θ / factor, and between them a smooth blend.
    """
    low_wavelength, high_wavelength = original / low_freq_factor, original / high_freq_factor
    out = []
    for freq in rope_default(dim, base):
        wavelength = 2 * math.pi / freq
        if wavelength < high_wavelength:
            out.append(freq)
        elif wavelength > low_wavelength:
            out.append(freq / factor)
        else:
            smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return np.array(out)


def rope_longrope(
    dim: int, base: float, short_factor: Sequence[float], long_factor: Sequence[float], original: int, length: int
) -> np.ndarray:
    """LongRoPE (Ding et al. 2024) as Phi-3 applies it: θ_i / f_i with one rescale factor per pair.

    Source: microsoft/Phi-3-mini-128k-instruct, modeling_phi3.py, `Phi3LongRoPEScaledRotaryEmbedding.forward`: the
    long factors when the sequence is longer than `original_max_position_embeddings` (`seq_len > original`), the
    short factors otherwise: a sequence of exactly `original` positions uses the short ones.
    """
    factors = np.asarray(long_factor if length > original else short_factor, dtype=np.float64)
    return 1.0 / (factors * base ** (np.arange(0, dim, 2) / dim))


def longrope_attention_factor(max_positions: int, original: int) -> float:
    """√(1 + ln(s) / ln(original)) with s = max / original (1 for s ≤ 1). Source: as `rope_longrope`."""
    scale = max_positions / original
    return 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(original))
