"""On-disk caches that make runs resumable and avoid recomputation.

* :class:`ScoreCache` – one SQLite file per (model, variant, dataset, scoring settings):
  ``scores(qid, doc_id, score)``, committed after every query, so an interrupted run loses at
  most the query in flight and never scores a stored pair again. ``full_done(qid, depth)``
  records queries whose whole-corpus top-``depth`` is stored.

Document states at a split layer are kept by :class:`~.store.DocStateStore` (checksummed
shards, fp16 by default), keyed by model + split layer (+ the layers before it) + dtype +
document tokenisation + corpus.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

__all__ = ["ScoreCache"]


_CHECKED: set[str] = set()   # score files that passed quick_check in this process


class ScoreCache:
    """Pair scores of one (model, variant, dataset) in SQLite, flushed per query.

    Opening runs SQLite's ``quick_check``: a truncated or otherwise corrupt file is reported by
    name, removed (with its ``-wal``/``-shm`` files) and started afresh, so its scores are
    computed again instead of ending the run in a traceback. Callers that write hold
    :meth:`lock` (two runs never score the same pairs twice).
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open(meta)
        except sqlite3.DatabaseError as e:
            from ..safeio import notice

            notice(f"score cache {self.path} is corrupt ({e}); removing it and computing its "
                   "scores again")
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self.db = self._open(meta)

    @staticmethod
    def lock_path(path: str | os.PathLike) -> Path:
        return Path(str(path) + ".lock")

    def _open(self, meta: dict | None) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            key = str(self.path.resolve())
            if key not in _CHECKED:       # once per process (the check reads the whole file)
                row = db.execute("PRAGMA quick_check").fetchone()
                if not row or row[0] != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
            db.execute("CREATE TABLE IF NOT EXISTS scores (qid TEXT NOT NULL, doc_id TEXT NOT "
                       "NULL, score REAL NOT NULL, PRIMARY KEY (qid, doc_id))")
            db.execute("CREATE TABLE IF NOT EXISTS full_done (qid TEXT PRIMARY KEY, "
                       "depth INTEGER NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            if meta is not None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('meta', ?)",
                           (json.dumps(meta, sort_keys=True, default=str),))
            db.commit()
            db.execute("SELECT COUNT(*) FROM scores").fetchone()
            _CHECKED.add(key)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

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

