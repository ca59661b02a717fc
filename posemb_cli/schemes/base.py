"""What every position scheme shares: the analysis result, the picture data, Φ's properties and the scheme protocol.

A position scheme is one object (a subclass of `PositionScheme`, one module each in this package) that owns:
its formula (Φ), how it is read from a loaded model, its `--scheme` options, its one-line meaning and the data of
its picture. `positions`, `compare`, the tables and the figures dispatch through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import metrics
from ..errors import PosembError, PosembUsageError
from ..finite import finite_number

if TYPE_CHECKING:
    from ..models import LoadedModel

MAX_HEAD_MATRIX_VALUES = 50_000_000  # per-head matrices beyond this are not kept (memory); the head mean still is


@dataclass
class PositionAnalysis:
    """Φ over the first `length` positions of one scheme (of a model, or analytic) and what is known about it."""

    scheme: str
    model: str | None  # model name, or None for an analytic scheme
    source: str  # where the scheme lives, e.g. "embeddings.position_embeddings (rows 2..129 of 130)"
    length: int
    metric: str  # what Phi measures: "dot", "cosine", "bias" (ALiBi, T5 with weights) or "bucket_level" (T5)
    matrix: np.ndarray  # (length, length) Phi on which `properties` are computed
    properties: dict[str, Any]
    meaning: str = ""  # one sentence: what Phi(i, j) is (the scheme's `meaning`)
    slopes: list[float] | None = None  # ALiBi slope per head
    buckets: dict[int, int] | None = None  # T5: relative offset (key - query) -> bucket
    head_matrices: np.ndarray | None = None  # (heads, length, length): ALiBi bias or T5 learned bias per head
    probe: dict[str, Any] | None = None  # identical-word probe; see `positions.identical_word_probe`
    probe_matrices: np.ndarray | None = None  # (heads, length, length): first-layer attention averaged over words
    regression_mae: float | None = None  # Wang & Chen (EMNLP 2020): absolute position read back from the vector
    pca: np.ndarray | None = None  # (length, 2) first two principal components of the vectors
    pca_explained: list[float] | None = None
    vectors: np.ndarray | None = None  # (length, dim) position vectors, for learned and sinusoidal schemes
    first_id: int = 0  # position id of row 0 (RoBERTa-style tables: padding_idx + 1)
    rope: dict[str, Any] | None = None  # rotary settings (`schemes.rotary.rope_json`)
    audit: dict[str, Any] | None = None  # rotary: config frequencies against the model's buffers
    bias: dict[str, Any] | None = None  # relative biases: {"offsets": [int], "per_head": [[float]]}
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # also printed on stderr
    # `positions --json --vectors`: rotary "inv_freq" per layer type, "sinusoidal_table", DeBERTa's "buckets"
    exports: dict[str, Any] = field(default_factory=dict)

    def to_json(self, matrix: bool = False, vectors: bool = False) -> dict[str, Any]:
        """Plain JSON types; NaN becomes null. Phi itself (and the probe's head-mean Phi) only with ``matrix``; the
        scheme's own tables (`exports`) under "vectors" only with ``vectors``."""
        probe = None
        if self.probe is not None:
            probe = dict(self.probe)
            if matrix and self.probe_matrices is not None:
                probe["matrix"] = self.probe_matrices.mean(axis=0)
        data: dict[str, Any] = {
            "scheme": self.scheme,
            "model": self.model,
            "source": self.source,
            "length": self.length,
            "metric": self.metric,
            "properties": self.properties,
            "slopes": self.slopes,
            "buckets": None if self.buckets is None else {str(k): v for k, v in self.buckets.items()},
            "probe": probe,
            "regression_mae": self.regression_mae,
            "pca_explained_variance": self.pca_explained,
            "rope": self.rope,
            "audit": self.audit,
            "bias": self.bias,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }
        if matrix:
            data["matrix"] = self.matrix
        if vectors:
            data["vectors"] = self.exports
        return plain(data)


@dataclass(frozen=True)
class PositionPicture:
    """What the positions figure draws: one or more (n, n) panels on one colour scale, with its words."""

    panels: dict[str, np.ndarray]  # panel name ("similarity", "mean", "head 3") -> (n, n)
    title: str
    note: str  # one line on what the panels are
    colorbar: str  # label of the colour bar
    diverging: bool  # True: a similarity on −1..1; False: a bias from its minimum to 0
    properties: dict[str, Any] | None = None  # Φ's properties (`properties`) of the drawn matrix, when known


def plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python; NaN/inf -> None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite_number(value)
    return value


def properties(phi: np.ndarray, window: int = 16) -> dict[str, Any]:
    """Translation invariance, symmetry and local monotonicity of Phi: the properties of Wang et al. (ICLR 2021, §3),
    which the paper states as yes/no; each score here is posemb's measure of how nearly one holds (`metrics`).

    Each is 1 for an ideal relative-position Phi: 1 = Phi depends only on j - i; 1 = Phi(i, j) = Phi(j, i);
    1 = Phi falls steadily with |j - i| within ``window`` positions (forward: j > i, backward: j < i).
    """
    forward, backward = metrics.local_monotonicity(phi, window)
    return {
        "translation_invariance": metrics.translation_invariance(phi),
        "symmetry": metrics.symmetry(phi),
        "monotonicity": {"forward": forward, "backward": backward, "window": window},
    }


def offsets(length: int) -> np.ndarray:
    """Matrix of offsets j - i (key minus query) for an ``length`` x ``length`` grid."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    positions = np.arange(length)
    return positions[None, :] - positions[:, None]


def toeplitz(values_by_offset: np.ndarray, length: int) -> np.ndarray:
    """``M[i, j] = values_by_offset[(j - i) + length - 1]`` for offsets ``-(length-1) .. length-1``."""
    return np.asarray(values_by_offset)[offsets(length) + length - 1]


def proximity(vectors: np.ndarray, metric: str = "dot") -> np.ndarray:
    """Proximity matrix ``Phi(i, j)`` between rows of ``vectors`` (n, d) -> (n, n).

    ``"dot"``: ``<v_i, v_j>``; ``"cosine"``: ``<v_i, v_j> / (|v_i| |v_j|)``, with
    rows of zero norm giving 0 (no NaN). This is the position-wise function
    whose properties Wang et al. (ICLR 2021, "On Position Embeddings in
    BERT", §3) study.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {v.shape}")
    if metric == "dot":
        return v @ v.T
    if metric == "cosine":
        norms = np.linalg.norm(v, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        unit = v / safe[:, None]
        return unit @ unit.T
    raise ValueError(f"unknown metric {metric!r}; expected 'dot' or 'cosine'")


def positive(option: str, value: float) -> float:
    if not value > 0:
        raise PosembUsageError(f"{option} must be positive, got {value:g}")
    return value


class PositionScheme:
    """One position-encoding family. Subclasses set `name` and `options` and implement what applies to them."""

    name: ClassVar[str]  # DESIGN.md's word: learned_absolute | sinusoidal | rotary | alibi | relative_bucket
    # --scheme options of the analytic form and their defaults (None: the scheme has no analytic form)
    options: ClassVar[dict[str, Any] | None] = None

    def meaning(self, metric: str) -> str:
        """One sentence: what Phi(i, j) is for this scheme and metric."""
        raise NotImplementedError

    def analyse(self, length: int, metric: str, window: int, **options: Any) -> PositionAnalysis:
        """The analytic scheme, no weights; `options` are those named in `options` (defaults filled in)."""
        raise PosembUsageError(f"position scheme {self.name} has no analytic form; analyse a model with -m")

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        """Phi of a loaded model's own scheme over its first `length` positions."""
        raise PosembError(f"{loaded.info.name} ({self.name}) adds no position information posemb can read")

    def options_for_model(self, hidden_size: int, heads: int, head_dim: int) -> dict[str, Any]:
        """Options that size the analytic form like a given model (compare's `scheme:` entries)."""
        return {}

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        """The positions figure of an analysis made with metric "cosine" (similarities on −1..1, or biases)."""
        raise PosembError(
            f"no positions picture for position scheme {self.name!r}: it adds no position vector and posemb has no "
            "closed form for it"
        )

    def bias_picture(self, analysis: PositionAnalysis, title: str, note: str, colorbar: str) -> PositionPicture:
        """A bias picture: the head mean, then heads 0, the middle one and the last (`head_matrices`), one scale."""
        panels = {"mean": analysis.matrix}
        heads = analysis.head_matrices
        if heads is not None:
            for h in sorted({0, len(heads) // 2, len(heads) - 1}):
                panels[f"head {h}"] = heads[h]
        return PositionPicture(panels, title, note, colorbar, diverging=False)

    def analysis(self, model: str | None, source: str, length: int, metric: str, phi: np.ndarray, window: int):
        """A `PositionAnalysis` of this scheme with Phi's properties and meaning filled in."""
        return PositionAnalysis(
            self.name, model, source, length, metric, phi, properties(phi, window), meaning=self.meaning(metric)
        )


# ------------------------------------------------------------------------------------------ identical-word probe


def probe_word_ids(tokenizer: Any, vocab_size: int, words: int, seed: int) -> list[int]:
    """``words`` ordinary vocabulary ids, drawn with ``np.random.default_rng(seed)``: the probe of `positions`'
    identical-word attention and of DeBERTa's c2p/p2c terms (schemes.disentangled).

    Ordinary: not special or added, below the model's vocabulary size, and alphabetic with at least two letters
    once a word-start marker (Ġ, ▁) is removed; WordPiece continuations (##...) are left out.
    """
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())

    def ordinary(token: str) -> bool:
        word = token.lstrip("Ġ▁")
        return not token.startswith("##") and len(word) >= 2 and word.isalpha()

    candidates = sorted(
        i for t, i in tokenizer.get_vocab().items() if i < vocab_size and i not in excluded and ordinary(t)
    )
    if not candidates:
        candidates = sorted(i for i in tokenizer.get_vocab().values() if i < vocab_size and i not in excluded)
    if not candidates:
        raise PosembError("the vocabulary has no ordinary (non-special) token to probe with")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(candidates), size=min(words, len(candidates)), replace=False)
    return [candidates[k] for k in chosen]
