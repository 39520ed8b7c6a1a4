"""Compute precisions of a loaded backbone beyond its weights' dtype: int8 and bf16 autocast.

A backbone's weights are fp32, bf16 or fp16 (``load_backbone(dtype=...)``). Two more ways to
run it, chosen by the precision names of :data:`mice_bench.devices.DTYPES`:

* ``int8``: PyTorch's dynamic quantization of the linear layers
  (``torch.ao.quantization.quantize_dynamic``: int8 weights, per-tensor scales; activations
  quantized per call from their range; results in fp32). :class:`Int8Linears` quantizes each
  weight the first time a product uses it, through the same ``quantize_dynamic`` on an
  ``nn.Linear`` holding that weight and bias, and routes every product of the family adapters
  (:func:`mice_bench.backbones.base.linear`, ``bb.linear_packs``) through the quantized module.
  Attention products, norms and the heads stay fp32. CPU only (PyTorch's quantized kernels:
  fbgemm / oneDNN, VNNI where the CPU has it).
* ``bf16-autocast``: fp32 weights under ``torch.autocast(dtype=torch.bfloat16)`` (each
  product casts its inputs, the weights included, to bf16; norms and softmax stay fp32);
  :func:`compute` is the context that every command enters around its executor calls.
  ``bf16`` instead casts the weights once (``load_backbone(dtype=bf16)``): every operation runs
  in bf16. Which is faster depends on the CPU (with AMX both run bf16 tiles; autocast pays a
  cast of every weight per call, weight cast pays bf16 norms and element-wise work):
  ``mice-bench latency --dtype fp32,bf16,bf16-autocast`` measures both in one run.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn as nn

#: precisions that run on fp32 weights, and what they add
ON_FP32_WEIGHTS = ("int8", "bf16-autocast")


def weights_dtype(precision: str) -> str:
    """The dtype a backbone's weights are loaded in for ``precision`` (a short name)."""
    return "fp32" if precision in ON_FP32_WEIGHTS else precision


class Int8Linears:
    """Dynamically quantized copies of a backbone's linear layers, made on first use.

    Same interface as :class:`~mice_bench.backbones.prepack.LinearPacks` (``linear``,
    ``calls``, ``packed_calls``: the calls that ran quantized)."""

    kind = "int8"

    def __init__(self, weights: list[torch.Tensor]):
        self._weights = {id(w): w for w in weights}
        self._modules: dict[tuple[int, int], nn.Module] = {}
        self.calls = 0
        self.packed_calls = 0

    def __len__(self) -> int:
        return len(self._weights)

    def linear(self, x: torch.Tensor, w: torch.Tensor,
               b: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear(x, w, b)`` with int8 weights (fp32 in and out)."""
        self.calls += 1
        if self._weights.get(id(w)) is not w or x.device.type != "cpu":
            return torch.nn.functional.linear(x, w, b)
        key = (id(w), id(b))
        mod = self._modules.get(key)
        if mod is None:
            mod = self._modules[key] = quantize_linear(w, b)
        self.packed_calls += 1
        return mod(x.float())


def quantize_linear(w: torch.Tensor, b: torch.Tensor | None) -> nn.Module:
    """``quantize_dynamic`` of one ``nn.Linear`` holding ``w`` and ``b`` (int8 weights)."""
    from torch.ao.quantization import quantize_dynamic

    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w.detach().float())
        if b is not None:
            lin.bias.copy_(b.detach().float())
    with warnings.catch_warnings():     # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        q = quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    return q[0].eval()


def set_precision(bb, precision: str) -> None:
    """Give a backbone loaded with :func:`weights_dtype` ``(precision)`` weights its compute
    precision: ``int8`` quantized linear layers, ``bf16-autocast`` the autocast context of
    :func:`compute`; other names: nothing to add. ``bb.precision`` records it."""
    from .prepack import linear_weights

    if precision == "int8":
        bb.linear_packs = Int8Linears(linear_weights(bb))
    bb.precision = precision


def compute(bb):
    """The context every executor call of ``bb`` runs in: ``torch.autocast`` to bf16 for the
    ``bf16-autocast`` precision, else nothing."""
    if bb.precision == "bf16-autocast":
        return torch.autocast(device_type=torch.device(bb.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
