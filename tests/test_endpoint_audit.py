"""Black-box audits of a live endpoint: the guard served by uvicorn on loopback in front of a model file is
audited over HTTP and gives the file's own numbers; hardened answers give less, and exactly the attacks
their access allows; secrets stay out of every file; every failure of the endpoint is one line, exit 2,
and what was fetched stays cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import fake_json_upstream, serving
from tests.test_cli import assert_one_line_error, run_cli

ATTACKS = "loss,confidence,lira,label-only-gap"
OPEN_LIMITS = {
    "limits": {"requests_per_minute": 1_000_000, "daily_query_budget": 10_000_000},
    "detector": {"enabled": False},
}


def _guard(tmp_path: Path, model: Path, output: dict | None = None):
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        key = issue_key(opened, "auditor")
    policy = policy_from_dict(OPEN_LIMITS | ({"output": output} if output else {}))
    return key, serving(create_app(guard_config(str(model), None, policy, store)))


def _audit(monkeypatch, capsys, digits_audit, out: Path, model: str, *extra: str) -> tuple[int, dict, str]:
    args = ["audit", "--model", model, "--train", str(digits_audit.members), "--holdout", str(digits_audit.nonmembers)]
    args += ["--label-column", "digit", "--references", "4", "--out", str(out)]
    args += ["--cache", str(out.parent / "cache"), *extra]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    document = json.loads((out / "audit.json").read_text()) if code == 0 else {}
    return code, document, err


def _by_name(document: dict) -> dict:
    return {a["name"]: a for a in document["attacks"]}


@pytest.mark.slow
def test_guard_over_http_gives_the_files_numbers_and_hardening_lowers_them(
    digits_audit, tmp_path, monkeypatch, capsys
) -> None:
    model = str(digits_audit.overfit_model)
    code, direct, err = _audit(monkeypatch, capsys, digits_audit, tmp_path / "file", model, "--attacks", ATTACKS)
    assert code == 0, err
    key, server = _guard(tmp_path, digits_audit.overfit_model)
    monkeypatch.setenv("MS_AUDIT_KEY", key)
    with server as url:
        endpoint = [f"{url}/v1/predict", "--recipe", model, "--header", "Authorization: Bearer ${MS_AUDIT_KEY}"]
        endpoint += ["--attacks", ATTACKS]
        code, remote, err = _audit(monkeypatch, capsys, digits_audit, tmp_path / "http", *endpoint)
    assert code == 0, err
    assert remote["target"]["kind"] == "http-endpoint" and remote["target"]["access"] == "black-box"
    assert remote["target"]["endpoint"]["answers"] == "every class's probability"
    for name, attack in _by_name(direct).items():
        there = _by_name(remote)[name]
        assert there["auc"] == pytest.approx(attack["auc"], abs=1e-3), name
        assert [r["tp"] for r in there["tpr_at_fpr"]] == [r["tp"] for r in attack["tpr_at_fpr"]], name
    written = "".join(p.read_text() for p in (tmp_path / "http").iterdir() if p.suffix in (".json", ".html", ".md"))
    assert key not in written and "${MS_AUDIT_KEY}" in (tmp_path / "http" / "audit.json").read_text()
    report = (tmp_path / "http" / "report.html").read_text()
    assert "black-box attacker of a deployed endpoint" in report and "every class&#39;s probability" in report

    key, server = _guard(tmp_path / "clip", digits_audit.overfit_model, {"clip_top1": 0.9, "round_decimals": 1})
    (tmp_path / "clip").mkdir(exist_ok=True)
    with server as url:
        headers = ["--header", f"Authorization: Bearer {key}"]
        code, clipped, err = _audit(
            monkeypatch, capsys, digits_audit, tmp_path / "clipped", f"{url}/v1/predict", "--recipe", model,
            *headers, "--attacks", ATTACKS,
        )  # fmt: skip
    assert code == 0, err
    assert key not in (tmp_path / "clipped" / "audit.json").read_text()
    assert _by_name(clipped)["lira"]["auc"] < _by_name(remote)["lira"]["auc"] - 0.05


@pytest.mark.slow
def test_a_label_only_guard_runs_exactly_the_label_only_attacks(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    key, server = _guard(tmp_path, digits_audit.overfit_model, {"label_only": True})
    with server as url:
        endpoint = [f"{url}/v1/predict", "--header", f"Authorization: Bearer {key}", "--batch-size", "256"]
        code, document, err = _audit(monkeypatch, capsys, digits_audit, tmp_path / "labels", *endpoint)
    assert code == 0, err
    assert document["target"]["access"] == "label-only"
    assert sorted(_by_name(document)) == ["label-only-gap", "label-only-noise"]
    skipped = [w for w in document["warnings"] if w.startswith("skipped")]
    assert any("'lira': it needs reference models" in w and "--recipe" in w for w in skipped)
    assert any("'loss': it needs probabilities" in w and "labels only" in w for w in skipped)


def test_endpoint_failures_are_one_line_and_keep_what_was_fetched(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    run = lambda out, url, *extra: _audit(  # noqa: E731
        monkeypatch, capsys, digits_audit, tmp_path / out, url, "--attacks", "loss", *extra
    )
    code, _, err = run("closed", "http://127.0.0.1:9/v1/predict")
    assert_one_line_error(code, err, "cannot reach http://127.0.0.1:9/v1/predict", "is the server running")

    _key, server = _guard(tmp_path, digits_audit.overfit_model)
    with server as url:
        code, _, err = run("nokey", f"{url}/v1/predict")
        assert_one_line_error(code, err, "answered 401", "--header")
        code, _, err = run("budget", f"{url}/v1/predict", "--max-queries", "100")
        assert_one_line_error(code, err, "needs 1200 more queries", "raise --max-queries to at least 1200")
        code, _, err = run("unset", f"{url}/v1/predict", "--header", "Authorization: Bearer ${MS_NOT_SET}")
        assert_one_line_error(code, err, "${MS_NOT_SET}", "not set")

    asked, answered = [], []

    def flaky(body: dict) -> dict | bytes:
        asked.append(len(body["records"]))
        if len(answered) == 3:
            return b"<html>busy</html>"  # the server breaks after three batches
        answered.append(len(body["records"]))
        return {"predictions": [{"label": 0, "probabilities": [0.1] * 10} for _ in body["records"]]}

    with fake_json_upstream(flaky, "/v1/predict") as url:
        code, _, err = run("broken", url)
        assert_one_line_error(code, err, "not JSON", "--api-format membershield")
        assert sum(asked) == 4 * 64  # three batches answered, the fourth broke
        asked.clear()
        code, _, err = run("broken", url)  # resumes: the three answered batches are not asked again
        assert sum(asked) == 64 and code == 2

    with fake_json_upstream(lambda body: {"predictions": [[0.5, 0.5]] * len(body["dataframe_split"]["data"])}) as url:
        code, _, err = run("classes", url, "--api-format", "mlflow")
        assert_one_line_error(code, err, "probabilities for 2 classes", "10 labels")
    with fake_json_upstream(lambda body: {"outputs": [{"name": "p", "shape": [1], "data": [1]}]}) as url:
        code, _, err = run("shape", url, "--api-format", "kserve-v2")
        assert_one_line_error(code, err, "not a kserve-v2 answer")


def test_the_client_waits_out_429_and_5xx_as_told_and_then_answers() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pandas as pd

    from membershield.endpoint.client import EndpointClient, QueryPolicy
    from membershield.endpoint.formats import FORMATS

    statuses = [429, 503]  # then 200

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            records = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["records"]
            status = statuses.pop(0) if statuses else 200
            body = json.dumps({"predictions": [{"label": 1, "probabilities": [0.2, 0.8]} for _ in records]}).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "2")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    waits: list[float] = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/predict"
        client = EndpointClient(url, FORMATS["membershield"], {}, QueryPolicy(batch_size=2), sleep=waits.append)
        answers = client.answers(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))
    finally:
        server.shutdown()
    assert [a["label"] for a in answers] == [1, 1, 1] and client.sent == 3
    assert waits == [2.0, 0.5]  # Retry-After first, then the exponential backoff of the second attempt
