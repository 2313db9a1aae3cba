"""Attack power against the number of reference models, on one target.

One audit trains ``--max-references`` reference models (64 by default) for the target and caches their
outputs. For each K in ``--references`` the attacks are then run on disjoint groups of K of those models
(64 / K groups, at most ``--max-groups``), which is what an audit with K references would see: every
model trained on a random subset as large as the target's training set. The script prints, per attack
and K, the mean TPR at 1% FPR over the groups (with the smallest and largest), the mean AUC, and the
"power per compute" figure: RMIA with 2 references as a share of LiRA-online with all of them.
Averaging over groups matters: with 2 references the TPR moves by a quarter between one pair of models
and another, more than the differences being measured.

Tasks (both generated here, nothing downloaded):

* ``purchase`` (default): the Purchase100-like task and 600-256-100 MLP of bench/purchase_task.py;
  5,000 members, 5,000 non-members, 10,000 population records; the audit trains the target from the
  recipe (seeded) and the references with the vectorised trainer.
* ``digits``: the demo's memorising MLP on scikit-learn's digits (examples/demo_data.py): 700 members,
  700 non-members, 397 population records.

Reference models are cached under ``--work``/cache, so an interrupted run resumes.

    .venv/bin/python bench/power_per_compute.py [--task purchase|digits] [--references 1,2,4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import purchase_task
from demo_data import main as make_demo_data

from membershield import metrics
from membershield.attacks import AttackInputs, create_attack
from membershield.audit import prepare_audit, run_audit
from membershield.config import AuditConfig
from membershield.training import LogitCache, train_or_load

HERE = Path(__file__).resolve().parent
ATTACKS = ["lira", "lira-offline", "rmia", "rmia-offline"]


def purchase_data(folder: Path, seed: int) -> tuple[str, str, str]:
    """Write members / non-members / population parquet files; return (model spec, label column, extension)."""
    n_members, n_population = 5000, 10000
    X, y = purchase_task.purchase_like(2 * n_members + n_population, seed=seed)
    bounds = {
        "members": (0, n_members),
        "nonmembers": (n_members, 2 * n_members),
        "population": (2 * n_members, len(y)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (lo, hi) in bounds.items():
        purchase_task.write_parquet(folder / f"{name}.parquet", X[lo:hi], y[lo:hi])
    return f"{HERE / 'purchase_task.py'}:recipe", "y", "parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("purchase", "digits"), default="purchase")
    parser.add_argument("--references", default="1,2,4,8,16,32,64")
    parser.add_argument("--max-groups", type=int, default=16, help="groups of K models evaluated per K")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="default .membershield/bench-power-TASK")
    args = parser.parse_args()
    counts = [int(k) for k in args.references.split(",")]
    total = max(counts)
    work = Path(args.work or f".membershield/bench-power-{args.task}")
    data = work / "data"
    if args.task == "purchase":
        model, label, ext = purchase_data(data, args.seed)
    else:
        make_demo_data(str(data))
        model, label, ext = str(data / "model.joblib"), "digit", "csv"
    config = AuditConfig(
        model=model,
        train=str(data / f"members.{ext}"),
        holdout=str(data / f"nonmembers.{ext}"),
        population=str(data / f"population.{ext}"),
        label_column=label,
        attacks=ATTACKS,
        references=total,
        seed=args.seed,
        out=str(work / f"out-{total}"),
        cache=str(work / "cache"),
        split_check=False,
    )
    clock = time.perf_counter()
    run = run_audit(config)
    print(
        f"task {args.task}, seed {args.seed}: audit with {total} references in {time.perf_counter() - clock:.0f} s"
        f" (trained {run.result.references['trained']}, from cache {run.result.references['loaded_from_cache']});"
        f" target train accuracy {run.result.utility['train_accuracy']:.3f},"
        f" holdout {run.result.utility['holdout_accuracy']:.3f}",
        flush=True,
    )

    # The same models again, from the cache, to attack in groups.
    prepared = prepare_audit(config)
    cache = LogitCache(config.cache)
    common = (prepared.loaded.recipe, prepared.features, prepared.raw_labels, prepared.classes)
    if prepared.target_job is not None:
        target = train_or_load(*common, [prepared.target_job], prepared.data_fingerprint, cache)[0][0]
    else:
        target = prepared.loaded.target.logits(prepared.features)
    references = train_or_load(*common, prepared.jobs, prepared.data_fingerprint, cache)[0]
    n_audit, is_member = prepared.n_audit, prepared.pool.is_member
    n_nonmembers = int((~is_member).sum())
    print(
        f"TPR at 1% FPR on {int(is_member.sum())} members / {n_nonmembers} non-members: mean over groups"
        " [smallest, largest], mean AUC"
    )
    mean_tpr: dict[tuple[int, str], float] = {}
    for k in counts:
        groups = [np.arange(g * k, (g + 1) * k) for g in range(min(total // k, args.max_groups))]
        for name in ATTACKS:
            if k < create_attack(name).min_references:
                continue
            tprs, aucs = [], []
            for group in groups:
                inputs = AttackInputs(
                    prepared.labels, target, references[group], prepared.keep[group], n_audit, config.seed
                )
                scores = np.asarray(create_attack(name).score(inputs))[:n_audit]
                tprs.append(metrics.tpr_at_fpr(scores, is_member, 0.01).tpr)
                aucs.append(metrics.auc(scores, is_member))
            mean_tpr[(k, name)] = float(np.mean(tprs))
            print(
                f"K={k:3d} {name:13s} TPR@1%FPR {100 * np.mean(tprs):5.1f}% [{100 * min(tprs):.1f},"
                f" {100 * max(tprs):.1f}] over {len(groups)} group(s)  AUC {np.mean(aucs):.3f}",
                flush=True,
            )
    if (total, "lira") in mean_tpr:
        for name in ("rmia", "rmia-offline"):
            if (2, name) in mean_tpr:
                ratio = mean_tpr[(2, name)] / mean_tpr[(total, "lira")]
                print(
                    f"{name} with 2 references reaches {100 * ratio:.0f}% of LiRA-online-{total}'s TPR at 1% FPR"
                    " (target >= 80%)"
                )


if __name__ == "__main__":
    main()
