"""scikit-learn estimators (and XGBoost/LightGBM through their scikit-learn API) as targets and recipes."""

from __future__ import annotations

import warnings
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from membershield.errors import InputDataError, ModelLoadError
from membershield.targets.base import align_log_proba

SKLEARN_INTERRUPTED = "Training interrupted by user"  # what scikit-learn's MLPs warn when they catch Ctrl-C


def _feature_view(estimator: Any, features: pd.DataFrame, columns: list[str] | None) -> Any:
    """The features in the form the estimator was fitted on: named columns, or a plain array."""
    if columns is not None:
        missing = [c for c in columns if c not in features.columns]
        if missing:
            raise InputDataError(
                f"the model was trained with feature column '{missing[0]}', which the data lacks"
                f" ({len(missing)} missing); pass data with the model's feature columns"
            )
        return features[columns]
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and expected != features.shape[1]:
        raise InputDataError(
            f"the model expects {expected} features but the data has {features.shape[1]} feature columns"
            " (all columns except the label and --ignore-columns); drop or add columns to match"
        )
    return features.to_numpy()


class SklearnTarget:
    """A fitted estimator queried through ``predict_proba``; black-box access."""

    kind = "sklearn"
    access = "black-box"

    def __init__(self, estimator: Any, classes: np.ndarray, columns: list[str] | None) -> None:
        self.estimator = estimator
        self.classes = np.asarray(classes)
        self.columns = columns

    def logits(self, features: pd.DataFrame) -> np.ndarray:
        proba = self.estimator.predict_proba(_feature_view(self.estimator, features, self.columns))
        return align_log_proba(np.asarray(proba, dtype=np.float64), self.estimator.classes_, self.classes)


def _seeded(estimator: Any, seed: int) -> Any:
    params = estimator.get_params(deep=True)
    seeds = {name: seed for name in params if name == "random_state" or name.endswith("__random_state")}
    return estimator.set_params(**seeds) if seeds else estimator


class SklearnRecipe:
    """Trains a fresh ``clone`` of the target's estimator (same hyper-parameters, new weights)."""

    kind = "sklearn"

    def __init__(self, estimator: Any, columns: list[str] | None) -> None:
        self.template = clone(estimator)
        self.columns = columns

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int) -> SklearnTarget:
        model = _seeded(clone(self.template), seed)
        view = features[self.columns] if self.columns is not None else features.to_numpy()
        with warnings.catch_warnings():
            # The target was trained with these settings; a reference that stops at the same iteration
            # cap is faithful to it, so the repeated warning would only bury the audit's output.
            warnings.simplefilter("ignore", ConvergenceWarning)
            # scikit-learn's MLPs catch Ctrl-C, warn and return the half-trained model, which would then
            # be cached as a finished reference: the warning is turned back into the interruption.
            warnings.filterwarnings("error", message=SKLEARN_INTERRUPTED)
            try:
                model.fit(view, labels)
            except UserWarning as exc:
                if SKLEARN_INTERRUPTED not in str(exc):
                    raise
                raise KeyboardInterrupt from exc
        return SklearnTarget(model, classes, self.columns)

    def identity(self) -> str:
        """The estimator's class, hyper-parameters and input columns: what every reference shares.

        Seeds are left out (each reference gets its own), so a new version of a model that differs only
        in its seed reuses the cached references; a model fitted on other columns does not.
        """
        # Every seed set alike, nested estimators' included (a Pipeline's steps carry theirs).
        params = _seeded(clone(self.template), 0).get_params(deep=True)
        kind = f"{type(self.template).__module__}.{type(self.template).__qualname__}"
        return f"sklearn:{kind}:{joblib.hash(params)}:columns={joblib.hash(self.columns)}"


def check_classifier(estimator: Any, path: str) -> None:
    """Raise a ModelLoadError unless ``estimator`` is a fitted probabilistic classifier."""
    if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "fit"):
        raise ModelLoadError(
            f"{path} holds a {type(estimator).__name__}, not a classifier with predict_proba;"
            " save a fitted scikit-learn classifier or Pipeline"
        )
    if not hasattr(estimator, "classes_"):
        raise ModelLoadError(f"{path} holds an unfitted {type(estimator).__name__}; fit it before saving")


def sklearn_target_and_recipe(estimator: Any) -> tuple[SklearnTarget, SklearnRecipe]:
    names = getattr(estimator, "feature_names_in_", None)
    columns = [str(c) for c in names] if names is not None else None
    return SklearnTarget(estimator, np.asarray(estimator.classes_), columns), SklearnRecipe(estimator, columns)
