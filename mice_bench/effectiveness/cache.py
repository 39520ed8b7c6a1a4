"""On-disk caches that make runs resumable and avoid recomputation.

* :class:`ScoreCache` – one SQLite file per (model, variant, dataset, scoring settings):
  ``scores(qid, doc_id, score)``, committed after every query, so an interrupted run loses at
  most the query in flight and never scores a stored pair again. ``full_done(qid, depth)``
  records queries whose whole-corpus top-``depth`` is stored.
* :class:`DocStateCache` – document states at a split layer (``DocStates``: ``hidden
  [N, T, H]``, ``mask [N, T]``), computed once per document and stored in shards, keyed by
  model + split layer (+ the layers before it) + dtype + document tokenisation + corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Sequence

__all__ = ["ScoreCache", "DocStateCache", "key_hash", "slug"]


def key_hash(obj) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def slug(text: str, max_len: int = 60) -> str:
    """A file-system-safe name (``mice-l4+3`` stays, ``colbert[head=x]`` -> ``colbert_head-x``)."""
    s = re.sub(r"[\[\],=:/\\ ]+", "_", text.strip()).strip("_")
    s = re.sub(r"[^A-Za-z0-9._+\-]", "-", s)
    if len(s) > max_len:
        s = s[: max_len - 13] + "-" + key_hash(text)
    return s or key_hash(text)


class ScoreCache:
    """Pair scores of one (model, variant, dataset) in SQLite, flushed per query."""

    def __init__(self, path: str | os.PathLike, meta: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS scores (qid TEXT NOT NULL, doc_id TEXT NOT "
                        "NULL, score REAL NOT NULL, PRIMARY KEY (qid, doc_id))")
        self.db.execute("CREATE TABLE IF NOT EXISTS full_done (qid TEXT PRIMARY KEY, "
                        "depth INTEGER NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        if meta is not None:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('meta', ?)",
                            (json.dumps(meta, sort_keys=True, default=str),))
        self.db.commit()

    def scores(self) -> dict[str, dict[str, float]]:
        """Every stored score: ``{qid: {doc_id: score}}``."""
        out: dict[str, dict[str, float]] = {}
        for q, d, s in self.db.execute("SELECT qid, doc_id, score FROM scores"):
            out.setdefault(q, {})[d] = s
        return out

    def put_query(self, qid: str, scores: dict[str, float], full_depth: int | None = None) -> None:
        """Store the scores of one query and commit (the unit of resumption)."""
        self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)",
                            [(qid, d, float(s)) for d, s in scores.items()])
        if full_depth is not None:
            self.db.execute("INSERT OR REPLACE INTO full_done VALUES (?, ?)", (qid, full_depth))
        self.db.commit()

    def full_done(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT qid, depth FROM full_done"))

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ScoreCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DocStateCache:
    """Document states stored in shards under one directory (see module docstring).

    ``index.json`` lists ``[[shard file, [doc ids]], ...]``; a shard is written (atomically)
    before the index names it, so an interrupted encoding keeps every finished shard.
    """

    def __init__(self, directory: str | os.PathLike, meta: dict | None = None,
                 shard_size: int = 1024):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        if meta is not None and not (self.dir / "meta.json").exists():
            (self.dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True,
                                                           default=str))
        self._index: list[list] = self._read_index()
        self.encoded_now = 0  # documents encoded by this process

    def _read_index(self) -> list[list]:
        p = self.dir / "index.json"
        return json.loads(p.read_text()) if p.exists() else []

    def _write_index(self) -> None:
        from ..results import atomic_write_json

        atomic_write_json(self.dir / "index.json", self._index, indent=None)

    def location(self) -> dict[str, tuple[int, int]]:
        """``doc_id -> (shard number, row)``."""
        return {d: (s, r) for s, (_, ids) in enumerate(self._index) for r, d in enumerate(ids)}

    def missing(self, doc_ids: Iterable[str]) -> list[str]:
        have = self.location()
        return [d for d in dict.fromkeys(doc_ids) if d not in have]

    def ensure(self, doc_ids: Sequence[str], texts: Callable[[list[str]], dict[str, str]],
               encode: Callable[[list[str]], object],
               progress: Callable[[int], None] | None = None) -> None:
        """Encode and store the documents of ``doc_ids`` that are not stored yet.

        texts: doc ids -> {doc_id: text}; encode: texts ``[n]`` -> DocStates ``[n, T, H]``.
        Documents are encoded in shards, sorted by length to limit padding.
        """
        todo = self.missing(doc_ids)
        if not todo:
            return
        txt = texts(todo)
        todo.sort(key=lambda d: len(txt[d]))
        for i in range(0, len(todo), self.shard_size):
            ids = todo[i: i + self.shard_size]
            states = encode([txt[d] for d in ids])
            name = f"shard-{len(self._index):05d}-{key_hash(ids)}.pt"
            states.save(self.dir / name)
            self._index.append([name, ids])
            self._write_index()
            self.encoded_now += len(ids)
            if progress is not None:
                progress(len(ids))

    def load(self, doc_ids: Sequence[str], device: str = "cpu"):
        """DocStates of ``doc_ids`` in that order (``hidden [N, T, H]``, padded to the max T)."""
        from ..executors import DocStates

        loc = self.location()
        missing = [d for d in doc_ids if d not in loc]
        if missing:
            raise KeyError(f"{len(missing)} documents are not cached, e.g. {missing[:3]}")
        by_shard: dict[int, list[int]] = {}
        for d in dict.fromkeys(doc_ids):
            by_shard.setdefault(loc[d][0], []).append(loc[d][1])
        parts, order = [], []
        for s, rows in by_shard.items():
            st = DocStates.load(self.dir / self._index[s][0], device=device)
            parts.append(st.select(rows))
            order.extend((s, r) for r in rows)
        allst = DocStates.cat(parts)
        pos = {sr: i for i, sr in enumerate(order)}
        idx = [pos[loc[d]] for d in doc_ids]
        out = allst.select(idx)
        return DocStates(out.hidden, out.mask, out.seg, out.kv)
