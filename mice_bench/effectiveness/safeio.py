"""Fault-safe file handling for the caches and result files of ``mice-bench effectiveness``.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: a unique
  temporary file in the target folder, ``fsync``, ``os.replace``, then ``fsync`` of the folder:
  a reader sees the old file or the whole new one, never a partial one, even after a crash.
* :func:`cache_lock`: an inter-process lock (the maintained ``filelock`` package) around work
  that two runs on one cache must not both do; a waiting run says what it waits for.
* :func:`warn` / :func:`notice`: one line on stderr, always shown (also with ``--no-progress``
  and ``--format json``), for partial coverage and for recovered cache faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "cache_lock",
           "warn", "notice", "sha256_file", "fsync_dir", "LOCK_TIMEOUT_S"]

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


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a rename in ``path`` (best effort: not every file system allows it)."""
    from ..results import fsync_dir as _fsync

    _fsync(Path(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path``: :func:`mice_bench.results.atomic_file` (unique temp file,
    fsync, rename, fsync of the folder), the package's one atomic writer."""
    from ..results import atomic_write_bytes as _write

    return _write(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Cache metadata: keys sorted (stable files whatever the insertion order)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=True,
                                              default=str) + "\n")


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

    from ..errors import UsageError

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
