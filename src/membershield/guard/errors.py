"""The guard's refusals: an HTTP status, a one-line message and a reason counted in the metrics."""

from __future__ import annotations

from typing import Any


class GuardError(Exception):
    """An answer other than 200, with a one-line message."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def short(value: Any) -> str:
    """A value as it may appear in a one-line message.

    >>> short("x" * 50)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."
    """
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
