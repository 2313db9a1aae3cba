"""A PyTorch recipe for membershield: an MLP for any numeric table.

Use it as ``--model examples/torch_mlp.py:recipe``. membershield calls ``recipe`` once for the target
(on the members) and once per reference model (on random halves of the audit pool), always with a seed,
so every model comes from the same training pipeline.

The defaults deliberately train to near-zero training loss with no regularisation: a model that
memorises, which is what an audit should catch. Change ``EPOCHS``, ``WEIGHT_DECAY`` or ``HIDDEN`` to audit
your own training settings.

The recipe keeps copies of the model's weights after the epochs in ``CHECKPOINT_EPOCHS`` on
``model.checkpoints`` (oldest first), which the white-box ``loss-trajectory`` attack reads; a recipe that
keeps none still trains and audits as before, without that attack.

``vectorised_spec`` declares the same pipeline (the untrained model from ``build``, then Adam on shuffled
minibatches with the settings below) so that membershield can train many reference models at once; see
``membershield.training.vectorised``. ``recipe`` and the spec share ``build`` and the constants, so the
two ways of training stay in step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

HIDDEN = 256
EPOCHS = 60
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.0
# Early epochs are where members' and non-members' losses part (Liu et al., CCS 2022): kept densely there.
CHECKPOINT_EPOCHS = (1, 2, 4, 8, 16, 32)


class Standardize(nn.Module):
    """Feature scaling fitted on the training rows and stored with the model."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def network(n_features: int, n_classes: int, mean: np.ndarray, std: np.ndarray) -> nn.Module:
    return nn.Sequential(
        Standardize(mean, std),
        nn.Linear(n_features, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, n_classes),
    )


def build(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
    """The untrained model for training rows ``X``: scaling fitted on ``X``, weights initialised from ``seed``."""
    torch.manual_seed(seed)
    std = X.std(axis=0)
    return network(X.shape[1], n_classes, X.mean(axis=0), np.where(std > 0, std, 1.0))


def recipe(X: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int) -> nn.Module:
    """Train an MLP on float32 features ``X`` and class indices ``y``; return it (outputs logits)."""
    generator = torch.Generator().manual_seed(seed)
    model = build(X, y, n_classes, seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    features = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    labels = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    checkpoints = []
    for epoch in range(1, EPOCHS + 1):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimiser.zero_grad()
            loss_fn(model(features[batch]), labels[batch]).backward()
            optimiser.step()
        if epoch in CHECKPOINT_EPOCHS:
            # copies: a bare state_dict() shares the live tensors, which later steps overwrite
            checkpoints.append({name: t.detach().clone() for name, t in model.state_dict().items()})
    model.checkpoints = checkpoints
    return model.eval()


def vectorised_spec():
    """The same training as ``recipe``, declared so that many models can be trained at once."""
    from membershield.training.vectorised import VectorisedSpec

    return VectorisedSpec(
        build=build, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
    )
