"""PyTorch modules as targets, and recipe functions (``path.py:function``) that train them.

A recipe is a plain function::

    def recipe(X: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int) -> torch.nn.Module

``X`` is float32 ``(n, d)``, ``y`` int64 class indices in ``[0, n_classes)``; the returned module maps a
float32 batch to logits ``(batch, n_classes)``. ``examples/torch_mlp.py`` is a complete one.

Checkpoints, optional: a recipe that sets ``module.checkpoints`` to a list of state-dict *copies* taken
during training, oldest first (``{k: v.detach().clone() for k, v in model.state_dict().items()}`` after
the epochs it chooses, the same epochs for every model it trains), gives the white-box ``loss-trajectory``
attack the losses along training (:func:`membershield.signals_whitebox.kept_checkpoints` checks them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from membershield.errors import InputDataError, ModelLoadError

RecipeFunction = Callable[..., torch.nn.Module]


def features_as_float32(features: pd.DataFrame) -> np.ndarray:
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise InputDataError(
            f"column '{non_numeric[0]}' is not numeric; PyTorch recipes need numeric features"
            " (encode it, or list it in --ignore-columns)"
        )
    return features.to_numpy(dtype=np.float32)


class TorchTarget:
    """A trained ``nn.Module``; white-box access (weights and gradients are available)."""

    kind = "torch"
    access = "white-box"

    def __init__(self, module: torch.nn.Module, classes: np.ndarray, batch_size: int = 8192) -> None:
        self.module = module
        self.classes = np.asarray(classes)
        self.batch_size = batch_size

    def logits(self, features: pd.DataFrame) -> np.ndarray:
        # pandas may hand out a read-only view, which torch warns about and must not write to.
        X = torch.from_numpy(np.require(features_as_float32(features), requirements="W"))
        self.module.eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, X.shape[0], self.batch_size):
                outputs.append(self.module(X[start : start + self.batch_size]).float())
        out = torch.cat(outputs).numpy()
        if out.ndim != 2 or out.shape[1] != len(self.classes):
            raise ModelLoadError(
                f"the model returned outputs of shape {tuple(out.shape)}; expected (n, {len(self.classes)})"
                " logits, one column per class"
            )
        return out.astype(np.float32, copy=False)


class TorchRecipe:
    """Calls a user's recipe function under a fixed seed and wraps the module it returns."""

    kind = "torch"

    def __init__(self, function: RecipeFunction, source_sha256: str, spec: str) -> None:
        self.function = function
        self.source_sha256 = source_sha256
        self.spec = spec

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int) -> TorchTarget:
        index = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
        y = np.array([index[v] for v in labels.tolist()], dtype=np.int64)
        X = features_as_float32(features)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = self.function(X, y, n_classes=len(index), seed=seed)
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"recipe {self.spec} returned {type(module).__name__}; it must return an nn.Module")
        return TorchTarget(module, np.asarray(classes))

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # The function was imported from a file under a private module name that other processes do not
        # have; re-importing the file by its spec is what a worker process or Ray task needs.
        return load_recipe, (self.spec,)

    def identity(self) -> str:
        return f"torch-recipe:{self.spec.rsplit(':', 1)[1]}:{self.source_sha256}"


def load_recipe(spec: str) -> TorchRecipe:
    """Import ``path.py:function`` from a file (not from an installed package)."""
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not name or not path_text.endswith(".py"):
        raise ModelLoadError(f"recipe '{spec}' must look like path/to/file.py:function_name")
    if not path.is_file():
        raise ModelLoadError(f"recipe file not found: {path}")
    source = path.read_bytes()
    module_name = "membershield_recipe_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelLoadError(f"cannot import recipe file {path}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # any error in user code: report it on one line with the file
        del sys.modules[module_name]
        raise ModelLoadError(
            f"recipe file {path} does not import: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ModelLoadError(f"recipe file {path} has no function '{name}'")
    return TorchRecipe(function, hashlib.sha256(source).hexdigest(), f"{path}:{name}")
