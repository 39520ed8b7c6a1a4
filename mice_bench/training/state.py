"""Training checkpoints on disk (``OUTPUT.train/checkpoint-<step>.pt``), verified on read.

A checkpoint is one file: a header line, then the ``torch.save`` payload (weights, optimizer,
scheduler, gradient scaler, RNG states, the training log)::

    mice-bench-checkpoint {"version": 2, "step": 40, "bytes": 1234567, "sha256": "..."}\\n
    <payload>

It is written atomically (:func:`mice_bench.results.atomic_file`: temp file, fsync, rename),
so a killed run leaves the previous checkpoint or the new one, never a part. On read the
payload's size and SHA-256 are checked against the header (as the document-state store checks
its shards) and every floating tensor of the weights must be finite: a truncated, altered or
foreign file is refused by name (:class:`~mice_bench.errors.UsageError`), never loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import torch

from ..errors import UsageError

#: the first bytes of every checkpoint file
MAGIC = b"mice-bench-checkpoint "
CKPT_VERSION = 2
#: a header line is short; anything longer is not a checkpoint
_MAX_HEADER = 4096


def checkpoint_path(work: Path, step: int) -> Path:
    return Path(work) / f"checkpoint-{step:09d}.pt"


def list_checkpoints(work: Path) -> list[Path]:
    """The checkpoint files of a run folder, oldest first (none when it does not exist)."""
    work = Path(work)
    return sorted(work.glob("checkpoint-*.pt")) if work.is_dir() else []


def write_checkpoint(path: Path, state: dict) -> Path:
    """Write ``state`` (with its ``step``) to ``path`` atomically, with its checksum."""
    from ..results import atomic_file

    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    header = {"version": CKPT_VERSION, "step": int(state["step"]), "bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    with atomic_file(path, "wb") as f:
        f.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n")
        f.write(payload)
    return Path(path)


def read_checkpoint(path: Path) -> dict:
    """The state saved in ``path``; UsageError naming the file when it is not a complete,
    unaltered mice-bench checkpoint or its weights are not finite."""
    path = Path(path)

    def bad(why: str):
        raise UsageError(f"--resume: checkpoint {path} {why}; delete it to resume from the "
                         "one before, or pass --overwrite to start again")

    try:
        raw = path.read_bytes()
    except OSError as e:
        bad(f"cannot be read ({e.strerror or e})")
    if not raw.startswith(MAGIC):
        bad("is not a mice-bench checkpoint with a checksum (no header)")
    end = raw.find(b"\n", 0, _MAX_HEADER)
    try:
        header = json.loads(raw[len(MAGIC):end]) if end > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not {"version", "bytes", "sha256"} <= set(header):
        bad("has a damaged header")
    if header["version"] != CKPT_VERSION:
        bad(f"has format version {header['version']!r} (this mice-bench reads {CKPT_VERSION})")
    payload = memoryview(raw)[end + 1:]
    if len(payload) != header["bytes"]:
        bad(f"is truncated or padded ({len(payload)} payload bytes, its header says "
            f"{header['bytes']})")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        bad("fails its SHA-256 check (the file was altered or damaged)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - verified bytes that torch cannot read
        bad(f"cannot be loaded ({type(e).__name__}: {e})")
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        bad("holds no training state")
    broken = [k for k, v in state["model"].items()
              if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        bad(f"has non-finite weights ({len(broken)} tensors, e.g. {broken[0]})")
    return state


# --------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    import numpy as np

    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import numpy as np

    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_all(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


__all__ = ["CKPT_VERSION", "checkpoint_path", "list_checkpoints", "write_checkpoint",
           "read_checkpoint", "rng_state", "set_rng_state", "seed_all"]
