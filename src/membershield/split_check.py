"""Is membership confounded with a distribution shift?

Before any attack number is trusted, a *blind* classifier that never queries the model tries to tell
members from non-members from the records alone. On a random split it cannot (AUC about 0.5). If it
can, members and non-members differ in distribution (a date cut, a different source, de-duplication),
and every attack's AUC mixes that shift with memorisation. Published LLM membership benchmarks have
been shown to suffer exactly this (Duan et al. 2024, "Do Membership Inference Attacks Work on Large
Language Models?"; Das et al. 2024, "Blind Baselines Beat Membership Inference Attacks for Foundation
Models").

The check is two-sided. A blind AUC far *below* 0.5 is a broken split too: the classifier fits on
half the records and is scored on the other half, so a record whose copy (or near-copy) sits on the
other side of the split, with the opposite membership, is predicted the wrong way. Holdout files that
share records with the training file produce exactly that (an AUC of 0.33 where the model's own audit
reads "no leak").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split

from membershield.metrics import auc_with_ci


@dataclass(frozen=True)
class SplitCheck:
    blind_auc: float
    ci_low: float
    ci_high: float
    ok: bool
    n_members: int
    n_nonmembers: int
    confidence: float
    method: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def warning(self, source: str = "the records alone") -> str | None:
        """The audit's warning when the check fails, saying what each direction means."""
        if self.ok:
            return None
        measured = (
            f"AUC {self.blind_auc:.3f} ({100 * self.confidence:g}% CI {self.ci_low:.3f}-{self.ci_high:.3f})"
            f" from {source}"
        )
        if self.ci_low > 0.5:
            return (
                "SPLIT CHECK FAILED: a classifier that never queries the model tells members from non-members with"
                f" {measured}; membership is confounded with a distribution shift, so attack numbers overstate"
                " memorisation."
            )
        return (
            "SPLIT CHECK FAILED: a classifier that never queries the model scores members and non-members the"
            f" wrong way round, {measured}, far below 0.5: records (or near-copies) on both sides of the split"
            " fool it, so members and non-members are not distinct records and attack numbers understate"
            " leakage; de-duplicate across the split."
        )

    @classmethod
    def from_held_out(
        cls,
        scores: np.ndarray,
        is_member: np.ndarray,
        n_members: int,
        n_nonmembers: int,
        confidence: float,
        method: str,
    ) -> SplitCheck:
        """The verdict from a blind classifier's scores on records it did not train on."""
        value, interval = auc_with_ci(scores, is_member, confidence=confidence)
        return cls(
            blind_auc=float(value),
            ci_low=float(interval.low),
            ci_high=float(interval.high),
            ok=bool(interval.low <= 0.5 <= interval.high),
            n_members=n_members,
            n_nonmembers=n_nonmembers,
            confidence=confidence,
            method=method,
        )


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


def _user_halves(y: np.ndarray, users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half of the member users and half of the non-member users (seeded) to fit on; each record's user
    index; and whether each user is a member."""
    ids, index = np.unique(np.asarray(users).astype(str), return_inverse=True)
    member_user = np.zeros(ids.size, dtype=bool)
    member_user[index[y]] = True
    rng = np.random.default_rng(seed)
    fit_user = np.zeros(ids.size, dtype=bool)
    for side in (member_user, ~member_user):
        chosen = rng.permutation(np.flatnonzero(side))
        fit_user[chosen[: chosen.size // 2]] = True
    return fit_user[index], index, member_user


def _grouped_check(X: np.ndarray, y: np.ndarray, users: np.ndarray, seed: int, confidence: float) -> SplitCheck:
    """The check with a user column: records of one user are alike, so halves split users, not records
    (else the classifier recognises a member user's other records), and the AUC is over users (each
    user's mean blind score on their records), the independent units."""
    fit, index, member_user = _user_halves(y, users, seed)
    n_member_users, n_nonmember_users = int(member_user.sum()), int((~member_user).sum())
    if min(n_member_users, n_nonmember_users) < 4:
        return SplitCheck(0.5, 0.0, 1.0, True, n_member_users, n_nonmember_users, confidence, "too few users to check")
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=True, n_iter_no_change=10, random_state=seed)
    model.fit(X[fit], y[fit])
    test_index = index[~fit]
    totals = np.bincount(test_index, weights=model.predict_proba(X[~fit])[:, 1], minlength=member_user.size)
    counts = np.bincount(test_index, minlength=member_user.size)
    tested = counts > 0
    return SplitCheck.from_held_out(
        totals[tested] / counts[tested],
        member_user[tested],
        n_member_users,
        n_nonmember_users,
        confidence,
        "HistGradientBoostingClassifier on features and label; trained on the records of half the users, scored"
        " on the other half's users (mean over each user's records); counts are users",
    )


def blind_split_check(
    features: pd.DataFrame,
    labels: np.ndarray,
    is_member: np.ndarray,
    seed: int = 0,
    confidence: float = 0.99,
    users: np.ndarray | None = None,
) -> SplitCheck:
    """AUC of a gradient-boosted classifier predicting membership from (features, label) on held-out records.

    The classifier trains on a random stratified half and is scored on the other half, so the DeLong
    interval is valid for a fixed classifier on independent records. (Pooling cross-validated
    predictions looks more efficient but ignores the fold-to-fold variance: on random splits of the
    digits table it raised the alarm 2 times in 8.) ``ok`` is False when the interval excludes 0.5 on
    either side: the split is distinguishable without the model, or shared records fool the classifier. The default
    is 99% because the alarm tells a user to distrust the whole audit: at 95% one random split in 40
    would be flagged. With ``users`` (each record's data subject) the halves split users instead.
    """
    X = _encode(features, labels)
    y = np.asarray(is_member, dtype=bool)
    if users is not None:
        return _grouped_check(X, y, users, seed, confidence)
    n_members, n_nonmembers = int(y.sum()), int((~y).sum())
    if min(n_members, n_nonmembers) < 4:
        return SplitCheck(0.5, 0.0, 1.0, True, n_members, n_nonmembers, confidence, "too few records to check")
    X_fit, X_test, y_fit, y_test = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    # Early stopping on a slice of the training half: on a random split the classifier has nothing to
    # learn and stops after a dozen rounds instead of 100, which on wide tables is most of an audit's
    # non-training time; on a shifted split it keeps improving and keeps going.
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=True, n_iter_no_change=10, random_state=seed)
    model.fit(X_fit, y_fit)
    return SplitCheck.from_held_out(
        model.predict_proba(X_test)[:, 1],
        y_test,
        n_members,
        n_nonmembers,
        confidence,
        "HistGradientBoostingClassifier on features and label; trained on a random half, scored on the other",
    )
