"""The tables of a synthetic-data audit, read and checked against each other.

Members are the real records the generator was fitted on (``--train``), non-members real records it never
saw (``--holdout``), the synthetic records its output (``--synthetic``), and an optional population more
real records it never saw (``--population``). All must have the same columns (their order may differ;
the training file's order is kept). A column is numeric when it is numeric in every real file, else
categorical; every table is then brought to the same types: numeric columns as float64 (missing as NaN),
categorical ones as text (missing as None), so ``1`` in one file is ``1`` in another, not ``1.0``.

A record in both real sides is refused as in model audits (``--drop-overlap`` removes it from both); a
population record that is also a member or a non-member is removed from the population, with a warning.
Synthetic records that are verbatim real records are counted (:class:`ExactCopies`): a synthetic file
that is a copy of the training file is the finding, said plainly, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield.data.io import load_table
from membershield.data.overlap import find_overlap, overlap_message, row_hashes
from membershield.data.pool import fingerprint_frame
from membershield.errors import InputDataError

COPY_SHARE = 0.99  # at least this share of synthetic records verbatim training records: a copy of the file


@dataclass(frozen=True)
class ExactCopies:
    """Synthetic records that are verbatim real records."""

    n_synthetic: int
    of_train: int  # synthetic records equal to some training record
    of_holdout: int  # synthetic records equal to some holdout record
    train_reproduced: int  # training records that occur verbatim among the synthetic ones
    n_train: int
    n_holdout: int

    @property
    def is_copy(self) -> bool:
        """Whether the synthetic file is (almost) the training file: nearly every synthetic record is a
        training record and nearly every training record is there."""
        return self.of_train >= COPY_SHARE * self.n_synthetic and self.train_reproduced >= COPY_SHARE * self.n_train

    def finding(self) -> str | None:
        """The sentence the audit leads with when synthetic records copy training records beyond what the
        holdout shows; None otherwise."""
        counts = (
            f"{self.of_train} of {self.n_synthetic} synthetic records ({100 * self.of_train / self.n_synthetic:.1f}%)"
            f" are training records verbatim, reproducing {self.train_reproduced} of the {self.n_train} training"
            f" records; {self.of_holdout} are holdout records verbatim"
        )
        if self.is_copy:
            return (
                f"THE SYNTHETIC FILE IS A COPY OF THE TRAINING FILE: {counts}. Releasing it releases the training data."
            )
        if self.copies_beyond_holdout:
            return f"Synthetic records copy training records beyond what the holdout shows: {counts}."
        return None

    @property
    def copies_beyond_holdout(self) -> bool:
        """Whether verbatim copies come from the training records more often than their share of the real
        records explains (one-sided binomial test, p < 0.01): a discrete table repeats records by chance, on
        both sides alike."""
        from scipy.stats import binomtest

        copies = self.of_train + self.of_holdout
        if copies == 0:
            return False
        share = self.n_train / (self.n_train + self.n_holdout)
        return bool(binomtest(self.of_train, copies, share, alternative="greater").pvalue < 0.01)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_synthetic": self.n_synthetic,
            "of_train": self.of_train,
            "of_holdout": self.of_holdout,
            "train_reproduced": self.train_reproduced,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "is_copy_of_train": self.is_copy,
            "copies_beyond_holdout": self.copies_beyond_holdout,
        }


@dataclass(frozen=True)
class SyntheticTables:
    """The checked tables, every one with the same columns and types."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    synthetic: pd.DataFrame
    population: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    paths: dict[str, str]
    copies: ExactCopies
    fingerprints: dict[str, str]  # of each file as read (lineage re-reads the files to compare)
    rows: dict[str, np.ndarray]  # the file row (from 0) of each kept member and non-member
    overlap_dropped: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.train.columns)

    @property
    def records(self) -> pd.DataFrame:
        """The audit records: members, then non-members."""
        return pd.concat([self.train, self.holdout], ignore_index=True)

    @property
    def real(self) -> pd.DataFrame:
        """Every real record: members, non-members, then population."""
        return pd.concat([self.train, self.holdout, self.population], ignore_index=True)


