"""Records on both sides of a split: exact overlaps (an error) and near-duplicates (a warning).

A record that is both a member and a non-member makes every attack score it twice with opposite
truth, pulling every AUC towards 0.5: an audit whose holdout is its training file reads "no leak".
Near-duplicates (the same record after rounding or jitter) do the same more quietly. Both are found
here, before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ROWS_SHOWN = 5


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64 and everything else as text, so ``1`` in one file matches ``1.0`` in another."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            out[name] = column.astype(str).to_numpy(dtype=object)
        else:
            out[name] = column.to_numpy(dtype=np.float64)
    return pd.DataFrame(out)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of a table's values (column order matters, the index does not).

    >>> a = pd.DataFrame({"x": [1, 2], "c": ["u", "v"]})
    >>> b = pd.DataFrame({"x": [2.0, 3.0], "c": ["v", "v"]})
    >>> bool(row_hashes(a)[1] == row_hashes(b)[0]), bool(row_hashes(a)[0] == row_hashes(b)[1])
    (True, False)
    """
    return pd.util.hash_pandas_object(_canonical(frame), index=False).to_numpy()


@dataclass(frozen=True)
class Overlap:
    """Rows (0-based data rows of each file) whose record is also on the other side."""

    member_rows: np.ndarray
    nonmember_rows: np.ndarray
    by: str  # "features" or "id column 'NAME'"

    def __bool__(self) -> bool:
        return bool(self.member_rows.size or self.nonmember_rows.size)

    def to_dict(self) -> dict[str, object]:
        return {
            "by": self.by,
            "n_members": int(self.member_rows.size),
            "n_nonmembers": int(self.nonmember_rows.size),
            "member_rows": self.member_rows[:100].tolist(),
            "nonmember_rows": self.nonmember_rows[:100].tolist(),
        }


def find_overlap(members: np.ndarray, nonmembers: np.ndarray, by: str) -> Overlap:
    """Rows of each side whose key (a row hash or an id) occurs on the other side.

    >>> o = find_overlap(np.array([1, 2, 3, 2]), np.array([2, 9]), "features")
    >>> o.member_rows.tolist(), o.nonmember_rows.tolist()
    ([1, 3], [0])
    """
    members, nonmembers = np.asarray(members), np.asarray(nonmembers)
    shared = np.intersect1d(members, nonmembers)
    return Overlap(np.flatnonzero(np.isin(members, shared)), np.flatnonzero(np.isin(nonmembers, shared)), by)


def _shown(rows: np.ndarray) -> str:
    listed = ", ".join(str(int(r)) for r in rows[:ROWS_SHOWN])
    return listed + (", ..." if rows.size > ROWS_SHOWN else "")


def overlap_message(overlap: Overlap, members_path: object, nonmembers_path: object) -> str:
    """The one-line error for an overlap the user did not ask to drop."""
    what = "identical feature values" if overlap.by == "features" else f"the same {overlap.by}"
    return (
        f"{overlap.member_rows.size} member record(s) of {members_path} are also non-members in {nonmembers_path}"
        f" ({what}; member rows {_shown(overlap.member_rows)}, non-member rows {_shown(overlap.nonmember_rows)},"
        " counted from 0): a record cannot be both; fix the split, or pass --drop-overlap to remove them from"
        " both sides"
    )


