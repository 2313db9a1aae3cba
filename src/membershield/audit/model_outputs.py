"""The second stage of a model audit: the target's outputs on every record, and the reference models'
(trained where missing, from the cache otherwise). Logits are computed once and shared by every attack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from membershield.audit.measure import ProgressCallback
from membershield.audit.prepare import PreparedAudit
from membershield.errors import InputDataError, MembershieldError
from membershield.queries import LiveQueries
from membershield.targets.failures import first_failing_row, scores_finitely
from membershield.training import LogitCache, train_or_load
from membershield.whitebox_references import ReferenceWhiteBox, RetrainedWhiteBox


@dataclass
class ModelOutputs:
    target_logits: np.ndarray  # (n, C), audit rows then population rows
    reference_logits: np.ndarray  # (K, n, C)
    training: Any  # what train_or_load did: trained, loaded, seconds_training


def _unscorable(prepared: PreparedAudit, target: Any, problem: str) -> str:
    """The error for audit data the model cannot score, naming the first record it fails on."""
    row = first_failing_row(prepared.features, scores_finitely(target.logits)) if target is not None else None
    if row is None:
        where = ""
    elif row < prepared.n_audit:
        where = f" (first: {prepared.pool.source[row]} row {int(prepared.pool.source_row[row])})"
    else:
        where = f" (first: population row {row - prepared.n_audit})"
    return (
        f"the model cannot score the audit data{where}: {problem}; values far outside the model's range"
        " overflow its arithmetic: check those records or the model"
    )


def target_logits(prepared: PreparedAudit, cache: LogitCache | None, backend: Any) -> np.ndarray:
    """The target's logits on every row: queried, or (for a recipe) trained on the members and cached."""
    if prepared.target_job is not None:
        logits, _ = train_or_load(
            prepared.loaded.recipe,
            prepared.features,
            prepared.raw_labels,
            prepared.classes,
            [prepared.target_job],
            prepared.data_fingerprint,
            cache,
            backend=backend,
        )
        logits = logits[0]
    else:
        target = prepared.loaded.target
        assert target is not None
        try:
            with np.errstate(all="ignore"):  # judged below: an overflow shows as a non-finite output
                logits = np.asarray(target.logits(prepared.features), dtype=np.float32)
        except MembershieldError:
            raise
        except Exception as exc:  # the user's model failed on the user's data: say where
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise InputDataError(_unscorable(prepared, target, problem)) from exc
    if not np.isfinite(logits).all():
        bad = int(np.count_nonzero(~np.isfinite(logits).all(axis=1)))
        problem = f"it returned NaN or infinite outputs for {bad} record(s)"
        raise InputDataError(_unscorable(prepared, prepared.loaded.target, problem))
    return logits


def reference_outputs(
    prepared: PreparedAudit, cache: LogitCache | None, backend: Any, progress: ProgressCallback
) -> tuple[np.ndarray, Any]:
    """Every reference model's logits (trained where the cache has none), with progress per model."""
    done = {"count": 0}

    def on_done(_k: int, _cached: bool) -> None:
        done["count"] += 1
        progress("reference models", done["count"], prepared.n_references)

    if prepared.n_references:
        progress("reference models", 0, prepared.n_references)
    return train_or_load(
        prepared.loaded.recipe,
        prepared.features,
        prepared.raw_labels,
        prepared.classes,
        prepared.jobs,
        prepared.data_fingerprint,
        cache,
        backend=backend,
        on_done=on_done,
    )


def live_queries(prepared: PreparedAudit) -> LiveQueries:
    """New queries to the target for attacks that ask them; a recipe's target is retrained for them (its
    cached outputs cannot answer new records), with the same seed, so it is the same model."""

    def live_target() -> Any:
        if prepared.loaded.target is not None:
            return prepared.loaded.target
        job = prepared.target_job
        assert job is not None and prepared.loaded.recipe is not None
        mask = job.train_mask
        return prepared.loaded.recipe.fit(
            prepared.features[mask], prepared.raw_labels[mask], prepared.classes, job.seed
        )

    return LiveQueries(live_target, prepared.features, prepared.labels, _reference_white_box(prepared))


def _reference_white_box(prepared: PreparedAudit) -> ReferenceWhiteBox | None:
    """The reference models trained again on first use, for the white-box attacks' calibration."""
    recipe = prepared.loaded.recipe
    if recipe is None or not prepared.jobs:
        return None
    jobs = prepared.jobs

    def fit(k: int) -> Any:
        mask = jobs[k].train_mask
        return recipe.fit(prepared.features[mask], prepared.raw_labels[mask], prepared.classes, jobs[k].seed)

    return RetrainedWhiteBox(fit, len(jobs), prepared.features, prepared.labels).references(range(len(jobs)))
