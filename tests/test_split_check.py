"""The split check fires on a shifted split and stays quiet on a random one (real digits data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from membershield.split_check import blind_split_check


def _digits() -> pd.DataFrame:
    return load_digits(as_frame=True).frame.rename(columns={"target": "digit"})


def test_quiet_on_a_random_split() -> None:
    frame = _digits().sample(frac=1.0, random_state=0).reset_index(drop=True)
    is_member = np.arange(len(frame)) < len(frame) // 2
    check = blind_split_check(frame.drop(columns="digit"), frame["digit"].to_numpy(), is_member, seed=0)
    assert check.ok
    assert check.ci_low <= 0.5


def test_fires_when_members_and_nonmembers_differ_in_distribution() -> None:
    frame = _digits()
    # A plausible real-world mistake: members are the bold strokes, non-members the thin ones
    # (as if collected from a different scanner or time period).
    ink = frame.drop(columns="digit").sum(axis=1).to_numpy()
    is_member = ink > np.median(ink)
    check = blind_split_check(frame.drop(columns="digit"), frame["digit"].to_numpy(), is_member, seed=0)
    assert not check.ok
    assert check.blind_auc > 0.8 and check.ci_low > 0.5


def test_fires_below_one_half_when_the_same_records_are_on_both_sides() -> None:
    """The holdout file is the training file: the blind classifier is scored on copies of records it saw
    with the opposite membership, so it ranks them the wrong way round (the audit's own AUC reads 0.5)."""
    frame = _digits().iloc[:600]
    doubled = pd.concat([frame, frame], ignore_index=True)
    is_member = np.arange(len(doubled)) < len(frame)
    check = blind_split_check(doubled.drop(columns="digit"), doubled["digit"].to_numpy(), is_member, seed=0)
    assert not check.ok
    assert check.ci_high < 0.5
    assert "wrong way round" in check.warning() and "de-duplicate" in check.warning()


def test_no_false_alarms_on_either_side_over_random_splits() -> None:
    frame = _digits()
    alarms = 0
    for seed in range(12):
        is_member = np.random.default_rng(seed).permutation(len(frame)) < len(frame) // 2
        alarms += not blind_split_check(frame.drop(columns="digit"), frame["digit"].to_numpy(), is_member, seed=seed).ok
    assert alarms <= 1  # 99% two-sided: about 0.12 expected in 12
