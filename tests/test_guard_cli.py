"""`membershield keys` and `membershield guard` from the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import joblib
import pytest
import uvicorn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from membershield.guard.app import hash_key
from membershield.store import open_store
from tests.test_cli import assert_one_line_error, run_cli


def test_keys_create_prints_a_key_once_and_stores_its_hash(tmp_path, monkeypatch, capsys):
    store = str(tmp_path / "keys.db")
    code, out, err = run_cli(monkeypatch, capsys, "keys", "create", "ops", "--admin", "--store", store)
    assert code == 0, err
    token = out.strip()
    assert token.startswith("msk_") and len(token) > 40
    with open_store(store) as opened:
        key = opened.find_key(hash_key(token))
        assert key is not None and key.name == "ops" and key.admin
    code, _, err = run_cli(monkeypatch, capsys, "keys", "create", "ops", "--store", store)
    assert_one_line_error(code, err, "already has a guard key named 'ops'")
    code, out, _ = run_cli(monkeypatch, capsys, "keys", "list", "--store", store)
    assert out.startswith("ops\tadmin\t") and token not in out


def test_keys_create_refuses_a_name_that_names_nothing(tmp_path, monkeypatch, capsys):
    store = str(tmp_path / "keys.db")
    for name in ("", "   ", "two\nlines", "x" * 256):
        code, out, err = run_cli(monkeypatch, capsys, "keys", "create", name, "--store", store)
        assert_one_line_error(code, err, "key name")
        assert out == ""
    with open_store(store) as opened:
        assert opened.guard_keys() == []


def test_guard_rejects_unknown_policy_keys_and_recipes(tmp_path, monkeypatch, capsys):
    policy = tmp_path / "guard.toml"
    policy.write_text("[output]\nclip_top = 0.9\n")
    code, _, err = run_cli(monkeypatch, capsys, "guard", "--model", "m.joblib", "--policy", str(policy))
    assert_one_line_error(code, err, "unknown key 'clip_top' in [output]")
    recipe = tmp_path / "train.py"
    recipe.write_text("def recipe():\n    return None\n")
    code, _, err = run_cli(monkeypatch, capsys, "guard", "--model", f"{recipe}:recipe")
    assert_one_line_error(code, err, "training recipe, which cannot serve predictions")
    code, _, err = run_cli(monkeypatch, capsys, "guard")
    assert_one_line_error(code, err, "--model")
    code, _, err = run_cli(monkeypatch, capsys, "guard", "--text", "--model", f"{recipe}:recipe")
    assert_one_line_error(code, err, "--text needs --upstream URL or a language model directory")
    code, _, err = run_cli(monkeypatch, capsys, "guard", "--model", str(tmp_path), "--upstream", "http://127.0.0.1:9/x")
    assert_one_line_error(code, err, "not both")
    code, _, err = run_cli(monkeypatch, capsys, "guard", "--model", str(tmp_path))
    assert_one_line_error(code, err, "no config.json")


@pytest.fixture
def no_serving(monkeypatch):
    """uvicorn's Server.run replaced: records the sockets it was given, and their ports, instead of serving."""
    given: list = []

    def run(self, sockets=None):
        given.append((sockets, [s.getsockname()[1] for s in sockets or []]))
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    return given


def _iris_model(tmp_path: Path) -> str:
    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "iris.joblib")
    return str(tmp_path / "iris.joblib")


def test_guard_refuses_a_port_or_host_it_cannot_listen_on(tmp_path, monkeypatch, capsys, no_serving):
    command = ["guard", "--model", _iris_model(tmp_path), "--store", str(tmp_path / "guard.db")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli(monkeypatch, capsys, *command, "--port", str(port))
    assert_one_line_error(code, err, f"port {port} on 127.0.0.1 is already in use", "another --port")
    assert "guarding" not in out
    for bad in ("99999", "65536", "-1"):
        code, out, err = run_cli(monkeypatch, capsys, *command, "--port", bad)
        assert_one_line_error(code, err, f"--port {bad}", "from 1 to 65535")
        assert "guarding" not in out
    code, out, err = run_cli(monkeypatch, capsys, *command, "--host", "203.0.113.7", "--port", "0")
    assert_one_line_error(code, err, "--host 203.0.113.7", "not an address of this machine")
    assert no_serving == []


def test_guard_announces_the_port_it_listens_on(tmp_path, monkeypatch, capsys, no_serving):
    model = _iris_model(tmp_path)
    code, out, err = run_cli(
        monkeypatch, capsys, "guard", "--model", model, "--store", str(tmp_path / "g.db"), "--port", "0"
    )
    assert code == 0, err
    ((sockets, (port,)),) = no_serving
    assert port != 0 and f"on http://127.0.0.1:{port} " in out
    assert sockets[0].fileno() == -1  # closed once the server returned


@pytest.mark.slow
def test_guard_command_serves_until_stopped(tmp_path):
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), model)
    store = str(tmp_path / "guard.db")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MEMBERSHIELD_STORE": store}
    key = subprocess.run(
        [sys.executable, "-m", "membershield", "keys", "create", "svc"], env=env, capture_output=True, text=True
    ).stdout.strip()
    policy = tmp_path / "guard.toml"
    policy.write_text("[output]\nround_decimals = 1\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "membershield", "guard", "--model", str(model), "--policy", str(policy),
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            time.sleep(0.2)
        answer = httpx.post(
            f"{url}/v1/predict",
            json={"records": X.iloc[:2].values.tolist()},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["probabilities"] == [1.0, 0.0, 0.0]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with open_store(store) as opened:
        assert opened.guard_request_count() == 1
    assert Path(store).exists()
