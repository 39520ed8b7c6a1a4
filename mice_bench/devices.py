"""The one device / dtype policy of ``latency``, ``effectiveness`` and ``verify``.

* devices: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``; asking for
  CUDA where there is none is a usage error (exit 2);
* dtypes (compute precisions): ``fp32``, ``bf16`` (weights cast to bf16), ``bf16-autocast``
  (fp32 weights under ``torch.autocast``), ``int8`` (dynamic int8 quantization of the linear
  layers, CPU only), ``fp16``, and ``auto``: bf16 on a CPU with AMX (``amx_bf16``), fp32
  elsewhere (:func:`auto_dtype`; the commands say which they picked). **fp16 is refused on the
  CPU** (PyTorch has no fast fp16 matmul kernels there, and scores computed in CPU fp16 are
  neither fast nor what a GPU gives), bf16 is refused on a GPU without bf16 support.
* :func:`cpu_features`: the CPU's matrix features (AMX, AVX-512 bf16 / VNNI, AVX2) from
  ``/proc/cpuinfo`` and the kernels PyTorch picks, recorded with every latency result so that
  runs on different CPUs are never compared as one. Every refusal is a
  :class:`~mice_bench.errors.UsageError` naming the valid choices, so each command exits 2
  before loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = ("fp32", "bf16", "bf16-autocast", "int8", "fp16", "auto")
#: the CPU flags that decide which matrix kernels run (``/proc/cpuinfo``)
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni",
                "avx512f", "avx2", "fma")
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
    if dtype == "auto":
        dtype = auto_dtype(dev)
    if dev != "cpu" and dtype == "int8":
        raise UsageError("--dtype int8 (dynamic quantization of the linear layers) runs on the "
                         "CPU only; valid on CUDA: fp32, bf16, bf16-autocast, fp16")
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


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_features(flags: set[str] | None = None) -> dict:
    """The CPU's matrix features (:data:`MATRIX_FLAGS`, each True / False), ``isa``: the best
    of ``amx`` / ``avx512-bf16`` / ``avx512`` / ``avx2`` / ``other`` (runs on different ``isa``
    are never compared as one), and what PyTorch runs on it: its vector ISA
    (``torch.backends.cpu.get_cpu_capability``), whether oneDNN (mkldnn) and MKL are built in,
    oneDNN's bf16 support, and the quantized engine (int8 kernels)."""
    import torch

    flags = cpu_flags() if flags is None else set(flags)
    out: dict = {f: f in flags for f in MATRIX_FLAGS}
    out["isa"] = ("amx" if out["amx_bf16"] else "avx512-bf16" if out["avx512_bf16"]
                  else "avx512" if out["avx512f"] else "avx2" if out["avx2"] else "other")
    out["flags_read"] = bool(flags)
    out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["mkldnn"] = bool(torch.backends.mkldnn.is_available())
    out["mkl"] = bool(torch.backends.mkl.is_available())
    out["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    out["quantized_engine"] = str(torch.backends.quantized.engine)
    return out


def auto_dtype(device: str = "cpu", flags: set[str] | None = None) -> str:
    """``--dtype auto``: ``bf16`` on a CPU with AMX (``amx_bf16``), ``fp32`` elsewhere (CUDA
    included: pick a GPU dtype explicitly)."""
    if str(device).split(":")[0] != "cpu":
        return "fp32"
    return "bf16" if "amx_bf16" in (cpu_flags() if flags is None else flags) else "fp32"
