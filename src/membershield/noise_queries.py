"""Query a target on randomly perturbed copies of each record (for label-only noise-robustness attacks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from membershield.targets.base import Target


def noisy_label_agreement(
    target: Target, features: pd.DataFrame, labels: np.ndarray, n_queries: int, scale: float, seed: int
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
