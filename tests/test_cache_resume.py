"""Reference models are cached by content; an interrupted audit resumes; damaged entries are retrained."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.targets.sklearn import SklearnRecipe
from membershield.training.cache import LogitCache

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"


def _config(d, tmp_path: Path, **changes) -> AuditConfig:
    values = dict(
        model=str(d.overfit_model),
        train=str(d.members),
        holdout=str(d.nonmembers),
        label_column="digit",
        attacks=["loss", "lira", "rmia"],
        references=4,
        out=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
        split_check=False,
    )
    values.update(changes)
    return AuditConfig(**values)


def _scores(run, name):
    return run.scores[name].to_numpy()


def test_second_run_loads_every_reference_and_gives_identical_numbers(digits_audit, tmp_path) -> None:
    first = run_audit(_config(digits_audit, tmp_path))
    second = run_audit(_config(digits_audit, tmp_path))
    assert first.result.references["trained"] == 4 and second.result.references["trained"] == 0
    assert second.result.references["loaded_from_cache"] == 4
    np.testing.assert_array_equal(_scores(first, "lira"), _scores(second, "lira"))


def test_interrupted_audit_resumes_from_finished_references(digits_audit, tmp_path, monkeypatch) -> None:
    uninterrupted = run_audit(_config(digits_audit, tmp_path / "a"))
    calls = {"n": 0}
    real = SklearnRecipe.fit

    def flaky_fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C does halfway through the references
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SklearnRecipe, "fit", flaky_fit)
    with pytest.raises(KeyboardInterrupt):
        run_audit(_config(digits_audit, tmp_path / "b"))
    monkeypatch.setattr(SklearnRecipe, "fit", real)
    resumed = run_audit(_config(digits_audit, tmp_path / "b"))
    assert resumed.result.references["loaded_from_cache"] == 2
    assert resumed.result.references["trained"] == 2
    for name in ("lira", "rmia"):
        np.testing.assert_array_equal(_scores(uninterrupted, name), _scores(resumed, name))


def test_truncated_cache_entry_is_detected_and_retrained(digits_audit, tmp_path) -> None:
    run_audit(_config(digits_audit, tmp_path))
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 4
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    rerun = run_audit(_config(digits_audit, tmp_path))
    assert rerun.result.references["trained"] == 1 and rerun.result.references["loaded_from_cache"] == 3


def test_changing_the_data_changes_the_key(digits_audit, tmp_path) -> None:
    run_audit(_config(digits_audit, tmp_path))
    other = run_audit(_config(digits_audit, tmp_path, population=str(digits_audit.population)))
    assert other.result.references["trained"] == 4


def test_other_feature_columns_change_the_key(digits_audit, tmp_path) -> None:
    # Same files, other columns: other models. Reusing the cached ones would report another model's leak.
    # A recipe target, retrained on the columns given (a fitted estimator would refuse fewer columns).
    recipe = dict(model=f"{RECIPE}:recipe", references=2, attacks=["loss", "rmia"])
    full = run_audit(_config(digits_audit, tmp_path, **recipe))
    dropped = run_audit(_config(digits_audit, tmp_path, ignore_columns=["pixel_0_1", "pixel_0_2"], **recipe))
    assert dropped.result.references["trained"] == 2
    assert dropped.result.data["n_features"] == full.result.data["n_features"] - 2
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 6  # targets too: three models for each column set
    again = run_audit(_config(digits_audit, tmp_path, ignore_columns=["pixel_0_1", "pixel_0_2"], **recipe))
    assert again.result.references["loaded_from_cache"] == 2


def test_a_cache_that_fails_mid_run_is_a_config_error_and_leaves_no_partial_file(tmp_path) -> None:
    cache = LogitCache(tmp_path / "c")
    cache.store("first", np.ones((2, 3), dtype=np.float32))
    for entry in (tmp_path / "c").iterdir():
        entry.unlink()
    (tmp_path / "c").rmdir()
    (tmp_path / "c").write_text("")  # the directory is gone and a file stands in its place
    from membershield.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot write to cache directory"):
        cache.store("second", np.ones((2, 3), dtype=np.float32))
    full = LogitCache(tmp_path / "d")
    full.store("kept", np.ones((2, 3), dtype=np.float32))
    real_save = np.save

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    np.save = disk_full
    try:
        with pytest.raises(ConfigError, match="No space left on device"):
            full.store("second", np.ones((2, 3), dtype=np.float32))
    finally:
        np.save = real_save
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["kept.json", "kept.npy"]


def test_a_new_model_version_reuses_references_unless_its_recipe_or_columns_differ(digits_audit, tmp_path) -> None:
    import warnings

    import joblib
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    run_audit(_config(digits_audit, tmp_path))
    members = pd.read_csv(digits_audit.members)
    X, y = members.drop(columns="digit"), members["digit"]
    template = clone(joblib.load(digits_audit.overfit_model))
    seeds = {name: 7 for name in template.get_params(deep=True) if name.endswith("random_state")}
    assert seeds, "the fixture's model should have a seed to change"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reseeded = clone(template).set_params(**seeds).fit(X, y)
        fewer_columns = clone(template).fit(X.iloc[:, :60], y)
    versions = {}
    for name, model in (("reseeded", reseeded), ("fewer-columns", fewer_columns)):
        joblib.dump(model, tmp_path / f"{name}.joblib")
        versions[name] = run_audit(_config(digits_audit, tmp_path, model=str(tmp_path / f"{name}.joblib")))
    # Only the target's seed changed: the references (each with its own seed) are the same models.
    assert versions["reseeded"].result.references["loaded_from_cache"] == 4
    # Trained on other columns: the references must be too.
    assert versions["fewer-columns"].result.references["trained"] == 4


def test_cache_round_trip_and_unwritable_directory(tmp_path) -> None:
    cache = LogitCache(tmp_path / "c")
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.store("k", array)
    np.testing.assert_array_equal(cache.load("k"), array)
    assert cache.load("missing") is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    from membershield.errors import ConfigError

    with pytest.raises(ConfigError, match="not writable"):
        LogitCache(blocker / "sub")


def test_ctrl_c_stops_the_cli_with_code_130_and_keeps_finished_references(digits_audit, tmp_path) -> None:
    """A real SIGINT to the command line, as Ctrl-C sends it, while reference models train."""
    cache = tmp_path / "cache"
    command = [
        sys.executable, "-m", "membershield", "audit", "--model", str(digits_audit.overfit_model),
        "--train", str(digits_audit.members), "--holdout", str(digits_audit.nonmembers),
        "--label-column", "digit", "--attacks", "lira", "--references", "64", "--out", str(tmp_path / "out"),
        "--cache", str(cache), "--store", str(tmp_path / "history.db"),
    ]  # fmt: skip
    audit = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job may inherit SIG_IGN
    )
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*.npy"))) < 2 and audit.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert audit.poll() is None, "the audit ended before it could be interrupted"
    finished = len(list(cache.glob("*.npy")))
    audit.send_signal(signal.SIGINT)
    _, stderr = audit.communicate(timeout=60)
    assert audit.returncode == 130
    assert "interrupted: finished reference models are cached" in " ".join(stderr.split())
    assert len(list(cache.glob("*.npy"))) >= finished >= 2
    assert not (tmp_path / "out" / "audit.json").exists()


def test_a_scikit_learn_mlp_that_swallows_ctrl_c_is_not_kept_half_trained(monkeypatch) -> None:
    """scikit-learn's MLP catches KeyboardInterrupt and returns early with a warning; the recipe re-raises."""
    from sklearn.neural_network import MLPClassifier

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MLPClassifier, "_backprop", interrupted)
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 4)))
    y = np.arange(60) % 3
    with pytest.raises(KeyboardInterrupt):
        SklearnRecipe(MLPClassifier(max_iter=5), None).fit(X, y, np.arange(3), seed=0)
