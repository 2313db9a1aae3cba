"""What a recipe file declares so that membershield can train its model many times at once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

BuildFunction = Callable[[np.ndarray, np.ndarray, int, int], nn.Module]
OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class VectorisedSpec:
    """How to train one model, declared so that many can be trained at once.

    ``build(X, y, n_classes, seed)`` returns the untrained module for training rows ``X`` (float32
    ``(n, d)``) and labels ``y`` (int64 ``(n,)``); it may fit preprocessing on them, but must not train.
    The module maps a float32 batch to logits ``(batch, n_classes)``. Training minimises the mean
    cross-entropy over minibatches of ``batch_size`` rows for ``epochs`` epochs with ``optimizer``:
    ``"adam"`` (``torch.optim.Adam``: weight decay added to the gradient) or ``"adamw"``
    (``torch.optim.AdamW``: decoupled weight decay), both with ``betas`` and ``eps``.
    """

    build: BuildFunction
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise ValueError("VectorisedSpec.build must be callable: build(X, y, n_classes, seed) -> nn.Module")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not self.eps > 0:
            raise ValueError("need lr > 0, weight_decay >= 0 and eps > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


def vectorised_spec_of(recipe_function: Callable[..., object]) -> VectorisedSpec | None:
    """The spec declared by the file that defines ``recipe_function``, or None if it declares none."""
    module = sys.modules.get(getattr(recipe_function, "__module__", None) or "")
    declare = getattr(module, "vectorised_spec", None)
    if not callable(declare):
        return None
    spec = declare()
    if not isinstance(spec, VectorisedSpec):
        raise TypeError(f"vectorised_spec() returned {type(spec).__name__}; it must return a VectorisedSpec")
    return spec
