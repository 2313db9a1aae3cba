"""Audits of real model servers on loopback, as they run in production: ``mlflow models serve`` (MLflow's
scoring protocol) and MLServer (KServe v2 / Open Inference Protocol) serving the digits model give the
model file's own numbers; a server that answers labels only is audited label-only, with the label-only
attacks. The servers run from their own virtual environment (``.venv-serve``, built by ``make serve-env``
from requirements-serve.txt: full mlflow needs pyarrow<26, which the product excludes). Without it these
tests are skipped, except under CI=true, where they fail. The request format's unit tests need no server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from membershield.endpoint.client import EndpointClient, QueryPolicy
from membershield.endpoint.formats import FORMATS
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
SERVE_VENV = Path(os.environ.get("MEMBERSHIELD_SERVE_VENV", ROOT / ".venv-serve"))
ATTACKS = "loss,confidence,lira"
START_TIMEOUT_S = 120.0  # two busy cores: mlflow alone takes ~8 s to import and load a model

# MLflow 3 saves with skops, whose allow-list refuses an MLP's Adam optimiser: this is the test's own
# model, so every type in it is trusted
SAVE_MLFLOW_MODELS = """
import sys, joblib, mlflow.sklearn, skops.io
model = joblib.load(sys.argv[1])
trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
mlflow.sklearn.save_model(model, sys.argv[2], pyfunc_predict_fn="predict_proba", skops_trusted_types=trusted)
mlflow.sklearn.save_model(model, sys.argv[3], skops_trusted_types=trusted)
"""


# --------------------------------------------------------------------------------------------------
# The request format, without a server


def _mixed_records() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [70, 57, 49],
            "income": [36.5, np.nan, 55.0],
            "city": pd.Series(["Oslo", None, "Lima"], dtype="str"),
            "member": [False, True, False],
        }
    )


def test_kserve_request_sends_named_typed_columns_and_asks_for_probabilities() -> None:
    body = FORMATS["kserve-v2"].request(_mixed_records())
    assert body["parameters"] == {"content_type": "pd"} and body["outputs"] == [{"name": "predict_proba"}]
    by_name = {i["name"]: i for i in body["inputs"]}
    datatypes = {"age": "INT64", "income": "FP64", "city": "BYTES", "member": "BOOL"}
    assert {n: i["datatype"] for n, i in by_name.items()} == datatypes
    assert all(i["shape"] == [3, 1] for i in body["inputs"])
    assert by_name["age"]["data"] == [70, 57, 49] and by_name["member"]["data"] == [False, True, False]
    assert by_name["income"]["data"] == [36.5, None, 55.0]
    assert by_name["city"]["data"] == ["Oslo", None, "Lima"]  # missing stays missing, not the string "None"
    json.dumps(body, allow_nan=False)  # plain JSON: no NaN, no numpy scalars


def test_kserve_plain_request_drops_only_the_output_ask_and_labels_still_read() -> None:
    kserve = FORMATS["kserve-v2"]
    body = kserve.request(_mixed_records())
    plain = kserve.plain(body)
    assert plain is not None and "outputs" not in plain and plain["inputs"] == body["inputs"]
    assert kserve.plain(plain) is None
    assert FORMATS["mlflow"].plain(FORMATS["mlflow"].request(_mixed_records())) is None
    labels = {"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [3, 1]}
    proba = {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.2, 0.8, 0.6, 0.4]}
    answer = kserve.parse({"outputs": [labels, proba]}, 2)
    assert answer.labels == [3, 1] and answer.probabilities.tolist() == [[0.2, 0.8], [0.6, 0.4]]
    answer = kserve.parse({"outputs": [labels]}, 2)
    assert answer.labels == [3, 1] and answer.probabilities is None


def test_serve_requirements_pin_the_products_scikit_learn_stack() -> None:
    # the servers unpickle the models the tests write, so these must be the versions that wrote them
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements-serve.txt").read_text(), re.M))
    product = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = dict(d.split("==", 1) for d in product if d.split("==")[0] in ("scikit-learn", "numpy", "scipy", "joblib"))
    assert {name: pinned.get(name) for name in wanted} == wanted


# --------------------------------------------------------------------------------------------------
# Servers


def serve_binary(name: str) -> Path:
    path = SERVE_VENV / "bin" / name
    if not path.is_file():
        reason = f"{path} is missing, so the {name} endpoint tests have no server (build it with: make serve-env)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; with CI=true they must run")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_env() -> dict[str, str]:
    # as an activated venv: `mlflow models serve` runs `uvicorn` found on PATH
    bin_dir = str(SERVE_VENV / "bin")
    return os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(SERVE_VENV)}


@contextmanager
def running(command: list[str], ready_url: str, cwd: Path, log: Path) -> Iterator[None]:
    """The server ``command`` started, until ``ready_url`` answers 200; stopped, children too, on exit."""
    with log.open("wb") as out:
        # its own session: mlflow's scoring server is a uvicorn child, stopped with the whole group
        process = subprocess.Popen(
            command, cwd=cwd, env=_serve_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(process, ready_url, log)
        yield
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with {process.returncode} before {url} answered:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"{url} did not answer within {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def mlflow_models(digits_audit, tmp_path_factory) -> tuple[Path, Path]:
    """The digits model saved as MLflow models: one answering predict_proba, one the default predict."""
    python = serve_binary("python")
    directory = tmp_path_factory.mktemp("mlflow")
    proba, labels = directory / "proba", directory / "labels"
    saved = subprocess.run(
        [str(python), "-c", SAVE_MLFLOW_MODELS, str(digits_audit.overfit_model), str(proba), str(labels)],
        cwd=directory,
        env=_serve_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert saved.returncode == 0, saved.stderr[-3000:]
    return proba, labels


@contextmanager
def mlflow_serving(model_dir: Path) -> Iterator[str]:
    port = free_port()
    command = [str(serve_binary("mlflow")), "models", "serve", "-m", str(model_dir), "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "-p", str(port)]
    with running(command, f"http://127.0.0.1:{port}/ping", model_dir.parent, model_dir.with_suffix(".log")):
        yield f"http://127.0.0.1:{port}/invocations"


@pytest.fixture(scope="module")
def mlflow_server(mlflow_models) -> Iterator[str]:
    with mlflow_serving(mlflow_models[0]) as url:
        yield url


def _mixed_model():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 200),
            "income": rng.normal(50, 10, 200),
            "city": pd.Series(rng.choice(["Oslo", "Lima", "Pune"], 200), dtype="str"),
            "member": rng.integers(0, 2, 200).astype(bool),
        }
    )
    labels = np.where((frame["city"] == "Oslo") ^ frame["member"], "yes", "no")
    columns = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["city", "member"]), (StandardScaler(), ["age", "income"])
    )  # picked by name: an anonymous matrix would not do
    return make_pipeline(columns, LogisticRegression()).fit(frame, labels)


def _write_mlserver_model(repository: Path, name: str, model) -> None:
    (repository / name).mkdir()
    joblib.dump(model, repository / name / "model.joblib")
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (repository / name / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def mlserver(digits_audit, tmp_path_factory) -> Iterator[str]:
    """MLServer on loopback over a repository of three models: the digits MLP, a LinearSVC without
    predict_proba (so labels only), and a pipeline over mixed columns picked by name. Yields its base URL."""
    binary = serve_binary("mlserver")
    repository = tmp_path_factory.mktemp("mlserver")
    _write_mlserver_model(repository, "digits", joblib.load(digits_audit.overfit_model))
    members = pd.read_csv(digits_audit.members)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether LinearSVC converges is beside the point: its labels are
        svc = make_pipeline(StandardScaler(), LinearSVC(max_iter=200)).fit(
            members.drop(columns="digit"), members["digit"]
        )
    _write_mlserver_model(repository, "digits-svc", svc)
    _write_mlserver_model(repository, "mixed", _mixed_model())
    http_port = free_port()
    # gRPC cannot be switched off: a free port of its own; metrics off; inference in the server process
    settings = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": free_port(), "metrics_endpoint": None}
    (repository / "settings.json").write_text(json.dumps(settings | {"parallel_workers": 0}))
    base = f"http://127.0.0.1:{http_port}"
    with running(
        [str(binary), "start", str(repository)],
        f"{base}/v2/health/ready",
        repository.parent,
        repository.with_suffix(".log"),
    ):
        yield base


# --------------------------------------------------------------------------------------------------
# Audits over the servers


@pytest.fixture(scope="module")
def audit_cache(tmp_path_factory) -> Path:
    """One cache for the module: the reference models train once, for the file and every server alike."""
    return tmp_path_factory.mktemp("endpoint-servers-cache")


@pytest.fixture
def audit(digits_audit, audit_cache, monkeypatch, capsys):
    """``audit(out, model, *options)``: the CLI's audit of the digits split, as (exit code, audit.json, stderr)."""

    def run(out: Path, model: str, *extra: str) -> tuple[int, dict, str]:
        args = ["audit", "--model", model, "--train", str(digits_audit.members)]
        args += ["--holdout", str(digits_audit.nonmembers), "--label-column", "digit", "--references", "4"]
        args += ["--out", str(out), "--cache", str(audit_cache), *extra]
        code, _, err = run_cli(monkeypatch, capsys, *args)
        return code, json.loads((out / "audit.json").read_text()) if code == 0 else {}, err

    return run


