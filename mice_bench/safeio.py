"""Fault-safe handling of the caches of ``mice-bench effectiveness`` (files are written
atomically by :func:`mice_bench.results.atomic_file` and its ``atomic_write_*`` helpers).

* :func:`sha256_bytes` / :func:`sha256_file`: the checksums a cache verifies its files by.
* :func:`cache_lock`: an inter-process lock (the maintained ``filelock`` package) around work
  that two runs on one cache must not both do; a waiting run says what it waits for.
* :func:`warn` / :func:`notice`: one line on stderr, always shown (also with ``--no-progress``
  and ``--format json``), for partial coverage and for recovered cache faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["cache_lock", "warn", "notice", "sha256_bytes", "sha256_file", "LOCK_TIMEOUT_S"]

#: How long a run waits for another run's lock before giving up (seconds).
LOCK_TIMEOUT_S = float(os.environ.get("MICE_BENCH_LOCK_TIMEOUT", 24 * 3600))


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def warn(message: str) -> None:
    """``warning: ...`` on stderr (results are valid but the user should know)."""
    from rich.markup import escape

    _console().print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)


def notice(message: str) -> None:
    """``notice: ...`` on stderr (a cache fault was found and is being repaired)."""
    from rich.markup import escape

    _console().print(f"[bold cyan]notice:[/] {escape(message)}", highlight=False)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@contextlib.contextmanager
def cache_lock(lock_path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``lock_path`` (created if needed).

    When another run holds it, prints once that this run waits (``what`` says for what) and
    blocks until it is free (``$MICE_BENCH_LOCK_TIMEOUT`` seconds at most, default a day).
    """
    from filelock import FileLock, Timeout

    from .errors import UsageError

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notice(f"another run is working on {what}; waiting for it to finish (lock "
               f"{lock_path}) and reusing its work")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise UsageError(f"{what} is still locked by another run after {LOCK_TIMEOUT_S:.0f}"
                             f" s ({lock_path}); if no other run is active, delete that file"
                             ) from None
    try:
        yield
    finally:
        lock.release()
