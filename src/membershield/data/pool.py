"""The audit pool: members followed by non-members, with labels, slices and a fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from membershield.data.io import load_table
from membershield.errors import InputDataError


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """sha256 of a table's canonical content: column names, dtypes and row hashes (order matters)."""
    digest = hashlib.sha256()
    header = [[str(c), str(t)] for c, t in zip(frame.columns, frame.dtypes, strict=True)]
    digest.update(json.dumps(header).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Pool:
    """Records of an audit. Rows ``0..n_members-1`` are members, the rest non-members.

    ``source`` and ``source_row`` say where each record came from, so reports can name rows of the
    user's own files.
    """

    features: pd.DataFrame
    labels: np.ndarray
    is_member: np.ndarray
    source: np.ndarray
    source_row: np.ndarray
    slice_values: np.ndarray | None
    slice_column: str | None
    fingerprints: dict[str, str]

    @property
    def n_members(self) -> int:
        return int(self.is_member.sum())

    @property
    def n_nonmembers(self) -> int:
        return int((~self.is_member).sum())

    def __len__(self) -> int:
        return len(self.labels)


def _check_columns(frame: pd.DataFrame, path: Path, label_column: str, slice_column: str | None) -> None:
    if label_column not in frame.columns:
        raise InputDataError(
            f"label column '{label_column}' not found in {path}; columns are: {_preview(frame.columns)}"
            " (set --label-column)"
        )
    if slice_column is not None and slice_column not in frame.columns:
        raise InputDataError(
            f"slice column '{slice_column}' not found in {path}; columns are: {_preview(frame.columns)}"
        )


def _preview(columns: pd.Index, limit: int = 12) -> str:
    names = [str(c) for c in columns]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _check_features(frame: pd.DataFrame, path: Path) -> None:
    missing = frame.isna().to_numpy()
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise InputDataError(
            f"{path}: missing or NaN value in column '{frame.columns[col]}' at row {row}"
            f" ({int(missing.sum())} in all); impute or drop those rows first"
        )
    numeric = frame.select_dtypes(include="number")
    if numeric.shape[1] and not np.isfinite(numeric.to_numpy(dtype=np.float64)).all():
        bad = numeric.columns[~np.isfinite(numeric.to_numpy(dtype=np.float64)).all(axis=0)][0]
        raise InputDataError(f"{path}: infinite value in column '{bad}'; clip or drop those rows first")


def split_features(
    frame: pd.DataFrame,
    path: Path,
    label_column: str,
    slice_column: str | None,
    ignore_columns: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """Separate features from the label column and validate them.

    The slice column stays a feature (slicing by a feature such as age group is the common case)
    unless it is listed in ``ignore_columns``, which names columns the model never used (ids, metadata).
    """
    _check_columns(frame, path, label_column, slice_column)
    unknown = [c for c in ignore_columns if c not in frame.columns]
    if unknown:
        raise InputDataError(
            f"ignored column '{unknown[0]}' not found in {path}; columns are: {_preview(frame.columns)}"
        )
    labels = frame[label_column].to_numpy()
    if pd.isna(labels).any():
        row = int(np.flatnonzero(pd.isna(labels))[0])
        raise InputDataError(f"{path}: label column '{label_column}' is empty at row {row}")
    slices = frame[slice_column].to_numpy() if slice_column is not None else None
    features = frame.drop(columns=[label_column, *[c for c in ignore_columns if c != label_column]])
    if features.shape[1] == 0:
        raise InputDataError(f"{path} has no feature columns besides '{label_column}'")
    _check_features(features, path)
    return features, labels, slices


def build_pool(
    members_path: str | Path,
    nonmembers_path: str | Path,
    label_column: str,
    slice_column: str | None = None,
    ignore_columns: tuple[str, ...] = (),
) -> Pool:
    """Load members (the target's training records) and non-members into one validated pool."""
    paths = (Path(members_path), Path(nonmembers_path))
    frames = [load_table(p) for p in paths]
    parts = [
        split_features(f, p, label_column, slice_column, ignore_columns) for f, p in zip(frames, paths, strict=True)
    ]
    (f_in, y_in, s_in), (f_out, y_out, s_out) = parts
    if list(f_in.columns) != list(f_out.columns):
        only_in = sorted(set(f_in.columns) - set(f_out.columns))
        only_out = sorted(set(f_out.columns) - set(f_in.columns))
        raise InputDataError(
            f"{paths[0]} and {paths[1]} have different feature columns"
            f" (only in members: {only_in or '-'}, only in non-members: {only_out or '-'}, or another order)"
        )
    features = pd.concat([f_in, f_out], ignore_index=True)
    labels = np.concatenate([y_in, y_out])
    is_member = np.concatenate([np.ones(len(y_in), bool), np.zeros(len(y_out), bool)])
    slices = np.concatenate([s_in, s_out]) if s_in is not None and s_out is not None else None
    return Pool(
        features=features,
        labels=labels,
        is_member=is_member,
        source=np.array(["members"] * len(y_in) + ["nonmembers"] * len(y_out)),
        source_row=np.concatenate([np.arange(len(y_in)), np.arange(len(y_out))]),
        slice_values=slices,
        slice_column=slice_column,
        fingerprints={"members": fingerprint_frame(frames[0]), "nonmembers": fingerprint_frame(frames[1])},
    )


def load_population(
    path: str | Path, label_column: str, feature_columns: list[str]
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Load extra records from the target's distribution that it never saw (offline attacks, RMIA z)."""
    p = Path(path)
    frame = load_table(p)
    _check_columns(frame, p, label_column, None)
    missing = [c for c in feature_columns if c not in frame.columns]
    if missing:
        raise InputDataError(f"population file {p} lacks feature column '{missing[0]}' that the audit data has")
    features, labels, _ = split_features(frame[[*feature_columns, label_column]], p, label_column, None)
    return features, labels, fingerprint_frame(frame)
