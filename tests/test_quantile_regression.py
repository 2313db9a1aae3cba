"""The quantile-regression attack (Bertran et al. 2023) on real data: it detects an overfit model beyond
what a global loss threshold does, a model that never saw the members scores at chance, and its
regressor never scores a record whose own score it was fitted on."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from membershield.attacks import AttackInputs, create_attack
from membershield.attacks.quantile_regression import QuantileRegressionAttack
from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.errors import ConfigError
from membershield.result import AttackResult
from membershield.signals import scaled_logit


@pytest.fixture(scope="module")
def forests(digits_audit, tmp_path_factory) -> dict[str, str]:
    """Deep random forests (fully grown trees): one fitted on the members, one on the population only."""
    directory = tmp_path_factory.mktemp("forests")
    paths = {}
    for name, source in (("overfit", digits_audit.members), ("unseen", digits_audit.population)):
        table = pd.read_csv(source)
        forest = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
        forest.fit(table.drop(columns="digit"), table["digit"])
        paths[name] = str(directory / f"{name}.joblib")
        joblib.dump(forest, paths[name])
    return paths


def _audit(digits_audit, model: str, out, population: bool) -> dict[str, AttackResult]:
    config = AuditConfig(
        model=model,
        train=str(digits_audit.members),
        holdout=str(digits_audit.nonmembers),
        label_column="digit",
        population=str(digits_audit.population) if population else None,
        attacks=["loss", "quantile-regression"],
        references=0,
        out=str(out / "out"),
        cache=str(out / "cache"),
        split_check=False,
        seed=0,
    )
    result = run_audit(config).result
    return {name: result.attack(name) for name in ("loss", "quantile-regression")}


@pytest.mark.parametrize("population", [True, False], ids=["population", "cross-fitted"])
def test_overfit_forest_leaks_beyond_the_loss_threshold(digits_audit, forests, tmp_path, population) -> None:
    attacks = _audit(digits_audit, forests["overfit"], tmp_path, population)
    quantile, loss = attacks["quantile-regression"], attacks["loss"]
    assert quantile.auc_ci_low > 0.5
    # A forest is sure of its training records and of many easy non-members alike: a global threshold
    # cannot tell them apart, a threshold learnt per record from its features can.
    assert quantile.auc > loss.auc
    at_1, loss_at_1 = quantile.rate_at(0.01), loss.rate_at(0.01)
    assert at_1 is not None and loss_at_1 is not None
    # 600 non-members put only 6 above a 1% threshold: the interval is wide, the estimate is compared
    assert at_1["tpr"] > loss_at_1["tpr"], (at_1, loss_at_1)
    at_10, loss_at_10 = quantile.rate_at(0.1), loss.rate_at(0.1)
    assert at_10 is not None and loss_at_10 is not None
    assert at_10["ci_low"] > 0.1 and at_10["tpr"] > loss_at_10["tpr"], (at_10, loss_at_10)
    assert quantile.params["fitted_on"].startswith("597 population" if population else "all 1200 rows")


@pytest.mark.parametrize("population", [True, False], ids=["population", "cross-fitted"])
def test_model_that_never_saw_the_members_scores_at_chance(digits_audit, forests, tmp_path, population) -> None:
    # Without a population the regressor is fitted on the audit rows themselves, all of them non-members
    # of this target; cross-fitting keeps every row's own score out of the fit that predicts it.
    quantile = _audit(digits_audit, forests["unseen"], tmp_path, population)["quantile-regression"]
    assert quantile.auc_ci_low <= 0.5 <= quantile.auc_ci_high, quantile.auc
    at_1 = quantile.rate_at(0.01)
    assert at_1 is not None and at_1["ci_low"] <= 0.01, at_1


def _small_inputs(n_audit: int, n_population: int, seed: int = 0) -> AttackInputs:
    rng = np.random.default_rng(seed)
    n = n_audit + n_population
    features = rng.normal(size=(n, 3))
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += 2 * features[:, 0]
    return AttackInputs(labels, logits, np.zeros((0, n, 3)), np.zeros((0, n), bool), n_audit, seed, None, features)


def _with_logit_raised(inputs: AttackInputs, row: int, by: float) -> AttackInputs:
    logits = inputs.target_logits.copy()
    logits[row, inputs.labels[row]] += by
    return AttackInputs(
        inputs.labels,
        logits,
        inputs.reference_logits,
        inputs.reference_in,
        inputs.n_audit,
        inputs.seed,
        None,
        inputs.features,
    )


@pytest.mark.parametrize(
    ("n_population", "row"), [(0, 5), (150, 5), (150, 160)], ids=["audit", "audit-with-population", "population"]
)
def test_a_record_own_score_never_moves_its_predicted_quantile(n_population, row) -> None:
    # If the regressor predicting a row had seen that row's score, raising the score would raise the
    # prediction too; under cross-fitting the record's membership score moves by exactly its own change.
    inputs = _small_inputs(100, n_population)
    attack = QuantileRegressionAttack(max_iter=20)
    before = attack.score(inputs)
    moved = _with_logit_raised(inputs, row, 3.0)
    after = attack.score(moved)
    change = scaled_logit(moved.target_logits, moved.labels) - scaled_logit(inputs.target_logits, inputs.labels)
    assert after[row] - before[row] == pytest.approx(change[row], abs=1e-9)
    if row < inputs.n_audit and n_population:
        # fitted on the population alone: an audit record's score moves nothing else
        np.testing.assert_array_equal(np.delete(after, row), np.delete(before, row))


def test_refuses_without_features_and_names_the_fix() -> None:
    inputs = _small_inputs(40, 0)
    bare = AttackInputs(inputs.labels, inputs.target_logits, inputs.reference_logits, inputs.reference_in, 40)
    with pytest.raises(ConfigError, match=r"learns from the records' features.*--train/--holdout"):
        create_attack("quantile-regression").score(bare)
    with pytest.raises(ConfigError, match="quantile must lie in"):
        QuantileRegressionAttack(quantile=1.0).score(inputs)


def test_a_population_holding_the_nonmembers_never_predicts_a_record_from_its_copy() -> None:
    # The population is a copy of audit rows 50-99 (the same records, hence the same features and
    # outputs). Raising one such record's score, in both places, must move its membership score by exactly
    # that change: no regressor that predicts the record was fitted on its copy.
    inputs = _small_inputs(100, 150)
    copied = np.r_[np.arange(50, 100), np.arange(100, 200)]  # population rows 100-149 copy audit rows 50-99
    features, labels, logits = inputs.features.copy(), inputs.labels.copy(), inputs.target_logits.copy()
    features[100:250], labels[100:250], logits[100:250] = features[copied], labels[copied], logits[copied]
    base = AttackInputs(labels, logits, inputs.reference_logits, inputs.reference_in, 100, 0, None, features)
    attack = QuantileRegressionAttack(max_iter=20)
    before = attack.score(base)
    assert (
        attack.params()["fitted_on"] == "150 population rows; 50 audit rows with a copy among them cross-fitted with it"
    )
    raised = logits.copy()
    raised[[60, 110], labels[60]] += 3.0  # audit row 60 and its copy, population row 110
    moved = AttackInputs(labels, raised, inputs.reference_logits, inputs.reference_in, 100, 0, None, features)
    after = attack.score(moved)
    change = scaled_logit(raised, labels) - scaled_logit(logits, labels)
    assert after[60] - before[60] == pytest.approx(change[60], abs=1e-9)


def test_the_nonmembers_as_population_neither_inflate_nor_invent_a_leak(digits_audit, forests, tmp_path) -> None:
    # --population nonmembers.csv: the regressor is fitted on the very records it scores as non-members.
    def audit(model: str) -> AttackResult:
        config = AuditConfig(
            model=model,
            train=str(digits_audit.members),
            holdout=str(digits_audit.nonmembers),
            label_column="digit",
            population=str(digits_audit.nonmembers),
            attacks=["quantile-regression"],
            references=0,
            out=str(tmp_path / "out"),
            cache="",
            split_check=False,
        )
        return run_audit(config).result.attack("quantile-regression")

    unseen = audit(forests["unseen"])
    assert unseen.auc_ci_low <= 0.5 <= unseen.auc_ci_high, unseen.auc
    assert unseen.rate_at(0.01)["ci_low"] <= 0.01
    # Measured: 0.890 (0.871-0.908), as with a disjoint population (0.892); fitted on the non-members' own
    # scores, the regressor predicted them back and put the AUC at 0.930.
    overfit = audit(forests["overfit"])
    assert overfit.auc_ci_low > 0.5 and overfit.auc < 0.915, overfit.auc
    assert overfit.params["fitted_on"].endswith("600 audit rows with a copy among them cross-fitted with it")
