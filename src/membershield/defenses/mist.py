"""MIST, membership-invariant subspace training (Li, Li & Ribeiro, "MIST: Defending Against Membership
Inference Attacks Through Membership-Invariant Subspace Training", USENIX Security 2024).

The idea: a model is safe on a record when its output there is what it would be had the record not been
trained on. MIST trains ``submodels`` copies of the declared model, from one initialisation, each on its
own share of the rows, and periodically averages their weights (so they stay in one region of weight
space, the "subspace"). Each copy minimises, on its rows, the cross-entropy plus ``weight`` times a
*cross-difference* term: how far its loss on a record has fallen below the loss on that record of another
copy, drawn at random per minibatch, that never trained on it (held fixed; no gradient flows into it). A
record is learnt as far as a model without it would predict it, not further. The released model is the
average of the copies after the last epoch.

What is simplified from the paper: the paper's copies are trained in rounds with a learning-rate schedule
and the cross-difference uses several non-member copies; here every epoch is one round (each copy one
epoch on its share, then averaging) with the declared optimiser settings, and one copy per minibatch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.training import Trained, TrainingDefense, build_model, make_optimiser, minibatches
from membershield.training.vectorised import VectorisedSpec


def cross_difference(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Mean amount by which ``own`` per-record losses fall below ``other``'s (a model without the records).

    >>> round(float(cross_difference(torch.tensor([0.1, 2.0]), torch.tensor([0.5, 1.0]))), 6)
    0.2
    """
    return torch.relu(other.detach() - own).mean()


def average_into(models: list[nn.Module]) -> None:
    """Set every model's parameters and buffers to their mean over ``models``."""
    with torch.no_grad():
        states = [m.state_dict() for m in models]
        mean = {k: torch.stack([s[k].float() for s in states]).mean(dim=0).to(states[0][k].dtype) for k in states[0]}
        for model in models:
            model.load_state_dict(mean)


class Mist(TrainingDefense):
    name = "mist"
    citation = "Li, Li & Ribeiro, USENIX Security 2024"

    def __init__(self, submodels: int = 3, weight: float = 1.0) -> None:
        from membershield.errors import ConfigError

        if submodels < 2:
            raise ConfigError(f"defense 'mist': submodels must be 2 or more, got {submodels}")
        self.submodels = submodels
        self.weight = weight

    def params(self) -> dict[str, Any]:
        return {"submodels": self.submodels, "weight": self.weight}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        rng = np.random.default_rng(seed)
        share = rng.permutation(len(y)) % self.submodels  # each row trains exactly one copy
        first = build_model(spec, X, y, n_classes, seed)
        run = _CopiesRun(
            copies=[first] + [copy.deepcopy(first) for _ in range(self.submodels - 1)],
            features=torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
            labels=torch.from_numpy(np.asarray(y, dtype=np.int64)),
            spec=spec,
            weight=self.weight,
            generator=torch.Generator().manual_seed(seed),
            rng=rng,
        )
        rows_of = [torch.from_numpy(np.flatnonzero(share == k)) for k in range(self.submodels)]
        optimisers = [make_optimiser(spec, m.parameters()) for m in run.copies]
        for _ in range(spec.epochs):
            for k, optimiser in enumerate(optimisers):
                run.epoch(k, optimiser, rows_of[k])
            average_into(run.copies)
        return Trained(run.copies[0].eval(), {"submodels": self.submodels, "rows_per_submodel": len(rows_of[0])})


@dataclass
class _CopiesRun:
    copies: list[nn.Module]
    features: torch.Tensor
    labels: torch.Tensor
    spec: VectorisedSpec
    weight: float
    generator: torch.Generator
    rng: np.random.Generator

    def epoch(self, k: int, optimiser: torch.optim.Optimizer, rows: torch.Tensor) -> None:
        """One epoch of copy ``k`` on its ``rows``, against a random other copy per minibatch."""
        model = self.copies[k]
        others = [j for j in range(len(self.copies)) if j != k]
        for batch in minibatches(len(rows), self.spec.batch_size, self.generator):
            index = rows[batch]
            other = self.copies[int(self.rng.choice(others))]
            other.eval()
            with torch.no_grad():
                theirs = nn.functional.cross_entropy(other(self.features[index]), self.labels[index], reduction="none")
            model.train()
            mine = nn.functional.cross_entropy(model(self.features[index]), self.labels[index], reduction="none")
            optimiser.zero_grad()
            (mine.mean() + self.weight * cross_difference(mine, theirs)).backward()
            optimiser.step()
