"""Per-record exposure across models: how often each record is caught by the models that trained on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binom

from membershield.errors import InputDataError
from membershield.metrics._checks import _check_rate


@dataclass(frozen=True)
class RecordExposure:
    """Per record ``i``: the models that trained on it, how many of them flagged it, and the same for the
    models that did not (a record flagged by those too is merely unusual, not memorised)."""

    fpr: float
    n_member_models: np.ndarray  # (n,) int
    n_exposed: np.ndarray  # (n,) int: flagged by a model that trained on it
    n_nonmember_models: np.ndarray
    n_flagged_out: np.ndarray  # flagged by a model that did not train on it

    @property
    def exposed_share(self) -> np.ndarray:
        """``n_exposed / n_member_models`` (0 for a record no model trained on)."""
        return self.n_exposed / np.maximum(self.n_member_models, 1)

    @property
    def chance_p_value(self) -> np.ndarray:
        """How likely a record no model memorised is flagged this often: ``P(Binomial(n_member_models, fpr)
        >= n_exposed)``. Ranks 8 flags of 8 models far above 1 of 1, which chance gives every hundredth record."""
        return binom.sf(self.n_exposed - 1, self.n_member_models, self.fpr)

    def always_exposed(self) -> np.ndarray:
        """Records flagged by every model that trained on them, at least two (one flag in one is weak evidence)."""
        return (self.n_member_models >= 2) & (self.n_exposed == self.n_member_models)

    def ranking(self) -> np.ndarray:
        """Record indices, most exposed first: least likely by chance, then by share, then fewest flags when OUT."""
        return np.lexsort((self.n_flagged_out, -self.exposed_share, self.chance_p_value))

    def entry(self, i: int) -> dict[str, Any]:
        return {
            "index": int(i),
            "n_member_models": int(self.n_member_models[i]),
            "n_exposed": int(self.n_exposed[i]),
            "exposed_share": float(self.exposed_share[i]),
            "chance_p_value": float(self.chance_p_value[i]),
            "n_nonmember_models": int(self.n_nonmember_models[i]),
            "n_flagged_out": int(self.n_flagged_out[i]),
        }


def record_exposure(scores: ArrayLike, keep: ArrayLike, fpr: float = 0.01) -> RecordExposure:
    """Flag records at each model's own ``fpr`` threshold and count, per record, the flags of the models
    that trained on it (``keep[k, i]``) and of those that did not.

    ``scores[k, i]`` is the attack's score of record ``i`` with model ``k`` as the target. Model ``k``'s
    threshold flags at most ``floor(fpr * its non-members)`` of its non-members (scores strictly above
    the next non-member score, so ties are never split in the attack's favour).

    >>> scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.95, 0.1, 0.7, 0.3]])
    >>> keep = np.array([[True, True, False, False], [True, False, True, False]])
    >>> exposure = record_exposure(scores, keep, fpr=0.0)
    >>> exposure.n_exposed.tolist(), exposure.n_member_models.tolist(), exposure.always_exposed().tolist()
    ([2, 1, 1, 0], [2, 1, 1, 0], [True, False, False, False])
    """
    fpr = _check_rate("fpr", fpr)
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(keep, dtype=bool)
    if s.ndim != 2 or s.shape != m.shape:
        raise InputDataError(f"scores and keep must both be (models, records), got {s.shape} and {m.shape}")
    if not np.isfinite(s).all():
        raise InputDataError("scores contain NaN or infinite values; every score must be a finite number")
    nonmember_scores = np.sort(np.where(m, -np.inf, s), axis=1)[:, ::-1]  # each model's, highest first
    n_out = (~m).sum(axis=1)
    allowed = np.floor(fpr * n_out + 1e-9).astype(np.int64)
    # The first non-member score not allowed through; a model with every non-member allowed flags all.
    bar = np.where(
        allowed < n_out,
        np.take_along_axis(nonmember_scores, np.minimum(allowed, s.shape[1] - 1)[:, None], 1)[:, 0],
        -np.inf,
    )
    flagged = s > bar[:, None]
    return RecordExposure(
        fpr=fpr,
        n_member_models=m.sum(axis=0),
        n_exposed=(flagged & m).sum(axis=0),
        n_nonmember_models=(~m).sum(axis=0),
        n_flagged_out=(flagged & ~m).sum(axis=0),
    )
