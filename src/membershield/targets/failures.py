"""Which record a model cannot score: found by bisection, so an error can name it.

Used on failure paths only (an audit whose model raises or returns non-finite outputs, a guard request
the model refuses): a batch that fails is split in halves until one record fails alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from membershield.errors import MembershieldError


def scores_finitely(logits: Callable[[pd.DataFrame], np.ndarray]) -> Callable[[pd.DataFrame], bool]:
    """A predicate: does the model score every record of a table to finite outputs without raising?"""

    def ok(table: pd.DataFrame) -> bool:
        try:
            with np.errstate(all="ignore"):
                return bool(np.isfinite(np.asarray(logits(table), dtype=np.float64)).all())
        except MembershieldError:
            raise
        except Exception:  # the model refused these values; the search only asks whether it did
            return False

    return ok


def first_failing_row(table: pd.DataFrame, ok: Callable[[pd.DataFrame], bool]) -> int | None:
    """Position of a record that fails on its own (the first half that fails is searched), or None when
    every half scores and only the whole batch failed.

    >>> table = pd.DataFrame({"x": [1.0, 2.0, -1.0, 4.0]})
    >>> first_failing_row(table, lambda t: bool((t["x"] > 0).all()))
    2
    """
    low, high = 0, len(table)
    if high == 1:
        return None if ok(table) else 0
    while high - low > 1:
        middle = (low + high) // 2
        if not ok(table.iloc[low:middle]):
            high = middle
        elif not ok(table.iloc[middle:high]):
            low = middle
        else:
            return None
    return low
