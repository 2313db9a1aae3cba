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
