"""The split check for images: can a classifier that never queries the model tell members from non-members?

The method of :func:`membershield.split_check.blind_split_check`, on what an image shows without any
model: its pixels averaged down to at most 8×8 per channel, its brightness and contrast per channel, and
its edge energy. A logistic regression trains on a random stratified half and is scored on the other;
the alarm is raised when the 99% DeLong interval of its AUC excludes 0.5. Members from one source and
non-members from another (another camera, crop or resize) are told apart by exactly such features, and
an attack's AUC would then measure the shift rather than memorisation.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from membershield.split_check import SplitCheck

POOLED_SIDE = 8


def pooled(pixels: np.ndarray, side: int = POOLED_SIDE) -> np.ndarray:
    """Each image (N×C×H×W) averaged over a grid of at most ``side``×``side`` cells per channel, flattened.

    >>> pooled(np.arange(16, dtype=float).reshape(1, 1, 4, 4), side=2).tolist()
    [[2.5, 4.5, 10.5, 12.5]]
    """
    n, _, h, w = pixels.shape
    rows = np.array_split(np.arange(h), min(side, h))
    cols = np.array_split(np.arange(w), min(side, w))
    cells = [pixels[:, :, r[0] : r[-1] + 1, q[0] : q[-1] + 1].mean(axis=(2, 3)) for r in rows for q in cols]
    return np.stack(cells, axis=2).reshape(n, -1)


def image_features(pixels: np.ndarray) -> np.ndarray:
    """Model-free features of each image: pooled pixels, per-channel mean and spread, edge energy.

    >>> image_features(np.zeros((3, 1, 8, 8))).shape
    (3, 67)
    """
    values = np.asarray(pixels, dtype=np.float64)
    edges = np.abs(np.diff(values, axis=2)).mean(axis=(1, 2, 3)) + np.abs(np.diff(values, axis=3)).mean(axis=(1, 2, 3))
    return np.column_stack([pooled(values), values.mean(axis=(2, 3)), values.std(axis=(2, 3)), edges])


def image_split_check(pixels: np.ndarray, is_member: np.ndarray, seed: int = 0, confidence: float = 0.99) -> SplitCheck:
    """Held-out AUC of a blind classifier predicting membership from the images alone; see module docs."""
    y = np.asarray(is_member, dtype=bool)
    n_members, n_nonmembers = int(y.sum()), int((~y).sum())
    if min(n_members, n_nonmembers) < 4:
        return SplitCheck(0.5, 0.0, 1.0, True, n_members, n_nonmembers, confidence, "too few images to check")
    X = image_features(pixels)
    X_fit, X_test, y_fit, y_test = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(X_fit)
    model = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(X_fit), y_fit)
    return SplitCheck.from_held_out(
        model.predict_proba(scaler.transform(X_test))[:, 1],
        y_test,
        n_members,
        n_nonmembers,
        confidence,
        "logistic regression on pooled pixels (at most 8×8 per channel), brightness, contrast and edge energy;"
        " trained on a random half, scored on the other",
    )
