"""The result document owns its schema: save and load mirror each other, a broken audit.json gets the same
one-line error from every command that reads it, and one rule finds "the TPR at this FPR"."""

from __future__ import annotations

import copy
import json

import pytest

from membershield.errors import InputDataError
from membershield.result import (
    document_problems,
    fpr_matches,
    from_document,
    load,
    load_document,
    rate_in,
    save,
    summary,
    summary_rate,
)
from tests.test_cli import assert_one_line_error, base_args, run_cli


@pytest.fixture(scope="module")
def audit_file(digits_audit, tmp_path_factory):
    import os
    import subprocess
    import sys

    directory = tmp_path_factory.mktemp("result")
    args = base_args(digits_audit, directory, **{"--store": str(directory / "h.db")})
    done = subprocess.run([sys.executable, "-m", "membershield", *args], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    return directory / "out" / "audit.json"


def test_save_and_load_mirror_each_other(audit_file, tmp_path) -> None:
    loaded = load(audit_file)
    assert loaded.to_dict() == json.loads(audit_file.read_text())  # the document itself, unchanged
    fresh = from_document(copy.deepcopy(loaded.to_dict()))
    fresh.source = None  # as if made in this process
    save(fresh, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == loaded.to_dict()
    assert load(tmp_path / "again.json").attack("loss").auc == loaded.attack("loss").auc


def test_every_problem_is_named_at_once(audit_file) -> None:
    document = json.loads(audit_file.read_text())
    del document["attacks"][0]["auc"]
    document["attacks"][1]["tpr_at_fpr"] = "high"
    document["data"]["n_members"] = "many"
    problems = document_problems(document)
    assert any("attack #1 (loss) lacks 'auc'" in p for p in problems)
    assert any("attack #2 (confidence): 'tpr_at_fpr' must be a list" in p for p in problems)
    assert any("'data.n_members' must be a whole number" in p for p in problems)
    assert document_problems({"schema_version": "2.0", "attacks": []})[0].startswith("schema version 2.0")


@pytest.mark.parametrize(
    "breakage, needle",
    [
        (lambda d: d["attacks"][0].pop("auc"), "attack #1 (loss) lacks 'auc'"),
        (lambda d: d.update(attacks=[]), "'attacks' list is empty"),
        (lambda d: d.update(schema_version="0.3"), "schema version 0.3"),
        (lambda d: d.pop("data"), "it lacks 'data'"),
    ],
)
def test_report_and_gate_give_the_same_one_line_error(audit_file, tmp_path, monkeypatch, capsys, breakage, needle):
    document = json.loads(audit_file.read_text())
    breakage(document)
    broken = tmp_path / "audit.json"
    broken.write_text(json.dumps(document))
    policy = tmp_path / "policy.toml"
    policy.write_text("max_auc = 0.9\n")
    code, _, report_err = run_cli(monkeypatch, capsys, "report", str(broken))
    assert_one_line_error(code, report_err, needle, "audit.json")
    gate = ["gate", str(broken), "--policy", str(policy), "--store", str(tmp_path / "h.db")]
    code, _, gate_err = run_cli(monkeypatch, capsys, *gate)
    assert_one_line_error(code, gate_err, needle, "audit.json")
    assert report_err == gate_err
    with pytest.raises(InputDataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_document(broken)


def test_one_rule_finds_the_rate_at_an_fpr(audit_file) -> None:
    result = load(audit_file)
    loss = result.attack("loss")
    assert loss.rate_at(0.01) is rate_in(loss.tpr_at_fpr, 0.1 / 10)
    assert loss.rate_at(0.02) is None
    assert fpr_matches(0.001, 1e-3) and not fpr_matches(0.001, 0.0011)
    stored = summary(result)["attacks"]["loss"]
    assert summary_rate(stored, 0.01)["tpr"] == loss.rate_at(0.01)["tpr"]


def test_the_headline_is_the_strongest_attack_at_one_percent(audit_file) -> None:
    result = load(audit_file)
    top = result.headline()
    assert top.rate is not None and fpr_matches(top.rate["fpr"], 0.01)
    best = max(a.rate_at(0.01)["tpr"] for a in result.attacks if a.rate_at(0.01)["measurable"])
    assert top.rate["tpr"] == best


def test_provenance_names_the_code_version(audit_file) -> None:
    stamp = load(audit_file).environment
    assert stamp["membershield"]
    # run from this checkout: the commit it was run at, marked when files differ from it
    assert len(stamp["membershield_git"].split("+")[0]) == 40
