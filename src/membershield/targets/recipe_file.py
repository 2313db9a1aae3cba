"""A PyTorch training recipe, ``path/to/file.py:function``: the audit trains the target with it on the
members, and every reference model the same way (see :mod:`membershield.targets.torch`)."""

from __future__ import annotations

from typing import Any

from membershield.targets.kind import LoadedModel, TargetKind
from membershield.targets.torch import load_recipe


class RecipeFile(TargetKind):
    name = "torch-recipe"
    description = "PyTorch recipe function that trains the model (the target is trained on the members)"
    example = "examples/torch_mlp.py:recipe"
    access = "white-box"
    gives_recipe = True
    audit_command = "audit"
    serves = None  # a recipe is no model to serve

    def recognises(self, spec: str) -> bool:
        path, sep, function = spec.rpartition(":")
        return bool(sep) and path.endswith(".py") and bool(function)

    def load(self, spec: str, **options: Any) -> LoadedModel:
        recipe = load_recipe(spec)
        return LoadedModel(target=None, recipe=recipe, kind=self.name, spec=spec, sha256=recipe.source_sha256)
