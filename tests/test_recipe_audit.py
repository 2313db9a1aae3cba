"""Recipe audits (the privacy game) on scikit-learn's digits, with ground truth: a pipeline that memorises
is caught at 0.1% FPR with a clustered interval, a pipeline that learns nothing about membership is at
chance, the run resumes from its cache, and the document is read by report, gate and history."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from membershield import metrics
from membershield.audit import run_recipe_audit
from membershield.cli import main
from membershield.config import AuditConfig
from membershield.errors import InputDataError
from membershield.result import check_document, from_document, load
from membershield.targets.registry import recipe_from
from membershield.targets.sklearn import SklearnRecipe

RESAMPLES = 400  # enough for the assertions below; the command line draws 1000


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The whole digits table as one pool, and a small MLP (no regularisation: it memorises) saved with
    joblib, whose clone every model of the game trains."""
    directory = tmp_path_factory.mktemp("recipe-pool")
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    frame.to_csv(directory / "pool.csv", index=False)
    estimator = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=0.0, max_iter=100, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(frame.drop(columns="digit").iloc[:100], frame["digit"].iloc[:100])
    joblib.dump(estimator, directory / "mlp.joblib")
    return {"data": directory / "pool.csv", "recipe": directory / "mlp.joblib"}


def _config(pool: dict[str, Path], tmp_path: Path, **changes) -> AuditConfig:
    values = dict(
        recipe=str(pool["recipe"]),
        data=str(pool["data"]),
        label_column="digit",
        models=16,
        attacks=["loss", "lira"],
        out=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
    )
    values.update(changes)
    return AuditConfig(**values)


class PermutedLabels:
    """The null pipeline: every model trains on the whole pool with its labels permuted by the model's own
    seed, a draw independent of which half the game assigned it, so nothing it learns says whether a
    record was in that half."""

    kind = "sklearn"

    def __init__(self, base: SklearnRecipe, features: pd.DataFrame, labels: np.ndarray) -> None:
        self.base, self.features, self.labels = base, features, labels

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int):
        permuted = np.random.default_rng(seed).permutation(self.labels)
        return self.base.fit(self.features, permuted, classes, seed)

    def identity(self) -> str:
        return "null-permuted-labels:" + self.base.identity()


@pytest.mark.slow
def test_leaky_pipeline_is_caught_at_one_in_a_thousand_with_clustered_intervals(pool, tmp_path) -> None:
    config = _config(pool, tmp_path)
    run = run_recipe_audit(config, reports=("html", "md"), resamples=RESAMPLES)
    result = run.result
    n = 1797
    assert result.mode == "recipe" and result.game["n_models"] == 16 and result.game["n_trials"] == 16 * n
    assert result.data["n_members"] + result.data["n_nonmembers"] == 16 * n
    assert abs(result.data["n_members"] - 8 * n) < 300  # every record IN for each model on a fair coin
    lira = result.attack("lira")
    rate = lira.rate_at(0.001)
    # 14,376 non-member trials resolve 0.1% (4,380 needed), where one model's 898 non-members cannot
    assert rate["measurable"] and rate["n_nonmembers"] == result.data["n_nonmembers"]
    assert rate["ci_low"] > 0.001, rate  # above chance, on the clustered interval
    assert rate["ci_low"] <= rate["tpr"] <= rate["ci_high"]
    assert lira.auc_ci_low > 0.5 and lira.advantage_ci_low > 0
    # the clustered AUC interval is wider than DeLong's on the same trials taken as independent
    scores, truth = run.scores["lira"].to_numpy(), run.scores["is_member"].to_numpy()
    naive = metrics.auc_with_ci(scores, truth)[1]
    assert lira.auc_ci_high - lira.auc_ci_low > naive.high - naive.low
    assert result.game["intervals"]["method"].startswith("two-way")

    exposure = result.game["exposure"]["by_attack"]["lira"]
    chance = [r["chance_p_value"] for r in exposure["records"]]
    assert exposure["always_exposed"] > 0 and chance == sorted(chance)  # least likely by chance first
    top = exposure["records"][0]
    assert top["n_exposed"] == top["n_member_models"] >= 2 and top["chance_p_value"] < 1e-6
    per_record = pd.read_csv(tmp_path / "out" / "exposure.csv")
    assert len(per_record) == n and (per_record["n_member_models"] + per_record["n_nonmember_models"] == 16).all()
    always = (per_record["lira_exposed"] == per_record["n_member_models"]) & (per_record["n_member_models"] >= 2)
    assert int(always.sum()) == exposure["always_exposed"]
    assert len(pd.read_csv(tmp_path / "out" / "scores.csv")) == 16 * n

    document = load(tmp_path / "out" / "audit.json")
    assert document.mode == "recipe" and document.game["n_records"] == n
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Recipe audit: the privacy game" in html and "exposure.csv" in html
    assert "member trials" in (tmp_path / "out" / "summary.md").read_text()

    rerun = run_recipe_audit(config, resamples=RESAMPLES)  # every model from the cache: nothing trains
    assert rerun.result.references["trained"] == 0 and rerun.result.references["loaded_from_cache"] == 16
    np.testing.assert_array_equal(rerun.scores["lira"].to_numpy(), scores)


