"""Errors that the CLI turns into a clear message and exit code 2 (no traceback)."""

from __future__ import annotations

from .layerspec import SpecError


class UsageError(ValueError):
    """Bad user input: unknown name, impossible option, missing data or model."""


#: Exceptions that mean "the user asked for something invalid" -> exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, SpecError)


def positive_int(name: str, value, optional: bool = False) -> None:
    """The one rule for counts and lengths (batch sizes, ``query_max_tokens``, ``top_k``, ...),
    whoever gives them (a flag, the Python API, a stored ``mice_bench.json``): a whole number
    >= 1 (None too when ``optional``); a :class:`UsageError` naming ``name`` else."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a whole number >= 1, got {value!r}")
