"""Build the demo audit's inputs from scikit-learn's bundled handwritten-digits table (no download).

Writes ``members.csv`` (the model's training records), ``nonmembers.csv`` (held out), ``population.csv``
(more unseen records, for RMIA and offline attacks) and ``model.joblib``: a scikit-learn MLP trained
without regularisation until it fits its training records perfectly, i.e. a model that memorises.

    python examples/demo_data.py OUT_DIR
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

N_MEMBERS = 700
N_NONMEMBERS = 700


def overfit_model(seed: int = 0):
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(256,), alpha=0.0, max_iter=400, tol=1e-6, random_state=seed),
    )


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits(as_frame=True)
    frame = digits.frame.rename(columns={"target": "digit"})
    order = np.random.default_rng(0).permutation(len(frame))
    members = frame.iloc[order[:N_MEMBERS]].reset_index(drop=True)
    nonmembers = frame.iloc[order[N_MEMBERS : N_MEMBERS + N_NONMEMBERS]].reset_index(drop=True)
    population = frame.iloc[order[N_MEMBERS + N_NONMEMBERS :]].reset_index(drop=True)
    for name, table in (("members", members), ("nonmembers", nonmembers), ("population", population)):
        table.to_csv(out / f"{name}.csv", index=False)
    with warnings.catch_warnings():
        # Stopping at the iteration cap is intended: the model has fitted its training records exactly.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = overfit_model().fit(members.drop(columns="digit"), members["digit"])
    joblib.dump(model, out / "model.joblib")
    train_acc = model.score(members.drop(columns="digit"), members["digit"])
    test_acc = model.score(nonmembers.drop(columns="digit"), nonmembers["digit"])
    print(f"demo model: train accuracy {train_acc:.3f}, holdout accuracy {test_acc:.3f} -> {out}/model.joblib")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
