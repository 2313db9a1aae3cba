"""Every bad input a user gives `membershield audit`, in one table: one line naming the thing and the fix,
exit code 2, and nothing lost (an earlier audit's files and history rows stay as they were).

Then the inputs that are not errors but must not go wrong in silence: a members file of ten rows (a
warning saying which rates it cannot resolve), a cache entry cut short (retrained), two audits writing one
history store at once (no row lost), and `kill -9` during reference training (no finished model retrained).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from membershield.store import open_store
from tests.test_cli import assert_one_line_error, base_args, run_cli


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _write(table: pd.DataFrame, path: Path) -> str:
    table.to_csv(path, index=False)
    return str(path)


def _changed(source: Path, tmp: Path, name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> str:
    return _write(change(_table(source)), tmp / name)


def _set(row: int, column: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table = table.astype({column: float if isinstance(value, float) else object})
        table.loc[row, column] = value
        return table

    return change


def _truncated_parquet(d, tmp: Path) -> str:
    path = tmp / "nonmembers.parquet"
    _table(d.nonmembers).to_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def _regressor(tmp: Path) -> str:
    from sklearn.linear_model import LinearRegression

    joblib.dump(LinearRegression().fit(np.eye(3), np.arange(3)), tmp / "regressor.joblib")
    return str(tmp / "regressor.joblib")


def _overlapping(d, tmp: Path) -> str:
    mixed = pd.concat([_table(d.nonmembers).iloc[:500], _table(d.members).iloc[:40]], ignore_index=True)
    return _write(mixed, tmp / "holdout.csv")


def _huge_values(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype(float)
    table.loc[5, [c for c in table.columns if c != "digit"]] = 1.5e308  # finite, but beyond the model's arithmetic
    return table


# name: (options changed from the good audit, given the data and a scratch directory; words the error must hold)
CASES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "missing data file": (lambda d, t: {"--train": str(t / "nope.csv")}, ("nope.csv", "not found")),
    "missing label column": (
        lambda d, t: {"--label-column": "label"},
        ("'label' not found", "members.csv", "--label-column"),
    ),
    "labels the model never saw": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "n.csv", _set(3, "digit", 11))},
        ("n.csv", "never saw", "11"),
    ),
    "NaN feature": (
        lambda d, t: {"--train": _changed(d.members, t, "with_nan.csv", _set(7, "pixel_2_5", np.nan))},
        ("with_nan.csv", "pixel_2_5", "row 7"),
    ),
    "infinite feature": (
        lambda d, t: {"--train": _changed(d.members, t, "inf.csv", _set(2, "pixel_1_1", np.inf))},
        ("inf.csv", "infinite value", "pixel_1_1"),
    ),
    "feature beyond the float range": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "big.csv", _set(4, "pixel_4_4", "1e999"))},
        ("big.csv", "infinite value", "pixel_4_4"),
    ),
    "features that overflow the model": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "huge.csv", _huge_values)},
        ("cannot score the audit data", "first: nonmembers row 5"),
    ),
    "extra column": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "extra.csv", lambda f: f.assign(site=1))},
        ("different feature columns", "site"),
    ),
    "missing column": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "less.csv", lambda f: f.drop(columns="pixel_3_3"))},
        ("different feature columns", "pixel_3_3"),
    ),
    "reordered columns": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "order.csv", lambda f: f[f.columns[::-1]])},
        ("different feature columns", "another order"),
    ),
    "empty file": (lambda d, t: {"--holdout": _empty(t)}, ("empty.csv", "empty")),
    "header without rows": (
        lambda d, t: {"--holdout": _changed(d.nonmembers, t, "header.csv", lambda f: f.iloc[:0])},
        ("header.csv", "no rows"),
    ),
    "truncated parquet": (lambda d, t: {"--holdout": _truncated_parquet(d, t)}, ("nonmembers.parquet", "cannot read")),
    "corrupt model": (lambda d, t: {"--model": _cut(d.overfit_model, t)}, ("broken.joblib", "unpickle")),
    "a regressor": (lambda d, t: {"--model": _regressor(t)}, ("regressor.joblib", "not a classifier")),
    "a pickled dict": (lambda d, t: {"--model": _dumped({"weights": [1, 2]}, t)}, ("holds a dict", "classifier")),
    "the training file as holdout": (
        lambda d, t: {"--holdout": str(d.members)},
        ("600 member record(s)", "also non-members", "--drop-overlap"),
    ),
    "records on both sides": (
        lambda d, t: {"--holdout": _overlapping(d, t)},
        ("40 member record(s)", "non-member rows 500, 501", "--drop-overlap"),
    ),
    "unknown id column": (lambda d, t: {"--id-column": "patient"}, ("id column 'patient' not found",)),
}


def _empty(tmp: Path) -> str:
    (tmp / "empty.csv").write_bytes(b"")
    return str(tmp / "empty.csv")


def _cut(model: Path, tmp: Path) -> str:
    (tmp / "broken.joblib").write_bytes(model.read_bytes()[:300])
    return str(tmp / "broken.joblib")


def _dumped(value, tmp: Path) -> str:
    joblib.dump(value, tmp / "dict.joblib")
    return str(tmp / "dict.joblib")


@pytest.fixture(scope="module")
def earlier_audit(digits_audit, tmp_path_factory):
    """A finished audit's directory and the history store it was recorded in."""
    import os

    directory = tmp_path_factory.mktemp("earlier")
    store = directory / "history.db"
    args = base_args(digits_audit, directory, **{"--store": str(store)})
    done = subprocess.run([sys.executable, "-m", "membershield", *args], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    return directory / "out", store


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    case, digits_audit, earlier_audit, tmp_path, monkeypatch, capsys
):
    previous, store = earlier_audit
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    history = tmp_path / "history.db"
    shutil.copy(store, history)
    build, needles = CASES[case]
    changes = build(digits_audit, tmp_path)
    args = base_args(digits_audit, tmp_path, **changes, **{"--store": str(history)})
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, *needles)
    _, different, missing = filecmp.cmpfiles(previous, out, [p.name for p in previous.iterdir()], shallow=False)
    assert not different and not missing, (different, missing)
    with open_store(str(history)) as opened:
        assert len(opened.history()) == 1