def _text(value: Any) -> str | None:
    """A categorical value as text (whole floats without ``.0``), missing as None.

    >>> _text(3.0), _text("a"), _text(float("nan")), _text(True)
    ('3', 'a', None, 'True')
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def conform(frame: pd.DataFrame, numeric: tuple[str, ...], where: str) -> pd.DataFrame:
    """``frame`` with the audit's types (the ``numeric`` columns as float64, every other one as text or None);
    a numeric column holding text is an error."""
    out: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if name in numeric:
            values = pd.to_numeric(column, errors="coerce")
            bad = values.isna() & column.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputDataError(
                    f"{where}: column '{name}' is numeric in the real records but row {row} holds"
                    f" '{column.iloc[row]}'; give numbers (or leave the value empty)"
                )
            out[name] = pd.Series(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        else:  # object, not pandas' str dtype, which would turn None into NaN
            out[name] = pd.Series([_text(v) for v in column], dtype=object)
    return pd.DataFrame(out, columns=list(frame.columns))


def typed(frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """One table with the audit's types on its own (numeric columns those numeric in it), and those columns:
    what a generator is fitted on outside an audit (the examples, the benchmark).

    >>> frame, numeric = typed(pd.DataFrame({"x": [1, 2], "ok": [True, False], "c": ["a", None]}))
    >>> numeric, frame["ok"].tolist(), frame["c"].tolist()
    (('x',), ['True', 'False'], ['a', None])
    """
    numeric = tuple(c for c in frame.columns if _is_numeric(frame[c]))
    return conform(frame, numeric, "table"), numeric


def _check_columns(frames: dict[str, pd.DataFrame], paths: dict[str, str]) -> list[str]:
    reference = list(frames["train"].columns)
    for side, frame in frames.items():
        extra = [c for c in frame.columns if c not in reference]
        lacking = [c for c in reference if c not in frame.columns]
        if extra or lacking:
            parts = ([f"has {', '.join(extra)} that {paths['train']} lacks"] if extra else []) + (
                [f"lacks {', '.join(lacking)}"] if lacking else []
            )
            raise InputDataError(
                f"--{side} {paths[side]} {' and '.join(parts)}: the training, holdout and synthetic files (and"
                " --population) must have the same columns"
            )
    return reference


def _exact_copies(train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame) -> ExactCopies:
    train_h, holdout_h, synthetic_h = row_hashes(train), row_hashes(holdout), row_hashes(synthetic)
    return ExactCopies(
        n_synthetic=len(synthetic),
        of_train=int(np.isin(synthetic_h, train_h).sum()),
        of_holdout=int(np.isin(synthetic_h, holdout_h).sum()),
        train_reproduced=int(np.isin(train_h, synthetic_h).sum()),
        n_train=len(train),
        n_holdout=len(holdout),
    )


def _drop_overlap(
    train: pd.DataFrame, holdout: pd.DataFrame, paths: dict[str, str], drop: bool
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None, dict[str, np.ndarray]]:
    """Both sides without the records on both (or an error), and the file rows of the records kept."""
    overlap = find_overlap(row_hashes(train), row_hashes(holdout), "features")
    if not overlap:
        return train, holdout, None, {"train": np.arange(len(train)), "holdout": np.arange(len(holdout))}
    if not drop:
        raise InputDataError(overlap_message(overlap, paths["train"], paths["holdout"]))
    keep_train = np.setdiff1d(np.arange(len(train)), overlap.member_rows)
    keep_holdout = np.setdiff1d(np.arange(len(holdout)), overlap.nonmember_rows)
    kept = {"train": keep_train, "holdout": keep_holdout}
    return (
        train.iloc[keep_train].reset_index(drop=True),
        holdout.iloc[keep_holdout].reset_index(drop=True),
        overlap.to_dict(),
        kept,
    )


def _clean_population(population: pd.DataFrame, audit: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    if population.empty:
        return population
    shared = np.isin(row_hashes(population), row_hashes(audit))
    if shared.any():
        warnings.append(
            f"{int(shared.sum())} population record(s) are also members or non-members and were left out of the"
            " population"
        )
    return population.loc[~shared].reset_index(drop=True)


def load_synthetic_tables(
    train: str | Path,
    holdout: str | Path,
    synthetic: str | Path,
    population: str | Path | None = None,
    *,
    ignore_columns: tuple[str, ...] = (),
    drop_overlap: bool = False,
) -> SyntheticTables:
    """Read and check the audit's tables (see the module docstring)."""
    paths = {"train": str(train), "holdout": str(holdout), "synthetic": str(synthetic)}
    if population is not None:
        paths["population"] = str(population)
    frames = {side: load_table(path) for side, path in paths.items()}
    keys = {"train": "members", "holdout": "nonmembers", "synthetic": "synthetic", "population": "population"}
    fingerprints = {keys[side]: fingerprint_frame(frame) for side, frame in frames.items()}  # as lineage reads files
    for side, frame in frames.items():
        missing = [c for c in ignore_columns if c not in frame.columns]
        if missing:
            raise InputDataError(f"--ignore-columns names {', '.join(missing)}, which --{side} {paths[side]} lacks")
        frames[side] = frame.drop(columns=list(ignore_columns))
        if frames[side].shape[1] == 0:
            raise InputDataError(f"--{side} {paths[side]} has no columns left to audit after --ignore-columns")
    columns = _check_columns(frames, paths)
    real_sides = [s for s in ("train", "holdout", "population") if s in frames]
    numeric = tuple(c for c in columns if all(_is_numeric(frames[s][c]) for s in real_sides))
    categorical = tuple(c for c in columns if c not in numeric)
    typed = {side: conform(frame[columns], numeric, f"--{side} {paths[side]}") for side, frame in frames.items()}
    warnings: list[str] = []
    members, nonmembers, dropped, rows = _drop_overlap(typed["train"], typed["holdout"], paths, drop_overlap)
    if dropped is not None:
        warnings.append(
            f"{dropped['n_members']} member and {dropped['n_nonmembers']} non-member records were on both sides and"
            " were removed from both (--drop-overlap)"
        )
    for side, frame in (("train", members), ("holdout", nonmembers)):
        if frame.empty:
            raise InputDataError(f"--{side} {paths[side]} has no records left after removing the overlap")
    audit = pd.concat([members, nonmembers], ignore_index=True)
    extra = _clean_population(typed.get("population", audit.iloc[:0]), audit, warnings)
    synthetic_frame = typed["synthetic"]
    return SyntheticTables(
        train=members,
        holdout=nonmembers,
        synthetic=synthetic_frame,
        population=extra,
        numeric=numeric,
        categorical=categorical,
        paths=paths,
        copies=_exact_copies(members, nonmembers, synthetic_frame),
        fingerprints=fingerprints,
        rows=rows,
        overlap_dropped=dropped,
        warnings=warnings,
    )
