"""What a target kind is: how ``--model`` names it, what loading it gives, and what access that is.

A kind is one module under ``targets/`` with one class deriving from :class:`TargetKind`, listed once in
:data:`membershield.targets.registry.KINDS`. Loading gives a :class:`LoadedModel`: the target to query
(None for a recipe, whose target the audit trains), the recipe that trains more like it (None where the
kind gives none, such as a model behind an API), and the access an attacker has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from membershield.targets.base import Recipe

# What an attacker can read from a target, most to least; an attack states the least it needs.
ACCESS_LEVELS = ("white-box", "black-box", "top-k", "label-only")


@dataclass
class LoadedModel:
    """What ``--model`` named. ``target`` is None for a recipe: the audit trains it on the members."""

    target: Any | None  # a Target (classifier) or, for a language model, a text.model.LanguageModel
    recipe: Recipe | None
    kind: str
    spec: str
    sha256: str
    kind_access: str = "white-box"  # the kind's own access, where neither target nor recipe states one

    @property
    def access(self) -> str:
        """The target's own access (a defense can narrow it), else what the recipe's targets give."""
        if self.target is not None and getattr(self.target, "access", None):
            return str(self.target.access)
        if self.recipe is not None and getattr(self.recipe, "target_access", None):
            return str(self.recipe.target_access)
        return self.kind_access


class TargetKind:
    """One way of naming a model on the command line. Subclasses set the class attributes and implement
    :meth:`recognises` and :meth:`load`."""

    name: ClassVar[str]
    description: ClassVar[str]
    example: ClassVar[str]  # how --model names one
    access: ClassVar[str]  # one of ACCESS_LEVELS, or "next-token distributions" for language models
    gives_recipe: ClassVar[bool]  # whether reference models can be trained from what was loaded
    audit_command: ClassVar[str]  # the command that audits it
    serves: ClassVar[str | None]  # the guard endpoint it can serve, or None

    def recognises(self, spec: str) -> bool:
        raise NotImplementedError

    def load(self, spec: str, **options: Any) -> LoadedModel:
        raise NotImplementedError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
