"""The synthetic-data attack registry: built-in attacks listed explicitly (no import side effects).

Adding an attack is one file in this package (a :class:`SyntheticAttack` whose settings are keyword-only
constructor parameters) and one line in ``BUILT_IN``.
"""

from __future__ import annotations

import difflib
from typing import Any

from membershield.errors import ConfigError
from membershield.synthetic.attacks.base import SyntheticAttack, SyntheticAttackInputs
from membershield.synthetic.attacks.classifier import SyntheticClassifierAttack
from membershield.synthetic.attacks.dcr import DcrAttack
from membershield.synthetic.attacks.domias import DomiasAttack
from membershield.synthetic.attacks.nndr import NndrAttack
from membershield.synthetic.attacks.shadow import ShadowGeneratorsAttack

BUILT_IN: tuple[type[SyntheticAttack], ...] = (
    DcrAttack,
    NndrAttack,
    DomiasAttack,
    SyntheticClassifierAttack,
    ShadowGeneratorsAttack,
)
REGISTRY: dict[str, type[SyntheticAttack]] = {cls.name: cls for cls in BUILT_IN}


def create_synthetic_attack(name: str, options: dict[str, Any] | None = None) -> SyntheticAttack:
    """A fresh attack by registry name with the ``options`` among its settings; unknown names fail with
    the closest known ones."""
    cls = REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, REGISTRY, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"unknown synthetic-data attack '{name}': {hint}known ones are {', '.join(REGISTRY)}")
    settings = cls.settings()
    return cls(**{k: v for k, v in (options or {}).items() if k in settings and v is not None})


def parse_synthetic_attack_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split ``"dcr, domias"`` (or a list) into validated, de-duplicated names in the given order.

    >>> parse_synthetic_attack_list("dcr, domias,dcr")
    ['dcr', 'domias']
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"no attacks given: pass --attacks with names among {', '.join(REGISTRY)}")
    for n in names:
        create_synthetic_attack(n)
    return list(dict.fromkeys(names))


__all__ = [
    "BUILT_IN",
    "REGISTRY",
    "SyntheticAttack",
    "SyntheticAttackInputs",
    "create_synthetic_attack",
    "parse_synthetic_attack_list",
]