def _by_name(document: dict) -> dict:
    return {a["name"]: a for a in document["attacks"]}


def _assert_the_files_numbers(audit, digits_audit, tmp_path: Path, remote: dict) -> None:
    code, direct, err = audit(tmp_path / "file", str(digits_audit.overfit_model), "--attacks", ATTACKS)
    assert code == 0, err
    assert remote["target"]["kind"] == "http-endpoint" and remote["target"]["access"] == "black-box"
    assert remote["target"]["endpoint"]["answers"] == "every class's probability"
    assert sorted(_by_name(remote)) == sorted(ATTACKS.split(","))
    for name, attack in _by_name(direct).items():
        there = _by_name(remote)[name]
        assert there["auc"] == pytest.approx(attack["auc"], abs=1e-3), name
        assert [r["tp"] for r in there["tpr_at_fpr"]] == [r["tp"] for r in attack["tpr_at_fpr"]], name


def test_mlflow_models_serve_gives_the_files_numbers(audit, digits_audit, mlflow_server, tmp_path) -> None:
    endpoint = ["--api-format", "mlflow", "--recipe", str(digits_audit.overfit_model), "--attacks", ATTACKS]
    code, remote, err = audit(tmp_path / "mlflow", mlflow_server, *endpoint)
    assert code == 0, err
    _assert_the_files_numbers(audit, digits_audit, tmp_path, remote)


