"""Per-record signals: pure functions of a model's logits and the true labels.

Every function takes ``logits`` of shape ``(n, C)`` (any real numbers; they are normalised here, so
log-probabilities work too) and integer ``labels`` of shape ``(n,)``, and returns a float64 array of
shape ``(n,)``. Computations go through log-softmax so that confident models (probabilities within
1e-8 of 1) keep their resolution: the membership signal lives exactly in that tail.

Orientation: each signal is returned in its natural sense (a loss is a loss). Attacks decide the sign
that makes "higher = more likely member".
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64.

    >>> log_probabilities([[0.0, 0.0]]).round(4).tolist()
    [[-0.6931, -0.6931]]
    """
    return log_softmax(np.asarray(logits, dtype=np.float64), axis=1)


def _true_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return values[np.arange(values.shape[0]), np.asarray(labels, dtype=np.int64)]


def cross_entropy_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy loss ``-log p_y`` (Yeom et al. 2018 use it as the membership signal).

    >>> import numpy as np
    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5]])
    >>> labels = np.array([0, 1])
    >>> cross_entropy_loss(logits, labels).round(4).tolist()
    [0.1054, 0.6931]
    """
    return -_true_class(log_probabilities(logits), labels)


def true_class_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability the model gives to the true class, ``p_y``.

    >>> import numpy as np
    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5]])
    >>> labels = np.array([0, 1])
    >>> true_class_confidence(logits, labels).round(4).tolist()
    [0.9, 0.5]
    """
    return np.exp(_true_class(log_probabilities(logits), labels))


def prediction_entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of the predicted distribution; label-free.

    >>> import numpy as np
    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5]])
    >>> labels = np.array([0, 1])
    >>> prediction_entropy(logits).round(4).tolist()
    [0.3251, 0.6931]
    """
    logp = log_probabilities(logits)
    return -np.sum(np.exp(logp) * logp, axis=1)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Modified prediction entropy of Song & Mittal (2021), eq. (5).

    ``-(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j)``. Unlike plain entropy it is monotone in the
    true-class probability: it is 0 for a correct prediction with full confidence and grows without bound
    for a confident wrong one, so lower means "more member-like".

    >>> import numpy as np
    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5]])
    >>> labels = np.array([0, 1])
    >>> modified_entropy(logits, labels).round(4).tolist()
    [0.0211, 0.6931]
    """
    logp = log_probabilities(logits)
    p = np.exp(logp)
    rows = np.arange(p.shape[0])
    y = np.asarray(labels, dtype=np.int64)
    # log(1 - p_j) computed as log(sum of the other probabilities) keeps precision when p_j -> 1.
    log_one_minus = _log_one_minus_each(logp)
    terms = -p * log_one_minus
    terms[rows, y] = -(1.0 - p[rows, y]) * logp[rows, y]
    return terms.sum(axis=1)


def _log_one_minus_each(logp: np.ndarray) -> np.ndarray:
    """``log(1 - p_j)`` for every entry without cancellation.

    ``log1p(-p)`` is exact while ``p <= 1/2``; at most one class per row can exceed 1/2, and for it
    ``1 - p_j`` is the sum of the other probabilities, taken as a logsumexp.
    """
    p = np.exp(logp)
    with np.errstate(divide="ignore"):
        out = np.log1p(-np.minimum(p, 0.5))
    rows = np.flatnonzero(p.max(axis=1) > 0.5)
    if rows.size:
        top = np.argmax(logp[rows], axis=1)
        others = logp[rows].copy()
        others[np.arange(rows.size), top] = -np.inf
        out[rows, top] = logsumexp(others, axis=1)
    return out


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y / (1 - p_y))``, the statistic LiRA models as Gaussian (Carlini et al. 2022, §IV-C).

    Computed as ``log p_y - logsumexp_{j != y} log p_j`` so that it stays finite and exact for
    probabilities that round to 1 in floating point.

    >>> import numpy as np
    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5]])
    >>> labels = np.array([0, 1])
    >>> scaled_logit(logits, labels).round(4).tolist()  # log(0.9 / 0.1), log(0.5 / 0.5)
    [2.1972, 0.0]
    >>> float(  # p_y rounds to 1 in float64; the logit stays exact
    ...     scaled_logit(np.array([[40.0, 0.0]]), np.array([0]))[0])
    40.0
    """
    logp = log_probabilities(logits)
    rows = np.arange(logp.shape[0])
    y = np.asarray(labels, dtype=np.int64)
    true = logp[rows, y]
    masked = logp.copy()
    masked[rows, y] = -np.inf
    return true - logsumexp(masked, axis=1)


def is_correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether the arg-max prediction equals the label (the label-only signal).

    >>> import numpy as np
    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5]])
    >>> labels = np.array([0, 1])
    >>> is_correct(logits, labels).tolist()  # a tie goes to the first class
    [True, False]
    """
    return np.argmax(np.asarray(logits), axis=1) == np.asarray(labels, dtype=np.int64)
