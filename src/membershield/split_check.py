"""Is membership confounded with a distribution shift?

Before any attack number is trusted, a *blind* classifier that never queries the model tries to tell
members from non-members from the records alone. On a random split it cannot (AUC about 0.5). If it
can, members and non-members differ in distribution (a date cut, a different source, de-duplication),
and every attack's AUC mixes that shift with memorisation. Published LLM membership benchmarks have
been shown to suffer exactly this (Duan et al. 2024, "Do Membership Inference Attacks Work on Large
Language Models?"; Das et al. 2024, "Blind Baselines Beat Membership Inference Attacks for Foundation
Models").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold

from membershield.metrics import auc_with_ci

FOLDS = 5


@dataclass(frozen=True)
class SplitCheck:
    blind_auc: float
    ci_low: float
    ci_high: float
    ok: bool
    n_members: int
    n_nonmembers: int
    method: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _encode(features: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    columns = []
    for name in features.columns:
        col = features[name]
        if pd.api.types.is_numeric_dtype(col):
            columns.append(col.to_numpy(dtype=np.float64))
        else:
            columns.append(pd.factorize(col.astype(str), sort=True)[0].astype(np.float64))
    columns.append(pd.factorize(pd.Series(labels).astype(str), sort=True)[0].astype(np.float64))
    return np.column_stack(columns)


def blind_split_check(
    features: pd.DataFrame, labels: np.ndarray, is_member: np.ndarray, seed: int = 0, confidence: float = 0.95
) -> SplitCheck:
    """Cross-validated AUC of a gradient-boosted classifier predicting membership from (features, label).

    ``ok`` is False when the interval's lower end is above 0.5, i.e. the split is distinguishable
    without the model at the stated confidence.
    """
    X = _encode(features, labels)
    y = np.asarray(is_member, dtype=bool)
    n_splits = int(min(FOLDS, y.sum(), (~y).sum()))
    if n_splits < 2:
        return SplitCheck(0.5, 0.0, 1.0, True, int(y.sum()), int((~y).sum()), "too few records to check")
    scores = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in folds.split(X, y):
        model = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=seed)
        model.fit(X[train], y[train])
        scores[test] = model.predict_proba(X[test])[:, 1]
    value, interval = auc_with_ci(scores, y, confidence=confidence)
    return SplitCheck(
        blind_auc=float(value),
        ci_low=float(interval.low),
        ci_high=float(interval.high),
        ok=bool(interval.low <= 0.5),
        n_members=int(y.sum()),
        n_nonmembers=int((~y).sum()),
        method=f"{n_splits}-fold cross-validated HistGradientBoostingClassifier on features and label",
    )