@pytest.mark.slow
def test_null_pipeline_is_at_chance_with_intervals_that_contain_it(pool, tmp_path) -> None:
    frame = pd.read_csv(pool["data"])
    base = recipe_from(str(pool["recipe"]))
    null = PermutedLabels(base, frame.drop(columns="digit"), frame["digit"].to_numpy())
    config = _config(pool, tmp_path, attacks=["loss", "lira", "rmia"])
    result = run_recipe_audit(config, resamples=RESAMPLES, recipe=null).result
    assert result.target["recipe"].startswith("null-permuted-labels:")
    for attack in result.attacks:
        assert attack.auc_ci_low <= 0.5 <= attack.auc_ci_high, attack.name
        assert attack.advantage_ci_low <= 0 <= attack.advantage_ci_high, attack.name
        for rate in attack.tpr_at_fpr:
            assert rate["measurable"], (attack.name, rate)
            assert rate["ci_low"] <= rate["fpr"] <= rate["ci_high"], (attack.name, rate)
    assert result.headline().attack.name in {"loss", "lira", "rmia"}


def test_interrupted_recipe_audit_resumes_from_finished_models(pool, tmp_path, monkeypatch) -> None:
    config = _config(pool, tmp_path, models=6, attacks=["loss"])
    calls = {"n": 0}
    real = SklearnRecipe.fit

    def flaky_fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C while the fourth model trains
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SklearnRecipe, "fit", flaky_fit)
    with pytest.raises(KeyboardInterrupt):
        run_recipe_audit(config, resamples=50)
    monkeypatch.setattr(SklearnRecipe, "fit", real)
    resumed = run_recipe_audit(config, resamples=50).result.references
    assert resumed["loaded_from_cache"] == 3 and resumed["trained"] == 3


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["membershield", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_command_line_audit_then_report_gate_and_history(pool, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    args = ["--recipe", str(pool["recipe"]), "--data", str(pool["data"]), "--label-column", "digit"]
    args += ["--models", "4", "--attacks", "loss,lira", "--out", str(out), "--cache", str(tmp_path / "cache")]
    code, printed, err = _cli(monkeypatch, capsys, "audit", *args)
    assert code == 0, err
    assert "Recipe audit: 4 models × 1797 records = 7188 trials" in printed
    assert "exposed by every model that trained on them" in printed and "recorded as audit #" in printed
    assert json.loads((out / "audit.json").read_text())["mode"] == "recipe"
    code, printed, err = _cli(monkeypatch, capsys, "report", str(out / "audit.json"), "--format", "md")
    assert code == 0 and "Recipe audit" in printed, err
    policy = tmp_path / "policy.toml"
    policy.write_text('[gate]\nmax_tpr_at_fpr = { "0.01" = 0.9 }\n')
    code, printed, err = _cli(monkeypatch, capsys, "gate", str(out / "audit.json"), "--policy", str(policy))
    assert code == 0, printed + err
    code, printed, err = _cli(monkeypatch, capsys, "audit", *args, "--plan")
    assert code == 0 and "4 models needed, all 4 cached" in printed, printed + err
    # a larger game begins with the same models: only the new ones train
    code, printed, err = _cli(monkeypatch, capsys, "audit", *args, "--models", "6", "--plan")
    assert code == 0 and "6 models needed: 4 cached" in printed, printed + err


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--model", "x.joblib"], ["recipe audit", "drop --model"]),
        (["--population", "pool.csv"], ["--population does not apply"]),
        (["--models", "2", "--attacks", "lira"], ["needs 2 reference models", "raise --models"]),
        (["--models", "1"], ["models must be 2 or more"]),
    ],
)
def test_bad_recipe_audit_input_is_one_line_exit_two(pool, tmp_path, monkeypatch, capsys, extra, needles) -> None:
    args = ["audit", "--recipe", str(pool["recipe"]), "--data", str(pool["data"]), "--label-column", "digit"]
    code, _, err = _cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "o"), *extra)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_recipe_file_is_named(pool, tmp_path, monkeypatch, capsys) -> None:
    args = ["audit", "--recipe", str(tmp_path / "nope.joblib"), "--data", str(pool["data"]), "--label-column", "digit"]
    code, _, err = _cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "o"))
    assert code == 2 and "nope.joblib" in err and len(err.strip().splitlines()) == 1, err


