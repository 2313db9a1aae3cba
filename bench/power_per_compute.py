"""Attack power against the number of reference models, on one target.

For each K in ``--references`` the same target is audited with K reference models, and the script prints
TPR at 1% FPR (with its 95% interval) and AUC of LiRA and RMIA, online and offline, then the
"power per compute" figure: RMIA with 2 references as a share of LiRA-online with 64.

Tasks (both generated here, nothing downloaded):

* ``purchase`` (default): the Purchase100-like task and 600-256-100 MLP of bench/purchase_task.py;
  5,000 members, 5,000 non-members, 10,000 population records; the audit trains the target from the
  recipe (seeded) and every reference with the vectorised trainer.
* ``digits``: the demo's memorising MLP on scikit-learn's digits (examples/demo_data.py): 700 members,
  700 non-members, 397 population records.

Reference models are cached under ``--work``/cache, so an interrupted run resumes; attack time is printed
per attack.

    .venv/bin/python bench/power_per_compute.py [--task purchase|digits] [--references 1,2,4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import purchase_task
from demo_data import main as make_demo_data

from membershield.audit import run_audit
from membershield.config import AuditConfig

HERE = Path(__file__).resolve().parent
ATTACKS = ["lira", "lira-offline", "rmia", "rmia-offline"]


def purchase_data(folder: Path, seed: int) -> tuple[str, str, str]:
    """Write members / non-members / population parquet files; return (model spec, label column, extension)."""
    n_members, n_population = 5000, 10000
    X, y = purchase_task.purchase_like(2 * n_members + n_population, seed=seed)
    bounds = {"members": (0, n_members), "nonmembers": (n_members, 2 * n_members),
              "population": (2 * n_members, len(y))}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (lo, hi) in bounds.items():
        frame = pd.DataFrame(X[lo:hi].astype(np.int8), columns=[f"f{j}" for j in range(X.shape[1])])
        frame["y"] = y[lo:hi]
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return f"{HERE / 'purchase_task.py'}:recipe", "y", "parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("purchase", "digits"), default="purchase")
    parser.add_argument("--references", default="1,2,4,8,16,32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="default .membershield/bench-power-TASK")
    args = parser.parse_args()
    counts = [int(k) for k in args.references.split(",")]
    work = Path(args.work or f".membershield/bench-power-{args.task}")
    data = work / "data"
    if args.task == "purchase":
        model, label, ext = purchase_data(data, args.seed)
    else:
        make_demo_data(str(data))
        model, label, ext = str(data / "model.joblib"), "digit", "csv"
    print(f"task {args.task}, seed {args.seed}; TPR at 1% FPR [95% CI], AUC", flush=True)
    best: dict[tuple[int, str], float] = {}
    for k in counts:
        attacks = [a for a in ATTACKS if not (a == "lira" and k < 2)]
        start = time.perf_counter()
        run = run_audit(AuditConfig(
            model=model, train=str(data / f"members.{ext}"), holdout=str(data / f"nonmembers.{ext}"),
            population=str(data / f"population.{ext}"), label_column=label, attacks=attacks, references=k,
            seed=args.seed, out=str(work / f"out-{k}"), cache=str(work / "cache"), split_check=False,
        ))
        seconds = time.perf_counter() - start
        for attack in run.result.attacks:
            rate = next(r for r in attack.tpr_at_fpr if r["fpr"] == 0.01)
            best[(k, attack.name)] = rate["tpr"]
            print(f"K={k:3d} {attack.name:13s} TPR@1%FPR {100 * rate['tpr']:5.1f}%"
                  f" [{100 * rate['ci_low']:.1f}, {100 * rate['ci_high']:.1f}]  AUC {attack.auc:.3f}"
                  f"  attack {attack.seconds:.1f} s  {attack.params}  (audit {seconds:.0f} s)", flush=True)
    if (64, "lira") in best:
        for name in ("rmia", "rmia-offline"):
            if (2, name) in best:
                ratio = best[(2, name)] / best[(64, "lira")]
                print(f"{name} with 2 references reaches {100 * ratio:.0f}% of LiRA-online-64's TPR at 1% FPR"
                      " (target >= 80%)")


if __name__ == "__main__":
    main()
