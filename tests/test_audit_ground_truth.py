"""Attacks against known ground truth on real data: an overfit model leaks, an unseen one does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from membershield.attacks import DEFAULT_ATTACKS
from membershield.audit import AuditRun, run_audit
from membershield.config import AuditConfig


def _config(digits_audit, model, out, **overrides) -> AuditConfig:
    values = dict(
        model=str(model),
        train=str(digits_audit.members),
        holdout=str(digits_audit.nonmembers),
        label_column="digit",
        population=str(digits_audit.population),
        attacks=list(DEFAULT_ATTACKS),
        references=8,
        out=str(out),
        cache=str(out.parent / "cache"),
        seed=0,
    )
    values.update(overrides)
    return AuditConfig(**values)


@pytest.fixture(scope="module")
def overfit_run(digits_audit, tmp_path_factory) -> AuditRun:
    out = tmp_path_factory.mktemp("overfit") / "out"
    return run_audit(_config(digits_audit, digits_audit.overfit_model, out))


@pytest.fixture(scope="module")
def unseen_run(digits_audit, tmp_path_factory) -> AuditRun:
    out = tmp_path_factory.mktemp("unseen") / "out"
    return run_audit(_config(digits_audit, digits_audit.unseen_model, out))


def _rate(attack, fpr):
    return next(r for r in attack.tpr_at_fpr if r["fpr"] == fpr)


def test_overfit_model_leaks_under_strong_attacks(overfit_run: AuditRun) -> None:
    result = overfit_run.result
    assert result.utility["train_accuracy"] == 1.0
    loss = result.attack("loss")
    for name in ("lira", "rmia"):
        attack = result.attack(name)
        at_1 = _rate(attack, 0.01)
        assert at_1["measurable"]
        # A model that leaks nothing has TPR = FPR at every FPR: the whole 95% interval (which accounts for
        # the threshold being chosen on these non-members) sits above 1%, and the estimate is 5 times it.
        assert at_1["ci_low"] > 0.01 and at_1["tpr"] > 0.05, (name, at_1)
        at_10 = _rate(attack, 0.1)
        assert at_10["ci_low"] > 0.1 and at_10["tpr"] > 0.2, (name, at_10)
        assert attack.auc >= loss.auc_ci_low, (name, attack.auc, loss.auc_ci_low)
        assert attack.auc_ci_low > 0.5


def test_every_attack_detects_the_overfit_model(overfit_run: AuditRun) -> None:
    for attack in overfit_run.result.attacks:
        assert attack.auc_ci_low > 0.5, attack.name


def test_model_that_never_saw_the_members_scores_at_chance(unseen_run: AuditRun) -> None:
    for attack in unseen_run.result.attacks:
        assert attack.auc_ci_low <= 0.5 <= attack.auc_ci_high, (attack.name, attack.auc)


def test_loss_auc_equals_sklearn_on_independent_losses(digits_audit, overfit_run: AuditRun) -> None:
    import joblib

    model = joblib.load(digits_audit.overfit_model)
    frames = [pd.read_csv(digits_audit.members), pd.read_csv(digits_audit.nonmembers)]
    table = pd.concat(frames, ignore_index=True)
    proba = model.predict_proba(table.drop(columns="digit"))
    column = np.searchsorted(model.classes_, table["digit"].to_numpy())
    losses = -np.log(np.clip(proba[np.arange(len(table)), column], 1e-30, 1.0))
    truth = np.r_[np.ones(len(frames[0]), bool), np.zeros(len(frames[1]), bool)]
    assert overfit_run.result.attack("loss").auc == pytest.approx(roc_auc_score(truth, -losses), abs=1e-9)


def test_low_fpr_unresolvable_with_600_nonmembers_is_not_measurable(overfit_run: AuditRun) -> None:
    for attack in overfit_run.result.attacks:
        rate = _rate(attack, 0.001)
        assert rate["measurable"] is False and rate["tpr"] is None
        assert rate["n_nonmembers"] == 600


def test_outputs_follow_the_documented_schema(overfit_run: AuditRun, tmp_path_factory) -> None:
    import json

    document = json.loads((__import__("pathlib").Path(overfit_run.result.config["out"]) / "audit.json").read_text())
    assert document["schema_version"] == "1.0"
    assert len(document["target"]["sha256"]) == 64
    assert document["data"]["n_members"] == 600 and document["data"]["n_nonmembers"] == 600
    assert set(document["data"]["fingerprints"]) == {"members", "nonmembers", "population"}
    assert {"train_accuracy", "holdout_accuracy"} <= set(document["utility"])
    assert {"blind_auc", "ci_low", "ci_high", "ok"} <= set(document["split_check"])
    for attack in document["attacks"]:
        assert {"name", "auc", "advantage", "epsilon_lower_bound", "tpr_at_fpr", "slices", "top_exposed"} <= set(attack)
        for rate in attack["tpr_at_fpr"]:
            assert {"fpr", "tpr", "ci_low", "ci_high", "n_nonmembers", "measurable"} <= set(rate)
        classes = [s for s in attack["slices"] if s["by"] == "class"]
        assert len(classes) == 10
        assert attack["top_exposed"][0]["source"] in {"members", "nonmembers"}
    scores = pd.read_csv(__import__("pathlib").Path(overfit_run.result.config["out"]) / "scores.csv")
    assert len(scores) == 1200
    assert {"index", "is_member", *DEFAULT_ATTACKS} <= set(scores.columns)


def test_slice_column_reports_each_value(digits_audit, tmp_path) -> None:
    paths = {}
    for name, source in (("m", digits_audit.members), ("n", digits_audit.nonmembers)):
        table = pd.read_csv(source)
        table["site"] = np.where(np.arange(len(table)) % 3 == 0, "north", "south")
        paths[name] = tmp_path / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    # The model was fitted on named columns, so the extra column is simply not one of its features.
    config = _config(
        digits_audit,
        digits_audit.overfit_model,
        tmp_path / "out",
        train=str(paths["m"]),
        holdout=str(paths["n"]),
        slice_column="site",
        attacks=["loss"],
        population=None,
        split_check=False,
    )
    result = run_audit(config).result
    sites = [s for s in result.attack("loss").slices if s["by"] == "site"]
    assert [s["slice"] for s in sites] == ["north", "south"]
    assert sum(s["n_members"] for s in sites) == 600


def test_shifted_split_is_flagged_in_the_result(digits_audit, tmp_path) -> None:
    table = pd.concat([pd.read_csv(digits_audit.members), pd.read_csv(digits_audit.nonmembers)], ignore_index=True)
    ink = table.drop(columns="digit").sum(axis=1)
    order = np.argsort(ink.to_numpy())
    table.iloc[order[600:]].to_csv(tmp_path / "bold.csv", index=False)
    table.iloc[order[:600]].to_csv(tmp_path / "thin.csv", index=False)
    config = _config(
        digits_audit,
        digits_audit.overfit_model,
        tmp_path / "out",
        train=str(tmp_path / "bold.csv"),
        holdout=str(tmp_path / "thin.csv"),
        attacks=["loss"],
        population=None,
    )
    result = run_audit(config).result
    assert result.split_check["ok"] is False
    assert any("SPLIT CHECK FAILED" in w for w in result.warnings)
