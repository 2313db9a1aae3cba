"""MemGuard (Jia et al. 2019) keeps every label, spends at most its budget in expectation, and hides an
overfit model's confidence signal from threshold attacks, while label-only attacks still see what they
saw without it; ``compare`` gives the same numbers on the processes backend as in-process."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import softmax
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from membershield.defenses import HardenedTarget, OutputPolicy
from membershield.defenses.compare import CompareOptions, run_compare
from membershield.defenses.memguard import DefenseClassifier, MemGuard, MemGuardSettings, fit_memguard
from membershield.defenses.registry import parse_defense
from membershield.errors import ConfigError
from membershield.targets import load_model
from tests.test_defenses import SMALL_RECIPE


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Small models: threads buy nothing and stall every step when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def overfit(digits_audit):
    """The conftest's memorising model, its records, and a MemGuard the defender fits on half of each group."""
    target = load_model(str(digits_audit.overfit_model)).target
    members = pd.read_csv(digits_audit.members)
    nonmembers = pd.read_csv(digits_audit.nonmembers)
    known, unseen = slice(0, 300), slice(300, 600)
    guard = fit_memguard(
        target.logits(members.drop(columns="digit")[known]),
        target.logits(nonmembers.drop(columns="digit")[known]),
        MemGuardSettings(budget=0.5),
    )
    # The audit records: members and non-members the defense classifier never saw.
    records = pd.concat([members[unseen], nonmembers[unseen]], ignore_index=True)
    is_member = np.arange(len(records)) < 300
    return target, guard, records, is_member


def _loss_auc(log_proba: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> float:
    """The LOSS attack (Yeom et al. 2018): lower loss, more likely a member."""
    return roc_auc_score(is_member, log_proba[np.arange(len(labels)), labels])


def _label_auc(log_proba: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> float:
    """The gap attack: a correctly predicted record is called a member."""
    return roc_auc_score(is_member, log_proba.argmax(axis=1) == labels)


def _distinct_top(logits: np.ndarray) -> np.ndarray:
    ordered = np.sort(logits, axis=1)
    return ordered[:, -1] - ordered[:, -2] > 1e-6


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(2, 10)), elements=st.floats(-30, 30)))
def test_labels_never_change_and_expected_distortion_stays_within_budget(overfit, logits) -> None:
    _, guard, _, _ = overfit
    logits = logits[_distinct_top(logits)]
    answer = guard.perturb(logits)
    np.testing.assert_array_equal(answer.proba.argmax(axis=1), logits.argmax(axis=1))
    assert np.all(answer.proba >= 0)
    np.testing.assert_allclose(answer.proba.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(answer.probability * answer.distortion <= guard.settings.budget + 1e-12)
    expected = np.where(answer.applied[:, None], answer.noisy, softmax(logits, axis=1))
    np.testing.assert_allclose(answer.proba, expected)


def test_noise_moves_the_defense_classifier_to_one_half_and_phase_two_meets_the_budget(overfit) -> None:
    target, guard, records, _ = overfit
    logits = target.logits(records.drop(columns="digit"))
    tight = MemGuard(guard.classifier, MemGuardSettings(budget=0.01), guard.seed).perturb(logits)
    loose = MemGuard(guard.classifier, MemGuardSettings(budget=2.0), guard.seed).perturb(logits)
    # Phase I: every noisy answer sits where the defense classifier says 0.5.
    np.testing.assert_allclose(loose.member_after, 0.5, atol=1e-6)
    assert np.abs(loose.member_before - 0.5).mean() > 0.05
    assert loose.applied.mean() > 0.99  # noise that moves a probability vector by more than 2 does not exist
    # Phase II: a tight budget withholds most noise, and the distortion spent on average stays within it.
    assert (tight.probability < 1).mean() > 0.2 and tight.applied.mean() < loose.applied.mean() - 0.1
    assert np.all(tight.probability * tight.distortion <= 0.01 + 1e-12)
    assert (tight.applied * tight.distortion).mean() <= 0.01
    # The same query gets the same answer: repeating it reveals nothing more.
    np.testing.assert_array_equal(guard.perturb(logits).proba, guard.perturb(logits).proba)


def test_the_label_is_kept_when_the_classifier_wants_more_than_the_hinge_allows() -> None:
    # g reads 0.5 only where the top class has probability 0.3: with two classes, unreachable without
    # changing the label.
    classifier = DefenseClassifier(0.0, 1.0)
    with torch.no_grad():
        classifier.linear.weight.fill_(1.0)
        classifier.linear.bias.fill_(-float(np.log(0.7)))
    classifier.requires_grad_(False)
    logits = np.array([[4.0, 0.0], [0.0, 2.5], [1.0, 0.9]])
    answer = MemGuard(classifier, MemGuardSettings(budget=2.0)).perturb(logits)
    np.testing.assert_array_equal(answer.proba.argmax(axis=1), [0, 1, 0])
    before = softmax(logits, axis=1).max(axis=1)
    after = answer.proba.max(axis=1)
    assert np.all(after < before) and np.all(after > 0.5)


def test_memguard_hides_the_confidence_signal_but_not_the_labels(overfit) -> None:
    target, guard, records, is_member = overfit
    features, labels = records.drop(columns="digit"), records["digit"].to_numpy()
    plain = target.logits(features)
    defended = HardenedTarget(target, OutputPolicy(), memguard=guard).logits(features)
    before, after = _loss_auc(plain, labels, is_member), _loss_auc(defended, labels, is_member)
    gap = _label_auc(plain, labels, is_member)
    assert before > gap + 0.05  # the confidences leak more than the labels do ...
    assert after < before - 0.05  # ... MemGuard removes most of that ...
    assert after == pytest.approx(gap, abs=0.03)  # ... down to what the labels alone give away
    np.testing.assert_array_equal(defended.argmax(axis=1), plain.argmax(axis=1))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("memguard:budget=0", "budget must be in (0, 2]"),
        ("memguard:3", "budget must be in (0, 2]"),
        ("memguard:budget=abc", "budget must be a number"),
        ("memguard:steps=3", "no parameter 'steps'"),
    ],
)
def test_bad_memguard_specs_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_defense(text)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_memguard_spec_defaults_and_settings_checks() -> None:
    assert parse_defense("memguard").label() == "memguard:budget=0.5"
    assert parse_defense("memguard:0.2").memguard == MemGuardSettings(budget=0.2)
    with pytest.raises(ConfigError, match="budget must be in"):
        MemGuardSettings(budget=-1.0)


