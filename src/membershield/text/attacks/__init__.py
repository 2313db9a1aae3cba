"""The text attack registry: built-in attacks listed explicitly (no import side effects).

Adding an attack is one file in this package and one line in ``BUILT_IN`` (attacks on the shared
per-token scores, run by default) or ``QUERYING`` (attacks that query the model again, see
:mod:`.querying`; they cost forward passes, so they run only when ``--attacks`` names them).
``REGISTRY`` holds the first kind, ``QUERYING_REGISTRY`` the second, ``KNOWN`` both.
"""

from __future__ import annotations

import difflib
from typing import Any

from membershield.errors import ConfigError
from membershield.text.attacks.base import TextAttack, TextAttackInputs
from membershield.text.attacks.dc_pdd import DCPDDAttack
from membershield.text.attacks.loss import TextLossAttack
from membershield.text.attacks.lowercase import LowercaseRatioAttack
from membershield.text.attacks.min_k import MinKProbAttack
from membershield.text.attacks.min_k_plus_plus import MinKPlusPlusAttack
from membershield.text.attacks.neighbourhood import NeighbourhoodAttack
from membershield.text.attacks.querying import QueryingInputs, QueryingTextAttack, TextModelQueries
from membershield.text.attacks.recall import ReCaLLAttack
from membershield.text.attacks.reference import ReferenceRatioAttack
from membershield.text.attacks.zlib_ratio import ZlibRatioAttack

BUILT_IN: tuple[type[TextAttack], ...] = (
    TextLossAttack,
    ZlibRatioAttack,
    LowercaseRatioAttack,
    ReferenceRatioAttack,
    MinKProbAttack,
    MinKPlusPlusAttack,
)
QUERYING: tuple[type[QueryingTextAttack], ...] = (ReCaLLAttack, DCPDDAttack, NeighbourhoodAttack)
REGISTRY: dict[str, type[TextAttack]] = {cls.name: cls for cls in BUILT_IN}
QUERYING_REGISTRY: dict[str, type[TextAttack]] = {cls.name: cls for cls in QUERYING}
KNOWN: dict[str, type[TextAttack]] = {**REGISTRY, **QUERYING_REGISTRY}


def default_attacks(has_reference: bool) -> list[str]:
    """Every built-in attack, leaving out the reference ratio when there is no reference model."""
    return [name for name, cls in REGISTRY.items() if has_reference or not cls.needs_reference]


def create_text_attack(name: str, options: dict[str, Any] | None = None) -> TextAttack:
    """A fresh attack by registry name; unknown names fail with the closest known ones."""
    cls = KNOWN.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, KNOWN, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"unknown text attack '{name}': {hint}known text attacks are {', '.join(KNOWN)}")
    return cls.from_options(options or {})


def parse_text_attack_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split ``"loss, zlib"`` (or a list) into validated, de-duplicated names in the given order."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("no attacks given: pass --attacks with names such as loss,zlib,min-k-plus-plus")
    for n in names:
        create_text_attack(n)
    return list(dict.fromkeys(names))


__all__ = [
    "BUILT_IN",
    "KNOWN",
    "QUERYING",
    "QUERYING_REGISTRY",
    "REGISTRY",
    "QueryingInputs",
    "QueryingTextAttack",
    "TextAttack",
    "TextAttackInputs",
    "TextModelQueries",
    "create_text_attack",
    "default_attacks",
    "parse_text_attack_list",
]
