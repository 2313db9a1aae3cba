"""The wire formats of the model servers membershield audits: how a batch of records is sent, and how an
answer is read back into labels and/or class probabilities.

- ``membershield``: the guard's ``POST /v1/predict``, ``{"records": [{column: value}]}`` answered with
  ``{"predictions": [{"label": ..., "probabilities": [...]}], "classes": [...]}``.
- ``mlflow``: an MLflow scoring server's ``POST /invocations`` with ``{"dataframe_split": ...}``, answered
  with ``{"predictions": [...]}`` of labels, of probability rows, or of named probability columns.
- ``kserve-v2``: the Open Inference Protocol's ``POST /v2/models/NAME/infer`` with one named input per
  column and the pandas content type, asking for the ``predict_proba`` output; answered with
  ``{"outputs": [{"name", "shape", "datatype", "data"}]}``, where a tensor of shape ``(n, C)`` is read as
  probabilities and one of shape ``(n,)`` or ``(n, 1)`` as labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from membershield.errors import MembershieldError


class EndpointError(MembershieldError):
    """The endpoint cannot be reached, refuses us, or answers something that cannot be read."""


@dataclass(frozen=True)
class Answer:
    """What an endpoint said about a batch: labels, probabilities, or both.

    ``probabilities`` columns follow ``classes`` when the answer names them, else the server's own order
    (for a scikit-learn model, sorted labels).
    """

    labels: list[Any] | None
    probabilities: np.ndarray | None
    classes: list[Any] | None

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready answer per record, for the cache."""
        n = len(self.labels) if self.labels is not None else len(self.probabilities)  # type: ignore[arg-type]
        out = []
        for i in range(n):
            row: dict[str, Any] = {}
            if self.labels is not None:
                row["label"] = self.labels[i]
            if self.probabilities is not None:
                row["probabilities"] = self.probabilities[i].tolist()
            out.append(row)
        return out


def records_json(frame: pd.DataFrame, orient: str) -> Any:
    # pandas writes NaN as null and numpy scalars as plain numbers, which json.dumps of the values would not
    return json.loads(frame.to_json(orient=orient, index=False, double_precision=15))


def _wrong(fmt: str, expected: str, body: Any) -> EndpointError:
    shown = json.dumps(body)[:160] if not isinstance(body, str) else body[:160]
    return EndpointError(f"the endpoint's answer is not a {fmt} answer ({expected}); it said: {shown}")


def _probability_rows(values: Any, n: int, fmt: str) -> np.ndarray:
    try:
        proba = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EndpointError(f"the {fmt} answer's probabilities are not numbers: {exc}") from exc
    if proba.ndim != 2 or proba.shape[0] != n:
        raise EndpointError(f"the {fmt} answer holds probabilities of shape {proba.shape} for {n} records")
    return proba


