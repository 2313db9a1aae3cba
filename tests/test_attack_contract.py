"""Every registered attack, on arrays with known ground truth: higher score = member, chance when the
target carries no membership information. Runs without training anything (attacks never train models
of the target's kind), so it covers every attack in the registry in a few seconds."""

from __future__ import annotations

import numpy as np
import pytest

from membershield import metrics
from membershield.attacks import REGISTRY, AttackInputs, create_attack, parse_attack_list
from membershield.errors import ConfigError
from membershield.signals import cross_entropy_loss
from membershield.training import membership_plan

N_AUDIT, N_POPULATION, N_CLASSES, N_REFERENCES = 800, 400, 5, 8


def synthetic_inputs(leaky: bool, seed: int = 0) -> tuple[AttackInputs, np.ndarray]:
    """Per-record difficulty varies; a model that trained on a record adds ``boost`` to its true-class logit.

    A record's features are what makes it hard or easy (its difficulty and the logits any model starts
    from), so an attack that learns difficulty from the records has something to learn."""
    rng = np.random.default_rng(seed)
    n = N_AUDIT + N_POPULATION
    labels = rng.integers(0, N_CLASSES, n)
    base = rng.normal(0, 1.5, (n, N_CLASSES))
    difficulty = rng.normal(0, 1.0, n)
    boost = 1.5

    def model_logits(trained_on: np.ndarray) -> np.ndarray:
        logits = base + rng.normal(0, 0.4, base.shape)
        logits[np.arange(n), labels] += difficulty + boost * trained_on
        return logits.astype(np.float32)

    is_member = np.zeros(n, bool)
    is_member[: N_AUDIT // 2] = True
    target_in = is_member if leaky else np.zeros(n, bool)
    keep = membership_plan(n, N_REFERENCES, 0.5, seed)
    references = np.stack([model_logits(keep[k]) for k in range(N_REFERENCES)])
    target = model_logits(target_in)
    features = np.column_stack([difficulty, base])
    queries = SimulatedQueries(target, labels, references)
    inputs = AttackInputs(labels, target, references, keep, N_AUDIT, seed, queries, features)
    return inputs, is_member[:N_AUDIT]


class SimulatedQueries:
    """Perturbed queries, simulated as noise on the target's logits: a record far from the decision
    boundary keeps its label more often. White-box signals are simulated from the logits too (the target's
    and the references')."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, references: np.ndarray) -> None:
        self.logits, self.labels, self.references = logits, labels, references

    def _gradient_norms(self, logits: np.ndarray) -> np.ndarray:
        # The loss gradient with respect to the logits is softmax - one-hot; a layer's gradient is that
        # times its inputs, so its norm follows this one's.
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        probabilities[np.arange(len(self.labels)), self.labels] -= 1.0
        return np.linalg.norm(probabilities, axis=1)

    def _checkpoint_losses(self, logits: np.ndarray) -> np.ndarray:
        # Checkpoint t of 3 has learnt t/4 of what the trained model has: its logits, scaled down.
        return np.stack([cross_entropy_loss(logits * (t / 4), self.labels) for t in (1, 2, 3)])

    def gradient_norms(self) -> np.ndarray:
        return self._gradient_norms(self.logits)

    def checkpoint_losses(self) -> np.ndarray:
        return self._checkpoint_losses(self.logits)

    def reference_gradient_norms(self) -> np.ndarray:
        return np.stack([self._gradient_norms(logits) for logits in self.references])

    def reference_checkpoint_losses(self) -> np.ndarray:
        return np.stack([self._checkpoint_losses(logits) for logits in self.references])

    def label_agreement(self, *, n_queries: int, scale: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        perturbed = self.logits[None] + rng.normal(0, 5 * scale, (n_queries, *self.logits.shape))
        return (perturbed.argmax(axis=2) == self.labels).mean(axis=0)

    def _boundary_distance(self, logits: np.ndarray, queries_per_record: int, seed: int) -> np.ndarray:
        # The distance to the boundary grows with the true-class logit margin; a search on a small budget
        # finds it only roughly (multiplicative error that shrinks with the budget).
        rng = np.random.default_rng(seed)
        rows = np.arange(len(self.labels))
        others = logits.copy()
        others[rows, self.labels] = -np.inf
        margin = logits[rows, self.labels] - others.max(axis=1)
        error = np.exp(rng.normal(0, 1 / np.sqrt(queries_per_record), margin.shape))
        return np.where(margin > 0, margin * error, 0.0)

    def boundary_distance(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        return self._boundary_distance(self.logits, queries_per_record, seed)

    def reference_boundary_distance(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        return np.stack(
            [
                self._boundary_distance(logits, queries_per_record, seed + 1 + k)
                for k, logits in enumerate(self.references)
            ]
        )


@pytest.fixture(scope="module")
def leaky():
    return synthetic_inputs(leaky=True)


@pytest.fixture(scope="module")
def silent():
    return synthetic_inputs(leaky=False)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_scores_have_the_contract_shape(name, leaky) -> None:
    inputs, _ = leaky
    scores = create_attack(name).score(inputs)
    assert scores.shape == (inputs.labels.shape[0],)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_higher_score_means_member(name, leaky) -> None:
    inputs, is_member = leaky
    _, interval = metrics.auc_with_ci(create_attack(name).score(inputs)[:N_AUDIT], is_member)
    assert interval.low > 0.5, name


@pytest.mark.parametrize("name", list(REGISTRY))
def test_chance_when_the_target_saw_no_record(name, silent) -> None:
    inputs, is_member = silent
    _, interval = metrics.auc_with_ci(create_attack(name).score(inputs)[:N_AUDIT], is_member)
    assert interval.low <= 0.5 <= interval.high, name


def test_reference_attacks_beat_the_loss_attack_when_difficulty_varies(leaky) -> None:
    # Per-record calibration is what LiRA and RMIA add (Carlini et al. 2022): with record difficulty
    # spread wider than the membership effect, a global loss threshold loses most of the signal.
    inputs, is_member = leaky
    loss_auc = metrics.auc(create_attack("loss").score(inputs)[:N_AUDIT], is_member)
    for name in ("lira", "lira-offline", "rmia", "rmia-offline"):
        assert metrics.auc(create_attack(name).score(inputs)[:N_AUDIT], is_member) > loss_auc + 0.05, name


def test_attacks_are_deterministic(leaky) -> None:
    inputs, _ = leaky
    for name in REGISTRY:
        np.testing.assert_array_equal(create_attack(name).score(inputs), create_attack(name).score(inputs))


def test_unknown_attack_and_empty_list() -> None:
    with pytest.raises(ConfigError, match="unknown attack 'lirra'"):
        parse_attack_list("loss,lirra")
    with pytest.raises(ConfigError, match="no attacks"):
        parse_attack_list(" , ")
    assert parse_attack_list("loss, lira,loss") == ["loss", "lira"]


def test_every_attack_lists_its_settings_and_records_them() -> None:
    for name, cls in REGISTRY.items():
        settings = cls.settings()
        attack = cls(**settings)  # the defaults build the attack the audit runs
        recorded = attack.params()
        for key in settings:
            assert key in recorded or key == "by_class", (name, key)  # by_class is recorded as chosen


def test_attacks_say_what_access_they_cannot_do_without() -> None:
    lira, noise, loss = create_attack("lira"), create_attack("label-only-noise"), create_attack("loss")
    assert lira.requirement_problems(target_access="black-box", gives_recipe=False, queryable=True)
    assert noise.requirement_problems(target_access="label-only", gives_recipe=False, queryable=False)
    assert not loss.requirement_problems(target_access="label-only", gives_recipe=False, queryable=False)


def test_reference_hungry_attacks_declare_their_needs() -> None:
    with pytest.raises(ConfigError, match="at least 2 reference models"):
        create_attack("lira").check(1)
    create_attack("rmia").check(1)
    create_attack("loss").check(0)


def test_membership_plan_balances_in_and_out() -> None:
    keep = membership_plan(1000, 8, 0.5, seed=3)
    assert (keep.sum(axis=0) == 4).all()
    assert abs(keep.sum(axis=1).mean() - 500) < 1e-9
    one = membership_plan(100, 1, 0.3, seed=0)
    assert one.sum() == 30
    skewed = membership_plan(1000, 10, 0.2, seed=0)
    assert (skewed.sum(axis=0) == 2).all()


def test_membership_plan_keeps_reference_training_sets_the_size_of_the_targets() -> None:
    # 2 models, target trained on a quarter of the pool: each model gets a quarter too, so half the rows
    # are IN for one model and half for none (not every row IN once, which would double each set).
    few = membership_plan(20_000, 2, 0.25, seed=0)
    assert set(np.unique(few.sum(axis=0))) == {0, 1}
    assert np.allclose(few.sum(axis=1), 5000, atol=150)
    # A fractional count per row: 16 x 0.39 = 6.24, so rows are IN for 6 or 7 models, 24% of them 7.
    uneven = membership_plan(10_000, 16, 0.39, seed=1)
    counts = uneven.sum(axis=0)
    assert set(np.unique(counts)) == {6, 7} and abs((counts == 7).mean() - 0.24) < 1e-3
    assert np.allclose(uneven.sum(axis=1), 3900, atol=150)
