"""Data augmentation as a membership defense: the model never sees a training record exactly as it is, so
it memorises the neighbourhood of a record rather than the point itself (Kaya & Dumitras, "When Does Data
Augmentation Help With Membership Inference Attacks?", ICML 2021, who also show that an attacker who
knows the augmentation can query it back; the audit's references train with the same augmentation).

Two kinds for tabular and flattened-image recipes:

* ``noise``: every minibatch gets Gaussian noise of ``strength`` times each feature's standard deviation
  over the training rows (fresh noise at every step);
* ``mixup`` (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018): every minibatch is mixed with a shuffled copy
  of itself, inputs and one-hot labels alike, with a weight drawn from Beta(``strength``, ``strength``)
  once per minibatch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.training import Augment, Trained, TrainingDefense, build_model, train_plain
from membershield.training.vectorised import VectorisedSpec

KINDS = ("noise", "mixup")
DEFAULT_STRENGTH = {"noise": 0.1, "mixup": 0.4}


def noise_augment(spread: torch.Tensor, strength: float, generator: torch.Generator) -> Augment:
    """Adds ``N(0, (strength * spread)^2)`` per feature to every minibatch.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment = noise_augment(torch.tensor([1.0, 0.0]), 0.5, g)
    >>> x, y = augment(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> bool((x[:, 1] == 0).all()), bool((x[:, 0] != 0).all()), y.tolist()
    (True, True, [0, 1, 0, 1])
    """
    scale = strength * spread

    def augment(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs + torch.randn(inputs.shape, generator=generator) * scale, labels

    return augment


def mixup_augment(n_classes: int, alpha: float, seed: int) -> Augment:
    """Mixes each minibatch with a shuffled copy of itself; the targets become class probabilities.

    >>> augment = mixup_augment(3, 0.4, seed=0)
    >>> x, y = augment(torch.eye(3), torch.tensor([0, 1, 2]))
    >>> y.shape, bool(torch.allclose(y.sum(dim=1), torch.ones(3))), bool(torch.allclose(x, y))
    (torch.Size([3, 3]), True, True)
    """
    weights = np.random.default_rng(seed)  # torch's Beta sampler takes no generator
    order_generator = torch.Generator().manual_seed(seed)

    def augment(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = float(weights.beta(alpha, alpha))
        order = torch.randperm(len(labels), generator=order_generator)
        one_hot = nn.functional.one_hot(labels, n_classes).to(inputs.dtype)
        mixed = weight * inputs + (1 - weight) * inputs[order]
        return mixed, weight * one_hot + (1 - weight) * one_hot[order]

    return augment


class Augmentation(TrainingDefense):
    name = "augmentation"
    citation = "Kaya & Dumitras, ICML 2021; mixup: Zhang et al., ICLR 2018"

    def __init__(self, kind: str = "noise", strength: float | None = None) -> None:
        from membershield.errors import ConfigError

        if kind not in KINDS:
            raise ConfigError(f"defense 'augmentation': kind must be one of {', '.join(KINDS)}, got '{kind}'")
        self.kind = kind
        self.strength = DEFAULT_STRENGTH[kind] if strength is None else strength

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "strength": self.strength}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        stream = seed + 7919  # apart from the minibatch order's stream
        if self.kind == "noise":
            spread = torch.tensor(np.asarray(X, dtype=np.float64).std(axis=0), dtype=torch.float32)
            augment = noise_augment(spread, self.strength, torch.Generator().manual_seed(stream))
        else:
            augment = mixup_augment(n_classes, self.strength, stream)
        model = build_model(spec, X, y, n_classes, seed)
        return Trained(train_plain(spec, model, X, y, seed, augment=augment))
