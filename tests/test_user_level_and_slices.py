"""User-level audits, the rare-record slice and the worst slice, on tables built here with a known truth.

- Users: 600 data subjects with 1-10 records each that share a user effect; the model is trained on the
  records of half of them. Pooling a user's records must tell member users from non-member users better
  than one record tells members from non-members.
- Rarity: common records (8 postcodes, labels the model can learn) and unique records (a postcode of
  their own, random labels the model can only memorise). The rare slice must leak far more.
- Worst slice: in audit.json, the terminal summary, summary.md and report.html, and as a gate limit that
  fails the memorising model, passes a model that never saw the members, and never lets a slice too
  small to measure pass in silence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from membershield.audit import REPORTS, AuditRun, run_audit
from membershield.cli.audit import print_summary
from membershield.config import AuditConfig
from membershield.data.rarity import find_rare_records
from membershield.errors import InputDataError
from membershield.gate import evaluate, load_audit, parse_policy
from membershield.metrics import nonmembers_needed
from membershield.report import render_report
from membershield.result import from_document, load
from tests.test_cli import assert_one_line_error, run_cli

WORST_KEY = {"max_worst_slice_tpr_at_fpr": {"0.01": 0.05}}


# --------------------------------------------------------------------------------------------------
# Data


def users_table(n_users: int = 600, seed: int = 0) -> pd.DataFrame:
    """Records of ``n_users`` users, 1-10 each: features near the user's own centre, labels partly set by
    a user effect, so a model that fits a user's records learns something about that user."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        centre, effect = rng.normal(size=6), rng.normal()
        for _ in range(int(rng.integers(1, 11))):
            x = centre + 0.6 * rng.normal(size=6)
            label = int(x[:3].sum() + 1.5 * effect + 0.5 * rng.normal() > 0)
            rows.append({"person": f"p{user:04d}", **{f"x{i}": x[i] for i in range(6)}, "y": label})
    return pd.DataFrame(rows)


CENTRES = np.random.default_rng(99).normal(size=(8, 4)) * 3


def rarity_table(rng: np.random.Generator, n_common: int, n_rare: int, tag: str) -> pd.DataFrame:
    """Common records share 8 postcodes whose label they carry; each rare record has a postcode of its own,
    an outlying position and a random label."""
    zone = rng.integers(0, 8, size=n_common)
    x = np.r_[CENTRES[zone] + 0.7 * rng.normal(size=(n_common, 4)), 3 * rng.normal(size=(n_rare, 4))]
    labels = np.r_[zone % 2, rng.integers(0, 2, size=n_rare)]
    postcodes = [f"Z{z}" for z in zone] + [f"R{tag}{i:05d}" for i in range(n_rare)]
    return pd.DataFrame({"postcode": postcodes, **{f"x{i}": x[:, i] for i in range(4)}, "y": labels})


def postcode_model():
    # The postcode's one-hot column lets the model memorise each unique record's random label.
    encode = ColumnTransformer(
        [("postcode", OneHotEncoder(handle_unknown="ignore"), ["postcode"])], remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(C=10.0, max_iter=5000))


@dataclass(frozen=True)
class Files:
    directory: Path
    members: Path
    nonmembers: Path
    model: Path
    unseen_model: Path | None = None


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> Files:
    directory = tmp_path_factory.mktemp("users")
    table = users_table()
    member_users = {f"p{u:04d}" for u in range(0, 600, 2)}
    members = table[table["person"].isin(member_users)].reset_index(drop=True)
    nonmembers = table[~table["person"].isin(member_users)].reset_index(drop=True)
    members.to_csv(directory / "members.csv", index=False)
    nonmembers.to_csv(directory / "nonmembers.csv", index=False)
    model = RandomForestClassifier(n_estimators=50, min_samples_leaf=3, random_state=0)
    joblib.dump(model.fit(members.drop(columns=["person", "y"]), members["y"]), directory / "forest.joblib")
    return Files(directory, directory / "members.csv", directory / "nonmembers.csv", directory / "forest.joblib")


@pytest.fixture(scope="module")
def user_run(user_files) -> AuditRun:
    config = AuditConfig(
        model=str(user_files.model),
        train=str(user_files.members),
        holdout=str(user_files.nonmembers),
        label_column="y",
        user_column="person",
        attacks=["loss", "lira"],
        references=4,
        out=str(user_files.directory / "out"),
        cache=str(user_files.directory / "cache"),
    )
    return run_audit(config)


