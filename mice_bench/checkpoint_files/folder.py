"""Where a checkpoint is written, and what a save may replace or remove there.

The rule (:meth:`~mice_bench.model.InteractionModel.save_pretrained`):

* a **new** path or an **empty folder**: the checkpoint is written into it;
* a folder that **is a mice-bench checkpoint** (it holds ``mice_bench.json``): its files are
  replaced one by one; files of the earlier checkpoint that the new one does not write are
  removed when the earlier ``mice_bench.json`` lists them (``files``); anything else in the
  folder (a user's notes) is kept as it is;
* anything else is refused in one line, before any work: a path that is a **file**, a folder
  holding **other files**.

Every file is written in a staging folder inside the target (``.mice-bench-save-*``), then
moved into place with a rename (readers see the old file or the new one, never a part);
``mice_bench.json`` moves last. A failed or interrupted save removes its staging folder, and
the target folder itself when the save created it; a staging folder left by a killed save is
removed by the next save. Files and the folders a save creates get the usual permissions
(the umask's), whatever mode a writer library gives its files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import UsageError

__all__ = ["STAGE_PREFIX", "CHECKPOINT_META", "checkpoint_target", "staged_checkpoint",
           "tree_files"]

#: the staging folder of a save in progress, inside the target folder
STAGE_PREFIX = ".mice-bench-save-"
#: the file that marks a folder as a mice-bench checkpoint
CHECKPOINT_META = "mice_bench.json"
_CHOICES = "give a new or empty folder, or a mice-bench checkpoint folder to replace"


def checkpoint_target(path: str | os.PathLike) -> list[str]:
    """Check that a checkpoint may be written at ``path`` (see the module docstring); return
    the files of the checkpoint already there that a save may replace or remove (relative
    POSIX paths from its ``mice_bench.json``; empty for a new or empty folder)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a folder; {_CHOICES}")
    if not path.exists():
        return []
    entries = sorted(p.name for p in path.iterdir() if not p.name.startswith(STAGE_PREFIX))
    if not entries:
        return []
    if not (path / CHECKPOINT_META).is_file():
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UsageError(f"{path} holds files that are not a mice-bench checkpoint ({shown}); "
                         f"{_CHOICES}")
    try:
        files = json.loads((path / CHECKPOINT_META).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, str) and _inside(f)]


def _inside(rel: str) -> bool:
    """A relative path that stays inside the folder (no ``..``, not absolute)."""
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def tree_files(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, as sorted relative POSIX paths (a folder
    before its contents)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@contextmanager
def staged_checkpoint(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder to write a checkpoint's files into; on success move them into
    ``path`` (checked by :func:`checkpoint_target` first) and remove the earlier checkpoint's
    files the new one lacks. On any error nothing of the earlier checkpoint is touched, the
    staging folder is removed, and so are the folders this save created."""
    path = Path(path)
    old = checkpoint_target(path)
    made = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in path.glob(STAGE_PREFIX + "*"):          # left by a killed save
        shutil.rmtree(p, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=path))
    try:
        yield stage
        new = tree_files(stage)
        mode = 0o666 & ~_umask()        # some writers (safetensors) create files 0600
        meta = [CHECKPOINT_META] if CHECKPOINT_META in new else []
        for rel in [r for r in new if r != CHECKPOINT_META] + meta:
            src, dst = stage / rel, path / rel
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                os.chmod(src, mode)
                os.replace(src, dst)
        for rel in sorted(set(old) - set(new), reverse=True):   # contents before folders
            p = path / rel
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for p in made:                  # innermost first; only while empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(stage, ignore_errors=True)
