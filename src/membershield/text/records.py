"""The records of a text audit: members and non-members from JSONL, a text on both sides refused (or
dropped on request), and where each record came from."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from membershield.data.overlap import Overlap, find_overlap
from membershield.errors import InputDataError
from membershield.text.data import TextRecords, load_jsonl


@dataclass(frozen=True)
class TextAuditData:
    members: TextRecords
    nonmembers: TextRecords
    overlap: Overlap | None  # texts that were on both sides and were dropped

    @property
    def texts(self) -> list[str]:
        return self.members.texts + self.nonmembers.texts

    @property
    def is_member(self) -> np.ndarray:
        return np.arange(len(self.members) + len(self.nonmembers)) < len(self.members)

    @property
    def source(self) -> np.ndarray:
        return np.array(["members"] * len(self.members) + ["nonmembers"] * len(self.nonmembers))

    @property
    def lines(self) -> np.ndarray:
        return np.array(self.members.lines + self.nonmembers.lines, dtype=np.int64)

    @property
    def places(self) -> list[str]:
        """``file:line`` of every record, for errors about one of them."""
        m, n = self.members, self.nonmembers
        return [f"{m.path}:{line}" for line in m.lines] + [f"{n.path}:{line}" for line in n.lines]

    def origin(self, n_tokens: np.ndarray) -> Any:
        """Where record ``i`` came from, for the most exposed records of each attack."""
        texts, source, lines = self.texts, self.source, self.lines
        return lambda i: {
            "source": str(source[i]),
            "line": int(lines[i]),
            "n_tokens": int(n_tokens[i]),
            "text": _excerpt(texts[i]),
        }


def _excerpt(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def load_text_data(members_path: str, nonmembers_path: str, text_field: str, drop_overlap: bool) -> TextAuditData:
    """Members and non-members; a text on both sides is an error, or with ``drop_overlap`` dropped."""
    members = load_jsonl(members_path, text_field)
    nonmembers = load_jsonl(nonmembers_path, text_field)
    overlap = find_overlap(np.array(members.texts, dtype=object), np.array(nonmembers.texts, dtype=object), "text")
    if overlap and not drop_overlap:
        raise InputDataError(
            f"{overlap.member_rows.size} member text(s) of {members.path} are also non-members in"
            f" {nonmembers.path} (lines {', '.join(str(members.lines[i]) for i in overlap.member_rows[:5])} and"
            f" {', '.join(str(nonmembers.lines[i]) for i in overlap.nonmember_rows[:5])}): a record cannot be both;"
            " fix the split, or pass --drop-overlap to remove them from both sides"
        )
    if overlap:
        members = _without(members, overlap.member_rows)
        nonmembers = _without(nonmembers, overlap.nonmember_rows)
    for records, role in ((members, "members"), (nonmembers, "non-members")):
        if len(records) < 2:
            raise InputDataError(f"{records.path}: {len(records)} record(s); an audit needs at least 2 {role}")
    return TextAuditData(members, nonmembers, overlap if overlap else None)


def _without(records: TextRecords, rows: np.ndarray) -> TextRecords:
    drop = set(rows.tolist())
    keep = [i for i in range(len(records)) if i not in drop]
    return replace(
        records,
        texts=[records.texts[i] for i in keep],
        lines=[records.lines[i] for i in keep],
        raw=[records.raw[i] for i in keep],
    )


def tokens_per_record(n_tokens: np.ndarray) -> dict[str, float]:
    """How many tokens of each record were scored (which ones: ``target.encoding``).

    >>> tokens_per_record(np.array([3, 5, 10]))
    {'min': 3, 'median': 5.0, 'mean': 6.0, 'max': 10}
    """
    return {
        "min": int(n_tokens.min()),
        "median": float(np.median(n_tokens)),
        "mean": float(n_tokens.mean()),
        "max": int(n_tokens.max()),
    }


def length_buckets(n_tokens: np.ndarray) -> np.ndarray:
    """Token-length terciles, labelled by their ranges, for per-length slices."""
    edges = np.unique(np.quantile(n_tokens, [1 / 3, 2 / 3]))
    bucket = np.searchsorted(edges, n_tokens, side="right")
    bounds = [int(n_tokens.min()), *[int(e) for e in edges], int(n_tokens.max())]
    names = [f"{i + 1}: {bounds[i]}-{bounds[i + 1]} tokens" for i in range(len(bounds) - 1)]
    return np.array([names[min(b, len(names) - 1)] for b in bucket])
