"""Shared fixtures: real data (scikit-learn's bundled digits table), written the way users give it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class DigitsAudit:
    directory: Path
    members: Path
    nonmembers: Path
    population: Path
    overfit_model: Path
    unseen_model: Path


def mlp(seed: int = 0):
    # No regularisation and many iterations: fits its training records perfectly, i.e. memorises.
    return make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), alpha=0.0, max_iter=200, random_state=seed)
    )


@pytest.fixture(scope="session")
def digits_audit(tmp_path_factory: pytest.TempPathFactory) -> DigitsAudit:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    directory = tmp_path_factory.mktemp("digits")
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    order = np.random.default_rng(1).permutation(len(frame))
    parts = {
        "members": frame.iloc[order[:600]],
        "nonmembers": frame.iloc[order[600:1200]],
        "population": frame.iloc[order[1200:]],
    }
    paths = {}
    for name, table in parts.items():
        paths[name] = directory / f"{name}.csv"
        table.reset_index(drop=True).to_csv(paths[name], index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        overfit = mlp().fit(parts["members"].drop(columns="digit"), parts["members"]["digit"])
        unseen = mlp().fit(parts["population"].drop(columns="digit"), parts["population"]["digit"])
    joblib.dump(overfit, directory / "overfit.joblib")
    joblib.dump(unseen, directory / "unseen.joblib")
    return DigitsAudit(
        directory=directory,
        members=paths["members"],
        nonmembers=paths["nonmembers"],
        population=paths["population"],
        overfit_model=directory / "overfit.joblib",
        unseen_model=directory / "unseen.joblib",
    )


def read_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@pytest.fixture(autouse=True)
def _history_store_in_temp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audits record their history; in tests it goes to a temporary database, not the working directory."""
    if "MEMBERSHIELD_STORE" not in os.environ:
        store = tmp_path_factory.getbasetemp() / "history.db"
        monkeypatch.setenv("MEMBERSHIELD_STORE", str(store))