@pytest.fixture(scope="module")
def rarity_files(tmp_path_factory) -> Files:
    directory = tmp_path_factory.mktemp("rarity")
    rng = np.random.default_rng(0)
    members, nonmembers, elsewhere = (rarity_table(rng, 1000, 500, tag) for tag in ("m", "n", "o"))
    members.to_csv(directory / "members.csv", index=False)
    nonmembers.to_csv(directory / "nonmembers.csv", index=False)
    joblib.dump(postcode_model().fit(members.drop(columns="y"), members["y"]), directory / "memorising.joblib")
    joblib.dump(postcode_model().fit(elsewhere.drop(columns="y"), elsewhere["y"]), directory / "unseen.joblib")
    return Files(
        directory,
        directory / "members.csv",
        directory / "nonmembers.csv",
        directory / "memorising.joblib",
        directory / "unseen.joblib",
    )


def rarity_config(files: Files, model: Path, out: str) -> AuditConfig:
    return AuditConfig(
        model=str(model),
        train=str(files.members),
        holdout=str(files.nonmembers),
        label_column="y",
        quasi_identifiers=["postcode"],
        attacks=["loss", "confidence"],
        out=str(files.directory / out),
        cache=str(files.directory / "cache"),
        split_check=False,
    )


@pytest.fixture(scope="module")
def leaky_run(rarity_files) -> AuditRun:
    return run_audit(rarity_config(rarity_files, rarity_files.model, "leaky"), reports=REPORTS)


@pytest.fixture(scope="module")
def unseen_run(rarity_files) -> AuditRun:
    assert rarity_files.unseen_model is not None
    return run_audit(rarity_config(rarity_files, rarity_files.unseen_model, "unseen"))


def _json(run: AuditRun) -> Path:
    return Path(run.result.config["out"]) / "audit.json"


# --------------------------------------------------------------------------------------------------
# (a) user-level


def test_a_users_records_together_separate_members_better_than_one_record(user_run: AuditRun) -> None:
    result = user_run.result
    user_level = result.user_level
    assert user_level is not None and user_level["column"] == "person"
    assert (user_level["n_member_users"], user_level["n_nonmember_users"]) == (300, 300)
    assert user_level["records_per_user"]["min"] >= 1 and user_level["records_per_user"]["max"] <= 10
    for attack in result.attacks:
        entries = user_level["attacks"][attack.name]
        assert set(entries) == {"mean", "max", "llr_sum"}
        best = max(entries.values(), key=lambda e: e["auc"])
        # The whole 95% interval of the best user-level AUC lies above the record-level AUC.
        assert best["auc_ci_low"] > attack.auc, (attack.name, attack.auc, best["aggregation"], best["auc"])
        for entry in entries.values():
            assert entry["n_users"] == 600
            rate = next(r for r in entry["tpr_at_fpr"] if r["fpr"] == 0.01)
            # 300 non-member users cannot resolve 1% FPR: not measurable, with the users counted.
            assert rate["measurable"] is False and rate["tpr"] is None and rate["n_nonmembers"] == 300
            assert nonmembers_needed(0.01) > 300
            assert entry["top_exposed"][0]["user"].startswith("p")


def test_a_the_user_column_is_never_a_feature_and_the_split_check_splits_users(user_run: AuditRun) -> None:
    result = user_run.result
    assert result.data["n_features"] == 6 and result.data["user_column"] == "person"
    # Records of one user are alike: halves drawn record by record would see a member user on both sides
    # and report a shift that is not there.
    assert result.split_check["ok"], result.split_check
    assert "users" in result.split_check["method"]
    scores = pd.read_csv(Path(result.config["out"]) / "scores.csv")
    assert scores["user"].nunique() == 600


def test_a_a_user_on_both_sides_is_an_error(user_files, tmp_path, monkeypatch, capsys) -> None:
    members = pd.read_csv(user_files.members)
    shared = members[members["person"].isin(members["person"].unique()[:3])]
    holdout = pd.concat([pd.read_csv(user_files.nonmembers), shared.iloc[[0, -1]]], ignore_index=True)
    holdout.loc[len(holdout) - 2 :, "x0"] += 100.0  # other records of those users, not copies of members
    holdout.to_csv(tmp_path / "holdout.csv", index=False)
    args = _audit_args(user_files, tmp_path, "--holdout", str(tmp_path / "holdout.csv"), "--user-column", "person")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "2 user(s)", "'person'", "split members and non-members by user")


