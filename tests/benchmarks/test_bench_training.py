"""Training throughput (pairs/s: forward + backward + AdamW step) per variant on CPU
(pytest-benchmark; off by default, like the other benchmarks).

Run them with::

    pytest tests/benchmarks/test_bench_training.py --benchmark-enable --benchmark-only

One optimizer step = 8 queries x 4 documents (1 positive + 3 negatives) = 32 pairs, query 32
and documents 128 word pieces, on the MiniLM-L6-H384 architecture with random weights (no
download); ``extra_info["pairs_per_step"]`` turns the step time into pairs/s. Each variant
runs in fp32 and in bf16 (``torch.autocast`` to bf16 around forward and loss, as
``mice-bench train --precision bf16`` does; weights, gradients and AdamW state in fp32) on the
same batch; ``extra_info["precision"]`` says which.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

B, G, QT, DT = 8, 4, 32, 128


@lru_cache(maxsize=None)
def _setup(variant: str, precision: str = "fp32"):
    from mice_bench.latency.inputs import make_texts
    from mice_bench.model import InteractionModel
    from mice_bench.training.losses import listwise_ce

    model = InteractionModel.from_pretrained("minilm-l6", variant=variant, query_max_tokens=QT,
                                      doc_max_tokens=DT)
    model.requires_grad_(True)
    tok = model.backbone.tokenizer
    qs = [q for q in make_texts(tok, B, QT, seed=1) for _ in range(G)]
    ds = make_texts(tok, B * G, DT, seed=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    amp = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = listwise_ce(model(qs, ds).view(B, G).float())
        loss.backward()
        opt.step()

    return step


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", ["ce", "mice-l4+2", "colbert", "biencoder"])
def test_training_step(benchmark, variant, precision):
    step = _setup(variant, precision)
    benchmark.extra_info.update(pairs_per_step=B * G, variant=variant, precision=precision)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
