"""The DCR risk: are the synthetic records closer to the training records than to unseen real ones?

Each synthetic record's closest real record is looked for among as many training records as holdout
records (the larger side subsampled with the seed, so the sides are equal): a generator that did not
memorise draws its records from the distribution both sides share, and each synthetic record's closest
real record is a training record half the time (the holdout-based privacy check of Platzer & Reutterer
2021, "Holdout-Based Empirical Assessment of Mixed-Type Synthetic Data", Frontiers in Big Data). A tie
(equally close to both) is settled by a seeded coin.

``risk = max(0, 2·share − 1)``: 0 at the holdout baseline (or below it), 1 when every synthetic record is
closest to a training record; its 95% interval is the Clopper–Pearson interval of the share, mapped the
same way. Pure functions of the encoded records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from membershield.metrics import clopper_pearson
from membershield.synthetic.encode import nearest_distances


@dataclass(frozen=True)
class DcrRisk:
    n_synthetic: int
    n_per_side: int  # training and holdout records each synthetic record was compared with
    closer_to_train: int
    share_closer_to_train: float
    share_ci_low: float
    share_ci_high: float
    risk: float
    ci_low: float
    ci_high: float
    ties: int
    confidence: float

    @property
    def flagged(self) -> bool:
        """Whether the synthetic records are closer to the training records than chance, at 95% confidence."""
        return self.ci_low > 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "baseline_share": 0.5, "flagged": self.flagged}


def _risk(share: float) -> float:
    return max(0.0, 2.0 * share - 1.0)


def dcr_risk(
    synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, *, seed: int = 0, confidence: float = 0.95
) -> DcrRisk:
    """The DCR risk of ``synthetic`` records against ``train`` and ``holdout`` (all encoded points).

    >>> rng = np.random.default_rng(0)
    >>> train, holdout = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    >>> dcr_risk(train + 0.01, train, holdout).risk > 0.9  # near-copies of the training records
    True
    >>> fresh = dcr_risk(rng.normal(size=(400, 2)), train, holdout)
    >>> fresh.ci_low == 0.0 and fresh.share_ci_low < 0.5 < fresh.share_ci_high
    True
    """
    rng = np.random.default_rng(seed)
    size = min(len(train), len(holdout))
    train = train[np.sort(rng.choice(len(train), size, replace=False))] if len(train) > size else train
    holdout = holdout[np.sort(rng.choice(len(holdout), size, replace=False))] if len(holdout) > size else holdout
    to_train = nearest_distances(synthetic, train, 1)[:, 0]
    to_holdout = nearest_distances(synthetic, holdout, 1)[:, 0]
    tied = to_train == to_holdout
    closer = (to_train < to_holdout) | (tied & (rng.random(len(synthetic)) < 0.5))
    k, n = int(closer.sum()), len(synthetic)
    interval = clopper_pearson(k, n, confidence)
    share = k / n
    return DcrRisk(
        n_synthetic=n,
        n_per_side=size,
        closer_to_train=k,
        share_closer_to_train=share,
        share_ci_low=interval.low,
        share_ci_high=interval.high,
        risk=_risk(share),
        ci_low=_risk(interval.low),
        ci_high=_risk(interval.high),
        ties=int(tied.sum()),
        confidence=confidence,
    )
