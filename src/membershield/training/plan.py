"""Which rows each reference model trains on."""

from __future__ import annotations

import math

import numpy as np


def membership_plan(n_rows: int, n_models: int, in_fraction: float, seed: int) -> np.ndarray:
    """``keep[k, i]``: whether model ``k`` trains on row ``i``.

    Each model's training set is a uniformly random subset holding ``in_fraction`` of the rows in
    expectation, as large as the target's when ``in_fraction`` is its share of the pool. Rows are spread
    evenly, as in the LiRA reference code: every row is IN for ``floor(n_models * in_fraction)`` or one
    more models (a random ``frac(n_models * in_fraction)`` share of the rows get the extra one), never for
    all of them, so OUT models exist for every row. When ``n_models * in_fraction`` is below one, some
    rows are IN for no model rather than every model training on a larger set than the target did: a
    reference twice the target's size memorises less, which misleads the attacks that compare them.
    With one model, it trains on a random subset of ``round(n_rows * in_fraction)`` rows.
    """
    rng = np.random.default_rng(seed)
    if n_models == 0:
        return np.zeros((0, n_rows), dtype=bool)
    if n_models == 1:
        keep = np.zeros((1, n_rows), dtype=bool)
        keep[0, rng.permutation(n_rows)[: max(1, round(n_rows * in_fraction))]] = True
        return keep
    expected = min(n_models * in_fraction, n_models - 1)
    low = math.floor(expected)
    ranks = np.argsort(rng.random((n_models, n_rows)), axis=0)
    n_in = np.full(n_rows, low)
    extra = round((expected - low) * n_rows)
    if extra:
        n_in[rng.permutation(n_rows)[:extra]] += 1
    return ranks < n_in
