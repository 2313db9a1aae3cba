"""Shadow generators: the generator fitted again on data of the attacker's choosing, and a membership
classifier trained on what its outputs look like around records it did and did not see (the shadow
modelling attack of Stadler et al. 2022, "Synthetic Data – Anonymisation Groundhog Day", USENIX
Security; as a toolbox threat model, Houssiau et al. 2022, "TAPAS: a Toolbox for Adversarial Privacy
Auditing of Synthetic Data", NeurIPS SyntheticData4ML workshop).

The attacker knows the generation pipeline (``--generator``) and holds real records from the population.
Each shadow generator is fitted on a random subset of the real records (the target's training size, at
most half of them) and samples as many records as the synthetic file has; every real record is then one
training example, IN or OUT of that shadow, described by features of the shadow's output around it: the
log distances to its 1st, 2nd and ``neighbours``-th nearest synthetic record, and how far its nearest
other real record is (so that outliers are not mistaken for members). A gradient-boosted classifier learns
IN from OUT over every shadow, and scores the audit records from the same features of the released
synthetic records. It is the strongest attack here when the pipeline is known, because it learns what
this generator's memorisation looks like instead of assuming it.
"""

from __future__ import annotations

import numpy as np

from membershield.errors import ConfigError
from membershield.synthetic.attacks.base import SyntheticAttack, SyntheticAttackInputs
from membershield.synthetic.encode import nearest_distances
from membershield.synthetic.generators import generate

EPS = 1e-6  # distances are logged: an exact copy is at log(1e-6), not -inf


def record_features(points: np.ndarray, synthetic: np.ndarray, typicality: np.ndarray, neighbours: int) -> np.ndarray:
    """``(n, 4)`` features of each record against one synthetic dataset (see the module docstring).

    >>> pts, syn = np.array([[0.0], [5.0]]), np.array([[0.0], [1.0], [2.0]])
    >>> record_features(pts, syn, np.array([5.0, 5.0]), 3).round(2).tolist()[0]
    [-13.82, 0.0, 0.69, 1.61]
    """
    distances = nearest_distances(points, synthetic, neighbours)
    distances = np.where(np.isfinite(distances), distances, distances[:, :1])
    picked = distances[:, [0, min(1, neighbours - 1), neighbours - 1]]
    return np.column_stack([np.log(picked + EPS), np.log(typicality + EPS)])


class ShadowGeneratorsAttack(SyntheticAttack):
    name = "shadow-generators"
    title = "Shadow generators with a membership classifier"
    citation = "Stadler et al. 2022 (USENIX Security); Houssiau et al. 2022 (TAPAS)"
    access = "synthetic records + the generator + real reference records"
    threat_model = (
        "knows the generator and holds real records, fits the generator again on random subsets of them, and"
        " learns what its output looks like around the records it trained on"
    )
    needs_generator = True

    def __init__(self, *, shadows: int = 4, neighbours: int = 5) -> None:
        if shadows < 1:
            raise ConfigError(f"--shadow-generators must be 1 or more, got {shadows}")
        if neighbours < 2:
            raise ConfigError(f"shadow-generators: neighbours must be 2 or more, got {neighbours}")
        self.shadows = shadows
        self.neighbours = neighbours

    def _training_set(self, inputs: SyntheticAttackInputs, pool: np.ndarray, typicality: np.ndarray):
        tables, generator = inputs.tables, inputs.generator
        assert generator is not None
        real = tables.real
        size = max(1, min(len(tables.train), len(real) // 2))
        rng = np.random.default_rng(inputs.seed)
        features, labels = [], []
        for k in range(self.shadows):
            inputs.report("shadow generators", k, self.shadows)
            inside = np.zeros(len(real), dtype=bool)
            inside[rng.choice(len(real), size, replace=False)] = True
            subset = real.loc[inside].reset_index(drop=True)
            output = generate(
                generator, subset, len(tables.synthetic), seed=inputs.seed + 1 + k, numeric=tables.numeric
            )
            features.append(record_features(pool, inputs.encoder.transform(output), typicality, self.neighbours))
            labels.append(inside)
        inputs.report("shadow generators", self.shadows, self.shadows)
        self.shadow_training_size = size
        return np.concatenate(features), np.concatenate(labels)

    def score(self, inputs: SyntheticAttackInputs) -> np.ndarray:
        from sklearn.ensemble import HistGradientBoostingClassifier

        pool = np.concatenate([inputs.audit_points, inputs.population_points])
        typicality = nearest_distances(pool, pool, 1, exclude=np.arange(len(pool)))[:, 0]
        typicality = np.where(np.isfinite(typicality), typicality, 0.0)
        X, y = self._training_set(inputs, pool, typicality)
        model = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=inputs.seed
        )
        model.fit(X, y)
        target = record_features(
            inputs.audit_points, inputs.synthetic_points, typicality[: inputs.n_audit], self.neighbours
        )
        return model.decision_function(target)

    def params(self) -> dict[str, object]:
        extra = {"shadow_training_size": self.shadow_training_size} if hasattr(self, "shadow_training_size") else {}
        return {"shadows": self.shadows, "neighbours": self.neighbours, **extra}
