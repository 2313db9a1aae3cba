"""User-facing errors.

Every error a user can fix is a :class:`MembershieldError`; the CLI prints its message on one line and
exits with code 2. The message names the thing at fault and the fix.
"""

from __future__ import annotations


class MembershieldError(Exception):
    """Base class of every error caused by input the user can correct."""

    exit_code = 2


class InputDataError(MembershieldError):
    """A data file is missing, unreadable, or its content does not fit the model or the options."""


class ModelLoadError(MembershieldError):
    """A model file or recipe cannot be loaded or is not a usable classifier."""


class ConfigError(MembershieldError):
    """An option or configuration key is unknown or has an invalid value."""
