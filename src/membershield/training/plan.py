"""Which rows each reference model trains on."""

from __future__ import annotations

import numpy as np


def membership_plan(n_rows: int, n_models: int, in_fraction: float, seed: int) -> np.ndarray:
    """``keep[k, i]``: whether model ``k`` trains on row ``i``.

    Every row is IN for the same number of models, ``round(n_models * in_fraction)`` (at least one, and
    at most ``n_models - 1`` so that OUT models exist too), as in the LiRA reference code; the models are
    chosen independently per row, so each model's training set has ``in_fraction`` of the rows in
    expectation and is a uniformly random subset. With one model, it trains on a random subset of
    ``round(n_rows * in_fraction)`` rows.
    """
    rng = np.random.default_rng(seed)
    if n_models == 0:
        return np.zeros((0, n_rows), dtype=bool)
    if n_models == 1:
        keep = np.zeros((1, n_rows), dtype=bool)
        keep[0, rng.permutation(n_rows)[: max(1, round(n_rows * in_fraction))]] = True
        return keep
    n_in = int(min(max(round(n_models * in_fraction), 1), n_models - 1))
    ranks = np.argsort(rng.random((n_models, n_rows)), axis=0)
    return ranks < n_in
