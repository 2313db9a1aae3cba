"""Synthetic-data audits of real generators on a real table (``membershield audit-synthetic``).

The student placements table that SDMetrics ships (215 real records, mixed types, missing values;
``examples/synthetic_data.py``) is split at random into 107 training and 108 holdout records; each
generator is fitted on the training records, samples 107 synthetic records, and is audited with every
attack, the generator itself refitted for the shadow-generators attack, and anonymeter. A jitter copy of
the training records is the leaky control.

    .venv/bin/python bench/synthetic_audit.py [--generators sdv:gaussian-copula sdv:ctgan:epochs=30 ...]
        [--shadows 4] [--seed 0] [--torch-threads 1] [--out bench-synthetic]

Prints one Markdown row per generator and attack: AUC with its 95% interval, TPR at 10% FPR, the DCR risk
and anonymeter's risks, and the wall time of the audit.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from synthetic_data import slug, split, student_placements  # noqa: E402

from membershield.result import rate_in  # noqa: E402
from membershield.synthetic.audit import SyntheticAuditConfig, run_synthetic_audit  # noqa: E402
from membershield.synthetic.generators import generate, parse_generator  # noqa: E402
from membershield.synthetic.tables import typed  # noqa: E402

DEFAULT = [
    "examples/synthetic_generators.py:jitter_copy",
    "sdv:gaussian-copula",
    "sdv:ctgan:epochs=30",
    "sdv:ctgan:epochs=1500",
]


def _risk(entry: dict | None) -> str:
    if not entry or entry.get("risk") is None:
        return "n/a"
    return f"{entry['risk']:.2f} ({entry['ci_low']:.2f}–{entry['ci_high']:.2f})"


def _rows(spec: str, document: dict, seconds: float) -> list[str]:
    anonymeter = document.get("anonymeter") or {}
    risks = " / ".join(_risk(anonymeter.get(k)) for k in ("singling_out", "linkability", "inference"))
    rows = []
    for attack in document["attacks"]:
        rate = rate_in(attack["tpr_at_fpr"], 0.1) or {}
        tpr = (
            f"{100 * rate['tpr']:.1f} ({100 * rate['ci_low']:.1f}–{100 * rate['ci_high']:.1f})"
            if rate.get("tpr") is not None
            else "n/m"
        )
        auc = f"{attack['auc']:.3f} ({attack['auc_ci_low']:.3f}–{attack['auc_ci_high']:.3f})"
        rows.append(f"| `{spec}` | {attack['name']} | {auc} | {tpr} |")
    risk = _risk(document["synthetic"]["dcr_risk"])
    rows.append(
        f"| `{spec}` | DCR risk {risk}; anonymeter singling-out / linkability / inference {risks} | | {seconds:.0f} s |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=DEFAULT, help="generator specs, separated by spaces")
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-synthetic"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train, holdout = split(student_placements(), args.seed)
    train.to_csv(args.out / "train.csv", index=False)
    holdout.to_csv(args.out / "holdout.csv", index=False)
    records, numeric = typed(pd.read_csv(args.out / "train.csv"))
    print(
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.2f} at start"
    )
    print(f"- Date: {date.today()}; {len(records)} training, {len(holdout)} holdout records; seed {args.seed}\n")
    print("| generator | attack | AUC (95% CI) | TPR % @ 10% FPR (95% CI) |\n|---|---|---:|---:|")
    for spec in args.generators:
        spec = str(ROOT / spec) if ".py:" in spec else spec
        start = time.perf_counter()
        synthetic = generate(parse_generator(spec), records, len(records), seed=args.seed, numeric=numeric)
        path = args.out / f"{slug(Path(spec).name)}.csv"
        synthetic.to_csv(path, index=False)
        config = SyntheticAuditConfig(
            train=str(args.out / "train.csv"),
            holdout=str(args.out / "holdout.csv"),
            synthetic=str(path),
            generator=spec,
            label_column="placed",
            attack_options={"shadow-generators": {"shadows": args.shadows}},
            out=str(args.out / slug(Path(spec).name)),
            seed=args.seed,
        )
        document = run_synthetic_audit(config).result.to_dict()
        for row in _rows(Path(spec).name if ".py:" in spec else spec, document, time.perf_counter() - start):
            print(row, flush=True)
    print(f"\n- load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
