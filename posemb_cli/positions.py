"""`posemb positions`: the position scheme of a model (or of an analytic scheme) and the properties of its
proximity matrix Phi over the first N positions.

What Phi is, per scheme, is said by each scheme object (`schemes/`); this module picks the scheme, checks the
options, and adds the identical-word probe (Wang et al., ICLR 2021, §4): feed N copies of one word, so that the first
layer's attention differs between positions only through position. Returns a `PositionAnalysis` that every renderer
(rich table, JSON, figure) reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import schemes
from .errors import PosembError, PosembUsageError
from .finite import index_ranges, nonfinite_warning
from .models import LoadedModel
from .schemes.base import PositionAnalysis, PositionPicture, probe_word_ids, properties

DEFAULT_LENGTH = 128
MAX_PICTURE_POSITIONS = 4096  # computed pictures (rotary, ALiBi): keep the n x n matrices reasonable
PROBE_BATCH = 8  # words per forward pass of the identical-word probe
CAUSAL_UNUSED_SCHEMES = ("alibi", "rotary")  # relative scores: on a causal model, Phi at j > i never reaches a query


def analyse_scheme(
    scheme: str, length: int | None = None, metric: str = "dot", window: int = 16, **options: Any
) -> PositionAnalysis:
    """An analytic scheme with no weights (a `--scheme` value: sinusoidal, rotary, alibi, t5).

    `options` are the scheme's own (`PositionScheme.options`: dim, base, heads, buckets, ...); None means its default.
    ``length`` defaults to 128. ``metric`` applies to sinusoidal and rotary only.
    """
    found = schemes.get(scheme)
    if found is None or found.options is None:
        choices = ", ".join(schemes.ANALYTIC)
        raise PosembUsageError(f"unknown --scheme {scheme!r}; choose one of {choices}")
    given = {key: value for key, value in options.items() if value is not None}
    extra = sorted(set(given) - set(found.options))
    if extra:
        flags = ", ".join("--" + key.replace("_", "-") for key in extra)
        raise PosembUsageError(f"{flags} does not apply to --scheme {scheme}; it takes {_flags(found.options)}")
    length = _check_length(DEFAULT_LENGTH if length is None else length, None, "")
    _check_options(metric, window)
    return found.analyse(length, metric, window, **{**found.options, **given})


def _flags(options: dict[str, Any]) -> str:
    return ", ".join("--" + key.replace("_", "-") for key in options) or "no options"


def _check_options(metric: str, window: int) -> None:
    if metric not in ("dot", "cosine"):
        raise PosembUsageError(f"--metric must be dot or cosine, got {metric!r}")
    if window < 1:
        raise PosembUsageError(f"--window must be at least 1, got {window}")


def _check_length(length: int, maximum: int | None, name: str, option: str = "--length") -> int:
    if length < 2:
        raise PosembUsageError(f"{option} must be at least 2, got {length}")
    if maximum is not None and length > maximum:
        raise PosembUsageError(f"{option} {length} is more than the {maximum} positions {name} has")
    return length


def analyse_model(
    loaded: LoadedModel,
    length: int | None = None,
    metric: str = "dot",
    window: int = 16,
    probe: str | None = None,
    words: int = 30,
    seed: int = 0,
    at_length: int | None = None,
) -> PositionAnalysis:
    """Phi of a loaded model's own position scheme; ``probe="identical-word"`` adds the attention probe.

    ``length`` defaults to min(128, the model's positions). The scheme object reads its table, frequencies or biases
    from the modules and config the registry names.
    """
    info = loaded.info
    if info.position_scheme == "unknown":
        raise PosembError(f"the position scheme of {info.type} is unknown to posemb")
    _check_options(metric, window)
    maximum = info.max_positions
    length = _check_length(
        min(DEFAULT_LENGTH, maximum or DEFAULT_LENGTH) if length is None else length, maximum, info.name
    )
    if probe not in (None, "identical-word"):
        raise PosembUsageError(f"unknown --probe {probe!r}; the only probe is identical-word")
    parts_names = info.position_scheme.split("+")
    parts = [schemes.get(name) for name in parts_names]
    if at_length is not None and "rotary" not in parts_names:
        raise PosembUsageError(f"--at-length applies to rotary models; {info.name} is {info.position_scheme}")
    if all(part is not None for part in parts):
        rotary = {"at_length": at_length} if parts_names[0] == "rotary" else {}
        analysis = parts[0].from_model(loaded, length, metric, window, **rotary)  # type: ignore[union-attr]
        for part in parts[1:]:  # a second mechanism (MPNet's relative buckets): its bias and buckets join Phi
            extra = part.from_model(loaded, length, metric, window)  # type: ignore[union-attr]
            analysis.scheme = info.position_scheme
            analysis.bias, analysis.buckets = extra.bias or analysis.bias, extra.buckets or analysis.buckets
            analysis.notes.append(f"also {extra.scheme}: {extra.source}; Phi above is the {parts_names[0]} part")
    elif info.position_scheme == "none" and probe is not None:  # nothing to read: the probe's head mean becomes Phi
        analysis = PositionAnalysis("none", info.name, "none", length, "attention", np.zeros((length, length)), {})
        analysis.meaning = "Φ(i, j) = first-layer attention of position i to position j in the identical-word probe"
        analysis.notes.append("the model adds no position information; Phi is the identical-word probe's")
    else:
        raise PosembError(f"{info.name} ({info.position_scheme}) adds no position information to analyse; try --probe")
    if loaded.family.causal:
        analysis.notes.append(
            "causal model: a query attends only to positions j <= i (for ALiBi and rotary, Phi at j > i is unused)"
            if info.position_scheme.split("+")[0] in CAUSAL_UNUSED_SCHEMES
            else "causal model: a query attends only to positions j <= i"
        )
    if probe is not None:
        identical_word_probe(loaded, analysis, words, seed, window)
    analysis.warnings += nonfinite_warning(_nonfinite_places(analysis))
    if analysis.regression_mae is not None and not np.isfinite(analysis.regression_mae):
        analysis.regression_mae = None  # undefined: a row of the table is not finite
    if analysis.pca_explained is not None and not np.isfinite(analysis.pca_explained).all():
        analysis.pca, analysis.pca_explained = None, None
    return analysis


MAX_EXPORT_VALUES = 2_000_000  # numbers `positions --json --vectors` writes at most (about 40 MB of JSON)


def check_export_size(analysis: PositionAnalysis) -> None:
    """`--vectors` within MAX_EXPORT_VALUES numbers (a sinusoidal table of --length × --dim counts length × dim)."""
    count = sum(np.size(value) for value in _leaves(analysis.exports))
    if count > MAX_EXPORT_VALUES:
        raise PosembUsageError(
            f"--vectors would write {count:,} numbers, more than {MAX_EXPORT_VALUES:,}: choose a smaller --length "
            "(or --dim)"
        )


def check_export_request(scheme: str, length: int | None, dim: int | None) -> None:
    """Before any work: an analytic sinusoidal table of --length × --dim beyond MAX_EXPORT_VALUES."""
    found = schemes.get(scheme)
    if found is not None and found.name == "sinusoidal":
        options = found.options or {}
        count = (length or DEFAULT_LENGTH) * (dim or options.get("dim", 512))
        if count > MAX_EXPORT_VALUES:
            raise PosembUsageError(
                f"--vectors would write {count:,} numbers, more than {MAX_EXPORT_VALUES:,}: choose a smaller --length "
                "(or --dim)"
            )


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list) and value and isinstance(value[0], (list, dict)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _nonfinite_places(analysis: PositionAnalysis) -> list[str]:
    """Which position-table rows and which probe heads hold NaN or Inf: Phi and the properties that involve them
    are then undefined (null in JSON, – in tables)."""
    places = []
    if analysis.vectors is not None and not np.isfinite(analysis.vectors).all():
        rows = np.flatnonzero(~np.isfinite(analysis.vectors).all(axis=-1))
        places.append(f"the position table (position ids {index_ranges(rows + analysis.first_id)})")
    elif not np.isfinite(analysis.matrix).all():
        rows = np.flatnonzero(~np.isfinite(analysis.matrix).all(axis=-1))
        places.append(f"Phi (rows {index_ranges(rows)})")
    if analysis.probe_matrices is not None and not np.isfinite(analysis.probe_matrices).all():
        heads = np.flatnonzero(~np.isfinite(analysis.probe_matrices).all(axis=(-2, -1)))
        places.append(f"the identical-word probe's first-layer attention (heads {index_ranges(heads)})")
    return places


def default_picture_positions(max_positions: int | None) -> int:
    """--positions default of `inspect --plot positions`: 128, or fewer when the model has fewer."""
    return min(DEFAULT_LENGTH, max_positions) if max_positions else DEFAULT_LENGTH


def position_picture(loaded: LoadedModel, n: int | None = None) -> PositionPicture | None:
    """What `inspect --plot positions` draws for the first `n` positions (cosine Phi, or the biases); None when the
    model's scheme has no picture."""
    info = loaded.info
    n = default_picture_positions(info.max_positions) if n is None else n
    if n < 1:
        raise PosembUsageError(f"--positions must be at least 1, got {n}")
    scheme = schemes.get(info.position_scheme.split("+")[0])
    if scheme is None:
        return None
    if info.max_positions is not None and n > info.max_positions:
        raise PosembUsageError(f"--positions {n} is more than the {info.max_positions} positions of {info.name}")
    if n > MAX_PICTURE_POSITIONS:
        raise PosembUsageError(f"--positions {n} is too many to draw; at most {MAX_PICTURE_POSITIONS}")
    analysis = scheme.from_model(loaded, max(n, 2), "cosine", 16)
    picture = dataclasses.replace(scheme.picture(analysis), properties=analysis.properties)
    if loaded.family.causal and scheme.name in CAUSAL_UNUSED_SCHEMES:
        note = f"{picture.note}; causal model: Φ at j > i (above the diagonal) is unused"
        picture = dataclasses.replace(picture, note=note)
    return picture


# ------------------------------------------------------------------------------------------ identical-word probe


def first_layer_attention(loaded: LoadedModel, word_ids: list[int], length: int) -> np.ndarray:
    """Mean over words of the first layer's attention to ``length`` copies of each word: (heads, length, length).

    Raw ids, no special tokens; position ids as the model computes them for an unpadded sequence.
    """
    import torch

    from . import runner

    total = None
    for start in range(0, len(word_ids), PROBE_BATCH):
        ids = torch.tensor(word_ids[start : start + PROBE_BATCH], dtype=torch.long, device=loaded.device)
        input_ids = ids[:, None].expand(-1, length).contiguous()
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        forward = runner.run(loaded, inputs, maps=runner.Maps(layers=(0,), narrow="give a smaller --length"))
        if forward.maps is None or forward.maps[0] is None:
            raise PosembError(f"{loaded.info.name} returned no attention weights (is attention eager?)")
        layer = forward.maps[0].double().sum(dim=0)
        total = layer if total is None else total + layer
    assert total is not None  # probe_word_ids returns at least one word
    return (total / len(word_ids)).cpu().numpy()


def identical_word_probe(loaded: LoadedModel, analysis: PositionAnalysis, words: int, seed: int, window: int) -> None:
    """Wang et al. (ICLR 2021, §4): the first layer's attention on N copies of one word, averaged over ``words``
    random words; Phi is that attention (head mean) and per head. Fills ``analysis.probe`` and ``probe_matrices``.

    posemb's choices: the sequence is the raw ids with no special tokens ([CLS] ... [SEP] would make the ends differ
    from the rest, and position would no longer be the only difference between rows), and its properties are
    posemb's scores (`schemes.base.properties`), not the paper's own indicators. On a causal model attention to
    j > i is 0, so symmetry and forward monotonicity are undefined: NaN here, null in JSON, "–" in the table."""
    if words < 1:
        raise PosembUsageError(f"--words must be at least 1, got {words}")
    vocab_size = getattr(loaded.model.config, "vocab_size", None) or len(loaded.tokenizer)
    word_ids = probe_word_ids(loaded.tokenizer, vocab_size, words, seed)
    if len(word_ids) < words:
        analysis.notes.append(f"the vocabulary has only {len(word_ids)} ordinary words; the probe uses all of them")
    per_head = first_layer_attention(loaded, word_ids, analysis.length)
    mean = per_head.mean(axis=0)
    analysis.probe_matrices = per_head
    analysis.probe = {
        "kind": "identical-word",
        "words": len(word_ids),
        "seed": seed,
        "layer": 0,
        "word_ids": word_ids,
        "tokens": loaded.tokenizer.convert_ids_to_tokens(word_ids),
        "properties": properties(mean, window),
        "per_head": [{"head": h, **properties(per_head[h], window)} for h in range(len(per_head))],
    }
    if loaded.family.causal:
        analysis.notes.append(
            "probe on a causal model: attention to j > i is 0, so its symmetry and forward monotonicity are undefined "
            "(–; null in JSON)"
        )
    if analysis.scheme == "none":
        analysis.matrix, analysis.properties = mean, analysis.probe["properties"]
