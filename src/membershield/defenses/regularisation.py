"""Regularisers as defenses: label smoothing, confidence penalty, L2 weight decay, dropout, early stopping.

None of them was designed against membership inference; they reduce overfitting, and an overfitted
model is what the attacks exploit (Yeom et al., CSF 2018). They are the baseline a dedicated defense has
to beat, and their effect on the strongest attacks at low FPR is often small: the comparison measures
it rather than assuming it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.training import (
    Objective,
    Trained,
    TrainingDefense,
    build_model,
    train_plain,
)
from membershield.training.vectorised import VectorisedSpec


class LabelSmoothing(TrainingDefense):
    """Cross-entropy against ``(1 - amount)`` · one-hot + ``amount`` · uniform targets (Szegedy et al.,
    "Rethinking the Inception Architecture for Computer Vision", CVPR 2016)."""

    name = "label-smoothing"
    citation = "Szegedy et al., CVPR 2016"

    def __init__(self, amount: float = 0.1) -> None:
        self.amount = amount

    def params(self) -> dict[str, Any]:
        return {"amount": self.amount}

    def objective(self, n_classes: int) -> Objective:
        amount = self.amount

        def loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, labels, label_smoothing=amount)

        return loss


class ConfidencePenalty(TrainingDefense):
    """Cross-entropy minus ``beta`` times the entropy of the predicted distribution, which penalises
    confident (low-entropy) outputs (Pereyra et al., "Regularizing Neural Networks by Penalizing Confident
    Output Distributions", ICLR workshop 2017)."""

    name = "confidence-penalty"
    citation = "Pereyra et al., ICLR workshop 2017"

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = beta

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def objective(self, n_classes: int) -> Objective:
        beta = self.beta

        def loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
            log_p = nn.functional.log_softmax(logits, dim=1)
            entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
            return nn.functional.nll_loss(log_p, labels) - beta * entropy

        return loss


class WeightDecay(TrainingDefense):
    """L2 regularisation: the optimiser's weight decay set to ``weight_decay`` (replacing the spec's)."""

    name = "l2"
    citation = "Shokri et al., S&P 2017"

    def __init__(self, weight_decay: float = 1e-3) -> None:
        self.weight_decay = weight_decay

    def params(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        model = build_model(spec, X, y, n_classes, seed)
        return Trained(train_plain(spec, model, X, y, seed, weight_decay=self.weight_decay))


ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardswish,
)


def with_dropout(model: nn.Module, rate: float) -> int:
    """Set the rate of ``model``'s dropout layers, or, if it has none, put a dropout layer after every
    activation module. Returns how many dropout layers the model then has (0: nothing to attach to)."""
    existing = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for layer in existing:
        layer.p = rate
    if existing:
        return len(existing)
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTIVATIONS):
                setattr(parent, name, nn.Sequential(child, nn.Dropout(rate)))
                count += 1
    return count


class Dropout(TrainingDefense):
    """Dropout at ``rate`` (Srivastava et al., JMLR 2014): the model's dropout layers get this rate; a
    model without any gets a dropout layer after each activation module (``nn.ReLU`` and the like). A
    model whose activations are functional calls has nowhere to put one, and is refused."""

    name = "dropout"
    citation = "Srivastava et al., JMLR 2014"

    def __init__(self, rate: float = 0.3) -> None:
        self.rate = rate

    def params(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        from membershield.errors import ConfigError

        model = build_model(spec, X, y, n_classes, seed)
        layers = with_dropout(model, self.rate)
        if layers == 0:
            raise ConfigError(
                "dropout: the recipe's model has no dropout layer and no activation module (nn.ReLU, ...) to put"
                " one after; add nn.Dropout to the model in build() instead"
            )
        return Trained(train_plain(spec, model, X, y, seed), {"dropout_layers": layers})


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the rows, the same share of every class that has 2+ rows."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        if len(rows) < 2:
            continue
        take = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        held[rng.permutation(rows)[:take]] = True
    return held


class EarlyStopping(TrainingDefense):
    """Stop when the loss on a validation split of the training rows has not improved for ``patience``
    epochs, and keep the weights of the best epoch. The validation rows (``validation`` of each class)
    are never trained on, at most the spec's epochs are run."""

    name = "early-stopping"
    citation = "Song & Mittal, USENIX Security 2021"

    def __init__(self, patience: int = 5, validation: float = 0.2) -> None:
        self.patience = patience
        self.validation = validation

    def params(self) -> dict[str, Any]:
        return {"patience": self.patience, "validation": self.validation}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        held = stratified_holdout(y, self.validation, seed)
        if held.all() or not held.any():
            held = np.zeros(len(y), dtype=bool)
        X_fit, y_fit = X[~held], y[~held]
        model = build_model(spec, X_fit, y_fit, n_classes, seed)
        X_val = torch.tensor(np.asarray(X[held]), dtype=torch.float32)
        y_val = torch.tensor(np.asarray(y[held]), dtype=torch.int64)
        state = {"best": float("inf"), "best_epoch": 0, "weights": copy.deepcopy(model.state_dict()), "ran": 0}

        def after_epoch(epoch: int, current: nn.Module) -> bool:
            state["ran"] = epoch + 1
            if len(y_val) == 0:
                return False
            current.eval()
            with torch.no_grad():
                loss = float(nn.functional.cross_entropy(current(X_val), y_val))
            if loss < state["best"]:
                state.update(best=loss, best_epoch=epoch + 1, weights=copy.deepcopy(current.state_dict()))
            return epoch + 1 - state["best_epoch"] >= self.patience

        model = train_plain(spec, model, X_fit, y_fit, seed, after_epoch=after_epoch)
        if len(y_val):
            model.load_state_dict(state["weights"])
        return Trained(
            model.eval(),
            {
                "validation_rows": int(held.sum()),
                "epochs_run": state["ran"],
                "best_epoch": state["best_epoch"] if len(y_val) else state["ran"],
                "best_validation_loss": state["best"] if len(y_val) else None,
            },
        )