def test_drop_overlap_removes_them_from_both_sides_and_says_so(digits_audit, tmp_path, monkeypatch, capsys):
    holdout = _overlapping(digits_audit, tmp_path)
    args = [*base_args(digits_audit, tmp_path, **{"--holdout": holdout}), "--drop-overlap"]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["data"]["n_members"] == 560 and doc["data"]["n_nonmembers"] == 500
    assert doc["data"]["overlap_dropped"]["n_members"] == 40
    assert doc["data"]["overlap_dropped"]["nonmember_rows"][:2] == [500, 501]
    assert any("removed from both (--drop-overlap)" in w for w in doc["warnings"])
    assert "--drop-overlap" in " ".join(stdout.split())


def test_overlap_by_id_column(digits_audit, tmp_path, monkeypatch, capsys):
    members = _table(digits_audit.members).assign(patient=lambda f: [f"p{i}" for i in range(len(f))])
    nonmembers = _table(digits_audit.nonmembers).assign(patient=lambda f: [f"q{i}" for i in range(len(f))])
    nonmembers.loc[[3, 9], "patient"] = ["p10", "p20"]  # the same people, other measurements
    changes = {"--train": _write(members, tmp_path / "m.csv"), "--holdout": _write(nonmembers, tmp_path / "n.csv")}
    args = [*base_args(digits_audit, tmp_path, **changes), "--id-column", "patient"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "2 member record(s)", "the same id column 'patient'", "member rows 10, 20")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--drop-overlap")
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["data"]["n_features"] == 64  # the id is not a feature
    assert doc["data"]["overlap_dropped"]["by"] == "id column 'patient'"


