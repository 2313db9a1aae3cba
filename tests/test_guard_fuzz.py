"""Fuzz the guard from its own OpenAPI schema (schemathesis) against a real server on a loopback port.

Every operation is called with generated requests (valid and invalid ones) and an admin key; no answer may
be a 5xx, and every answer must match the documented status codes, content types and response schemas.
Schema-valid records the model cannot score (features near the float limit overflow it) are refused with a
documented 422, so the check that every schema-valid request is accepted is left out.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack

import joblib
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import fake_json_upstream, serving

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _text_upstream():
    def answer(request: dict) -> dict:
        return {"text": f"{request['prompt']} - reach me at ops@example.org"}

    return fake_json_upstream(answer, "/generate")


@pytest.mark.parametrize("kind", ["array-model", "named-columns", "text-upstream"])
def test_fuzzing_the_openapi_schema_finds_no_server_error(tmp_path, kind):
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X if kind == "named-columns" else X.to_numpy(), y)
    joblib.dump(model, tmp_path / "iris.joblib")
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
    policy = policy_from_dict({"limits": {"requests_per_minute": 1_000_000}, "output": {"clip_top1": 0.9}})
    headers = {"Authorization": f"Bearer {admin}"}
    endpoint = "POST /v1/generate" if kind == "text-upstream" else "POST /v1/predict"
    with ExitStack() as stack:
        if kind == "text-upstream":
            config = guard_config(None, stack.enter_context(_text_upstream()), policy, store, text=True)
        else:
            config = guard_config(str(tmp_path / "iris.joblib"), None, policy, store)
        url = stack.enter_context(serving(create_app(config)))
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {endpoint, "GET /v1/alerts", "GET /", "GET /metrics"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            def call(case) -> None:
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the model's overflow on huge features
                call()
