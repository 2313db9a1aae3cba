"""``run_audit``: the stages of a model audit in order, timed, with progress.

prepare (model, data, reference plan) -> model outputs (target and reference logits, computed once) ->
attacks and metrics (shared with every audit kind) -> split check -> result -> every artifact written.
"""

from __future__ import annotations

import time

from membershield.attacks import AttackInputs
from membershield.audit.assemble import model_audit_result, scores_frame
from membershield.audit.measure import MeasureSettings, ProgressCallback, run_attacks
from membershield.audit.model_outputs import ModelOutputs, live_queries, reference_outputs, target_logits
from membershield.audit.outputs import AuditRun, write_audit_outputs
from membershield.audit.prepare import PreparedAudit, prepare_audit
from membershield.audit.unlearning import check_unlearning, prepare_forgotten
from membershield.audit.user_level import pool_user_level
from membershield.config import AuditConfig
from membershield.data.encode import numeric_matrix
from membershield.data.pool import Tables
from membershield.split_check import blind_split_check
from membershield.targets import LoadedModel
from membershield.training import LogitCache
from membershield.training.backends import create_backend


def _slices(prepared: PreparedAudit) -> dict:
    pool = prepared.pool
    slices = {"class": prepared.raw_labels[: prepared.n_audit].astype(str)}
    if pool.slice_column is not None and pool.slice_values is not None:
        slices[pool.slice_column] = pool.slice_values.astype(str)
    if prepared.rarity is not None:
        slices["rarity"] = prepared.rarity.labels(prepared.n_audit)
    return slices


def _origin(prepared: PreparedAudit):
    pool = prepared.pool
    return lambda i: {"source": str(pool.source[i]), "row": int(pool.source_row[i])}


def _split_check(prepared: PreparedAudit, config: AuditConfig, warnings: list[str]) -> dict | None:
    if not config.split_check:
        return None
    n = prepared.n_audit
    pool = prepared.pool
    split = blind_split_check(
        pool.features, prepared.raw_labels[:n], pool.is_member, seed=config.seed, users=pool.user_values
    )
    if (warning := split.warning()) is not None:
        warnings.append(warning)
    return split.to_dict()


def run_audit(
    config: AuditConfig,
    progress: ProgressCallback | None = None,
    model: LoadedModel | None = None,
    *,
    tables: Tables | None = None,
    reports: tuple[str, ...] = (),
) -> AuditRun:
    """Run a model audit and write its artifacts into ``config.out``: ``audit.json``, ``scores.csv`` and
    the ``reports`` asked for (``REPORTS``: ``report.html`` and ``summary.md``, as the command line writes).

    ``model`` and ``tables``: an already built target/recipe and data in memory, instead of loading
    ``config.model``, ``config.train`` and ``config.holdout`` (see :func:`prepare_audit`).
    """
    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    report("loading model and data", 0, 0)
    prepared = prepare_audit(config, model, tables)
    forgotten = prepare_forgotten(config, prepared) if config.forgotten else None
    cache = LogitCache(config.cache) if config.cache else None
    backend = create_backend(config.backend, config.ray_address, config.n_jobs, config.trainer)
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if prepared.target_job is not None:
        report("training the target from its recipe", 0, 1)
    logits = target_logits(prepared, cache, backend)
    timings["target"] = time.perf_counter() - clock

    clock = time.perf_counter()
    reference_logits, training = reference_outputs(prepared, cache, backend, report)
    outputs = ModelOutputs(logits, reference_logits, training)
    timings["references"] = time.perf_counter() - clock

    features = numeric_matrix(prepared.features) if any(a.needs_features for a in prepared.attacks) else None
    inputs = AttackInputs(
        prepared.labels,
        logits,
        reference_logits,
        prepared.keep,
        prepared.n_audit,
        config.seed,
        live_queries(prepared),
        features,
    )
    attacks, columns = run_attacks(
        prepared.attacks,
        inputs,
        prepared.pool.is_member,
        MeasureSettings.of(config),
        slices=_slices(prepared),
        origin=_origin(prepared),
        progress=report,
    )
    timings["attacks"] = sum(r.seconds for r in attacks)
    user_level = pool_user_level(prepared.pool, columns, MeasureSettings.of(config))

    warnings = list(prepared.warnings)
    clock = time.perf_counter()
    if config.split_check:
        report("split check", 0, 0)
    split = _split_check(prepared, config, warnings)
    if split is not None:
        timings["split_check"] = time.perf_counter() - clock
    unlearning = None
    if forgotten is not None:
        clock = time.perf_counter()
        unlearning = check_unlearning(forgotten, prepared, config, cache, backend, report, warnings)
        timings["unlearning"] = time.perf_counter() - clock
    result = model_audit_result(prepared, config, outputs, attacks, split, timings, warnings, user_level=user_level)
    result.unlearning = unlearning
    run = AuditRun(result, scores_frame(prepared, logits, columns))
    write_audit_outputs(run, config.out, reports=reports)
    return run
