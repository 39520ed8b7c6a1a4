"""Fast-vs-reference agreement check on random texts (``mice-bench verify``), and, for a
precision other than fp32, every variant's scores in that precision against fp32.

Tolerances (:data:`FAST_TOLERANCE`, :data:`DTYPE_TOLERANCE`):

* fast vs reference executor, both in the run's precision: the largest ``|fast - ref|``
  score difference, at most 1e-4 in fp32 (the same arithmetic in another order), 0.05 in the
  16-bit precisions and int8 (the two executors round at different places);
* the precision against fp32 (the reference executor in fp32 on the same weights): the
  largest ``|score - score_fp32|`` over the pairs divided by the spread of the fp32 scores
  (max - min), a scale-free error a ranking feels: at most 0.25 for ``bf16``,
  ``bf16-autocast`` and ``fp16``, 0.30 for ``int8``. Random weights score every pair
  almost alike (a small spread), so this is strict: on MiniLM-L6 random weights, 6 pairs,
  the largest measured were 0.14 (bf16, ``ce``), 0.05 (bf16-autocast, ``ce``) and 0.19
  (int8, ``ce``); a quantization fed wrong weights (all halved) lands outside
  (``tests/test_precision.py``).
"""

from __future__ import annotations

import random

from .backbone import load_backbone
from .devices import placement
from .executors import make_executor
from .spec import presets, resolve

_WORDS = ("retrieval ranking neural query document passage attention layer model search "
          "vitamin protein cell climate river market court energy music language science "
          "history football museum policy theory disease network water").split()

#: largest ``|fast - reference|`` per precision (the default of ``verify --tolerance``)
FAST_TOLERANCE = {"fp32": 1e-4, "bf16": 0.05, "bf16-autocast": 0.05, "int8": 0.05,
                  "fp16": 0.05}
#: largest ``max |score - score_fp32| / (max - min of the fp32 scores)`` per precision
DTYPE_TOLERANCE = {"bf16": 0.25, "bf16-autocast": 0.25, "fp16": 0.25, "int8": 0.30}


def random_texts(n: int, lo: int, hi: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def relative_error(scores, ref) -> float:
    """``max |scores - ref| / (max(ref) - min(ref))`` (0 when both are equal everywhere)."""
    diff = float((scores.float() - ref.float()).abs().max())
    spread = float(ref.max() - ref.min())
    if spread > 0:
        return diff / spread
    return 0.0 if diff == 0 else float("inf")


def verify_variants(model: str, variants: str | None = None, pairs: int = 8,
                    dtype: str = "fp32", device: str = "cpu", seed: int = 0):
    """Per variant: the largest ``|fast - reference|`` score difference (None: no fast path)
    and, for a precision other than fp32, ``vs_fp32``: :func:`relative_error` of its scores
    (fast executor where there is one) against the fp32 reference executor's.
    ``device`` / ``dtype`` follow :mod:`mice_bench.devices` (fp16 refused on CPU; ``auto``
    resolved: ``rows`` come with the backbone, whose ``precision`` / dtype says which)."""
    from .backbones.precision import compute

    place = placement(device, dtype)
    bb = load_backbone(model, device=place.device, dtype=place.dtype, seed=seed)
    base = None if place.dtype == "fp32" else load_backbone(model, device=place.device,
                                                            dtype="fp32", seed=seed)
    specs = resolve(variants, bb.num_layers) if variants else presets(bb.num_layers)
    rng = random.Random(seed)
    queries = random_texts(pairs, 1, 12, rng)
    docs = random_texts(pairs, 3, 120, rng)
    rows = []
    for spec in specs:
        path = spec.fast_path(bb.num_layers)
        row = {"variant": str(spec), "fast_path": path, "max_abs_diff": None, "vs_fp32": None}
        with compute(bb):
            ref = make_executor(spec, bb, "reference").score_pairs(queries, docs, batch_size=4)
            fast = None if path is None else make_executor(spec, bb, "fast").score_pairs(
                queries, docs, batch_size=4)
        if fast is not None:
            row["max_abs_diff"] = float((fast.float() - ref.float()).abs().max())
        if base is not None:
            ref32 = make_executor(spec, base, "reference").score_pairs(queries, docs,
                                                                       batch_size=4)
            row["vs_fp32"] = relative_error(fast if fast is not None else ref, ref32)
        rows.append(row)
    return rows, bb
