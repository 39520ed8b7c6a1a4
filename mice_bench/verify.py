"""Fast-vs-reference agreement check on random texts (``mice-bench verify``)."""

from __future__ import annotations

import random

from .backbone import load_backbone
from .devices import placement
from .executors import make_executor
from .spec import presets, resolve

_WORDS = ("retrieval ranking neural query document passage attention layer model search "
          "vitamin protein cell climate river market court energy music language science "
          "history football museum policy theory disease network water").split()


def random_texts(n: int, lo: int, hi: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def verify_variants(model: str, variants: str | None = None, pairs: int = 8,
                    dtype: str = "fp32", device: str = "cpu", seed: int = 0):
    """Per variant: the largest ``|fast - reference|`` score difference (None: no fast path).
    ``device`` / ``dtype`` follow :mod:`mice_bench.devices` (fp16 refused on CPU)."""
    place = placement(device, dtype)
    bb = load_backbone(model, device=place.device, dtype=place.dtype, seed=seed)
    specs = resolve(variants, bb.num_layers) if variants else presets(bb.num_layers)
    rng = random.Random(seed)
    queries = random_texts(pairs, 1, 12, rng)
    docs = random_texts(pairs, 3, 120, rng)
    rows = []
    for spec in specs:
        path = spec.fast_path(bb.num_layers)
        row = {"variant": str(spec), "fast_path": path, "max_abs_diff": None}
        if path is not None:
            fast = make_executor(spec, bb, "fast").score_pairs(queries, docs, batch_size=4)
            ref = make_executor(spec, bb, "reference").score_pairs(queries, docs, batch_size=4)
            row["max_abs_diff"] = float((fast - ref).abs().max())
        rows.append(row)
    return rows, bb
