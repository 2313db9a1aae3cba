"""Generators for ``membershield audit-synthetic --generator examples/synthetic_generators.py:NAME``.

A generator is a plain function ``(train: DataFrame, n: int, *, seed: int) -> DataFrame``: it fits on the
training records and returns ``n`` synthetic records with the same columns. ``jitter_copy`` is the
textbook leaky one (training records resampled, numbers nudged), useful to see what an audit of a
memorising generator looks like; ``independent_columns`` samples every column on its own from the
training records' values, which keeps no record's combination of values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def jitter_copy(train: pd.DataFrame, n: int, *, seed: int, scale: float = 0.02) -> pd.DataFrame:
    """``n`` training records drawn with replacement, each number moved by ``scale`` of its column's spread."""
    rng = np.random.default_rng(seed)
    out = train.iloc[rng.integers(0, len(train), n)].reset_index(drop=True).copy()
    for name in out.columns:
        if pd.api.types.is_float_dtype(out[name]):
            spread = float(np.nanstd(train[name].to_numpy(dtype=np.float64))) or 1.0
            out[name] = out[name] + rng.normal(0.0, scale * spread, n)
    return out


def independent_columns(train: pd.DataFrame, n: int, *, seed: int) -> pd.DataFrame:
    """Each column's values drawn on their own from the training records (the joint distribution is lost)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: train[name].to_numpy()[rng.integers(0, len(train), n)] for name in train.columns})
