"""What a probing key learnt, against ground truth: a scripted client sweeps audit records (members and
non-members it knows) through a guard in front of a memorising model, and the incident (GET
/v1/alerts/{id}, the dashboard, `membershield incident`) must say how many were members and how many an
attacker confirms at 1% FPR with the hardened answers the client received, matching the same numbers
worked out here offline from the audit's cached reference models. A model that never saw its "members"
leaves nothing to confirm beyond chance."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from membershield.attacks import AttackInputs, create_attack
from membershield.audit.prepare import prepare_audit
from membershield.config import AuditConfig
from membershield.defenses.output import OutputPolicy, harden
from membershield.guard.app import create_app, guard_config
from membershield.guard.keys import issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from membershield.training import LogitCache, train_or_load
from tests.guard_server import serving
from tests.test_cli import assert_one_line_error, run_cli

ATTACKS = ("lira", "rmia", "loss")
POLICY = {
    "output": {"round_decimals": 2},  # the answers the key gets are hardened
    "limits": {"requests_per_minute": 100_000, "daily_query_budget": 10_000_000},
    "detector": {"sweep_count": 100},
}
ASKED_MEMBERS, ASKED_NONMEMBERS, ASKED_UNKNOWN, PERTURBED = 120, 80, 20, 10


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Members, non-members and population tables; a memorising forest and one that never saw the members;
    each audited (LiRA, RMIA, LOSS; 8 reference models, cached) into one store."""
    base = tmp_path_factory.mktemp("incident")
    X, y = make_classification(n_samples=1400, n_features=12, n_informative=6, flip_y=0.15, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(12)]).assign(label=y)
    parts = {"members": frame.iloc[:500], "nonmembers": frame.iloc[500:1000], "population": frame.iloc[1000:]}
    for name, part in parts.items():
        part.to_csv(base / f"{name}.csv", index=False)
    features = [c for c in frame.columns if c != "label"]
    leaky = RandomForestClassifier(n_estimators=30, random_state=0).fit(parts["members"][features].values, y[:500])
    unseen = RandomForestClassifier(n_estimators=30, random_state=0).fit(parts["population"][features].values, y[1000:])
    joblib.dump(leaky, base / "credit.joblib")
    joblib.dump(unseen, base / "unseen.joblib")
    return base, {name: pd.read_csv(base / f"{name}.csv") for name in parts}


def _audit(monkeypatch, capsys, base: Path, model: str) -> Path:
    out = base / f"audit-{model}"
    args = ["audit", "--model", str(base / f"{model}.joblib"), "--train", str(base / "members.csv")]
    args += ["--holdout", str(base / "nonmembers.csv"), "--population", str(base / "population.csv")]
    args += ["--label-column", "label", "--attacks", ",".join(ATTACKS), "--references", "8"]
    args += ["--cache", str(base / "cache"), "--out", str(out), "--store", str(base / "guard.db")]
    args += ["--model-name", model]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    return out / "audit.json"


