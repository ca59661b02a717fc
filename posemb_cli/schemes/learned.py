"""Absolute schemes that add a vector per position: learned tables (BERT, GPT-2) and sinusoids (Vaswani et al.).

Phi(i, j) = <p_i, p_j> (or cosine) between the position embeddings the model adds for positions i and j -- the rows it
actually uses (RoBERTa-style models start at padding_idx + 1; the registry says where each family starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import metrics
from ..errors import PosembError, PosembUsageError
from .base import PositionAnalysis, PositionPicture, PositionScheme, positive, proximity

if TYPE_CHECKING:
    from ..models import LoadedModel


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """Sinusoidal position table (Vaswani et al. 2017, "Attention Is All You Need", §3.5).

    ``PE[p, 2k] = sin(p * w_k)`` and ``PE[p, 2k+1] = cos(p * w_k)`` with
    ``w_k = base ** (-2k / dim)``: sine on even columns, cosine on odd ones.
    For odd ``dim`` the last column is a sine with no cosine partner.
    Returns an array of shape ``(length, dim)``.
    """
    if length < 0 or dim < 0:
        raise ValueError(f"length and dim must be >= 0, got {length}, {dim}")
    k = np.arange((dim + 1) // 2)
    omega = base ** (-2.0 * k / dim) if dim else np.zeros(0)
    angles = np.arange(length)[:, None] * omega[None, :]
    table = np.empty((length, dim))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : dim // 2])
    return table


def position_table(loaded: LoadedModel) -> tuple[str, int, np.ndarray]:
    """(module path of the position table, first row the model uses, the table as float64) from the registry."""
    family, config = loaded.family, loaded.model.config
    path = family.position_table
    if path is None:
        raise PosembError(f"the registry names no position table for {family.name}")
    weight = loaded.model.get_submodule(path).weight.detach().float().cpu().numpy().astype(np.float64)
    return path, family.first_position_id(config), weight


class LearnedAbsolute(PositionScheme):
    name = "learned_absolute"

    def meaning(self, metric: str) -> str:
        kind = "dot product" if metric == "dot" else "cosine"
        return f"Φ(i, j) = {kind} of the position embeddings of positions i and j"

    def from_model(self, loaded: LoadedModel, length: int, metric: str, window: int) -> PositionAnalysis:
        path, first, weight = position_table(loaded)
        if first + length > len(weight):
            raise PosembUsageError(
                f"--length {length} is more than the {len(weight) - first} positions {loaded.info.name} has"
            )
        source = f"{path} (rows {first}..{first + length - 1} of {len(weight)})"
        analysis = self.from_vectors(loaded.info.name, source, weight[first : first + length], metric, window)
        analysis.first_id = first
        if self.name == "sinusoidal" or loaded.info.position_scheme == "sinusoidal":
            analysis.exports["sinusoidal_table"] = analysis.vectors
        if first:
            analysis.notes.append(f"positions 0..{length - 1} use rows {first}.. (the family's first position id)")
        return analysis

    def from_vectors(
        self, model: str | None, source: str, vectors: np.ndarray, metric: str, window: int
    ) -> PositionAnalysis:
        """Phi between position vectors, its properties, and what the vectors know (Wang & Chen, EMNLP 2020, §3)."""
        analysis = self.analysis(model, source, len(vectors), metric, proximity(vectors, metric), window)
        analysis.vectors = vectors
        if len(vectors) >= 5:
            analysis.regression_mae = metrics.position_regression_mae(vectors, folds=5)
        else:
            analysis.notes.append("fewer than 5 positions: no 5-fold position regression")
        coords, ratio = metrics.pca_2d(vectors)
        analysis.pca, analysis.pca_explained = coords, ratio.tolist()
        return analysis

    def picture(self, analysis: PositionAnalysis) -> PositionPicture:
        n, first = analysis.length, analysis.first_id
        shift = f" (position ids start at {first})" if first else ""
        return PositionPicture(
            {"similarity": analysis.matrix},
            f"Cosine similarity of the position embeddings of positions 0–{n - 1}",
            f"{self.name.replace('_', ' ')} positions: {analysis.source}{shift}",
            "cosine similarity",
            diverging=True,
        )


class Sinusoidal(LearnedAbsolute):
    """A frozen sinusoidal table: read like a learned one from a model, or computed from its formula."""

    name = "sinusoidal"
    options = {"dim": 512, "base": 10000.0}  # Vaswani et al.'s d_model

    def analyse(self, length: int, metric: str, window: int, **options: Any) -> PositionAnalysis:
        dim, base = int(options["dim"]), positive("--base", float(options["base"]))
        if dim < 2:
            raise PosembUsageError(f"--dim must be at least 2, got {dim}")
        source = f"analytic: sinusoidal, dim {dim}, base {base:g}"
        analysis = self.from_vectors(None, source, sinusoidal_table(length, dim, base), metric, window)
        analysis.exports["sinusoidal_table"] = analysis.vectors
        return analysis

    def options_for_model(self, hidden_size: int, heads: int, head_dim: int) -> dict[str, Any]:
        return {"dim": hidden_size} if hidden_size >= 2 else {}


SCHEMES = (LearnedAbsolute(), Sinusoidal())
