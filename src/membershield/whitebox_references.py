"""White-box signals of the reference models, for the white-box attacks' per-record calibration.

A reference model's cached outputs are logits; its gradients and kept checkpoints need the model itself,
so the recipe trains it again from its job (its rows and seed: the same model, up to float rounding for
PyTorch) the first time a white-box attack asks. Each model is trained once, both its signals are taken
(a gradient norm costs about one epoch of the training it follows, cheaper than training again for the
other signal), and the model is dropped: memory holds signals, never K models. The label-only boundary
attack calibrates the same way: each reference model is trained again and searched for its own boundary
distances with the target's query budget (:mod:`membershield.boundary_search`; labels only, so any recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from membershield.errors import ConfigError


class RetrainedWhiteBox:
    """Gradient norms ``(n,)`` and checkpoint losses ``(T, n)`` of model ``k`` of ``n_models``, each model
    built by ``fit(k)`` on first use. One object serves every target of a recipe audit, whose references are
    the other models of the same game."""

    def __init__(self, fit: Callable[[int], Any], n_models: int, features: pd.DataFrame, labels: np.ndarray) -> None:
        self._fit = fit
        self.n_models = n_models
        self.features = features
        self.labels = labels
        self._signals: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._distances: dict[tuple[int, int, int], np.ndarray] = {}

    def signals(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._signals:
            from membershield.signals_whitebox import checkpoint_losses_of, gradient_norms_of  # imports torch

            model = self._fit(k)
            self._signals[k] = (
                gradient_norms_of(model, self.features, self.labels),
                checkpoint_losses_of(model, self.features, self.labels),
            )
        return self._signals[k]

    def boundary_distances(self, k: int, *, queries_per_record: int, seed: int) -> np.ndarray:
        """``(n,)``: model ``k``'s boundary distance of every row, as the target's is searched (the same
        budget per row and seed), from its labels alone."""
        key = (k, queries_per_record, seed)
        if key not in self._distances:
            from membershield.boundary_search import frame_boundary_distances

            self._distances[key] = frame_boundary_distances(
                self._fit(k), self.features, self.labels, max_queries=queries_per_record, seed=seed
            )
        return self._distances[key]

    def references(self, indices: Sequence[int]) -> ReferenceWhiteBox:
        """The models at ``indices``, in that order: a target's references, as its ``AttackInputs`` lists them."""
        return ReferenceWhiteBox(self, tuple(int(k) for k in indices))


class ReferenceWhiteBox:
    """A target's reference models' white-box signals, stacked in the order of its reference logits."""

    def __init__(self, models: RetrainedWhiteBox, indices: tuple[int, ...]) -> None:
        self._models = models
        self.indices = indices

    def gradient_norms(self) -> np.ndarray:
        """``(K, n)``."""
        n = len(self._models.labels)
        return np.stack([self._models.signals(k)[0] for k in self.indices]) if self.indices else np.zeros((0, n))

    def boundary_distances(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        """``(K, n)``: :meth:`RetrainedWhiteBox.boundary_distances` of each reference."""
        if not self.indices:
            return np.zeros((0, len(self._models.labels)))
        return np.stack(
            [self._models.boundary_distances(k, queries_per_record=queries_per_record, seed=seed) for k in self.indices]
        )

    def checkpoint_losses(self) -> np.ndarray:
        """``(K, T, n)``; the recipe keeps the same checkpoints for every model it trains, so ``T`` is common
        (a recipe that kept a different number is reported by the attack that reads them)."""
        losses = [self._models.signals(k)[1] for k in self.indices]
        if not losses:
            return np.zeros((0, 0, len(self._models.labels)))
        if len({loss.shape[0] for loss in losses}) > 1:
            counts = sorted({loss.shape[0] for loss in losses})
            raise ConfigError(
                f"the recipe kept {counts[0]} checkpoints for one model and {counts[-1]} for another: keep the"
                " same epochs for every model it trains"
            )
        return np.stack(losses)
