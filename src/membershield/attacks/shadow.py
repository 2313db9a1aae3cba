"""Shadow-model attack: Shokri, Stronati, Song, Shmatikov, "Membership Inference Attacks Against Machine
Learning Models", IEEE S&P 2017.

Shadow models are the audit's reference models: for each one we know which records it trained on, so
its outputs on every record are labelled IN/OUT training data for an *attack classifier*, which then
reads the target's outputs. Shokri et al. train one attack model per class on the probability vector;
here one gradient-boosted classifier sees the sorted probability vector, the true-class statistics and
the class (one-hot for up to ``MAX_ONE_HOT`` classes), which lets its trees split per class the same way
while sharing data between small classes.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from membershield.attacks.base import Attack, AttackInputs
from membershield.errors import ConfigError
from membershield.signals import cross_entropy_loss, log_probabilities, prediction_entropy, scaled_logit

TOP_K = 10
MAX_ONE_HOT = 20
MAX_TRAINING_ROWS = 200_000


def shadow_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Attack-classifier features of one model's outputs on every row, shape ``(n, d)``."""
    logp = log_probabilities(logits)
    n_classes = logp.shape[1]
    top = -np.sort(-np.exp(logp), axis=1)[:, : min(TOP_K, n_classes)]
    columns = [
        top,
        cross_entropy_loss(logits, labels)[:, None],
        scaled_logit(logits, labels)[:, None],
        prediction_entropy(logits)[:, None],
        (np.argmax(logp, axis=1) == labels)[:, None].astype(np.float64),
    ]
    if n_classes <= MAX_ONE_HOT:
        columns.append(np.eye(n_classes)[labels])
    return np.hstack(columns)


class ShadowModelAttack(Attack):
    name = "shadow"
    title = "Shadow models + attack classifier"
    citation = (
        "Shokri, Stronati, Song, Shmatikov. Membership Inference Attacks Against Machine Learning Models."
        " IEEE S&P 2017."
    )
    min_references = 1

    def __init__(self, *, max_training_rows: int = MAX_TRAINING_ROWS) -> None:
        if max_training_rows < 2:
            raise ConfigError(f"shadow needs max_training_rows >= 2, got {max_training_rows}")
        self.max_training_rows = max_training_rows

    def params(self) -> dict[str, object]:
        return {"classifier": "HistGradientBoostingClassifier", "max_training_rows": self.max_training_rows}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        features = np.concatenate([shadow_features(lg, inputs.labels) for lg in inputs.reference_logits])
        is_in = inputs.reference_in.reshape(-1)
        rng = np.random.default_rng(inputs.seed)
        if features.shape[0] > self.max_training_rows:
            keep = rng.choice(features.shape[0], self.max_training_rows, replace=False)
            features, is_in = features[keep], is_in[keep]
        if is_in.all() or not is_in.any():
            return np.zeros(inputs.labels.shape[0])
        classifier = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=inputs.seed)
        classifier.fit(features, is_in)
        return classifier.predict_proba(shadow_features(inputs.target_logits, inputs.labels))[:, 1]
