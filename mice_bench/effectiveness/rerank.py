"""Scoring candidates (or a whole corpus) with one model variant, through the caches.

* joint variants (``ce``, ``mask*``): ``ex.score_pairs`` on each query's uncached candidates,
  in batches of ``batch_size``;
* split-first variants (``ex.has_doc_precompute``: ``prettr``, ``mice``, ``colbert``,
  ``biencoder``): documents encoded once into the store (what ``ex.doc_repr`` declares: states,
  a ColBERT index's vectors, a bi-encoder's pooled vector), each query encoded once, then
  ``ex.score_query`` on its candidates;
* ``full`` (split-first only): every corpus document is a candidate (for a bi-encoder, the
  whole corpus in one batch of the head's dot product).

Every score comes from the executor. The cache keys are :mod:`.keys`'s.

Scores go to a :class:`~.cache.ScoreCache` committed after every query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import UsageError
from .cache import ScoreCache
from .keys import score_key, score_path, store_dir, store_key
from ..store.packing import store_content, store_encoder
from ..safeio import cache_lock
from ..store.docstore import DEFAULT_STORE, DocStateStore
from ..data.collections import Collection
from ..data.firststage import Run, ranked
from ..progress import Reporter

AfterQuery = Callable[[str], None]


@dataclass
class ScoringSettings:
    """How pairs are scored (everything here is part of the cache keys)."""

    batch_size: int = 32
    doc_batch_size: int = 64
    query_max_tokens: int | None = None
    doc_max_tokens: int | None = None
    dtype: str = "fp32"
    device: str = "cpu"
    executor: str = "auto"
    seed: int = 0
    doc_store: str = DEFAULT_STORE    # fp16 | fp32 | int8 | residual1|2|4 (split-first only)
    pool_factor: int = 1              # stored tokens pooled to ~1/N per document (1: none)
    codec_sample_tokens: int | None = None   # residual codec's k-means sample (None: default)


@dataclass
class ScoreStats:
    """What one scoring call did (seconds, counts) – the ``timing`` block of a result file."""

    queries: int = 0
    queries_scored: int = 0
    pairs_total: int = 0
    pairs_scored: int = 0
    pairs_cached: int = 0
    docs_encoded: int = 0
    doc_encode_s: float = 0.0
    scoring_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d["pairs_per_s"] = self.pairs_scored / self.scoring_s if self.scoring_s > 0 else None
        d["docs_per_s"] = self.docs_encoded / self.doc_encode_s if self.doc_encode_s > 0 else None
        d.update(self.extra)
        return d


class VariantScorer:
    """Scores queries of one collection with one executor (one model x variant)."""

    def __init__(self, ex, model_name: str, coll: Collection,
                 cache_dir: Path, settings: ScoringSettings, reporter: Reporter | None = None,
                 shard: tuple[int, int] | None = None):
        """``shard=(rank, world)`` under ``torchrun``: this process scores a disjoint share
        of the queries, so it locks only its share of the (shared) score file; the document
        store is one for all ranks (:meth:`build_docs`)."""
        self.ex = ex
        self.shard = shard if shard and shard[1] > 1 else None
        self.coll = coll
        self.settings = settings
        self.reporter = reporter or Reporter(enabled=False)
        self.variant = str(ex.spec)
        self.doc_cache: DocStateStore | None = None
        store = settings.doc_store if ex.has_doc_precompute else None
        self.score_key = score_key(ex, model_name, coll, settings, store)
        self.score_path = score_path(cache_dir, coll, self.variant, self.score_key)
        self._fp32_dir: Path | None = None
        if ex.has_doc_precompute:
            self._dkey = store_key(ex, model_name, coll, settings)
            # an fp32 store of the same documents: another format compresses it, no encoding
            # the unpooled fp32 store of the same documents: another format (or a pooled
            # store) compresses it, no encoding
            self._fp32_key = dict(self._dkey, store="fp32", pool_factor=1,
                                  codec_sample_tokens=None)
            if self._fp32_key != self._dkey:
                self._fp32_dir = store_dir(cache_dir, self._fp32_key)
            # the directory's key pins the model: a store written before stores recorded
            # their identity is adopted
            self._identity = ex.doc_identity(store_content(ex))
            self.doc_cache = DocStateStore(store_dir(cache_dir, self._dkey), meta=self._dkey,
                                           fmt=settings.doc_store, content=store_content(ex),
                                           seed=settings.seed, identity=self._identity,
                                           pinned=True, pool_factor=settings.pool_factor,
                                           sample_tokens=settings.codec_sample_tokens)
        self.stats = ScoreStats()

    # ----------------------------------------------------------------- helpers
    def _lock_path(self) -> Path:
        """The score file's writer lock; a shard's own under torchrun (disjoint queries)."""
        path = ScoreCache.lock_path(self.score_path)
        return Path(f"{path}.rank{self.shard[0]}of{self.shard[1]}") if self.shard else path

    def _ensure_docs(self, doc_ids: list[str], texts: Callable[[list[str]], dict[str, str]]):
        """Encode the missing documents (timed, with a docs/s bar advancing per batch); the
        store checks its shards first (a corrupt one is encoded again) and locks out a second
        run, which then reuses this one's work."""
        assert self.doc_cache is not None
        todo = self.doc_cache.missing(doc_ids)
        t = time.perf_counter()
        bs = self.settings.doc_batch_size
        encode = store_encoder(self.ex, bs)
        source = self._fp32_source(todo)
        with self.reporter.task(f"{self.coll.name} {self.variant}: encode docs", len(todo),
                                unit="docs") as adv:
            n = self.doc_cache.ensure(doc_ids, texts, encode, batch_size=bs, progress=adv,
                                      source=source)
        if n and source is not None:
            self.stats.extra["doc_source"] = "fp32 store (compressed again, not encoded)"
        if n:
            self.stats.doc_encode_s += time.perf_counter() - t
            self.stats.docs_encoded += n

    def build_docs(self, texts: dict[str, str], dist=None, chunk_docs: int | None = None,
                   keep_stored: bool = False):
        """Store every document of ``texts`` (``doc_id -> text``) by the deterministic build
        plan of :mod:`.storebuild`: under ``torchrun`` every rank of ``dist`` calls it and
        encodes its share of the chunks into the shared store; ``keep_stored``: no stored
        document is encoded again (a re-ranking run's candidates). Returns its stats."""
        from ..store.build import DEFAULT_CHUNK_DOCS, build_store

        assert self.doc_cache is not None
        bs = self.settings.doc_batch_size
        source = self._fp32_source(list(texts))
        st = build_store(self.doc_cache, texts, store_encoder(self.ex, bs), dist=dist,
                         batch_size=bs, chunk_docs=chunk_docs or DEFAULT_CHUNK_DOCS,
                         reporter=self.reporter, source=source, keep_stored=keep_stored,
                         description=f"{self.coll.name} {self.variant}: encode docs")
        if st.encoded and source is not None:
            self.stats.extra["doc_source"] = "fp32 store (compressed again, not encoded)"
        if st.encoded or st.sample_docs:
            self.stats.doc_encode_s += st.seconds
            self.stats.docs_encoded += st.encoded
        return st

    def _fp32_source(self, todo: list[str]):
        """``ids -> DocStates`` read from the fp32 store of the same documents when it holds
        every document of ``todo``, else None (the documents are encoded)."""
        d = self._fp32_dir
        if not todo or d is None or not (d / "index.json").exists():
            return None
        try:
            src = DocStateStore(d, meta=self._fp32_key, fmt="fp32",
                                content=self.doc_cache.content, identity=self._identity,
                                pinned=True)
        except UsageError:
            return None
        if src.missing(todo):
            return None
        return lambda ids: src.load(ids)

    def _record_store(self, doc_ids: list[str]) -> None:
        """Bytes on disk per document of the states this run read (``timing.doc_store``)."""
        if self.doc_cache is not None:
            self.stats.extra["doc_store"] = self.doc_cache.usage(doc_ids)

    # ----------------------------------------------------------------- re-ranking
    def rerank(self, candidates: Run, after_query: AfterQuery | None = None,
               queries: list[str] | None = None, dist=None) -> Run:
        """Scores of every candidate pair of ``queries`` (default: all; cached pairs are not
        scored again).

        candidates: ``{qid: {doc_id: first-stage score}}`` of every query; returns
        ``{qid: {doc_id: score}}`` for ``queries``. A split-first variant first stores the
        documents of every query's candidates by the build plan (:meth:`build_docs`): under
        ``torchrun`` every rank of ``dist`` passes the same ``candidates`` and its share of
        the queries, and the ranks build one store together (rank 0's candidate set)."""
        mine = candidates if queries is None else {q: candidates[q] for q in queries}

        def pending_of(stored) -> dict[str, list[str]]:
            out = {}
            for q, docs in mine.items():
                miss = [d for d in docs if d not in stored.get(q, {})]
                if miss:
                    out[q] = miss
            return out

        self.stats = ScoreStats(queries=len(mine))
        self.stats.pairs_total = sum(len(d) for d in mine.values())
        with ScoreCache(self.score_path, meta=self.score_key) as cache:
            pending = pending_of(cache.scores())
        union = list(dict.fromkeys(d for ds in candidates.values() for d in ds))
        if self.doc_cache is not None:
            from ..distributed import DistEnv

            dist = dist or DistEnv()
            if dist.any(bool(pending)):                # any rank with pairs left to score
                union = dist.broadcast(union if dist.main else None)
                self.build_docs(self.coll.doc_texts(union), dist, keep_stored=True)
        if pending:   # score under the lock; another run may have scored them meanwhile
            with cache_lock(self._lock_path(),
                            f"the scores of {self.variant} on {self.coll.name}"), \
                    ScoreCache(self.score_path, meta=self.score_key) as cache:
                pending = pending_of(cache.scores())
                if pending:
                    self._score_pending(cache, pending, after_query)
        with ScoreCache(self.score_path, meta=self.score_key) as cache:
            stored = cache.scores()
        self.stats.pairs_cached = self.stats.pairs_total - self.stats.pairs_scored
        if self.doc_cache is not None:
            self._record_store(union)
        return {q: {d: stored[q][d] for d in docs} for q, docs in mine.items()}

    def _score_pending(self, cache: ScoreCache, pending: dict[str, list[str]],
                       after_query: AfterQuery | None) -> None:
        all_docs = list(dict.fromkeys(d for ds in pending.values() for d in ds))
        npairs = sum(len(v) for v in pending.values())
        bs = self.settings.batch_size
        if self.doc_cache is not None:
            self._ensure_docs(all_docs, self.coll.doc_texts)
            t_load = time.perf_counter()
            states = self.doc_cache.load(all_docs, device=self.settings.device)
            self.stats.extra["doc_load_s"] = time.perf_counter() - t_load
            self.stats.extra["doc_load_docs"] = len(all_docs)
            pos = {d: i for i, d in enumerate(all_docs)}
            texts = None
        else:                              # joint scoring, or the reference executor
            texts = self.coll.doc_texts(all_docs)
        t0 = time.perf_counter()
        with self.reporter.task(f"{self.coll.name} {self.variant}: score", npairs) as adv:
            for q, docs in pending.items():
                qtext = self.coll.queries[q]
                if self.doc_cache is not None:
                    scores = self.ex.score_query(self.ex.encode_queries([qtext]), states,
                                                 [pos[d] for d in docs], batch_size=bs)
                else:
                    scores = self.ex.score_pairs([qtext] * len(docs), [texts[d] for d in docs],
                                                 batch_size=bs)
                cache.put_query(q, dict(zip(docs, scores.tolist())))
                self.stats.pairs_scored += len(docs)
                self.stats.queries_scored += 1
                adv(len(docs))
                if after_query is not None:
                    after_query(q)
        self.stats.scoring_s += time.perf_counter() - t0

    # ----------------------------------------------------------------- full corpus
    def full(self, depth: int, after_query: AfterQuery | None = None,
             queries: list[str] | None = None, dist=None) -> Run:
        """Top-``depth`` of the whole corpus for every query (split-first variants only), or
        for ``queries`` (a rank's share under torchrun: every rank of ``dist`` encodes its
        share of the corpus into the shared store, :meth:`build_docs`)."""
        if self.doc_cache is None:
            from ..spec import PRECOMPUTABLE

            raise UsageError(f"{self.variant}: --first-stage full needs a variant whose documents "
                             f"can be precomputed ({PRECOMPUTABLE})")
        qids = list(self.coll.queries) if queries is None else list(queries)
        self.stats = ScoreStats(queries=len(qids))
        corpus: dict[str, str] = {}
        for did, text in self.coll.iter_corpus():
            corpus[did] = text
        doc_ids = list(corpus)
        self.stats.pairs_total = len(qids) * len(doc_ids)

        def pending_of(cache) -> list[str]:
            done = cache.full_done()
            return [q for q in qids if done.get(q, -1) < depth]

        with ScoreCache(self.score_path, meta=self.score_key) as cache:
            pending = pending_of(cache)
        from ..distributed import DistEnv

        dist = dist or DistEnv()
        if dist.any(bool(pending)):                   # any rank with queries left to score
            self.build_docs(corpus, dist)
        if pending:
            with cache_lock(self._lock_path(),
                            f"the scores of {self.variant} on {self.coll.name}"), \
                    ScoreCache(self.score_path, meta=self.score_key) as cache:
                pending = pending_of(cache)
                if pending:
                    self._ensure_docs(doc_ids, lambda ids: {d: corpus[d] for d in ids})
                    states = self.doc_cache.load(doc_ids, device=self.settings.device)
                    self._full_pending(cache, pending, states, doc_ids, depth, after_query)
        with ScoreCache(self.score_path, meta=self.score_key) as cache:
            stored = cache.scores()
        self.stats.pairs_cached = self.stats.pairs_total - self.stats.pairs_scored
        self._record_store(doc_ids)
        return {q: dict(ranked(stored.get(q, {}))[:depth]) for q in qids}

    def _full_pending(self, cache: ScoreCache, pending: list[str], states, doc_ids: list[str],
                      depth: int, after_query: AfterQuery | None) -> None:
        n = len(doc_ids)
        k = min(depth + (1 if self.coll.info.ignore_identical_ids else 0), n)
        # a bi-encoder's pooled vectors: the whole corpus in one product per query
        bs = n if self.ex.bi_encoder else self.settings.batch_size
        t0 = time.perf_counter()
        with self.reporter.task(f"{self.coll.name} {self.variant}: full corpus",
                                len(pending) * n) as adv:
            for q in pending:
                qs = self.ex.encode_queries([self.coll.queries[q]])
                scores = self.ex.score_query(qs, states, batch_size=bs)  # [N]
                top = torch.topk(scores, k)
                res = {doc_ids[j]: float(s) for s, j in zip(top.values.tolist(),
                                                           top.indices.tolist())
                       if doc_ids[j] != q or not self.coll.info.ignore_identical_ids}
                res = dict(ranked(res)[:depth])
                cache.put_query(q, res, full_depth=depth)
                self.stats.pairs_scored += n
                self.stats.queries_scored += 1
                adv(n)
                if after_query is not None:
                    after_query(q)
        self.stats.scoring_s += time.perf_counter() - t0
