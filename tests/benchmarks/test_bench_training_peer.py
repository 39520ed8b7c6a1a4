"""Training throughput against a peer: one optimizer step of mice-bench's ``ce`` and of
sentence-transformers' ``CrossEncoder`` on the same weights, batch, lengths and loss
(pytest-benchmark; off by default, like the other benchmarks).

Run them with::

    pytest tests/benchmarks/test_bench_training_peer.py --benchmark-enable --benchmark-only \\
        -o addopts="" --benchmark-json results/benchmarks/training-peer-cpu.json

One step = 8 queries x 4 documents (1 positive + 3 negatives) = 32 pairs, queries of 32 and
documents of 128 word pieces (160-token pairs, no truncation on either side), pointwise
binary cross-entropy on the logits (label 1 for the positive), forward + backward + AdamW
(lr 1e-6), dropout off on both sides, on the MiniLM-L6-H384 architecture with the same
seeded random weights. ``extra_info["pairs_per_step"]`` turns the step time into pairs/s.

``test_same_step_on_both_sides`` (not a benchmark: runs with the plain test command) checks
that the two steps compute the same loss on the same pairs.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

st = pytest.importorskip("sentence_transformers", reason="pip install 'mice-bench[peers]'")

B, G, QT, DT = 8, 4, 32, 128
LR = 1e-6


@lru_cache(maxsize=None)
def _batch():
    from mice_bench.backbone import packaged_tokenizer
    from mice_bench.latency.inputs import make_texts

    tok = packaged_tokenizer()
    qs = [q for q in make_texts(tok, B, QT, seed=1) for _ in range(G)]
    ds = make_texts(tok, B * G, DT, seed=2)
    labels = torch.tensor([1.0 if i % G == 0 else 0.0 for i in range(B * G)])
    return qs, ds, labels


def _step(opt, loss):
    """One optimizer step on ``loss()``: zero the gradients, backward, step; returns the loss."""
    def step():
        opt.zero_grad(set_to_none=True)
        out = loss()
        out.backward()
        opt.step()
        return out

    return step


def _ours():
    from mice_bench.model import InteractionModel
    from mice_bench.training.losses import bce

    model = InteractionModel.from_pretrained("minilm-l6", variant="ce", query_max_tokens=QT,
                                      doc_max_tokens=DT)
    model.requires_grad_(True)
    qs, ds, _ = _batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)

    def loss():
        return bce(model(qs, ds).view(B, G))

    return _step(opt, loss), loss


def _crossencoder(tmp):
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from mice_bench.backbone import packaged_tokenizer
    from mice_bench.latency.peers import same_hf_model

    same_hf_model("minilm-l6", 0, "cpu", torch.float32).save_pretrained(tmp)
    packaged_tokenizer().save_pretrained(tmp)
    ce = CrossEncoder(str(tmp), device="cpu", num_labels=1, max_length=512,
                      local_files_only=True)
    ce.model.eval()                         # dropout off, as on mice-bench's side
    crit = BinaryCrossEntropyLoss(ce)
    qs, ds, labels = _batch()
    opt = torch.optim.AdamW(ce.model.parameters(), lr=LR)

    def loss():
        return crit([qs, ds], labels)

    return _step(opt, loss), loss


def test_same_step_on_both_sides(tmp_path):
    """Same weights, pairs, lengths and loss: the two losses agree before any step."""
    _, ours = _ours()
    _, theirs = _crossencoder(tmp_path)
    a, b = ours(), theirs()
    assert torch.isfinite(a) and abs(float(a) - float(b)) < 1e-5


@pytest.mark.benchmark(group="training-step-vs-crossencoder")
def test_training_step_mice_bench_ce(benchmark):
    step, _ = _ours()
    benchmark.extra_info.update(pairs_per_step=B * G, side="mice-bench ce")
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="training-step-vs-crossencoder")
def test_training_step_sentence_transformers_crossencoder(benchmark, tmp_path):
    step, _ = _crossencoder(tmp_path)
    benchmark.extra_info.update(pairs_per_step=B * G, side="sentence-transformers CrossEncoder")
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
