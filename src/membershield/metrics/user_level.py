"""User-level membership: one decision per data subject from the scores of all of their records.

A record-level audit asks whether one record was trained on; a data subject with several records asks
whether *they* were. Users are the unit here: a user is a member when their records are members (a user
with records on both sides has no single truth, :func:`users_on_both_sides`), and every rate, count and
interval of a user-level result counts users, not records.

Three aggregations of a user's record scores (``AGGREGATIONS``):

- ``mean``: the mean of the record scores;
- ``max``: the highest record score (the user's most exposed record);
- ``llr_sum``: the sum over the user's records of each record's log odds against the non-member score
  distribution, :func:`nonmember_log_odds`. A record's score becomes its smoothed mid-rank ``q`` among
  the non-member record scores (every record ranked against the non-member records other than itself),
  and its term is ``log(q / (1 - q))``. This uses no member scores: it is a calibration of each attack's
  score against non-members only. If a record's log-likelihood ratio were logistic in ``q`` (the
  non-member scores' own distribution after the transform) the sum would be the user's log-likelihood
  ratio under independent records; for other attacks it is a rank-based stand-in whose terms have mean
  about 0 for non-members, so evidence adds up with the number of records and a user with many
  moderately exposed records can outrank one with a single outlier.

Functions here are pure, as in the rest of :mod:`membershield.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from membershield.errors import ConfigError, InputDataError
from membershield.metrics._checks import _check

AGGREGATIONS = ("mean", "max", "llr_sum")
AGGREGATION_DOCS = {
    "mean": "mean of the user's record scores",
    "max": "highest record score of the user",
    "llr_sum": "sum over the user's records of log(q / (1 - q)), q the record's smoothed mid-rank among the"
    " non-member record scores (each record ranked against the non-member records other than itself):"
    " a rank-based calibration against non-members only, no member score used",
}


@dataclass(frozen=True)
class Users:
    """The users of an audit: ``ids`` sorted, ``index[i]`` the position in ``ids`` of record ``i``'s user,
    and per user whether they are a member and how many records they have."""

    ids: np.ndarray
    index: np.ndarray
    is_member: np.ndarray
    n_records: np.ndarray

    @property
    def n_members(self) -> int:
        return int(self.is_member.sum())

    @property
    def n_nonmembers(self) -> int:
        return int((~self.is_member).sum())


def _user_codes(users: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(users, dtype=object)
    if raw.ndim != 1 or raw.shape[0] != n:
        raise InputDataError(f"users must be a 1-D array with one value per record ({n}), got shape {raw.shape}")
    return np.unique(np.array([str(u) for u in raw], dtype=str), return_inverse=True)


def users_on_both_sides(users: ArrayLike, is_member: ArrayLike) -> list[str]:
    """The users (as text, sorted) with records among both members and non-members.

    >>> users_on_both_sides(["a", "a", "b", "c", "c"], [True, False, True, False, False])
    ['a']
    """
    m = np.asarray(is_member, dtype=bool)
    ids, index = _user_codes(users, m.shape[0])
    members = np.bincount(index, weights=m, minlength=ids.size)
    counts = np.bincount(index, minlength=ids.size)
    return [str(u) for u in ids[(members > 0) & (members < counts)]]


def group_users(users: ArrayLike, is_member: ArrayLike) -> Users:
    """Group records by user; a user with records on both sides is an error (no single truth).

    >>> g = group_users([7, 3, 7, 5], [True, False, True, False])
    >>> g.ids.tolist(), g.index.tolist(), g.is_member.tolist(), g.n_records.tolist()
    (['3', '5', '7'], [2, 0, 2, 1], [False, False, True], [1, 1, 2])
    """
    m = np.asarray(is_member, dtype=bool)
    both = users_on_both_sides(users, m)
    if both:
        shown = ", ".join(repr(u) for u in both[:5]) + (", ..." if len(both) > 5 else "")
        raise InputDataError(
            f"{len(both)} user(s) have records among both members and non-members ({shown}); a user-level"
            " audit needs each user's records on one side: split members and non-members by user"
        )
    ids, index = _user_codes(users, m.shape[0])
    is_member_user = np.zeros(ids.size, dtype=bool)
    is_member_user[index[m]] = True
    return Users(ids=ids, index=index, is_member=is_member_user, n_records=np.bincount(index, minlength=ids.size))


def nonmember_log_odds(scores: ArrayLike, is_member: ArrayLike) -> np.ndarray:
    """Each record's log odds ``log(q / (1 - q))`` against the non-member scores.

    ``q = (below + ties / 2 + 1 / 2) / (n + 1)``, where ``below`` and ``ties`` count the ``n`` reference
    non-member scores below and equal to the record's score; a non-member record's reference is the
    other non-members (``n`` one less, itself not counted), so it is ranked as a member with its score
    would be. ``q`` lies strictly between 0 and 1, so every term is finite.

    >>> s = [5.0, 0.0, 1.0, 2.0, 3.0]
    >>> [round(float(v), 3) for v in nonmember_log_odds(s, [True, False, False, False, False])]
    [2.197, -1.946, -0.511, 0.511, 1.946]
    """
    s, m = _check(scores, is_member, need_members=False)
    reference = np.sort(s[~m])
    below = np.searchsorted(reference, s, side="left").astype(np.float64)
    ties = np.searchsorted(reference, s, side="right") - below
    n = np.full(s.shape, float(reference.size))
    ties[~m] -= 1.0
    n[~m] -= 1.0
    q = (below + ties / 2.0 + 0.5) / (n + 1.0)
    return np.log(q) - np.log1p(-q)


def aggregate_user_scores(scores: ArrayLike, users: Users, how: str, is_member: ArrayLike | None = None) -> np.ndarray:
    """One score per user (in ``users.ids`` order) from their records' scores, by ``how``.

    ``llr_sum`` needs ``is_member`` (the records' membership) for its non-member reference
    (:func:`nonmember_log_odds`); ``mean`` and ``max`` use the scores alone.

    >>> g = group_users(["u", "u", "v", "w", "w", "w"], [True, True, False, False, False, False])
    >>> s = [0.9, 0.1, 0.4, 0.2, 0.3, 0.8]
    >>> [round(float(v), 3) for v in aggregate_user_scores(s, g, "mean")], aggregate_user_scores(s, g, "max").tolist()
    ([0.5, 0.4, 0.433], [0.9, 0.4, 0.8])
    >>> [round(float(v), 3) for v in aggregate_user_scores(s, g, "llr_sum", g.is_member[g.index])]
    [0.0, 0.511, -0.511]
    """
    s, _ = _check(scores, np.zeros(np.shape(scores), dtype=bool), need_members=False)
    if s.shape[0] != users.index.shape[0]:
        raise InputDataError(f"scores ({s.shape[0]}) and users ({users.index.shape[0]}) differ in length")
    if how == "mean":
        return np.bincount(users.index, weights=s, minlength=users.ids.size) / users.n_records
    if how == "max":
        out = np.full(users.ids.size, -np.inf)
        np.maximum.at(out, users.index, s)
        return out
    if how == "llr_sum":
        if is_member is None:
            raise ConfigError("llr_sum needs is_member: the non-member records are its reference")
        return np.bincount(users.index, weights=nonmember_log_odds(s, is_member), minlength=users.ids.size)
    raise ConfigError(f"unknown aggregation '{how}': choose one of {', '.join(AGGREGATIONS)}")
