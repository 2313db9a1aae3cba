"""Inputs for ``membershield audit-synthetic`` from a real table: the student placements records that SDMetrics
ships (215 students of one business school: grades, specialisations, work experience, placement and salary,
with missing salaries and dates; MIT licence), split at random into the records a generator is fitted on
(``train.csv``) and records it never sees (``holdout.csv``), and one synthetic file per generator.

    .venv/bin/python examples/synthetic_data.py synthetic-data sdv:gaussian-copula sdv:ctgan:epochs=300

writes ``synthetic-data/train.csv``, ``holdout.csv`` and ``gaussian-copula.csv``, ``ctgan-epochs-300.csv``
(each with as many records as the training file). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from membershield.synthetic.generators import generate, parse_generator
from membershield.synthetic.tables import typed

DROPPED = ["student_id", "start_date", "end_date"]  # an identifier, and dates the audit would read as categories


def student_placements() -> pd.DataFrame:
    """The real student placements table as SDMetrics ships it, without its identifier and its two dates
    (``duration`` keeps the months between them)."""
    path = resources.files("sdmetrics") / "demos" / "single_table" / "student_placements_real.csv"
    return pd.read_csv(str(path)).drop(columns=DROPPED)


def split(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random half of the records for training, the rest held out."""
    order = np.random.default_rng(seed).permutation(len(table))
    half = len(table) // 2
    return table.iloc[np.sort(order[:half])], table.iloc[np.sort(order[half:])]


def slug(spec: str) -> str:
    """A file name for a generator spec: ``sdv:ctgan:epochs=300`` -> ``ctgan-epochs-300``."""
    return re.sub(r"[^a-z0-9]+", "-", spec.removeprefix("sdv:").lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("generators", nargs="*", default=["sdv:gaussian-copula"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, holdout = split(student_placements(), args.seed)
    train.to_csv(args.out / "train.csv", index=False)
    holdout.to_csv(args.out / "holdout.csv", index=False)
    records, numeric = typed(pd.read_csv(args.out / "train.csv"))
    for spec in args.generators:
        synthetic = generate(parse_generator(spec), records, len(records), seed=args.seed, numeric=numeric)
        synthetic.to_csv(args.out / f"{slug(spec)}.csv", index=False)
        print(f"wrote {args.out / (slug(spec) + '.csv')}: {len(synthetic)} records of {spec} fitted on {len(records)}")


if __name__ == "__main__":
    main()
