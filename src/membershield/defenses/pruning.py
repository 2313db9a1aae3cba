"""Pruning as a membership defense (Wang, Wang, Zhang & Shao, "Against Membership Inference Attack:
Pruning is All You Need", IJCAI 2021): a network memorises with weights it does not need to generalise,
and removing the smallest of them, then fine-tuning, keeps the accuracy while forgetting part of what
was memorised.

Here: the declared training, then ``rounds`` rounds of global magnitude pruning (the smallest weights of
every linear and convolutional layer, ranked together, ``torch.nn.utils.prune``) each followed by
``finetune_epochs`` epochs of the declared loop on the same rows; each round removes the same share of
the weights still left, so that ``sparsity`` of them are zero at the end. The paper searches the
sparsity per model; it is a parameter here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn
from torch.nn.utils import prune

from membershield.defenses.training import Trained, TrainingDefense, build_model, train_plain
from membershield.training.vectorised import VectorisedSpec

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def round_amount(sparsity: float, rounds: int) -> float:
    """The share of the remaining weights each round removes so that ``sparsity`` are gone after ``rounds``.

    >>> round(round_amount(0.75, 2), 6)
    0.5
    >>> round_amount(0.0, 3)
    0.0
    """
    return 1.0 - (1.0 - sparsity) ** (1.0 / rounds)


def zero_share(model: nn.Module) -> float:
    """The share of the prunable layers' weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


class Pruning(TrainingDefense):
    name = "pruning"
    citation = "Wang et al., IJCAI 2021"

    def __init__(self, sparsity: float = 0.5, rounds: int = 3, finetune_epochs: int | None = None) -> None:
        self.sparsity = sparsity
        self.rounds = rounds
        self.finetune_epochs = finetune_epochs

    def params(self) -> dict[str, Any]:
        values: dict[str, Any] = {"sparsity": self.sparsity, "rounds": self.rounds}
        if self.finetune_epochs is not None:
            values["finetune_epochs"] = self.finetune_epochs
        return values

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        model = train_plain(spec, build_model(spec, X, y, n_classes, seed), X, y, seed)
        layers = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
        if not layers:
            from membershield.errors import ConfigError

            raise ConfigError("defense 'pruning': the model has no linear or convolutional layer to prune")
        epochs = self.finetune_epochs if self.finetune_epochs is not None else max(1, spec.epochs // (2 * self.rounds))
        finetune = replace(spec, epochs=epochs)
        amount = round_amount(self.sparsity, self.rounds)
        for r in range(self.rounds):
            prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
            model = train_plain(finetune, model, X, y, seed + 1 + r)  # the masks keep pruned weights at zero
        for module, name in layers:
            prune.remove(module, name)
        return Trained(model, {"sparsity_reached": zero_share(model), "finetune_epochs_per_round": epochs})
