"""Errors that the CLI turns into a clear message and exit code 2 (no traceback)."""

from __future__ import annotations

import errno
import sqlite3

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


#: ``errno`` values of a write the file system refused: full, over quota, too large,
#: read-only, no permission
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                         errno.EPERM})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def disk_error(e: BaseException) -> str | None:
    """The one-line message for an error of the file system under a write (a full disk, a
    read-only or forbidden folder; SQLite's "database or disk is full" and "readonly
    database" included), or None for any other error (exit 1, see
    :func:`mice_bench.console.user_errors`)."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        where = f"{e.filename}: " if e.filename else ""
        what = e.strerror or str(e)
    elif isinstance(e, sqlite3.OperationalError) and any(
            s in str(e) for s in ("disk is full", "readonly database", "disk I/O error")):
        where, what = "score cache: ", str(e)
        if "full" not in what:
            return f"{where}{what}; choose a folder you can write (--cache-dir)"
        return f"{where}{what}; free some space, then run the same command again"
    else:
        return None
    if e.errno in _FULL:
        return f"{where}{what}; free some space, then run the same command again"
    if e.errno == errno.EROFS:
        return f"{where}{what}; choose a folder you can write"
    return f"{where}{what}; check its permissions or choose another folder"