def _probe(url: str, token: str, tables: dict[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scripted prober: audit members and non-members, unknown records and perturbed copies of one
    member, 10 records a request. Returns the records it sent exactly, their answers, and the truth."""
    values = {name: t.drop(columns="label").to_numpy() for name, t in tables.items()}
    asked = np.concatenate(
        [
            values["members"][:ASKED_MEMBERS],
            values["nonmembers"][:ASKED_NONMEMBERS],
            values["population"][:ASKED_UNKNOWN],
        ]
    )
    rng = np.random.default_rng(0)
    copies = values["members"][400] * (1 + rng.normal(0, 0.01, (PERTURBED, 12)))
    sent, answers = np.concatenate([asked, copies]), []
    for start in range(0, len(sent), 10):
        reply = httpx.post(
            f"{url}/v1/predict", json={"records": sent[start : start + 10].tolist()}, headers=_bearer(token)
        )
        assert reply.status_code == 200, reply.text
        answers += [p["probabilities"] for p in reply.json()["predictions"]]
    truth = np.r_[np.ones(ASKED_MEMBERS, bool), np.zeros(ASKED_NONMEMBERS, bool)]
    return asked[: ASKED_MEMBERS + ASKED_NONMEMBERS], np.asarray(answers)[: ASKED_MEMBERS + ASKED_NONMEMBERS], truth


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def offline_confirmed(audit_file: Path, model_file: Path, asked_rows: np.ndarray, answers: np.ndarray) -> dict:
    """The incident's figures worked out here: the audit's own reference models from its cache (nothing
    trains), the model's probabilities rounded as the guard rounds them with the prober's answers in place,
    each attack's scores, and a threshold that flags at most 1% of the audit's non-members."""
    document = json.loads(audit_file.read_text())
    known = {f.name for f in fields(AuditConfig)}
    prepared = prepare_audit(AuditConfig(**{k: v for k, v in document["config"].items() if k in known}))
    references, report = train_or_load(
        prepared.loaded.recipe, prepared.features, prepared.raw_labels, prepared.classes, prepared.jobs,
        prepared.data_fingerprint, LogitCache(document["config"]["cache"]),
    )  # fmt: skip
    assert report.trained == 0  # the audit's own models
    policy = OutputPolicy(round_decimals=2)
    model = joblib.load(model_file)
    target = harden(model.predict_proba(prepared.features.to_numpy()), policy)
    n = prepared.n_audit
    rows = prepared.features.iloc[:n].to_numpy()
    index = [int(np.flatnonzero((rows == r).all(axis=1))[0]) for r in asked_rows]
    np.testing.assert_allclose(target[index], answers, atol=0.0100001)  # the guard answered this model
    target[index] = answers
    hardened_refs = np.stack([harden(softmax(r.astype(np.float64), axis=1), policy) for r in references])

    def logits(p: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(p), np.log(1e-30)).astype(np.float32)

    inputs = AttackInputs(prepared.labels, logits(target), logits(hardened_refs), prepared.keep, n, 0)
    member = np.asarray(prepared.pool.is_member)
    asked = np.zeros(n, bool)
    asked[index] = True
    out = {}
    for name in ATTACKS:
        scores = create_attack(name).score(inputs)[:n]
        ranked = np.sort(scores[~member])[::-1]
        bar = ranked[int(np.floor(0.01 * len(ranked)))]  # the first non-member score not let through
        flagged = scores > bar
        out[name] = (int((flagged & asked & member).sum()), int((flagged & asked & ~member).sum()))
    return out


def test_the_incident_says_what_a_probing_key_learnt(audited, tmp_path, monkeypatch, capsys) -> None:
    base, tables = audited
    audit_file = _audit(monkeypatch, capsys, base, "credit")
    store = str(base / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
        prober = issue_key(opened, "partner-app", owner="mallory@example.com")
        honest = issue_key(opened, "reporting")
    config = guard_config(str(base / "credit.joblib"), None, policy_from_dict(POLICY), store)
    with serving(create_app(config)) as url:
        asked, answers, truth = _probe(url, prober, tables)
        normal = tables["nonmembers"].drop(columns="label").to_numpy()[200:230].tolist()
        assert httpx.post(f"{url}/v1/predict", json={"records": normal}, headers=_bearer(honest)).status_code == 200
        (alert,) = httpx.get(f"{url}/v1/alerts", headers=_bearer(admin)).json()["alerts"]
        assert alert["key"] == "partner-app" and alert["pattern"] == "population sweep"
        incident = httpx.get(f"{url}/v1/alerts/{alert['id']}", headers=_bearer(admin)).json()
        assert httpx.get(f"{url}/v1/alerts/{alert['id']}", headers=_bearer(honest)).status_code == 403
        missing = httpx.get(f"{url}/v1/alerts/999", headers=_bearer(admin))
        assert missing.status_code == 404 and "no alert #999" in missing.json()["error"]
        page = httpx.get(f"{url}/", params={"key": admin}).text

    assert incident["learnt_error"] is None, incident["learnt_error"]
    learnt = incident["learnt"]
    assert incident["key"]["owner"] == "mallory@example.com" and incident["key"]["name"] == "partner-app"
    assert learnt["audit"]["model"] == "credit" and learnt["audit"]["n_references"] == 8
    total = ASKED_MEMBERS + ASKED_NONMEMBERS + ASKED_UNKNOWN + PERTURBED
    assert learnt["queried"]["records"] == total and learnt["queried"]["requests"] == total // 10
    assert learnt["matched"] == {
        "records": ASKED_MEMBERS + ASKED_NONMEMBERS,
        "members": int(truth.sum()),
        "nonmembers": int((~truth).sum()),
        "queries": ASKED_MEMBERS + ASKED_NONMEMBERS,
        "answers_known": ASKED_MEMBERS + ASKED_NONMEMBERS,
    }
    assert learnt["near"] == {"records": 1, "members": 1, "queries": PERTURBED}
    assert learnt["unknown_records"] == ASKED_UNKNOWN

    expected = offline_confirmed(audit_file, base / "credit.joblib", asked, answers)
    for name, (members, nonmembers) in expected.items():
        got = learnt["by_attack"][name]
        assert (got["confirmed_members"], got["flagged_nonmembers"]) == (members, nonmembers), name
    confirmable = learnt["confirmable"]
    best = confirmable["attack"]
    assert confirmable["measurable"] and confirmable["members"]["count"] == expected[best][0]
    # ground truth: the forest memorised its members, and the attacker is held to 1% of the non-members
    assert confirmable["members"]["count"] >= 20 and confirmable["members"]["of"] == ASKED_MEMBERS
    assert confirmable["flagged_nonmembers"] <= 5
    assert confirmable["members"]["ci_low"] <= confirmable["members"]["rate"] <= confirmable["members"]["ci_high"]
    assert any("population sweep" in step for step in incident["steps_taken"])
    assert any("keys revoke 'partner-app'" in step for step in incident["next_steps"])
    assert f"{ASKED_MEMBERS + ASKED_NONMEMBERS} audit records asked ({ASKED_MEMBERS} members)" in page
    assert f"{confirmable['members']['count']} confirmable at 1% FPR ({best})" in page

    code, _, err = run_cli(monkeypatch, capsys, "keys", "revoke", "partner-app", "--store", store)
    assert code == 0, err
    report = tmp_path / "incident.md"
    code, _, err = run_cli(
        monkeypatch, capsys, "incident", str(alert["id"]), "--store", store, "--out", str(report), "--json",
        str(tmp_path / "incident.json"),
    )  # fmt: skip
    assert code == 0, err
    text = report.read_text()
    assert f"**{ASKED_MEMBERS + ASKED_NONMEMBERS} of them are audit records: {ASKED_MEMBERS} members**" in text
    assert f"confirms **{confirmable['members']['count']} of the {ASKED_MEMBERS} members**" in text
    assert "mallory@example.com" in text and "`partner-app`" in text and "## Evidence" in text
    assert "distinct_records" in text and "the key was revoked" in text and "## Next steps" not in text
    saved = json.loads((tmp_path / "incident.json").read_text())
    assert saved["learnt"]["by_attack"] == learnt["by_attack"]


def test_a_model_that_never_saw_the_members_leaves_nothing_to_confirm(audited, monkeypatch, capsys) -> None:
    base, tables = audited
    _audit(monkeypatch, capsys, base, "unseen")
    store = str(base / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops-unseen", admin=True)
        prober = issue_key(opened, "sweeper")
    config = guard_config(str(base / "unseen.joblib"), None, policy_from_dict(POLICY), store)
    with serving(create_app(config)) as url:
        _probe(url, prober, tables)
        (alert,) = httpx.get(f"{url}/v1/alerts", headers=_bearer(admin)).json()["alerts"]
        learnt = httpx.get(f"{url}/v1/alerts/{alert['id']}", headers=_bearer(admin)).json()["learnt"]
    assert learnt["audit"]["model"] == "unseen" and learnt["matched"]["members"] == ASKED_MEMBERS
    for entry in learnt["by_attack"].values():
        # at 1% FPR, chance confirms about 1 of 120 members; 5 or more would happen with probability < 0.01
        assert entry["confirmed_members"] < 5 and entry["flagged_nonmembers"] <= 5


def test_an_incident_that_cannot_be_told_says_why(audited, tmp_path, monkeypatch, capsys) -> None:
    base, _ = audited
    store = str(tmp_path / "empty.db")
    code, _, err = run_cli(monkeypatch, capsys, "incident", "7", "--store", store)
    assert_one_line_error(code, err, "no alert #7")
    with open_store(store) as opened:
        issue_key(opened, "k")
        opened.record_alert("k", "credit", "population sweep", {"distinct_records": 100}, pd.Timestamp.now("UTC"))
    code, out, err = run_cli(monkeypatch, capsys, "incident", "1", "--store", store)
    assert code == 0, err
    assert "Cannot be told: no usable audit of model 'credit'" in out
    # an audit whose reference models are gone from its cache is never retrained for an incident
    audit = json.loads((base / "audit-credit" / "audit.json").read_text())
    audit["config"]["cache"] = str(tmp_path / "empty-cache")
    copy = tmp_path / "audit.json"
    copy.write_text(json.dumps(audit))
    code, out, err = run_cli(monkeypatch, capsys, "incident", "1", "--store", store, "--audit", str(copy))
    assert code == 0, err
    assert "are not in its cache" in out and "never trains" in out
    shutil.rmtree(tmp_path / "empty-cache", ignore_errors=True)
