"""Micro-benchmarks of the executors' timed phases (pytest-benchmark; off by default).

Run them with::

    pytest tests/benchmarks --benchmark-enable --benchmark-only -p no:randomly

They use the MiniLM-L6-H384 architecture with random weights (no download), one query of 32
tokens and 32 candidates of 128 tokens. The heavy setup happens inside the test body (cached),
so with the default ``--benchmark-skip`` nothing is built.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

QUERY_TOKENS, DOC_TOKENS, N = 32, 128, 32


@lru_cache(maxsize=None)
def _setup(variant: str, kv_cache: bool = False):
    from mice_bench.executors import make_executor
    from mice_bench.latency.inputs import make_texts

    bb = _backbone()
    ex = make_executor(variant, bb, query_max_tokens=QUERY_TOKENS)
    query = make_texts(bb.tokenizer, 1, QUERY_TOKENS, seed=1)[0]
    docs = make_texts(bb.tokenizer, N, DOC_TOKENS, seed=2)
    ds = ex.encode_documents(docs, kv_cache=kv_cache) if ex.has_doc_precompute else None
    return ex, query, docs, ds


@lru_cache(maxsize=None)
def _backbone():
    from mice_bench.backbone import load_backbone

    return load_backbone("minilm-l6", device="cpu", dtype=torch.float32)


def test_bench_ce_forward_pairs(benchmark):
    ex, q, docs, _ = _setup("ce")
    tb = ex.tokenize_pairs([q] * N, docs)
    benchmark(ex.forward_pairs, tb)


@pytest.mark.parametrize("variant,kv", [("mice-l2+3", False), ("mice-l2+3", True),
                                        ("colbert", False), ("prettr-l2", False)])
def test_bench_split_score_states(benchmark, variant, kv):
    ex, q, docs, ds = _setup(variant, kv)
    qs = ex.encode_queries([q])
    benchmark(ex.score_states, qs, torch.zeros(N, dtype=torch.long), ds, torch.arange(N))


def test_bench_encode_query(benchmark):
    ex, q, _, _ = _setup("mice-l2+3")
    tq = ex.tokenize_queries([q])
    benchmark(ex.encode_queries, tq)


def test_bench_encode_documents(benchmark):
    ex, _, docs, _ = _setup("mice-l2+3")
    td = ex.tokenize_docs(docs)
    benchmark.pedantic(ex.encode_documents, args=(td,), rounds=3, iterations=1)


def test_bench_tokenize_pairs(benchmark):
    ex, q, docs, _ = _setup("ce")
    benchmark(ex.tokenize_pairs, [q] * N, docs)
