"""Queries to the target beyond its answers on the audit rows: perturbed copies of each record, for the
label-only noise-robustness attack. The live target is obtained only when an attack asks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from membershield.targets.base import Target


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
    is retrained with its seed: its cached outputs cannot answer new records); answers are kept per setting."""

    def __init__(self, live_target: Callable[[], Target], features: pd.DataFrame, labels: np.ndarray) -> None:
        self._live_target = live_target
        self._target: Target | None = None
        self.features = features
        self.labels = labels
        self._answers: dict[tuple[int, float, int], np.ndarray] = {}

    def label_agreement(self, *, n_queries: int, scale: float, seed: int) -> np.ndarray:
        key = (n_queries, scale, seed)
        if key not in self._answers:
            if self._target is None:
                self._target = self._live_target()
            self._answers[key] = noisy_label_agreement(
                self._target, self.features, self.labels, n_queries=n_queries, scale=scale, seed=seed
            )
        return self._answers[key]
