"""The one error the history store raises, and the one line that explains a database failure to the user."""

from __future__ import annotations

from membershield.errors import MembershieldError


class StoreError(MembershieldError):
    """The history store cannot be opened, read or written."""


def first_line(exc: BaseException) -> str:
    """The first line of the driver's own message (SQLAlchemy wraps it in ``orig`` under several lines)."""
    original = getattr(exc, "orig", None) or exc
    message = str(original).strip().splitlines()
    return message[0] if message else type(original).__name__


def explain_failure(exc: BaseException, display: str, timeout: float) -> str:
    """What went wrong with the store shown as ``display``, and what the user can do about it."""
    message = first_line(exc)
    lowered = message.lower()
    if "file is not a database" in lowered or "malformed" in lowered:
        return (
            f"history store {display} is damaged or not a SQLite database ({message});"
            " move it aside to start a new history, or pass --store"
        )
    if "locked" in lowered or "busy" in lowered:
        return (
            f"history store {display} is locked by another process (waited {timeout:g} s);"
            " try again when it has finished"
        )
    if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
        return f"history store {display} cannot be opened for writing ({message}); pass --store"
    if "can't locate revision" in lowered:
        return (
            f"history store {display} was written by a newer membershield ({message}); upgrade membershield to read it"
        )
    return f"history store {display}: {message}"
