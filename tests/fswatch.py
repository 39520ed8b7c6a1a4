"""Watch the file system around a command: every path it creates, changes or removes must be
inside what the user named.

The ``fswatch`` fixture gives the test a sandbox inside ``tmp_path``: ``$HOME`` (and
``$XDG_CACHE_HOME`` under it), the temporary folder (``$TMPDIR`` and :mod:`tempfile`) and the
working directory each point into it, so a file a command writes to the home cache, to the
temporary folder or to the current folder lands where the walk sees it. Usage::

    from fswatch import fswatch  # noqa: F401  (the fixture)

    def test_x(fswatch, tmp_path):
        out = tmp_path / "out"
        with fswatch.only(out):                 # fails if anything else changed
            run_the_command(out)
        assert fswatch.changed                  # what changed, relative to tmp_path

``only()`` with no path asserts that nothing changed at all (a refused command). One path of
a library is allowed anywhere: ``$TMPDIR/torchinductor_<user>``, the per-user compile cache
folder that importing ``torch._dynamo`` (which ``torch.onnx`` imports) creates, shared by
every torch program. The system's
own temporary folder is not compared (other processes write there at any time): a path fixed
there, not taken from ``tempfile``, is not seen.

:func:`disk_full` simulates a full disk without root or a small file system: every
``os.fsync`` of a file whose path contains a given text fails with ``ENOSPC`` (the package
writes its files atomically: write, ``fsync``, rename), as a delayed-allocation file system
reports it.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["FsWatch", "fswatch", "disk_full"]

#: created by a library on import, in the sandbox's temporary folder (see the docstring)
LIBRARY_PATHS = ("tmp/torchinductor_",)


def _entry(p: Path) -> tuple:
    st = p.lstat()
    kind = stat.S_IFMT(st.st_mode)
    if stat.S_ISDIR(st.st_mode):            # a folder's own mtime follows its entries
        return kind, stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return kind, os.readlink(p)
    return kind, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino


def snapshot(root: Path) -> dict[Path, tuple]:
    """Every path under ``root`` (not following links) with its type, mode and, for files,
    size, mtime and inode (a replaced file has a new inode)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            try:
                out[p] = _entry(p)
            except FileNotFoundError:
                pass
    return out


class FsWatch:
    """The sandbox of one test and the changes of the last :meth:`only` block."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.cwd = root / "cwd"
        #: paths (relative to ``root``, POSIX) created, changed or removed by the last block
        self.changed: list[str] = []

    @contextmanager
    def only(self, *named: str | os.PathLike) -> Iterator["FsWatch"]:
        """Run the block; then assert that every path it created, changed or removed is one
        of ``named`` or inside one (relative names are taken from the working directory)."""
        allowed = [Path(os.path.abspath(n)) for n in named]
        before = snapshot(self.root)
        yield self
        after = snapshot(self.root)
        diff = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
        self.changed = [p.relative_to(self.root).as_posix() for p in diff]
        outside = [r for p, r in zip(diff, self.changed)
                   if not any(p == a or a in p.parents for a in allowed)
                   and not r.startswith(LIBRARY_PATHS)]
        assert not outside, (f"written outside {[str(a) for a in allowed] or 'nothing'}: "
                             f"{outside[:20]}")


@pytest.fixture
def fswatch(tmp_path, monkeypatch) -> FsWatch:
    """A sandboxed :class:`FsWatch` (home, temporary folder and working directory inside
    ``tmp_path``); the working directory is changed to its ``cwd``."""
    w = FsWatch(tmp_path)
    for d in (w.home, w.tmp, w.cwd):
        d.mkdir()
    monkeypatch.setenv("HOME", str(w.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(w.home / ".cache"))
    monkeypatch.delenv("MICE_BENCH_CACHE", raising=False)
    monkeypatch.setenv("TMPDIR", str(w.tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(w.tmp))
    monkeypatch.chdir(w.cwd)
    return w


def disk_full(monkeypatch, match: str = "") -> list[str]:
    """From now on, ``os.fsync`` of a file whose path contains ``match`` (every file: ``""``)
    fails with ``ENOSPC``; returns the list of the paths refused so far."""
    real = os.fsync
    refused: list[str] = []

    def fsync(fd: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if match in path and not os.path.isdir(path):
            refused.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return refused
