"""The diffusion attack registry: built-in attacks listed explicitly (no import side effects).

Adding an attack is one file in this package (a :class:`DiffusionAttack` whose settings are keyword-only
constructor parameters) and one line in ``BUILT_IN``.
"""

from __future__ import annotations

import difflib
from typing import Any

from membershield.diffusion.attacks.base import DiffusionAttack, DiffusionAttackInputs
from membershield.diffusion.attacks.pia import PIAAttack
from membershield.diffusion.attacks.secmi import SecMIAttack
from membershield.diffusion.attacks.timestep_loss import TimestepLossAttack
from membershield.errors import ConfigError

BUILT_IN: tuple[type[DiffusionAttack], ...] = (TimestepLossAttack, SecMIAttack, PIAAttack)
REGISTRY: dict[str, type[DiffusionAttack]] = {cls.name: cls for cls in BUILT_IN}


def create_diffusion_attack(name: str, options: dict[str, Any] | None = None) -> DiffusionAttack:
    """A fresh attack by registry name with the ``options`` among its settings; unknown names fail with
    the closest known ones."""
    cls = REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, REGISTRY, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"unknown diffusion attack '{name}': {hint}known diffusion attacks are {', '.join(REGISTRY)}")
    settings = cls.settings()
    return cls(**{k: v for k, v in (options or {}).items() if k in settings and v is not None})


def parse_diffusion_attack_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split ``"secmi, pia"`` (or a list) into validated, de-duplicated names in the given order."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"no attacks given: pass --attacks with names among {', '.join(REGISTRY)}")
    for n in names:
        create_diffusion_attack(n)
    return list(dict.fromkeys(names))


__all__ = [
    "BUILT_IN",
    "REGISTRY",
    "DiffusionAttack",
    "DiffusionAttackInputs",
    "create_diffusion_attack",
    "parse_diffusion_attack_list",
]
