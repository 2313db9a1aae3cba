"""Reading CSV, Parquet and NPZ tables into pandas with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from membershield.errors import InputDataError

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")


def load_table(path: str | Path) -> pd.DataFrame:
    """Load a table from CSV, Parquet or NPZ.

    An NPZ file holds named arrays: 1-D arrays become columns of that name; a 2-D array ``X`` (or any
    2-D array) becomes columns ``X0, X1, ...``. So ``np.savez(f, X=features, y=labels)`` is read with
    ``--label-column y``.
    """
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"data file not found: {p} (check the path)")
    if p.is_dir():
        raise InputDataError(f"expected a data file but {p} is a directory")
    suffix = p.suffix.lower()
    if p.stat().st_size == 0:
        raise InputDataError(f"data file {p} is empty (0 bytes): give a table with a header row and records")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(p)
        elif suffix == ".npz":
            frame = _read_npz(p)
        else:
            raise InputDataError(
                f"unsupported data file type '{suffix}' for {p}: use one of {', '.join(SUPPORTED_SUFFIXES)}"
            )
    except InputDataError:
        raise
    except Exception as exc:  # the readers raise many types; the user needs the file name and the cause
        raise InputDataError(f"cannot read {p}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if frame.empty:
        raise InputDataError(f"data file {p} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _read_npz(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as archive:
        columns: dict[str, np.ndarray] = {}
        lengths = set()
        for name in archive.files:
            arr = archive[name]
            if arr.ndim == 1:
                columns[name] = arr
                lengths.add(arr.shape[0])
            elif arr.ndim == 2:
                for j in range(arr.shape[1]):
                    columns[f"{name}{j}"] = arr[:, j]
                lengths.add(arr.shape[0])
            else:
                raise InputDataError(f"array '{name}' in {path} has {arr.ndim} dimensions; expected 1 or 2")
    if len(lengths) > 1:
        raise InputDataError(f"arrays in {path} have different numbers of rows: {sorted(lengths)}")
    return pd.DataFrame(columns)
