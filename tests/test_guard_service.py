"""The guard service over real HTTP: uvicorn on a loopback port, httpx as the client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import fake_json_upstream, serving


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    path = tmp_path_factory.mktemp("iris") / "iris.joblib"
    joblib.dump(model, path)
    return path, model, X


@contextmanager
def guard(tmp_path: Path, model: Path | None, policy: dict, upstream: str | None = None) -> Iterator[tuple]:
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
        user = issue_key(opened, "alice")
    config = guard_config(str(model) if model else None, upstream, policy_from_dict(policy), store)
    with serving(create_app(config)) as url:
        yield url, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {user}"}, store


def test_keys_are_required_and_stored_hashed(tmp_path, iris):
    path, _, X = iris
    body = {"records": X.iloc[:2].values.tolist()}
    with guard(tmp_path, path, {}) as (url, _admin, user, store):
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        missing = httpx.post(f"{url}/v1/predict", json=body)
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
        wrong = httpx.post(f"{url}/v1/predict", json=body, headers={"Authorization": "Bearer msk_nope"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "unknown API key"}
        assert httpx.post(f"{url}/v1/predict", json=body, headers=user).status_code == 200
        token = user["Authorization"].split()[1]
    raw = Path(store).read_bytes()
    assert token.encode() not in raw


def test_outputs_are_hardened_and_keep_the_models_label(tmp_path, iris):
    path, model, X = iris
    rows = X.iloc[::7]
    with guard(tmp_path, path, {"output": {"clip_top1": 0.8, "round_decimals": 2, "top_k": 2}}) as (url, _, user, _s):
        answer = httpx.post(f"{url}/v1/predict", json={"records": rows.values.tolist()}, headers=user)
        keyed = httpx.post(f"{url}/v1/predict", json={"records": rows.to_dict("records")}, headers=user)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == model.predict(rows).tolist()
    assert keyed.json()["predictions"] == predictions
    proba = np.array([p["probabilities"] for p in predictions])
    assert (proba.max(axis=1) <= 0.8 + 1e-6).all()
    assert ((proba > 0).sum(axis=1) <= 2).all()
    assert np.allclose(proba, np.round(proba, 2), atol=1e-6)


def test_label_only_returns_no_probabilities(tmp_path, iris):
    path, model, X = iris
    with guard(tmp_path, path, {"output": {"label_only": True}}) as (url, _, user, _s):
        answer = httpx.post(f"{url}/v1/predict", json={"records": X.iloc[:5].values.tolist()}, headers=user).json()
    assert answer["predictions"] == [{"label": int(c)} for c in model.predict(X.iloc[:5])]


def test_rate_limit_and_daily_budget_answer_429_with_retry_after(tmp_path, iris):
    path, _, X = iris
    one = {"records": X.iloc[:1].values.tolist()}
    with guard(tmp_path, path, {"limits": {"requests_per_minute": 3, "daily_query_budget": 50}}) as (url, a, u, _s):
        codes = [httpx.post(f"{url}/v1/predict", json=one, headers=u).status_code for _ in range(3)]
        limited = httpx.post(f"{url}/v1/predict", json=one, headers=u)
        assert codes == [200, 200, 200]
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "3 requests per minute" in limited.json()["error"]
        big = httpx.post(f"{url}/v1/predict", json={"records": X.iloc[:60].values.tolist()}, headers=a)
        assert big.status_code == 429 and int(big.headers["Retry-After"]) > 0
        assert "daily budget of 50 records" in big.json()["error"]
        fifty = {"records": X.iloc[:50].values.tolist()}
        assert httpx.post(f"{url}/v1/predict", json=fifty, headers=a).status_code == 200


def test_bad_inputs_get_clear_errors_and_the_service_stays_up(tmp_path, iris):
    path, _, X = iris
    with guard(tmp_path, path, {"server": {"max_body_bytes": 4096}}) as (url, _, user, store):
        post = lambda **kw: httpx.post(f"{url}/v1/predict", headers=user, **kw)  # noqa: E731
        malformed = post(content=b'{"records": [[1, 2,')
        assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
        short = post(json={"records": [[1.0, 2.0, 3.0]]})
        assert short.status_code == 422 and "has 3 features; the model expects 4" in short.json()["error"]
        missing = post(json={"records": [{"sepal length (cm)": 1.0}]})
        assert missing.status_code == 422 and "lacks column" in missing.json()["error"]
        assert post(json={"records": [[1, 2, "x", 4]]}).status_code == 422
        assert post(json={"rows": []}).status_code == 422
        assert post(json={"records": []}).status_code == 422
        huge = post(json={"records": X.values.tolist() * 3})
        assert huge.status_code == 413 and "4096 bytes" in huge.json()["error"]
        assert post(json={"records": X.iloc[:1].values.tolist()}).status_code == 200
    with open_store(store) as opened:
        assert opened.guard_request_count() == 8


def _spam_predictions(request: dict) -> dict:
    prediction = {
        "label": "spam",
        "probabilities": [0.99, 0.01],
        "text": "Reach jane.doe@example.com or +1 (415) 555-2671; card 4111 1111 1111 1111, order 4111 1111"
        " 1111 1112, SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32 from 10.0.0.7",
    }
    return {"predictions": [prediction for _ in request["records"]]}


def test_upstream_text_is_redacted_and_probabilities_hardened(tmp_path):
    with (
        fake_json_upstream(_spam_predictions, "/predict") as address,
        guard(tmp_path, None, {"output": {"clip_top1": 0.9}}, upstream=address) as (url, _, user, _s),
    ):
        answer = httpx.post(f"{url}/v1/predict", json={"records": [[1, 2], [3, 4]]}, headers=user)
        metrics = httpx.get(f"{url}/metrics").text
    assert answer.status_code == 200, answer.text
    first = answer.json()["predictions"][0]
    assert first["label"] == "spam" and first["probabilities"] == pytest.approx([0.9, 0.1])
    text = first["text"]
    for secret in ("jane.doe@example.com", "555-2671", "4111 1111 1111 1111,", "123-45-6789", "GB82", "10.0.0.7"):
        assert secret not in text, text
    for tag in ("[EMAIL]", "[PHONE]", "[CREDIT_CARD]", "[US_SSN]", "[IBAN]", "[IP_ADDRESS]"):
        assert tag in text
    assert "4111 1111 1111 1112" in text  # fails the Luhn check: not a card number
    assert 'membershield_guard_redactions_total{kind="EMAIL"} 2.0' in metrics


@pytest.mark.parametrize("probabilities", [[-0.5, 1.5], [0.0, 0.0], [1e308, 1e308]])
def test_upstream_probabilities_that_are_no_distribution_are_a_502(tmp_path, probabilities):
    def broken(request: dict) -> dict:
        return {"predictions": [{"label": "spam", "probabilities": probabilities} for _ in request["records"]]}

    with (
        fake_json_upstream(broken, "/predict") as address,
        guard(tmp_path, None, {}, upstream=address) as (url, _, user, _s),
    ):
        answer = httpx.post(f"{url}/v1/predict", json={"records": [[1, 2]]}, headers=user)
    assert answer.status_code == 502, answer.text
    assert "negative, not finite or all zero" in answer.json()["error"]


def test_upstream_down_is_502_and_logged(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/predict"
    with guard(tmp_path, None, {}, upstream=dead) as (url, _, user, store):
        down = httpx.post(f"{url}/v1/predict", json={"records": [[1, 2]]}, headers=user)
        assert down.status_code == 502 and "unreachable" in down.json()["error"]
        assert httpx.get(f"{url}/healthz").status_code == 200
    with open_store(store) as opened:
        assert opened.guard_request_count() == 1


def test_probing_raises_a_stored_alert_and_throttles(tmp_path, iris):
    path, _, X = iris
    policy = {"detector": {"near_count": 10, "throttle": True, "throttle_seconds": 120}}
    rng = np.random.default_rng(0)
    record = X.iloc[0].to_numpy()
    with guard(tmp_path, path, policy) as (url, admin, user, store):
        for _ in range(12):
            probe = (record * (1 + rng.normal(0, 0.01, record.shape))).tolist()
            status = httpx.post(f"{url}/v1/predict", json={"records": [probe]}, headers=user).status_code
        assert status == 429  # throttled after the alert
        throttled = httpx.post(f"{url}/v1/predict", json={"records": [record.tolist()]}, headers=user)
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 100
        assert httpx.get(f"{url}/v1/alerts", headers=user).status_code == 403
        alerts = httpx.get(f"{url}/v1/alerts", headers=admin).json()["alerts"]
        metrics = httpx.get(f"{url}/metrics").text
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["key"] == "alice" and alert["pattern"] == "perturbation probing"
    assert alert["evidence"]["near_duplicates"] >= 10 and alert["evidence"]["relative_l2_max"] <= 0.1
    assert alert["time"]
    with open_store(store) as opened:
        assert opened.alerts()[0]["id"] == alert["id"]
    assert 'membershield_guard_alerts_total{pattern="perturbation probing"} 1.0' in metrics
    assert 'membershield_guard_rejections_total{reason="throttled"}' in metrics
    assert 'membershield_guard_requests_total{endpoint="/v1/predict",status="200"} 11.0' in metrics
    assert "membershield_guard_request_seconds_bucket" in metrics


def _probe(url: str, headers: dict, record: np.ndarray, times: int) -> list[int]:
    rng = np.random.default_rng(0)
    return [
        httpx.post(
            f"{url}/v1/predict", json={"records": [(record * (1 + rng.normal(0, 0.01, record.shape))).tolist()]},
            headers=headers,
        ).status_code
        for _ in range(times)
    ]  # fmt: skip


@pytest.mark.parametrize("huge", [[1e160, 1.0, 1.0, 1.0], [1e200, 1e200, 1e200, 1e200]])
def test_a_huge_value_does_not_switch_off_probing_detection(tmp_path, iris, huge):
    path, _, X = iris
    policy = {"detector": {"near_count": 10, "throttle": True}}
    record = X.iloc[0].to_numpy()
    with guard(tmp_path, path, policy) as (url, admin, user, _store):
        fresh = _probe(url, admin, record, 12)
        first = httpx.post(f"{url}/v1/predict", json={"records": [huge]}, headers=user)
        assert first.status_code in (200, 422), first.text  # scored, or refused as beyond the model's range
        poisoned = _probe(url, user, record, 12)
        alerts = httpx.get(f"{url}/v1/alerts", headers=admin).json()["alerts"]
    assert fresh == poisoned == [200] * 11 + [429]  # the 11th probe is the 10th near-duplicate: alert, throttle
    assert sorted(a["key"] for a in alerts) == ["alice", "ops"]
    assert alerts[0]["evidence"] == alerts[1]["evidence"]


@pytest.mark.parametrize(
    "body",
    [
        '{"records": [[1, 2, 3, 4]], "\\ud800": 1}',
        '{"records": [{"sepal length (cm)": 1, "\\udc00x": 2}]}',
        '{"records": [[1, 2, 3, "\\ud800"]]}',
        '{"records": [[1, 2, 3, 4]], "\\ud83d": 1, "big": 123456789012345678901234567890}',
        '["\\udfff"]',
    ],
)
def test_lone_surrogates_are_refused_with_the_usual_error(tmp_path, iris, body):
    path, _, X = iris
    with guard(tmp_path, path, {}) as (url, _admin, user, store):
        answer = httpx.post(f"{url}/v1/predict", content=body.encode(), headers=user)
        assert answer.status_code == 400, answer.text
        assert "surrogate" in answer.json()["error"] and "\n" not in answer.json()["error"]
        pair = b'{"records": [[1, 2, 3, 4]], "\\ud83d\\ude00": 1}'  # a valid pair: an ordinary 422
        emoji = httpx.post(f"{url}/v1/predict", content=pair, headers=user)
        assert emoji.status_code == 422 and "\U0001f600" in emoji.json()["error"]
        deep = httpx.post(f"{url}/v1/predict", content=b"[" * 5000 + b"]" * 5000, headers=user)
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
        assert httpx.post(f"{url}/v1/predict", json={"records": X.iloc[:1].values.tolist()}, headers=user).is_success
    with open_store(store) as opened:
        assert opened.guard_request_count() == 4


def test_wrong_method_and_missing_endpoint_get_the_usual_error(tmp_path, iris):
    path, _, _X = iris
    with guard(tmp_path, path, {}) as (url, admin, user, store):
        method = httpx.get(f"{url}/v1/predict", headers=user)
        other = httpx.post(f"{url}/v1/generate", json={"prompt": "x"}, headers=user)
        unknown = httpx.get(f"{url}/v2/nothing%0Ahere", headers=user)
        alerts = httpx.post(f"{url}/v1/alerts", headers=admin)
    assert method.status_code == 405 and method.headers["Allow"] == "POST"
    assert method.json() == {"error": "GET is not allowed on /v1/predict: use POST"}
    assert other.status_code == 404
    assert other.json() == {"error": "no endpoint /v1/generate: this guard serves a classifier at POST /v1/predict"}
    assert unknown.status_code == 404 and list(unknown.json()) == ["error"] and "\n" not in unknown.json()["error"]
    assert alerts.status_code == 405 and alerts.json() == {"error": "POST is not allowed on /v1/alerts: use GET"}
    with open_store(store) as opened:
        assert opened.guard_request_count() == 3  # the /v1 calls; an unknown path is not logged


def test_daily_budget_and_top_keys_are_per_model(tmp_path, iris):
    path, _, X = iris
    store = str(tmp_path / "shared.db")
    with open_store(store) as opened:
        admin = {"Authorization": f"Bearer {issue_key(opened, 'ops', admin=True)}"}
        user = {"Authorization": f"Bearer {issue_key(opened, 'alice')}"}
    policy = policy_from_dict({"limits": {"daily_query_budget": 20}})
    twenty = {"records": X.iloc[:20].values.tolist()}
    one = {"records": X.iloc[:1].values.tolist()}

    def serve(name: str):
        return serving(create_app(guard_config(str(path), None, policy, store, model_name=name)))

    with serve("fraud") as url:
        assert httpx.post(f"{url}/v1/predict", json=twenty, headers=user).status_code == 200
        assert httpx.post(f"{url}/v1/predict", json=one, headers=user).status_code == 429
    with serve("churn") as url:  # another model on the same store: its own budget, its own top keys
        assert httpx.post(f"{url}/v1/predict", json=one, headers=user).status_code == 200
        assert httpx.post(f"{url}/v1/predict", json=one, headers=admin).status_code == 200
        page = httpx.get(f"{url}/", headers=admin).text
    with serve("fraud") as url:  # a restart still remembers what alice spent on this model
        assert httpx.post(f"{url}/v1/predict", json=one, headers=user).status_code == 429
        assert httpx.post(f"{url}/v1/predict", json=one, headers=admin).status_code == 200
    top = page[page.index('id="top-keys"') : page.index("<h2>Policy")]
    today = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td><td>(\d+)</td></tr>", top)
    assert sorted(today) == [("alice", "1", "1"), ("ops", "1", "1")]
    assert "alice (1 records)" in top and "alice (20" not in top and "alice (21" not in top
    with open_store(store) as opened:
        fraud = opened.guard_usage(model_name="fraud")
        churn = opened.guard_usage(model_name="churn")
        both = opened.guard_usage()
    assert [(u["key"], u["records"]) for u in fraud] == [("alice", 20), ("ops", 1)]
    assert sorted((u["key"], u["records"]) for u in churn) == [("alice", 1), ("ops", 1)]
    # ops also opened the dashboard on churn: a page view is no query
    assert sorted((u["key"], u["requests"]) for u in churn) == [("alice", 1), ("ops", 1)]
    assert [(u["key"], u["records"]) for u in both] == [("alice", 21), ("ops", 2)]
