"""Backends give the same audit for the same seed; bad backend options fail fast with exit code 2."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from membershield.audit import plan_audit, run_audit
from membershield.config import AuditConfig
from tests.test_cli import assert_one_line_error, base_args, run_cli

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"


def _config(d, tmp_path: Path, **changes) -> AuditConfig:
    values = dict(
        model=str(d.overfit_model),
        train=str(d.members),
        holdout=str(d.nonmembers),
        label_column="digit",
        attacks=["lira", "rmia"],
        references=4,
        out=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
        split_check=False,
    )
    values.update(changes)
    return AuditConfig(**values)


def _assert_same_scores(a, b) -> None:
    for name in ("lira", "rmia"):
        np.testing.assert_allclose(a.scores[name].to_numpy(), b.scores[name].to_numpy(), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def local_run(digits_audit, tmp_path_factory):
    return run_audit(_config(digits_audit, tmp_path_factory.mktemp("local")))


def test_processes_backend_matches_local(digits_audit, tmp_path, local_run) -> None:
    run = run_audit(_config(digits_audit, tmp_path, backend="processes", n_jobs=2))
    assert run.result.references["trained"] == 4
    _assert_same_scores(local_run, run)


@pytest.mark.slow
def test_processes_backend_runs_a_torch_recipe_from_a_file(digits_audit, tmp_path) -> None:
    # The recipe is imported from a file under a private module name; workers must re-import it.
    # Sequential locally too: the comparison is between processes, not between trainers.
    config = _config(
        digits_audit, tmp_path, model=f"{RECIPE}:recipe", references=2, attacks=["rmia"], trainer="sequential"
    )
    local = run_audit(config)
    config_p = _config(
        digits_audit,
        tmp_path / "p",
        model=f"{RECIPE}:recipe",
        references=2,
        attacks=["rmia"],
        backend="processes",
        n_jobs=2,
    )
    parallel = run_audit(config_p)
    # Worker processes run PyTorch with fewer threads, which changes float rounding in its kernels: the
    # scores agree to rounding, not bit for bit. An RMIA score is a fraction of the z-sample, so rounding
    # that swaps a record with a z-record moves its score by one z-step; a few records move a few steps.
    z_step = _z_step(local.scores["rmia"])
    differ = np.abs(local.scores["rmia"] - parallel.scores["rmia"])
    assert differ.max() <= 5 * z_step + 1e-9, (differ.max(), z_step)
    assert abs(local.result.attack("rmia").auc - parallel.result.attack("rmia").auc) < 2e-3


@pytest.mark.slow
def test_ray_backend_matches_local(digits_audit, tmp_path, local_run) -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed, but CI must exercise the ray backend (pip install '.[ray]')")
        pytest.skip("Ray is not installed (pip install 'membershield[ray]')")
    import ray

    try:
        run = run_audit(_config(digits_audit, tmp_path, backend="ray", n_jobs=2))
    finally:
        ray.shutdown()
    _assert_same_scores(local_run, run)


def test_plan_counts_cached_models_and_caches_its_probe(digits_audit, tmp_path) -> None:
    plan = plan_audit(_config(digits_audit, tmp_path))
    assert (plan.n_models, plan.n_cached, plan.n_to_train) == (4, 0, 3)
    assert plan.probe_seconds is not None and plan.estimated_seconds > 0
    run = run_audit(_config(digits_audit, tmp_path))
    assert run.result.references["loaded_from_cache"] == 1
    assert plan_audit(_config(digits_audit, tmp_path)).n_to_train == 0


def test_plan_flag_prints_and_exits_zero(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    args = [*base_args(digits_audit, tmp_path, **{"--attacks": "lira", "--references": "2"}), "--plan"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "2 models needed" in out and "to train" in out
    assert not (tmp_path / "out" / "audit.json").exists()


@pytest.mark.parametrize(
    ("option", "value", "needle"), [("--ray-address", "127.0.0.1:9", "--backend ray"), ("--n-jobs", "2", "--backend")]
)
def test_an_option_of_another_backend_is_an_error(digits_audit, tmp_path, monkeypatch, capsys, option, value, needle):
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path), option, value)
    assert_one_line_error(code, err, option.removeprefix("--").replace("-", "_"), needle)


def test_unknown_backend(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--backend": "spark"}))
    assert_one_line_error(code, err, "'spark'", "local, processes, ray")


def test_unreachable_ray_address_keeps_finished_references(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    if importlib.util.find_spec("ray") is None and os.environ.get("CI") != "true":
        pytest.skip("Ray is not installed (pip install 'membershield[ray]')")
    common = {"--attacks": "lira", "--references": "2"}
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **common))
    assert code == 0, err
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    args = base_args(
        digits_audit, tmp_path, **{**common, "--references": "3", "--backend": "ray", "--ray-address": "127.0.0.1:9"}
    )
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "127.0.0.1:9", "--ray-address")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before


def test_plan_with_an_unreachable_ray_address_fails_like_the_audit(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    if importlib.util.find_spec("ray") is None and os.environ.get("CI") != "true":
        pytest.skip("Ray is not installed (pip install 'membershield[ray]')")
    args = base_args(digits_audit, tmp_path, **{"--attacks": "lira", "--references": "2", "--backend": "ray"})
    code, _, err = run_cli(monkeypatch, capsys, *args, "--ray-address", "127.0.0.1:9", "--plan")
    assert_one_line_error(code, err, "127.0.0.1:9", "--ray-address")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_plan_probe_on_the_processes_backend_is_found_by_the_audit(digits_audit, tmp_path) -> None:
    # The recipe declares vectorised training, which only the local backend uses: the probe must be
    # trained and keyed as the processes backend trains, or the audit never finds it.
    config = _config(
        digits_audit, tmp_path, model=f"{RECIPE}:recipe", references=2, attacks=["rmia"], backend="processes", n_jobs=2
    )
    first = plan_audit(config)
    assert (first.n_models, first.n_cached, first.n_to_train, first.parallelism) == (3, 0, 2, 2)
    second = plan_audit(config)  # finds the first probe (the target), probes the first reference
    assert (second.n_cached, second.n_to_train) == (1, 1)
    run = run_audit(config)
    assert (run.result.references["loaded_from_cache"], run.result.references["trained"]) == (1, 1)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3  # the target and two references, nothing stray


def test_unwritable_cache_directory(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--cache": str(blocker / "c")}))
    assert_one_line_error(code, err, "not writable", "--cache")


@pytest.mark.slow
def test_vectorised_trainer_matches_sequential_recipe_training(digits_audit, tmp_path) -> None:
    # examples/torch_mlp.py declares vectorised_spec(): the local backend trains its references together.
    common = dict(model=f"{RECIPE}:recipe", references=4, attacks=["lira", "rmia"])
    vectorised = run_audit(_config(digits_audit, tmp_path / "v", trainer="vectorised", **common))
    sequential = run_audit(_config(digits_audit, tmp_path / "s", trainer="sequential", **common))
    # Same initial weights and batches; batched products sum in another order, so equal up to rounding.
    for name in ("lira", "rmia"):
        assert abs(vectorised.result.attack(name).auc - sequential.result.attack(name).auc) < 0.01, name
    # The trainer is part of the cache key: a sequential run never reuses vectorised outputs.
    again = run_audit(_config(digits_audit, tmp_path / "v", trainer="sequential", **common))
    assert again.result.references["trained"] == 4


def test_vectorised_trainer_needs_a_declared_spec(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(
        monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--trainer": "vectorised", "--attacks": "lira"})
    )
    assert_one_line_error(code, err, "vectorised_spec")
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--trainer": "fast"}))
    assert_one_line_error(code, err, "'fast'")


def _z_step(scores: np.ndarray) -> float:
    """The smallest gap between distinct RMIA scores: one z-record's share of the score."""
    values = np.unique(np.round(scores, 12))
    return float(np.min(np.diff(values)))
