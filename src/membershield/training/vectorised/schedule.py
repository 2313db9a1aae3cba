"""Each model's own minibatches of one epoch, gathered step by step for all models."""

from __future__ import annotations

import math

import numpy as np
import torch


def _epoch_schedule(
    subsets: list[np.ndarray], generators: list[torch.Generator], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``(steps, K, B)``, loss weights ``(steps, K, B)`` and active models ``(steps, K)`` of one epoch."""
    K = len(subsets)
    steps = max(math.ceil(len(rows) / batch_size) for rows in subsets)
    rows_out = torch.empty((K, steps * batch_size), dtype=torch.int64)
    weights = torch.zeros((K, steps * batch_size), dtype=torch.float32)
    active = torch.zeros((K, steps), dtype=torch.bool)
    for k, (rows, generator) in enumerate(zip(subsets, generators, strict=True)):
        n = len(rows)
        order = torch.from_numpy(rows)[torch.randperm(n, generator=generator)]
        rows_out[k, :n] = order
        rows_out[k, n:] = order[0]  # padding: any real row, with weight zero
        full, last = divmod(n, batch_size)
        weights[k, : full * batch_size] = 1.0 / batch_size
        if last:
            weights[k, full * batch_size : n] = 1.0 / last
        active[k, : math.ceil(n / batch_size)] = True
    shape = (K, steps, batch_size)
    return (
        rows_out.view(shape).transpose(0, 1).contiguous(),
        weights.view(shape).transpose(0, 1).contiguous(),
        active.T.contiguous(),
    )
