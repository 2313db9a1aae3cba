"""Predictions through the guard: scored by the local model or forwarded upstream, then hardened.

A record the model cannot score (its arithmetic overflows after its own scaling, its output is not
finite, an encoder refuses a value) is a 422 naming the record and, where one value alone is to blame,
the column: the failing record is found by bisection and the column by setting the record's largest
values to 0, one at a time, until it scores. That search runs only on the failure path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd

from membershield.defenses.output import OutputPolicy, harden
from membershield.errors import MembershieldError
from membershield.guard.errors import GuardError
from membershield.guard.records import NUMBER, InputSchema, ParsedRecords
from membershield.guard.upstream import UpstreamClient, UpstreamError
from membershield.targets.base import Target
from membershield.targets.failures import first_failing_row, scores_finitely
from membershield.targets.sklearn import SklearnTarget


class Hardener:
    """The output defenses of the policy with one random stream, shared by every request."""

    def __init__(self, policy: OutputPolicy, seed: int) -> None:
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        with self.lock:
            return harden(proba, self.policy, self.rng)


def _finite_rows(proba: np.ndarray) -> np.ndarray:
    return np.isfinite(proba).all(axis=1)


class LocalScorer:
    """Probabilities of the local target for checked records."""

    def __init__(self, target: Target, schema: InputSchema) -> None:
        self.target = target
        self.schema = schema
        # a scikit-learn model fitted on a plain array, with its own class order: scored without the
        # DataFrame round trip and log/exp of Target.logits, which cost more than the model on one record
        self._scores = scores_finitely(self._from_table)
        self.plain = (
            isinstance(target, SklearnTarget)
            and target.columns is None
            and np.array_equal(np.asarray(getattr(target.estimator, "classes_", [])), target.classes)
        )

    def probabilities(self, records: ParsedRecords) -> np.ndarray:
        if self.plain and records.frame is None:
            return np.asarray(self.target.estimator.predict_proba(records.matrix), dtype=np.float64)
        return self._from_table(records.table())

    def _from_table(self, table: pd.DataFrame) -> np.ndarray:
        logits = np.asarray(self.target.logits(table), dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def checked_probabilities(self, records: ParsedRecords) -> np.ndarray:
        """Probabilities, every row finite, or a 422 saying which record (and column) the model cannot score."""
        try:
            with np.errstate(all="ignore"):  # judged below: an overflow shows as a non-finite row
                proba = self.probabilities(records)
            if _finite_rows(proba).all():
                return proba
        except MembershieldError as exc:
            raise GuardError(422, str(exc), "invalid_input") from exc
        except Exception as exc:  # the model's own checks (an overflow after scaling, an unknown category)
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise self._refusal(records.table(), problem) from exc
        raise self._refusal(records.table(), "its output is not finite")

    def _refusal(self, table: pd.DataFrame, problem: str) -> GuardError:
        record = first_failing_row(table, self._scores)
        if record is None:  # every record scores alone: the batch as a whole failed
            return GuardError(422, f"the model cannot score these records ({problem})", "invalid_input")
        column = self._culprit(table.iloc[[record]].reset_index(drop=True))
        where = f"record {record}" + (f", column '{column}'" if column else "")
        return GuardError(
            422,
            f"the model cannot score {where}: {problem} (a value far outside the model's range? send values the"
            " model's own scaling keeps finite)",
            "invalid_input",
        )

    def _culprit(self, row: pd.DataFrame) -> str | None:
        numbers = [c.name for c in self.schema.columns if c.kind == NUMBER] or list(row.columns)
        values = {name: abs(float(row.at[0, name])) if pd.notna(row.at[0, name]) else 0.0 for name in numbers}
        trial = row.copy()
        for name in sorted(values, key=values.get, reverse=True):
            trial.at[0, name] = 0.0
            if self._scores(trial):
                return name
        return None


def local_answer(scorer: LocalScorer, records: ParsedRecords, hardener: Hardener, label_only: bool) -> dict[str, Any]:
    """The answer of ``POST /v1/predict`` from the local model."""
    proba = scorer.checked_probabilities(records)
    classes = np.asarray(scorer.target.classes)
    labels = classes[proba.argmax(axis=1)].tolist()
    if label_only:
        return {"predictions": [{"label": label} for label in labels], "classes": classes.tolist()}
    hardened = hardener(proba).tolist()
    predictions = [{"label": label, "probabilities": row} for label, row in zip(labels, hardened, strict=True)]
    return {"predictions": predictions, "classes": classes.tolist()}


def _upstream_probabilities(predictions: list, url: str, hardener: Hardener) -> list | None:
    """The upstream's probabilities, hardened, when every prediction has a list of the same length."""
    probas = [p.get("probabilities") if isinstance(p, dict) else None for p in predictions]
    if not (all(isinstance(p, list) and p for p in probas) and len({len(p) for p in probas}) == 1):
        return None
    try:
        matrix = np.asarray(probas, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # judged below: inf and NaN totals are refused
        totals = matrix.sum(axis=1)
    # Hardening a negative or non-finite "probability" would hand the caller numbers that look like a
    # distribution and are none: the upstream is broken, and the caller is told so.
    if not (np.isfinite(totals).all() and (matrix >= 0).all() and (totals > 0).all()):
        raise GuardError(
            502, f"upstream {url} answered probabilities that are negative, not finite or all zero", "upstream_error"
        )
    return hardener(matrix / totals[:, None]).tolist()


async def upstream_answer(
    client: UpstreamClient,
    records: list,
    hardener: Hardener,
    label_only: bool,
    redact: Callable[[str], str],
) -> dict[str, Any]:
    """The answer of ``POST /v1/predict`` forwarded to the upstream, hardened and redacted."""
    url = client.url
    try:
        status, body = await client.post(orjson.dumps({"records": records}))
    except UpstreamError as exc:
        raise GuardError(502, f"upstream {url} is unreachable: {exc}".splitlines()[0], "upstream_error") from exc
    if status != 200:
        raise GuardError(502, f"upstream {url} answered HTTP {status}", "upstream_error")
    try:
        predictions = orjson.loads(body)["predictions"]
        if not isinstance(predictions, list) or len(predictions) != len(records):
            raise ValueError("wrong number of predictions")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise GuardError(
            502,
            f"upstream {url} answered something other than {{'predictions': [...]}} for {len(records)} records",
            "upstream_error",
        ) from exc
    hardened = _upstream_probabilities(predictions, url, hardener)
    out = []
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, dict):
            raise GuardError(502, f"upstream {url} answered a prediction that is not an object", "upstream_error")
        entry: dict[str, Any] = {}
        if "label" in prediction:
            entry["label"] = prediction["label"]
        if hardened is not None and not label_only:
            entry["probabilities"] = hardened[i]
        if isinstance(prediction.get("text"), str):
            entry["text"] = redact(prediction["text"])
        out.append(entry)
    return {"predictions": out}
