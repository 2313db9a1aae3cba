"""Fuzz the guard from its own OpenAPI schema against a real server on a loopback port.

Two runs per kind of guard (a model fitted on an array, one on named columns, a Pipeline over a table
with string, imputed and overflowing columns, and a text upstream):

- ``schemathesis run --checks all`` over every operation and every phase (examples, coverage, fuzzing,
  stateful), as a user fuzzing the deployed guard would run it: no answer may be a 5xx, valid requests
  must be accepted and invalid ones refused, answers must match the documented codes and schemas.
- A stateful run of our own: random sequences of calls to every operation on one server, so that state
  built by earlier calls (rate-limit windows, the probing detector's history, alerts, the request log the
  dashboard reads) meets later ones; no answer may be a 5xx. Schemathesis' own stateful phase needs
  links between operations, which this API has none of.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from contextlib import ExitStack, contextmanager

import joblib
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import fake_json_upstream, serving
from tests.test_guard_columns import patients, pipeline

KINDS = ["array-model", "named-columns", "string-pipeline", "text-upstream"]
POLICY = {"limits": {"requests_per_minute": 1_000_000}, "output": {"clip_top1": 0.9}, "detector": {"near_count": 5}}


def _text_upstream():
    def answer(request: dict) -> dict:
        return {"text": f"{request['prompt']} - reach me at ops@example.org"}

    return fake_json_upstream(answer, "/generate")


def _model(kind: str, directory) -> str:
    if kind == "string-pipeline":
        table = patients(300, seed=0)
        model = pipeline().fit(table.drop(columns="outcome"), table["outcome"])
    else:
        X, y = load_iris(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=500).fit(X if kind == "named-columns" else X.to_numpy(), y)
    joblib.dump(model, directory / "model.joblib")
    return str(directory / "model.joblib")


@contextmanager
def fuzzed_guard(kind: str, tmp_path):
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
    policy = policy_from_dict(POLICY)
    with ExitStack() as stack:
        if kind == "text-upstream":
            config = guard_config(None, stack.enter_context(_text_upstream()), policy, store, text=True)
        else:
            config = guard_config(_model(kind, tmp_path), None, policy, store)
        url = stack.enter_context(serving(create_app(config)))
        yield url, {"Authorization": f"Bearer {admin}"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_schemathesis_with_every_check_and_phase_finds_nothing(tmp_path, kind):
    with fuzzed_guard(kind, tmp_path) as (url, headers):
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "all"]
        command += ["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "150", "--seed", "7"]
        command += ["-H", f"Authorization: {headers['Authorization']}", "--generation-database", "none"]
        command += ["--no-color"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-4000:]
    assert "No issues found" in report, report[-4000:]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


@pytest.mark.parametrize("kind", KINDS)
def test_random_sequences_of_every_operation_never_answer_5xx(tmp_path, kind):
    with fuzzed_guard(kind, tmp_path) as (url, headers):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 5

        class Calls(RuleBasedStateMachine):
            pass

        for operation in operations:

            def call(self, case, _label=operation.label) -> None:
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)

            name = "call_" + "".join(ch if ch.isalnum() else "_" for ch in operation.label)
            setattr(Calls, name, rule(case=operation.as_strategy())(call))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a model's overflow on features near its range
            run_state_machine_as_test(
                Calls,
                settings=settings(
                    max_examples=25,
                    stateful_step_count=20,
                    deadline=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                ),
            )
