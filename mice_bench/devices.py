"""The one device / dtype policy of ``latency``, ``effectiveness`` and ``verify``.

* devices: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``; asking for
  CUDA where there is none is a usage error (exit 2);
* dtypes: ``fp32``, ``bf16``, ``fp16``; **fp16 is refused on the CPU** (PyTorch has no fast
  fp16 matmul kernels there, and scores computed in CPU fp16 are neither fast nor what a GPU
  gives), bf16 is refused on a GPU without bf16 support. Every refusal is a
  :class:`~mice_bench.errors.UsageError` naming the valid choices, so each command exits 2
  before loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = ("fp32", "bf16", "fp16")
ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Placement:
    """A checked (device, dtype): ``device`` is resolved (``cpu``, ``cuda``, ``cuda:1``)."""

    device: str
    dtype: str

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` / ``cpu``; CUDA asked for where there is none -> UsageError."""
    import torch

    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for but CUDA is not available here "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                             "use --device cpu or auto")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise UsageError(f"{name}: only {torch.cuda.device_count()} CUDA device(s)")
        return name
    raise UsageError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")


def check_dtype(dtype: str, device: str) -> str:
    """The short name of ``dtype`` (``float16`` -> ``fp16``) if the device runs it, else
    UsageError with the valid choices there."""
    import torch

    dtype = ALIASES.get(str(dtype), str(dtype))
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    dev = str(device).split(":")[0]
    if dev == "cpu" and dtype == "fp16":
        raise UsageError("--dtype fp16 is not supported on CPU (no fast fp16 matmul kernels); "
                         "valid on CPU: fp32, bf16")
    if dev == "cuda" and dtype == "bf16" and torch.cuda.is_available() \
            and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--dtype bf16 is not supported on "
                         f"{torch.cuda.get_device_name(torch.device(device))}; valid here: "
                         "fp32, fp16")
    return dtype


def placement(device: str, dtype: str) -> Placement:
    """Resolve ``device`` and check ``dtype`` on it (the order every command uses)."""
    dev = resolve_device(device)
    return Placement(dev, check_dtype(dtype, dev))
