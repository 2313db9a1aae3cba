"""The training loop of one group of models, run in lockstep: one step of every model at a time."""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from membershield.training.vectorised.adam import _EnsembleAdam
from membershield.training.vectorised.layerwise import _LayerwiseEnsemble
from membershield.training.vectorised.schedule import _epoch_schedule
from membershield.training.vectorised.spec import VectorisedSpec
from membershield.training.vectorised.vmapped import _VmapEnsemble


def _train_group(
    spec: VectorisedSpec,
    models: list[nn.Module],
    X: np.ndarray,
    y: np.ndarray,
    subsets: list[np.ndarray],
    seeds: list[int],
    stop: threading.Event | None = None,
) -> None:
    K = len(models)
    features = torch.from_numpy(X)
    labels = torch.from_numpy(y)
    ensemble = _LayerwiseEnsemble.of(models)
    if ensemble is None:
        ensemble = _VmapEnsemble(models, features[: spec.batch_size].expand(K, -1, -1))
    buffers = ensemble.buffers
    optimiser = _EnsembleAdam(ensemble.parameters(), spec)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    # Reused every step: no multi-megabyte allocation a step (glibc recycles them here, other allocators may not).
    inputs = torch.empty((K * spec.batch_size, features.shape[1]), dtype=features.dtype)
    targets = torch.empty(K * spec.batch_size, dtype=labels.dtype)
    for _ in range(spec.epochs):
        rows, weights, active = _epoch_schedule(subsets, generators, spec.batch_size)
        everyone = active.all(1).tolist()
        for step in range(rows.shape[0]):
            if stop is not None and stop.is_set():
                return  # another group failed or was interrupted: these models will not be used
            batch = rows[step].view(-1)
            idle = None if everyone[step] else torch.nonzero(~active[step]).flatten()
            # A skipped model's buffers (running statistics) must not see its padding rows either.
            kept = {name: b.index_select(0, idle) for name, b in buffers.items()} if idle is not None else {}
            torch.index_select(features, 0, batch, out=inputs)
            torch.index_select(labels, 0, batch, out=targets)
            logits = ensemble.forward(inputs.view(K, -1, features.shape[1]))
            losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
            ensemble.zero_grad()
            torch.dot(losses, weights[step].view(-1)).backward()
            optimiser.step(
                ensemble.gradients(), None if everyone[step] else torch.nonzero(active[step]).flatten().tolist()
            )
            with torch.no_grad():
                for name, saved in kept.items():
                    buffers[name].index_copy_(0, idle, saved)
    ensemble.write_back(models)
