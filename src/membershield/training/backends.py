"""Where reference models train: in this process, in local worker processes, or on a Ray cluster.

Every backend runs the same pure job function, ``train_job``, and hands results back as they finish, so
the caller can store each one in the cache at once (an interrupted audit loses at most the models in
flight). Seeds travel with the jobs, so the same audit gives the same models on every backend.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from membershield.errors import ConfigError
from membershield.targets.base import Recipe

BACKENDS = ("local", "processes", "ray")


@dataclass(frozen=True)
class TrainingTask:
    index: int
    train_mask: np.ndarray
    seed: int


def train_job(
    recipe: Recipe, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, task: TrainingTask
) -> tuple[int, np.ndarray]:
    """Train one model on its rows and return its logits on every row."""
    model = recipe.fit(features[task.train_mask], labels[task.train_mask], classes, task.seed)
    return task.index, np.asarray(model.logits(features), dtype=np.float32)


class Backend(Protocol):
    name: str

    def model_tag(self, recipe: Recipe) -> str:
        """Part of each model's cache key: what makes this backend's models differ from another's."""
        ...

    def parallelism(self) -> int:
        """How many models train at the same time (for time estimates)."""
        ...

    def run(
        self,
        recipe: Recipe,
        features: pd.DataFrame,
        labels: np.ndarray,
        classes: np.ndarray,
        tasks: list[TrainingTask],
    ) -> Iterator[tuple[int, np.ndarray]]: ...


TRAINERS = ("auto", "vectorised", "sequential")
VECTORISED_GROUP = 16  # models trained together; an interruption loses at most one group in flight


def vectorised_spec_for(recipe: Recipe) -> Any:
    """The training spec a PyTorch recipe file declares (``vectorised_spec()``), or None."""
    from membershield.targets.torch import TorchRecipe
    from membershield.training.vectorised import vectorised_spec_of

    if not isinstance(recipe, TorchRecipe):
        return None
    return vectorised_spec_of(recipe.function)


class LocalBackend:
    """Trains in this process: K models at once when the recipe declares its training, else one by one."""

    name = "local"

    def __init__(self, trainer: str = "auto") -> None:
        if trainer not in TRAINERS:
            raise ConfigError(f"unknown trainer '{trainer}': choose one of {', '.join(TRAINERS)}")
        self.trainer = trainer

    def _spec(self, recipe: Recipe) -> Any:
        if self.trainer == "sequential":
            return None
        spec = vectorised_spec_for(recipe)
        if spec is None and self.trainer == "vectorised":
            raise ConfigError(
                "--trainer vectorised needs a PyTorch recipe whose file declares vectorised_spec()"
                " (see examples/torch_mlp.py)"
            )
        return spec

    def model_tag(self, recipe: Recipe) -> str:
        """Part of the cache key: vectorised and sequential training agree only up to float rounding."""
        return "vectorised" if self._spec(recipe) is not None else ""

    def parallelism(self) -> int:
        return 1

    def run(self, recipe, features, labels, classes, tasks):  # type: ignore[no-untyped-def]
        spec = self._spec(recipe)
        if spec is None:
            for task in tasks:
                yield train_job(recipe, features, labels, classes, task)
            return
        from membershield.targets.torch import TorchTarget, features_as_float32
        from membershield.training.vectorised import train_vectorised

        X = features_as_float32(features)
        position = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
        y = np.array([position[v] for v in np.asarray(labels).tolist()], dtype=np.int64)
        for start in range(0, len(tasks), VECTORISED_GROUP):
            group = tasks[start : start + VECTORISED_GROUP]
            masks = np.stack([task.train_mask for task in group])
            models = train_vectorised(spec, X, y, len(position), masks, [task.seed for task in group])
            for task, module in zip(group, models, strict=True):
                yield task.index, TorchTarget(module, np.asarray(classes)).logits(features)


class ProcessBackend:
    """joblib's loky workers on this machine; needs nothing installed beyond joblib."""

    name = "processes"

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = n_jobs or max(1, os.cpu_count() or 1)

    def model_tag(self, recipe: Recipe) -> str:
        return ""  # one model per job, trained by the recipe itself, as the sequential local trainer does

    def parallelism(self) -> int:
        return self.n_jobs

    def run(self, recipe, features, labels, classes, tasks):  # type: ignore[no-untyped-def]
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=self.n_jobs, backend="loky", return_as="generator_unordered")
        yield from parallel(delayed(train_job)(recipe, features, labels, classes, task) for task in tasks)


class RayBackend:
    """Ray tasks: joins ``address`` when given, else starts a local Ray instance for this audit."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("the ray backend needs Ray: pip install 'membershield[ray]'") from exc
        if address and address != "auto":
            check_reachable(address)  # now, not when the first model is due: a cached audit must fail too
        self.ray = ray
        self.address = address
        self.num_cpus = num_cpus

    def model_tag(self, recipe: Recipe) -> str:
        return ""  # one model per task, trained by the recipe itself, as the sequential local trainer does

    def parallelism(self) -> int:
        """The cluster's CPUs when joining one (this connects), else the local instance's."""
        if not self.address:
            return self.num_cpus or max(1, os.cpu_count() or 1)
        self._connect()
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        try:
            if self.address:
                self.ray.init(address=self.address, log_to_driver=False)
            else:
                self.ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types here
            raise ConfigError(
                f"cannot connect to the Ray cluster at {self.address or 'a new local instance'}:"
                f" {type(exc).__name__}: {exc}".splitlines()[0]
                + " (check --ray-address)"
            ) from exc

    def run(self, recipe, features, labels, classes, tasks):  # type: ignore[no-untyped-def]
        self._connect()
        ray = self.ray
        remote = ray.remote(train_job)
        shared = [ray.put(x) for x in (recipe, features, labels, classes)]
        pending = [remote.remote(*shared, task) for task in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nobody listens on; ``ray.init`` would retry for minutes."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address '{address}' must look like HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (is it running? check --ray-address)"
        ) from exc


def create_backend(name: str, ray_address: str | None = None, n_jobs: int | None = None, trainer: str = "auto") -> Any:
    if trainer != "auto" and name != "local":
        raise ConfigError(
            f"--trainer {trainer} applies to the local backend only; the {name} backend trains one by one"
        )
    if name == "local":
        return LocalBackend(trainer)
    if name == "processes":
        return ProcessBackend(n_jobs)
    if name == "ray":
        return RayBackend(ray_address, n_jobs)
    raise ConfigError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)}")
