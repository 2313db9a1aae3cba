"""Pure parts of the guard: PII validators and redaction, the probing detector, limits and the policy file."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from membershield.errors import ConfigError
from membershield.guard.detector import PERTURBATION, SWEEP, ProbingDetector, relative_l2
from membershield.guard.limits import RateLimiter
from membershield.guard.pii import find_pii, iban_valid, luhn_valid, redact, ssn_valid
from membershield.guard.policy import DetectorConfig, Limits, load_policy, policy_from_dict


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- PII ---------------------------------------------------------------------------------------------


def _luhn_digit(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return check
    raise AssertionError


@given(st.text(alphabet="0123456789", min_size=15, max_size=15))
def test_luhn_accepts_exactly_one_check_digit(body):
    valid = [d for d in "0123456789" if luhn_valid(body + d)]
    assert len(valid) == 1


@settings(max_examples=50)
@given(st.text(alphabet="0123456789", min_size=15, max_size=15), st.sampled_from([" ", "-", ""]))
def test_valid_card_numbers_are_redacted_in_any_grouping(body, sep):
    number = body + _luhn_digit(body)
    grouped = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    text, counts = redact(f"paid with {grouped} today")
    assert grouped not in text and counts["CREDIT_CARD"] == 1


def test_known_values():
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33") and not iban_valid("DE8937040044053201300")
    assert ssn_valid("123-45-6789") and not ssn_valid("000-12-3456") and not ssn_valid("900-12-3456")
    assert not ssn_valid("123-00-6789") and not ssn_valid("123-45-0000")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to a.b+c@mail.example.org now", "EMAIL"),
        ("call +44 20 7946 0958", "PHONE"),
        ("call (415) 555-2671", "PHONE"),
        ("SSN 078-05-1120", "US_SSN"),
        ("IBAN FR14 2004 1010 0505 0001 3M02 606", "IBAN"),
        ("from 192.168.10.254", "IP_ADDRESS"),
        ("from 2001:db8::8a2e:370:7334", "IP_ADDRESS"),
    ],
)
def test_each_kind_is_found(text, kind):
    assert [k for k, _, _ in find_pii(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    ["version 1.2.3", "on 2024-01-05 at 10:30:15", "order 12345", "999.1.2.3", "4111 1111 1111 1112", "pi 3.14159"],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text)[0] == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=200))
def test_text_without_digits_or_at_signs_is_unchanged(text):
    if "@" not in text and ":" not in text:
        assert redact(text)[0] == text


# -- detector ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data


def test_relative_l2_is_scale_free():
    a = np.array([[1.0, 2.0, 3.0]])
    b = a[0] * 1.01
    assert relative_l2(a, b)[0] == pytest.approx(relative_l2(a * 1000, b * 1000)[0])
    assert relative_l2(a, b)[0] == pytest.approx(
        np.linalg.norm(a[0] - b) / np.mean([np.linalg.norm(a), np.linalg.norm(b)])
    )


def test_perturbation_probing_is_detected_with_evidence(digits):
    clock = Clock()
    detector = ProbingDetector(DetectorConfig(), clock=clock)
    rng = np.random.default_rng(0)
    alerts = []
    for i in range(200):  # noqa: B007
        clock.now += 1.0
        probe = digits[0] + rng.normal(0, 0.3, digits.shape[1])
        alerts += detector.observe("mallory", probe[None, :])
        if alerts:
            break
    assert i < 30
    (alert,) = alerts
    assert alert.key == "mallory" and alert.pattern == PERTURBATION
    assert alert.evidence["near_duplicates"] == 20 and alert.evidence["relative_l2_max"] <= 0.1
    clock.now += 1.0
    assert detector.observe("mallory", digits[:1] + 0.01) == []  # cooldown: one alert per pattern
    assert detector.throttled_for("mallory") is None  # throttling is off by default


def _probe_until_alert(detector: ProbingDetector, clock: Clock, key: str, record: np.ndarray):
    rng = np.random.default_rng(0)
    for i in range(100):
        clock.now += 1.0
        alerts = detector.observe(key, (record + rng.normal(0, 0.3, record.shape))[None, :])
        if alerts:
            return i, [(a.pattern, a.evidence) for a in alerts]
    return None


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param(lambda r: np.where(np.arange(r.size) == 3, 1e160, r), id="one-feature-1e160"),
        pytest.param(lambda r: np.full(r.size, 1e160), id="all-1e160"),
        pytest.param(lambda r: np.where(np.arange(r.size) % 2 == 0, 1.7e308, -1.7e308), id="float-max-both-signs"),
        pytest.param(lambda r: r * 1e-300, id="tiny"),
        pytest.param(lambda r: np.full(r.size, 5e-324), id="subnormal"),
    ],
)
def test_an_extreme_record_does_not_switch_off_probing_detection(digits, poison):
    clock = Clock()
    detector = ProbingDetector(DetectorConfig(), clock=clock)
    fresh = _probe_until_alert(detector, clock, "fresh", digits[0])
    assert fresh is not None
    clock.now += 1.0
    detector.observe("mallory", poison(digits[0].copy())[None, :])
    assert _probe_until_alert(detector, clock, "mallory", digits[0]) == fresh


def test_relative_l2_has_no_overflow_or_nan():
    history = np.array([[1e160, 1.0], [1.7e308, -1.7e308], [0.0, 0.0], [5e-324, 0.0], [1.0, 2.0]])
    record = np.array([1.0, 2.0])
    distances = relative_l2(history, record)
    assert np.isfinite(distances).all()
    assert distances[-1] == 0.0 and distances[0] > 1.0 and distances[2] == pytest.approx(2.0)
    same_huge = relative_l2(history[:2], history[1] * (1 + 1e-3))
    assert same_huge[1] == pytest.approx(1e-3 / 1.0005)


def test_normal_traffic_raises_no_alert(digits):
    clock = Clock()
    detector = ProbingDetector(DetectorConfig(), clock=clock)
    rng = np.random.default_rng(1)
    for _ in range(3000):
        clock.now += 0.5
        assert detector.observe("alice", digits[rng.integers(len(digits))][None, :]) == []


def test_sweeps_are_detected_and_throttled(digits):
    clock = Clock()
    detector = ProbingDetector(DetectorConfig(sweep_count=500, throttle=True, throttle_seconds=60), clock=clock)
    alerts = []
    for batch in np.array_split(digits[:600], 30):
        clock.now += 1.0
        alerts += detector.observe("eve", batch)
    assert [a.pattern for a in alerts] == [SWEEP]
    assert alerts[0].evidence["distinct_records"] >= 500
    assert 50 <= detector.throttled_for("eve") <= 60
    clock.now += 61
    assert detector.throttled_for("eve") is None


# -- limits and policy -------------------------------------------------------------------------------


def test_rate_limit_and_budget():
    clock = Clock()
    limiter = RateLimiter(Limits(requests_per_minute=2, daily_query_budget=10), clock=clock)
    assert limiter.check_rate("k") is None and limiter.check_rate("k") is None
    assert limiter.check_rate("k") == 60
    clock.now += 30
    assert limiter.check_rate("k") == 30
    assert limiter.check_rate("other") is None
    assert limiter.check_budget("k", 10) is None
    wait = limiter.check_budget("k", 1)
    assert 0 < wait <= 86_400
    clock.now += wait
    assert limiter.check_budget("k", 1) is None  # a new UTC day


def test_policy_file(tmp_path):
    path = tmp_path / "guard.toml"
    path.write_text(
        "[output]\nclip_top1 = 0.9\ntop_k = 3\n[limits]\nrequests_per_minute = 100\n[detector]\nthrottle = true\n"
    )
    policy = load_policy(path)
    assert policy.output.clip_top1 == 0.9 and policy.output.top_k == 3
    assert policy.limits.requests_per_minute == 100 and policy.limits.daily_query_budget == 100_000
    assert policy.detector.throttle
    with pytest.raises(ConfigError, match="unknown key 'clip_top' in \\[output\\]"):
        policy_from_dict({"output": {"clip_top": 0.9}})
    with pytest.raises(ConfigError, match="unknown section \\[outputs\\]"):
        policy_from_dict({"outputs": {}})
    with pytest.raises(ConfigError, match="clip_top1 must be in"):
        policy_from_dict({"output": {"clip_top1": 0.3}})
    with pytest.raises(ConfigError, match="requests_per_minute must be an integer"):
        policy_from_dict({"limits": {"requests_per_minute": "many"}})