@dataclass(frozen=True)
class NearDuplicates:
    """Non-members whose nearest member is within ``radius`` (but not identical), against how often
    distinct members are that close to each other.

    The radius is a tenth of the median distance from a member to its nearest other member, so it
    adapts to the table's dimension and scale. Some records of a low-dimensional table are that close
    by nature; the warning needs the share across the split to exceed the share among the members
    themselves (one-sided binomial test, p < 0.01), so it marks copies, not a dense region.
    """

    nonmember_rows: np.ndarray
    member_rows: np.ndarray  # the nearest member of each
    n_nonmembers: int
    radius: float
    within_share: float  # share of members with another member within the radius
    p_value: float

    @property
    def share(self) -> float:
        return self.nonmember_rows.size / max(self.n_nonmembers, 1)

    @property
    def excess(self) -> bool:
        return bool(self.nonmember_rows.size) and self.p_value < 0.01

    def to_dict(self) -> dict[str, object]:
        return {
            "n_nonmembers": int(self.nonmember_rows.size),
            "share": self.share,
            "share_among_members": self.within_share,
            "p_value": self.p_value,
            "radius": self.radius,
            "method": METHOD,
            "pairs": [
                {"nonmember_row": int(a), "member_row": int(b)}
                for a, b in zip(self.nonmember_rows[:20], self.member_rows[:20], strict=True)
            ],
        }

    def warning(self) -> str | None:
        if not self.excess:
            return None
        return (
            f"{self.nonmember_rows.size} non-members ({100 * self.share:.1f}%) are near-duplicates of a member"
            f" (non-member rows {_shown(self.nonmember_rows)}; {100 * self.within_share:.1f}% of members are that"
            " close to another member): the same records rounded or jittered make members and non-members look"
            " alike and lower every attack's figures; de-duplicate across the split"
        )


METHOD = (
    "nearest member within a tenth of the median member-to-member nearest-neighbour distance (numeric columns"
    " in the members' standard deviations, other columns equal)"
)


def _embedding(members: pd.DataFrame, nonmembers: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns in units of the members' standard deviation; other columns as category codes, scaled
    so that any difference in one of them alone is a root-mean-square difference of at least 1.

    The members set the units because jitter on the other side must not: a column the members hold
    constant (blank pixels) has no spread of its own, and is measured in units of its value (or 1 for 0).
    """
    both = _canonical(pd.concat([members, nonmembers], ignore_index=True))
    n_members, width = len(members), len(both.columns)
    columns = []
    for name in both.columns:
        column = both[name]
        if not pd.api.types.is_float_dtype(column):  # _canonical leaves numbers as float64, the rest as text
            columns.append(pd.factorize(column)[0].astype(np.float64) * np.sqrt(width))
            continue
        values = column.to_numpy(dtype=np.float64)
        inside = values[:n_members]
        scale = inside.std()
        if scale == 0:
            scale = max(abs(float(inside[0])), 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            # clipped: a value near the float limit would make every squared distance infinite
            columns.append(np.clip((values - inside.mean()) / scale, -1e150, 1e150))
    matrix = np.column_stack(columns) / np.sqrt(width)  # Euclidean distance = RMS difference
    return matrix[:n_members], matrix[n_members:]


def find_near_duplicates(members: pd.DataFrame, nonmembers: pd.DataFrame) -> NearDuplicates:
    """Non-members near a member, see :class:`NearDuplicates` (run after exact overlaps are removed).

    >>> m = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0], "c": ["a", "a", "b", "b", "b"]})
    >>> n = pd.DataFrame({"x": [1.001, 2.001, 2.5], "c": ["a", "a", "b"]})
    >>> find_near_duplicates(m, n).nonmember_rows.tolist()
    [0]
    """
    from scipy.stats import binom
    from sklearn.neighbors import NearestNeighbors

    inside, outside = _embedding(members, nonmembers)
    index = NearestNeighbors(n_neighbors=min(2, len(inside))).fit(inside)
    own = index.kneighbors(inside)[0][:, -1]  # nearest other member (a duplicate member counts, at 0)
    radius = 0.1 * float(np.median(own))
    distance, nearest = index.kneighbors(outside, n_neighbors=1)
    distance, nearest = distance[:, 0], nearest[:, 0]
    near = np.flatnonzero(distance <= radius) if radius > 0 else np.array([], dtype=np.int64)
    within = float(np.mean(own <= radius)) if radius > 0 else 0.0
    p_value = float(binom.sf(near.size - 1, len(outside), within)) if near.size else 1.0
    return NearDuplicates(near, nearest[near], len(outside), radius, within, p_value)
