"""The classifier attack: a model trained on the synthetic records, attacked as any model is.

Synthetic tables are released so that others train models on them; a model fitted to synthetic records
that copy training records fits those training records too. The attacker trains a model on the synthetic
records to predict ``--label-column`` from the other columns (a random forest, which fits its training
records closely), then runs the LOSS attack of Yeom et al. 2018 ("Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting", CSF) on it: a low loss on a real record means a member, with the
real holdout as the non-members (the "train on synthetic, attack as a model" view of Stadler et al. 2022,
"Synthetic Data – Anonymisation Groundhog Day", USENIX Security). A numeric label with more than
``max_classes`` values is a regression, and the loss is the squared error in the label's standard
deviations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from membershield.signals import cross_entropy_loss, is_correct
from membershield.synthetic.attacks.base import SyntheticAttack, SyntheticAttackInputs
from membershield.synthetic.encode import TableEncoder, category


class SyntheticClassifierAttack(SyntheticAttack):
    name = "synthetic-classifier"
    title = "LOSS attack on a model trained on the synthetic records"
    citation = "Yeom et al. 2018 (CSF); Stadler et al. 2022 (USENIX Security)"
    threat_model = (
        "trains a model on the synthetic records to predict the label column, and flags a real record the model"
        " fits with unusually low loss"
    )
    needs_label = True

    def __init__(self, *, trees: int = 100, max_classes: int = 20) -> None:
        self.trees = trees
        self.max_classes = max_classes

    def _encoder(self, inputs: SyntheticAttackInputs, label: str) -> TableEncoder:
        tables = inputs.tables
        numeric = [c for c in tables.numeric if c != label]
        categorical = [c for c in tables.categorical if c != label]
        return TableEncoder.fit(tables.real, numeric, categorical)

    def score(self, inputs: SyntheticAttackInputs) -> np.ndarray:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        label = inputs.label_column
        assert label is not None
        tables = inputs.tables
        encoder = self._encoder(inputs, label)
        X_syn, X_rec = encoder.transform(tables.synthetic), encoder.transform(tables.records)
        y_syn, y_rec = tables.synthetic[label], tables.records[label]
        regression = label in tables.numeric and pd.concat([y_syn, y_rec]).nunique() > self.max_classes
        if regression:
            centre = float(np.nanmedian(y_syn.to_numpy(dtype=np.float64)))
            scale = float(np.nanstd(y_rec.to_numpy(dtype=np.float64))) or 1.0
            target = np.nan_to_num(y_syn.to_numpy(dtype=np.float64), nan=centre)
            truth = np.nan_to_num(y_rec.to_numpy(dtype=np.float64), nan=centre)
            model = RandomForestRegressor(n_estimators=self.trees, random_state=inputs.seed, n_jobs=1)
            predicted = model.fit(X_syn, target).predict(X_rec)
            loss = ((truth - predicted) / scale) ** 2
            self.fitted = self._regression_fit(truth, predicted, inputs.n_members)
            return -loss
        classes = sorted({category(v) for v in pd.concat([y_syn, y_rec])})
        index = {c: i for i, c in enumerate(classes)}
        target = np.array([index[category(v)] for v in y_syn])
        truth = np.array([index[category(v)] for v in y_rec])
        model = RandomForestClassifier(n_estimators=self.trees, random_state=inputs.seed, n_jobs=1)
        model.fit(X_syn, target)
        probabilities = np.full((len(X_rec), len(classes)), 0.0)
        probabilities[:, model.classes_] = model.predict_proba(X_rec)
        logits = np.log(np.maximum(probabilities, 1e-12))  # a class the synthetic records never show: p ≈ 0
        correct = is_correct(logits, truth)
        n = inputs.n_members
        self.fitted = {
            "task": "classification",
            "classes": len(classes),
            "member_accuracy": float(correct[:n].mean()),
            "nonmember_accuracy": float(correct[n:].mean()),
        }
        return -cross_entropy_loss(logits, truth)

    @staticmethod
    def _regression_fit(truth: np.ndarray, predicted: np.ndarray, n: int) -> dict[str, Any]:
        def r2(y: np.ndarray, p: np.ndarray) -> float:
            total = float(((y - y.mean()) ** 2).sum())
            return 1.0 - float(((y - p) ** 2).sum()) / total if total > 0 else 0.0

        return {
            "task": "regression",
            "member_r2": r2(truth[:n], predicted[:n]),
            "nonmember_r2": r2(truth[n:], predicted[n:]),
        }

    def params(self) -> dict[str, object]:
        return {"trees": self.trees, "max_classes": self.max_classes, **getattr(self, "fitted", {})}
