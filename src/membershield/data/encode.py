"""Records as a numeric matrix, for attacks that learn from what a record is rather than what a model says.

The matrix is an attack's view of the records (``AttackInputs.features``), not the target's input: the
target reads the table as it was given. Numbers stay as they are, missing values (and infinities) become
NaN, which tree regressors treat as missing; every other column becomes ordinal codes of its sorted
distinct values. A non-numeric column whose every value differs (an identifier, free text) is dropped:
as codes it carries only the records' order, nothing that one record shares with another.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def numeric_matrix(frame: pd.DataFrame) -> np.ndarray:
    """``(n, d)`` float64 matrix of ``frame``: numbers as given, other columns as ordinal codes, missing as NaN.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"age": [30, None, 41], "city": ["Oslo", "Bern", "Oslo"], "id": ["a", "b", "c"]})
    >>> numeric_matrix(frame).tolist()
    [[30.0, 1.0], [nan, 0.0], [41.0, 1.0]]
    """
    columns = []
    for name in frame.columns:
        column = frame[name]
        missing = column.isna().to_numpy()
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            columns.append(np.where(np.isinf(values), np.nan, values))
            continue
        codes = pd.factorize(column.astype(str), sort=True)[0].astype(np.float64)
        present = codes[~missing]
        if len(frame) > 1 and np.unique(present).size == present.size:
            continue
        columns.append(np.where(missing, np.nan, codes))
    if not columns:
        return np.empty((len(frame), 0), dtype=np.float64)
    return np.column_stack(columns)
