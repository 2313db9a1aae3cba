"""Attack power of membershield's attacks against IBM ART's MembershipInferenceBlackBox, in one run.

Both tools attack the same target on the same records, and both are scored by the same functions
(``membershield.metrics``): AUC with its 95% DeLong interval, TPR at 0.1% and 1% FPR with 95%
Clopper-Pearson intervals, and wall time.

Data (generated here, nothing downloaded): a Purchase100-like task, binary feature vectors in many
classes. Each class has a random binary prototype; a record is its class prototype with every bit flipped
independently with probability ``--flip``. Members train the target, an unregularised scikit-learn MLP
run well past the point where it fits its training set; non-members and a population (for membershield's
reference models) come from the same distribution and are never seen by the target.

Evaluation protocol: ART's attack learns from records whose membership it is told, so members and
non-members are each split in half at random. ART trains its attack model on the first halves (``x`` =
members, ``test_x`` = non-members, as its ``fit`` expects); both tools are then scored on the second
halves only. membershield audits all records (it is told no membership; its reference models train on
random subsets of members, non-members and population alike), and its scores for the evaluation rows are
read from the audit's per-record scores.

The recipe-audit rows (``--recipe-models K``, default 16; 0 leaves them out) audit the target's training
pipeline rather than the target: K clones of its MLP train on random halves of the 5,000 members and
non-members, each is attacked with the others as references, and the K x 5,000 trials are pooled, with
two-way clustered bootstrap intervals (``membershield audit --recipe model.joblib --data pool.csv``).
They measure another thing than the rows above (the pipeline, on all records, not one model on the
evaluation halves), which is why TPR at 0.1% FPR becomes measurable there; ``--recipe-only`` runs them
without ART.

ART is needed only here, not by membershield:

    .venv/bin/pip install adversarial-robustness-toolbox packaging
    .venv/bin/python bench/attack_power.py [--references 16] [--seed 0] [--quick] [--work DIR]
    .venv/bin/python bench/attack_power.py --recipe-only [--recipe-models 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from membershield import metrics
from membershield.attacks import DEFAULT_ATTACKS
from membershield.audit import run_audit, run_recipe_audit
from membershield.config import AuditConfig

FPRS = (0.001, 0.01)
ART_MODELS = ("nn", "rf", "gb")
ART_HINT = "this benchmark needs IBM ART: .venv/bin/pip install adversarial-robustness-toolbox packaging"


@dataclass(frozen=True)
class Size:
    members: int
    nonmembers: int
    population: int
    features: int
    classes: int
    hidden: int
    epochs: int


FULL = Size(members=2500, nonmembers=2500, population=2500, features=600, classes=100, hidden=128, epochs=40)
QUICK = Size(members=1000, nonmembers=1000, population=1000, features=300, classes=50, hidden=128, epochs=40)


@dataclass
class Row:
    tool: str
    attack: str
    auc: float
    auc_low: float
    auc_high: float
    rates: list[metrics.TprAtFpr]
    own_seconds: float
    total_seconds: float


def recipe_rows(size: Size, args: argparse.Namespace, work: Path) -> list[Row]:
    """The recipe audit of the target's pipeline on members + non-members: LiRA and RMIA rows, pooled."""
    parts = make_task(size, args.flip, args.seed)
    (xm, ym), (xn, yn) = parts["members"], parts["nonmembers"]
    data = work / "recipe"
    data.mkdir(parents=True, exist_ok=True)
    write_csv(data / "pool.csv", np.concatenate([xm, xn]), np.concatenate([ym, yn]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # only the hyper-parameters matter: its clones train
        joblib.dump(target_model(size, args.seed).fit(xm[:200], ym[:200]), data / "model.joblib")
    config = AuditConfig(
        recipe=str(data / "model.joblib"), data=str(data / "pool.csv"), label_column="y", models=args.recipe_models,
        attacks=["lira", "rmia"], seed=args.seed, out=str(work / "recipe-audit"), cache="", backend=args.backend,
        fprs=list(FPRS),
    )  # fmt: skip
    clock = time.perf_counter()
    run = run_recipe_audit(config)
    seconds = time.perf_counter() - clock
    game, references = run.result.game, run.result.references
    print(
        f"membershield recipe audit: {game['n_models']} models x {game['n_records']} records = {game['n_trials']}"
        f" trials in {seconds:.1f} s ({references['seconds_training']:.1f} s training,"
        f" {references['seconds_training'] / max(references['trained'], 1):.2f} s per model with backend"
        f" '{args.backend}')",
        flush=True,
    )
    return [
        Row(
            "membershield recipe audit",
            f"{a.name} ({game['n_models']} models, pooled, clustered CI)",
            a.auc,
            a.auc_ci_low,
            a.auc_ci_high,
            [metrics.TprAtFpr(**r) for r in a.tpr_at_fpr],
            a.seconds,
            seconds,
        )
        for a in run.result.attacks
    ]


def load() -> str:
    """The 1-minute load average: other work on the machine inflates every wall time here."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"


def import_art():
    try:
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import SklearnClassifier
    except ImportError as exc:
        sys.exit(f"{ART_HINT}\n(import failed: {exc})")
    return MembershipInferenceBlackBox, SklearnClassifier


def make_task(size: Size, flip: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Members, non-members and population as (x, y); every class appears equally often in each."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((size.classes, size.features)) < 0.5

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.resize(np.arange(size.classes), n))
        x = prototypes[y] ^ (rng.random((n, size.features)) < flip)
        return x.astype(np.float64), y.astype(np.int64)

    return {
        "members": draw(size.members),
        "nonmembers": draw(size.nonmembers),
        "population": draw(size.population),
    }


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    frame = pd.DataFrame(x.astype(np.int8), columns=[f"f{j}" for j in range(x.shape[1])])
    frame["y"] = y
    frame.to_csv(path, index=False)


def target_model(size: Size, seed: int) -> MLPClassifier:
    # No weight decay and a fixed number of epochs with a tolerance it never meets: the model fits its
    # training records exactly and keeps pushing their confidence up, i.e. it memorises.
    return MLPClassifier(
        hidden_layer_sizes=(size.hidden,), alpha=0.0, max_iter=size.epochs, tol=1e-9, random_state=seed
    )


def halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def measure(tool: str, attack: str, scores: np.ndarray, is_member: np.ndarray, own: float, total: float) -> Row:
    value, interval = metrics.auc_with_ci(scores, is_member)
    rates = [metrics.tpr_at_fpr(scores, is_member, f) for f in FPRS]
    return Row(tool, attack, value, interval.low, interval.high, rates, own, total)


def fmt_rate(rate: metrics.TprAtFpr) -> str:
    if not rate.measurable or rate.tpr is None:
        return "not measurable"
    return f"{100 * rate.tpr:.2f}% [{100 * rate.ci_low:.2f}, {100 * rate.ci_high:.2f}]"


def table(rows: list[Row]) -> str:
    head = (
        "| tool | attack | AUC [95% CI] | TPR @ 0.1% FPR [95% CI] | TPR @ 1% FPR [95% CI] | attack s | end-to-end s |"
    )
    lines = [head, "|---|---|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.tool} | {r.attack} | {r.auc:.4f} [{r.auc_low:.4f}, {r.auc_high:.4f}] |"
            f" {fmt_rate(r.rates[0])} | {fmt_rate(r.rates[1])} | {r.own_seconds:.1f} | {r.total_seconds:.1f} |"
        )
    return "\n".join(lines)


def ratio_line(name: str, ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return f"{name}: not measurable for one of the tools"
    if theirs == 0:
        return f"{name}: membershield {ours:.4f} vs ART {theirs:.4f} (ART is zero: ratio undefined)"
    return f"{name}: membershield {ours:.4f} / ART {theirs:.4f} = {ours / theirs:.2f}x"


def ratios(rows: list[Row]) -> list[str]:
    """Best of each tool per metric (each tool gets the maximum over its own variants), then vs ART's default."""
    ours = [r for r in rows if r.tool == "membershield"]
    art = [r for r in rows if r.tool == "ART"]
    default = next(r for r in art if r.attack.startswith("nn"))
    out = []

    def tpr(r: Row, i: int) -> float | None:
        return r.rates[i].tpr if r.rates[i].measurable else None

    def best(group: list[Row], key) -> Row:
        return max(group, key=lambda r: -1.0 if key(r) is None else key(r))

    for label, key in (
        ("AUC", lambda r: r.auc),
        ("TPR @ 0.1% FPR", lambda r: tpr(r, 0)),
        ("TPR @ 1% FPR", lambda r: tpr(r, 1)),
    ):
        b_ours, b_art = best(ours, key), best(art, key)
        if key(b_ours) is None and key(b_art) is None:
            out.append(f"{label}: not measurable on this many non-members")
            continue
        out.append(
            ratio_line(f"{label}, best vs best ({b_ours.attack} vs ART {b_art.attack})", key(b_ours), key(b_art))
        )
        out.append(
            ratio_line(
                f"{label}, best vs ART default ({b_ours.attack} vs ART {default.attack})", key(b_ours), key(default)
            )
        )
    fastest_art = min(art, key=lambda r: r.total_seconds)
    audit = ours[0].total_seconds
    out.append(
        f"wall time: membershield audit {audit:.1f} s (all attacks, references trained from scratch)"
        f" = {audit / default.total_seconds:.2f}x ART {default.attack} ({default.total_seconds:.1f} s)"
        f" and {audit / fastest_art.total_seconds:.1f}x ART {fastest_art.attack} ({fastest_art.total_seconds:.1f} s)"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=None, help="membershield reference models (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smaller task and 4 references, for a smoke run")
    parser.add_argument("--flip", type=float, default=0.38, help="bit-flip probability around each class prototype")
    parser.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), help="membershield attacks to run")
    parser.add_argument("--backend", default="processes", help="membershield backend for reference training")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for ART's nn attack model (0: torch's default)",
    )
    parser.add_argument("--work", default=".membershield/bench-attack-power")
    parser.add_argument("--recipe-models", type=int, default=16, help="models of the recipe-audit rows (0: none)")
    parser.add_argument("--recipe-only", action="store_true", help="only the recipe-audit rows (no ART needed)")
    args = parser.parse_args()
    if args.recipe_only:
        rows = recipe_rows(QUICK if args.quick else FULL, args, Path(args.work))
        print(table(rows))
        return
    MembershipInferenceBlackBox, SklearnClassifier = import_art()
    import art
    import torch

    if args.torch_threads > 0:
        # ART's default attack model is a small torch network trained in batches of 100. On a 2-core machine
        # that also runs other work, torch's default two threads made the same fit take 104 s instead of
        # 10.6 s with one thread, and the scores are the same: one thread is ART's best case here.
        torch.set_num_threads(args.torch_threads)
    size = QUICK if args.quick else FULL
    references = args.references if args.references is not None else (4 if args.quick else 16)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    start_all = time.perf_counter()

    parts = make_task(size, args.flip, args.seed)
    for name, (x, y) in parts.items():
        write_csv(work / "data" / f"{name}.csv", x, y)
    (xm, ym), (xn, yn) = parts["members"], parts["nonmembers"]
    clock = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = target_model(size, args.seed).fit(xm, ym)
    target_seconds = time.perf_counter() - clock
    joblib.dump(model, work / "data" / "model.joblib")
    train_acc, holdout_acc = model.score(xm, ym), model.score(xn, yn)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average {load()} at start;"
        f" python {platform.python_version()}, ART {art.__version__}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} thread(s))"
    )
    print(
        f"task: {size.members} members / {size.nonmembers} non-members / {size.population} population,"
        f" {size.features} binary features, {size.classes} classes, bit-flip {args.flip}, seed {args.seed}"
    )
    print(
        f"target: MLP({size.hidden}), alpha=0, {size.epochs} epochs, trained in {target_seconds:.1f} s;"
        f" train accuracy {train_acc:.3f}, holdout accuracy {holdout_acc:.3f}"
    )

    rng = np.random.default_rng(args.seed + 1)
    m_fit, m_eval = halves(size.members, rng)
    n_fit, n_eval = halves(size.nonmembers, rng)
    print(
        f"protocol: ART trains its attack model on {len(m_fit)} members + {len(n_fit)} non-members;"
        f" both tools are scored on the other {len(m_eval)} members + {len(n_eval)} non-members only"
    )
    print(
        f"          (TPR at 0.1% FPR admits {int(0.001 * len(n_eval))} false positive(s) among {len(n_eval)})",
        flush=True,
    )

    # membershield: one audit, all attacks, references trained from scratch (no cache) so the time is honest.
    data = work / "data"
    config = AuditConfig(
        model=str(data / "model.joblib"),
        train=str(data / "members.csv"),
        holdout=str(data / "nonmembers.csv"),
        population=str(data / "population.csv"),
        label_column="y",
        attacks=args.attacks.split(","),
        references=references,
        seed=args.seed,
        out=str(work / "audit"),
        cache="",
        split_check=False,
        backend=args.backend,
    )
    clock = time.perf_counter()
    run = run_audit(config)
    audit_seconds = time.perf_counter() - clock
    timings = run.result.timings
    print(
        f"membershield: audit {audit_seconds:.1f} s ({references} reference models trained in"
        f" {timings['references']:.1f} s with backend '{args.backend}', attacks {timings['attacks']:.1f} s)",
        flush=True,
    )

    frame = run.scores
    members_rows = frame.index[frame["source"] == "members"].to_numpy()
    nonmember_rows = frame.index[frame["source"] == "nonmembers"].to_numpy()
    for rows_of_source in (members_rows, nonmember_rows):  # rows of each file, in file order
        assert (frame.loc[rows_of_source, "row"].to_numpy() == np.arange(len(rows_of_source))).all()
    evaluation = np.concatenate([members_rows[m_eval], nonmember_rows[n_eval]])
    is_member = frame.loc[evaluation, "is_member"].to_numpy(dtype=bool)
    assert is_member.sum() == len(m_eval)
    rows = [
        measure("membershield", a.name, frame.loc[evaluation, a.name].to_numpy(), is_member, a.seconds, audit_seconds)
        for a in run.result.attacks
    ]

    if args.recipe_models:
        rows += recipe_rows(size, args, work)

    # ART: each attack-model type its fit (on the first halves) and infer (on the evaluation halves).
    x_eval = np.concatenate([xm[m_eval], xn[n_eval]])
    y_eval = np.concatenate([ym[m_eval], yn[n_eval]])
    art_member = np.concatenate([np.ones(len(m_eval), bool), np.zeros(len(n_eval), bool)])
    for kind in ART_MODELS:
        np.random.seed(args.seed)  # ART's rf/gb models take their randomness from numpy's global state
        torch.manual_seed(args.seed)
        clock = time.perf_counter()
        classifier = SklearnClassifier(model=model)
        attack = MembershipInferenceBlackBox(classifier, input_type="prediction", attack_model_type=kind)
        attack.fit(x=xm[m_fit], y=ym[m_fit], test_x=xn[n_fit], test_y=yn[n_fit])
        scores = np.asarray(attack.infer(x_eval, y_eval, probabilities=True), dtype=np.float64).reshape(-1)
        seconds = time.perf_counter() - clock
        rows.append(measure("ART", f"{kind} (prediction + label)", scores, art_member, seconds, seconds))
        print(
            f"ART {kind}: {seconds:.1f} s; {len(np.unique(scores))} distinct scores on {len(scores)} records",
            flush=True,
        )

    print()
    print(
        f"Attack power on the evaluation halves ({len(m_eval)} members, {len(n_eval)} non-members)."
        " 'attack s': membershield, the attack alone on shared reference outputs; ART, attack-model fit + infer."
        f" 'end-to-end s': membershield, the whole audit including training {references} reference models."
    )
    print()
    print(table(rows))
    print()
    for line in ratios(rows):
        print(line)
    print()
    print(
        f"total benchmark wall time {time.perf_counter() - start_all:.1f} s ({date.today().isoformat()});"
        f" load average {load()} at the end"
    )


if __name__ == "__main__":
    main()
