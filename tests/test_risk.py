"""The risk register on a real audit (the memorising digits MLP, LOSS attack) joined with a hand-built
scan.json of its training table in the data scan's format: a rare, exposed record ranks first, even
above a record the attack exposes as much that is common; bad input is one line (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.errors import InputDataError
from membershield.history import record_audit
from membershield.risk import build_register
from membershield.store import open_store
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def audited(digits_audit, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("risk-audit")
    run_audit(
        AuditConfig(
            model=str(digits_audit.overfit_model),
            train=str(digits_audit.members),
            holdout=str(digits_audit.nonmembers),
            label_column="digit",
            attacks=["loss"],
            references=0,
            out=str(out),
            cache="",
            split_check=False,
        )
    )
    return out / "audit.json"


def members_by_exposure(audit_file: Path) -> pd.DataFrame:
    scores = pd.read_csv(audit_file.parent / "scores.csv")
    return scores[scores["is_member"]].sort_values("loss", ascending=False).reset_index(drop=True)


def scan_document(digits_audit, rare: dict[int, int]) -> dict:
    """A scan.json of the training table: every column with its tier, ``rare`` rows (row -> count) in low_k."""
    columns = pd.read_csv(digits_audit.members).columns
    tiers = {"pixel_0_2": "personal", "pixel_0_3": "personal"}  # as if they described a person
    return {
        "format": "membershield.scan/1",
        "file": str(digits_audit.members),
        "n_rows": 600,
        "n_columns": len(columns),
        "columns": [
            {"name": c, "tier": tiers.get(c, "internal"), "pii": {}, "cardinality": 17, "missing_share": 0.0}
            for c in columns
        ],
        "low_k": {
            "k": 5,
            "quasi_identifiers": ["pixel_0_2", "pixel_0_3"],
            "records": len(rare),
            "combinations": len(rare),
            "rows": [
                {"row": row, "count": count, "values": {"pixel_0_2": row % 7, "pixel_0_3": count}}
                for row, count in rare.items()
            ],
        },
        "duplicates": {"exact": {"records": 0}, "near": {"records": 0}},
        "passed": True,
    }


def test_a_rare_exposed_record_ranks_first(audited, digits_audit, tmp_path, monkeypatch, capsys) -> None:
    ranked = members_by_exposure(audited)
    most, second = int(ranked.loc[0, "row"]), int(ranked.loc[1, "row"])
    rare_but_safe = int(ranked.loc[len(ranked) - 1, "row"])  # the member the attack finds least
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps(scan_document(digits_audit, {second: 1, rare_but_safe: 1})))
    out = tmp_path / "register" / "risk.csv"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "risk", "--audit", str(audited), "--scan", str(scan), "--out", str(out), "--top", "5"
    )
    assert code == 0, err
    register = pd.read_csv(out)
    assert len(register) == 600 and register["rank"].tolist() == list(range(1, 601))
    top = register.iloc[0]
    assert int(top["row"]) == second and top["priority"] == "exposed and rare" and int(top["combination_count"]) == 1
    assert bool(top["exposed"]) and top["flag_fpr"] <= 0.01 and top["n_nonmembers"] == 600
    assert top["flag_fpr_ci_low"] <= top["flag_fpr"] <= top["flag_fpr_ci_high"]
    assert top["tier"] == "personal" and "pixel_0_2=" in top["quasi_identifier_values"]
    assert int(register.iloc[1]["row"]) == most and register.iloc[1]["priority"] == "exposed"
    safe = register[register["row"] == rare_but_safe].iloc[0]
    assert safe["priority"] == "rare" and not bool(safe["exposed"])
    assert (register["priority"] == "exposed and rare").sum() == 1
    assert "Risk register: top 5 of 600 training records (loss)" in stdout
    assert "both: 0.17% (95% CI" in stdout and "1 of 600" in stdout
    assert f"wrote {out}" in stdout

    # the same join from the library, by another attack name: none ran
    with pytest.raises(InputDataError, match="ran no attack 'lira'"):
        build_register(audited, scan, attack="lira")


def test_the_scan_summary_is_kept_with_the_recorded_dataset(audited, digits_audit, tmp_path, monkeypatch, capsys):
    store = str(tmp_path / "history.db")
    out = tmp_path / "audit"
    shutil.copytree(audited.parent, out)
    record_audit(out, store, model_name="digits", dataset_version="2026-01")
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps(scan_document(digits_audit, {3: 2})))
    code, stdout, err = run_cli(monkeypatch, capsys, "risk", "--audit", str(out), "--scan", str(scan), "--store", store)
    assert code == 0, err
    assert (out / "risk.csv").is_file() and "kept the scan summary with dataset members.csv" in stdout
    document = json.loads((out / "audit.json").read_text())
    with open_store(store) as opened:
        (dataset,) = opened.find_datasets(document["data"]["fingerprints"]["members"])
    assert dataset.version == "2026-01"
    assert dataset.scan["low_k"]["records"] == 1 and dataset.scan["tiers"]["personal"] == 2
    assert dataset.scan["personal_columns"] == ["pixel_0_2", "pixel_0_3"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_risk_bad_input_is_one_line(audited, digits_audit, tmp_path, monkeypatch, capsys) -> None:
    good = tmp_path / "scan.json"
    good.write_text(json.dumps(scan_document(digits_audit, {1: 1})))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    no_rows = tmp_path / "no-rows.json"
    no_rows.write_text(json.dumps({**scan_document(digits_audit, {}), "low_k": {"k": 5}}))
    other_table = tmp_path / "other.json"
    other_table.write_text(json.dumps({**scan_document(digits_audit, {}), "n_rows": 100}))
    bad_audit = tmp_path / "bad" / "audit.json"
    bad_audit.parent.mkdir()
    bad_audit.write_text("[1, 2]")
    no_scores = tmp_path / "no-scores"
    no_scores.mkdir()
    shutil.copy(audited, no_scores / "audit.json")
    cases = [
        (audited, broken, "not valid JSON"),
        (audited, tmp_path / "missing.json", "file not found"),
        (audited, no_rows, "'low_k.rows' must be a list"),
        (audited, other_table, "describes a table of 100 rows"),
        (bad_audit, good, "not an audit result"),
        (tmp_path / "nothing" / "audit.json", good, "file not found"),
        (no_scores / "audit.json", good, "scores.csv: file not found"),
    ]
    for audit_file, scan_file, needle in cases:
        code, _, err = run_cli(monkeypatch, capsys, "risk", "--audit", str(audit_file), "--scan", str(scan_file))
        assert code == 2 and needle in one_error_line(err), (audit_file, scan_file, err)
    code, _, err = run_cli(monkeypatch, capsys, "risk", "--audit", str(audited), "--scan", str(good), "--fpr", "2")
    assert code == 2 and "--fpr must be strictly between 0 and 1" in one_error_line(err)
