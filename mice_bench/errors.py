"""Errors that the CLI turns into a clear message and exit code 2 (no traceback)."""

from __future__ import annotations

from .layerspec import SpecError


class UsageError(ValueError):
    """Bad user input: unknown name, impossible option, missing data or model."""


#: Exceptions that mean "the user asked for something invalid" -> exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, SpecError)
