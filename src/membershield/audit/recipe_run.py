"""``run_recipe_audit``: the stages of a recipe audit (the privacy game) in order, timed, with progress.

prepare (pool, recipe, attacks, plan) -> every model's logits (trained or from the cache) -> every attack
played K times, each model the target of the others -> clustered intervals and per-record exposure ->
result -> every artifact written (see :mod:`.recipe_game` and :mod:`.recipe_measure`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from membershield.audit.measure import MeasureSettings, ProgressCallback, run_attacks
from membershield.audit.outputs import AuditRun, write_audit_outputs
from membershield.audit.recipe_game import GameInputs, PooledAttack, PreparedGame, game_logits, prepare_recipe_audit
from membershield.audit.recipe_measure import game_result, measure_game, trials_frame, write_exposure
from membershield.config import AuditConfig
from membershield.metrics import TwoWayBootstrap
from membershield.targets.base import Recipe
from membershield.training import LogitCache
from membershield.training.backends import create_backend

BOOTSTRAP_RESAMPLES = 1000


def run_recipe_audit(
    config: AuditConfig,
    progress: ProgressCallback | None = None,
    *,
    reports: tuple[str, ...] = (),
    resamples: int = BOOTSTRAP_RESAMPLES,
    recipe: Recipe | None = None,
) -> AuditRun:
    """Run a recipe audit and write ``audit.json`` (``mode: "recipe"``), ``scores.csv`` (one row per
    trial), ``exposure.csv`` (one row per record) and the ``reports`` asked for into ``config.out``.

    ``resamples``: draws of the two-way bootstrap behind every interval; ``recipe``: a recipe in memory
    instead of reading ``config.recipe`` (see :func:`prepare_recipe_audit`).
    """
    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    report("loading recipe and data", 0, 0)
    prepared = prepare_recipe_audit(config, recipe)
    cache = LogitCache(config.cache) if config.cache else None
    backend = create_backend(config.backend, config.ray_address, config.n_jobs, config.trainer)
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    logits, training = game_logits(prepared, cache, backend, report)
    timings["models"] = time.perf_counter() - clock

    inputs = GameInputs(prepared.labels, logits, prepared.keep, config.seed, prepared)
    pooled = [PooledAttack(a, i, len(prepared.attacks), report) for i, a in enumerate(prepared.attacks)]
    attacks, columns = run_attacks(
        pooled,
        inputs,
        prepared.keep.reshape(-1),
        MeasureSettings.of(config),
        slices={},  # per-class results come with clustered intervals from measure_game
        origin=lambda t: _origin(prepared, t),
        progress=report,
    )
    timings["attacks"] = sum(r.seconds for r in attacks)

    clock = time.perf_counter()
    report("clustered intervals", 0, 0)
    boot = TwoWayBootstrap.draw(prepared.n_records, prepared.n_models, resamples, seed=config.seed)
    attacks, exposures = measure_game(prepared, attacks, columns, MeasureSettings.of(config), boot)
    timings["intervals"] = time.perf_counter() - clock

    result = game_result(prepared, config, logits, training, attacks, exposures, boot, timings)
    run = AuditRun(result, trials_frame(prepared, logits, columns))
    write_audit_outputs(run, config.out, reports=reports)
    write_exposure(prepared, exposures, Path(config.out))
    return run


def _origin(prepared: PreparedGame, trial: int) -> dict[str, Any]:
    model, record = divmod(int(trial), prepared.n_records)
    return {"source": "data", "row": int(prepared.source_row[record]), "model": model}
