"""The gate on real audits: policies that must pass and must fail, interval versus point judgement,
unmeasurable rates, regressions against the last passing audit, JUnit XML, and the CLI's exit codes."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.errors import ConfigError, InputDataError
from membershield.gate import (
    accuracy_gap_interval,
    evaluate,
    junit_tree,
    load_audit,
    load_policy,
    parse_policy,
    policy_problems,
    write_junit,
)
from membershield.metrics import nonmembers_needed, tpr_at_fpr
from membershield.store import open_store
from tests.test_cli import run_cli


def small_audit(d, model: Path, out: Path, **changes) -> Path:
    """A real audit (LOSS and LiRA, 4 references) of one of the digits models; returns its audit.json."""
    values = dict(
        model=str(model),
        train=str(d.members),
        holdout=str(d.nonmembers),
        label_column="digit",
        attacks=["loss", "lira"],
        references=4,
        out=str(out),
        cache=str(d.directory / "gate-cache"),  # shared by the store tests: references train once
        split_check=False,
    )
    values.update(changes)
    run_audit(AuditConfig(**values))
    return out / "audit.json"


@pytest.fixture(scope="module")
def audits(digits_audit, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("gate")
    return {
        "overfit": small_audit(digits_audit, digits_audit.overfit_model, base / "overfit"),
        "unseen": small_audit(digits_audit, digits_audit.unseen_model, base / "unseen"),
    }


def attack(audit: dict, name: str) -> dict:
    return next(a for a in audit["attacks"] if a["name"] == name)


def policy(**table):
    return parse_policy(table)


# --------------------------------------------------------------------------------------------------
# Verdicts on real audits


def test_lenient_policy_passes_on_the_model_that_never_saw_its_members(audits) -> None:
    audit = load_audit(audits["unseen"])
    verdict = evaluate(
        audit,
        policy(
            max_auc=0.6,
            max_tpr_at_fpr={"0.01": 0.1},
            max_advantage=0.2,
            max_epsilon_lower_bound=5.0,
            max_accuracy_gap=0.5,
        ),
    )
    assert verdict.passed, [c.describe() for c in verdict.failures]
    assert verdict.exit_code == 0
    # 4 limits on each of the 2 attacks + the accuracy gap
    assert len(verdict.checks) == 9
    assert {c.attack for c in verdict.checks} == {"loss", "lira", None}


def test_strict_policy_fails_on_the_overfit_model_and_names_the_attack(audits) -> None:
    audit = load_audit(audits["overfit"])
    lira = attack(audit, "lira")
    verdict = evaluate(audit, policy(max_auc=0.55, max_tpr_at_fpr={"0.01": 0.02}))
    assert not verdict.passed and verdict.exit_code == 1
    failed = {(c.attack, c.metric) for c in verdict.failures}
    assert ("lira", "AUC") in failed and ("lira", "TPR@1%FPR") in failed
    line = next(c for c in verdict.failures if (c.attack, c.metric) == ("lira", "AUC")).describe()
    assert line.startswith("lira AUC: ")
    assert f"{lira['auc']:.4g} (95% CI {lira['auc_ci_low']:.4g}–{lira['auc_ci_high']:.4g})" in line
    assert "limit 0.55" in line and "exceeds" in line


def test_the_same_policy_separates_the_leaky_model_from_the_other(audits) -> None:
    rules = policy(max_auc=0.6)
    assert evaluate(load_audit(audits["unseen"]), rules).passed
    assert not evaluate(load_audit(audits["overfit"]), rules).passed


def test_limit_is_judged_on_the_interval_by_default_and_on_the_point_on_request(audits) -> None:
    audit = load_audit(audits["overfit"])
    lira = attack(audit, "lira")
    between = (lira["auc"] + lira["auc_ci_high"]) / 2  # above the estimate, below the interval's upper end
    assert lira["auc"] < between < lira["auc_ci_high"]
    upper = evaluate(audit, policy(max_auc=between, attacks=["lira"]))
    point = evaluate(audit, policy(max_auc=between, attacks=["lira"], bound="point"))
    assert not upper.passed and "upper end of the 95% interval" in upper.failures[0].reason
    assert point.passed and "point estimate" in point.checks[0].reason


def test_tpr_limit_uses_the_clopper_pearson_upper_end(audits) -> None:
    audit = load_audit(audits["overfit"])
    rate = next(r for r in attack(audit, "lira")["tpr_at_fpr"] if r["fpr"] == 0.01)
    assert rate["measurable"]
    between = (rate["tpr"] + rate["ci_high"]) / 2
    table = {"max_tpr_at_fpr": {"0.01": between}, "attacks": ["lira"]}
    assert not evaluate(audit, parse_policy(table)).passed
    assert evaluate(audit, parse_policy({**table, "bound": "point"})).passed


def test_unmeasurable_rate_fails_unless_the_policy_allows_it(audits) -> None:
    audit = load_audit(audits["unseen"])
    assert audit["data"]["n_nonmembers"] == 600  # cannot resolve an FPR of 0.1%
    verdict = evaluate(audit, policy(max_tpr_at_fpr={"0.001": 0.5}))
    assert not verdict.passed
    assert len(verdict.failures) == 2  # one per attack
    for check in verdict.failures:
        assert check.reason.startswith("not measurable: need ≥ 4380 non-members"), check.reason
        assert "600" in check.reason
    allowed = evaluate(audit, policy(max_tpr_at_fpr={"0.001": 0.5}, allow_unmeasurable=True))
    assert allowed.passed
    assert all("allowed by policy" in c.reason for c in allowed.checks)


def test_fpr_the_audit_did_not_measure_fails(audits) -> None:
    verdict = evaluate(load_audit(audits["unseen"]), policy(max_tpr_at_fpr={"0.05": 0.5}))
    assert not verdict.passed
    assert "did not measure" in verdict.failures[0].reason and "1%" in verdict.failures[0].reason


def test_attacks_key_restricts_the_judged_attacks(audits) -> None:
    audit = load_audit(audits["overfit"])
    loss, lira = attack(audit, "loss"), attack(audit, "lira")
    assert loss["auc_ci_high"] < lira["auc_ci_high"]
    limit = (loss["auc_ci_high"] + lira["auc_ci_high"]) / 2
    assert evaluate(audit, policy(max_auc=limit, attacks=["loss"])).passed
    assert not evaluate(audit, policy(max_auc=limit)).passed
    missing = evaluate(audit, policy(max_auc=0.99, attacks=["loss", "rmia"]))
    assert [(c.attack, c.metric) for c in missing.failures] == [("rmia", "present")]
    assert "no result for this attack" in missing.failures[0].reason


def test_split_check_requirement(audits, digits_audit, tmp_path) -> None:
    without = evaluate(load_audit(audits["unseen"]), policy(require_split_check=True))
    assert not without.passed and "without the split check" in without.failures[0].reason
    checked = small_audit(
        digits_audit, digits_audit.unseen_model, tmp_path / "checked", attacks=["loss"], references=0, split_check=True
    )
    audit = load_audit(checked)
    assert audit["split_check"]["ok"] is True  # a random split
    assert evaluate(audit, policy(require_split_check=True)).passed
    shifted = copy.deepcopy(audit)
    shifted["split_check"]["ok"] = False
    failed = evaluate(shifted, policy(require_split_check=True))
    assert not failed.passed and "SPLIT CHECK FAILED" in failed.failures[0].reason


def test_accuracy_gap_is_judged_on_its_interval(audits) -> None:
    audit = load_audit(audits["overfit"])
    utility = audit["utility"]
    low, high = accuracy_gap_interval(utility["train_accuracy"], 600, utility["holdout_accuracy"], 600)
    assert low < utility["accuracy_gap"] < high
    between = (utility["accuracy_gap"] + high) / 2
    assert not evaluate(audit, policy(max_accuracy_gap=between)).passed
    assert evaluate(audit, policy(max_accuracy_gap=between, bound="point")).passed


def test_newcombe_interval_of_a_perfect_training_accuracy() -> None:
    low, high = accuracy_gap_interval(1.0, 700, 0.9743, 700)
    assert 0 < low < 0.0257 < high < 0.06
    assert accuracy_gap_interval(0.5, 10, 0.5, 10)[0] < 0 < accuracy_gap_interval(0.5, 10, 0.5, 10)[1]


def test_nonmembers_needed_matches_the_measurability_rule() -> None:
    rng = np.random.default_rng(0)
    for fpr in (0.01, 0.003, 0.1, 0.29):
        n = nonmembers_needed(fpr)
        for n_out, measurable in ((n, True), (n - 1, False)):
            scores = rng.normal(size=50 + n_out)
            is_member = np.r_[np.ones(50, bool), np.zeros(n_out, bool)]
            assert tpr_at_fpr(scores, is_member, fpr).measurable is measurable, (fpr, n_out)


# --------------------------------------------------------------------------------------------------
# Regression against the last passing audit of the same model


def test_regression_against_the_last_passing_audit(audits, tmp_path) -> None:
    rules = policy(max_auc=0.95, max_regression={"auc": 0.02})
    unseen, overfit = load_audit(audits["unseen"]), load_audit(audits["overfit"])
    with open_store(str(tmp_path / "history.db")) as store:
        first = store.record_audit(unseen, model_name="digits-mlp")
        assert store.last_passing("digits-mlp", exclude=first) is None
        verdict = evaluate(unseen, rules)
        assert verdict.passed  # nothing to compare with yet
        assert "no earlier passing audit" in verdict.checks[-1].reason
        store.record_verdict(first.id, passed=True, failures=[], policy=rules.to_dict())

        second = store.record_audit(overfit, model_name="digits-mlp")
        previous = store.last_passing("digits-mlp", exclude=second)
        assert previous is not None and previous.id == first.id
        regressed = evaluate(overfit, rules, previous=previous.comparison())
        assert not regressed.passed
        (failure,) = regressed.failures
        assert failure.metric == "auc regression" and failure.attack == "lira"
        assert "regressed" in failure.reason and f"audit #{first.id}" in failure.reason
        assert regressed.compared_with == previous.label
        # The previous audit may also be given as its audit document.
        assert not evaluate(overfit, rules, previous=unseen).passed
        # An unchanged model does not regress against itself.
        assert evaluate(unseen, rules, previous=unseen).passed
        # Another model name has no history.
        assert store.last_passing("another-model", exclude=second) is None


def test_regression_on_point_estimates(audits) -> None:
    unseen, overfit = load_audit(audits["unseen"]), load_audit(audits["overfit"])
    gap = attack(overfit, "lira")["auc"] - max(attack(unseen, n)["auc"] for n in ("loss", "lira"))
    assert gap > 0.05
    assert evaluate(overfit, policy(max_regression={"auc": gap + 0.01}, bound="point"), previous=unseen).passed
    assert not evaluate(overfit, policy(max_regression={"auc": gap - 0.01}, bound="point"), previous=unseen).passed


# --------------------------------------------------------------------------------------------------
# Policy validation


@pytest.mark.parametrize(
    ("table", "needles"),
    [
        ({"max_aucc": 0.6}, ["unknown key 'max_aucc'", "did you mean 'max_auc'"]),
        ({"max_auc": "0.6"}, ["'max_auc' must be a number"]),
        ({"max_auc": 1.5}, ["'max_auc' must be between 0 and 1"]),
        ({"max_auc": True}, ["'max_auc' must be a number"]),
        ({"max_tpr_at_fpr": {"one percent": 0.1}}, ["key 'one percent'", "FPR strictly between 0 and 1"]),
        ({"max_tpr_at_fpr": {"0.01": "low"}}, ["limit for FPR 0.01"]),
        ({"max_tpr_at_fpr": 0.1}, ["'max_tpr_at_fpr' must be a table"]),
        ({"require_split_check": "yes"}, ["'require_split_check' must be true or false"]),
        ({"max_auc": 0.6, "bound": "lower"}, ["'bound' must be"]),
        ({"max_auc": 0.6, "attacks": ["lria"]}, ["unknown attack 'lria'", "did you mean", "'lira'"]),
        ({"max_auc": 0.6, "attacks": "lira"}, ["'attacks' must be a non-empty list"]),
        ({"max_regression": {"aoc": 0.02}}, ["unknown metric 'aoc'", "did you mean 'auc'"]),
        ({"max_regression": {"auc": -1}}, ["allowance for auc"]),
        ({}, ["the policy sets no limit"]),
        ({"allow_unmeasurable": True}, ["the policy sets no limit"]),
    ],
)
def test_invalid_policies_are_explained(table, needles) -> None:
    problems = policy_problems(table)
    assert problems
    joined = "; ".join(problems)
    for needle in needles:
        assert needle in joined, (needle, joined)
    with pytest.raises(ConfigError):
        parse_policy(table)


def test_every_problem_is_reported_at_once() -> None:
    problems = policy_problems({"max_aucc": 0.6, "max_advantage": "x", "bound": 3})
    assert len(problems) == 3


def test_policy_file_from_a_gate_table_or_the_top_level(tmp_path) -> None:
    nested = tmp_path / "nested.toml"
    nested.write_text('[gate]\nmax_auc = 0.6\nmax_tpr_at_fpr = {"0.001" = 0.01, "0.01" = 0.05}\n')
    flat = tmp_path / "flat.toml"
    flat.write_text('max_auc = 0.6\nmax_tpr_at_fpr = {"0.001" = 0.01, "0.01" = 0.05}\n')
    assert load_policy(nested) == load_policy(flat)
    assert load_policy(flat).max_tpr_at_fpr == {0.001: 0.01, 0.01: 0.05}
    assert load_policy(flat).bound == "upper" and not load_policy(flat).allow_unmeasurable
    broken = tmp_path / "broken.toml"
    broken.write_text("max_auc = = 0.6\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "missing.toml")


def test_malformed_audit_documents_are_rejected(tmp_path) -> None:
    with pytest.raises(InputDataError, match="not found"):
        load_audit(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputDataError, match="not valid JSON"):
        load_audit(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(InputDataError, match="no 'attacks' list"):
        load_audit(tmp_path / "other.json")
    with pytest.raises(InputDataError):
        evaluate([], policy(max_auc=0.5))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# JUnit XML


def test_junit_xml_has_one_testcase_per_check_and_the_failures(audits, tmp_path) -> None:
    verdict = evaluate(load_audit(audits["overfit"]), policy(max_auc=0.6, max_tpr_at_fpr={"0.001": 0.01}))
    path = tmp_path / "reports" / "gate.xml"
    write_junit(verdict, path)
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(verdict.checks) == int(suite.get("tests"))
    failures = [case for case in cases if case.find("failure") is not None]
    assert len(failures) == len(verdict.failures) == int(suite.get("failures")) > 0
    messages = [case.find("failure").get("message") for case in failures]
    assert any("not measurable: need ≥ 4380 non-members" in m for m in messages)
    assert any(m.startswith("lira AUC") for m in messages)
    assert ET.tostring(junit_tree(verdict).getroot()).startswith(b"<testsuites")


# --------------------------------------------------------------------------------------------------
# The command line


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_cli_gate_exit_codes(audits, tmp_path, monkeypatch, capsys) -> None:
    store = str(tmp_path / "history.db")
    lenient = write_policy(tmp_path / "lenient.toml", "max_auc = 0.9\n")
    strict = write_policy(tmp_path / "strict.toml", 'max_auc = 0.6\nmax_tpr_at_fpr = {"0.001" = 0.01, "0.01" = 0.05}\n')
    args = ["gate", str(audits["unseen"]), "--policy", str(lenient), "--store", store]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, out + err
    assert "gate passed" in out

    junit = tmp_path / "gate.xml"
    args = ["gate", str(audits["overfit"]), "--policy", str(strict), "--store", store, "--junit", str(junit)]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1, out + err
    fail_lines = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert any(line.startswith("FAIL lira AUC: ") and "limit 0.6" in line for line in fail_lines), out
    assert sum("not measurable: need ≥ 4380 non-members" in line for line in fail_lines) == 2
    assert "gate FAILED" in out
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == str(len(fail_lines))

    with open_store(store) as history:
        verdicts = {r.model_name: r.verdict for r in history.history()}
    assert verdicts == {"unseen": "pass", "overfit": "fail"}


def test_policy_settings_beside_a_gate_table_are_an_error(tmp_path) -> None:
    both = write_policy(tmp_path / "both.toml", "max_auc = 0.6\n[gate]\nmax_auc = 0.7\n")
    with pytest.raises(ConfigError, match="max_auc outside the \\[gate\\] table would be ignored"):
        load_policy(both)
    # Other tables (an [audit] section in the same file) are no policy settings and stay allowed.
    shared = write_policy(tmp_path / "shared.toml", "[audit]\nreferences = 8\n[gate]\nmax_auc = 0.7\n")
    assert load_policy(shared).max_auc == 0.7


def test_policy_can_name_text_attacks() -> None:
    assert policy(max_auc=0.6, attacks=["zlib", "min-k"]).attacks == ("zlib", "min-k")
    with pytest.raises(ConfigError, match=r"unknown attack 'zlb'.*zlib"):
        policy(max_auc=0.6, attacks=["zlb"])


def test_an_audit_that_ran_no_attack_cannot_pass(audits) -> None:
    audit = copy.deepcopy(load_audit(audits["unseen"]))
    audit["attacks"] = []
    with pytest.raises(InputDataError, match="'attacks' list is empty"):
        evaluate(audit, policy(max_auc=0.5))


def test_cli_gate_bad_input_exits_two_with_one_line(audits, tmp_path, monkeypatch, capsys) -> None:
    store = ["--store", str(tmp_path / "history.db")]
    good = write_policy(tmp_path / "good.toml", "max_auc = 0.9\n")
    typo = write_policy(tmp_path / "typo.toml", "max_aucc = 0.9\n")
    code, _, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), "--policy", str(typo), *store)
    one_line_error(code, err, "unknown key 'max_aucc'", "did you mean 'max_auc'")

    wrong_type = write_policy(tmp_path / "type.toml", 'max_auc = "high"\n')
    code, _, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), "--policy", str(wrong_type), *store)
    one_line_error(code, err, "'max_auc' must be a number")

    invalid = write_policy(tmp_path / "invalid.toml", "max_auc = [\n")
    code, _, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), "--policy", str(invalid), *store)
    one_line_error(code, err, "invalid.toml", "not valid TOML")

    code, _, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), "--policy", str(tmp_path / "no.toml"))
    one_line_error(code, err, "policy file not found")

    code, _, err = run_cli(monkeypatch, capsys, "gate", str(tmp_path / "missing.json"), "--policy", str(good), *store)
    one_line_error(code, err, "missing.json", "not found")

    broken = tmp_path / "broken.json"
    broken.write_text('{"attacks": [')
    code, _, err = run_cli(monkeypatch, capsys, "gate", str(broken), "--policy", str(good), *store)
    one_line_error(code, err, "broken.json", "not valid JSON")

    code, _, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), *store)
    assert code == 2 and "--policy" in err


def test_cli_gate_detects_a_regression_under_one_model_name(audits, tmp_path, monkeypatch, capsys) -> None:
    store = str(tmp_path / "history.db")
    rules = write_policy(tmp_path / "policy.toml", "max_auc = 0.95\nmax_regression = {auc = 0.02}\n")
    common = ["--policy", str(rules), "--store", store, "--model-name", "digits-mlp"]
    code, out, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), *common)
    assert code == 0, out + err
    code, out, err = run_cli(monkeypatch, capsys, "gate", str(audits["overfit"]), *common)
    assert code == 1, out + err
    (line,) = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert "auc regression" in line and "regressed" in line and "digits-mlp" in line
    # Gating the passing audit again: the only other audit of this name failed, so nothing to compare.
    code, out, err = run_cli(monkeypatch, capsys, "gate", str(audits["unseen"]), *common)
    assert code == 0, out + err
    with open_store(store) as history:
        records = sorted(history.history(model_name="digits-mlp"), key=lambda r: r.id)  # in the order gated
        assert [r.verdict for r in records] == ["pass", "fail"]
        assert len(history.gate_runs(records[0].id)) == 2
        assert history.gate_runs(records[1].id)[0]["failures"] == [line.removeprefix("FAIL ")]


def test_cli_gate_json_round_trip_keeps_the_audit_identity(audits, tmp_path, monkeypatch, capsys) -> None:
    """The gate finds the row the audit command recorded: the same document, the same key."""
    store = str(tmp_path / "history.db")
    document = json.loads(audits["unseen"].read_text())
    with open_store(store) as history:
        recorded = history.record_audit(document, model_name="named-at-audit-time", model_version="3")
    rules = write_policy(tmp_path / "policy.toml", "max_auc = 0.9\n")
    args = ["gate", str(audits["unseen"]), "--policy", str(rules), "--store", store]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, out + err
    assert f"audit #{recorded.id}" in out and "named-at-audit-time" in out
    with open_store(store) as history:
        (record,) = history.history()
    assert record.verdict == "pass" and record.model_version == "3"
