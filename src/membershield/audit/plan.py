"""``membershield audit --plan``: how many models an audit needs, how many are cached, and an estimate of
the training time from one model trained now (and kept in the cache under the key the audit reads)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from membershield.audit.prepare import prepare_audit
from membershield.config import AuditConfig
from membershield.targets.base import Recipe
from membershield.training import LogitCache, ReferenceJob, train_or_load
from membershield.training.backends import LocalBackend, create_backend
from membershield.training.references import job_key


@dataclass(frozen=True)
class AuditPlan:
    n_models: int
    n_cached: int
    n_to_train: int
    probe_seconds: float | None
    probe_cached: bool
    parallelism: int
    estimated_seconds: float

    def describe(self) -> str:
        if self.n_to_train == 0 and self.probe_seconds is None:
            return f"{self.n_models} models needed, all {self.n_cached} cached: the audit only queries and attacks."
        probe = ""
        if self.probe_seconds is not None:
            kept = "now cached" if self.probe_cached else "not kept: no cache"
            probe = f" one model trained in {self.probe_seconds:.1f} s ({kept});"
        return (
            f"{self.n_models} models needed: {self.n_cached} cached, {self.n_to_train} to train;{probe}"
            f" estimated training time {self.estimated_seconds:.0f} s with {self.parallelism} worker(s)"
        )


def plan_audit(config: AuditConfig) -> AuditPlan:
    """Count the models an audit needs and how many are cached; time one model to estimate the rest.

    The probe model is stored in the cache under the key the audit will look up, so planning costs
    nothing that the audit would not spend. Non-local backends train one model per worker with the
    recipe itself, so the probe trains so too, here.
    """
    prepared = prepare_audit(config)
    jobs = ([prepared.target_job] if prepared.target_job is not None else []) + prepared.jobs
    return plan_jobs(
        config,
        prepared.loaded.recipe,
        prepared.features,
        prepared.raw_labels,
        prepared.classes,
        jobs,
        prepared.data_fingerprint,
    )


def plan_jobs(
    config: AuditConfig,
    recipe: Recipe | None,
    features: pd.DataFrame,
    raw_labels: np.ndarray,
    classes: np.ndarray,
    jobs: list[ReferenceJob],
    data_fingerprint: str,
) -> AuditPlan:
    """The plan of any audit's models (a model audit's target and references, a recipe audit's K models)."""
    cache = LogitCache(config.cache) if config.cache else None
    backend = create_backend(config.backend, config.ray_address, config.n_jobs, config.trainer)
    tag = backend.model_tag(recipe)
    missing = [j for j in jobs if cache is None or cache.load(job_key(recipe, data_fingerprint, j, tag)) is None]
    parallelism = backend.parallelism() if missing else 1
    probe_seconds = None
    estimate = 0.0
    if missing:
        probe_backend = backend if isinstance(backend, LocalBackend) else LocalBackend("sequential")
        assert probe_backend.model_tag(recipe) == tag
        start = time.perf_counter()
        train_or_load(
            recipe, features, raw_labels, classes, missing[:1], data_fingerprint, cache, backend=probe_backend
        )
        probe_seconds = time.perf_counter() - start
        estimate = probe_seconds * (len(missing) - 1) / parallelism
    n_to_train = len(missing) - (1 if missing and cache is not None else 0)
    return AuditPlan(
        n_models=len(jobs),
        n_cached=len(jobs) - len(missing),
        n_to_train=n_to_train,
        probe_seconds=probe_seconds,
        probe_cached=cache is not None,
        parallelism=parallelism,
        estimated_seconds=estimate,
    )
