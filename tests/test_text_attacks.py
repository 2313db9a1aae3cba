"""Text attacks, scoring windows, JSONL input and the text split check, on arrays and small texts (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from membershield.errors import ConfigError, InputDataError
from membershield.metrics import auc_with_ci
from membershield.text.attacks import REGISTRY, TextAttackInputs, create_text_attack, parse_text_attack_list
from membershield.text.attacks.min_k_plus_plus import standardised_logprobs
from membershield.text.data import load_jsonl
from membershield.text.scoring import TokenScores, plan_windows
from membershield.text.split_check import text_split_check
from tests.text_fixtures import make_corpus


def _fake_scores(rng: np.random.Generator, n: int, shift: float) -> TokenScores:
    """Per-token scores of n texts; ``shift`` > 0 makes the text's tokens likelier (a memorised text)."""
    logprob, mean, var = [], [], []
    for _ in range(n):
        length = int(rng.integers(10, 40))
        mu = -rng.uniform(1.0, 3.0, length)
        sigma2 = rng.uniform(0.5, 2.0, length)
        logprob.append(np.minimum(mu + np.sqrt(sigma2) * rng.normal(size=length) + shift, -1e-3))
        mean.append(mu)
        var.append(sigma2)
    return TokenScores(logprob, mean, var)


def _inputs(leaky: bool, seed: int = 0) -> tuple[TextAttackInputs, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 150
    texts = make_corpus(2 * n, seed=seed)
    parts = [_fake_scores(rng, n, 1.0 if leaky else 0.0), _fake_scores(rng, n, 0.0)]
    target = TokenScores(
        parts[0].logprob + parts[1].logprob, parts[0].mean + parts[1].mean, parts[0].var + parts[1].var
    )
    lowercase = TokenScores([np.full(a.size, -2.5) for a in target.logprob])  # casing not learnt
    reference = TokenScores([np.full(a.size, -2.0) for a in target.logprob])  # the same for everyone
    is_member = np.arange(2 * n) < n
    return TextAttackInputs(texts, target, lowercase, reference), is_member


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_attack_scores_members_higher_on_a_leaky_model(name: str) -> None:
    inputs, is_member = _inputs(leaky=True)
    scores = create_text_attack(name).score(inputs)
    assert scores.shape == (len(inputs.texts),) and np.isfinite(scores).all()
    auc, interval = auc_with_ci(scores, is_member)
    assert interval.low > 0.6, (name, auc)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_attack_is_at_chance_on_a_model_that_learnt_nothing(name: str) -> None:
    inputs, is_member = _inputs(leaky=False, seed=1)
    _, interval = auc_with_ci(create_text_attack(name).score(inputs), is_member)
    assert interval.low <= 0.5 <= interval.high, name


def test_min_k_plus_plus_standardises_by_the_next_token_distribution() -> None:
    # A token exactly at the distribution's mean scores 0, one sigma above scores 1; a point mass scores 0.
    z = standardised_logprobs(np.array([-2.0, -1.0, -0.5]), np.array([-2.0, -2.0, -0.5]), np.array([1.0, 1.0, 0.0]))
    assert z.tolist() == [0.0, 1.0, 0.0]


def test_unknown_attack_and_bad_k_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'min-k'"):
        parse_text_attack_list("min-kk")
    with pytest.raises(ConfigError, match="min-k"):
        create_text_attack("min-k", {"min_k": 1.5})
    with pytest.raises(ConfigError, match="--reference-model"):
        create_text_attack("reference").check(has_reference=False)


def test_windows_cover_every_token_once() -> None:
    for n, window, stride in ((5, 8, 4), (37, 8, 3), (64, 16, 15), (2, 2, 1)):
        windows = plan_windows([n], window, stride)
        scored = [t for w in windows for t in range(w.first_target, w.stop)]
        assert scored == list(range(1, n)), (n, window, stride)
        assert all(w.stop - w.start <= window for w in windows)
        # every scored token after the first window keeps at least window - stride tokens of context
        assert all(t - w.start >= min(window - stride, t) for w in windows[1:] for t in range(w.first_target, w.stop))
    with pytest.raises(ConfigError):
        plan_windows([10], 8, 8)


def test_jsonl_errors_name_file_and_line(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "also fine"}\n{"text": "broken\n')
    with pytest.raises(InputDataError, match=r"bad\.jsonl:4: not valid JSON"):
        load_jsonl(bad)
    other = tmp_path / "other.jsonl"
    other.write_text('{"body": "x"}\n')
    with pytest.raises(InputDataError, match=r"other\.jsonl:1: no field 'text'.*--text-field"):
        load_jsonl(other)
    assert load_jsonl(other, "body").texts == ["x"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputDataError, match="no records"):
        load_jsonl(empty)
    records = load_jsonl(_write(tmp_path / "ok.jsonl", ["a", "b"]))
    assert records.texts == ["a", "b"] and records.lines == [1, 2] and len(records.sha256) == 64


def _write(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_text_split_check_quiet_on_a_random_split_and_fires_on_a_shift() -> None:
    texts = make_corpus(240, seed=11)
    is_member = np.arange(240) % 2 == 0
    assert text_split_check(texts, is_member, seed=0).ok
    # Non-members from a later period: every one carries a date from another year range.
    shifted = [t if is_member[i] else f"{t} Updated 2031-07-{1 + i % 28:02d}." for i, t in enumerate(texts)]
    check = text_split_check(shifted, is_member, seed=0)
    assert not check.ok and check.ci_low > 0.5


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_next_token_moments_match_a_float64_softmax_across_chunks(dtype) -> None:
    import torch

    from membershield.text.scoring import CHUNK_ELEMENTS, next_token_moments

    vocabulary = 5000
    rows = 3 * (CHUNK_ELEMENTS // vocabulary) + 7  # several chunks and a short last one
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, vocabulary, generator=generator) * 4).to(getattr(torch, dtype))
    targets = torch.randint(0, vocabulary, (rows,), generator=generator)
    exact = torch.log_softmax(logits.double(), dim=-1)
    p = exact.exp()
    exact_mean = (p * exact).sum(-1)
    exact_var = (p * (exact - exact_mean[:, None]) ** 2).sum(-1)
    token_lp, mean, var = next_token_moments(logits.clone(), targets)
    np.testing.assert_allclose(token_lp.double(), exact.gather(-1, targets[:, None]).squeeze(-1), atol=1e-4)
    np.testing.assert_allclose(mean.double(), exact_mean, atol=1e-4)
    np.testing.assert_allclose(var.double(), exact_var, rtol=1e-4, atol=1e-3)
    only_lp, no_mean, no_var = next_token_moments(logits.clone(), targets, distribution=False)
    assert no_mean is None and no_var is None and torch.equal(only_lp, token_lp)
