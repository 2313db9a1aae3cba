"""A fitted scikit-learn classifier or Pipeline saved with joblib or pickle (XGBoost and LightGBM through
their scikit-learn API too). Unpickling runs code from the file: load only model files you trust."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib

from membershield.errors import ModelLoadError
from membershield.targets.kind import LoadedModel, TargetKind, sha256_file
from membershield.targets.sklearn import check_classifier, sklearn_target_and_recipe


class SklearnFile(TargetKind):
    name = "sklearn"
    description = "fitted scikit-learn classifier or Pipeline with predict_proba (joblib or pickle file)"
    example = "model.joblib"
    access = "black-box"
    gives_recipe = True  # a clone of the estimator, with a new seed
    audit_command = "audit"
    serves = "POST /v1/predict"

    def recognises(self, spec: str) -> bool:
        # any other path: a model file (a missing one is reported as such by load)
        return ".py:" not in spec and not Path(spec).is_dir()

    def load(self, spec: str, **options: Any) -> LoadedModel:
        path = Path(spec)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path} (give a .joblib/.pkl classifier or file.py:recipe)")
        try:
            estimator = joblib.load(path)
        except (ModuleNotFoundError, AttributeError) as exc:
            raise ModelLoadError(
                f"model file {path} needs code that is not installed here: {exc}".splitlines()[0]
            ) from exc
        except Exception as exc:  # a corrupt pickle can fail with almost any exception type
            raise ModelLoadError(
                f"cannot unpickle model file {path}: {type(exc).__name__}: {exc}".splitlines()[0]
                + " (is it a complete, uncorrupted joblib/pickle file?)"
            ) from exc
        check_classifier(estimator, str(path))
        target, recipe = sklearn_target_and_recipe(estimator)
        return LoadedModel(target=target, recipe=recipe, kind=self.name, spec=str(path), sha256=sha256_file(path))
