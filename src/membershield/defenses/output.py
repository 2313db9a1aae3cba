"""Output hardening: change what a model reveals, never what it predicts.

Each transform maps a probability matrix ``(n, C)`` to another whose arg-max (the predicted label) is
unchanged, and ``harden`` applies the configured ones in a fixed order: temperature, clipping of the top
probability, calibrated noise, top-k truncation, rounding, label-only. They remove the fine confidence
information threshold attacks read; label-only attacks (Choquette-Choo et al. 2021) are unaffected by
design, which is why the audit runs them against hardened targets too. MemGuard (``defenses.memguard``),
which needs a defense classifier trained on the defender's data, runs before them on the raw logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import softmax

from membershield.errors import ConfigError
from membershield.targets.base import Target

if TYPE_CHECKING:
    from membershield.defenses.memguard import MemGuard

TOP_MARGIN = 1e-9  # how much a tied top class is raised to keep the label; far below any reported digit


@dataclass(frozen=True)
class OutputPolicy:
    temperature: float | None = None
    clip_top1: float | None = None
    noise_std: float | None = None
    top_k: int | None = None
    round_decimals: int | None = None
    label_only: bool = False

    def __post_init__(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.clip_top1 is not None and not 0.5 < self.clip_top1 <= 1.0:
            raise ConfigError(
                f"clip_top1 must be in (0.5, 1] so the clipped class stays the most likely; got {self.clip_top1}"
            )
        if self.noise_std is not None and not self.noise_std >= 0:
            raise ConfigError(f"noise_std must be 0 or more, got {self.noise_std}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ConfigError(f"top_k must be 1 or more, got {self.top_k}")
        if self.round_decimals is not None and (isinstance(self.round_decimals, bool) or self.round_decimals < 0):
            raise ConfigError(f"round_decimals must be 0 or more, got {self.round_decimals}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def is_identity(self) -> bool:
        return self == OutputPolicy()


def _keep_label(proba: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Raise the original top class just above any class that caught up with it (ties after rounding)."""
    rows = np.arange(proba.shape[0])
    others = proba.copy()
    others[rows, label] = -np.inf
    rival = others.max(axis=1)
    lost = proba[rows, label] <= rival
    proba[rows[lost], label[lost]] = rival[lost] + TOP_MARGIN
    return proba


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return softmax(np.log(proba) / temperature, axis=1)


def clip_top1(proba: np.ndarray, ceiling: float) -> np.ndarray:
    """Cap the top probability at ``ceiling``; the excess goes to the other classes in proportion."""
    out = proba.copy()
    rows = np.arange(out.shape[0])
    top = out.argmax(axis=1)
    excess = np.maximum(out[rows, top] - ceiling, 0.0)
    others = out.copy()
    others[rows, top] = 0.0
    rest = others.sum(axis=1)  # summed directly: 1 - top cancels catastrophically when top -> 1
    out[rows, top] -= excess
    uniform = np.full_like(others, 1.0 / max(out.shape[1] - 1, 1))
    uniform[rows, top] = 0.0
    share = np.where(rest[:, None] > 0, others / np.where(rest > 0, rest, 1.0)[:, None], uniform)
    out += share * excess[:, None]
    return out


def add_noise(proba: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise on the log-probabilities, renormalised; the label is kept."""
    with np.errstate(divide="ignore"):
        noisy = softmax(np.log(proba) + rng.normal(0.0, std, proba.shape), axis=1)
    return _keep_label(noisy, proba.argmax(axis=1))


def keep_top_k(proba: np.ndarray, k: int) -> np.ndarray:
    """Zero every probability outside the top ``k`` (as APIs that return the k best classes do)."""
    if k >= proba.shape[1]:
        return proba
    out = np.zeros_like(proba)
    best = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    rows = np.arange(proba.shape[0])[:, None]
    out[rows, best] = proba[rows, best]
    return out


def harden(proba: np.ndarray, policy: OutputPolicy, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply ``policy`` to probabilities ``(n, C)``; the arg-max of every row is preserved."""
    proba = np.asarray(proba, dtype=np.float64)
    label = proba.argmax(axis=1)
    out = proba
    if policy.temperature is not None:
        out = apply_temperature(out, policy.temperature)
    if policy.clip_top1 is not None:
        out = clip_top1(out, policy.clip_top1)
    if policy.noise_std:
        out = add_noise(out, policy.noise_std, rng or np.random.default_rng(0))
    if policy.top_k is not None:
        out = keep_top_k(out, policy.top_k)
    if policy.round_decimals is not None:
        out = np.round(out, policy.round_decimals)
    if policy.label_only:
        out = np.zeros_like(out)
        out[np.arange(out.shape[0]), label] = 1.0
    return _keep_label(out, label)


class HardenedTarget:
    """A target whose every answer passes through ``harden`` (after ``memguard``, when given): audited
    exactly as a deployed API would be."""

    def __init__(self, inner: Target, policy: OutputPolicy, seed: int = 0, memguard: MemGuard | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.memguard = memguard
        self.kind = f"{inner.kind}+hardened"
        self.access = "label-only" if policy.label_only else "black-box"
        self.classes = inner.classes
        self._rng = np.random.default_rng(seed)

    def logits(self, features: pd.DataFrame) -> np.ndarray:
        raw = np.asarray(self.inner.logits(features), dtype=np.float64)
        if self.memguard is not None:
            from membershield.defenses.memguard import query_keys  # imports torch: only when MemGuard is used

            proba = self.memguard(raw, query_keys(features))
        else:
            proba = softmax(raw, axis=1)
        hardened = harden(proba, self.policy, self._rng)
        with np.errstate(divide="ignore"):
            # Zeroed classes get the same floor as classes a model never saw (see targets.base.LOG_FLOOR).
            return np.maximum(np.log(hardened), np.log(1e-30)).astype(np.float32)
