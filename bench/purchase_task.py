"""The Purchase100-like task shared by the audit benchmarks, and its PyTorch recipe.

Data: binary purchase vectors, 600 items and 100 classes; each class has its own item probabilities
(Beta(0.3, 2) per item, so most items are rare) and a record is one Bernoulli draw per item. Every
benchmark generates it from a seed: nothing is downloaded.

Model: a 600-256-100 ReLU MLP trained with Adam (learning rate 1e-3) on minibatches of 128 for 20
epochs, with no regularisation, so it fits its training rows and leaks. ``recipe`` is what an audit
calls (``--model bench/purchase_task.py:recipe``); ``vectorised_spec`` declares the same training for
membershield's vectorised trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

N_FEATURES = 600
HIDDEN = 256
N_CLASSES = 100
EPOCHS = 20
BATCH_SIZE = 128
LEARNING_RATE = 1e-3


def purchase_like(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` records (float32 0/1 features) and their classes (int64), from class prototypes of ``seed``."""
    rng = np.random.default_rng(seed)
    prototypes = rng.beta(0.3, 2.0, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=rows)
    X = (rng.random((rows, N_FEATURES)) < prototypes[y]).astype(np.float32)
    return X, y.astype(np.int64)


def write_parquet(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Features as int8 columns ``f0..f599`` and the class in column ``y``: what the audits read."""
    frame = pd.DataFrame(x.astype(np.int8), columns=[f"f{j}" for j in range(x.shape[1])])
    frame["y"] = y
    frame.to_parquet(path, index=False)


def build(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
    """The untrained MLP; binary features need no scaling, so nothing is fitted on ``X``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(X.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_classes))


def recipe(X: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int) -> nn.Module:
    """Train the MLP on ``X, y`` with Adam on shuffled minibatches; return it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = build(X, y, n_classes, seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    features = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    labels = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(features[batch]), labels[batch]).backward()
            optimiser.step()
    return model.eval()


def vectorised_spec():
    """The same training as ``recipe``, declared so that many models can be trained at once."""
    from membershield.training.vectorised import VectorisedSpec

    return VectorisedSpec(build=build, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LEARNING_RATE)
