"""The guard's /metrics exports its model's latest recorded audit as gauges, read back here by Prometheus's
own text parser: before any audit there is no leakage series, after an audit and a gate the values are the
audit's, and the Grafana dashboard shipped in deploy/ asks only for metrics the guard exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from membershield.guard.app import create_app, guard_config
from membershield.guard.leakage_metrics import LeakageCollector, leakage_families
from membershield.guard.policy import policy_from_dict
from membershield.store import AuditRecord
from tests.guard_server import serving
from tests.test_cli import run_cli

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "membershield-leakage.json"
OPEN_LIMITS = {"limits": {"requests_per_minute": 100_000, "daily_query_budget": 10_000_000}}


def _scrape(url: str) -> dict[str, list]:
    text = httpx.get(f"{url}/metrics").text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _audit_and_gate(monkeypatch, capsys, digits_audit, out: Path, store: str) -> dict:
    args = ["audit", "--model", str(digits_audit.overfit_model), "--train", str(digits_audit.members)]
    args += ["--holdout", str(digits_audit.nonmembers), "--label-column", "digit", "--attacks", "loss,confidence"]
    args += ["--out", str(out), "--store", store]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    policy = out / "policy.toml"
    policy.write_text('max_tpr_at_fpr = {"0.01" = 0.01}\n')  # a memorising model fails it
    code, _, err = run_cli(
        monkeypatch, capsys, "gate", str(out / "audit.json"), "--policy", str(policy), "--store", store
    )
    assert code == 1, err
    return json.loads((out / "audit.json").read_text())


def test_metrics_carry_the_latest_audit_of_the_guarded_model(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    store = str(tmp_path / "guard.db")

    def config():
        return guard_config(str(digits_audit.overfit_model), None, policy_from_dict(OPEN_LIMITS), store)

    with serving(create_app(config())) as url:
        before = _scrape(url)
    assert before["membershield_leakage_auc"] == [] and before["membershield_gate_passed"] == []

    document = _audit_and_gate(monkeypatch, capsys, digits_audit, tmp_path / "audit", store)
    with serving(create_app(config())) as url:
        families = _scrape(url)
    model = config().model_name
    auc = {s.labels["attack"]: s.value for s in families["membershield_leakage_auc"]}
    assert auc == pytest.approx({a["name"]: a["auc"] for a in document["attacks"]})
    assert all(s.labels["model"] == model for s in families["membershield_leakage_auc"])
    upper = {(s.labels["attack"], s.labels["fpr"]): s.value for s in families["membershield_leakage_tpr_at_fpr_upper"]}
    for attack in document["attacks"]:
        for rate in attack["tpr_at_fpr"]:
            key = (attack["name"], f"{rate['fpr']:g}")
            if rate["measurable"]:
                assert upper[key] == pytest.approx(rate["ci_high"]), key
            else:
                assert key not in upper, key  # 600 non-members cannot resolve 0.1%: no made-up number
    assert [s.value for s in families["membershield_gate_passed"]] == [0.0]
    epsilon = {s.labels["attack"]: s.value for s in families["membershield_leakage_epsilon_lower_bound"]}
    assert epsilon == pytest.approx({a["name"]: a["epsilon_lower_bound"] for a in document["attacks"]})


def test_the_store_is_read_once_per_ttl() -> None:
    reads, now = [], [0.0]
    record = AuditRecord(
        1, "m", None, None, {}, {"attacks": {"loss": {"auc": 0.7, "tpr_at_fpr": {}}}}, "pass", None, None,
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip

    def latest(model: str) -> AuditRecord:
        reads.append(model)
        return record

    collector = LeakageCollector("m", latest, ttl=10.0, clock=lambda: now[0])
    for t in (0.0, 5.0, 9.9, 10.0):
        now[0] = t
        families = {f.name: f for f in collector.collect()}
    assert reads == ["m", "m"]
    assert families["membershield_gate_passed"].samples[0].value == 1.0
    assert [f.samples for f in leakage_families("m", None)] == [[]] * 5


def test_the_grafana_dashboard_asks_only_for_exported_metrics(digits_audit, tmp_path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions += [v["query"] for v in dashboard["templating"]["list"]]
    used = {name for e in expressions for name in re.findall(r"\bmembershield_[a-z_]+", e)}
    config = guard_config(str(digits_audit.overfit_model), None, policy_from_dict(OPEN_LIMITS), str(tmp_path / "g.db"))
    with serving(create_app(config)) as url:
        exported = set(_scrape(url))
    # the parser names a counter's family without its _total suffix
    missing = {name for name in used if name.removesuffix("_total") not in exported}
    assert not missing and len(used) >= 5, (missing, used)
