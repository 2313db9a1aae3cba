"""Turn the ``--model`` argument into a target (or a recipe that trains it) and a recipe for references."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import joblib

from membershield.errors import ModelLoadError
from membershield.targets.base import Recipe, Target
from membershield.targets.sklearn import check_classifier, sklearn_target_and_recipe
from membershield.targets.torch import load_recipe


@dataclass
class LoadedModel:
    """What ``--model`` named. ``target`` is None for a recipe: the audit trains it on the members."""

    target: Target | None
    recipe: Recipe
    kind: str
    spec: str
    sha256: str


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(spec: str) -> LoadedModel:
    """Load a pickled/joblib scikit-learn classifier, or a PyTorch recipe ``file.py:function``.

    Unpickling runs code from the file: load only model files you trust.
    """
    if ".py:" in spec:
        recipe = load_recipe(spec)
        return LoadedModel(target=None, recipe=recipe, kind="torch-recipe", spec=spec, sha256=recipe.source_sha256)
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (give a .joblib/.pkl classifier or file.py:recipe)")
    try:
        estimator = joblib.load(path)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ModelLoadError(f"model file {path} needs code that is not installed here: {exc}".splitlines()[0]) from exc
    except Exception as exc:  # a corrupt pickle can fail with almost any exception type
        raise ModelLoadError(
            f"cannot unpickle model file {path}: {type(exc).__name__}: {exc}".splitlines()[0]
            + " (is it a complete, uncorrupted joblib/pickle file?)"
        ) from exc
    check_classifier(estimator, str(path))
    target, recipe = sklearn_target_and_recipe(estimator)
    return LoadedModel(target=target, recipe=recipe, kind="sklearn", spec=str(path), sha256=_sha256_file(path))
