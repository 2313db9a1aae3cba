"""Output hardening keeps every predicted label and respects its limits (property tests), and really
removes the signal threshold attacks use while label-only attacks still see what is left."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import softmax

from membershield.defenses import OutputPolicy, harden
from membershield.errors import ConfigError

logit_matrices = arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 6)), elements=st.floats(-20, 20))
policies = st.builds(
    OutputPolicy,
    temperature=st.none() | st.floats(0.2, 5.0),
    clip_top1=st.none() | st.floats(0.51, 1.0),
    noise_std=st.none() | st.floats(0.0, 2.0),
    top_k=st.none() | st.integers(1, 6),
    round_decimals=st.none() | st.integers(0, 4),
    label_only=st.booleans(),
)


def _distinct_top(logits: np.ndarray) -> np.ndarray:
    # Rows whose two best classes tie have no well-defined label to keep.
    ordered = np.sort(logits, axis=1)
    return ordered[:, -1] - ordered[:, -2] > 1e-6


@settings(max_examples=300, deadline=None)
@given(logit_matrices, policies, st.integers(0, 2**16))
def test_hardening_never_changes_the_predicted_label(logits, policy, seed) -> None:
    keep = _distinct_top(logits)
    proba = softmax(logits[keep], axis=1)
    out = harden(proba, policy, np.random.default_rng(seed))
    assert out.shape == proba.shape
    np.testing.assert_array_equal(out.argmax(axis=1), proba.argmax(axis=1))
    assert np.all(out >= 0)


@settings(max_examples=200, deadline=None)
@given(logit_matrices, st.floats(0.51, 0.99))
def test_clipped_probabilities_never_exceed_the_clip(logits, ceiling) -> None:
    proba = softmax(logits[_distinct_top(logits)], axis=1)
    out = harden(proba, OutputPolicy(clip_top1=ceiling))
    assert np.all(out <= ceiling + 1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)


def test_top_k_rounding_and_label_only_shapes() -> None:
    proba = np.array([[0.7, 0.2, 0.06, 0.04]])
    np.testing.assert_allclose(harden(proba, OutputPolicy(top_k=2)), [[0.7, 0.2, 0.0, 0.0]])
    np.testing.assert_allclose(harden(proba, OutputPolicy(round_decimals=1)), [[0.7, 0.2, 0.1, 0.0]])
    np.testing.assert_allclose(harden(proba, OutputPolicy(label_only=True)), [[1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "bad", [{"clip_top1": 0.4}, {"temperature": 0}, {"top_k": 0}, {"round_decimals": -1}, {"noise_std": -1.0}]
)
def test_invalid_policies_are_rejected(bad) -> None:
    with pytest.raises(ConfigError):
        OutputPolicy(**bad)
