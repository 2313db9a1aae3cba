"""Tests of membershield.metrics: hand-computed cases, agreement with references, and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from membershield.errors import ConfigError, InputDataError, MembershieldError
from membershield.metrics import (
    EpsilonBound,
    Interval,
    TprAtFpr,
    auc,
    auc_with_ci,
    clopper_pearson,
    empirical_epsilon_lower_bound,
    membership_advantage,
    nonmembers_needed,
    ppv_at_prior,
    roc,
    slice_metrics,
    top_exposed,
    tpr_at_fpr,
    unresolved_fprs,
)

# 4 members, 4 non-members, one member/non-member tie at 0.6.
#   members:     0.9, 0.8, 0.6, 0.3
#   non-members: 0.7, 0.6, 0.2, 0.1
SMALL_SCORES = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1])
SMALL_MEMBER = np.array([True, True, True, True, False, False, False, False])


# ---------------------------------------------------------------------------- hand-computed cases


def test_roc_small_case_counts() -> None:
    curve = roc(SMALL_SCORES, SMALL_MEMBER)
    assert curve.n_members == 4 and curve.n_nonmembers == 4
    assert np.isinf(curve.thresholds[0])
    np.testing.assert_array_equal(curve.thresholds[1:], [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    np.testing.assert_array_equal(curve.tp, [0, 1, 2, 2, 3, 4, 4, 4])
    np.testing.assert_array_equal(curve.fp, [0, 0, 0, 1, 2, 2, 3, 4])
    assert curve.tp.dtype.kind == "i" and curve.fp.dtype.kind == "i"
    np.testing.assert_allclose(curve.tpr, curve.tp / 4)
    np.testing.assert_allclose(curve.fpr, curve.fp / 4)


def test_auc_small_case_tie_counts_half() -> None:
    # Pairs (member > non-member): 0.9 beats 4, 0.8 beats 4, 0.6 beats 2 and ties 1, 0.3 beats 2.
    assert auc(SMALL_SCORES, SMALL_MEMBER) == pytest.approx((4 + 4 + 2.5 + 2) / 16)


# The small case with every record repeated 20 times: 80 members, 80 non-members, enough for FPRs >= 6%.
REPEATED_SCORES = np.repeat(SMALL_SCORES, 20)
REPEATED_MEMBER = np.repeat(SMALL_MEMBER, 20)


def test_tpr_at_fpr_point_estimate_small_case() -> None:
    zero = tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.25)
    assert zero.measurable and zero.tp == 40 and zero.fp == 0 and zero.tpr == 0.5
    assert zero.achieved_fpr == 0.0
    half = tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.5)
    assert half.tp == 80 and half.fp == 40 and half.tpr == 1.0 and half.achieved_fpr == 0.5
    # 0.4 admits the point at 0.7 (tp 40, fp 20) but not the tied 0.6 (tp 60, fp 40); the point at 0.8 has
    # the same TPR with no false positive and is preferred.
    between = tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.4)
    assert between.tp == 40 and between.fp == 0 and between.achieved_fpr == 0.0


def test_tpr_at_fpr_interval_brackets_the_fpr_with_certified_thresholds() -> None:
    from scipy.stats import beta

    tail = 0.05 / 4
    result = tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.25)
    # Points of the curve (fp, tp): (0, 20) (0, 40) (20, 40) (40, 60) (40, 80) (60, 80) (80, 80).
    # Surely at most 25% FPR: fp = 0 only (the upper limit of 20 / 80 is above 0.25), best tp 40.
    assert beta.ppf(1 - tail, 21, 60) > 0.25
    assert result.ci_low == pytest.approx(beta.ppf(tail, 40, 41))
    # Surely at least 25%: the lower limit of 40 / 80 is above 0.25, that of 20 / 80 is not; at fp = 40
    # the first point has tp 60.
    assert beta.ppf(tail, 20, 61) < 0.25 < beta.ppf(tail, 40, 41)
    assert result.ci_high == pytest.approx(beta.ppf(1 - tail, 61, 20))
    assert result.ci_low <= result.tpr <= result.ci_high


def test_tpr_at_fpr_interval_does_not_claim_leakage_on_noise() -> None:
    # A threshold chosen on the same non-members must not make pure noise look like a leak: the lower
    # limit may exceed the true TPR (equal to the FPR here) in at most 2.5% of audits.
    rng = np.random.default_rng(11)
    m = np.r_[np.ones(3000, bool), np.zeros(1000, bool)]
    for fpr in (0.01, 0.1):
        above = sum(tpr_at_fpr(rng.normal(size=4000), m, fpr).ci_low > fpr for _ in range(200))
        assert above <= 5, (fpr, above)
    covered = 0
    for _ in range(200):
        s = np.r_[rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 1000)]
        result = tpr_at_fpr(s, m, 0.01)
        true_tpr = 1 - _normal_cdf(_normal_quantile(0.99) - 1.0)
        covered += result.ci_low <= true_tpr <= result.ci_high
    assert covered >= 190


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def test_tpr_at_fpr_never_exceeds_requested_fpr() -> None:
    rng = np.random.default_rng(3)
    m = rng.random(3000) < 0.5
    s = rng.normal(size=3000) + m
    for f in (0.01, 0.05, 0.1, 0.29, 0.5):
        result = tpr_at_fpr(s, m, f)
        assert result.achieved_fpr is not None and result.achieved_fpr <= f


def test_tpr_at_fpr_admits_exact_boundary_despite_float_rounding() -> None:
    # 0.29 * 100 < 29 in floating point; the budget must still admit 29 false positives.
    s = np.arange(200, dtype=float)
    m = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    s = np.where(m, s, -s)  # members all above non-members
    s[:29] = 1000.0 + np.arange(29)  # 29 non-members on top
    result = tpr_at_fpr(s, m, 0.29)
    assert result.fp == 29 and result.tpr == 1.0


def test_membership_advantage_separable_and_anti_correlated() -> None:
    rng = np.random.default_rng(4)
    m = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    separable = membership_advantage(np.where(m, 2.0, 0.0) + rng.random(400), m)
    assert separable.value == 1.0 and separable.tp == 200 and separable.fp == 0
    assert 0.95 < separable.ci_low <= separable.value <= separable.ci_high == 1.0
    # Scores that point the wrong way: no threshold of the form "score >= t" gains anything.
    reversed_ = membership_advantage(-np.where(m, 2.0, 0.0) - rng.random(400), m)
    assert reversed_.value == 0.0 and reversed_.tp == 0 and reversed_.fp == 0
    assert reversed_.ci_low < 0.0 < reversed_.ci_high


def test_membership_advantage_is_unbiased_on_noise_and_its_interval_covers_zero() -> None:
    # The best threshold on the same records would report about 0.06 here; held-out thresholds do not.
    rng = np.random.default_rng(5)
    m = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    results = [membership_advantage(rng.normal(size=400), m, seed=i) for i in range(200)]
    assert abs(np.mean([r.value for r in results])) < 0.01
    assert sum(r.ci_low <= 0.0 <= r.ci_high for r in results) >= 185


def test_membership_advantage_is_reproducible_and_validates() -> None:
    rng = np.random.default_rng(6)
    m = rng.random(300) < 0.5
    s = rng.normal(size=300) + m
    assert membership_advantage(s, m, seed=3) == membership_advantage(s, m, seed=3)
    with pytest.raises(InputDataError, match="at least 2 members"):
        membership_advantage([0.1, 0.2, 0.3], [True, False, False])


def test_ppv_at_prior() -> None:
    assert ppv_at_prior(0.5, 0.1, 0.5) == pytest.approx(0.25 / 0.3)
    # One member per hundred records: a 1% FPR already halves precision.
    assert ppv_at_prior(1.0, 0.01, 0.01) == pytest.approx(0.01 / (0.01 + 0.99 * 0.01))
    assert ppv_at_prior(0.0, 0.0, 0.3) is None
    assert ppv_at_prior(0.0, 0.2, 0.3) == 0.0
    with pytest.raises(ConfigError):
        ppv_at_prior(0.5, 0.1, 1.5)


def test_clopper_pearson_known_values() -> None:
    # Reference values from R: binom.test(3, 10)$conf.int
    interval = clopper_pearson(3, 10)
    assert interval.low == pytest.approx(0.06673951, abs=1e-7)
    assert interval.high == pytest.approx(0.65245285, abs=1e-7)
    assert clopper_pearson(0, 0) == Interval(0.0, 1.0)
    zero = clopper_pearson(0, 20)
    assert zero.low == 0.0 and zero.high == pytest.approx(1 - 0.025 ** (1 / 20))
    full = clopper_pearson(20, 20)
    assert full.high == 1.0 and full.low == pytest.approx(0.025 ** (1 / 20))


# ---------------------------------------------------------------------------- AUC vs references


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    m = rng.random(n) < 0.3
    s = np.round(rng.normal(size=n) + 0.5 * m, 1)  # rounding creates ties
    assert auc(s, m) == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    value, interval = auc_with_ci(s, m)
    assert value == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    assert 0.0 <= interval.low <= value <= interval.high <= 1.0


def _delong_variance_brute_force(s: np.ndarray, m: np.ndarray) -> float:
    """DeLong et al. (1988) variance from the O(m n) pairwise kernel psi."""
    pos, neg = s[m], s[~m]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10 = psi.mean(axis=1)
    v01 = psi.mean(axis=0)
    return float(np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size)


def test_delong_variance_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(11)
    m = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + m, 1)
    value, interval = auc_with_ci(s, m, confidence=0.95)
    variance = _delong_variance_brute_force(s, m)
    half_width = 1.959963984540054 * math.sqrt(variance)
    assert interval.low == pytest.approx(value - half_width, abs=1e-10)
    assert interval.high == pytest.approx(value + half_width, abs=1e-10)


def test_delong_variance_close_to_bootstrap() -> None:
    rng = np.random.default_rng(5)
    n_pos, n_neg = 200, 300
    pos = rng.normal(0.7, 1, n_pos)
    neg = rng.normal(0.0, 1, n_neg)
    s = np.r_[pos, neg]
    m = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    _, interval = auc_with_ci(s, m)
    delong_sd = (interval.high - interval.low) / (2 * 1.959963984540054)
    boot = []
    for _ in range(400):
        bp = rng.choice(pos, n_pos)
        bn = rng.choice(neg, n_neg)
        boot.append(auc(np.r_[bp, bn], m))
    assert delong_sd == pytest.approx(np.std(boot), rel=0.25)


def test_auc_ci_degenerate_small_classes() -> None:
    value, interval = auc_with_ci([0.9, 0.1, 0.2], [True, False, False])
    assert value == 1.0 and interval == Interval(0.0, 1.0)


# ---------------------------------------------------------------------------- properties

_score_lists = st.lists(st.integers(-100, 100), min_size=2, max_size=60)


@st.composite
def _labelled_scores(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    ints = draw(_score_lists)
    flags = draw(st.lists(st.booleans(), min_size=len(ints), max_size=len(ints)))
    flags[0], flags[1] = True, False  # at least one of each class
    # Integer grid scaled by 0.1: distinct scores stay distinct under every transform below.
    return np.array(ints, dtype=float) / 10.0, np.array(flags)


@settings(max_examples=60, deadline=None)
@given(_labelled_scores())
def test_auc_invariant_under_increasing_transforms(data: tuple[np.ndarray, np.ndarray]) -> None:
    s, m = data
    base = auc(s, m)
    assert base == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    for transformed in (np.exp(s), 3 * s + 1, np.arctan(s)):
        assert auc(transformed, m) == pytest.approx(base, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(_labelled_scores(), st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8))
def test_tpr_at_fpr_monotone_and_interval_contains_tpr(
    data: tuple[np.ndarray, np.ndarray], budgets: list[float]
) -> None:
    s, m = data
    previous = -1.0
    was_measurable = False
    for f in sorted(budgets):
        result = tpr_at_fpr(s, m, f)
        assert result.measurable == (not unresolved_fprs([f], result.n_nonmembers))
        assert not (was_measurable and not result.measurable)
        if result.measurable:
            assert result.tpr is not None and result.ci_low is not None and result.ci_high is not None
            assert result.tpr >= previous
            assert result.ci_low <= result.tpr <= result.ci_high
            assert result.achieved_fpr is not None and result.achieved_fpr <= f
            previous = result.tpr
            was_measurable = True
        else:
            assert result.tpr is None and result.tp is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_clopper_pearson_contains_point_estimate(counts: tuple[int, int], confidence: float) -> None:
    successes, trials = counts
    interval = clopper_pearson(successes, trials, confidence)
    assert 0.0 <= interval.low <= interval.high <= 1.0
    if trials:
        assert interval.low <= successes / trials <= interval.high


# ---------------------------------------------------------------------------- measurability


def test_tpr_not_measurable_with_too_few_nonmembers() -> None:
    rng = np.random.default_rng(0)
    m = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    s = rng.normal(size=1000) + m
    # 500 non-members: one false positive would be 0.2%, but even none only shows the FPR is below 0.9%.
    assert nonmembers_needed(0.01) > 100 and nonmembers_needed(0.01) <= 500 < nonmembers_needed(0.005)
    result = tpr_at_fpr(s, m, 0.005)
    assert not result.measurable
    assert result.tpr is None and result.ci_low is None and result.tp is None and result.achieved_fpr is None
    assert result.n_nonmembers == 500
    assert tpr_at_fpr(s, m, 0.01).measurable
    assert unresolved_fprs([0.001, 0.005, 0.01, 0.1], 500) == [0.001, 0.005]
    encoded = json.loads(json.dumps(result.to_dict()))
    assert encoded == {
        "fpr": 0.005,
        "tpr": None,
        "ci_low": None,
        "ci_high": None,
        "achieved_fpr": None,
        "tp": None,
        "fp": None,
        "n_members": 500,
        "n_nonmembers": 500,
        "measurable": False,
    }


def test_nonmembers_needed_known_values() -> None:
    # n such that 1 - tail ** (1 / n) <= fpr, tail = 0.0125: n >= log(0.0125) / log(1 - fpr).
    assert nonmembers_needed(0.001) == 4380
    assert nonmembers_needed(0.01) == 437
    assert nonmembers_needed(0.1) == 42
    with pytest.raises(ConfigError):
        nonmembers_needed(0.0)


def test_tpr_to_dict_is_json_ready() -> None:
    result = tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.25)
    assert isinstance(result, TprAtFpr)
    d = result.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(d["tp"]) is int and type(d["tpr"]) is float


# ---------------------------------------------------------------------------- empirical epsilon


def test_epsilon_separable_scores_large() -> None:
    rng = np.random.default_rng(1)
    m = np.r_[np.ones(5000, bool), np.zeros(5000, bool)]
    s = np.where(m, 2.0 + rng.random(10000), rng.random(10000))
    bound = empirical_epsilon_lower_bound(s, m)
    assert isinstance(bound, EpsilonBound)
    assert bound.epsilon > 2.0
    assert bound.tpr_low is not None and bound.fpr_high is not None and bound.threshold is not None
    assert 1.0 < bound.threshold < 2.0
    # Swapped roles: the same evidence with the sign flipped gives the same bound.
    assert empirical_epsilon_lower_bound(-s, m).epsilon == pytest.approx(bound.epsilon)


def test_epsilon_random_scores_near_zero() -> None:
    rng = np.random.default_rng(2)
    m = rng.random(4000) < 0.5
    bound = empirical_epsilon_lower_bound(rng.normal(size=4000), m)
    assert 0.0 <= bound.epsilon < 0.5


@pytest.mark.parametrize("seed", range(3))
def test_epsilon_respects_randomized_response(seed: int) -> None:
    # Randomized response with eps = 1 is exactly 1-DP: no honest bound may exceed 1.
    rng = np.random.default_rng(100 + seed)
    n = 20000
    m = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    p_one = np.where(m, math.e / (1 + math.e), 1 / (1 + math.e))
    s = (rng.random(n) < p_one).astype(float)
    bound = empirical_epsilon_lower_bound(s, m, delta=1e-5, seed=seed)
    assert 0.3 < bound.epsilon <= 1.0


def test_epsilon_is_reproducible_and_validates() -> None:
    rng = np.random.default_rng(4)
    m = rng.random(1000) < 0.5
    s = rng.normal(size=1000) + 2 * m
    assert empirical_epsilon_lower_bound(s, m, seed=7) == empirical_epsilon_lower_bound(s, m, seed=7)
    with pytest.raises(ConfigError):
        empirical_epsilon_lower_bound(s, m, delta=1.5)
    with pytest.raises(InputDataError):
        empirical_epsilon_lower_bound([1.0, 2.0, 3.0], [True, False, False])


# ---------------------------------------------------------------------------- exposure and slices


def test_top_exposed_order_and_percentile() -> None:
    top = top_exposed(SMALL_SCORES, SMALL_MEMBER, k=3)
    assert [r["index"] for r in top] == [0, 1, 4]
    assert [r["is_member"] for r in top] == [True, True, False]
    # non-member scores: 0.7, 0.6, 0.2, 0.1
    assert [r["nonmember_percentile"] for r in top] == [1.0, 1.0, 0.75]
    assert top[0]["score"] == 0.9
    assert json.loads(json.dumps(top)) == top
    # the member tied with a non-member at 0.6 is above only the two lower non-members
    everything = top_exposed(SMALL_SCORES, SMALL_MEMBER, k=100)
    assert len(everything) == 8
    tied = next(r for r in everything if r["index"] == 2)
    assert tied["nonmember_percentile"] == 0.5


def test_slice_metrics_two_slices_and_memberless_slice() -> None:
    s = np.r_[REPEATED_SCORES, [0.5, 0.4]]
    m = np.r_[REPEATED_MEMBER, [False, False]]
    slices = np.array(["b"] * 160 + ["a"] * 2)
    result = slice_metrics(s, m, slices, fprs=(0.25, 0.5))
    assert [r["slice"] for r in result] == ["a", "b"]
    a, b = result
    assert (a["n_members"], a["n_nonmembers"]) == (0, 2)
    assert a["auc"] is None and a["auc_ci_low"] is None and a["auc_ci_high"] is None
    assert [t["measurable"] for t in a["tpr_at_fpr"]] == [False, False]
    assert (b["n_members"], b["n_nonmembers"]) == (80, 80)
    assert b["auc"] == pytest.approx(auc(REPEATED_SCORES, REPEATED_MEMBER))
    assert b["auc_ci_low"] <= b["auc"] <= b["auc_ci_high"]
    assert b["tpr_at_fpr"] == [
        tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.25).to_dict(),
        tpr_at_fpr(REPEATED_SCORES, REPEATED_MEMBER, 0.5).to_dict(),
    ]
    assert json.loads(json.dumps(result)) == result


# ---------------------------------------------------------------------------- bad input


def test_nan_score_rejected() -> None:
    with pytest.raises(InputDataError, match="NaN"):
        auc([0.1, float("nan"), 0.3], [True, False, True])
    with pytest.raises(InputDataError, match="infinite"):
        roc([0.1, float("inf"), 0.3], [True, False, True])


def test_length_mismatch_rejected() -> None:
    with pytest.raises(InputDataError, match="length"):
        tpr_at_fpr([0.1, 0.2, 0.3], [True, False], 0.1)


def test_no_members_rejected() -> None:
    with pytest.raises(InputDataError, match="no members"):
        auc([0.1, 0.2], [False, False])
    with pytest.raises(InputDataError, match="no non-members"):
        membership_advantage([0.1, 0.2], [True, True])


def test_errors_are_user_fixable() -> None:
    with pytest.raises(MembershieldError):
        auc(np.zeros((2, 2)), [True, False])
    with pytest.raises(MembershieldError):
        tpr_at_fpr(SMALL_SCORES, SMALL_MEMBER, 1.5)
    with pytest.raises(MembershieldError):
        clopper_pearson(5, 3)
