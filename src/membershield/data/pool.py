"""The audit pool: members followed by non-members, with labels, slices and a fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from membershield.data.io import load_table
from membershield.data.overlap import (
    NearDuplicates,
    Overlap,
    find_near_duplicates,
    find_overlap,
    overlap_message,
    row_hashes,
)
from membershield.errors import InputDataError
from membershield.metrics.user_level import users_on_both_sides


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
    dropped_overlap: Overlap | None = None  # records that were on both sides, removed (--drop-overlap)
    near_duplicates: NearDuplicates | None = None
    user_column: str | None = None  # --user-column: the data subject of each record (never a feature)
    user_values: np.ndarray | None = None

    def split_warnings(self) -> list[str]:
        """What the audit result must say about the split itself."""
        out = []
        if self.dropped_overlap:
            o = self.dropped_overlap
            out.append(
                f"{o.member_rows.size} member and {o.nonmember_rows.size} non-member records were on both sides"
                f" ({o.by}) and were removed from both (--drop-overlap)"
            )
        if self.near_duplicates is not None and (warning := self.near_duplicates.warning()):
            out.append(warning)
        return out

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


@dataclass(frozen=True)
class Tables:
    """Members and non-members already in memory (their paths then only name them in messages)."""

    members: pd.DataFrame
    nonmembers: pd.DataFrame


def _check_identifier_columns(
    frames: list[pd.DataFrame], paths: tuple[Path, Path], id_column: str | None, user_column: str | None
) -> None:
    for frame, path in zip(frames, paths, strict=True):
        if id_column is not None and id_column not in frame.columns:
            raise InputDataError(
                f"id column '{id_column}' not found in {path}; columns are: {_preview(frame.columns)} (set --id-column)"
            )
        if user_column is not None and user_column not in frame.columns:
            raise InputDataError(
                f"user column '{user_column}' not found in {path}; columns are: {_preview(frame.columns)}"
                " (set --user-column to the column naming each record's data subject)"
            )


def build_pool(
    members_path: str | Path,
    nonmembers_path: str | Path,
    label_column: str,
    slice_column: str | None = None,
    ignore_columns: tuple[str, ...] = (),
    *,
    id_column: str | None = None,
    drop_overlap: bool = False,
    tables: Tables | None = None,
    user_column: str | None = None,
) -> Pool:
    """Load members (the target's training records) and non-members into one validated pool.

    A record on both sides (identical features, or the same ``id_column`` value) is an error, or with
    ``drop_overlap`` is removed from both; near-duplicates across the split are counted for a warning.
    The id and user columns are never features; a user with records on both sides is an error.
    """
    paths = (Path(members_path), Path(nonmembers_path))
    frames = [tables.members, tables.nonmembers] if tables is not None else [load_table(p) for p in paths]
    not_features = tuple(ignore_columns)
    for identifier in (id_column, user_column):
        if identifier and identifier not in not_features:
            not_features += (identifier,)
    _check_identifier_columns(frames, paths, id_column, user_column)
    parts = [split_features(f, p, label_column, slice_column, not_features) for f, p in zip(frames, paths, strict=True)]
    (f_in, _, _), (f_out, _, _) = parts
    if list(f_in.columns) != list(f_out.columns):
        only_in = sorted(set(f_in.columns) - set(f_out.columns))
        only_out = sorted(set(f_out.columns) - set(f_in.columns))
        raise InputDataError(
            f"{paths[0]} and {paths[1]} have different feature columns"
            f" (only in members: {only_in or '-'}, only in non-members: {only_out or '-'}, or another order)"
        )
    if id_column is not None:
        keys = [frame[id_column].astype(str).to_numpy() for frame in frames]
        overlap = find_overlap(keys[0], keys[1], f"id column '{id_column}'")
    else:
        overlap = find_overlap(row_hashes(f_in), row_hashes(f_out), "features")
    if overlap and not drop_overlap:
        raise InputDataError(overlap_message(overlap, paths[0], paths[1]))
    kept = [
        np.setdiff1d(np.arange(len(frames[0])), overlap.member_rows),
        np.setdiff1d(np.arange(len(frames[1])), overlap.nonmember_rows),
    ]
    for rows, path, role in zip(kept, paths, ("members", "non-members"), strict=True):
        if rows.size < 2:
            raise InputDataError(
                f"{path}: {rows.size} {role} left after dropping the records on both sides; an audit needs at least 2"
            )
    (f_in, y_in, s_in), (f_out, y_out, s_out) = [
        (f.iloc[rows].reset_index(drop=True), y[rows], None if sl is None else sl[rows])
        for (f, y, sl), rows in zip(parts, kept, strict=True)
    ]
    features = pd.concat([f_in, f_out], ignore_index=True)
    labels = np.concatenate([y_in, y_out])
    is_member = np.concatenate([np.ones(len(y_in), bool), np.zeros(len(y_out), bool)])
    slices = np.concatenate([s_in, s_out]) if s_in is not None and s_out is not None else None
    near = find_near_duplicates(f_in, f_out)
    users = None
    if user_column is not None:
        users = np.concatenate([frame[user_column].to_numpy()[rows] for frame, rows in zip(frames, kept, strict=True)])
        _check_users(users, is_member, user_column, paths)
    return Pool(
        features=features,
        labels=labels,
        is_member=is_member,
        source=np.array(["members"] * len(y_in) + ["nonmembers"] * len(y_out)),
        source_row=np.concatenate(kept),
        slice_values=slices,
        slice_column=slice_column,
        fingerprints={"members": fingerprint_frame(frames[0]), "nonmembers": fingerprint_frame(frames[1])},
        dropped_overlap=overlap if overlap else None,
        near_duplicates=replace(
            near, nonmember_rows=kept[1][near.nonmember_rows], member_rows=kept[0][near.member_rows]
        ),
        user_column=user_column,
        user_values=users,
    )


def _check_users(users: np.ndarray, is_member: np.ndarray, column: str, paths: tuple[Path, Path]) -> None:
    """A user-level audit needs every user on one side of the split, and two users on each side."""
    if pd.isna(users).any():
        row = int(np.flatnonzero(pd.isna(users))[0])
        raise InputDataError(f"user column '{column}' is empty at record {row}; give every record its user")
    both = users_on_both_sides(users, is_member)
    if both:
        shown = ", ".join(repr(u) for u in both[:5]) + (", ..." if len(both) > 5 else "")
        raise InputDataError(
            f"{len(both)} user(s) of column '{column}' have records in both {paths[0]} and {paths[1]} ({shown}):"
            " a user-level audit needs each user's records on one side; split members and non-members by user"
        )
    for side, role in ((is_member, "member"), (~is_member, "non-member")):
        if len(set(users[side].astype(str).tolist())) < 2:
            raise InputDataError(
                f"fewer than 2 {role} users in column '{column}'; a user-level audit needs at least 2 on each side"
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
