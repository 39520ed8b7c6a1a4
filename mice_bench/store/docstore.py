"""The document-state store: split-layer states of every document, compact and fault-safe.

Layout of one store directory (one per model x split layer x document settings x format)::

    meta.json                     what the key covers (model, split layer, corpus, format, ...)
    index.json                    {"version": 2, "format", "shards": [{"file", "ids", "bytes",
                                   "sha256", "tokens"}, ...]}
    shard-<n>-<hash>.safetensors  one flush of encoded documents (see below)
    .lock                         held while a run repairs or encodes (``filelock``)

    codec-<hash>.safetensors      residual formats: centroids, bucket cut-offs and weights

A shard holds only the **real tokens** of its documents (no padding), concatenated: the
codec's per-token tensors (:mod:`.codecs`: ``hidden [tokens, H]`` for fp32/fp16, plus
``scale [tokens]`` for int8; ``centroid [tokens]`` and packed ``codes`` for the residual
formats), ``seg [tokens]`` (int8 segment ids) and ``lengths [n]`` (int32); the safetensors
metadata repeats the document ids, the format and (residual formats) the SHA-256 of the codec
file the codes belong to, so a lost ``index.json`` is rebuilt from the shards.

Formats (``--doc-store``): ``fp32``; ``fp16`` (the default: half the bytes, scores within
1e-3 of fp32 states); ``int8`` (per-token symmetric scaling ``h ~ q * scale``,
``scale = max|h| / 127``: a quarter of fp32 plus 4 bytes per token); ``residual1`` |
``residual2`` | ``residual4`` (ColBERTv2 / PLAID residual compression: a centroid id and b bits
per dimension; centroids trained with ``faiss.Kmeans`` on a seeded sample of the documents
being stored, before the first shard is written; see :mod:`.codecs`). Only the hidden states
at the split layer are stored: that is all a split-first variant reads (interaction-layer K/V
are recomputed per query batch). A late-interaction variant (``colbert``: maxsim head, no
interaction layer) stores its head's document vectors instead (``content: vectors``: final
norm, 128-d projection, unit length, as a ColBERT index does), a third of the 384-d states;
a bi-encoder (``biencoder``: mean-cos head) its one pooled, normalised vector per document
(``content: pooled``).

Faults: every file is written atomically (unique temp file, fsync, rename). The index records
each shard's size and SHA-256; a shard that is missing, truncated or altered is reported by
name and its documents are encoded again; an unreadable ``index.json`` is rebuilt from the
shards; shards written after the last index update (a kill between the two) are adopted. A
missing or altered codec file invalidates every shard coded with it: all are encoded again
with a freshly trained codec. A store written in one format and opened as another is refused
(:class:`~.storeindex.StoreFormatError`), never repaired. A shard is written every
``flush_s`` seconds (and at most ``max_shard_docs`` documents), so a killed run loses only
the batch in flight and the last few seconds. Encoding happens under an inter-process lock:
a second run on the same store waits and then reuses the first's work.

This module encodes, writes and loads the states; the index and the checks above are
:mod:`.storeindex`'s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..errors import UsageError
from ..naming import key_hash
from ..results import atomic_write_bytes
from .codecs import CODEC_NAMES, get_codec, residual_centroids
from .packing import CONTENTS, finish, flatten, padded, split_heldout
from .pooling import pool_tokens
from ..safeio import cache_lock, sha256_bytes
from .shards import one_key, read_shard, shard_bytes, token_ranges
from .index import (read_index, refuse_other_format, repair_codec, repair_store,
                         write_index)

__all__ = ["DocStateStore", "STORE_FORMATS", "DEFAULT_STORE", "CorruptStore"]

STORE_FORMATS = CODEC_NAMES
DEFAULT_STORE = "fp16"
#: residual formats: documents drawn (seeded) until this many stored tokens train the codec
#: (``store build --codec-sample-tokens``)
SAMPLE_TOKENS = 262_144
#: residual formats: the most centroids (ColBERTv2's rule on the collection otherwise, see
#: :func:`.codecs.residual_centroids`): what k-means and the nearest-centroid search of a
#: CPU build afford
MAX_CENTROIDS = 4096
#: residual formats: the fewest (one centroid leaves a per-dimension quantisation of the raw
#: vectors, and faiss wants 39 training vectors per centroid); an in-memory codec for timing
#: (``latency --doc-store``) may train fewer
MIN_CENTROIDS = 2


class CorruptStore(RuntimeError):
    """A shard failed its check after the run had verified it (changed under the run)."""


class DocStateStore:
    """Document states stored in shards under one directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, meta: dict | None = None,
                 fmt: str = DEFAULT_STORE, flush_s: float = 5.0, max_shard_docs: int = 1024,
                 vectors: bool = False, content: str | None = None, seed: int = 0,
                 centroids: int | None = None, identity: dict | None = None,
                 pinned: bool = False, pool_factor: int = 1,
                 sample_tokens: int | None = None):
        """``vectors``: the store holds a late-interaction head's document vectors (what
        ``encode(..., vectors=True)`` returns), and :meth:`load` marks them so; ``content``
        names what is stored (``states`` | ``vectors`` | ``pooled``; overrides ``vectors``).
        Residual formats: ``seed`` draws the k-means sample and seeds ``faiss.Kmeans``;
        ``centroids`` (default: ColBERTv2's rule on the collection's stored tokens, estimated
        from the sample, at most :data:`MAX_CENTROIDS`); ``sample_tokens``: the k-means
        sample (default :data:`SAMPLE_TOKENS`). ``pool_factor``: each document's tokens are
        pooled to about ``1 / pool_factor`` of them before they are coded
        (:mod:`.pooling`; 1: none). ``identity``: what makes the stored states
        (:meth:`~mice_bench.executors.fast.SplitExecutor.doc_identity`), kept in ``meta.json``:
        a store of another identity is refused, and so is a store written before stores
        recorded one, unless ``pinned`` (the directory's own key already pins the model, as
        ``effectiveness``'s cache does: its identity is then recorded)."""
        if isinstance(pool_factor, bool) or not isinstance(pool_factor, int) or pool_factor < 1:
            raise ValueError(f"pool factor must be a whole number >= 1, got {pool_factor!r}")
        if fmt not in STORE_FORMATS:
            raise ValueError(f"unknown document store {fmt!r}; valid: {', '.join(STORE_FORMATS)}")
        content = content or ("vectors" if vectors else "states")
        if content not in CONTENTS:
            raise ValueError(f"unknown store content {content!r}; valid: {', '.join(CONTENTS)}")
        self.dir = Path(directory)
        self.fmt = fmt
        self.codec = get_codec(fmt)
        self.content = content
        self.vectors = content == "vectors"
        self.seed = int(seed)
        self.centroids = centroids
        self.pool_factor = pool_factor
        self.sample_tokens = int(sample_tokens or SAMPLE_TOKENS)
        self.meta = dict(meta or {}, store=fmt, content=content)
        self.identity = identity
        self.pinned = pinned
        if identity is not None:
            self.meta["identity"] = identity
        if pool_factor > 1:
            self.meta["pool_factor"] = pool_factor
        if self.codec.trained:
            self.meta.update(codec_seed=self.seed, codec_centroids=centroids,
                             codec_sample_tokens=self.sample_tokens)
        refuse_other_format(self)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.codec_entry: dict | None = None    # {"file", "bytes", "sha256"} (residual formats)
        self.params: dict[str, torch.Tensor] = {}
        self.flush_s = flush_s
        self.max_shard_docs = max_shard_docs
        self.shards: list[dict] = []
        #: ``(file, sha256)`` of the shards this process has checked (not hashed again)
        self.verified: set[tuple[str, str]] = set()
        self.encoded_now = 0                            # documents encoded by this process
        read_index(self, quiet=True)

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def repair(self) -> None:
        """Under the lock: bring the index in line with the files on disk
        (:func:`~.storeindex.repair_store`)."""
        repair_store(self)

    def _write_codec(self, params: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in params.items()},
                    metadata=one_key({"format": self.fmt, "seed": self.seed}))
        sha = sha256_bytes(data)
        name = f"codec-{sha[:16]}.safetensors"
        atomic_write_bytes(self.dir / name, data)
        self.codec_entry = {"file": name, "bytes": len(data), "sha256": sha}
        self.params = params
        write_index(self)

    # ------------------------------------------------------------------ queries
    def location(self) -> dict[str, tuple[int, int]]:
        """``doc_id -> (shard number, row)`` (the first shard holding the document; an adopted
        shard may repeat documents of another)."""
        loc: dict[str, tuple[int, int]] = {}
        for s, e in enumerate(self.shards):
            for r, d in enumerate(e["ids"]):
                loc.setdefault(d, (s, r))
        return loc

    def missing(self, doc_ids: Iterable[str]) -> list[str]:
        have = self.location()
        return [d for d in dict.fromkeys(doc_ids) if d not in have]

    def usage(self, doc_ids: Iterable[str] | None = None) -> dict:
        """Bytes on disk of the shards holding ``doc_ids`` (all when None), per document and
        per stored token; ``codec_bytes``: the codec file (centroids, cut-offs, weights), once
        per store; ``bytes_per_orig_token``: the shards' bytes plus the codec's share (the
        documents' part of the store's original tokens) per **original** token, before any
        pooling (``pool_factor``); ``orig_tokens_per_doc`` likewise."""
        want = None if doc_ids is None else set(doc_ids)
        nbytes = ndocs = ntok = norig = all_orig = 0
        for e in self.shards:
            orig = e.get("orig_tokens", e.get("tokens", 0))
            all_orig += orig
            if want is not None and not want.intersection(e["ids"]):
                continue
            nbytes += e["bytes"]
            ndocs += len(e["ids"])
            ntok += e.get("tokens", 0)
            norig += orig
        codec = (self.codec_entry["bytes"] if self.codec_entry else 0) \
            if self.codec.trained else 0
        share = codec * norig / all_orig if all_orig else 0.0
        out = {"store": self.fmt, "content": self.content, "pool_factor": self.pool_factor,
               "docs": ndocs, "bytes": nbytes,
               "bytes_per_doc": nbytes / ndocs if ndocs else None,
               "tokens_per_doc": ntok / ndocs if ndocs else None,
               "bytes_per_token": nbytes / ntok if ntok else None,
               "orig_tokens_per_doc": norig / ndocs if ndocs else None,
               "bytes_per_orig_token": (nbytes + share) / norig if norig else None}
        if self.codec.trained:
            out["codec_bytes"] = codec
            c = self.params.get("centroids")
            out["centroids"] = int(c.shape[0]) if c is not None else None
            out["codec_sample_tokens"] = self.sample_tokens
        return out

    # ------------------------------------------------------------------ encoding
    def ensure(self, doc_ids: Sequence[str], texts: Callable[[list[str]], dict[str, str]],
               encode: Callable[[list[str]], object], batch_size: int = 64,
               progress: Callable[[int], None] | None = None,
               on_todo: Callable[[int], None] | None = None,
               source: Callable[[list[str]], object] | None = None) -> int:
        """Encode and store the documents of ``doc_ids`` that are not stored yet; returns how
        many this call encoded.

        texts: doc ids -> {doc_id: text}; encode: ``batch_size`` texts -> DocStates
        ``[n, T, H]``. Documents are encoded by length (little padding) ``batch_size`` at a
        time; ``progress(n)`` after each batch; a shard is flushed every ``flush_s`` seconds.
        ``on_todo(n)`` is called once with the number of documents left to encode (after
        the lock is held and the store repaired). ``source(ids)``: the DocStates of those
        documents read from elsewhere (an fp32 store of the same documents: compressing it
        again costs no encoding), or None to encode them. A residual store without its codec first
        encodes a seeded sample of the documents (about :data:`SAMPLE_TOKENS` tokens),
        trains the codec on it and stores the sample as its first shards.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with cache_lock(self.dir / ".lock", f"document states in {self.dir}"):
            self.repair()
            todo = self.missing(doc_ids)
            if on_todo is not None:
                on_todo(len(todo))
            if not todo:
                return 0
            n_todo = len(todo)
            txt = texts(todo)
            def get(ids: list[str]):
                got = source(ids) if source is not None else None
                return got if got is not None else encode([txt[d] for d in ids])

            if self.codec.trained and not self.params:
                done = self._train(todo, get, batch_size, progress, len(doc_ids))
                todo = [d for d in todo if d not in done]
            todo.sort(key=lambda d: len(txt[d]))
            buf: list[dict[str, torch.Tensor]] = []
            buf_ids: list[str] = []
            last = time.monotonic()
            for i in range(0, len(todo), batch_size):
                ids = todo[i: i + batch_size]
                buf.append(self.pack(self.flatten(get(ids))))
                buf_ids.extend(ids)
                if progress is not None:
                    progress(len(ids))
                if time.monotonic() - last >= self.flush_s or len(buf_ids) >= self.max_shard_docs:
                    self._flush(buf, buf_ids)
                    buf, buf_ids, last = [], [], time.monotonic()
            if buf_ids:
                self._flush(buf, buf_ids)
            return n_todo

    def _train(self, todo: list[str], get, batch_size: int, progress, docs: int) -> set[str]:
        """Encode a seeded sample of ``todo``, train the codec on it (for a collection of
        ``docs`` documents), write the codec file, then the sample's shards."""
        flat, ids = self.encode_sample(todo, get, batch_size, progress)
        self.fit_codec(flat, docs)
        start = 0
        for j in range(0, len(flat), max(1, self.max_shard_docs // batch_size)):
            group = flat[j: j + max(1, self.max_shard_docs // batch_size)]
            n = sum(f[2].numel() for f in group)
            self._flush([self.pack(f) for f in group], ids[start: start + n])
            start += n
        return set(ids)

    def encode_sample(self, ids: list[str], get, batch_size: int, progress=None
                      ) -> tuple[list[tuple], list[str]]:
        """The codec's training sample: ``ids`` in a seeded order, encoded (``get``: ids ->
        DocStates) ``batch_size`` at a time until ``sample_tokens`` stored tokens; returns the
        flattened (and pooled) batches and their ids."""
        g = torch.Generator().manual_seed(self.seed)
        order = [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
        flat: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        got: list[str] = []
        ntok = 0
        for i in range(0, len(order), batch_size):
            part = order[i: i + batch_size]
            flat.append(self.flatten(get(part)))
            got.extend(part)
            ntok += int(flat[-1][2].sum())
            if progress is not None:
                progress(len(part))
            if ntok >= self.sample_tokens:
                break
        return flat, got

    def fit_codec(self, flat: list[tuple], docs: int | None = None) -> None:
        """Train the codec on the tokens of ``flat`` (:meth:`flatten` batches; 5 % held out
        for the residual statistics) and write the codec file and the index naming it.
        ``docs``: documents in the collection (default: the sample's); the number of
        centroids follows ColBERTv2's rule on its stored tokens, estimated as the sample's
        tokens per document times ``docs``."""
        x = torch.cat([f[0] for f in flat])
        ndocs = sum(f[2].numel() for f in flat)
        embeddings = round(x.shape[0] / max(ndocs, 1) * max(docs or ndocs, ndocs))
        train, held = split_heldout(x, self.seed)
        k = self.centroids or residual_centroids(embeddings, sample=train.shape[0],
                                                 cap=MAX_CENTROIDS)
        if k < MIN_CENTROIDS:
            raise UsageError(f"document store {self.dir}: {self.fmt} trains its centroids on "
                             f"the documents stored, and {train.shape[0]} vectors train {k}; "
                             f"it needs at least {MIN_CENTROIDS} ({MIN_CENTROIDS * 39} vectors, "
                             "faiss's 39 per centroid): store more documents, or use fp16 or "
                             "int8")
        self._write_codec(self.codec.fit(train, held, seed=self.seed, centroids=k))

    def flatten(self, states) -> tuple[torch.Tensor, ...]:
        """DocStates -> ``(x, seg, lengths, orig_lengths)``: the real tokens as the store
        keeps them (pooled at ``pool_factor``), and each document's tokens before pooling."""
        x, seg, lengths = flatten(states)
        return (*pool_tokens(x, seg, lengths, self.pool_factor), lengths)

    def pack(self, flat: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """:meth:`flatten` rows -> the rows of a shard (the codec's tensors, seg, lengths;
        ``orig_lengths`` when pooled)."""
        x, seg, lengths = flat[:3]
        out = {**self.codec.encode(x, self.params), "seg": seg, "lengths": lengths}
        if self.pool_factor > 1:
            out["orig_lengths"] = (flat[3] if len(flat) > 3 else lengths).to(torch.int32)
        return out

    def _flush(self, parts: list[dict[str, torch.Tensor]], ids: list[str]) -> None:
        name = f"shard-{len(self.shards):05d}-{key_hash(list(ids))}.safetensors"
        self.shards.append(self.write_shard(name, parts, ids))
        write_index(self)
        self.encoded_now += len(ids)

    def write_shard(self, name: str, parts: list[dict[str, torch.Tensor]], ids: list[str]
                    ) -> dict:
        """Write the shard file ``name`` (atomically) of ``parts`` (:meth:`pack` rows of
        ``ids``); returns its index entry, not yet in the index (:meth:`set_shards`)."""
        tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        codec_sha = self.codec_entry["sha256"] if self.codec.trained else None
        data = shard_bytes(tensors, ids, self.fmt, codec_sha)
        atomic_write_bytes(self.dir / name, data)
        sha = sha256_bytes(data)
        self.verified.add((name, sha))
        entry = {"file": name, "ids": ids, "bytes": len(data), "sha256": sha,
                 "tokens": int(tensors["lengths"].sum())}
        if "orig_lengths" in tensors:
            entry["orig_tokens"] = int(tensors["orig_lengths"].sum())
        if codec_sha:
            entry["codec"] = codec_sha
        return entry

    def set_shards(self, entries: list[dict]) -> None:
        """Make ``entries`` (shards verified or written by this job, in this order) the
        index, and write it."""
        self.shards = list(entries)
        self.verified.update((e["file"], e["sha256"]) for e in self.shards)
        write_index(self)

    # ------------------------------------------------------------------ loading
    def load(self, doc_ids: Sequence[str], device: str = "cpu"):
        """DocStates of ``doc_ids`` in that order (``hidden [N, T, H]`` padded to the longest;
        fp32 for an fp32 store, else fp16), decoded in one batch per shard on ``device``."""
        loc = self.location()
        missing = [d for d in doc_ids if d not in loc]
        if missing:
            raise KeyError(f"{len(missing)} documents are not stored, e.g. {missing[:3]}")
        if self.codec.trained and not self.params:
            repair_codec(self)
        by_shard: dict[int, list[int]] = {}
        for d in dict.fromkeys(doc_ids):
            by_shard.setdefault(loc[d][0], []).append(loc[d][1])
        xs, segs, starts, lens = [], [], {}, {}
        base = 0
        for s, want in by_shard.items():
            e = self.shards[s]
            f = self.dir / e["file"]
            data = f.read_bytes()
            if (e["file"], e["sha256"]) not in self.verified:
                if len(data) != e["bytes"] or sha256_bytes(data) != e["sha256"]:
                    raise CorruptStore(f"document-state shard {f} changed while this run used it")
                self.verified.add((e["file"], e["sha256"]))
            tensors, _ = read_shard(data)
            lengths = tensors.pop("lengths").long()
            seg = tensors.pop("seg")
            tensors.pop("orig_lengths", None)
            off = torch.zeros(len(lengths) + 1, dtype=torch.long)
            off[1:] = torch.cumsum(lengths, 0)
            w = torch.tensor(want, dtype=torch.long)
            idx = token_ranges(off[w], lengths[w])
            x = self.codec.decode({k: v[idx] for k, v in tensors.items()}, self.params, device)
            xs.append(finish(x, self.codec, self.content, self.pool_factor > 1))
            segs.append(seg[idx])
            wl = lengths[w]
            wo = torch.zeros(len(want), dtype=torch.long)
            wo[1:] = torch.cumsum(wl, 0)[:-1]
            for r, o, n in zip(want, wo.tolist(), wl.tolist()):
                starts[(s, r)], lens[(s, r)] = base + o, n
            base += int(wl.sum())
        H = xs[0].shape[1] if xs else 1
        flat = torch.cat(xs) if xs else torch.zeros(0, H, device=device)
        seg_all = torch.cat(segs) if segs else torch.zeros(0, dtype=torch.int8)
        st = torch.tensor([starts[loc[d]] for d in doc_ids], dtype=torch.long)
        ln = torch.tensor([lens[loc[d]] for d in doc_ids], dtype=torch.long)
        idx = token_ranges(st, ln)
        dt = torch.float32 if self.fmt == "fp32" else torch.float16
        out = padded(flat[idx.to(flat.device)].to(dt), seg_all[idx], ln, self.content)
        out.identity = self.meta.get("identity")
        return out
