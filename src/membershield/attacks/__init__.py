"""The attack registry: built-in attacks listed explicitly (no import side effects).

Adding an attack is one file in this package and one line in ``BUILT_IN``.
"""

from __future__ import annotations

import difflib

from membershield.attacks.base import Attack, AttackInputs
from membershield.attacks.confidence import ConfidenceAttack
from membershield.attacks.entropy import EntropyAttack
from membershield.attacks.gradient_norm import GradientNormAttack
from membershield.attacks.label_only import LabelOnlyGap, LabelOnlyNoise
from membershield.attacks.label_only_boundary import LabelOnlyBoundary
from membershield.attacks.lira import (
    LiraOffline,
    LiraOfflineFixedVariance,
    LiraOnline,
    LiraOnlineFixedVariance,
)
from membershield.attacks.loss import LossAttack
from membershield.attacks.loss_trajectory import LossTrajectoryAttack
from membershield.attacks.modified_entropy import ModifiedEntropyAttack
from membershield.attacks.quantile_regression import QuantileRegressionAttack
from membershield.attacks.rmia import RmiaOffline, RmiaOnline
from membershield.attacks.shadow import ShadowModelAttack
from membershield.errors import ConfigError

BUILT_IN: tuple[type[Attack], ...] = (
    LossAttack,
    ConfidenceAttack,
    EntropyAttack,
    ModifiedEntropyAttack,
    ShadowModelAttack,
    LiraOnline,
    LiraOffline,
    LiraOnlineFixedVariance,
    LiraOfflineFixedVariance,
    RmiaOnline,
    RmiaOffline,
    LabelOnlyGap,
    LabelOnlyNoise,
    LabelOnlyBoundary,
    QuantileRegressionAttack,
    GradientNormAttack,
    LossTrajectoryAttack,
)
REGISTRY: dict[str, type[Attack]] = {cls.name: cls for cls in BUILT_IN}
DEFAULT_ATTACKS = (
    "loss",
    "confidence",
    "entropy",
    "modified-entropy",
    "shadow",
    "lira",
    "lira-offline",
    "rmia",
    "rmia-offline",
)


def create_attack(name: str, settings: dict[str, object] | None = None) -> Attack:
    """A fresh attack by registry name, with ``settings`` instead of their defaults where given; unknown
    names fail with the closest known ones."""
    cls = REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, REGISTRY, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"unknown attack '{name}': {hint}known attacks are {', '.join(REGISTRY)}")
    return cls(**(settings or {}))


def parse_attack_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split ``"loss, lira"`` (or a list) into validated, de-duplicated names in the given order."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("no attacks given: pass --attacks with names such as loss,lira,rmia")
    for n in names:
        create_attack(n)
    return list(dict.fromkeys(names))


__all__ = ["BUILT_IN", "DEFAULT_ATTACKS", "REGISTRY", "Attack", "AttackInputs", "create_attack", "parse_attack_list"]