def test_mode_is_validated_and_defaults_to_model() -> None:
    document = {
        "schema_version": "1.0",
        **{name: {} for name in ("target", "utility", "references", "config", "timings")},
        "data": {"n_members": 1, "n_nonmembers": 1},
        "split_check": None,
        "attacks": [
            {
                "name": "loss",
                **{k: None for k in ("title", "citation", "access", "auc", "auc_ci_low", "auc_ci_high")},
                **{k: None for k in ("advantage", "epsilon_lower_bound", "epsilon_detail", "ppv")},
                "tpr_at_fpr": [],
                "slices": [],
                "top_exposed": [],
                "params": {},
                "seconds": 0.0,
            }
        ],
    }
    assert from_document(document).mode == "model"  # written before modes existed
    with pytest.raises(InputDataError, match="'mode' must be one of model, recipe"):
        check_document(document | {"mode": "game"})
    with pytest.raises(InputDataError, match="must have a 'game' object"):
        check_document(document | {"mode": "recipe"})
    check_document(document | {"mode": "recipe", "game": {"n_models": 2}})


def test_clustered_point_estimates_are_the_pooled_trials() -> None:
    rng = np.random.default_rng(3)
    n_records, n_models = 400, 12
    record, model = np.tile(np.arange(n_records), n_models), np.repeat(np.arange(n_models), n_records)
    member = rng.random(record.size) < 0.5
    scores = rng.normal(size=record.size) + 0.8 * member + rng.normal(size=n_records)[record]
    boot = metrics.TwoWayBootstrap.draw(n_records, n_models, 200, seed=0)
    pooled = metrics.clustered_roc(scores, member, record, model, [0.001, 0.01, 0.1], boot)
    assert pooled.auc == pytest.approx(metrics.auc(scores, member))
    for rate in pooled.rates:
        plain = metrics.tpr_at_fpr(scores, member, rate.fpr)
        assert (rate.measurable, rate.tpr, rate.tp, rate.fp) == (plain.measurable, plain.tpr, plain.tp, plain.fp)
        if rate.measurable:
            assert rate.ci_low <= rate.tpr <= rate.ci_high
    # the same resamples give the same intervals
    again = metrics.clustered_roc(scores, member, record, model, [0.01], metrics.TwoWayBootstrap.draw(400, 12, 200))
    assert again.rates[0].ci_low == pooled.rates[1].ci_low


def test_record_exposure_counts_each_models_own_threshold() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(6, 300))
    keep = rng.random((6, 300)) < 0.5
    exposure = metrics.record_exposure(scores, keep, fpr=0.05)
    for k in range(6):
        nonmember = np.sort(scores[k, ~keep[k]])[::-1]
        flagged = scores[k] > nonmember[int(np.floor(0.05 * nonmember.size))]
        assert int((flagged & ~keep[k]).sum()) <= 0.05 * nonmember.size
    expected = sum(
        (scores[k] > np.sort(scores[k, ~keep[k]])[::-1][int(0.05 * (~keep[k]).sum())]) & keep[k] for k in range(6)
    )
    np.testing.assert_array_equal(exposure.n_exposed, expected)
    np.testing.assert_array_equal(exposure.n_member_models, keep.sum(axis=0))
