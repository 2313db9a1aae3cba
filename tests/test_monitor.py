"""Scheduled re-audits: a cycle audits, records and gates every listed audit; when the model behind an
audit starts to leak, the next cycle fails loudly (exit 1, the regression against the last passing audit
named); one audit's bad input is its own error and does not stop the others; bad monitor files are one
line, exit 2."""

from __future__ import annotations

import shutil

import pytest

from membershield.errors import ConfigError
from membershield.monitor import load_plan, parse_interval, run_monitor
from membershield.store import open_store
from tests.test_cli import assert_one_line_error, run_cli

POLICY = 'max_auc = 0.60\nbound = "point"\nmax_regression = {auc = 0.02}\n'


def _setup(tmp_path, digits_audit, *, interval: str | None = None, broken: bool = False):
    shutil.copy(digits_audit.unseen_model, tmp_path / "model.joblib")  # never saw the members: at chance
    (tmp_path / "policy.toml").write_text(POLICY)
    (tmp_path / "audit.toml").write_text(
        f'model = "model.joblib"\ntrain = "{digits_audit.members}"\nholdout = "{digits_audit.nonmembers}"\n'
        'label_column = "digit"\nattacks = ["loss", "confidence"]\n'
    )
    lines = ['store = "history.db"'] + ([f'interval = "{interval}"'] if interval else [])
    audits = [("digits", "audit.toml")] + ([("broken", "missing.toml")] if broken else [])
    for name, config in audits:
        lines += ["[[audits]]", f'name = "{name}"', f'config = "{config}"', 'policy = "policy.toml"']
    (tmp_path / "monitor.toml").write_text("\n".join(lines) + "\n")
    return tmp_path / "monitor.toml"


def test_a_model_that_starts_leaking_fails_the_next_cycle(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    monitor = _setup(tmp_path, digits_audit)
    code, out, err = run_cli(monkeypatch, capsys, "monitor", "--config", str(monitor), "--once")
    assert code == 0, err
    assert "ok digits: gate passed" in out
    shutil.copy(digits_audit.overfit_model, tmp_path / "model.joblib")  # the next release memorises
    code, out, err = run_cli(monkeypatch, capsys, "monitor", "--config", str(monitor), "--once")
    assert code == 1, out + err
    assert "GATE FAILED digits" in err and "regression" in err.lower(), err
    with open_store(str(tmp_path / "history.db")) as store:
        history = store.history("digits")
    assert [record.verdict for record in history] == ["pass", "fail"]
    assert history[1].metrics["attacks"]["loss"]["auc"] > history[0].metrics["attacks"]["loss"]["auc"] + 0.02


def test_one_broken_audit_does_not_stop_the_others(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    monitor = _setup(tmp_path, digits_audit, broken=True)
    code, out, err = run_cli(monkeypatch, capsys, "monitor", "--config", str(monitor), "--once")
    assert code == 2
    assert "ok digits: gate passed" in out and "ERROR broken: config file not found" in err


def test_a_schedule_runs_every_interval(digits_audit, tmp_path) -> None:
    plan = load_plan(_setup(tmp_path, digits_audit, interval="2h"))
    assert plan.interval == 7200.0
    slept, seen = [], []
    code = run_monitor(plan, on_result=seen.append, sleep=slept.append, cycles=2)
    assert code == 0 and [r.name for r in seen] == ["digits", "digits"] and all(r.passed for r in seen)
    assert len(slept) == 1 and 7000 < slept[0] <= 7200  # the wait counts the cycle's own time


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('interval = "soon"\n[[audits]]\nname = "a"\nconfig = "a.toml"\npolicy = "p.toml"\n', ["interval 'soon'"]),
        ("[[audits]]\nname = 'a'\nconfig = 'a.toml'\n", ["lacks policy"]),
        ("stor = 'x'\n[[audits]]\nname = 'a'\nconfig = 'a'\npolicy = 'p'\n", ["unknown key 'stor'"]),
        ("interval = '1h'\n", ["lists no audits", "[[audits]]"]),
    ],
)
def test_bad_monitor_files_are_one_line(text, needles, tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "monitor.toml").write_text(text)
    code, _, err = run_cli(monkeypatch, capsys, "monitor", "--config", str(tmp_path / "monitor.toml"), "--once")
    assert_one_line_error(code, err, *needles)


def test_interval_units() -> None:
    assert parse_interval("45s") == 45.0
    with pytest.raises(ConfigError, match="positive number"):
        parse_interval("0h")
