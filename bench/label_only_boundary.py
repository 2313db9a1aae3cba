"""The label-only boundary-distance search: membershield's (all records at once) against IBM ART's
``LabelOnlyDecisionBoundary`` (HopSkipJump, one record after another), on the same model and records, in
one run.

Target: the unregularised digits MLP of the test suite (``StandardScaler`` + ``MLPClassifier(128)``,
``alpha=0``), trained on 600 of scikit-learn's bundled handwritten digits; 600 other digits are the
non-members, the remaining 597 the population. Nothing is downloaded.

Both searches work in the same space: every pixel that varies, in units of its standard deviation over the
1,797 digits, clipped to the range it takes there (membershield's own space; ART gets the model through a
wrapper that maps these points back to pixels, with that box as its ``clip_values``). A wrapper counts the
records each tool asks the model about, so queries per record are measured, not assumed. Both take the
same records: ``--records`` members and as many non-members.

* membershield: :func:`membershield.boundary_search.boundary_distances` with ``--queries`` per record (the
  attack's default 100), the first of them the record itself.
* ART at a similar budget: HopSkipJump with ``max_iter=3, max_eval=20, init_eval=12, init_size=20``.
* ART as its attack is configured by default (HopSkipJump's defaults: ``max_iter=50, max_eval=10000,
  init_eval=100, init_size=100``), on the first ``--art-default-records`` members and non-members only
  (about half a second a record here); its time for the whole table is extrapolated from them.

ART's ``infer(..., probabilities=True)`` returns ``sigmoid(distance - tau)``; with ``tau`` = 20 the distance
is read back as ``tau + logit(p)``, exact until ``p`` rounds to 1 in float32 (distances beyond about 36,
counted as ``saturated``). AUC is each tool's raw distance (larger = member, a wrong label 0; no
calibration, which ART does not have), with DeLong's 95% interval (``membershield.metrics``), on the
records each searched. ``--sweep`` adds membershield's full attack through the audit (label-only target,
population calibration, no reference models) at budgets 25, 50, 100 and 200 on all 1,200 audit records.

ART is needed only here, not by membershield:

    .venv/bin/pip install 'torch==2.13.0' 'adversarial-robustness-toolbox==1.20.1'
    .venv/bin/python bench/label_only_boundary.py [--records 600] [--art-default-records 25] [--queries 100] [--sweep]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from membershield import metrics
from membershield.boundary_search import boundary_distances

ART_MATCHED = {"max_iter": 3, "max_eval": 20, "init_eval": 12, "init_size": 20}
ART_TAU = 20.0
N_MEMBERS = 600


@dataclass
class Digits:
    pixels: np.ndarray  # (1797, 64), members first, then non-members, then population
    labels: np.ndarray
    model: object


class CountingModel:
    """The target seen from standardised points: maps them back to pixels and counts the records asked."""

    def __init__(self, digits: Digits) -> None:
        self.model = digits.model
        self.centre, spread = digits.pixels.mean(axis=0), digits.pixels.std(axis=0)
        self.moving = spread > 0
        self.spread = spread
        self.points = (digits.pixels[:, self.moving] - self.centre[self.moving]) / spread[self.moving]
        self.classes_ = np.unique(digits.labels)
        self.n_features_in_ = int(self.moving.sum())
        self.asked = 0

    def pixels_of(self, points: np.ndarray) -> np.ndarray:
        pixels = np.tile(self.centre, (len(points), 1))
        pixels[:, self.moving] = self.centre[self.moving] + points * self.spread[self.moving]
        return pixels

    def predict_proba(self, points: np.ndarray) -> np.ndarray:
        self.asked += len(points)
        return self.model.predict_proba(self.pixels_of(np.asarray(points, dtype=np.float64)))

    def predict(self, points: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(points), axis=1)]

    def fit(self, *_args, **_kwargs) -> CountingModel:  # ART's wrapper expects one; never called here
        return self


def digits_target(seed: int) -> Digits:
    frame = load_digits(as_frame=True).frame
    order = np.random.default_rng(1).permutation(len(frame))  # the test suite's split
    pixels = frame.drop(columns="target").to_numpy(dtype=np.float64)[order]
    labels = frame["target"].to_numpy()[order]
    model = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), alpha=0.0, max_iter=200, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(pixels[:N_MEMBERS], labels[:N_MEMBERS])
    return Digits(pixels, labels, model)


def ours(counting: CountingModel, rows: np.ndarray, labels: np.ndarray, queries: int, seed: int) -> dict:
    points = counting.points
    counting.asked = 0
    start = time.perf_counter()
    predicted = counting.predict(points[rows])  # the record itself: the first query of its budget
    asked_rows = np.zeros(len(rows), dtype=np.int64)

    def oracle(probes: np.ndarray, which: np.ndarray) -> np.ndarray:
        np.add.at(asked_rows, which, 1)
        return counting.predict(probes) != labels[rows][which]

    distance = boundary_distances(
        points[rows],
        oracle,
        predicted,
        labels[rows],
        budget=queries - 1,
        seed=seed,
        low=points.min(axis=0),
        high=points.max(axis=0),
    )
    seconds = time.perf_counter() - start
    return {"distance": distance, "seconds": seconds, "asked": counting.asked, "max_per_record": 1 + asked_rows.max()}


def art(counting: CountingModel, rows: np.ndarray, labels: np.ndarray, settings: dict) -> dict:
    from art.attacks.inference.membership_inference import LabelOnlyDecisionBoundary
    from art.estimators.classification.scikitlearn import ScikitlearnClassifier

    points = counting.points
    box = (points.min(axis=0).astype(np.float32), points.max(axis=0).astype(np.float32))
    attack = LabelOnlyDecisionBoundary(ScikitlearnClassifier(model=counting, clip_values=box), ART_TAU)
    onehot = np.eye(len(counting.classes_))[np.searchsorted(counting.classes_, labels[rows])]
    counting.asked = 0
    start = time.perf_counter()
    member = attack.infer(points[rows].astype(np.float32), onehot, probabilities=True, verbose=False, **settings)[
        :, 1
    ].astype(np.float64)
    seconds = time.perf_counter() - start
    wrong = counting.model.predict(counting.pixels_of(points[rows])) != labels[rows]
    with np.errstate(divide="ignore"):
        distance = np.where(wrong, 0.0, ART_TAU + np.log(member) - np.log1p(-member))
    return {"distance": distance, "seconds": seconds, "asked": counting.asked, "saturated": int((member == 1).sum())}


def _auc(distance: np.ndarray, is_member: np.ndarray) -> str:
    score = np.where(np.isfinite(distance), distance, np.nanmax(distance[np.isfinite(distance)]) * 2)
    value, interval = metrics.auc_with_ci(score, is_member)
    return f"{value:.3f} ({interval.low:.3f}–{interval.high:.3f})"


def _row(name: str, run: dict, n: int, reference: np.ndarray | None, is_member: np.ndarray) -> str:
    ratio = ""
    if reference is not None:
        both = (run["distance"] > 0) & (reference > 0) & np.isfinite(run["distance"]) & np.isfinite(reference)
        ratio = f"{np.median(run['distance'][both] / reference[both]):.2f}"
    extra = f", {run['saturated']} saturated" if "saturated" in run else ""
    return (
        f"| {name} | {n} | {run['asked'] / n:,.0f}{extra} | {run['seconds']:.2f} | {1000 * run['seconds'] / n:.2f}"
        f" | {ratio} | {_auc(run['distance'], is_member)} |"
    )


def compare(digits: Digits, args: argparse.Namespace) -> None:
    counting = CountingModel(digits)
    n_each, n_few, n_all = args.records, args.art_default_records, len(digits.labels)
    rows = np.r_[np.arange(n_each), N_MEMBERS + np.arange(n_each)]
    is_member = np.arange(len(rows)) < n_each
    few = np.r_[np.arange(n_few), n_each + np.arange(n_few)]  # positions in ``rows``
    mine = ours(counting, rows, digits.labels, args.queries, args.seed)
    whole = ours(counting, np.arange(n_all), digits.labels, args.queries, args.seed)
    matched = art(counting, rows, digits.labels, ART_MATCHED)
    default = art(counting, rows[few], digits.labels, {})
    print("| search | records | queries per record | wall s | ms per record | median distance / ours | AUC (95% CI) |")
    print("|---|---|---|---|---|---|---|")
    print(_row(f"membershield, {args.queries} queries", mine, len(rows), None, is_member))
    print(
        f"| membershield, {args.queries} queries, all digits | {n_all} | {whole['asked'] / n_all:,.0f} |"
        f" {whole['seconds']:.2f} | {1000 * whole['seconds'] / n_all:.2f} | | |"
    )
    settings = ", ".join(f"{k}={v}" for k, v in ART_MATCHED.items())
    print(_row(f"ART, {settings}", matched, len(rows), mine["distance"], is_member))
    print(_row("ART, defaults", default, len(few), mine["distance"][few], is_member[few]))
    per_record = mine["seconds"] / len(rows)
    print(f"\nmost queries one record cost membershield: {mine['max_per_record']} (budget {args.queries})")
    print(f"time per record, ART similar budget / membershield: {matched['seconds'] / len(rows) / per_record:.0f}x")
    print(f"time per record, ART defaults / membershield: {default['seconds'] / len(few) / per_record:.0f}x")
    full = default["seconds"] / len(few) * n_all
    print(f"ART defaults on all {n_all} digits, extrapolated: {full / 60:.1f} min;", end=" ")
    print(f"membershield: {whole['seconds']:.1f} s")


def sweep(digits: Digits, seed: int) -> None:
    """The attack through the audit (label-only target, population calibration) at several budgets."""
    from membershield.audit import run_audit
    from membershield.config import AuditConfig
    from membershield.defenses import HardenedTarget, OutputPolicy
    from membershield.targets import LoadedModel
    from membershield.targets.sklearn import sklearn_target_and_recipe

    columns = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    frame = pd.DataFrame(digits.pixels, columns=columns).assign(digit=digits.labels)
    with tempfile.TemporaryDirectory() as work:
        paths = {name: Path(work) / f"{name}.csv" for name in ("members", "nonmembers", "population")}
        for path, part in zip(paths.values(), (slice(0, 600), slice(600, 1200), slice(1200, None)), strict=True):
            frame.iloc[part].to_csv(path, index=False)
        print("\n| budget | AUC (95% CI) | TPR @ 1% FPR (95% CI) | attack s |")
        print("|---|---|---|---|")
        for budget in (25, 50, 100, 200):
            target, _ = sklearn_target_and_recipe(digits.model)
            loaded = LoadedModel(HardenedTarget(target, OutputPolicy(label_only=True)), None, "sklearn", "mlp", "")
            config = AuditConfig(
                model="mlp", train=str(paths["members"]), holdout=str(paths["nonmembers"]),
                population=str(paths["population"]), label_column="digit", attacks=["label-only-boundary"],
                references=0, out=str(Path(work) / "out"), cache="", split_check=False, seed=seed,
                label_only_queries=budget,
            )  # fmt: skip
            attack = run_audit(config, model=loaded).result.attack("label-only-boundary")
            at_1 = attack.rate_at(0.01)
            print(
                f"| {budget} | {attack.auc:.3f} ({attack.auc_ci_low:.3f}–{attack.auc_ci_high:.3f}) |"
                f" {100 * at_1['tpr']:.1f}% ({100 * at_1['ci_low']:.1f}–{100 * at_1['ci_high']:.1f}) |"
                f" {attack.seconds:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600, help="members and as many non-members searched by both")
    parser.add_argument("--art-default-records", type=int, default=25, help="of each, for ART at its defaults")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also the attack through the audit at several budgets")
    args = parser.parse_args()
    if not 1 <= args.art_default_records <= args.records <= N_MEMBERS:
        parser.error("need 1 <= --art-default-records <= --records <= 600")
    import art

    load = os.getloadavg()[0]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, 1-min load {load:.2f}; ART {art.__version__}\n")
    digits = digits_target(args.seed)
    compare(digits, args)
    if args.sweep:
        sweep(digits, args.seed)
    print(f"\n1-min load at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
