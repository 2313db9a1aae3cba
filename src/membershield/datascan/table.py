"""A table to scan, twice over: typed (numbers as numbers, for bins and comparisons) and as text, the way
the file wrote each value (for detection).

A CSV reader turns a card number into an integer, a phone number's leading 0 into nothing, and a column of
16-digit numbers with one gap into floats that have lost their last digits. Detection reads the CSV's own
text instead; other formats store types, and their values are written out as text without a fraction
where they have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from membershield.data.io import load_table
from membershield.errors import InputDataError


@dataclass(frozen=True)
class ScanTable:
    path: Path
    frame: pd.DataFrame  # typed
    text: pd.DataFrame  # every column as text (missing stays missing), same shape and columns


def as_text(column: pd.Series) -> pd.Series:
    """A typed column as text the way a file would write it: whole floats without ``.0``, dates in ISO form.

    >>> as_text(pd.Series([4111111111111111.0, None, 2.5])).tolist()
    ['4111111111111111', nan, '2.5']
    >>> as_text(pd.Series(pd.to_datetime(["1984-03-02"]))).tolist()
    ['1984-03-02']
    """
    missing = column.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(column):
        times = column.dt.tz_localize(None) if getattr(column.dt, "tz", None) is not None else column
        midnight = (times.dropna() == times.dropna().dt.normalize()).all()
        text = times.dt.strftime("%Y-%m-%d" if midnight else "%Y-%m-%dT%H:%M:%S")
    elif pd.api.types.is_float_dtype(column):
        x = column.to_numpy(dtype=np.float64)
        whole = np.isfinite(x) & (np.floor(x) == x) & (np.abs(x) < 1e19)
        text = pd.Series(
            [str(int(v)) if w else repr(float(v)) for v, w in zip(x, whole, strict=True)], index=column.index
        )
    else:
        text = column.astype(str)
    return text.astype(object).where(~missing, np.nan)


def _csv_text(path: Path) -> pd.DataFrame:
    """Every cell of a CSV as the text it holds; Arrow's reader is several times faster, and the C reader
    takes what it refuses (quirks of quoting and line ends)."""
    try:
        return pd.read_csv(path, dtype=str, engine="pyarrow")
    except Exception:  # any refusal: the C reader below raises the error a user sees
        pass
    try:
        return pd.read_csv(path, dtype=str)
    except Exception as exc:  # read once already; this is a file changed under us or a reader quirk
        raise InputDataError(f"cannot read {path} as text: {type(exc).__name__}: {exc}".splitlines()[0]) from exc


def read_scan_table(path: str | Path) -> ScanTable:
    """Read a CSV, Parquet or NPZ table (the errors of :func:`membershield.data.io.load_table`)."""
    p = Path(path)
    frame = load_table(p)
    if p.suffix.lower() == ".csv":
        text = _csv_text(p)
        text.columns = [str(c) for c in text.columns]
        text = text.astype(object).where(text.notna(), np.nan)
    else:
        text = pd.DataFrame({name: as_text(frame[name]) for name in frame.columns}, index=frame.index)
    if text.shape != frame.shape:
        raise InputDataError(f"cannot read {p}: its rows do not read the same twice (a quoted line break?)")
    return ScanTable(p, frame, text)