def test_mlflow_default_predict_is_audited_label_only(audit, mlflow_models, tmp_path) -> None:
    with mlflow_serving(mlflow_models[1]) as url:
        code, document, err = audit(tmp_path / "labels", url, "--api-format", "mlflow", "--batch-size", "2048")
    assert code == 0, err
    assert document["target"]["access"] == "label-only"
    assert document["target"]["endpoint"]["answers"] == "labels only"
    assert sorted(_by_name(document)) == ["label-only-gap", "label-only-noise"]
    assert any(w.startswith("skipped") and "'loss': it needs probabilities" in w for w in document["warnings"])


def test_mlserver_gives_the_files_numbers(audit, digits_audit, mlserver, tmp_path) -> None:
    endpoint = ["--api-format", "kserve-v2", "--recipe", str(digits_audit.overfit_model), "--attacks", ATTACKS]
    code, remote, err = audit(tmp_path / "mlserver", f"{mlserver}/v2/models/digits/infer", *endpoint)
    assert code == 0, err
    _assert_the_files_numbers(audit, digits_audit, tmp_path, remote)


def test_mlserver_model_without_probabilities_is_audited_label_only(audit, mlserver, tmp_path) -> None:
    # MLServer refuses the predict_proba output of a LinearSVC (400): the audit asks again without it
    url = f"{mlserver}/v2/models/digits-svc/infer"
    code, document, err = audit(tmp_path / "svc", url, "--api-format", "kserve-v2", "--attacks", "label-only-gap")
    assert code == 0, err
    assert document["target"]["access"] == "label-only"
    assert document["target"]["endpoint"]["answers"] == "labels only"


def test_mlserver_gets_mixed_columns_by_name_with_their_dtypes(mlserver) -> None:
    records = _mixed_records().fillna({"income": 50.0})  # the model has no imputer; a missing city it ignores
    client = EndpointClient(f"{mlserver}/v2/models/mixed/infer", FORMATS["kserve-v2"], {}, QueryPolicy())
    try:
        answers = client.answers(records)
    finally:
        client.close()
    expected = _mixed_model().predict_proba(records)
    np.testing.assert_allclose([a["probabilities"] for a in answers], expected, rtol=1e-9)
