"""RelaxLoss (Chen, Yu & Fritz, "RelaxLoss: Defending Membership Inference Attacks without Losing
Utility", ICLR 2022).

Membership attacks separate members from non-members by their loss. RelaxLoss keeps the mean training
loss near a target level ``alpha`` instead of driving it to zero, so the members' loss distribution stays
close to the non-members'. Per minibatch, with ``L`` the batch's mean cross-entropy:

* in even epochs the loss is ``|L - alpha|``: gradient descent while ``L > alpha``, gradient *ascent*
  once the batch has fallen below the target;
* in odd epochs, plain descent while ``L > alpha``; below it, *posterior flattening*: every correctly
  classified record is trained towards a target distribution that keeps its current true-class
  probability ``p_y`` (a constant) and spreads ``1 - p_y`` evenly over the other classes, which flattens
  the non-true-class posteriors that attacks read, without moving the prediction; misclassified records
  keep the plain cross-entropy.

The paper tunes ``alpha`` per dataset (1.0 for CIFAR-10). A larger ``alpha`` leaks less and costs accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from membershield.defenses.training import Objective, TrainingDefense

CITATION = "Chen, Yu & Fritz, ICLR 2022"


def flattened_targets(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Targets with the true class at its current probability and the rest shared evenly (no gradient)."""
    n_classes = probabilities.shape[1]
    true_p = probabilities.gather(1, labels[:, None]).detach()
    rest = (1.0 - true_p) / max(n_classes - 1, 1)
    one_hot = nn.functional.one_hot(labels, n_classes).to(probabilities.dtype)
    return one_hot * true_p + (1.0 - one_hot) * rest


def relaxloss(logits: torch.Tensor, labels: torch.Tensor, epoch: int, alpha: float) -> torch.Tensor:
    per_record = nn.functional.cross_entropy(logits, labels, reduction="none")
    mean = per_record.mean()
    if epoch % 2 == 0:
        return (mean - alpha).abs()
    if mean > alpha:
        return mean
    log_p = nn.functional.log_softmax(logits, dim=1)
    correct = (logits.argmax(dim=1) == labels).to(logits.dtype)
    soft = -(flattened_targets(log_p.exp(), labels) * log_p).sum(dim=1)
    return ((1.0 - correct) * per_record + correct * soft).mean()


class RelaxLoss(TrainingDefense):
    """Training with :func:`relaxloss` at target loss ``alpha``."""

    name = "relaxloss"
    citation = CITATION

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def objective(self, n_classes: int) -> Objective:
        alpha = self.alpha

        def loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
            return relaxloss(logits, labels, epoch, alpha)

        return loss