# --------------------------------------------------------------------------------------------------
# (b) rare records


def test_b_rare_records_leak_more_than_common_ones(leaky_run: AuditRun) -> None:
    result = leaky_run.result
    rarity = result.data["rarity"]
    assert rarity["quasi_identifiers"] == ["postcode"] and rarity["k"] == 5
    assert (rarity["n_rare_members"], rarity["n_rare_nonmembers"]) == (500, 500)
    assert (rarity["n_common_members"], rarity["n_common_nonmembers"]) == (1000, 1000)
    for attack in result.attacks:
        by_value = {s["slice"]: s for s in attack.slices if s["by"] == "rarity"}
        rare, common = by_value["rare"], by_value["common"]
        assert rare["auc_ci_low"] > common["auc_ci_high"], attack.name
        rare_rate, common_rate = rare["tpr_at_fpr"][0], common["tpr_at_fpr"][0]
        assert rare_rate["fpr"] == 0.01 and rare_rate["measurable"] and common_rate["measurable"]
        assert rare_rate["ci_low"] > common_rate["ci_high"], (attack.name, rare_rate, common_rate)


def test_b_every_feature_by_default_with_numbers_binned(leaky_run: AuditRun, rarity_files, tmp_path) -> None:
    config = rarity_config(rarity_files, rarity_files.model, "default-qi")
    config.quasi_identifiers, config.attacks, config.out = None, ["loss"], str(tmp_path / "out")
    result = run_audit(config).result
    rarity = result.data["rarity"]
    assert rarity["quasi_identifiers"] == ["postcode", "x0", "x1", "x2", "x3"]
    assert rarity["binned"] == ["x0", "x1", "x2", "x3"] and rarity["numeric_bins"] == 10
    # The unique postcodes stay rare; most common records share their postcode and deciles with 4 others.
    n_rare = rarity["n_rare_members"] + rarity["n_rare_nonmembers"]
    assert 1000 < n_rare < 3000 and not any(w.startswith("rarity:") for w in result.warnings)
    scores = pd.read_csv(Path(config.out) / "scores.csv")
    members, nonmembers = pd.read_csv(rarity_files.members), pd.read_csv(rarity_files.nonmembers)
    unique = pd.concat([members, nonmembers], ignore_index=True)["postcode"].str.startswith("R")
    assert (scores.loc[unique.to_numpy(), "rarity"] == "rare").all()
    # With one side empty, rare and common cannot be compared, and the audit says so.
    outliers = members[members["postcode"].str.startswith("R")].drop(columns="y")
    alone = find_rare_records(outliers, ["x0", "x1", "x2", "x3"], k=5)
    assert alone.warnings(len(outliers))[0].startswith("rarity: all of the 500 audit records are rare")


# --------------------------------------------------------------------------------------------------
# (c) the worst slice


def test_c_worst_slice_in_audit_json_terminal_summary_and_report(leaky_run: AuditRun, capsys) -> None:
    document = json.loads(_json(leaky_run).read_text())
    worst = document["worst_slice"]
    assert worst["fpr"] == 0.01 and worst["judged_by"] == "point"
    assert (worst["worst"]["by"], worst["worst"]["slice"]) == ("rarity", "rare")
    assert worst["worst"]["tpr"] > 0.5 and worst["worst"]["ci_low"] > 0.1 and worst["worst"]["n_members"] == 500
    assert [s["by"] for s in worst["slicings"]] == ["class", "rarity"]
    print_summary(leaky_run.result, Path(leaky_run.result.config["out"]))
    terminal = " ".join(capsys.readouterr().out.split())
    assert "worst slice" in terminal and "rarity = rare under" in terminal
    out = Path(leaky_run.result.config["out"])
    summary = (out / "summary.md").read_text()
    assert "**Worst slice**" in summary and "rarity = rare under" in summary
    html = (out / "report.html").read_text()
    assert 'id="worst-slice"' in html and "Worst slice · TPR at 1% FPR" in html and "By rarity" in html


