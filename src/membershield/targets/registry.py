"""The target kinds, in the order ``--model`` is matched against them, and loading through them.

Adding a kind: one module under ``targets/`` with a :class:`~membershield.targets.kind.TargetKind`
subclass, and one line in :data:`KINDS` (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from membershield.errors import ModelLoadError
from membershield.targets.base import Recipe
from membershield.targets.hf_classifier import HfClassifierDirectory
from membershield.targets.http_endpoint import HttpEndpoint
from membershield.targets.kind import LoadedModel, TargetKind
from membershield.targets.language_model import LanguageModelDirectory
from membershield.targets.onnx_file import OnnxFile
from membershield.targets.recipe_file import RecipeFile
from membershield.targets.sklearn_file import SklearnFile

# Listed, not registered by import side effects; the first kind that recognises a spec takes it, so the
# catch-all (any other path is a model file) comes last and ``hf:DIR`` precedes the plain directory kind.
KINDS: tuple[TargetKind, ...] = (
    HttpEndpoint(),
    RecipeFile(),
    HfClassifierDirectory(),
    LanguageModelDirectory(),
    OnnxFile(),
    SklearnFile(),
)


def kind_named(name: str) -> TargetKind:
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise ModelLoadError(f"unknown target kind '{name}': known kinds are {', '.join(k.name for k in KINDS)}")


def resolve(spec: str) -> TargetKind:
    """The kind of model ``spec`` names."""
    for kind in KINDS:
        if kind.recognises(spec):
            return kind
    shown = "; ".join(f"{k.name}: {k.example}" for k in KINDS)
    raise ModelLoadError(f"--model {spec!r} names no kind of model membershield knows ({shown})")


def load_model(spec: str, **options: Any) -> LoadedModel:
    """Load what ``spec`` names through its kind (``options`` go to the kind, e.g. a language model's device)."""
    return resolve(spec).load(spec, **options)


def recipe_from(spec: str) -> Recipe:
    """The recipe named by ``--recipe``: a recipe file, or a model file whose clone is trained (what an
    attacker who knows the training pipeline would use for reference models)."""
    kind = resolve(spec)
    loaded = kind.load(spec)
    if loaded.recipe is None:
        trainable = ", ".join(k.example for k in KINDS if k.gives_recipe)
        raise ModelLoadError(f"--recipe {spec} is a {kind.description}, which trains nothing: give {trainable}")
    return loaded.recipe


def load_for(command: str, spec: str, **options: Any) -> LoadedModel:
    """Load ``spec`` for an audit command, refusing a kind that another command audits (with its name)."""
    kind = resolve(spec)
    if kind.audit_command != command:
        fitting = [k for k in KINDS if k.audit_command == command]
        if kind is KINDS[-1] and not Path(spec).exists() and len(fitting) == 1:
            # the catch-all took a path that is not there: let the kind this command audits say so
            kind = fitting[0]
        else:
            raise ModelLoadError(
                f"{spec} is a {kind.description}; `membershield {command}` does not audit that kind of model:"
                f" use `membershield {kind.audit_command}`"
            )
    return kind.load(spec, **options)
