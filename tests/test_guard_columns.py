"""The guard serves the models the audit accepts: a Pipeline over a table with string columns, imputed
columns and a column whose scaling overflows, over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import math

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from membershield.guard.columns import input_schema
from membershield.guard.predict import LocalScorer
from membershield.guard.records import FLOAT_MAX, InputSchema
from membershield.targets.sklearn import sklearn_target_and_recipe
from tests.test_guard_service import guard


def patients(n: int, seed: int) -> pd.DataFrame:
    """A clinical-looking table: numbers, a yes/no column, a categorical column, a near-constant lab value."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype(float),
            "smoker": rng.choice(["no", "yes"], n),
            "region": rng.choice(["north", "south", "east"], n),
            "income": rng.normal(5e4, 1e4, n),
            "marker": rng.normal(0, 1e-6, n),  # a tiny spread: its scaling multiplies by a million
        }
    )
    frame["outcome"] = ((frame.smoker == "yes") ^ (frame.age > 55)).astype(int)
    return frame


def pipeline():
    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    columns = ColumnTransformer(
        [("num", numbers, ["age", "income", "marker"]), ("cat", OneHotEncoder(), ["smoker", "region"])]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=500))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    table = patients(400, seed=0)
    model = pipeline().fit(table.drop(columns="outcome"), table["outcome"])
    path = tmp_path_factory.mktemp("patients") / "model.joblib"
    joblib.dump(model, path)
    return path, model, patients(20, seed=1).drop(columns="outcome")


def _records_schema(url: str) -> dict:
    spec = httpx.get(f"{url}/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return body["properties"]["records"]["items"]["oneOf"]


def test_real_records_with_string_columns_are_answered(tmp_path, model_file):
    path, model, rows = model_file
    with guard(tmp_path, path, {}) as (url, _admin, user, _store):
        as_objects = httpx.post(f"{url}/v1/predict", json={"records": rows.to_dict("records")}, headers=user)
        as_lists = httpx.post(f"{url}/v1/predict", json={"records": rows.values.tolist()}, headers=user)
    assert as_objects.status_code == 200, as_objects.text
    assert as_lists.json() == as_objects.json()
    predictions = as_objects.json()["predictions"]
    assert [p["label"] for p in predictions] == model.predict(rows).tolist()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], model.predict_proba(rows), atol=1e-9)


def test_the_schema_states_each_columns_kind(tmp_path, model_file):
    path, _, _ = model_file
    with guard(tmp_path, path, {}) as (url, *_):
        as_list, as_object = _records_schema(url)
    columns = as_object["properties"]
    assert columns["smoker"] == {"enum": ["no", "yes"]}  # no imputer on the encoded columns: no null
    assert columns["region"] == {"enum": ["east", "north", "south"]}
    age = columns["age"]["anyOf"]
    assert {"type": "null"} in age  # imputed
    number = next(s for s in age if s.get("type") == "number")
    assert number["maximum"] == -number["minimum"] and math.isfinite(number["maximum"])
    marker = next(s for s in columns["marker"]["anyOf"] if s.get("type") == "number")
    assert marker["maximum"] < FLOAT_MAX  # its scaling overflows before the float limit: a smaller range
    assert [s.get("enum") for s in as_list["prefixItems"]][1:3] == [["no", "yes"], ["east", "north", "south"]]
    assert as_list["items"] is False


def test_null_unknown_category_and_overflow_are_422s_naming_the_column(tmp_path, model_file):
    path, model, rows = model_file
    record = rows.iloc[0].to_dict()
    with guard(tmp_path, path, {}) as (url, _admin, user, _store):

        def post(**change):
            return httpx.post(f"{url}/v1/predict", json={"records": [{**record, **change}]}, headers=user)

        imputed = post(age=None)
        assert imputed.status_code == 200, imputed.text
        expected = model.predict_proba(pd.DataFrame([{**record, "age": np.nan}]))[0]
        np.testing.assert_allclose(imputed.json()["predictions"][0]["probabilities"], expected, atol=1e-9)
        for change, needle in [
            ({"smoker": None}, "column 'smoker' is null"),
            ({"smoker": "sometimes"}, "column 'smoker' has 'sometimes', which the model never saw"),
            ({"smoker": 1}, "column 'smoker' must be a string"),
            ({"age": "forty"}, "column 'age' must be a number"),
            ({"marker": 1.7976931348623157e308}, "column 'marker' is 1.7976931348623157e+308, outside"),
            ({"income": True}, "column 'income' must be a number"),
        ]:
            answer = post(**change)
            assert answer.status_code == 422, (change, answer.text)
            assert needle in answer.json()["error"] and "\n" not in answer.json()["error"], answer.json()
        assert post().status_code == 200  # the service is still up and answers a good record


def test_a_record_the_model_cannot_score_is_located(model_file):
    """Where the published range is not known (a schema with no bounds), the model's own failure is found:
    the record by bisection, the column by setting the largest values to 0 one at a time."""
    _, model, rows = model_file
    target, _ = sklearn_target_and_recipe(model)
    schema = input_schema(model, list(model.feature_names_in_))
    assert all(c.bound == FLOAT_MAX for c in schema.columns)
    records = rows.iloc[:6].copy()
    records.loc[records.index[4], "marker"] = 1e308
    parsed = schema.parse({"records": records.replace({np.nan: None}).to_dict("records")})
    with pytest.raises(Exception) as caught:
        LocalScorer(target, schema).checked_probabilities(parsed)
    assert caught.value.status == 422
    assert "record 4, column 'marker'" in caught.value.message


def test_a_model_fitted_on_an_array_takes_lists_of_numbers_only():
    X = np.random.default_rng(0).normal(size=(50, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    schema = input_schema(model, None)
    assert isinstance(schema, InputSchema) and not schema.named and schema.numeric
    assert schema.parse({"records": [[1, 2, 3]]}).matrix.tolist() == [[1.0, 2.0, 3.0]]
