"""Checks of the training inputs and of the models ``build`` returns, before any training."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _check_inputs(
    X: np.ndarray, y: np.ndarray, n_classes: int, masks: np.ndarray, seeds: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    masks = np.asarray(masks)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,); got {X.shape} and {y.shape}")
    if masks.dtype != np.bool_ or masks.ndim != 2 or masks.shape[1] != X.shape[0]:
        raise ValueError(f"masks must be a boolean (K, {X.shape[0]}) array; got {masks.dtype} {masks.shape}")
    if len(seeds) != masks.shape[0] or len(seeds) == 0:
        raise ValueError(f"need one seed per mask row and at least one model; got {len(seeds)} seeds")
    if not masks.any(axis=1).all():
        raise ValueError(f"model {int(np.flatnonzero(~masks.any(axis=1))[0])} has no training rows")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be class indices in [0, {n_classes})")
    return X, y, masks


def _check_same_structure(models: list[nn.Module]) -> None:
    def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        tensors = [*model.named_parameters(), *model.named_buffers()]
        return [(name, tuple(t.shape), t.dtype) for name, t in tensors]

    first = layout(models[0])
    for k, model in enumerate(models[1:], start=1):
        if type(model) is not type(models[0]) or layout(model) != first:
            raise ValueError(
                f"build returned models of different structure (model 0 and model {k}); vectorised training"
                " needs the same parameter and buffer names, shapes and dtypes for every training set"
            )
