"""MemGuard: perturb each answer so that a membership classifier learns nothing, keeping the label.

Jia, Salem, Backes, Zhang and Gong, "MemGuard: Defending against Black-Box Membership Inference Attacks
via Adversarial Examples", CCS 2019. The defender trains its own *defense classifier* g, a membership
classifier over the model's confidence vector, on records it knows to be members and non-members. Each
answer is then changed in two phases:

* Phase I finds noise ``r`` added to the logits ``z`` (before the softmax) such that g's output on
  ``softmax(z + r)`` is 0.5, while the predicted label stays the same and the confidence vector moves as
  little as possible. As in the paper this is a gradient search on one loss per record: ``|h|`` (h is
  g's logit, so h = 0 means 0.5), plus a hinge penalty when another class comes within a margin of the
  label's logit, plus the L1 distance between the new and the original confidence vector. The search
  runs on every record of a query at once and stops at the first noise that takes g across 0.5; a
  bisection on that step then lands on 0.5 itself. A record whose noise would change its label is
  answered unperturbed.
* Phase II adds the noise only with probability ``p = min(1, ε / d)``, where ``d`` is the L1 distance
  the noise moves the confidence vector and ε the budget, so the expected distortion of every answer is
  at most ε.

Two choices differ from the paper. The coin of Phase II is a keyed hash of the query, not a fresh
draw: the same query always gets the same answer, so an attacker cannot average repeated queries back to
the unperturbed vector. And g is a logistic regression on one summary of the sorted confidence vector
rather than a network on all of it (see :class:`DefenseClassifier` for why).

For a recipe, g is learned from a shadow model (:func:`memguard_from_recipe`); for a deployed model,
from its outputs on records the defender knows (:func:`fit_memguard`).

The labels never change, so label-only attacks (Choquette-Choo et al. 2021) see exactly the undefended
model: MemGuard hides the confidence signal, it does not stop memorisation.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from membershield.errors import ConfigError, InputDataError
from membershield.targets.base import Recipe

CITATION = "Jia et al., CCS 2019 (MemGuard)"
DEFAULT_BUDGET = 0.5
MAX_BUDGET = 2.0  # the L1 distance between two probability vectors is at most 2

LOG_FLOOR = -60.0  # a margin below e^-60 carries no membership signal g could use
CLASSIFIER_STEPS = 300  # full-batch Adam steps: a two-parameter logistic regression has converged by then
CLASSIFIER_LR = 0.05

SEARCH_STEPS = 300
SEARCH_LR = 0.1  # logit units per Adam step: a memorised record's margin of ~20 shrinks within ~100 steps
LABEL_WEIGHT = 10.0  # c2 in the paper: the hinge dominates as soon as the label is at risk
DISTORTION_WEIGHT = 0.1  # c3 in the paper
LABEL_MARGIN = 1e-3  # logits: how far above every other class the label must stay during the search
BISECTION_STEPS = 60  # halvings of the step onto g = 0.5: down to float64 rounding, so answers tie
SHADOW_STREAM = 0x4D47  # separates the shadow model's seed and split from every other seed in an audit


@dataclass(frozen=True)
class MemGuardSettings:
    """``budget``: ε, the largest expected L1 distance between the answered and the true confidence vector."""

    budget: float = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int | float):
            raise ConfigError(f"memguard budget must be a number, got {self.budget!r} (e.g. memguard:budget=0.5)")
        if not 0 < self.budget <= MAX_BUDGET:
            raise ConfigError(
                f"memguard budget must be in (0, 2] (an L1 distance between probability vectors),"
                f" got {self.budget:g} (e.g. memguard:budget=0.5)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confidence_margin(logits: torch.Tensor) -> torch.Tensor:
    """What g reads, ``(n, 1)``: the log of the probability outside the top class, ``log(1 - p_top)``.

    It is the sorted confidence vector's summary that threshold attacks exploit (Yeom et al. 2018 read the
    loss, Carlini et al. 2022 the scaled logit ``log(p / (1 - p))``, both monotone in it for a correctly
    predicted record), computed from the log-probabilities so that it keeps its resolution where
    ``p_top`` rounds to 1.
    """
    logp = torch.log_softmax(logits, dim=1)
    top = logp.argmax(dim=1, keepdim=True)
    others = logp.scatter(1, top, -torch.inf)
    return torch.logsumexp(others, dim=1, keepdim=True).clamp(min=LOG_FLOOR)


class DefenseClassifier(nn.Module):
    """g: logistic regression of membership on :func:`confidence_margin`.

    g is deliberately monotone with a single input. The search moves each answer onto g's 0.5 level
    set by the cheapest change; a g that reads the whole vector (a network, as in the paper) has level
    sets that the search reaches by moving the minor classes, leaving the top confidence, and with it
    the ranking that threshold attacks use, nearly as it was (measured on the digits task; Song & Mittal
    2021 report MemGuard's weakness against such metric attacks). With this g the level set is one
    confidence value, so every answer the budget lets through carries the same confidence.
    """

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64))
        self.linear = nn.Linear(1, 1, dtype=torch.float64)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.linear((confidence_margin(logits) - self.mean) / self.std).squeeze(1)


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores))


def fit_defense_classifier(
    member_logits: np.ndarray, nonmember_logits: np.ndarray, seed: int
) -> tuple[DefenseClassifier, float]:
    """Train g on a model's logits for known members and non-members; returns g and its AUC on them.

    The two groups are weighted equally, so g's 0.5 means "as likely one as the other" whatever their sizes.
    """
    members = np.asarray(member_logits, dtype=np.float64)
    nonmembers = np.asarray(nonmember_logits, dtype=np.float64)
    if len(members) < 1 or len(nonmembers) < 1 or members.shape[1:] != nonmembers.shape[1:]:
        raise InputDataError(
            "memguard needs logits of at least one member and one non-member with the same number of classes;"
            f" got shapes {members.shape} and {nonmembers.shape}"
        )
    logits = torch.from_numpy(np.concatenate([members, nonmembers]))
    truth = torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))]).double()
    weight = torch.where(truth > 0, 0.5 / len(members), 0.5 / len(nonmembers))
    margin = confidence_margin(logits)
    std = float(margin.std(unbiased=False))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = DefenseClassifier(float(margin.mean()), std if std > 1e-6 else 1.0)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=CLASSIFIER_LR)
    for _ in range(CLASSIFIER_STEPS):
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(classifier(logits), truth, weight=weight, reduction="sum")
        loss.backward()
        optimiser.step()
    classifier.eval().requires_grad_(False)
    with torch.no_grad():
        auc = _auc(classifier(logits).numpy(), truth.numpy())
    return classifier, auc


@dataclass
class Perturbation:
    """One query's answers and how each was made (all arrays have one entry per record)."""

    proba: np.ndarray  # what is answered, (n, C)
    noisy: np.ndarray  # Phase I's confidence vector, (n, C)
    distortion: np.ndarray  # d: L1 distance between the noisy and the true confidence vector
    probability: np.ndarray  # p = min(1, ε / d): Phase II's chance of answering the noisy vector
    applied: np.ndarray  # bool: the noisy vector was answered
    member_before: np.ndarray  # g on the true confidence vector
    member_after: np.ndarray  # g on the answered one


def query_keys(features: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per query row, the same in every process (pandas hashes with a fixed key)."""
    return pd.util.hash_pandas_object(features, index=False).to_numpy(dtype=np.uint64)


def _coins(rows: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per row, a keyed hash of the row's bytes: the same query, the same coin."""
    key = int(seed).to_bytes(16, "little", signed=True)
    rows = np.ascontiguousarray(rows)
    digests = (hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest() for row in rows)
    return np.fromiter((int.from_bytes(d, "little") / 2.0**64 for d in digests), dtype=np.float64, count=len(rows))


def _label_gap(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The label's logit minus the best other class's: positive while the label is the arg-max."""
    rows = torch.arange(logits.shape[0])
    others = logits.clone()
    others[rows, label] = -torch.inf
    return logits[rows, label] - others.max(dim=1).values


class MemGuard:
    """A fitted MemGuard: the defender's g, the budget, and the key of Phase II's coins."""

    def __init__(self, classifier: DefenseClassifier, settings: MemGuardSettings, seed: int = 0) -> None:
        self.classifier = classifier
        self.settings = settings
        self.seed = seed

    def search(self, logits: np.ndarray) -> np.ndarray:
        """Phase I: noise ``(n, C)`` on the logits; zero for a record whose label it could not keep."""
        z = torch.from_numpy(np.asarray(logits, dtype=np.float64).copy())
        n = z.shape[0]
        if n == 0:
            return np.zeros_like(z.numpy())
        label = z.argmax(dim=1)
        proba = torch.softmax(z, dim=1)
        with torch.no_grad():
            side = torch.sign(self.classifier(z))
        noise = torch.zeros_like(z, requires_grad=True)
        optimiser = torch.optim.Adam([noise], lr=SEARCH_LR)
        found = torch.zeros_like(z)
        crossed = side == 0
        closest = torch.full((n,), torch.inf, dtype=torch.float64)
        for _ in range(SEARCH_STEPS):
            moved = z + noise
            h = self.classifier(moved)
            gap = _label_gap(moved, label)
            distortion = (torch.softmax(moved, dim=1) - proba).abs().sum(dim=1)
            with torch.no_grad():
                kept = gap > LABEL_MARGIN / 2
                # The first label-keeping noise that takes g to the other side of 0.5; until then the one
                # that came closest.
                now_crossed = kept & ~crossed & (torch.sign(h) != side)
                closer = kept & ~crossed & ~now_crossed & (h.abs() < closest)
                update = now_crossed | closer
                found[update] = noise.detach()[update]
                closest = torch.where(closer, h.abs(), closest)
                crossed |= now_crossed
                if bool(crossed.all()):
                    break
            loss = h.abs() + LABEL_WEIGHT * torch.relu(LABEL_MARGIN - gap) + DISTORTION_WEIGHT * distortion
            optimiser.zero_grad()
            loss.sum().backward()  # records are independent: the sum's gradient is each record's own
            optimiser.step()
        found = self._onto_boundary(z, found, side, crossed)
        found[(z + found).argmax(dim=1) != label] = 0.0
        return found.numpy()

    def _onto_boundary(
        self, z: torch.Tensor, noise: torch.Tensor, side: torch.Tensor, crossed: torch.Tensor
    ) -> torch.Tensor:
        """Scale each crossing noise back to where g is 0.5 on the segment from ``z`` to ``z + noise``.

        g is continuous, so bisection finds the point; the label's margin over the best other class is
        concave along the segment and positive at both ends, so it stays positive in between.
        """
        low = torch.zeros(z.shape[0], dtype=torch.float64)
        high = torch.ones(z.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for _ in range(BISECTION_STEPS):
                middle = (low + high) / 2
                same = torch.sign(self.classifier(z + middle[:, None] * noise)) == side
                low = torch.where(same, middle, low)
                high = torch.where(same, high, middle)
        # The midpoint, not the crossed end: where an answer lands must not tell from which side it came.
        return torch.where(crossed[:, None], ((low + high) / 2)[:, None] * noise, noise)

    def perturb(self, logits: np.ndarray, keys: np.ndarray | None = None) -> Perturbation:
        """Phases I and II on a query's logits ``(n, C)``.

        ``keys`` (one per row, e.g. :func:`query_keys` of the queried features) choose Phase II's coins;
        without them the logits do. Keys from the query itself give the same coins wherever the model
        runs, whereas logits that differ in their last bit between two machines would draw new coins.
        """
        z = np.asarray(logits, dtype=np.float64)
        noise = self.search(z)
        with torch.no_grad():
            true = torch.softmax(torch.from_numpy(z), dim=1)
            noisy = torch.softmax(torch.from_numpy(z + noise), dim=1)
            before = torch.sigmoid(self.classifier(torch.from_numpy(z))).numpy()
        true_np, noisy_np = true.numpy(), noisy.numpy()
        distortion = np.abs(noisy_np - true_np).sum(axis=1)
        budget = self.settings.budget
        probability = np.where(distortion > budget, budget / np.maximum(distortion, 1e-300), 1.0)
        coins = _coins(z if keys is None else np.asarray(keys).reshape(len(z), -1), self.seed)
        applied = (coins < probability) & (distortion > 0)
        answer = np.where(applied[:, None], noisy_np, true_np)
        with torch.no_grad():
            after = torch.sigmoid(self.classifier(torch.from_numpy(np.where(applied[:, None], z + noise, z)))).numpy()
        return Perturbation(answer, noisy_np, distortion, probability, applied, before, after)

    def __call__(self, logits: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
        """The answered probabilities ``(n, C)`` for logits ``(n, C)``; every row keeps its arg-max."""
        return self.perturb(logits, keys).proba


def fit_memguard(
    member_logits: np.ndarray, nonmember_logits: np.ndarray, settings: MemGuardSettings, seed: int = 0
) -> MemGuard:
    """MemGuard for a deployed model, from its logits on records the defender knows to be in its
    training set and on records it knows are not."""
    classifier, _ = fit_defense_classifier(member_logits, nonmember_logits, seed)
    return MemGuard(classifier, settings, seed)


def shadow_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, SHADOW_STREAM]).generate_state(1)[0])


def memguard_from_recipe(
    recipe: Recipe,
    features: pd.DataFrame,
    labels: np.ndarray,
    classes: np.ndarray,
    seed: int,
    settings: MemGuardSettings,
) -> tuple[MemGuard, dict[str, Any]]:
    """MemGuard for the model ``recipe`` trains on these rows, and a report of how g was trained.

    A recipe sees only its training rows, so the defender has no outside non-members; it trains a
    shadow model with the same recipe on a random half of the rows and learns g from the shadow's
    outputs on the half it saw (members) and the half it did not (non-members), the shadow-model idea
    of Shokri et al. 2017 used for defense. The deployed model itself still trains on every row. Every
    reference model of an audit does the same with its own rows, so the attacker calibrates on models
    defended the way the target is.
    """
    n = len(labels)
    if n < 4:
        raise InputDataError(f"memguard needs at least 4 training rows to train its defense classifier, got {n}")
    start = time.perf_counter()
    salt = shadow_seed(seed)
    inside = np.zeros(n, dtype=bool)
    inside[np.random.default_rng(salt).permutation(n)[: n // 2]] = True
    shadow = recipe.fit(features[inside], np.asarray(labels)[inside], classes, salt)
    member_logits = shadow.logits(features[inside])
    nonmember_logits = shadow.logits(features[~inside])
    classifier, auc = fit_defense_classifier(member_logits, nonmember_logits, salt)
    report = {
        "shadow_members": int(inside.sum()),
        "shadow_nonmembers": int(n - inside.sum()),
        "defense_classifier_auc": auc,
        "defense_seconds": time.perf_counter() - start,
    }
    return MemGuard(classifier, settings, seed), report
