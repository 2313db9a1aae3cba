"""Loss trajectory (Liu, Xu, Zhang, Backes, Zhang, Shen, "Membership Inference Attacks by Exploiting Loss
Trajectory", ACM CCS 2022): a training record's loss falls earlier and further during training than a
non-member's, so the losses along training tell members apart better than the last loss alone.

Liu et al. rebuild the trajectory by distilling a black-box target; a white-box audit reads it from the
training checkpoints the recipe kept (``module.checkpoints``, see :mod:`membershield.targets.torch`),
followed by the trained model itself. Each step's loss is read as LiRA's scaled logit
``log(p / (1 - p))``, ``p = exp(-loss)`` (Carlini et al. 2022), where a model's spread is near Gaussian.

With at least ``MIN_REFERENCES`` reference models (the audit's own, trained again with their checkpoints):
each step is calibrated per record against the references that did not train on it (a z-score, as offline
LiRA), and, as in Liu et al., an attack model learns from the references how to weigh the steps: a
logistic regression on every reference model's own calibrated trajectories (each against the *other*
references) labelled with whether that reference trained on the record. It never sees the target's
membership. With fewer references the score is the negative mean loss along the trajectory.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression

from membershield.attacks.base import Attack, AttackInputs
from membershield.attacks.lira import fit_gaussians
from membershield.errors import ConfigError
from membershield.signals import cross_entropy_loss

CITATION = (
    "Liu, Xu, Zhang, Backes, Zhang, Shen. Membership Inference Attacks by Exploiting Loss Trajectory. ACM CCS 2022."
)
MIN_REFERENCES = 2  # each reference's trajectory is calibrated against the others: at least one other
LOSS_FLOOR = 1e-300  # a loss of exactly 0 (p rounds to 1) gets a finite, highest scaled logit


def scaled_logit_of_loss(loss: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` for ``p = exp(-loss)``, without forming ``p`` (which rounds to 1 for a small loss).

    >>> scaled_logit_of_loss(np.array([np.log(2.0), 1e-9, 0.0])).round(2).tolist()
    [0.0, 20.72, 690.78]
    """
    loss = np.maximum(loss, LOSS_FLOOR)
    return -loss - np.log(-np.expm1(-loss))


def calibrated_steps(value: np.ndarray, reference: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``(S, n)``: each step's ``value`` less the mean of the references OUT for the row, over their pooled
    spread at that step (``value`` ``(S, n)``, ``reference`` ``(K, S, n)``, ``out`` ``(K, n)``).

    >>> reference = np.array([[[1.0, 3.0]], [[3.0, 5.0]]])
    >>> calibrated_steps(np.array([[4.0, 4.0]]), reference, np.ones((2, 2), bool)).round(2).tolist()
    [[1.41, 0.0]]
    """
    steps = [fit_gaussians(reference[:, s], out, "pooled") for s in range(value.shape[0])]
    return np.stack([(value[s] - fit.mean) / fit.std for s, fit in enumerate(steps)])


class LossTrajectoryAttack(Attack):
    name = "loss-trajectory"
    title = "Loss trajectory (white-box)"
    citation = CITATION
    access = "white-box"
    # reads the live model's kept checkpoints (a recipe's target trained again for them) through inputs.queries
    needs_queries: ClassVar[bool] = True
    by_name_only: ClassVar[bool] = True  # trains the target and its references again
    uses_references: ClassVar[bool] = True

    def __init__(self) -> None:
        self.calibration: str | None = None
        self.step_weights: list[float] | None = None

    def params(self) -> dict[str, object]:
        return {"calibration": self.calibration, "step_weights": self.step_weights}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        if inputs.queries is None:
            raise ConfigError("loss-trajectory needs the model's checkpoints: give a PyTorch recipe that keeps them")
        kept = inputs.queries.checkpoint_losses()
        if kept.shape[0] == 0:
            raise ConfigError(
                "loss-trajectory needs training checkpoints and the recipe kept none: set model.checkpoints to"
                " copies of its state dict at some epochs (as examples/torch_mlp.py does)"
            )
        trajectory = np.vstack([kept, cross_entropy_loss(inputs.target_logits, inputs.labels)[None]])
        if inputs.n_references < MIN_REFERENCES:
            self.calibration = f"none (fewer than {MIN_REFERENCES} reference models): the negative mean loss"
            self.step_weights = None
            return -trajectory.mean(axis=0)
        return self._calibrated(inputs, scaled_logit_of_loss(trajectory))

    def _calibrated(self, inputs: AttackInputs, target: np.ndarray) -> np.ndarray:
        kept = inputs.queries.reference_checkpoint_losses()  # type: ignore[union-attr]
        if kept.shape[:2] != (inputs.n_references, target.shape[0] - 1):
            raise ConfigError(
                f"loss-trajectory got {kept.shape[1]} checkpoints of {kept.shape[0]} reference models where the"
                f" target has {target.shape[0] - 1} and {inputs.n_references} references: the recipe must keep"
                " the same checkpoints for every model it trains"
            )
        final = np.stack([cross_entropy_loss(logits, inputs.labels) for logits in inputs.reference_logits])
        reference = scaled_logit_of_loss(np.concatenate([kept, final[:, None]], axis=1))  # (K, S, n)
        out = ~inputs.reference_in
        features, members = [], []
        for k in range(inputs.n_references):
            others = np.arange(inputs.n_references) != k
            features.append(calibrated_steps(reference[k], reference[others], out[others]).T)
            members.append(inputs.reference_in[k])
        model = LogisticRegression(max_iter=1000).fit(np.concatenate(features), np.concatenate(members))
        self.step_weights = [round(float(w), 3) for w in model.coef_[0]]
        self.calibration = (
            f"per record and step, on the {inputs.n_references} references' OUT losses; steps weighed by a"
            " logistic regression on the references' own trajectories"
        )
        return model.decision_function(calibrated_steps(target, reference, out).T).astype(np.float64)
