"""Workloads: what one timed *run* of a variant does under each protocol.

* ``rerank``: one query, ``depth`` candidates scored in batches of ``batch_size``; the query
  is tokenized and encoded once per run; document states are precomputed in memory before
  timing (``precompute``; optionally with per-layer K/V, ``kv_cache``; unless ``doc_vectors``
  is off, what a store keeps for the variant (:func:`~mice_bench.store.packing.
  store_content`): for late interaction, ``colbert``, the head's projected unit vectors, as a
  ColBERT index holds them; for ``biencoder`` its pooled, normalised vector per document, so
  the run's interaction is the query's pooling and a dot product) or tokenized and encoded
  inside the run. With ``doc_store`` the
  precomputed documents are held compressed (:mod:`~mice_bench.store.codecs`) and each
  batch is decoded on the device inside the run, in the ``doc_encode`` phase: reading a
  compressed store is part of the latency.
* ``paper``: the seed's measurement (xpmir/mice ``scripts/compare_latency_footprint.py``): one
  call on ``batch_size`` (query, document) pairs with one fixed short query repeated
  (re-encoded per pair), timing the whole call including tokenization.

Each run is split into the phases of :data:`~mice_bench.latency.timing.PHASES`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..spec import InteractionSpec
from .config import LatencyConfig
from .timing import PhaseTimer


@dataclass(frozen=True)
class SweepPoint:
    """One point of the sweep (requested batch size, document tokens, precompute)."""

    batch_size: int
    doc_tokens: int
    precompute: bool


def sweep_points(c: LatencyConfig) -> list[SweepPoint]:
    """Every point of a resolved config: documents x batch sizes x precompute settings."""
    pres = [c.precompute] if c.precompute is not None else (
        [False, True] if c.protocol == "paper" else [True])
    return [SweepPoint(b, d, p) for d in c.doc_tokens for b in c.batch_sizes for p in pres]


def effective_doc_tokens(spec: InteractionSpec, protocol: str, d: int, qlen: int,
                         max_pos: int) -> int:
    """Document tokens actually fed: the paper protocol truncates to the model's positions
    (as the seed's tokenizer calls do)."""
    if protocol != "paper":
        return d
    return min(d, max_pos - 3 - qlen) if spec.layout == "joint" else min(d, max_pos - 2)


class Workload:
    """One (variant, point): ``prepare()`` outside timing, then ``run(timer)`` per run."""

    def __init__(self, ex, protocol: str, batch_size: int, query: str, docs: list[str],
                 precompute: bool, kv_cache: bool, doc_vectors: bool = True,
                 doc_store: str | None = None, seed: int = 0, compute=None,
                 pool_factor: int = 1):
        self.ex = ex
        # the context of the row's precision (bf16 autocast; backbones/precision.py)
        self.compute = compute if compute is not None else contextlib.nullcontext
        self.protocol = protocol
        self.batch_size = batch_size
        self.query = query
        self.docs = docs
        self.split = ex.has_doc_precompute
        self.precompute = precompute and self.split
        # only executors with interaction layers over frozen documents have K/V to cache
        self.kv_cache = kv_cache and self.precompute and bool(ex.kv_layers)
        # late interaction / a bi-encoder: precomputed documents are the head's vectors (a
        # ColBERT index; one pooled vector per document), what a store keeps for them
        from ..store.packing import store_content

        content = store_content(ex) if self.precompute and doc_vectors else "states"
        self.doc_vectors = content != "states"
        self.doc_content = content
        self.doc_store = doc_store if self.precompute and not self.kv_cache else None
        self.seed = seed
        self.pool_factor = pool_factor if self.doc_store is not None else 1
        self.packed = None          # PackedDocs when the documents are read from a store
        self.pairs_per_run = len(docs)
        self.ds = None
        self.offline: dict[str, Any] = {}
        # --prepack: linear calls of this row's runs, and how many ran on packed weights
        self.linear_calls = 0
        self.packed_linear_calls = 0

    def prepare(self, device: torch.device) -> None:
        if not self.precompute:
            return
        t = time.perf_counter()
        with self.compute():
            self.ds = self.ex.encode_documents(self.docs, kv_cache=self.kv_cache,
                                               batch_size=max(self.batch_size, 1),
                                               vectors=self.doc_vectors)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.offline = {"doc_encode_s": time.perf_counter() - t,
                        "doc_states_mb": self.ds.nbytes / 2**20,
                        "docs": len(self.docs),
                        "doc_content": self.doc_content}
        if self.doc_store is not None:
            from ..store.packing import compress

            t = time.perf_counter()
            tokens = int(self.ds.mask.sum())
            self.packed = compress(self.ds, self.doc_store, seed=self.seed,
                                   content=self.doc_content,
                                   pool_factor=self.pool_factor).to(device)
            self.ds = None
            self.offline.update(doc_store=self.doc_store,
                                doc_compress_s=time.perf_counter() - t,
                                doc_store_mb=self.packed.nbytes / 2**20,
                                doc_store_params_mb=self.packed.params_nbytes / 2**20,
                                pool_factor=self.pool_factor, doc_tokens_original=tokens,
                                doc_tokens_stored=int(self.packed.lengths.sum()))

    def run(self, t: PhaseTimer) -> None:
        packs = self.ex.backbone.linear_packs
        before = (packs.calls, packs.packed_calls) if packs is not None else None
        with torch.inference_mode(), self.compute():
            if self.protocol == "paper":
                self._run_paper(t)
            else:
                self._run_rerank(t)
        if before is not None:
            self.linear_calls += packs.calls - before[0]
            self.packed_linear_calls += packs.packed_calls - before[1]

    # rerank: one query, its candidates in batches
    def _run_rerank(self, t: PhaseTimer) -> None:
        ex, B, docs = self.ex, self.batch_size, self.docs
        if not self.split:
            for i in range(0, len(docs), B):
                chunk = docs[i:i + B]
                with t.phase("tokenize"):
                    tb = ex.tokenize_pairs([self.query] * len(chunk), chunk)
                with t.phase("interaction"):
                    ex.forward_pairs(tb)
            return
        with t.phase("tokenize"):
            tq = ex.tokenize_queries([self.query])
        with t.phase("query_encode"):
            qs = ex.encode_queries(tq)
        for i in range(0, len(docs), B):
            n = min(B, len(docs) - i)
            if self.packed is not None:
                with t.phase("doc_encode"):      # decoding the store is part of the run
                    ds = self.packed.decode(i, i + n, device=self.packed.lengths.device)
                idx = torch.arange(n)
            elif self.precompute:
                ds, idx = self.ds, torch.arange(i, i + n)
            else:
                with t.phase("tokenize"):
                    td = ex.tokenize_docs(docs[i:i + n])
                with t.phase("doc_encode"):
                    ds = ex.encode_documents(td, batch_size=n)
                idx = torch.arange(n)
            with t.phase("interaction"):
                ex.score_states(qs, torch.zeros(n, dtype=torch.long), ds, idx)

    # paper: one call on B pairs, the query repeated and re-encoded for every pair
    def _run_paper(self, t: PhaseTimer) -> None:
        ex, docs = self.ex, self.docs
        queries = [self.query] * len(docs)
        if not self.split:
            with t.phase("tokenize"):
                tb = ex.tokenize_pairs(queries, docs)
            with t.phase("interaction"):
                ex.forward_pairs(tb)
            return
        idx = torch.arange(len(docs))
        with t.phase("tokenize"):
            tq = ex.tokenize_queries(queries)
            # as the reference script does, documents are tokenized inside the timed call
            # even when their states are precomputed
            td = ex.tokenize_docs(docs)
        if self.packed is not None:
            with t.phase("doc_encode"):          # decoding the store is part of the call
                ds = self.packed.decode(device=self.packed.lengths.device)
        elif self.precompute:
            ds = self.ds
        else:
            with t.phase("doc_encode"):
                ds = ex.encode_documents(td, batch_size=len(docs))
        with t.phase("query_encode"):
            qs = ex.encode_queries(tq)
        with t.phase("interaction"):
            ex.score_states(qs, idx, ds, idx)
