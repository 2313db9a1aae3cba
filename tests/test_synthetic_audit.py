"""The synthetic-data audit against ground truth: a generator that copies its training records (with jitter)
is caught by every attack and the DCR risk; a generator fitted on records disjoint from the members is at
chance; SDV's GaussianCopula and CTGAN really fit and sample (mixed columns, missing values); bad input is
one line and exit code 2; a synthetic file that is the training file is the finding; the gate reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from membershield.gate import evaluate, parse_policy
from membershield.result import load
from membershield.synthetic.audit import SyntheticAuditConfig, run_synthetic_audit
from membershield.synthetic.generators import generate, parse_generator
from membershield.synthetic.tables import conform
from tests.test_cli import run_cli

JITTER = str(Path(__file__).resolve().parents[1] / "examples" / "synthetic_generators.py") + ":jitter_copy"
NUMERIC = ("age", "bmi", "pressure")
N = 300  # records per side: members, non-members, population, and the independent generator's own


def patients(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A mixed table with missing values in a numeric and a categorical column; the outcome depends on the rest."""
    age = rng.integers(18, 90, n).astype(float)
    bmi = rng.normal(27, 4, n)
    pressure = rng.normal(125, 15, n).round(1)
    smoker = rng.choice(np.array(["no", "yes", None], dtype=object), n, p=[0.6, 0.3, 0.1])
    z = 0.04 * (age - 50) + 0.15 * (bmi - 27) + 0.02 * (pressure - 125) + (smoker == "yes") + rng.normal(0, 1, n)
    bmi[rng.random(n) < 0.08] = np.nan
    return pd.DataFrame(
        {
            "age": age,
            "bmi": bmi.round(2),
            "pressure": pressure,
            "sex": rng.choice(["f", "m"], n),
            "smoker": smoker,
            "region": rng.choice(["north", "south", "east", "west"], n),
            "outcome": np.where(z > 0.3, "ill", "well"),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("synthetic")
    table = patients(4 * N, np.random.default_rng(100))
    paths = {}
    for i, side in enumerate(("train", "holdout", "population", "other")):
        paths[side] = d / f"{side}.csv"
        table.iloc[i * N : (i + 1) * N].to_csv(paths[side], index=False)
    train = conform(table.iloc[:N].reset_index(drop=True), NUMERIC, "train")
    other = conform(table.iloc[3 * N :].reset_index(drop=True), NUMERIC, "other")
    paths["jitter"] = d / "jitter.csv"
    generate(parse_generator(JITTER), train, N, seed=1, numeric=NUMERIC).to_csv(paths["jitter"], index=False)
    paths["independent"] = d / "independent.csv"  # a Gaussian copula fitted on records no member is among
    generate(parse_generator("sdv:gaussian-copula"), other, N, seed=0, numeric=NUMERIC).to_csv(
        paths["independent"], index=False
    )
    return paths


def audit(files: dict[str, Path], synthetic: str, out: Path, **options) -> dict:
    config = SyntheticAuditConfig(
        train=str(files["train"]),
        holdout=str(files["holdout"]),
        synthetic=str(files[synthetic]),
        population=str(files["population"]),
        label_column="outcome",
        out=str(out),
        **options,
    )
    run_synthetic_audit(config, reports=("md",))
    return json.loads((out / "audit.json").read_text())


@pytest.fixture(scope="module")
def leaky(files, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("leaky")
    options = {"generator": JITTER, "attack_options": {"shadow-generators": {"shadows": 3}}}
    return audit(files, "jitter", out, **options), out


def test_jitter_copy_is_caught_by_every_attack_and_the_dcr_risk(leaky):
    document, out = leaky
    names = [a["name"] for a in document["attacks"]]
    assert names == ["dcr", "nndr", "domias", "synthetic-classifier", "shadow-generators"]
    for attack in document["attacks"]:
        assert attack["auc_ci_low"] > 0.5, attack["name"]
        assert attack["params"] is not None and attack["tpr_at_fpr"]
    risk = document["synthetic"]["dcr_risk"]
    assert risk["flagged"] and risk["ci_low"] > 0.5
    assert document["utility"]["member_median_dcr"] < document["utility"]["nonmember_median_dcr"]
    assert document["mode"] == "synthetic" and document["data"]["missing_values"]["bmi"] > 0
    assert document["data"]["columns"]["categorical"] == ["sex", "smoker", "region", "outcome"]
    for name in ("singling_out", "linkability", "inference"):
        entry = document["anonymeter"][name]
        assert entry["risk"] is not None and entry["ci_low"] <= entry["risk"] <= entry["ci_high"]
    assert document["anonymeter"]["inference"]["secret"] == "outcome"
    assert document["anonymeter"]["linkability"]["risk"] > 0.1  # copies link the halves of a record
    result = load(out)  # the model audits' reader validates it
    assert result.headline().attack.name in names
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 2 * N and scores["is_member"].sum() == N


def test_the_gate_reads_a_synthetic_audit(leaky):
    document, _ = leaky
    verdict = evaluate(document, parse_policy({"max_dcr_risk": 0.2, "max_anonymeter_risk": 0.9, "attacks": ["dcr"]}))
    failed = {c.metric for c in verdict.failures}
    assert "DCR risk" in failed and "AUC" not in failed and not verdict.passed
    assert evaluate(document, parse_policy({"max_anonymeter_risk": 0.99})).passed
    model_like = {**document, "synthetic": None}
    check = evaluate(model_like, parse_policy({"max_dcr_risk": 0.5})).checks[0]
    assert not check.passed and "not a synthetic-data audit" in check.reason


def test_independent_generator_is_at_chance_for_every_attack(files, tmp_path):
    options = {"generator": "sdv:gaussian-copula", "attack_options": {"shadow-generators": {"shadows": 3}}}
    document = audit(files, "independent", tmp_path, anonymeter=False, **options)
    assert len(document["attacks"]) == 5
    for attack in document["attacks"]:
        assert attack["auc_ci_low"] <= 0.5 <= attack["auc_ci_high"], attack["name"]
    risk = document["synthetic"]["dcr_risk"]
    assert not risk["flagged"] and risk["share_ci_low"] <= 0.5 <= risk["share_ci_high"]
    assert document["split_check"]["ok"]
    assert evaluate(document, parse_policy({"max_dcr_risk": 0.25})).passed


def test_ctgan_fits_and_samples_mixed_columns_with_missing_values(files, tmp_path):
    train = conform(pd.read_csv(files["train"]), NUMERIC, "train")
    ctgan = parse_generator("sdv:ctgan:epochs=2,batch_size=100")
    sampled = generate(ctgan, train, 200, seed=0, numeric=NUMERIC)
    assert list(sampled.columns) == list(train.columns) and len(sampled) == 200
    assert set(sampled["sex"].dropna()) <= {"f", "m"} and sampled["age"].dtype == np.float64
    copula = generate(parse_generator("sdv:gaussian-copula"), train, 200, seed=0, numeric=NUMERIC)
    assert copula["bmi"].isna().any() and copula["smoker"].isna().any()  # missing values are modelled
    sampled.to_csv(tmp_path / "ctgan.csv", index=False)
    paths = {**files, "ctgan": tmp_path / "ctgan.csv"}
    options = {"attacks": ["dcr", "shadow-generators"], "attack_options": {"shadow-generators": {"shadows": 2}}}
    document = audit(paths, "ctgan", tmp_path / "out", generator=ctgan.spec, anonymeter=False, **options)
    assert document["target"]["generator"] == "sdv:ctgan:epochs=2,batch_size=100"
    assert all(0.0 <= a["auc"] <= 1.0 for a in document["attacks"])
    assert document["synthetic"]["generator"]["synthesizer"] == "CTGANSynthesizer"


def test_a_copy_of_the_training_file_is_the_finding(files, tmp_path, monkeypatch, capsys):
    base = ["audit-synthetic", "--train", str(files["train"]), "--holdout", str(files["holdout"])]
    options = ["--attacks", "dcr", "--no-anonymeter", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "h.db")]
    code, out, err = run_cli(monkeypatch, capsys, *base, "--synthetic", str(files["train"]), *options)
    assert code == 0, err
    assert "THE SYNTHETIC FILE IS A COPY OF THE TRAINING FILE" in " ".join(out.split())
    document = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert document["synthetic"]["exact_copies"]["is_copy_of_train"]
    assert document["attacks"][0]["auc"] == 1.0 and document["synthetic"]["dcr_risk"]["risk"] == 1.0


def _bad(tmp_path: Path, files: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    fewer = tmp_path / "fewer.csv"
    pd.read_csv(files["jitter"]).drop(columns=["region"]).to_csv(fewer, index=False)
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text(",".join(pd.read_csv(files["train"]).columns) + "\n")
    return {
        "columns": (["--synthetic", str(fewer)], "lacks region"),
        "empty": (["--synthetic", str(empty)], "is empty"),
        "no rows": (["--synthetic", str(header)], "has no rows"),
        "generator": (["--synthetic", str(files["jitter"]), "--generator", "sdv:copula"], "unknown generator"),
        "no label": (["--synthetic", str(files["jitter"]), "--attacks", "synthetic-classifier"], "--label-column"),
        "setting": (["--synthetic", str(files["jitter"]), "--generator", "sdv:ctgan:epoch=3"], "unknown setting"),
    }


def test_bad_input_is_one_line_and_exit_code_2(files, tmp_path, monkeypatch, capsys):
    base = ["audit-synthetic", "--train", str(files["train"]), "--holdout", str(files["holdout"])]
    for case, (args, expected) in _bad(tmp_path, files).items():
        code, _, err = run_cli(monkeypatch, capsys, *base, *args, "--out", str(tmp_path / case))
        assert code == 2, (case, err)
        assert expected in err and len(err.strip().splitlines()) == 1, (case, err)
