"""Train (or load from cache) the models an audit needs and return their logits on every row."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from membershield.targets.base import Recipe
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


def job_key(recipe: Recipe, data_fingerprint: str, job: ReferenceJob) -> str:
    return cache_key(
        "logits-v1",
        recipe.identity(),
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
    on_done: Callable[[int, bool], None] | None = None,
) -> tuple[np.ndarray, TrainingReport]:
    """Logits ``(len(jobs), n, C)`` of each job's model on all rows; finished jobs are stored at once,
    so an interrupted run loses at most the model in progress."""
    report = TrainingReport()
    out = np.empty((len(jobs), len(labels), len(classes)), dtype=np.float32)
    for k, job in enumerate(jobs):
        key = job_key(recipe, data_fingerprint, job)
        cached = cache.load(key) if cache is not None else None
        if cached is not None and cached.shape == out.shape[1:]:
            out[k] = cached
            report.loaded += 1
            if on_done:
                on_done(k, True)
            continue
        start = time.perf_counter()
        model = recipe.fit(features[job.train_mask], labels[job.train_mask], classes, job.seed)
        out[k] = model.logits(features)
        report.seconds_training += time.perf_counter() - start
        report.trained += 1
        if cache is not None:
            cache.store(key, out[k])
        if on_done:
            on_done(k, False)
    return out, report
