"""HAMP (Chen & Pattabiraman, "Overconfidence is a Dangerous Thing: Mitigating Membership Inference
Attacks by Enforcing Less Confident Prediction", NDSS 2024).

Two parts, both here:

* **Training with high-entropy soft labels.** Each record's target keeps its true class on top with the
  probability ``p`` at which the label's entropy is ``entropy`` times the largest possible (``log C``),
  the other classes sharing ``1 - p`` evenly; the loss is the cross-entropy against that target minus
  ``alpha`` times the entropy of the prediction, which penalises confident predictions on training records.
* **Output modification.** The released model answers a query with the probabilities it gives a random
  input (uniform within each feature's training range), re-ordered so that the classes keep the order the
  query's own scores give them: the label and the ranking stay, the confidence a member would show is
  replaced by that of a random point. A fresh random input is drawn per row of each batch, from a
  generator seeded per batch, so the same query gets the same answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.training import Trained, TrainingDefense, build_model, train_plain
from membershield.training.vectorised import VectorisedSpec


def label_entropy(p: float, n_classes: int) -> float:
    """Entropy (nats) of a label with ``p`` on the true class and the rest shared evenly."""
    rest = (1.0 - p) / (n_classes - 1)
    return -(p * math.log(p) if p > 0 else 0.0) - ((n_classes - 1) * rest * math.log(rest) if rest > 0 else 0.0)


def true_class_probability(n_classes: int, entropy: float) -> float:
    """The ``p`` at which :func:`label_entropy` is ``entropy`` × log C (bisection: the entropy falls as ``p``
    grows from 1/C to 1).

    >>> round(true_class_probability(10, 0.0), 6), round(true_class_probability(10, 1.0), 6)
    (1.0, 0.1)
    >>> p = true_class_probability(10, 0.5)
    >>> round(label_entropy(p, 10) / math.log(10), 6)
    0.5
    """
    goal = entropy * math.log(n_classes)
    low, high = 1.0 / n_classes, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        if label_entropy(middle, n_classes) > goal:
            low = middle
        else:
            high = middle
    return (low + high) / 2


class ModifiedOutputs(nn.Module):
    """``base``'s class order with the probabilities of a random input; answers log-probabilities."""

    def __init__(self, base: nn.Module, low: torch.Tensor, high: torch.Tensor, seed: int) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        random_inputs = self.low + (self.high - self.low) * torch.rand(x.shape, generator=generator)
        with torch.no_grad():
            own = self.base(x)
            donor = nn.functional.softmax(self.base(random_inputs).float(), dim=1)
        ranks = own.argsort(dim=1, descending=True)
        answer = torch.empty_like(donor).scatter_(1, ranks, donor.sort(dim=1, descending=True).values)
        return answer.clamp_min(1e-12).log()


class Hamp(TrainingDefense):
    name = "hamp"
    citation = "Chen & Pattabiraman, NDSS 2024"
    modifies_outputs = True

    def __init__(self, entropy: float = 0.5, alpha: float = 0.01) -> None:
        self.entropy = entropy
        self.alpha = alpha

    def params(self) -> dict[str, Any]:
        return {"entropy": self.entropy, "alpha": self.alpha}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        p = true_class_probability(n_classes, self.entropy)
        rest = (1.0 - p) / (n_classes - 1)
        alpha = self.alpha

        def objective(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
            targets = torch.full_like(logits, rest).scatter_(1, labels[:, None], p)
            log_q = nn.functional.log_softmax(logits, dim=1)
            entropy = -(log_q.exp() * log_q).sum(dim=1)
            return (-(targets * log_q).sum(dim=1) - alpha * entropy).mean()

        model = train_plain(spec, build_model(spec, X, y, n_classes, seed), X, y, seed, objective)
        features = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        released = ModifiedOutputs(model, features.min(dim=0).values, features.max(dim=0).values, seed)
        return Trained(released.eval(), {"soft_label_true_class_probability": p})
