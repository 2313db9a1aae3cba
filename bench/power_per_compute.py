"""Attack power against the number of reference models, on one target.

Trains the demo's memorising digits MLP (examples/demo_data.py), then audits it with K reference models
for each K in the list, and prints TPR at 1% FPR (with its 95% interval) and AUC of RMIA and LiRA for
every K, plus the ratio RMIA(2 references) / LiRA-online(64 references), the "power per compute" figure.

    .venv/bin/python bench/power_per_compute.py [--references 1,2,4,8,16,32,64] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from demo_data import main as make_demo_data

from membershield.audit import run_audit
from membershield.config import AuditConfig

ATTACKS = ["lira", "lira-offline", "rmia", "rmia-offline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", default="1,2,4,8,16,32,64")
    parser.add_argument("--work", default=".membershield/bench-power")
    args = parser.parse_args()
    counts = [int(k) for k in args.references.split(",")]
    work = Path(args.work)
    make_demo_data(str(work / "data"))
    rows = []
    for k in counts:
        attacks = [a for a in ATTACKS if not (a == "lira" and k < 2)]
        start = time.perf_counter()
        run = run_audit(AuditConfig(
            model=str(work / "data" / "model.joblib"), train=str(work / "data" / "members.csv"),
            holdout=str(work / "data" / "nonmembers.csv"), population=str(work / "data" / "population.csv"),
            label_column="digit", attacks=attacks, references=k, out=str(work / f"out-{k}"),
            cache=str(work / "cache"), split_check=False,
        ))
        seconds = time.perf_counter() - start
        for attack in run.result.attacks:
            rate = next(r for r in attack.tpr_at_fpr if r["fpr"] == 0.01)
            rows.append((k, attack.name, rate, attack.auc, seconds))
            print(f"K={k:3d} {attack.name:14s} TPR@1%FPR {100 * rate['tpr']:5.1f}% "
                  f"[{100 * rate['ci_low']:.1f}, {100 * rate['ci_high']:.1f}]  AUC {attack.auc:.3f}  "
                  f"(audit {seconds:.0f} s)", flush=True)
    best = {(k, name): rate["tpr"] for k, name, rate, _, _ in rows}
    if (2, "rmia") in best and (64, "lira") in best:
        for name in ("rmia", "rmia-offline"):
            ratio = best[(2, name)] / best[(64, "lira")]
            print(f"{name} with 2 references reaches {100 * ratio:.0f}% of LiRA-online-64's TPR at 1% FPR")


if __name__ == "__main__":
    main()
