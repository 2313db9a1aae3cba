"""Recipe audits (the privacy game): do the pooled intervals cover chance on a pipeline that learns nothing
about membership, and how many models make a TPR at 0.1% FPR measurable, at what cost per model.

``coverage``: the null pipeline on scikit-learn's digits (1,797 records): every model trains on the whole
pool with its labels permuted by its own seed, a draw independent of which half the game assigned it,
so its outputs say nothing about membership (the true TPR at FPR f is f, the AUC 0.5, the advantage 0).
For each of ``--seeds`` seeds (the plan's and the models'), one recipe audit; the table gives, per
attack and metric, how many of the seeds' 95% intervals contain chance: the two-way clustered bootstrap
intervals membershield reports, and beside them what a binomial model of the pooled trials as
independent would give (DeLong for the AUC, the model audit's Clopper-Pearson bracket for a TPR).

``models``: the leaky pipeline on ``--task digits`` (examples/torch_mlp.py, 1,797 records) or
``--task purchase`` (bench/purchase_task.py, ``--rows`` records), one recipe audit per K in
``--models``: the pooled non-member trials, whether a TPR at 0.1% FPR is measurable (at least
``metrics.nonmembers_needed(0.001)`` = 4,380 of them) and its value with the clustered interval, and
the training time per model. Nothing is downloaded; models are cached under ``--work``.

    .venv/bin/python bench/recipe_audit.py coverage [--seeds 20] [--models 8] [--attacks loss,lira,...]
    .venv/bin/python bench/recipe_audit.py models --task digits|purchase [--models 3,4,5,8,16,32] [--rows 4000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

import purchase_task

from membershield import metrics
from membershield.attacks import DEFAULT_ATTACKS
from membershield.audit import run_recipe_audit
from membershield.config import AuditConfig
from membershield.targets.registry import recipe_from
from membershield.targets.sklearn import SklearnRecipe

HERE = Path(__file__).resolve().parent
FPRS = (0.001, 0.01, 0.1)


class PermutedLabels:
    """The null pipeline: each model trains on the whole pool with the labels permuted by its seed."""

    kind = "sklearn"

    def __init__(self, base: SklearnRecipe, features: pd.DataFrame, labels: np.ndarray) -> None:
        self.base, self.features, self.labels = base, features, labels

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int):
        permuted = np.random.default_rng(seed).permutation(self.labels)
        return self.base.fit(self.features, permuted, classes, seed)

    def identity(self) -> str:
        return "null-permuted-labels:" + self.base.identity()


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"


def digits_pool(work: Path) -> Path:
    path = work / "digits.csv"
    load_digits(as_frame=True).frame.rename(columns={"target": "digit"}).to_csv(path, index=False)
    return path


def null_recipe(work: Path, pool: Path) -> tuple[str, PermutedLabels]:
    """A small unregularised MLP saved with joblib (its clone is what trains) and the null pipeline over it."""
    frame = pd.read_csv(pool)
    estimator = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=0.0, max_iter=100, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(frame.drop(columns="digit").iloc[:100], frame["digit"].iloc[:100])
    joblib.dump(estimator, work / "mlp.joblib")
    base = recipe_from(str(work / "mlp.joblib"))
    return str(work / "mlp.joblib"), PermutedLabels(base, frame.drop(columns="digit"), frame["digit"].to_numpy())


def _covers(low: float | None, value: float, high: float | None) -> bool:
    return low is not None and high is not None and low <= value <= high


def seed_coverage(run, attack) -> dict[str, tuple[bool, bool]]:
    """Per metric: (clustered interval contains chance, naive interval on the pooled trials does)."""
    scores, truth = run.scores[attack.name].to_numpy(), run.scores["is_member"].to_numpy(dtype=bool)
    naive_auc = metrics.auc_with_ci(scores, truth)[1]
    out = {"AUC": (_covers(attack.auc_ci_low, 0.5, attack.auc_ci_high), _covers(naive_auc.low, 0.5, naive_auc.high))}
    for rate in attack.tpr_at_fpr:
        naive = metrics.tpr_at_fpr(scores, truth, rate["fpr"])
        name = f"TPR @ {100 * rate['fpr']:g}%"
        out[name] = (
            _covers(rate["ci_low"], rate["fpr"], rate["ci_high"]),
            _covers(naive.ci_low, naive.fpr, naive.ci_high),
        )
    naive_adv = metrics.membership_advantage(scores, truth)
    out["advantage"] = (
        _covers(attack.advantage_ci_low, 0.0, attack.advantage_ci_high),
        _covers(naive_adv.ci_low, 0.0, naive_adv.ci_high),
    )
    naive_eps = metrics.empirical_epsilon_lower_bound(scores, truth)
    out["ε = 0"] = (attack.epsilon_lower_bound == 0.0, naive_eps.epsilon == 0.0)
    return out


def coverage(args: argparse.Namespace, work: Path) -> None:
    pool = digits_pool(work)
    spec, null = null_recipe(work, pool)
    tally: dict[tuple[str, str], list[tuple[bool, bool]]] = {}
    clock = time.perf_counter()
    for seed in range(args.seeds):
        config = AuditConfig(
            recipe=spec, data=str(pool), label_column="digit", models=args.models, attacks=args.attacks.split(","),
            seed=seed, out=str(work / "coverage-out"), cache=str(work / "cache"), fprs=list(FPRS),
        )  # fmt: skip
        run = run_recipe_audit(config, recipe=null)
        for attack in run.result.attacks:
            for metric, hit in seed_coverage(run, attack).items():
                tally.setdefault((attack.name, metric), []).append(hit)
        print(f"seed {seed}: {time.perf_counter() - clock:.0f} s so far, load {load()}", flush=True)
    metrics_order = ["AUC", *[f"TPR @ {100 * f:g}%" for f in FPRS], "advantage", "ε = 0"]
    print(f"\nnull pipeline, {args.models} models x 1,797 records, {args.seeds} seeds: intervals containing chance")
    print("| attack | " + " | ".join(metrics_order) + " |")
    print("|---|" + "---:|" * len(metrics_order))
    names = list(dict.fromkeys(name for name, _ in tally))
    for name in names:
        cells = []
        for metric in metrics_order:
            hits = tally[(name, metric)]
            cells.append(f"{sum(h[0] for h in hits)}/{len(hits)} (naive {sum(h[1] for h in hits)})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def purchase_pool(work: Path, rows: int) -> Path:
    X, y = purchase_task.purchase_like(rows, seed=0)
    path = work / f"purchase-{rows}.parquet"
    purchase_task.write_parquet(path, X, y)
    return path


def models_sweep(args: argparse.Namespace, work: Path) -> None:
    if args.task == "digits":
        pool, label, spec = digits_pool(work), "digit", f"{HERE.parent / 'examples' / 'torch_mlp.py'}:recipe"
    else:
        pool, label, spec = purchase_pool(work, args.rows), "y", f"{HERE / 'purchase_task.py'}:recipe"
    n = len(pd.read_parquet(pool) if pool.suffix == ".parquet" else pd.read_csv(pool))
    need = metrics.nonmembers_needed(0.001)
    smallest = -(-2 * need // n)  # K models give about K * n / 2 non-member trials
    print(f"task {args.task}: {n} records; a TPR at 0.1% FPR needs {need} non-member trials: about {smallest} models")
    print(
        "| models | non-member trials | LiRA TPR @ 0.1% [95% CI] | RMIA TPR @ 0.1% [95% CI] | s per model | attacks s |"
    )
    print("|---:|---:|---|---|---:|---:|")
    for k in [int(x) for x in args.models.split(",")]:
        config = AuditConfig(
            recipe=spec, data=str(pool), label_column=label, models=k, attacks=args.attacks.split(","),
            out=str(work / f"{args.task}-{k}"), cache=str(work / "cache"), fprs=list(FPRS),
        )  # fmt: skip
        result = run_recipe_audit(config).result
        refs = result.references
        per_model = refs["seconds_training"] / refs["trained"] if refs["trained"] else float("nan")
        cells = []
        for name in ("lira", "rmia"):
            rate = result.attack(name).rate_at(0.001) if name in {a.name for a in result.attacks} else None
            cells.append(
                "not measurable" if not rate or not rate["measurable"]
                else f"{100 * rate['tpr']:.2f}% [{100 * rate['ci_low']:.2f}, {100 * rate['ci_high']:.2f}]"
            )  # fmt: skip
        print(
            f"| {k} | {result.data['n_nonmembers']} | {cells[0]} | {cells[1]} | {per_model:.2f}"
            f" ({refs['trained']} trained) | {result.timings['attacks']:.1f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("coverage", "models"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--models", default=None, help="coverage: K (default 8); models: list (default 3,4,5,8,16,32)")
    parser.add_argument("--attacks", default=None, help="default: the default list (coverage), loss,lira,rmia (models)")
    parser.add_argument("--task", choices=("digits", "purchase"), default="digits")
    parser.add_argument("--rows", type=int, default=4000, help="purchase: records in the pool")
    parser.add_argument("--work", default=".membershield/bench-recipe-audit")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(
        f"{date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} CPU cores, load average {load()};"
        f" python {platform.python_version()}"
    )
    start = time.perf_counter()
    if args.what == "coverage":
        args.models = int(args.models or 8)
        args.attacks = args.attacks or ",".join(DEFAULT_ATTACKS)
        coverage(args, work)
    else:
        args.models = args.models or "3,4,5,8,16,32"
        args.attacks = args.attacks or "loss,lira,rmia"
        models_sweep(args, work)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; load average {load()} at the end")


if __name__ == "__main__":
    main()
