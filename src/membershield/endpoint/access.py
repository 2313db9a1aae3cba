"""What an endpoint's answers give an attacker, read off the answers themselves, and those answers as
the log-probabilities the attacks take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from membershield.endpoint.formats import EndpointError
from membershield.targets.base import LOG_FLOOR


@dataclass(frozen=True)
class AnswerForm:
    access: str  # one of targets.kind.ACCESS_LEVELS, never white-box
    description: str
    top_k: int | None = None
    decimals: int | None = None


def _decimals(proba: np.ndarray) -> int | None:
    """The fewest decimals (up to 6) every probability is written with; None when they are not rounded."""
    for d in range(1, 7):
        scaled = proba * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return d
    return None


def answer_form(rows: list[dict[str, Any]]) -> AnswerForm:
    """The access the answers give: labels only, the top k probabilities, or every class's (rounded or not).

    >>> answer_form([{"label": 1}, {"label": 0}]).access
    'label-only'
    >>> answer_form([{"probabilities": [0.9, 0.1, 0.0]}, {"probabilities": [0.0, 0.3, 0.7]}]).description
    'the top 2 of 3 class probabilities, rounded to 1 decimals'
    >>> answer_form([{"probabilities": [0.91, 0.09]}, {"probabilities": [0.5, 0.5]}]).access
    'black-box'
    """
    if not rows or not all("probabilities" in r for r in rows):
        return AnswerForm("label-only", "labels only")
    proba = np.asarray([r["probabilities"] for r in rows], dtype=np.float64)
    n_classes = proba.shape[1]
    nonzero = np.count_nonzero(proba > 0, axis=1)
    decimals = _decimals(proba)
    rounded = f", rounded to {decimals} decimals" if decimals is not None else ""
    if np.all(nonzero == 1):
        return AnswerForm("label-only", "one-hot probabilities (labels only)")
    # a tree or a saturated model gives exact zeros too, but not the same number of them on every record
    k = int(nonzero[0])
    if k < n_classes and np.all(nonzero == k) and len(rows) > 1:
        return AnswerForm("top-k", f"the top {k} of {n_classes} class probabilities{rounded}", k, decimals)
    return AnswerForm("black-box", f"every class's probability{rounded}", None, decimals)


def answer_logits(rows: list[dict[str, Any]], classes: list[Any], named: list[Any] | None, url: str) -> np.ndarray:
    """(n, C) log-probabilities over ``classes`` (the audit's labels); labels become one-hot rows.

    ``named``: the classes the answers name for their probability columns, when they do.
    """
    n_classes = len(classes)
    if rows and all("probabilities" in r for r in rows):
        proba = np.asarray([r["probabilities"] for r in rows], dtype=np.float64)
        order = _column_order(proba.shape[1], classes, named, url)
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(proba[:, order]), LOG_FLOOR).astype(np.float32)
    position = {str(c): i for i, c in enumerate(classes)}
    out = np.full((len(rows), n_classes), LOG_FLOOR, dtype=np.float32)
    for i, row in enumerate(rows):
        label = str(row["label"])
        if label not in position:
            shown = ", ".join(repr(c) for c in classes[:10])
            raise EndpointError(
                f"{url} answered label {row['label']!r}, which the audit data does not have (labels: {shown}):"
                " use the label column the model was trained on"
            )
        out[i, position[label]] = 0.0
    return out


def _column_order(n_columns: int, classes: list[Any], named: list[Any] | None, url: str) -> list[int]:
    if named is not None:
        where = {str(c): j for j, c in enumerate(named)}
        missing = [c for c in classes if str(c) not in where]
        if missing or len(named) != n_columns:
            raise EndpointError(
                f"{url} answers probabilities for classes {named[:10]}, which do not cover the audit's labels"
                f" {classes[:10]}: use the label column the model was trained on"
            )
        return [where[str(c)] for c in classes]
    if n_columns != len(classes):
        raise EndpointError(
            f"{url} answers probabilities for {n_columns} classes but the audit data has {len(classes)} labels"
            f" ({', '.join(repr(c) for c in classes[:10])}): the columns cannot be matched to the labels;"
            " use the label column the model was trained on, with every class among the records"
        )
    return list(range(n_columns))  # unnamed columns: the server's order, sorted labels as scikit-learn has it
