"""RMIA's softmax temperature and class centring: calibrated on reference models only, and both matter."""

from __future__ import annotations

import numpy as np

from membershield import metrics
from membershield.attacks import AttackInputs, create_attack
from membershield.attacks.rmia import (
    DEFAULT_TEMPERATURE,
    RmiaOnline,
    _online_marginal,
    calibrate,
    centre_by_class,
    rmia_scores,
)
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
    temperature, _, centred = calibrate(inputs, online=True)
    assert temperature > 1.0
    assert not centred  # no class differs from another here, so the paper's plain z-sample is kept
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


def test_two_references_calibrate_and_one_falls_back_to_the_default_temperature() -> None:
    two, is_member = saturated_inputs(2)
    assert calibrate(two, online=True)[0] > 1.0
    assert calibrate(two, online=False, a_grid=(0.1, 0.5))[0] > 1.0
    one, _ = saturated_inputs(1)
    assert calibrate(one, online=True)[0] == DEFAULT_TEMPERATURE
    for inputs, least_auc in ((one, 0.65), (two, 0.8)):
        scores = np.asarray(create_attack("rmia").score(inputs))[:N_AUDIT]
        assert metrics.auc_with_ci(scores, is_member)[0] > least_auc


def test_class_offsets_come_from_the_z_sample_and_shrink_towards_the_overall_mean() -> None:
    labels = np.array([0, 0, 1, 2, 0, 0, 1, 1])
    log_ratio = np.array([5.0, 6.0, 7.0, 8.0, 1.0, 3.0, -1.0, -3.0])
    z_rows = np.arange(4, 8)  # class 0: 1 and 3, class 1: -1 and -3, class 2: none
    centred = centre_by_class(log_ratio, labels, z_rows, prior_weight=2.0)
    overall = 0.0
    class0 = (1.0 + 3.0 + 2.0 * overall) / (2 + 2.0)
    class1 = (-1.0 - 3.0 + 2.0 * overall) / (2 + 2.0)
    np.testing.assert_allclose(centred[:4], [5.0 - class0, 6.0 - class0, 7.0 - class1, 8.0 - overall])
    np.testing.assert_allclose(centre_by_class(log_ratio, labels, z_rows, prior_weight=0.0)[4:], [-1, 1, 1, -1])


def test_the_estimated_prior_weight_centres_real_class_effects_and_leaves_noise_alone() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(50), 40)
    z_rows = np.arange(labels.size)
    noise = rng.normal(0.0, 1.0, labels.size)
    # Classes that differ by chance only (their means' noise is 1/sqrt(40) = 0.16) are left nearly alone.
    offsets = noise - centre_by_class(noise, labels, z_rows)
    assert np.ptp(offsets) < 0.1 * np.ptp(np.bincount(labels, weights=noise) / 40)
    shifted = noise + rng.normal(0.0, 2.0, 50)[labels]
    within = centre_by_class(shifted, labels, z_rows)
    class_means = np.bincount(labels, weights=within) / 40
    assert np.abs(class_means).max() < 0.1 < np.abs(np.bincount(labels, weights=shifted) / 40).max()


def test_class_centring_recovers_power_lost_to_classes_of_unequal_difficulty() -> None:
    """Training on a record lifts its log-odds by 1.5 nats, but each model also sits up to 4 nats higher or
    lower on each class (as models trained on different samples do): without centring, the z-sample's
    bar is set across classes and the attack ranks classes instead of members. Calibration sees the same
    effect among the reference models and turns centring on."""
    rng = np.random.default_rng(3)
    n, n_audit, n_classes, n_refs = 6000, 4000, 20, 2
    labels = rng.integers(0, n_classes, n)
    base = rng.normal(2.0, 1.0, n)
    is_member = np.zeros(n, bool)
    is_member[: n_audit // 2] = True
    keep = membership_plan(n, n_refs, 0.5, 3)

    def logits(trained_on: np.ndarray) -> np.ndarray:
        class_shift = rng.uniform(-4.0, 4.0, n_classes)
        out = rng.normal(0, 0.3, (n, n_classes))
        out[np.arange(n), labels] += base + class_shift[labels] + 1.5 * trained_on + rng.normal(0, 0.5, n)
        return out

    refs = np.stack([logits(keep[k]) for k in range(n_refs)])
    inputs = AttackInputs(labels, logits(is_member), refs, keep, n_audit, 3)
    attack = RmiaOnline()
    centred_auc = metrics.auc(np.asarray(attack.score(inputs))[:n_audit], is_member[:n_audit])
    assert attack.params()["by_class"] is True
    flat_auc = metrics.auc(np.asarray(RmiaOnline(by_class=False).score(inputs))[:n_audit], is_member[:n_audit])
    assert centred_auc > 0.8 and centred_auc > flat_auc + 0.1


def test_equal_ratios_get_equal_scores_whatever_their_rows() -> None:
    # Audit rows come members first: breaking ties by position would rank tied members below tied
    # non-members (AUC 0 on a model whose outputs say nothing). Scores also stay below 1.
    log_ratio = np.r_[np.zeros(50), np.zeros(50), np.linspace(-1.0, 1.0, 40)]
    z_rows = np.arange(100, 140)
    scores = rmia_scores(log_ratio, z_rows, gamma=1.0)
    assert np.all(scores[:100] == scores[0])
    is_member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert metrics.auc(scores[:100], is_member) == 0.5
    assert np.all((scores >= 0) & (scores < 1))
    # Order among distinct ratios is kept.
    assert np.all(np.diff(scores[100:]) > 0)
