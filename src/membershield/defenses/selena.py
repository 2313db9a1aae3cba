"""SELENA (Tang, Mahloujifar, Song, Shejwalkar, Nasr, Houmansadr & Mittal, "Mitigating Membership
Inference Attacks by Self-Distillation Through a Novel Ensemble Architecture", USENIX Security 2022).

*Split-AI*: ``models`` sub-models of the declared architecture, each record left out of ``excluded`` of
them at random (so each sub-model trains on about ``1 - excluded/models`` of the rows). A training
record's soft label is the average prediction of the sub-models that never saw it, which is what a
non-member would get. *Self-distillation*: the released model, of the same architecture, trains on every
training row against those soft labels (cross-entropy with probability targets), never on the hard
labels, so what it learns about a record is what models without that record predicted.

The paper uses 25 sub-models with 10 exclusions; the defaults (5 and 2) keep the same ratio's spirit at
CPU cost: 6 trainings instead of 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.training import Trained, TrainingDefense, build_model, train_plain
from membershield.training.vectorised import VectorisedSpec


def exclusion_plan(n: int, models: int, excluded: int, seed: int) -> np.ndarray:
    """``(models, n)`` bool: True where sub-model ``k`` trains on row ``i``; each row is left out of exactly
    ``excluded`` sub-models, chosen at random.

    >>> plan = exclusion_plan(6, 4, 1, seed=0)
    >>> plan.shape, (~plan).sum(axis=0).tolist()
    ((4, 6), [1, 1, 1, 1, 1, 1])
    """
    rng = np.random.default_rng(seed)
    keep = np.ones((models, n), dtype=bool)
    for i in range(n):
        keep[rng.choice(models, size=excluded, replace=False), i] = False
    return keep


class Selena(TrainingDefense):
    name = "selena"
    citation = "Tang et al., USENIX Security 2022"

    def __init__(self, models: int = 5, excluded: int = 2) -> None:
        from membershield.errors import ConfigError

        if not 1 <= excluded < models:
            raise ConfigError(
                f"defense 'selena': excluded must be at least 1 and below models, got excluded={excluded},"
                f" models={models}"
            )
        self.models = models
        self.excluded = excluded

    def params(self) -> dict[str, Any]:
        return {"models": self.models, "excluded": self.excluded}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        keep = exclusion_plan(len(y), self.models, self.excluded, seed)
        features = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        summed = torch.zeros(len(y), n_classes)
        for k in range(self.models):
            rows = keep[k]
            sub = build_model(spec, X[rows], y[rows], n_classes, seed + 101 + k)
            sub = train_plain(spec, sub, X[rows], y[rows], seed + 101 + k)
            with torch.no_grad():
                probabilities = nn.functional.softmax(sub(features).float(), dim=1)
            summed += probabilities * torch.from_numpy(~rows)[:, None]  # only where it never saw the row
        soft = summed / float(self.excluded)
        rows_index = np.arange(len(y), dtype=np.int64)

        def distil(logits: torch.Tensor, row: torch.Tensor, epoch: int) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, soft[row])

        # the loop indexes soft labels by row number, passed as its "labels"
        released = build_model(spec, X, y, n_classes, seed)
        released = train_plain(spec, released, X, rows_index, seed, distil)
        agreement = float((soft.argmax(dim=1).numpy() == y).mean())
        return Trained(released, {"sub_models": self.models, "soft_label_accuracy": agreement})
