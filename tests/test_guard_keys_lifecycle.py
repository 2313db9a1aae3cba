"""Key lifecycle against a running guard (uvicorn on a loopback port): a revoked key is refused within a
second, a rotated key's old secret works for its grace period and then stops, and `keys list` shows when
each key was last used. The commands run as a user runs them (the CLI), on the store the guard reads."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from membershield.guard.app import create_app, guard_config
from membershield.guard.keys import issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import serving
from tests.test_cli import assert_one_line_error, run_cli

OPEN_LIMITS = {"limits": {"requests_per_minute": 100_000, "daily_query_budget": 10_000_000}}


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    X, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("iris") / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path, X[:2].tolist()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _predict(url: str, token: str, records: list) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", json={"records": records}, headers=_bearer(token))


def _until_refused(url: str, token: str, records: list, limit: float = 5.0) -> tuple[float, httpx.Response]:
    """Seconds until the guard refuses ``token`` (asking every 20 ms), and the refusal."""
    start = time.monotonic()
    while True:
        answer = _predict(url, token, records)
        if answer.status_code != 200 or time.monotonic() - start > limit:
            return time.monotonic() - start, answer
        time.sleep(0.02)


def test_a_revoked_key_is_refused_within_a_second(tmp_path, iris_model, monkeypatch, capsys) -> None:
    model, records = iris_model
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
        alice = issue_key(opened, "alice", owner="alice@example.com")
    config = guard_config(str(model), None, policy_from_dict(OPEN_LIMITS), store)
    with serving(create_app(config)) as url:
        assert _predict(url, alice, records).status_code == 200
        code, out, err = run_cli(monkeypatch, capsys, "keys", "revoke", "alice", "--store", store)
        assert code == 0, err
        assert "revoked 'alice'" in out
        elapsed, refused = _until_refused(url, alice, records)
        assert refused.status_code == 401 and elapsed < 1.0, (elapsed, refused.text)
        assert "API key 'alice' was revoked at" in refused.json()["error"]
        assert _predict(url, alice, records).status_code == 401  # and stays refused
        assert _predict(url, admin, records).status_code == 200  # other keys are untouched
        code, _, err = run_cli(monkeypatch, capsys, "keys", "revoke", "alice", "--store", store)
        assert code == 0, err  # revoking again is harmless
        code, _, err = run_cli(monkeypatch, capsys, "keys", "rotate", "alice", "--store", store)
        assert_one_line_error(code, err, "guard key 'alice' was revoked", "create a new one")


def test_a_rotated_key_keeps_working_for_its_grace_period_then_stops(tmp_path, iris_model, monkeypatch, capsys) -> None:
    model, records = iris_model
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        old = issue_key(opened, "partner")
        other = issue_key(opened, "batch-job")
    config = guard_config(str(model), None, policy_from_dict(OPEN_LIMITS), store)
    with serving(create_app(config)) as url:
        assert _predict(url, old, records).status_code == 200
        code, out, err = run_cli(monkeypatch, capsys, "keys", "rotate", "partner", "--grace", "2s", "--store", store)
        rotated = time.monotonic()
        assert code == 0, err
        new = out.strip()
        assert new.startswith("msk_") and new != old and "works until" in err
        time.sleep(0.5)  # the guard has seen the rotation by now
        assert _predict(url, new, records).status_code == 200
        assert _predict(url, old, records).status_code == 200  # within the grace period
        elapsed, refused = _until_refused(url, old, records)
        waited = time.monotonic() - rotated
        assert refused.status_code == 401 and 1.5 < waited < 3.0, (waited, refused.text)
        assert "grace period ended" in refused.json()["error"] and "use the new key" in refused.json()["error"]
        assert _predict(url, new, records).status_code == 200
        # a rotation without grace ends the old key at once
        code, out, err = run_cli(monkeypatch, capsys, "keys", "rotate", "batch-job", "--grace", "0s", "--store", store)
        assert code == 0, err
        elapsed, refused = _until_refused(url, other, records)
        assert refused.status_code == 401 and elapsed < 1.0, (elapsed, refused.text)
        assert _predict(url, out.strip(), records).status_code == 200
    code, out, err = run_cli(monkeypatch, capsys, "keys", "list", "--store", store)
    lines = {line.split("\t")[0]: line.split("\t") for line in out.strip().splitlines()}
    assert lines["partner"][5].startswith("rotated ") and "old key ended" in lines["partner"][5]
    assert new not in out and old not in out


def test_keys_list_shows_owner_and_last_use(tmp_path, iris_model, monkeypatch, capsys) -> None:
    model, records = iris_model
    store = str(tmp_path / "guard.db")
    code, _, err = run_cli(
        monkeypatch, capsys, "keys", "create", "reporting", "--owner", "data-team@example.com", "--store", store
    )
    assert code == 0, err
    with open_store(store) as opened:
        used = issue_key(opened, "used-key", owner="bob")
    config = guard_config(str(model), None, policy_from_dict(OPEN_LIMITS), store)
    before = datetime.now(UTC).replace(microsecond=0)
    with serving(create_app(config)) as url:
        for _ in range(3):
            assert _predict(url, used, records).status_code == 200
    after = datetime.now(UTC)
    code, out, err = run_cli(monkeypatch, capsys, "keys", "list", "--store", store)
    assert code == 0, err
    rows = {line.split("\t")[0]: line.split("\t") for line in out.strip().splitlines()}
    _name, role, owner, _created, last_used, state = rows["used-key"]
    assert (role, owner, state) == ("user", "bob", "active")
    seen = datetime.strptime(last_used, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert before <= seen <= after
    assert rows["reporting"][2] == "data-team@example.com" and rows["reporting"][4] == "never"


def test_lifecycle_commands_refuse_bad_input_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    store = str(tmp_path / "keys.db")
    assert run_cli(monkeypatch, capsys, "keys", "create", "ops", "--store", store)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "keys", "revoke", "nobody", "--store", store)
    assert_one_line_error(code, err, "no guard key named 'nobody'", "'ops'")
    code, _, err = run_cli(monkeypatch, capsys, "keys", "rotate", "ops", "--grace", "1 hour", "--store", store)
    assert_one_line_error(code, err, "grace period '1 hour'", "1h")
    code, _, err = run_cli(monkeypatch, capsys, "keys", "rotate", "ops", "--grace", "400d", "--store", store)
    assert_one_line_error(code, err, "longer than a year")
    code, _, err = run_cli(monkeypatch, capsys, "keys", "create", "x", "--owner", "a\nb", "--store", store)
    assert_one_line_error(code, err, "a key owner must be 1 to 255 printable characters")


def test_key_commands_need_no_web_framework(tmp_path) -> None:
    script = (
        "import sys\n"
        "from membershield.cli import main\n"
        f"for args in (['create', 'k'], ['rotate', 'k', '--grace', '0s'], ['list'], ['revoke', 'k']):\n"
        f"    sys.argv = ['membershield', 'keys', *args, '--store', {str(tmp_path / 'k.db')!r}]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules, 'a web framework was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
