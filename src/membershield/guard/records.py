"""What a guarded classifier takes as input, published in the OpenAPI schema and checked per request.

Each feature column has a kind: a number (finite, within the float range), a string (one of the
categories an encoder learnt, where it refuses others), or either, and may take ``null`` where the
model imputes. The kinds come from the fitted model itself: a ``ColumnTransformer`` says which columns
go to an encoder (strings or categories) and which to numeric steps, a ``SimpleImputer`` (or a
histogram gradient boosting model, which handles missing values) makes a column nullable. A model
fitted on a plain array takes lists of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from membershield.guard.errors import GuardError, short

FLOAT_MAX = 1.7976931348623157e308
NUMBER, STRING = "number", "string"
_NUMBER_TYPES = frozenset({int, float})  # bool is not a number here, str never is


@dataclass(frozen=True)
class ColumnSpec:
    """One feature column: its name, kind (number or string), whether null is taken, its categories."""

    name: str
    kind: str = NUMBER
    nullable: bool = False
    categories: tuple[Any, ...] | None = None  # only these values are accepted
    bound: float = FLOAT_MAX  # numbers are taken within [-bound, bound]: the range the model's arithmetic takes

    def json_schema(self) -> dict[str, Any]:
        if self.kind == NUMBER:
            schema: dict[str, Any] = {"type": "number", "minimum": -self.bound, "maximum": self.bound}
        else:
            schema = {"type": "string"}
        if self.categories is not None:
            schema = {"enum": list(self.categories)}
        if self.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema

    def check(self, value: Any, record: int) -> Any:
        """The value as the model takes it (null as NaN), or a 422 naming the record and column."""
        if value is None:
            if self.nullable:
                return np.nan
            raise _invalid(record, self.name, "is null, and the model does not impute missing values")
        if self.kind == NUMBER:
            if type(value) not in _NUMBER_TYPES:
                raise _invalid(record, self.name, f"must be a number, got {short(value)}")
            if (isinstance(value, int) and abs(value) > 2**1023) or not math.isfinite(value):
                raise _invalid(record, self.name, f"is not a finite number: {short(value)}")
            if abs(value) > self.bound:
                raise _invalid(record, self.name, self.out_of_range(value))
        elif not isinstance(value, str):
            raise _invalid(record, self.name, f"must be a string, got {short(value)}")
        if self.categories is not None and value not in self.categories:
            shown = ", ".join(repr(c) for c in self.categories[:8]) + (", ..." if len(self.categories) > 8 else "")
            raise _invalid(record, self.name, f"has {short(value)}, which the model never saw (it knows {shown})")
        return float(value) if self.kind == NUMBER else value

    def out_of_range(self, value: Any) -> str:
        return (
            f"is {short(value)}, outside -{self.bound:.0e}..{self.bound:.0e}, the range the model's own arithmetic"
            " keeps finite"
        )


def _invalid(record: int, column: str, what: str) -> GuardError:
    return GuardError(422, f"record {record}: column '{column}' {what}", "invalid_input")


@dataclass(frozen=True)
class InputSchema:
    """The columns of a model's records (``named`` when the model knows their names)."""

    columns: tuple[ColumnSpec, ...]
    named: bool

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> bool:
        return all(c.kind == NUMBER and not c.nullable and c.categories is None for c in self.columns)

    def openapi_record(self) -> dict[str, Any]:
        """The JSON schema of one record: a list in column order, or (for named columns) an object."""
        if not self.columns:
            return {"type": "array", "items": ColumnSpec("x").json_schema(), "minItems": 1}
        if self.numeric:
            items = self.columns[0].json_schema() if len({c.bound for c in self.columns}) == 1 else None
        else:
            items = None
        as_list: dict[str, Any] = {"type": "array", "minItems": len(self.columns), "maxItems": len(self.columns)}
        if items is not None:
            as_list["items"] = items
        else:  # each position its own kind (JSON Schema 2020-12, as OpenAPI 3.1 uses)
            as_list.update(prefixItems=[c.json_schema() for c in self.columns], items=False)
        if not self.named:
            return as_list
        as_object = {
            "type": "object",
            "required": self.names,
            "properties": {c.name: c.json_schema() for c in self.columns},
            "additionalProperties": False,
        }
        return {"oneOf": [as_list, as_object]}

    def parse(self, payload: Any) -> ParsedRecords:
        """The records of a predict request in the model's column order, checked, and as sent.

        A schema with no columns (an upstream whose model is not known here) takes numbers, in the
        columns of the first record: its keys, or its length.
        """
        records = _records_of(payload)
        schema = self if self.columns else _inferred(records[0])
        rows = [schema._values(record, i) for i, record in enumerate(records)]
        if schema.numeric:
            return ParsedRecords(schema, records, _number_matrix(rows, schema.columns), None)
        columns = schema.columns
        checked = [[spec.check(v, i) for spec, v in zip(columns, row, strict=True)] for i, row in enumerate(rows)]
        frame = pd.DataFrame(checked, columns=schema.names)
        for spec in schema.columns:
            if spec.kind == NUMBER:
                frame[spec.name] = frame[spec.name].astype(np.float64)
        return ParsedRecords(schema, records, schema.numeric_view(frame), frame)

    def _values(self, record: Any, i: int) -> list[Any]:
        """A record's values in column order (types are checked afterwards)."""
        if isinstance(record, dict):
            if not self.named:
                raise GuardError(
                    422, "the model has no column names: send each record as a list of values", "invalid_input"
                )
            missing = [c for c in self.names if c not in record]
            extra = [c for c in record if c not in set(self.names)]
            if missing or extra:
                what = f"lacks column '{missing[0]}'" if missing else f"has unknown column {short(extra[0])}"
                raise GuardError(422, f"record {i} {what} (expected columns: {', '.join(self.names)})", "invalid_input")
            values = [record[c] for c in self.names]
        elif isinstance(record, list):
            values = record
        else:
            raise GuardError(422, f"record {i} must be a list of values or an object keyed by column", "invalid_input")
        if len(values) != len(self.columns):
            raise GuardError(
                422, f"record {i} has {len(values)} features; the model expects {len(self.columns)}", "invalid_input"
            )
        return values

    def numeric_view(self, frame: pd.DataFrame) -> np.ndarray:
        """A float matrix of the records for the probing detector: numbers as sent (null as 0 plus a flag
        column, so a null cannot hide a record from detection), strings as stable codes."""
        parts = []
        for spec in self.columns:
            column = frame[spec.name]
            if spec.kind == NUMBER:
                values = column.to_numpy(dtype=np.float64)
                missing = np.isnan(values)
                parts.append(np.where(missing, 0.0, values))
                if spec.nullable:
                    parts.append(missing.astype(np.float64))
            else:
                parts.append(np.array([_code(v) for v in column.tolist()], dtype=np.float64))
        return np.column_stack(parts)


