"""Adversarial regularisation (Nasr, Shokri & Houmansadr, "Machine Learning with Membership Privacy using
Adversarial Regularization", CCS 2018).

Training is a game between the classifier and a membership attack trained alongside it. A share
``reference_fraction`` of the training rows (stratified by label) is set aside as the reference set: the
classifier never trains on it, so it stands for non-members. Every step then

1. trains the attack (a small network on the classifier's softmax output and the one-hot label) to tell
   the step's training rows (label 1) from as many reference rows (label 0), one binary cross-entropy
   step with the spec's optimiser settings; and
2. trains the classifier on its minibatch against cross-entropy plus ``weight`` times the attack's gain,
   the mean log-probability the attack gives the training rows of being members, so it learns outputs
   on which the attack cannot tell its training rows apart.

The paper alternates k attack steps with one classifier step and uses the full reference set; one step
each on matched minibatches is the same game at the granularity of the spec's loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.regularisation import stratified_holdout
from membershield.defenses.training import Trained, TrainingDefense, build_model, make_optimiser, minibatches
from membershield.training.vectorised import VectorisedSpec

ATTACK_HIDDEN = 64


def attack_network(n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2 * n_classes, ATTACK_HIDDEN), nn.ReLU(), nn.Linear(ATTACK_HIDDEN, 1))


class AdversarialRegularisation(TrainingDefense):
    name = "adv-reg"
    citation = "Nasr, Shokri & Houmansadr, CCS 2018"

    def __init__(self, weight: float = 1.0, reference_fraction: float = 0.2) -> None:
        self.weight = weight
        self.reference_fraction = reference_fraction

    def params(self) -> dict[str, Any]:
        return {"weight": self.weight, "reference_fraction": self.reference_fraction}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        reference = stratified_holdout(y, self.reference_fraction, seed)
        if not reference.any() or reference.all():
            reference = np.zeros(len(y), dtype=bool)
            reference[np.random.default_rng(seed).permutation(len(y))[: max(1, len(y) // 5)]] = True
        X_fit, y_fit = X[~reference], y[~reference]
        model = build_model(spec, X_fit, y_fit, n_classes, seed)
        attack = attack_network(n_classes)
        features = torch.tensor(np.asarray(X_fit), dtype=torch.float32)
        labels = torch.tensor(np.asarray(y_fit), dtype=torch.int64)
        ref_features = torch.tensor(np.asarray(X[reference]), dtype=torch.float32)
        ref_labels = torch.tensor(np.asarray(y[reference]), dtype=torch.int64)
        generator = torch.Generator().manual_seed(seed)
        draws = torch.Generator().manual_seed(seed + 1)
        optimiser = make_optimiser(spec, model.parameters())
        attack_optimiser = torch.optim.Adam(attack.parameters(), lr=spec.lr, betas=spec.betas, eps=spec.eps)
        bce = nn.functional.binary_cross_entropy_with_logits

        def attack_input(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            one_hot = nn.functional.one_hot(label, n_classes).to(logits.dtype)
            return torch.cat([nn.functional.softmax(logits, dim=1), one_hot], dim=1)

        model.train()
        gains = []
        for _ in range(spec.epochs):
            for batch in minibatches(len(labels), spec.batch_size, generator):
                others = torch.randint(len(ref_labels), (len(batch),), generator=draws)
                with torch.no_grad():
                    inside = attack_input(model(features[batch]), labels[batch])
                    outside = attack_input(model(ref_features[others]), ref_labels[others])
                attack_optimiser.zero_grad()
                scores = attack(torch.cat([inside, outside])).squeeze(1)
                truth = torch.cat([torch.ones(len(batch)), torch.zeros(len(others))])
                bce(scores, truth).backward()
                attack_optimiser.step()

                optimiser.zero_grad()
                logits = model(features[batch])
                gain = nn.functional.logsigmoid(attack(attack_input(logits, labels[batch])).squeeze(1)).mean()
                (nn.functional.cross_entropy(logits, labels[batch]) + self.weight * gain).backward()
                optimiser.step()
                gains.append(float(gain.detach().exp()))
        return Trained(
            model.eval(),
            {
                "reference_rows": int(reference.sum()),
                "training_rows": int((~reference).sum()),
                "final_attack_member_probability": float(np.mean(gains[-10:])) if gains else None,
            },
        )