class ApiFormat:
    name: ClassVar[str]
    default_path: ClassVar[str]  # what a URL of this format usually ends with, for the error messages

    def request(self, records: pd.DataFrame) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, body: Any, n: int) -> Answer:
        raise NotImplementedError

    def plain(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """``body`` without what it asks beyond the records, to send instead when a server refuses it;
        None when it asks nothing more."""
        return None


class MembershieldFormat(ApiFormat):
    name = "membershield"
    default_path = "/v1/predict"

    def request(self, records: pd.DataFrame) -> dict[str, Any]:
        return {"records": records_json(records, "records")}

    def parse(self, body: Any, n: int) -> Answer:
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != n:
            raise _wrong(self.name, f'{{"predictions": [...]}} with one entry per record ({n})', body)
        if not all(isinstance(p, dict) for p in predictions):
            raise _wrong(self.name, 'each prediction an object with "label" and/or "probabilities"', body)
        classes = body.get("classes")
        labels = [p["label"] for p in predictions] if all("label" in p for p in predictions) else None
        proba = None
        if all("probabilities" in p for p in predictions):
            proba = _probability_rows([p["probabilities"] for p in predictions], n, self.name)
        if labels is None and proba is None:
            raise _wrong(self.name, 'predictions with a "label" or "probabilities"', body)
        return Answer(labels, proba, list(classes) if isinstance(classes, list) else None)


class MlflowFormat(ApiFormat):
    name = "mlflow"
    default_path = "/invocations"

    def request(self, records: pd.DataFrame) -> dict[str, Any]:
        split = records_json(records, "split")
        return {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}

    def parse(self, body: Any, n: int) -> Answer:
        predictions = body.get("predictions") if isinstance(body, dict) else body
        if isinstance(predictions, dict):  # a DataFrame answer in columnar form: {column: [values]}
            columns = list(predictions)
            return Answer(None, _probability_rows(list(zip(*predictions.values(), strict=True)), n, self.name), columns)
        if not isinstance(predictions, list) or len(predictions) != n:
            raise _wrong(self.name, f'{{"predictions": [...]}} with one entry per record ({n})', body)
        if all(isinstance(p, dict) for p in predictions):  # a DataFrame answer in records form
            columns = list(predictions[0])
            rows = [[p[c] for c in columns] for p in predictions]
            return Answer(None, _probability_rows(rows, n, self.name), columns)
        if all(isinstance(p, list) for p in predictions):
            return Answer(None, _probability_rows(predictions, n, self.name), None)
        if any(isinstance(p, list | dict) for p in predictions):
            raise _wrong(self.name, "predictions all labels or all probability rows", body)
        return Answer(predictions, None, None)


def _tensor_datatype(column: pd.Series) -> str:
    # MLServer's pandas codec rebuilds each column's dtype from its tensor's datatype: sending every
    # number as FP64 would give an integer or boolean column to the model as floats
    if pd.api.types.is_bool_dtype(column):
        return "BOOL"
    if pd.api.types.is_integer_dtype(column):
        return "INT64"
    return "FP64" if pd.api.types.is_numeric_dtype(column) else "BYTES"


class KserveV2Format(ApiFormat):
    """The Open Inference Protocol (KServe v2, MLServer, Seldon Core 2).

    Records go as a DataFrame (``"content_type": "pd"``, one ``(n, 1)`` input per column, named after it)
    so that a pipeline fitted on named columns gets them by name, not as an anonymous matrix. The request
    asks for the ``predict_proba`` output: MLServer's scikit-learn runtime answers only ``predict``
    labels otherwise, which would under-state what the endpoint gives an attacker. A server that refuses
    that output (MLServer does, with 400, for a model without ``predict_proba``) is asked again without
    it (:meth:`plain`), and labels it answers, then or because it ignores ``outputs``, are read as labels.
    """

    name = "kserve-v2"
    default_path = "/v2/models/NAME/infer"
    probabilities_output: ClassVar[str] = "predict_proba"

    def request(self, records: pd.DataFrame) -> dict[str, Any]:
        n = len(records)
        rows = records_json(records, "split")["data"]
        inputs = []
        for j, column in enumerate(records.columns):
            datatype = _tensor_datatype(records[column])
            values = [row[j] for row in rows]
            if datatype == "BYTES":  # a missing value stays null: str() would make it the category "None"
                values = [None if v is None else str(v) for v in values]
            inputs.append({"name": str(column), "shape": [n, 1], "datatype": datatype, "data": values})
        outputs = [{"name": self.probabilities_output}]
        return {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": outputs}

    def plain(self, body: dict[str, Any]) -> dict[str, Any] | None:
        # a model without predict_proba (an SVC, a RidgeClassifier) is refused the output: ask its default
        return {k: v for k, v in body.items() if k != "outputs"} if "outputs" in body else None

    def parse(self, body: Any, n: int) -> Answer:
        outputs = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise _wrong(self.name, '{"outputs": [{"name", "shape", "datatype", "data"}]}', body)
        labels = proba = None
        for output in outputs:
            shape = output.get("shape")
            data = np.asarray(output.get("data"), dtype=object).reshape(-1)
            if not isinstance(shape, list) or not shape or shape[0] != n or data.size != int(np.prod(shape)):
                raise _wrong(self.name, f"output tensors with {n} rows whose data fills their shape", body)
            if len(shape) == 2 and shape[1] > 1:
                proba = _probability_rows(data.reshape(shape).tolist(), n, self.name)
            else:
                labels = [v.decode() if isinstance(v, bytes) else v for v in data.tolist()]
        return Answer(labels, proba, None)


FORMATS: dict[str, ApiFormat] = {f.name: f for f in (MembershieldFormat(), MlflowFormat(), KserveV2Format())}
API_FORMATS = tuple(FORMATS)
