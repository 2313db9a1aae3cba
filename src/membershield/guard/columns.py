"""Read a fitted scikit-learn model's input columns (kinds, categories, missing values) off the model itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from membershield.errors import MembershieldError
from membershield.guard.records import FLOAT_MAX, NUMBER, STRING, ColumnSpec, InputSchema

ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")
NATIVE_MISSING = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


def _steps(estimator: Any) -> list[Any]:
    """The estimator and, for a Pipeline, its steps in order (nested pipelines flattened)."""
    inner = getattr(estimator, "steps", None)
    if inner is None:
        return [estimator]
    return [step for _, part in inner for step in _steps(part)]


def _imputes(steps: list[Any]) -> bool:
    return any(type(s).__name__ in ("SimpleImputer", "KNNImputer", "IterativeImputer") for s in steps)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _categories(encoder: Any, position: int) -> tuple[tuple[Any, ...] | None, bool]:
    """The values an encoder accepts for one of its columns (None: any value), and whether it learnt a
    missing value as a category of its own."""
    learnt = getattr(encoder, "categories_", None)
    if learnt is None or position >= len(learnt):
        return None, False
    values = [v.item() if isinstance(v, np.generic) else v for v in learnt[position].tolist()]
    known_missing = any(_is_missing(v) for v in values)
    if getattr(encoder, "handle_unknown", "error") != "error":
        return None, known_missing
    return tuple(v for v in values if not _is_missing(v)), known_missing


def _branch_specs(names: list[str], transformer: Any, nullable_default: bool) -> dict[str, ColumnSpec]:
    """The columns one ColumnTransformer branch takes, read from its steps."""
    if isinstance(transformer, str):  # "drop" columns may hold anything; "passthrough" reach the model as numbers
        kind = STRING if transformer == "drop" else NUMBER
        return {n: ColumnSpec(n, kind, nullable=transformer == "drop" or nullable_default) for n in names}
    steps = _steps(transformer)
    nullable = _imputes(steps) or nullable_default  # scalers and the like pass a missing value on
    encoder = next((s for s in steps if type(s).__name__ in ENCODERS), None)
    out = {}
    for position, name in enumerate(names):
        if encoder is None:
            out[name] = ColumnSpec(name, NUMBER, nullable=nullable)
            continue
        categories, known_missing = _categories(encoder, position)
        numeric = bool(categories) and all(type(c) in (int, float) for c in categories)
        kind = NUMBER if numeric else STRING
        out[name] = ColumnSpec(name, kind, nullable=_imputes(steps) or known_missing, categories=categories)
    return out


def _column_transformer(steps: list[Any]) -> Any | None:
    first = steps[0] if steps else None
    return first if type(first).__name__ == "ColumnTransformer" and hasattr(first, "transformers_") else None


def input_schema(estimator: Any, columns: list[str] | None) -> InputSchema:
    """The input schema of a fitted estimator; ``columns`` are its feature names (None: fitted on an array)."""
    steps = _steps(estimator)
    native_missing = type(steps[-1]).__name__ in NATIVE_MISSING
    if columns is None:
        n = getattr(estimator, "n_features_in_", None)
        specs = tuple(ColumnSpec(f"x{i}", nullable=native_missing) for i in range(n or 0))
        return InputSchema(specs, named=False)
    transformer = _column_transformer(steps)
    # a missing value that reaches an imputer (or a model that takes them) after the column steps is handled
    nullable = native_missing or _imputes(steps[1:] if transformer is not None else steps)
    by_name = {c: ColumnSpec(c, nullable=nullable) for c in columns}
    if transformer is not None:
        indices = getattr(transformer, "_transformer_to_input_indices", {})
        for name, branch, _ in transformer.transformers_:
            branch_columns = [columns[i] for i in indices.get(name, [])]
            by_name.update(_branch_specs(branch_columns, branch, nullable))
    return InputSchema(tuple(by_name[c] for c in columns), named=True)


RowsScore = Callable[[pd.DataFrame], np.ndarray]  # probabilities of a table of records
MAX_EXPONENT = 308  # 10**308 is the largest power of ten a float holds


def _rows_ok(score: RowsScore, table: pd.DataFrame) -> np.ndarray:
    """Whether the model scores each record to finite outputs; a batch it refuses is split in halves."""
    try:
        with np.errstate(all="ignore"):
            proba = np.asarray(score(table), dtype=np.float64)
        return np.isfinite(proba).all(axis=1)
    except MembershieldError:
        raise
    except Exception:  # the model refused a value of this batch: find which records by halving
        if len(table) == 1:
            return np.array([False])
        half = len(table) // 2
        return np.concatenate([_rows_ok(score, table.iloc[:half]), _rows_ok(score, table.iloc[half:])])


def _base_record(schema: InputSchema) -> dict[str, Any]:
    """A record every column of which the model takes: 0 for numbers, a known category (or '') else."""
    base = {}
    for spec in schema.columns:
        if spec.categories:
            base[spec.name] = spec.categories[0]
        else:
            base[spec.name] = 0.0 if spec.kind == NUMBER else ""
    return base


def _probe(schema: InputSchema, score: RowsScore, values: dict[str, float]) -> dict[str, bool]:
    """For each column: does the model score the base record with that column at +value and at -value?"""
    base = _base_record(schema)
    rows = []
    for name, value in values.items():
        rows += [{**base, name: value}, {**base, name: -value}]
    ok = _rows_ok(score, _typed(schema, rows))
    return {name: bool(ok[2 * i] and ok[2 * i + 1]) for i, name in enumerate(values)}


def _typed(schema: InputSchema, rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=schema.names)
    for spec in schema.columns:
        if spec.kind == NUMBER:
            table[spec.name] = table[spec.name].astype(np.float64)
    return table


def with_safe_ranges(schema: InputSchema, score: RowsScore) -> InputSchema:
    """The schema with each free numeric column bounded by the largest power of ten the model scores to
    finite outputs, at both signs (a binary search over the exponent, every column at once); then every
    column at its bound together, in two sign patterns, shrinking all bounds tenfold until that scores too.

    Values inside the published range are then values the model was seen to take; a request outside it is
    refused before the model runs, naming the column.
    """
    free = [c.name for c in schema.columns if c.kind == NUMBER and c.categories is None]
    if not free or not _rows_ok(score, _typed(schema, [_base_record(schema)]))[0]:
        return schema
    low = dict.fromkeys(free, -1)  # exponents known to score (-1: not even 10**0 checked)
    high = dict.fromkeys(free, MAX_EXPONENT + 1)  # exponents known to fail (309: beyond the float range)
    top = _probe(schema, score, dict.fromkeys(free, FLOAT_MAX))
    bounds = {name: FLOAT_MAX for name in free if top[name]}
    searching = [name for name in free if not top[name]]
    while searching:
        middle = {name: (low[name] + high[name]) // 2 for name in searching}
        passed = _probe(schema, score, {name: 10.0 ** max(e, 0) for name, e in middle.items()})
        for name in searching:
            if passed[name]:
                low[name] = middle[name]
            else:
                high[name] = middle[name]
        searching = [name for name in searching if high[name] - low[name] > 1]
    bounds.update({name: 10.0 ** max(low[name], 0) for name in free if name not in bounds})
    for _ in range(2 * MAX_EXPONENT):
        corners = [
            {**_base_record(schema), **{n: bounds[n] * sign * (-1) ** (i * flip) for i, n in enumerate(free)}}
            for sign in (1, -1)
            for flip in (0, 1)
        ]
        if _rows_ok(score, _typed(schema, corners)).all():
            break
        bounds = {name: value / 10 for name, value in bounds.items()}
    by_name = {c.name: replace(c, bound=bounds[c.name]) if c.name in bounds else c for c in schema.columns}
    return InputSchema(tuple(by_name[c.name] for c in schema.columns), named=schema.named)