def test_c_gate_fails_the_memorising_model_and_passes_the_unseen_one(
    leaky_run: AuditRun, unseen_run: AuditRun, tmp_path, monkeypatch, capsys
) -> None:
    leaky = evaluate(load_audit(_json(leaky_run)), parse_policy(WORST_KEY))
    assert not leaky.passed
    failure = leaky.failures[0]
    assert failure.metric.startswith("worst slice TPR@1%FPR (rarity = rare") and failure.ci_high > 0.05
    unseen = evaluate(load_audit(_json(unseen_run)), parse_policy(WORST_KEY))
    assert unseen.passed, [c.describe() for c in unseen.checks]
    policy = tmp_path / "policy.toml"
    policy.write_text('max_worst_slice_tpr_at_fpr = {"0.01" = 0.05}\n')
    store = ["--store", str(tmp_path / "history.db")]
    code, out, _ = run_cli(monkeypatch, capsys, "gate", str(_json(leaky_run)), "--policy", str(policy), *store)
    assert code == 1 and "worst slice" in out
    code, _, _ = run_cli(monkeypatch, capsys, "gate", str(_json(unseen_run)), "--policy", str(policy), *store)
    assert code == 0


def test_c_a_slice_too_small_to_measure_does_not_pass_in_silence(user_run: AuditRun) -> None:
    document = load_audit(Path(user_run.result.config["out"]) / "audit.json")
    users = next(s for s in document["worst_slice"]["slicings"] if s["by"] == "user")
    assert users["unit"] == "users" and users["n_measurable"] == 0 and users["worst"] is None
    assert "only 300 non-member users" in users["not_measurable"][0]["reason"]
    lenient = {"max_worst_slice_tpr_at_fpr": {"0.01": 1.0}}
    verdict = evaluate(document, parse_policy(lenient))
    assert not verdict.passed
    assert any("not measurable" in c.reason and "user = mean" in c.reason for c in verdict.failures)
    assert evaluate(document, parse_policy(lenient | {"allow_unmeasurable": True})).passed
    # A limit at an FPR the slices were not measured at is not passed either.
    other = evaluate(document, parse_policy({"max_worst_slice_tpr_at_fpr": {"0.1": 1.0}, "allow_unmeasurable": True}))
    assert not other.passed and "slices are measured at 1% FPR" in other.failures[0].reason


def test_c_audits_without_the_new_fields_still_load_report_and_gate(leaky_run: AuditRun, tmp_path) -> None:
    document = json.loads(_json(leaky_run).read_text())
    for key in ("user_level", "worst_slice"):
        document.pop(key)
    old = tmp_path / "audit.json"
    old.write_text(json.dumps(document))
    loaded = load(old)
    assert loaded.user_level is None and loaded.worst_slice is None
    assert not evaluate(load_audit(old), parse_policy(WORST_KEY)).passed  # worked out from the slices
    assert "rarity = rare under" in render_report(old, "md")
    broken = dict(document, user_level={"attacks": {"loss": {"mean": {"auc": "high"}}}})
    with pytest.raises(InputDataError, match="user_level loss mean"):
        from_document(broken)


# --------------------------------------------------------------------------------------------------
# (d) bad input


def _audit_args(files: Files, tmp_path: Path, *changes: str) -> list[str]:
    options = {
        "--model": str(files.model),
        "--train": str(files.members),
        "--holdout": str(files.nonmembers),
        "--label-column": "y",
        "--attacks": "loss",
        "--out": str(tmp_path / "out"),
        "--cache": str(tmp_path / "cache"),
    }
    options.update(dict(zip(changes[::2], changes[1::2], strict=True)))
    return ["audit", *[x for pair in options.items() for x in pair]]


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        (("--user-column", "subject"), ("user column 'subject' not found", "--user-column")),
        (("--quasi-identifiers", "postcode,age"), ("quasi-identifier 'age' is not a feature column", "postcode")),
        (("--rarity-k", "1"), ("rarity_k must be 2 or more", "--rarity-k 2")),
        (
            ("--rarity-k", "0", "--quasi-identifiers", "y"),
            ("rarity_k must be 2 or more", "quasi_identifiers include the label column 'y'"),
        ),
        (("--user-column", "y"), ("user_column 'y' is the label column",)),
    ],
)
def test_d_bad_subject_options_are_one_line_errors(
    rarity_files, tmp_path, monkeypatch, capsys, changes, needles
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, *_audit_args(rarity_files, tmp_path, *changes))
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out" / "audit.json").exists()


def test_d_the_config_file_keys_are_checked_the_same_way(rarity_files, tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "audit.toml"
    config.write_text('[audit]\nuser_column = "subject"\nquasi_identifiers = ["postcode"]\nrarity_k = 3\n')
    code, _, err = run_cli(monkeypatch, capsys, *_audit_args(rarity_files, tmp_path, "--config", str(config)))
    assert_one_line_error(code, err, "user column 'subject' not found")