# --------------------------------------------------------------------------------------------------
# compare: MemGuard against adaptive references, and the same numbers on the processes backend


@pytest.fixture(scope="module")
def compare_inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("memguard_compare")
    # More epochs than the other tests' recipe: a model that memorises, so there is a signal to hide.
    (directory / "small_mlp.py").write_text(SMALL_RECIPE.replace("epochs=20", "epochs=60"))
    digits = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    digits.sample(500, random_state=0).to_csv(directory / "pool.csv", index=False)
    return directory


def _options(directory, out: str, **changes) -> CompareOptions:
    values = dict(
        recipe=f"{directory / 'small_mlp.py'}:recipe",
        data=str(directory / "pool.csv"),
        label_column="digit",
        defenses="none,memguard:budget=0.5",
        attacks=["loss", "lira"],
        references=2,
        out=str(directory / out),
        reports=False,
    )
    values.update(changes)
    return CompareOptions(**values)


@pytest.fixture(scope="module")
def local_compare(compare_inputs) -> dict:
    run = run_compare(_options(compare_inputs, "local"))
    return json.loads((run.out / "compare.json").read_text())


def _variant(doc: dict, name: str) -> dict:
    return next(v for v in doc["variants"] if v["name"] == name)


def _auc(variant: dict, attack: str) -> float:
    return next(a["auc"] for a in variant["attacks"] if a["name"] == attack)


def test_compare_reports_memguard_as_output_only_and_label_only_attacks_unchanged(local_compare) -> None:
    none, guarded = _variant(local_compare, "none"), _variant(local_compare, "memguard:budget=0.5")
    assert guarded["defense"]["kind"] == "output"
    assert guarded["defense_report"]["name"] == "memguard"
    assert guarded["defense_report"]["memguard"]["shadow_members"] > 0
    for attack in ("loss", "confidence"):
        assert _auc(guarded, attack) < _auc(none, attack) - 0.03, attack
    # Same model, same labels: the label-only attacks see exactly the undefended model.
    for attack in ("label-only-gap", "label-only-noise"):
        assert _auc(guarded, attack) == _auc(none, attack), attack
    assert guarded["holdout_accuracy"] == none["holdout_accuracy"]
    assert guarded["counts_as_protection"] is False
    assert "NOT protection" in guarded["verdict"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_compare_on_a_parallel_backend_gives_the_local_numbers(compare_inputs, local_compare, backend) -> None:
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed, but CI must exercise the ray backend (pip install '.[ray]')")
        pytest.skip("Ray is not installed (pip install 'membershield[ray]')")
    try:
        run = run_compare(_options(compare_inputs, backend, backend=backend, n_jobs=2))
    finally:
        if backend == "ray":
            import ray

            ray.shutdown()
    parallel = json.loads((run.out / "compare.json").read_text())
    assert [v["name"] for v in parallel["variants"]] == [v["name"] for v in local_compare["variants"]]
    for mine, theirs in zip(parallel["variants"], local_compare["variants"], strict=True):
        assert mine["holdout_accuracy"] == theirs["holdout_accuracy"]
        assert mine["defense_report"]["name"] == theirs["defense_report"]["name"]  # recorded in this process
        for attack in theirs["attacks"]:
            # Worker processes may round PyTorch's kernels differently (see test_backends), so not bit for bit.
            assert _auc(mine, attack["name"]) == pytest.approx(attack["auc"], abs=2e-3), (mine["name"], attack)
    audit = json.loads((run.out / "memguard-budget-0.5" / "audit.json").read_text())
    assert audit["references"]["backend"] == backend


def test_compare_refuses_an_unknown_backend_before_writing(compare_inputs) -> None:
    with pytest.raises(ConfigError, match="unknown backend 'spark'"):
        run_compare(_options(compare_inputs, "spark", backend="spark"))
    assert not (compare_inputs / "spark").exists()
