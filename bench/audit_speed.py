"""End-to-end audit time and power: membershield (16 references, LiRA + RMIA) against IBM ART's shadow-model attack.

Task (bench/purchase_task.py, generated here): Purchase100-like binary vectors, 600 features, 100 classes.
The target is the 600-256-100 MLP of that file trained on 5,000 members (20 epochs, Adam, batch 128);
5,000 non-members and a population of 10,000 records come from the same distribution.

Both tools attack the same trained target, with the same knowledge: the records to classify, their
labels, and the population. Neither is told which records are members.

* membershield: one full audit (``run_audit``: load, 16 reference models trained from scratch with an
  empty cache on the default local backend, which uses the vectorised trainer for this recipe; LiRA
  online/offline, RMIA online/offline; metrics, split check, audit.json and scores.csv). Each reference
  trains on a random quarter of members + non-members + population (5,000 rows, as many as the target).
* ART: ``ShadowModels`` with 16 shadow copies of the same architecture (ART's ``PyTorchClassifier``,
  the same optimiser, 20 epochs, batch 128), each on half of the population (5,000 rows), then
  ``MembershipInferenceBlackBox`` trained on the shadow models' member/non-member predictions, with its
  random-forest attack model (``--art-models rf,nn`` adds ART's default neural network, which is far
  slower on this much shadow data); the time of each is shadow training + attack fit + infer.

Every attack is scored on all 10,000 target records by the same functions (``membershield.metrics``).
Per-reference speed is also compared with ML Privacy Meter's figure of about 12 s per reference model on
this task (from the project's target; ML Privacy Meter is not run here).

ART is needed only here, not by membershield:

    .venv/bin/pip install adversarial-robustness-toolbox packaging
    .venv/bin/python bench/audit_speed.py [--references 16] [--seed 0] [--quick] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import purchase_task
from attack_power import ART_HINT, Row, fmt_rate, load, measure, table

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.targets.kind import LoadedModel
from membershield.targets.torch import TorchTarget, load_recipe

ATTACKS = ["lira", "lira-offline", "rmia", "rmia-offline"]
ART_ATTACK_MODELS = ("rf", "nn")
ML_PRIVACY_METER_SECONDS_PER_REFERENCE = 12.0
RECIPE = str(Path(__file__).resolve().parent / "purchase_task.py") + ":recipe"


def module_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().numpy().tobytes())
    return digest.hexdigest()


def art_classes():
    try:
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox, ShadowModels
        from art.estimators.classification import PyTorchClassifier
    except ImportError as exc:
        sys.exit(f"{ART_HINT}\n(import failed: {exc})")

    class TrainedLikeTarget(PyTorchClassifier):
        """ART's classifier with the target's epochs and batch size as ``fit`` defaults.

        ``ShadowModels`` calls ``fit(x, y)`` with no arguments (ART's default is 10 epochs); its clones keep
        this subclass, so every shadow model trains exactly as long as the target did.
        """

        def fit(self, x, y, batch_size: int = purchase_task.BATCH_SIZE, nb_epochs: int = purchase_task.EPOCHS, **kw):
            return super().fit(x, y, batch_size=batch_size, nb_epochs=nb_epochs, **kw)

    return MembershipInferenceBlackBox, ShadowModels, PyTorchClassifier, TrainedLikeTarget


def art_classifier(cls, module: torch.nn.Module):
    optimiser = torch.optim.Adam(module.parameters(), lr=purchase_task.LEARNING_RATE)
    return cls(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=optimiser,
        input_shape=(purchase_task.N_FEATURES,),
        nb_classes=purchase_task.N_CLASSES,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=16, help="reference / shadow models for both tools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a quarter of the data and 4 models, for a smoke run")
    parser.add_argument(
        "--art-models",
        default="rf",
        help="ART attack-model types, comma-separated, from rf and nn. nn is left out by default: with ART's"
        " defaults (100 epochs, batches of 100) on 16 shadow models' 160,000 predictions it ran for more than"
        " 18 minutes here without finishing, while rf takes about a minute",
    )
    parser.add_argument("--work", default=".membershield/bench-audit-speed")
    args = parser.parse_args()
    MembershipInferenceBlackBox, ShadowModels, PyTorchClassifier, TrainedLikeTarget = art_classes()
    import art

    n_members, n_population = (1250, 2500) if args.quick else (5000, 10000)
    references = 4 if args.quick else args.references
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    data.mkdir(parents=True)
    start_all = time.perf_counter()

    X, y = purchase_task.purchase_like(2 * n_members + n_population, seed=args.seed)
    parts = {
        "members": (X[:n_members], y[:n_members]),
        "nonmembers": (X[n_members : 2 * n_members], y[n_members : 2 * n_members]),
        "population": (X[2 * n_members :], y[2 * n_members :]),
    }
    for name, (x_part, y_part) in parts.items():
        purchase_task.write_parquet(data / f"{name}.parquet", x_part, y_part)
    (xm, ym), (xn, yn), (xp, yp) = parts["members"], parts["nonmembers"], parts["population"]

    clock = time.perf_counter()
    target = purchase_task.recipe(xm, ym, n_classes=purchase_task.N_CLASSES, seed=args.seed)
    target_seconds = time.perf_counter() - clock
    with torch.no_grad():
        train_acc = float((target(torch.from_numpy(xm)).argmax(1).numpy() == ym).mean())
        holdout_acc = float((target(torch.from_numpy(xn)).argmax(1).numpy() == yn).mean())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average {load()} at start;"
        f" python {platform.python_version()}, ART {art.__version__}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads)"
    )
    print(
        f"task: {n_members} members / {n_members} non-members / {n_population} population, Purchase100-like,"
        f" seed {args.seed}; target trained in {target_seconds:.1f} s (not counted for either tool),"
        f" train accuracy {train_acc:.3f}, holdout accuracy {holdout_acc:.3f}",
        flush=True,
    )

    # membershield: the whole audit, with an empty cache so every reference model is trained in the timing.
    loaded = LoadedModel(
        target=TorchTarget(target, np.arange(purchase_task.N_CLASSES)),
        recipe=load_recipe(RECIPE),
        kind="torch",
        spec=RECIPE,
        sha256=module_sha256(target),
    )
    config = AuditConfig(
        model=RECIPE,
        train=str(data / "members.parquet"),
        holdout=str(data / "nonmembers.parquet"),
        population=str(data / "population.parquet"),
        label_column="y",
        attacks=ATTACKS,
        references=references,
        seed=args.seed,
        out=str(work / "audit"),
        cache=str(work / "cache"),
    )
    clock = time.perf_counter()
    run = run_audit(config, model=loaded)
    audit_seconds = time.perf_counter() - clock
    timings = run.result.timings
    per_reference = timings["references"] / references
    print(
        f"membershield: audit {audit_seconds:.1f} s end to end; {references} references trained in"
        f" {timings['references']:.1f} s ({per_reference:.2f} s each, trainer"
        f" {run.result.references.get('trainer', 'auto')}), attacks {timings['attacks']:.1f} s",
        flush=True,
    )
    frame = run.scores
    audit_rows = frame.index[frame["source"].isin(["members", "nonmembers"])].to_numpy()
    is_member = frame.loc[audit_rows, "is_member"].to_numpy(dtype=bool)
    rows: list[Row] = [
        measure("membershield", a.name, frame.loc[audit_rows, a.name].to_numpy(), is_member, a.seconds, audit_seconds)
        for a in run.result.attacks
    ]

    # ART: shadow models once (timed), then each attack-model type's fit and infer on top.
    torch.manual_seed(args.seed)
    template = art_classifier(TrainedLikeTarget, purchase_task.build(xp, yp, purchase_task.N_CLASSES, args.seed))
    clock = time.perf_counter()
    shadows = ShadowModels(template, num_shadow_models=references, disjoint_datasets=False, random_state=args.seed)
    (sx_in, sy_in, sp_in), (sx_out, sy_out, sp_out) = shadows.generate_shadow_dataset(xp, yp)
    shadow_seconds = time.perf_counter() - clock
    print(f"ART: {references} shadow models trained in {shadow_seconds:.1f} s", flush=True)
    target_for_art = art_classifier(PyTorchClassifier, target)
    x_audit = np.concatenate([xm, xn])
    y_audit = np.concatenate([ym, yn])
    art_member = np.concatenate([np.ones(len(xm), bool), np.zeros(len(xn), bool)])
    threads = torch.get_num_threads()
    kinds = [k.strip() for k in args.art_models.split(",") if k.strip()]
    if not kinds or set(kinds) - set(ART_ATTACK_MODELS):
        sys.exit(f"--art-models takes a comma-separated list from {', '.join(ART_ATTACK_MODELS)}")
    for kind in kinds:
        np.random.seed(args.seed)  # ART's rf model takes its randomness from numpy's global state
        torch.manual_seed(args.seed)
        # ART's nn attack model trains in batches of 100: one thread is its fastest setting here.
        torch.set_num_threads(1)
        clock = time.perf_counter()
        attack = MembershipInferenceBlackBox(target_for_art, input_type="prediction", attack_model_type=kind)
        attack.fit(x=sx_in, y=sy_in, test_x=sx_out, test_y=sy_out, pred=sp_in, test_pred=sp_out)
        scores = np.asarray(attack.infer(x_audit, y_audit, probabilities=True), dtype=np.float64).reshape(-1)
        seconds = time.perf_counter() - clock
        torch.set_num_threads(threads)
        rows.append(
            measure(
                "ART", f"ShadowModels({references}) + {kind}", scores, art_member, seconds, shadow_seconds + seconds
            )
        )
        print(f"ART {kind}: attack fit + infer {seconds:.1f} s", flush=True)

    print()
    print(
        f"Scored on all {int(is_member.sum())} members and {int((~is_member).sum())} non-members."
        " 'attack s': membershield, the attack alone on shared reference outputs; ART, attack-model fit +"
        " infer. 'end-to-end s': membershield, the whole audit; ART, shadow models + attack model."
    )
    print()
    print(table(rows))
    print()
    ours = [r for r in rows if r.tool == "membershield"]
    theirs = [r for r in rows if r.tool == "ART"]
    fastest_art = min(theirs, key=lambda r: r.total_seconds)
    print(
        f"speed: membershield audit {audit_seconds:.1f} s vs fastest ART ({fastest_art.attack})"
        f" {fastest_art.total_seconds:.1f} s: {fastest_art.total_seconds / audit_seconds:.1f}x faster"
        " (target >= 10x)"
    )
    print(
        f"per reference: {per_reference:.2f} s vs ART's {shadow_seconds / references:.2f} s per shadow model"
        f" ({shadow_seconds / references / per_reference:.1f}x) and ML Privacy Meter's ~"
        f"{ML_PRIVACY_METER_SECONDS_PER_REFERENCE:.0f} s"
        f" ({ML_PRIVACY_METER_SECONDS_PER_REFERENCE / per_reference:.1f}x; target >= 5x)"
    )
    for fpr_index, label in ((0, "0.1%"), (1, "1%")):
        best_ours = max(ours, key=lambda r: r.rates[fpr_index].tpr or 0.0)
        best_art = max(theirs, key=lambda r: r.rates[fpr_index].tpr or 0.0)
        a, b = best_ours.rates[fpr_index], best_art.rates[fpr_index]
        if not a.measurable or not b.measurable:
            print(f"TPR @ {label} FPR: not measurable on this many non-members")
            continue
        ratio = "undefined (ART's is 0)" if b.tpr == 0 else f"{a.tpr / b.tpr:.1f}x"
        print(
            f"TPR @ {label} FPR: membershield {best_ours.attack} {fmt_rate(a)} vs ART {best_art.attack}"
            f" {fmt_rate(b)}: {ratio}" + (" (target >= 30x)" if fpr_index == 0 else "")
        )
    print()
    print(
        f"total benchmark wall time {time.perf_counter() - start_all:.1f} s ({date.today().isoformat()});"
        f" load average {load()} at the end"
    )


if __name__ == "__main__":
    main()