@dataclass(frozen=True)
class ParsedRecords:
    """Checked records: as sent (for an upstream), as numbers (for the probing detector) and as a table."""

    schema: InputSchema
    sent: list
    matrix: np.ndarray  # float64 (n, d'): see InputSchema.numeric_view
    frame: pd.DataFrame | None  # None for all-number records, whose table is the matrix itself

    def __len__(self) -> int:
        return len(self.sent)

    def table(self) -> pd.DataFrame:
        if self.frame is not None:
            return self.frame
        return pd.DataFrame(self.matrix, columns=self.schema.names)


def _number_matrix(rows: list[list[Any]], specs: tuple[ColumnSpec, ...]) -> np.ndarray:
    """Rows of plain numbers as a float matrix, every value checked at C speed (the hot path)."""
    names = [c.name for c in specs]
    bounds = np.array([c.bound for c in specs]) if any(c.bound < FLOAT_MAX for c in specs) else None
    for i, values in enumerate(rows):
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            j, bad = next((j, v) for j, v in enumerate(values) if type(v) not in _NUMBER_TYPES)
            raise _invalid(i, names[j], f"must be a number, got {short(bad)}")
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond the float range
        i, j = next(
            (i, j) for i, row in enumerate(rows) for j, v in enumerate(row) if isinstance(v, int) and abs(v) > 2**1023
        )
        raise _invalid(i, names[j], f"is not a finite number: {short(rows[i][j])}") from None
    if not np.isfinite(matrix).all():
        i, j = np.argwhere(~np.isfinite(matrix))[0]
        raise _invalid(int(i), names[j], f"is not a finite number: {short(rows[i][j])}")
    if bounds is not None:
        outside = np.abs(matrix) > bounds
        if outside.any():
            i, j = np.argwhere(outside)[0]
            raise _invalid(int(i), names[j], specs[j].out_of_range(rows[i][j]))
    return matrix


def _inferred(first: Any) -> InputSchema:
    if isinstance(first, dict):
        return InputSchema(tuple(ColumnSpec(str(name)) for name in first), named=True)
    if isinstance(first, list) and first:
        return InputSchema(tuple(ColumnSpec(f"x{i}") for i in range(len(first))), named=False)
    raise GuardError(422, "record 0 must be a non-empty list of values or an object keyed by column", "invalid_input")


def _code(value: Any) -> float:
    """A stable number for a category: equal strings equal codes, different ones far apart."""
    import zlib

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -1.0
    return float(zlib.crc32(str(value).encode()) % 1_000_003) * 1_000.0


def _records_of(payload: Any) -> list:
    if not isinstance(payload, dict) or "records" not in payload:
        raise GuardError(422, 'the body must be a JSON object {"records": [[feature, ...], ...]}', "invalid_input")
    unknown = sorted(set(payload) - {"records"})
    if unknown:
        raise GuardError(
            422, f"unknown field '{short(unknown[0])}' in the body (only 'records' is accepted)", "invalid_input"
        )
    records = payload["records"]
    if not isinstance(records, list) or not records:
        raise GuardError(422, "'records' must be a non-empty list of records", "invalid_input")
    return records
