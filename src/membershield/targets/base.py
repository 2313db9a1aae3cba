"""The two contracts the audit engine needs from a model.

A :class:`Target` answers queries: ``logits(features)`` returns float32 ``(n, C)`` scores whose
columns follow ``classes`` (log-probabilities are fine: every signal renormalises). A :class:`Recipe`
trains a fresh model like the target, so reference and shadow models come from the same pipeline.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class Target(Protocol):
    kind: str
    access: str
    classes: np.ndarray

    def logits(self, features: pd.DataFrame) -> np.ndarray: ...


@runtime_checkable
class Recipe(Protocol):
    kind: str

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int) -> Target:
        """Train on ``features``/``labels`` (raw label values); the result's logits follow ``classes``."""
        ...

    def identity(self) -> str:
        """A stable string describing the recipe (part of the reference-model cache key)."""
        ...


LOG_FLOOR = np.float32(np.log(1e-30))


def align_log_proba(proba: np.ndarray, model_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Log-probabilities re-ordered to ``classes``; classes the model never saw get probability 1e-30.

    A reference model trained on half the pool can miss a rare class; giving it a floor instead of
    dropping the column keeps every model's logits the same shape.
    """
    out = np.full((proba.shape[0], len(classes)), LOG_FLOOR, dtype=np.float32)
    position = {c: i for i, c in enumerate(classes.tolist())}
    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(proba), LOG_FLOOR).astype(np.float32)
    for j, c in enumerate(np.asarray(model_classes).tolist()):
        out[:, position[c]] = logp[:, j]
    return out
