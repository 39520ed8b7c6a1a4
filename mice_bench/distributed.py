"""``torchrun`` support shared by ``train`` (data-parallel) and ``effectiveness`` (sharded
scoring): the process group from the torchrun variables, the device of each rank, and the few
collectives the commands use. Outside torchrun (``WORLD_SIZE`` unset or 1) every function is a
no-op on a one-process :class:`DistEnv`, so the commands need no separate code path.

NCCL on GPUs, Gloo on CPUs; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, NoReturn, Sequence, TypeVar

import torch

from .errors import UsageError

T = TypeVar("T")


@dataclass
class DistEnv:
    """This process's place in the job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world``-th one from ``rank`` (order kept).

        >>> DistEnv(1, 3).shard("abcdefg")
        ['b', 'e']
        """
        return list(items[self.rank::self.world])

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), ``None`` elsewhere."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank: the same answer on every rank.

        >>> DistEnv().any(False), DistEnv().any(True)
        (False, True)
        """
        flags = self.gather(bool(flag))
        return bool(self.broadcast(any(flags) if self.main else None))

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


def init_from_env(device_pref: str) -> tuple[DistEnv, torch.device]:
    """Initialise torch.distributed from the torchrun variables when ``WORLD_SIZE > 1`` (or
    use the group already there); pick this rank's device (``auto``: ``cuda:<local rank>``
    when CUDA is there, else CPU; ``cuda`` without an index: ``cuda:<local rank>``)."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_pref == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_pref)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{local}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device_pref}: CUDA is not available here; use cpu")
    if under_torchrun() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local), device
    return DistEnv(), device


_OWN_GROUP = False   # whether the process group was created here (by a session)


def shutdown() -> None:
    """Destroy the process group a :func:`session` created (no-op otherwise). Registered with
    :mod:`atexit` when the group is created, so that it runs before the interpreter tears
    Gloo down; callable early by a library user who is done with the group."""
    global _OWN_GROUP
    import torch.distributed as dist

    if _OWN_GROUP and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False


@contextlib.contextmanager
def session(device_pref: str) -> Iterator[tuple[DistEnv, torch.device]]:
    """:func:`init_from_env` for the length of a command, and an orderly end.

    * When the block succeeds every rank waits for the others, so that no rank closes its
      connections while another still receives the last broadcast.
    * The group the first session creates is kept for later sessions of the same process
      (``train`` then ``effectiveness`` in one study) and destroyed at interpreter exit
      (:func:`shutdown`, via :mod:`atexit`). Without that a Gloo rank could abort at exit
      ("terminate called without an active exception") after all its work was done.
      Destroying it at the end of each session is not safe either: the next session's
      ``env://`` rendezvous reuses ``MASTER_PORT``, and a fast rank could reach a slow rank's
      old store and read the destroyed group's addresses ("connectFullMesh ... refused").
    * When the block raises, a group created here is destroyed at once (no barrier: the other
      ranks may never arrive), so the failing rank exits promptly and torchrun stops the job.
    * A group made by the caller is left to its owner.
    """
    global _OWN_GROUP
    import atexit

    import torch.distributed as dist

    before = dist.is_available() and dist.is_initialized()
    env, device = init_from_env(device_pref)
    if env.active and not before:
        _OWN_GROUP = True
        atexit.unregister(shutdown)
        atexit.register(shutdown)
    try:
        yield env, device
    except BaseException:
        shutdown()
        raise
    env.barrier()


def under_torchrun() -> bool:
    """Whether this process is one rank of several (``WORLD_SIZE > 1``, as torchrun sets)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def end_rank(code: int | str | None) -> NoReturn:
    """End a ``torchrun`` rank of the command line once its command has finished: flush
    Python's streams and logs, then leave with ``os._exit`` (``code`` as :class:`SystemExit`
    reads it: ``None`` is 0, a message is printed and gives 1).

    Why not a normal exit: after every rank had passed the session's final barrier and
    written its results, a Gloo rank still aborted now and then in the C++ teardown at
    interpreter exit ("terminate called without an active exception", SIGABRT: in CI, and
    in 2 of 7 full local test-suite runs under load, with the group destroyed at exit
    first), and ``torchrun`` then reports the whole job as failed. Nothing is left to do at
    that point: result files are written atomically (fsync, rename) before the command
    returns, and the sockets close with the process (the other ranks have passed the
    barrier and no longer read them)."""
    import logging

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # closed or broken pipe: nothing more to write
            pass
    os._exit(status)
