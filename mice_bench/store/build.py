"""Building a document-state store at collection scale: one deterministic plan, encoded by
every ``torchrun`` rank into the same store, resumable after a kill, and the same bytes as a
one-process build.

* **Plan** (:func:`plan_build`): the documents to store (every document of the collection
  that no shard outside the plan already holds; with ``keep_stored``, as a re-ranking run
  builds its candidates' store, every document no shard holds but those of an interrupted
  build), ordered by text length, then id, and cut into chunks of ``chunk_docs``. Chunk ``i`` becomes the shard ``shard-b<i>-<hash of its ids>``;
  its documents are encoded ``batch_size`` at a time in plan order, so its name and bytes
  depend on the chunk alone (and the codec), never on timing, rank or world size.
* **Codec** (residual formats): rank 0 encodes the store's seeded sample of the plan's
  documents (:meth:`.DocStateStore.encode_sample`: ``sample_tokens`` stored tokens, pooled
  as the store pools), trains the codec once (``faiss``; ColBERTv2's number of centroids for
  the whole collection's stored tokens, estimated from the sample) and writes it; the other
  ranks wait and receive its parameters. Built over the whole corpus (``store build``), the
  codebook is the corpus's; a re-ranking run then reads that store and its codec.
* **Work**: rank ``r`` of ``W`` encodes chunks ``r, r + W, ...`` and writes only their shard
  files (atomically). Rank 0 holds the store's lock for the whole build (another run waits),
  and writes ``index.json`` once every rank is done: the shards that were there before the
  plan, then the plan's in chunk order.
* **Resume**: rank 0 first repairs the store as any run does (checksums of indexed shards,
  shards written after the last index update adopted, damaged ones dropped); a store that
  then holds every document is left as it is; otherwise a chunk whose shard is present with
  the chunk's ids is skipped. A killed build, run again with the same ``chunk_docs``, ends
  with the files of an uninterrupted one (with another, the shards of the old chunks are
  replaced by the new ones). Rank 0 names the plan's shards in ``.build-pending.json``
  before any rank encodes and removes it with the index update: the shards of an
  interrupted build are planned again, not kept as stored, also with ``keep_stored``.
* **Progress**: rank 0 shows one bar of every rank's documents (each other rank writes its
  count to a small file in the store, ``.build-progress-r<rank>``, removed at the end).

Byte-identical results need identical arithmetic: the same device type, dtype and thread
count (``torchrun`` sets ``OMP_NUM_THREADS=1``; set it for a one-process run to compare).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from ..distributed import DistEnv
from ..naming import key_hash
from ..results import atomic_write_bytes
from ..progress import Reporter
from ..safeio import cache_lock
from .docstore import DocStateStore

__all__ = ["BuildPlan", "BuildStats", "plan_build", "build_store", "BUILD_PREFIX",
           "DEFAULT_CHUNK_DOCS"]

#: the file-name prefix of a planned shard (``ensure`` writes ``shard-<n>-...``)
BUILD_PREFIX = "shard-b"
#: documents per planned shard
DEFAULT_CHUNK_DOCS = 1024
#: how often rank 0 reads the other ranks' progress (seconds)
POLL_S = 0.5
#: rank 0's record of a build under way: the shard files of its plan
PENDING = ".build-pending.json"


@dataclass(frozen=True)
class BuildPlan:
    """The documents of a build, chunk by chunk (see the module docstring)."""

    chunks: tuple[tuple[str, ...], ...]

    def name(self, i: int) -> str:
        """The shard file of chunk ``i``.

        >>> BuildPlan((("a", "b"),)).name(0)
        'shard-b000000-14683f87f0aa.safetensors'
        """
        return f"{BUILD_PREFIX}{i:06d}-{key_hash(list(self.chunks[i]))}.safetensors"

    def of_rank(self, rank: int, world: int) -> list[int]:
        """The chunks rank ``rank`` of ``world`` encodes: ``rank, rank + world, ...``."""
        return list(range(rank, len(self.chunks), world))

    @property
    def docs(self) -> list[str]:
        return [d for c in self.chunks for d in c]


def plan_build(texts: Mapping[str, str], chunk_docs: int = DEFAULT_CHUNK_DOCS,
               exclude: Sequence[str] = ()) -> BuildPlan:
    """The documents of ``texts`` (``doc_id -> text``) not in ``exclude``, ordered by text
    length then id, in chunks of ``chunk_docs``.

    >>> plan_build({"x": "ccc", "b": "a", "a": "bb", "c": "d"}, 2).chunks
    (('b', 'c'), ('a', 'x'))
    """
    if chunk_docs < 1:
        raise ValueError(f"chunk_docs must be >= 1, got {chunk_docs}")
    skip = set(exclude)
    order = sorted((d for d in texts if d not in skip), key=lambda d: (len(texts[d]), d))
    return BuildPlan(tuple(tuple(order[i: i + chunk_docs])
                           for i in range(0, len(order), chunk_docs)))


@dataclass
class BuildStats:
    """What one rank's build did; ``per_rank`` (rank 0): every rank's ``encoded``."""

    docs: int = 0                # documents in the plan
    chunks: int = 0
    chunks_reused: int = 0       # present and verified before this run
    encoded: int = 0             # documents this rank encoded (the codec sample not counted)
    sample_docs: int = 0         # documents encoded to train the codec (rank 0)
    seconds: float = 0.0
    per_rank: list[int] = field(default_factory=list)


def build_store(store: DocStateStore, texts: Mapping[str, str],
                encode: Callable[[list[str]], object], dist: DistEnv | None = None,
                batch_size: int = 64, chunk_docs: int = DEFAULT_CHUNK_DOCS,
                reporter: Reporter | None = None, description: str = "encode docs",
                source: Callable[[list[str]], object] | None = None,
                keep_stored: bool = False) -> BuildStats:
    """Store every document of ``texts`` in ``store`` by the plan (module docstring); every
    rank of ``dist`` calls it with the same arguments. ``encode``: texts -> DocStates;
    ``source(ids)``: their DocStates read from elsewhere (an fp32 store), or None to encode;
    ``reporter``: rank 0's progress (the others' is not used); ``keep_stored``: a document
    any completed shard holds is not planned (nothing stored is encoded again, whichever
    plan stored it), instead of only those of shards outside the plan. Ranks other than 0 keep the
    index they opened: :meth:`.DocStateStore.ensure` or :meth:`~.DocStateStore.repair` reads
    the new one."""
    dist = dist or DistEnv()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    stats = BuildStats()

    def get(ids: list[str]):
        got = source(ids) if source is not None else None
        return got if got is not None else encode([texts[d] for d in ids])

    lock = cache_lock(store.dir / ".lock", f"document states in {store.dir}") if dist.main \
        else contextlib.nullcontext()
    with lock:
        prep = shared = None
        if dist.main:
            prep = _prepare(store, texts, chunk_docs, get, batch_size, stats, keep_stored)
            shared = (prep.exclude, sorted(prep.done), store.codec_entry,
                      store.params if store.codec.trained else None,
                      bool(reporter and reporter.enabled) and dist.active, prep.complete)
        exclude, done_ids, codec_entry, params, files, complete = dist.broadcast(shared)
        if not dist.main and store.codec.trained:
            store.codec_entry, store.params = codec_entry, params
        plan = prep.plan if dist.main else BuildPlan(()) if complete \
            else plan_build(texts, chunk_docs, exclude)
        done = set(done_ids)
        mine = [i for i in plan.of_rank(dist.rank, dist.world) if i not in done]
        todo = sum(len(c) for i, c in enumerate(plan.chunks) if i not in done)
        written: dict[int, dict] = {}
        with _progress(store, dist, reporter, todo, description, files) as step:
            for i in mine:
                ids = list(plan.chunks[i])
                parts = []
                for j in range(0, len(ids), batch_size):
                    part = ids[j: j + batch_size]
                    parts.append(store.pack(store.flatten(get(part))))
                    step(len(part))
                written[i] = _slim(store.write_shard(plan.name(i), parts, ids))
                stats.encoded += len(ids)
            every = dist.gather((written, stats.encoded))
        if dist.main:
            entries = dict(prep.done)
            for part, _ in every:
                for i, e in part.items():
                    entries[i] = {"file": e["file"], "ids": list(plan.chunks[i]),
                                  **{k: v for k, v in e.items() if k != "file"}}
            names = {plan.name(i) for i in range(len(plan.chunks))}
            planned = set(plan.docs)
            # shards of another plan (another --chunk-docs) whose documents this one holds
            stale = {e["file"] for e in store.shards if e["file"] not in names and e["file"]
                     .startswith(BUILD_PREFIX) and planned.issuperset(e["ids"])}
            before = [e for e in store.shards if e["file"] not in names | stale]
            if plan.chunks:
                store.set_shards(before + [entries[i] for i in range(len(plan.chunks))])
            for f in stale:
                (store.dir / f).unlink(missing_ok=True)
            (store.dir / PENDING).unlink(missing_ok=True)
            stats.per_rank = [n for _, n in every]
    dist.barrier()                         # the index is written before any rank reads it
    stats.docs, stats.chunks = len(plan.docs), len(plan.chunks)
    stats.chunks_reused = len(done)
    stats.seconds = time.perf_counter() - t0
    return stats


def _slim(entry: dict) -> dict:
    """An index entry without its ids (rank 0 knows them from the plan)."""
    return {k: v for k, v in entry.items() if k != "ids"}


@dataclass
class _Prepared:
    plan: BuildPlan
    exclude: list[str]
    done: dict[int, dict]           # chunk -> its verified index entry
    complete: bool = False          # the store held every document already: nothing to do


def _prepare(store: DocStateStore, texts, chunk_docs: int, get, batch_size: int,
             stats: BuildStats, keep_stored: bool = False) -> _Prepared:
    """Rank 0, under the lock: repair the store, plan, find the chunks already stored, train
    the codec when the format needs one and it is missing."""
    store.repair()
    for f in store.dir.glob(".build-progress-r*"):     # a killed build's counters
        f.unlink(missing_ok=True)
    pending_path = store.dir / PENDING
    if not store.missing(texts):
        pending_path.unlink(missing_ok=True)
        return _Prepared(BuildPlan(()), [], {}, complete=True)
    try:
        interrupted = set(json.loads(pending_path.read_text()))
    except (OSError, ValueError, TypeError):
        interrupted = set()

    def kept(name: str) -> bool:
        if keep_stored:
            return name not in interrupted
        return not name.startswith(BUILD_PREFIX)

    exclude = sorted({d for e in store.shards if kept(e["file"]) for d in e["ids"]
                      if d in texts})
    plan = plan_build(texts, chunk_docs, exclude)
    have = {e["file"]: e for e in store.shards}
    done = {}
    for i, chunk in enumerate(plan.chunks):
        e = have.get(plan.name(i))
        if e is not None and list(e["ids"]) == list(chunk):
            done[i] = e
    if store.codec.trained and not store.params and len(done) < len(plan.chunks):
        flat, ids = store.encode_sample(plan.docs, get, batch_size)
        store.fit_codec(flat, len(texts))
        stats.sample_docs = len(ids)
    if len(done) < len(plan.chunks):
        names = sorted(interrupted | {plan.name(i) for i in range(len(plan.chunks))})
        atomic_write_bytes(pending_path, json.dumps(names).encode())
    return _Prepared(plan, exclude, done)


@contextlib.contextmanager
def _progress(store: DocStateStore, dist: DistEnv, reporter: Reporter | None, total: int,
              description: str, files: bool) -> Iterator[Callable[[int], None]]:
    """``step(n)`` after each batch of this rank. Rank 0: one bar of every rank's documents
    (the others' counts read from their files every :data:`POLL_S` s); other ranks: their
    count written to ``.build-progress-r<rank>`` when ``files``."""
    if not dist.main:
        count = [0]
        path = store.dir / f".build-progress-r{dist.rank}"

        def post(n: int) -> None:
            count[0] += n
            if files:
                tmp = path.with_name(path.name + ".part")
                tmp.write_text(str(count[0]))
                os.replace(tmp, path)

        yield post
        return
    reporter = reporter or Reporter(enabled=False)
    with reporter.task(description, total, unit="docs") as adv:
        if not (files and dist.active):
            yield adv
            return
        shown = [0]                 # the other ranks' documents already on the bar
        stop = threading.Event()
        lock = threading.Lock()

        def poll() -> None:
            n = 0
            for r in range(1, dist.world):
                try:
                    n += int((store.dir / f".build-progress-r{r}").read_text() or 0)
                except (OSError, ValueError):
                    pass
            with lock:
                if n > shown[0]:
                    adv(n - shown[0])
                    shown[0] = n

        def loop() -> None:
            while not stop.wait(POLL_S):
                poll()

        th = threading.Thread(target=loop, name="store-build-progress", daemon=True)
        th.start()
        try:
            yield adv
        finally:
            stop.set()
            th.join()
            poll()
            for r in range(1, dist.world):
                (store.dir / f".build-progress-r{r}").unlink(missing_ok=True)
