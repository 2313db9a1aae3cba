"""Signals against direct formulas, including the confident tail where naive formulas lose precision."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from membershield import signals


def _direct(logits: np.ndarray, labels: np.ndarray):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    py = p[rows, labels]
    other = p.copy()
    other[rows, labels] = 0
    mentr = -(1 - py) * np.log(py) - (other * np.log(1 - np.where(other > 0, other, 0))).sum(axis=1)
    return p, -np.log(py), np.log(py / (1 - py)), mentr


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (6, 4), elements=st.floats(-4, 4)), st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_signals_match_direct_formulas(logits, labels) -> None:
    y = np.array(labels)
    p, loss, phi, mentr = _direct(logits, y)
    np.testing.assert_allclose(signals.cross_entropy_loss(logits, y), loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(signals.scaled_logit(logits, y), phi, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(signals.modified_entropy(logits, y), mentr, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(signals.true_class_confidence(logits, y), p[np.arange(6), y], rtol=1e-12)
    np.testing.assert_allclose(signals.prediction_entropy(logits), -(p * np.log(p)).sum(axis=1), rtol=1e-9)


def test_scaled_logit_keeps_resolution_when_probability_rounds_to_one() -> None:
    logits = np.array([[60.0, 0.0, 0.0], [70.0, 0.0, 0.0]])
    y = np.array([0, 0])
    phi = signals.scaled_logit(logits, y)
    # p_y rounds to 1.0 in float64, yet log(p/(1-p)) = 60 - log 2 and 70 - log 2 exactly.
    np.testing.assert_allclose(phi, [60 - np.log(2), 70 - np.log(2)], rtol=1e-12)
    assert signals.modified_entropy(logits, y)[0] > signals.modified_entropy(logits, y)[1] >= 0


def test_modified_entropy_is_monotone_in_true_class_probability() -> None:
    grid = np.linspace(-8, 8, 50)
    logits = np.stack([grid, np.zeros_like(grid), np.zeros_like(grid)], axis=1)
    values = signals.modified_entropy(logits, np.zeros(50, dtype=int))
    assert np.all(np.diff(values) < 0)
