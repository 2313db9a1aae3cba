"""RMIA's softmax temperature: calibrated on reference models only, and it matters on saturated outputs."""

from __future__ import annotations

import numpy as np

from membershield import metrics
from membershield.attacks import AttackInputs, create_attack
from membershield.attacks.rmia import DEFAULT_TEMPERATURE, _online_marginal, calibrate
from membershield.signals import true_class_confidence
from membershield.training import membership_plan

N, N_AUDIT, N_CLASSES = 3000, 2000, 10


def saturated_inputs(n_references: int, seed: int = 0) -> tuple[AttackInputs, np.ndarray]:
    """Every model is so sure of the true class that ``softmax`` rounds it to exactly 1 in float64.

    True-class margins of 40-60 nats put ``1 - p`` below float64's resolution at 1, so at temperature 1
    every record has ``p = 1`` and RMIA's ratio carries no information; training on a record adds 4 nats.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, N)
    difficulty = rng.uniform(42, 56, N)

    def model_logits(trained_on: np.ndarray) -> np.ndarray:
        logits = rng.normal(0, 1, (N, N_CLASSES))
        logits[np.arange(N), labels] += difficulty + 4.0 * trained_on + rng.normal(0, 0.5, N)
        return logits

    is_member = np.zeros(N, bool)
    is_member[: N_AUDIT // 2] = True
    keep = membership_plan(N, n_references, 0.5, seed)
    references = np.stack([model_logits(keep[k]) for k in range(n_references)])
    return AttackInputs(labels, model_logits(is_member), references, keep, N_AUDIT, seed), is_member[:N_AUDIT]


def test_temperature_one_is_blind_on_saturated_outputs_and_calibration_finds_a_better_one() -> None:
    inputs, is_member = saturated_inputs(8)
    temperature, _ = calibrate(inputs, online=True)
    assert temperature > 1.0
    attack = create_attack("rmia")
    calibrated_auc, _ = metrics.auc_with_ci(np.asarray(attack.score(inputs))[:N_AUDIT], is_member)
    assert attack.params()["temperature"] == temperature
    offline = create_attack("rmia-offline")
    offline_auc, _ = metrics.auc_with_ci(np.asarray(offline.score(inputs))[:N_AUDIT], is_member)
    assert offline.params()["temperature"] > 1.0

    assert calibrated_auc > 0.9 and offline_auc > 0.85

    at_one = true_class_confidence(inputs.target_logits, inputs.labels)
    assert (at_one == 1.0).all()  # the premise: at T = 1 every record looks the same
    marginal = _online_marginal(
        np.stack([true_class_confidence(lg, inputs.labels) for lg in inputs.reference_logits]), inputs.reference_in
    )
    ratio = at_one / marginal
    assert np.unique(ratio).size == 1


def test_calibration_never_reads_the_targets_membership() -> None:
    inputs, _ = saturated_inputs(8)
    flipped = AttackInputs(
        inputs.labels, inputs.target_logits[::-1].copy(), inputs.reference_logits, inputs.reference_in, N_AUDIT
    )
    assert calibrate(inputs, online=False, a_grid=(0.1, 0.5)) == calibrate(flipped, online=False, a_grid=(0.1, 0.5))


def test_too_few_references_fall_back_to_the_default_temperature() -> None:
    inputs, is_member = saturated_inputs(2)
    assert calibrate(inputs, online=True)[0] == DEFAULT_TEMPERATURE
    scores = np.asarray(create_attack("rmia").score(inputs))[:N_AUDIT]
    assert metrics.auc_with_ci(scores, is_member)[0] > 0.8