def test_near_duplicates_across_the_split_are_a_warning_with_their_share(digits_audit, tmp_path, monkeypatch, capsys):
    members = _table(digits_audit.members)
    jittered = members.iloc[:150].copy()
    features = [c for c in members.columns if c != "digit"]
    jittered[features] = jittered[features] + np.random.default_rng(0).normal(0, 0.001, (150, len(features)))
    holdout = pd.concat([_table(digits_audit.nonmembers).iloc[:450], jittered], ignore_index=True)
    args = base_args(digits_audit, tmp_path, **{"--holdout": _write(holdout, tmp_path / "n.csv")})
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    near = json.loads((tmp_path / "out" / "audit.json").read_text())["data"]["near_duplicates"]
    assert near["n_nonmembers"] == 150 and near["share"] == pytest.approx(0.25)
    assert near["share_among_members"] == 0.0
    assert "150 non-members (25.0%) are near-duplicates" in " ".join(stdout.split())
    # a genuine random split: none
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path))
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["data"]["near_duplicates"]["n_nonmembers"] == 0


def test_ten_members_are_allowed_with_a_warning_naming_what_they_cannot_resolve(
    digits_audit, tmp_path, monkeypatch, capsys
):
    train = _changed(digits_audit.members, tmp_path, "ten.csv", lambda f: f.iloc[:10])
    code, stdout, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--train": train}))
    assert code == 0, err
    warning = next(w for w in json.loads((tmp_path / "out" / "audit.json").read_text())["warnings"] if "only 10" in w)
    assert "a TPR below 35% cannot be told from 0" in warning and "steps of 10%" in warning
    assert "only 10 members" in " ".join(stdout.split())


def test_a_cache_entry_cut_short_is_retrained(digits_audit, tmp_path, monkeypatch, capsys):
    args = base_args(digits_audit, tmp_path, **{"--attacks": "lira", "--references": "2"})
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    first = json.loads((tmp_path / "out" / "audit.json").read_text())
    entry = sorted((tmp_path / "cache").glob("*.npy"))[0]
    entry.write_bytes(entry.read_bytes()[:100])
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    again = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert again["references"]["trained"] == 1 and again["references"]["loaded_from_cache"] == 1
    assert again["attacks"][0]["auc"] == pytest.approx(first["attacks"][0]["auc"], abs=1e-6)


def _audit_command(d, out: Path, store: Path, cache: Path, references: int) -> list[str]:
    options = base_args(d, out.parent, **{"--out": str(out), "--cache": str(cache), "--store": str(store)})
    options += ["--attacks", "lira", "--references", str(references)]
    return [sys.executable, "-m", "membershield", *options]


@pytest.mark.slow
def test_two_audits_writing_one_store_at_once_lose_no_row(digits_audit, tmp_path):
    store = tmp_path / "shared.db"
    commands = [_audit_command(digits_audit, tmp_path / f"out{i}", store, tmp_path / f"c{i}", 2) for i in range(2)]
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    for process in running:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    with open_store(str(store)) as opened:
        assert len(opened.history()) == 2


@pytest.mark.slow
def test_kill_9_during_reference_training_then_the_same_command_retrains_nothing_finished(digits_audit, tmp_path):
    cache = tmp_path / "cache"
    command = _audit_command(digits_audit, tmp_path / "out", tmp_path / "h.db", cache, 24)
    audit = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*.npy"))) < 3 and audit.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert audit.poll() is None, "the audit ended before it could be killed"
    audit.send_signal(signal.SIGKILL)
    audit.wait(timeout=30)
    finished = len(list(cache.glob("*.npy")))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    references = json.loads((tmp_path / "out" / "audit.json").read_text())["references"]
    assert references["loaded_from_cache"] >= finished >= 3
    assert references["trained"] == 24 - references["loaded_from_cache"]
