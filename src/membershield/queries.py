"""Queries to the target beyond its answers on the audit rows: perturbed copies of each record, for the
label-only noise-robustness attack, and the boundary search of the label-only boundary-distance attack
(:mod:`membershield.boundary_search`), and the white-box signals of a PyTorch target (its gradients and
kept checkpoints: :mod:`membershield.signals_whitebox`). The live target is obtained only when an attack
asks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from membershield.boundary_search import frame_boundary_distances
from membershield.targets.base import Target
from membershield.whitebox_references import ReferenceWhiteBox


def noisy_label_agreement(
    target: Target, features: pd.DataFrame, labels: np.ndarray, *, n_queries: int, scale: float, seed: int
) -> np.ndarray:
    """Share of ``n_queries`` perturbed copies of each row that the target labels ``labels[row]``.

    Numeric columns get Gaussian noise with standard deviation ``scale`` times the column's standard
    deviation over all rows; other columns are left as they are. Queries go in batches of whole copies,
    so the target sees ``n_queries * len(features)`` rows in all.
    """
    rng = np.random.default_rng(seed)
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    values = features[numeric].to_numpy(dtype=np.float64)
    spread = values.std(axis=0)
    agree = np.zeros(len(features))
    for _ in range(n_queries):
        noisy = features.copy()
        noisy[numeric] = values + rng.normal(0.0, 1.0, values.shape) * (scale * spread)
        agree += np.argmax(target.logits(noisy), axis=1) == labels
    return agree / n_queries


class LiveQueries:
    """:class:`membershield.attacks.base.TargetQueries` over a target built on first use (a recipe's target
    is retrained with its seed: its cached outputs cannot answer new records); answers are kept per setting.
    ``references``: the reference models' white-box signals, where a recipe can train them again."""

    def __init__(
        self,
        live_target: Callable[[], Target],
        features: pd.DataFrame,
        labels: np.ndarray,
        references: ReferenceWhiteBox | None = None,
    ) -> None:
        self._live_target = live_target
        self._references = references
        self._target: Target | None = None
        self.features = features
        self.labels = labels
        self._answers: dict[tuple[int, float, int], np.ndarray] = {}
        self._distances: dict[tuple[int, int], np.ndarray] = {}
        self._white_box: dict[str, np.ndarray] = {}

    def label_agreement(self, *, n_queries: int, scale: float, seed: int) -> np.ndarray:
        key = (n_queries, scale, seed)
        if key not in self._answers:
            if self._target is None:
                self._target = self._live_target()
            self._answers[key] = noisy_label_agreement(
                self._target, self.features, self.labels, n_queries=n_queries, scale=scale, seed=seed
            )
        return self._answers[key]

    def boundary_distance(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        key = (queries_per_record, seed)
        if key not in self._distances:
            if self._target is None:
                self._target = self._live_target()
            self._distances[key] = frame_boundary_distances(
                self._target, self.features, self.labels, max_queries=queries_per_record, seed=seed
            )
        return self._distances[key]

    def gradient_norms(self) -> np.ndarray:
        if "gradient_norms" not in self._white_box:
            from membershield.signals_whitebox import gradient_norms_of  # imports torch: only when asked

            if self._target is None:
                self._target = self._live_target()
            self._white_box["gradient_norms"] = gradient_norms_of(self._target, self.features, self.labels)
        return self._white_box["gradient_norms"]

    def checkpoint_losses(self) -> np.ndarray:
        if "checkpoint_losses" not in self._white_box:
            from membershield.signals_whitebox import checkpoint_losses_of

            if self._target is None:
                self._target = self._live_target()
            self._white_box["checkpoint_losses"] = checkpoint_losses_of(self._target, self.features, self.labels)
        return self._white_box["checkpoint_losses"]

    def reference_gradient_norms(self) -> np.ndarray:
        if self._references is None:
            return np.zeros((0, len(self.labels)))
        return self._references.gradient_norms()

    def reference_boundary_distance(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        if self._references is None:
            return np.zeros((0, len(self.labels)))
        return self._references.boundary_distances(queries_per_record=queries_per_record, seed=seed)

    def reference_checkpoint_losses(self) -> np.ndarray:
        if self._references is None:
            return np.zeros((0, 0, len(self.labels)))
        return self._references.checkpoint_losses()
