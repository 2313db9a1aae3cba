"""Train (or load from cache) the models an audit needs and return their logits on every row."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from membershield.targets.base import Recipe
from membershield.training.backends import Backend, LocalBackend, TrainingTask
from membershield.training.cache import LogitCache, cache_key


@dataclass(frozen=True)
class ReferenceJob:
    """One model to train: on ``rows[train_mask]``, with ``seed``; ``role`` names it in keys and logs."""

    role: str
    train_mask: np.ndarray
    seed: int


@dataclass
class TrainingReport:
    trained: int = 0
    loaded: int = 0
    seconds_training: float = 0.0


def job_key(recipe: Recipe, data_fingerprint: str, job: ReferenceJob, model_tag: str = "") -> str:
    return cache_key(
        "logits-v1",
        recipe.identity() + (f"+{model_tag}" if model_tag else ""),
        data_fingerprint,
        job.role,
        str(job.seed),
        np.packbits(job.train_mask).tobytes().hex(),
    )


def train_or_load(
    recipe: Recipe,
    features: pd.DataFrame,
    labels: np.ndarray,
    classes: np.ndarray,
    jobs: list[ReferenceJob],
    data_fingerprint: str,
    cache: LogitCache | None,
    backend: Backend | None = None,
    on_done: Callable[[int, bool], None] | None = None,
) -> tuple[np.ndarray, TrainingReport]:
    """Logits ``(len(jobs), n, C)`` of each job's model on all rows.

    Cached jobs are loaded; the rest go to ``backend`` and each result is stored as soon as it arrives,
    so an interrupted run loses only the models in flight.
    """
    report = TrainingReport()
    out = np.empty((len(jobs), len(labels), len(classes)), dtype=np.float32)
    backend = backend or LocalBackend()
    tag = backend.model_tag(recipe)
    keys = [job_key(recipe, data_fingerprint, job, tag) for job in jobs]
    tasks = []
    for k, job in enumerate(jobs):
        cached = cache.load(keys[k]) if cache is not None else None
        if cached is not None and cached.shape == out.shape[1:]:
            out[k] = cached
            report.loaded += 1
            if on_done:
                on_done(k, True)
        else:
            tasks.append(TrainingTask(k, job.train_mask, job.seed))
    start = time.perf_counter()
    for index, logits in backend.run(recipe, features, labels, classes, tasks):
        out[index] = logits
        report.trained += 1
        if cache is not None:
            cache.store(keys[index], logits)
        if on_done:
            on_done(index, False)
    report.seconds_training = time.perf_counter() - start
    return out, report
