"""Fuzz the guard from its own OpenAPI schema (schemathesis) against a real server on a loopback port.

Every operation is called with generated requests (valid and invalid ones) and an admin key; no answer may
be a 5xx, and every answer must match the documented status codes, content types and response schemas.
Schema-valid records the model cannot score (features near the float limit overflow it) are refused with a
documented 422, so the check that every schema-valid request is accepted is left out.
"""

from __future__ import annotations

import warnings

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
from tests.guard_server import serving

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("columns", [False, True], ids=["array-model", "named-columns"])
def test_fuzzing_the_openapi_schema_finds_no_server_error(tmp_path, columns):
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X if columns else X.to_numpy(), y)
    joblib.dump(model, tmp_path / "iris.joblib")
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
    policy = policy_from_dict({"limits": {"requests_per_minute": 1_000_000}, "output": {"clip_top1": 0.9}})
    config = guard_config(str(tmp_path / "iris.joblib"), None, policy, store)
    headers = {"Authorization": f"Bearer {admin}"}
    with serving(create_app(config)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"POST /v1/predict", "GET /v1/alerts", "GET /", "GET /metrics"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            def call(case) -> None:
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the model's overflow on huge features
                call()
