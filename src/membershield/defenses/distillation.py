"""Distillation for membership privacy, after DMP (Shejwalkar & Houmansadr, "Membership Privacy for
Machine Learning Models Through Knowledge Transfer", AAAI 2021).

The training rows are split in two: a private part, on which a *teacher* is trained as the spec declares,
and a reference part, held out from the teacher. The released *student* is trained only on the reference
part, and never on its labels: its targets are the teacher's predictions softened by ``temperature``
(loss: Kullback–Leibler divergence between the softened distributions, scaled by ``temperature²`` as in
Hinton et al. 2015). The private records reach the student only through the teacher's answers on other
records, which is where the protection comes from. Both models use the spec's architecture and training
settings. DMP draws its reference set from unlabelled public data; here it comes from the training rows
themselves, so no extra data is needed, at the cost of training the teacher on fewer rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.regularisation import stratified_holdout
from membershield.defenses.training import Trained, TrainingDefense, build_model, train_plain
from membershield.training.vectorised import VectorisedSpec


class Distillation(TrainingDefense):
    name = "distillation"
    citation = "Shejwalkar & Houmansadr, AAAI 2021 (DMP)"

    def __init__(self, temperature: float = 4.0, reference_fraction: float = 0.5) -> None:
        self.temperature = temperature
        self.reference_fraction = reference_fraction

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "reference_fraction": self.reference_fraction}

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        reference = stratified_holdout(y, self.reference_fraction, seed)
        if not reference.any() or reference.all():
            reference = np.zeros(len(y), dtype=bool)
            reference[np.random.default_rng(seed).permutation(len(y))[: max(1, len(y) // 2)]] = True
        private = ~reference
        teacher = build_model(spec, X[private], y[private], n_classes, seed)
        teacher = train_plain(spec, teacher, X[private], y[private], seed)
        X_ref = np.ascontiguousarray(X[reference], dtype=np.float32)
        with torch.no_grad():
            soft = nn.functional.softmax(teacher(torch.from_numpy(X_ref)) / self.temperature, dim=1)
        temperature = self.temperature
        # The student's loop indexes targets by row: pass row numbers as the "labels" and look them up.
        rows = np.arange(len(X_ref), dtype=np.int64)

        def distil(logits: torch.Tensor, row: torch.Tensor, epoch: int) -> torch.Tensor:
            log_q = nn.functional.log_softmax(logits / temperature, dim=1)
            return nn.functional.kl_div(log_q, soft[row], reduction="batchmean") * temperature**2

        # build() may fit preprocessing on the labels it is given; the student has the teacher's labels only.
        student = build_model(spec, X_ref, soft.argmax(dim=1).numpy(), n_classes, seed + 1)
        student = train_plain(spec, student, X_ref, rows, seed + 1, distil)
        return Trained(
            student,
            {"teacher_rows": int(private.sum()), "student_rows": int(reference.sum()), "temperature": temperature},
        )
