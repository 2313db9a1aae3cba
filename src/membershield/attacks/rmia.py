"""Robust Membership Inference Attack (RMIA): Zarifzadeh, Liu, Shokri, "Low-Cost High-Power Membership
Inference Attacks", ICML 2024.

For a record ``x`` and population records ``z`` the attack compares likelihood ratios
``LR(x, z) = [Pr(x|θ) / Pr(x)] / [Pr(z|θ) / Pr(z)]`` where ``Pr(·|θ)`` is the target's probability of the
true label and ``Pr(·)`` its average over reference models (eq. 4). The score is
``Pr_z[LR(x, z) >= γ]`` (eq. 5), estimated on the population sample.

* online: ``Pr(x)`` averages reference models that trained on ``x`` (IN) and that did not (OUT), each side
  weighted one half as in the paper's balanced design.
* offline: only OUT models are available, and ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2`` corrects for the
  missing IN models (§3.2, "offline").

Probabilities are read through a softmax with temperature ``T`` (``softmax(logits / T)``; the paper's
experiments also soften the softmax). A model that fits its training set gives its members and many
non-members a true-class probability within a hair of 1, where the ratio ``Pr(x|θ) / Pr(x)`` loses the
differences that separate them; ``T > 1`` spreads those probabilities out again. ``T`` (and ``a``
offline) is calibrated by attacking reference models whose membership the audit knows, with the
remaining references as the attack's references, keeping the values with the highest TPR at 1% FPR (AUC
breaks ties). With a single remaining reference the stand-in attack is weaker than the real one but
ranks temperatures alike (on the Purchase100-like benchmark it picks T = 3-4 for two references, where
the best fixed value is 3); with one reference in all, ``T = 2`` and ``a = 0.3``.

Ratios can be compared within a class. Classes differ in how far a model's confidence moves when it
trains on a sample of records (one with more of a class is surer of that class), so a z-sample drawn
across classes can set the bar too low for some classes and too high for others. Centring subtracts
from each record's log-ratio the mean log-ratio of the z-samples of its class, shrunk towards the
overall mean by empirical Bayes (:func:`class_prior_weight`), so classes that differ only by chance are
left alone. Calibration tries the attack with and without it; as the stand-ins' own random training sets
give them class effects a target need not have, centring is used only when it raises the stand-ins'
TPR at 1% FPR by a tenth (``CLASS_CENTRING_MIN_GAIN``). Measured (bench/RESULTS.md): on the
Purchase100-like benchmark, two-reference RMIA goes from 6.0% to 7.7% TPR at 1% FPR (16 references: 10.6%
to 11.4%); on the ART-comparison task, where the target's classes are balanced, always-on centring (with a
fixed weight) cost 8 points of TPR at 1% FPR, and calibration leaves it off. ``by_class=True`` or
``False`` fixes the choice.

The z-sample is the population records when the audit has them, else the audit records themselves
(their membership is never read, so the attack stays honest; a disjoint population is stronger).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from membershield.attacks.base import Attack, AttackInputs
from membershield.errors import ConfigError
from membershield.signals import true_class_confidence

CITATION = "Zarifzadeh, Liu, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML 2024."
A_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)
TEMPERATURE_GRID = (1.0, 1.5, 2.0, 3.0, 4.0)
DEFAULT_A = 0.3
DEFAULT_TEMPERATURE = 2.0
CALIBRATION_FPR = 0.01
MAX_PROXIES = 4  # stand-in targets averaged during calibration; more adds time, not precision
MIN_REFERENCES_ONLINE = 2  # calibration needs a stand-in target and at least one other reference
MIN_REFERENCES_OFFLINE = 2
CLASS_CENTRING_MIN_GAIN = 1.1  # stand-in TPR at 1% FPR with centring / without


def rmia_scores(log_ratio: np.ndarray, z_rows: np.ndarray, gamma: float) -> np.ndarray:
    """``Pr_z[LR(x, z) >= gamma]`` for every row ``x``, from ``log_ratio = log Pr(x|θ) - log Pr(x)``.

    ``LR(x, z) >= gamma`` is ``log_ratio[x] - log_ratio[z] >= log(gamma)``. The count is monotone in the
    ratio of ``x`` for a fixed z-sample, so adding the rank of the ratio among all rows (a fraction below
    one) keeps the paper's order while separating the many records that share a count at the top, where
    low-FPR thresholds are set. Equal ratios get equal ranks (their mean): a record's position must not
    decide its score, since rows come in membership order. Divided by ``len(z) + 1`` so that scores stay
    below 1.
    """
    ratio_z = np.sort(log_ratio[z_rows])
    count = np.searchsorted(ratio_z, log_ratio - np.log(gamma), side="right")
    tie_break = (rankdata(log_ratio, method="average") - 1.0) / max(len(log_ratio), 1)
    return (count + tie_break) / (len(ratio_z) + 1)


def class_prior_weight(z_values: np.ndarray, z_classes: np.ndarray) -> float:
    """Pseudo-records ``w = σ² / τ²`` that shrink class means towards the overall mean (empirical Bayes).

    ``σ²`` is the pooled within-class variance of the z-sample's log-ratios and ``τ²`` the variance of the
    true class means, estimated by the method of moments as the variance of the observed class means
    minus the part their sampling noise ``σ² / n_c`` explains. With no class effect beyond noise
    (``τ² <= 0``) the weight is infinite: every class gets the overall mean and nothing is centred.
    """
    labels, counts = np.unique(z_classes, return_counts=True)
    usable = counts >= 2
    if usable.sum() < 2:
        return math.inf
    index = np.searchsorted(labels, z_classes)
    means = np.bincount(index, weights=z_values) / counts
    within = float(((z_values - means[index]) ** 2).sum() / (len(z_values) - len(labels)))
    between = float(np.var(means[usable], ddof=1) - np.mean(within / counts[usable]))
    return within / between if between > 0 else math.inf


def centre_by_class(
    log_ratio: np.ndarray, labels: np.ndarray, z_rows: np.ndarray, prior_weight: float | None = None
) -> np.ndarray:
    """``log_ratio`` minus the mean over the z-samples of each row's class, shrunk towards the overall mean.

    The offset of class c is ``(sum of its z log-ratios + w * overall mean) / (its z count + w)``, with
    ``w`` from :func:`class_prior_weight` unless given: a class with no z-sample, or a z-sample whose
    classes differ no more than noise would make them, gets the overall mean.
    """
    classes = np.asarray(labels, dtype=np.int64)
    z_classes, z_values = classes[z_rows], log_ratio[z_rows]
    if prior_weight is None:
        prior_weight = class_prior_weight(z_values, z_classes)
    if not z_values.size or math.isinf(prior_weight):
        return log_ratio
    n_classes = int(classes.max()) + 1
    counts = np.bincount(z_classes, minlength=n_classes)
    sums = np.bincount(z_classes, weights=z_values, minlength=n_classes)
    overall = float(z_values.mean())
    weights = counts + prior_weight
    # With no prior weight, a class without z-samples has no mean of its own: it gets the overall one.
    offsets = np.divide(sums + prior_weight * overall, weights, out=np.full(n_classes, overall), where=weights > 0)
    return log_ratio - offsets[classes]


def class_centred_log_ratio(
    target_prob: np.ndarray, marginal_prob: np.ndarray, labels: np.ndarray, z_rows: np.ndarray, by_class: bool = True
) -> np.ndarray:
    """``log(Pr(x|θ) / Pr(x))``, centred within each class on the z-sample unless ``by_class`` is False."""
    log_ratio = np.log(np.maximum(target_prob, 1e-300)) - np.log(np.maximum(marginal_prob, 1e-300))
    return centre_by_class(log_ratio, labels, z_rows) if by_class else log_ratio


def _z_rows(inputs: AttackInputs) -> np.ndarray:
    rows = inputs.population_rows
    return rows if rows.size else np.arange(inputs.n_audit)


def _offline_marginal(ref_prob: np.ndarray, out_mask: np.ndarray, a: float) -> np.ndarray:
    counts = out_mask.sum(axis=0)
    pr_out = np.where(out_mask, ref_prob, 0.0).sum(axis=0) / np.maximum(counts, 1)
    # A row with no OUT model gets the IN-free guess Pr(x) = (1 - a)/2 + (1 + a)/2 * mean over all models.
    pr_out = np.where(counts > 0, pr_out, ref_prob.mean(axis=0))
    return 0.5 * ((1.0 + a) * pr_out + (1.0 - a))


def _online_marginal(ref_prob: np.ndarray, reference_in: np.ndarray) -> np.ndarray:
    """``Pr(x) = (Pr_IN(x) + Pr_OUT(x)) / 2``: the paper's average over models of which half trained on ``x``.

    When the audit's plan makes a record IN for fewer than half of the references (a population enlarges
    the pool), a plain mean over models would weight the OUT side more than the paper's balanced design
    does; averaging each side first restores it. A row with models on one side only uses that side.
    """
    n_in, n_out = reference_in.sum(axis=0), (~reference_in).sum(axis=0)
    mean_in = np.where(reference_in, ref_prob, 0.0).sum(axis=0) / np.maximum(n_in, 1)
    mean_out = np.where(~reference_in, ref_prob, 0.0).sum(axis=0) / np.maximum(n_out, 1)
    both = 0.5 * (mean_in + mean_out)
    return np.where((n_in > 0) & (n_out > 0), both, np.where(n_in > 0, mean_in, mean_out))


def _probabilities(logits: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    return true_class_confidence(np.asarray(logits, dtype=np.float64) / temperature, labels)


def _power(scores: np.ndarray, is_member: np.ndarray) -> tuple[float, float]:
    """``(TPR at CALIBRATION_FPR, AUC)`` of ``scores``: what calibration maximises, in that order."""
    negatives = np.sort(scores[~is_member])
    allowed = int(np.floor(CALIBRATION_FPR * len(negatives)))
    # The strictest threshold that lets at most `allowed` non-members through.
    threshold = negatives[len(negatives) - allowed - 1] if allowed < len(negatives) else -np.inf
    tpr = float((scores[is_member] > threshold).mean())
    return tpr, float(roc_auc_score(is_member, scores))


def calibrate(
    inputs: AttackInputs,
    online: bool,
    a_grid: np.ndarray | tuple[float, ...] = (DEFAULT_A,),
    by_class: bool | None = None,
) -> tuple[float, float, bool]:
    """``(temperature, a, by_class)`` that attack the first references best, the others as references.

    ``by_class=None`` tries the attack with and without class centring; True or False fixes it. Each
    stand-in target is a reference model whose training rows the audit chose, so its membership is known
    on every row; only the rows that some other reference left out (offline) or that the others saw at
    all (online) are scored, as those are the rows the real attack sees. The stand-in's z-sample is the
    audit's without the rows the stand-in trained on, as the real target never trained on its z-sample.
    """
    n_refs = inputs.n_references
    needed = MIN_REFERENCES_ONLINE if online else MIN_REFERENCES_OFFLINE
    class_grid = (True, False) if by_class is None else (by_class,)
    if n_refs < needed:
        return DEFAULT_TEMPERATURE, DEFAULT_A, bool(by_class)  # unchecked: the paper's plain z-sample
    power: dict[tuple[float, float, bool], tuple[float, float]] = {}  # (T, a, centred) -> (TPR, AUC)
    z_rows = _z_rows(inputs)
    for temperature in TEMPERATURE_GRID:
        probs = np.stack([_probabilities(lg, inputs.labels, temperature) for lg in inputs.reference_logits])
        for a, centred in itertools.product(a_grid, class_grid):
            tprs, aucs = [], []
            for proxy in range(min(n_refs, MAX_PROXIES)):
                others = np.arange(n_refs) != proxy
                ref_in, proxy_in = inputs.reference_in[others], inputs.reference_in[proxy]
                if online:
                    usable = np.ones(ref_in.shape[1], dtype=bool)
                    marginal = _online_marginal(probs[others], ref_in)
                else:
                    usable = (~ref_in).any(axis=0)
                    marginal = _offline_marginal(probs[others], ~ref_in, float(a))
                if proxy_in[usable].all() or not proxy_in[usable].any():
                    continue
                # RMIA's score orders records as their (centred) log-ratio does (the z-sample is the same
                # for all), so that ratio alone decides TPR and AUC: no need to count z-samples here.
                proxy_z = z_rows[~proxy_in[z_rows]]
                log_ratio = class_centred_log_ratio(probs[proxy], marginal, inputs.labels, proxy_z, centred)
                tpr, auc = _power(log_ratio[usable], proxy_in[usable])
                tprs.append(tpr)
                aucs.append(auc)
            if tprs:
                power[(temperature, float(a), centred)] = (float(np.mean(tprs)), float(np.mean(aucs)))
    if not power:
        return DEFAULT_TEMPERATURE, DEFAULT_A, bool(by_class)
    best = {
        centred: max((k for k in power if k[2] == centred), key=power.__getitem__, default=None)
        for centred in class_grid
    }
    if best.get(True) is not None and best.get(False) is not None:
        # The stand-ins' own random training sets give them class effects a target need not have, so
        # centring must win by a clear margin to be used (see the module notes).
        return best[True] if power[best[True]][0] >= CLASS_CENTRING_MIN_GAIN * power[best[False]][0] else best[False]
    return next(k for k in best.values() if k is not None)


class RmiaOnline(Attack):
    name = "rmia"
    title = "RMIA (online)"
    citation = CITATION
    min_references = 1

    def __init__(self, *, gamma: float = 1.0, by_class: bool | None = None) -> None:
        self.gamma = gamma
        self.class_centring = by_class  # None: chosen by calibration
        self.by_class: bool | None = None
        self.temperature: float | None = None

    def params(self) -> dict[str, object]:
        return {"gamma": self.gamma, "by_class": self.by_class, "temperature": self.temperature}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        self.temperature, _, self.by_class = calibrate(inputs, online=True, by_class=self.class_centring)
        ref_prob = np.stack([_probabilities(lg, inputs.labels, self.temperature) for lg in inputs.reference_logits])
        target_prob = _probabilities(inputs.target_logits, inputs.labels, self.temperature)
        marginal = _online_marginal(ref_prob, inputs.reference_in)
        z_rows = _z_rows(inputs)
        log_ratio = class_centred_log_ratio(target_prob, marginal, inputs.labels, z_rows, self.by_class)
        return rmia_scores(log_ratio, z_rows, self.gamma)


class RmiaOffline(Attack):
    name = "rmia-offline"
    title = "RMIA (offline)"
    citation = CITATION
    min_references = 1

    def __init__(self, *, gamma: float = 1.0, by_class: bool | None = None) -> None:
        self.gamma = gamma
        self.class_centring = by_class  # None: chosen by calibration
        self.by_class: bool | None = None
        self.a: float | None = None
        self.temperature: float | None = None

    def params(self) -> dict[str, object]:
        return {"gamma": self.gamma, "by_class": self.by_class, "a": self.a, "temperature": self.temperature}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        out_mask = ~inputs.reference_in
        if not out_mask.any():
            raise ConfigError("rmia-offline needs reference models that did not train on the records")
        self.temperature, self.a, self.by_class = calibrate(
            inputs, online=False, a_grid=A_GRID, by_class=self.class_centring
        )
        ref_prob = np.stack([_probabilities(lg, inputs.labels, self.temperature) for lg in inputs.reference_logits])
        target_prob = _probabilities(inputs.target_logits, inputs.labels, self.temperature)
        marginal = _offline_marginal(ref_prob, out_mask, self.a)
        z_rows = _z_rows(inputs)
        log_ratio = class_centred_log_ratio(target_prob, marginal, inputs.labels, z_rows, self.by_class)
        return rmia_scores(log_ratio, z_rows, self.gamma)
