"""Likelihood Ratio Attack (LiRA): Carlini, Chien, Nasr, Song, Terzis, Tramèr, "Membership Inference
Attacks From First Principles", IEEE S&P 2022.

For each record the scaled logit ``phi = log(p_y / (1 - p_y))`` of reference models trained with it (IN)
and without it (OUT) is modelled as Gaussian (§IV-C). The online attack scores the target's ``phi`` by
the log-likelihood ratio of the IN and OUT fits; the offline attack uses only OUT models and a one-sided
test of how far the target's ``phi`` lies above the OUT distribution (§IV-D).

Variance: per-record variances need many references; with fewer than 64 the paper recommends one
global variance (§VI-A, "fixed variance"). ``variance="auto"`` follows that advice: per-record when every
record has at least ``PER_RECORD_MIN`` IN and OUT samples, pooled otherwise. The pooled variance here is
the mean within-record variance, so it measures the model-to-model spread LiRA needs rather than the
spread between records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.errors import ConfigError
from membershield.signals import scaled_logit

CITATION = (
    "Carlini, Chien, Nasr, Song, Terzis, Tramèr. Membership Inference Attacks From First Principles. IEEE S&P 2022."
)
PER_RECORD_MIN = 16
VARIANCE_FLOOR = 1e-6


@dataclass(frozen=True)
class GaussianFit:
    mean: np.ndarray  # (n,)
    std: np.ndarray  # (n,)
    per_record: bool


def reference_scaled_logits(inputs: AttackInputs) -> np.ndarray:
    """``phi`` of every reference model on every row, shape ``(K, n)``."""
    return np.stack([scaled_logit(logits, inputs.labels) for logits in inputs.reference_logits])


def fit_gaussians(values: np.ndarray, mask: np.ndarray, variance: str) -> GaussianFit:
    """Per-row mean and standard deviation of ``values[k, i]`` over the models ``k`` where ``mask[k, i]``.

    Rows without any sample get the mean of all masked values, so their score is uninformative rather
    than undefined.
    """
    counts = mask.sum(axis=0)
    if not counts.any():
        raise ConfigError("LiRA needs reference models of both kinds (IN and OUT); raise --references")
    safe = np.maximum(counts, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe
    mean = np.where(counts > 0, mean, values[mask].mean())
    squared = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    per_record_var = squared / np.maximum(counts - 1, 1)
    with_spread = counts >= 2
    pooled_var = float(per_record_var[with_spread].mean()) if with_spread.any() else float(values[mask].var())
    pooled_var = max(pooled_var, VARIANCE_FLOOR)
    if variance == "per-record":
        var = np.where(with_spread, np.maximum(per_record_var, VARIANCE_FLOOR), pooled_var)
    else:
        var = np.full(values.shape[1], pooled_var)
    return GaussianFit(mean=mean, std=np.sqrt(var), per_record=variance == "per-record")


def choose_variance(requested: str, *masks: np.ndarray) -> str:
    """Resolve ``auto``: per-record only when every record has enough samples under every mask."""
    if requested != "auto":
        return requested
    enough = all(int(mask.sum(axis=0).min()) >= PER_RECORD_MIN for mask in masks)
    return "per-record" if enough else "pooled"


def _log_normal_pdf(x: np.ndarray, fit: GaussianFit) -> np.ndarray:
    z = (x - fit.mean) / fit.std
    return -0.5 * z**2 - np.log(fit.std)


class _LiraBase(Attack):
    citation = CITATION
    variance: ClassVar[str] = "auto"

    def __init__(self) -> None:
        self._variance_used: str | None = None

    def params(self) -> dict[str, object]:
        return {"variance": self.variance, "variance_used": self._variance_used}


class LiraOnline(_LiraBase):
    name = "lira"
    title = "LiRA (online)"
    min_references = 2

    def score(self, inputs: AttackInputs) -> np.ndarray:
        phi_ref = reference_scaled_logits(inputs)
        self._variance_used = choose_variance(self.variance, inputs.reference_in, ~inputs.reference_in)
        fit_in = fit_gaussians(phi_ref, inputs.reference_in, self._variance_used)
        fit_out = fit_gaussians(phi_ref, ~inputs.reference_in, self._variance_used)
        phi = scaled_logit(inputs.target_logits, inputs.labels)
        return _log_normal_pdf(phi, fit_in) - _log_normal_pdf(phi, fit_out)


class LiraOffline(_LiraBase):
    name = "lira-offline"
    title = "LiRA (offline)"
    min_references = 1

    def score(self, inputs: AttackInputs) -> np.ndarray:
        phi_ref = reference_scaled_logits(inputs)
        self._variance_used = choose_variance(self.variance, ~inputs.reference_in)
        fit_out = fit_gaussians(phi_ref, ~inputs.reference_in, self._variance_used)
        phi = scaled_logit(inputs.target_logits, inputs.labels)
        # The paper's score is 1 - Pr[Z > phi] = Phi(z); z has the same order and keeps resolution in the
        # far tail, where Phi(z) rounds to 1 for every strong member.
        return (phi - fit_out.mean) / fit_out.std


class LiraOnlineFixedVariance(LiraOnline):
    name = "lira-fixed-variance"
    title = "LiRA (online, fixed variance)"
    variance = "pooled"


class LiraOfflineFixedVariance(LiraOffline):
    name = "lira-offline-fixed-variance"
    title = "LiRA (offline, fixed variance)"
    variance = "pooled"
