"""Robust Membership Inference Attack (RMIA): Zarifzadeh, Liu, Shokri, "Low-Cost High-Power Membership
Inference Attacks", ICML 2024.

For a record ``x`` and population records ``z`` the attack compares likelihood ratios
``LR(x, z) = [Pr(x|θ) / Pr(x)] / [Pr(z|θ) / Pr(z)]`` where ``Pr(·|θ)`` is the target's probability of the
true label and ``Pr(·)`` its average over reference models (eq. 4). The score is
``Pr_z[LR(x, z) >= γ]`` (eq. 5), estimated on the population sample.

* online: ``Pr(x)`` averages reference models that trained on ``x`` (IN) and that did not (OUT), each side
  weighted one half as in the paper's balanced design.
* offline: only OUT models are available, and ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2`` corrects for the
  missing IN models (§3.2, "offline"); ``a`` is chosen by running the offline attack with one reference
  model as a stand-in target and keeping the value with the highest AUC, as the paper describes.

The z-sample is the population records when the audit has them, else the audit records themselves
(their membership is never read, so the attack stays honest; a disjoint population is stronger).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from membershield.attacks.base import Attack, AttackInputs
from membershield.errors import ConfigError
from membershield.signals import true_class_confidence

CITATION = "Zarifzadeh, Liu, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML 2024."
A_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
DEFAULT_A = 0.3  # used only with a single reference model, where ``a`` cannot be calibrated


def rmia_scores(target_prob: np.ndarray, marginal_prob: np.ndarray, z_rows: np.ndarray, gamma: float) -> np.ndarray:
    """``Pr_z[LR(x, z) >= gamma]`` for every row ``x``, with ties broken by the ratio of ``x``.

    The count is monotone in ``ratio(x)`` for a fixed z-sample, so adding the within-count rank of the
    ratio (a fraction below one) keeps the paper's score and its order while separating the many
    records that share a count at the top, where low-FPR thresholds are set.
    """
    ratio = target_prob / np.maximum(marginal_prob, 1e-300)
    ratio_z = np.sort(ratio[z_rows])
    count = np.searchsorted(ratio_z, ratio / gamma, side="right")
    order = np.argsort(np.argsort(ratio, kind="stable"), kind="stable")
    tie_break = order / max(len(ratio), 1)
    return (count + tie_break) / len(ratio_z)


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


class RmiaOnline(Attack):
    name = "rmia"
    title = "RMIA (online)"
    citation = CITATION
    min_references = 1

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = gamma

    def params(self) -> dict[str, object]:
        return {"gamma": self.gamma}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        ref_prob = np.stack([true_class_confidence(lg, inputs.labels) for lg in inputs.reference_logits])
        target_prob = true_class_confidence(inputs.target_logits, inputs.labels)
        return rmia_scores(target_prob, _online_marginal(ref_prob, inputs.reference_in), _z_rows(inputs), self.gamma)


class RmiaOffline(Attack):
    name = "rmia-offline"
    title = "RMIA (offline)"
    citation = CITATION
    min_references = 1

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = gamma
        self.a: float | None = None

    def params(self) -> dict[str, object]:
        return {"gamma": self.gamma, "a": self.a}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        ref_prob = np.stack([true_class_confidence(lg, inputs.labels) for lg in inputs.reference_logits])
        out_mask = ~inputs.reference_in
        if not out_mask.any():
            raise ConfigError("rmia-offline needs reference models that did not train on the records")
        self.a = calibrate_a(ref_prob, inputs.reference_in, _z_rows(inputs), self.gamma)
        target_prob = true_class_confidence(inputs.target_logits, inputs.labels)
        marginal = _offline_marginal(ref_prob, out_mask, self.a)
        return rmia_scores(target_prob, marginal, _z_rows(inputs), self.gamma)


def calibrate_a(ref_prob: np.ndarray, reference_in: np.ndarray, z_rows: np.ndarray, gamma: float) -> float:
    """Pick ``a`` by attacking reference model 0 with the others (its membership is known to us)."""
    if ref_prob.shape[0] < 2:
        return DEFAULT_A
    proxy_prob, proxy_in = ref_prob[0], reference_in[0]
    others, others_out = ref_prob[1:], ~reference_in[1:]
    usable = others_out.any(axis=0)
    if proxy_in[usable].all() or not proxy_in[usable].any():
        return DEFAULT_A
    best_a, best_auc = DEFAULT_A, -1.0
    for a in A_GRID:
        marginal = _offline_marginal(others, others_out, float(a))
        scores = rmia_scores(proxy_prob, marginal, z_rows, gamma)
        auc = roc_auc_score(proxy_in[usable], scores[usable])
        if auc > best_auc + 1e-12:
            best_a, best_auc = float(a), auc
    return best_a
