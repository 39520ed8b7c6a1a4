"""Training data: (query, positive, hard negatives[, teacher scores]) groups.

Two sources, one :class:`TrainingData`:

* an **ir_datasets id** with qrels (``beir/nfcorpus/train``, ``beir/scifact/train``,
  ``msmarco-passage/train/judged``, ``irds:`` prefix optional): positives are the documents
  judged relevant (grade > 0); hard negatives are the first stage's top ``negatives_depth``
  (``bm25`` through :mod:`mice_bench.data.firststage`, its index and run cached, or
  ``run:PATH``) minus every judged-relevant document;
* a **JSONL** file, one object a line::

      {"query": "...", "positive": "...", "negatives": ["...", ...],
       "scores": [t_pos, t_neg1, ...]}          # optional teacher scores, positive first

  Lines with the same query text are merged (a query may have several positives); a negative
  that is also a positive of its query is dropped.

Held-out validation queries (``val_queries``, chosen with a fixed seed so that every training
seed validates on the same queries) are removed from training; their candidates are the first
stage's top ``val_depth`` (ir_datasets) or their positives and negatives (JSONL).

Batches are a pure function of ``(seed, step)`` (:func:`sample_groups`): a run resumed at any
step draws the same groups as an uninterrupted one, on any number of ranks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..backbones.weights import weights_fingerprint

VAL_SEED = "mice-bench-validation"
#: teacher scores are used in fp32: larger magnitudes are not finite there
MAX_SCORE = 3.0e38


def finite_score(x) -> bool:
    """A number (not a bool) that is finite in fp32."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) \
        and abs(x) <= MAX_SCORE


def _h(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class TrainingData:
    """Queries with positives and hard negatives (ids into ``texts``), and a validation set.

    ``queries``: training qid -> text (training order); ``positives`` / ``negatives``:
    qid -> doc ids (disjoint per query); ``teacher``: qid -> doc id -> teacher score (every
    positive and negative) or None; ``val_*``: held-out queries, their qrels and candidates.
    """

    source: str
    queries: dict[str, str]
    positives: dict[str, list[str]]
    negatives: dict[str, list[str]]
    texts: dict[str, str]
    teacher: dict[str, dict[str, float]] | None = None
    val_queries: dict[str, str] = field(default_factory=dict)
    val_qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    val_candidates: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def qids(self) -> list[str]:
        return list(self.queries)

    def fingerprint(self, with_teacher: bool = True) -> str:
        """sha256 of everything training reads (order included)."""
        h = hashlib.sha256()
        parts = [self.queries, self.positives, self.negatives, self.val_queries,
                 self.val_qrels, self.val_candidates]
        if with_teacher:
            parts.append(self.teacher)
        for p in parts:
            h.update(json.dumps(p, sort_keys=False, ensure_ascii=False).encode())
        for d in sorted(self.texts):
            h.update(d.encode() + b"\0" + self.texts[d].encode() + b"\0")
        return h.hexdigest()

    def summary(self) -> dict:
        return {"source": self.source, "train_queries": len(self.queries),
                "positives": sum(len(v) for v in self.positives.values()),
                "negatives": sum(len(v) for v in self.negatives.values()),
                "documents": len(self.texts), "teacher_scores": self.teacher is not None,
                "val_queries": len(self.val_queries),
                "val_candidates": sum(len(v) for v in self.val_candidates.values()),
                "notes": list(self.notes)}

    def check(self) -> None:
        """Invariants: every query has a positive and a negative; negatives are never
        positives; teacher scores cover every pair."""
        for q in self.queries:
            pos, neg = self.positives.get(q), self.negatives.get(q)
            if not pos or not neg:
                raise UsageError(f"{self.source}: query {q!r} has no positive or no negative")
            if set(pos) & set(neg):
                raise AssertionError(f"query {q}: a positive is among the negatives")
            if self.teacher is not None:
                tq = self.teacher.get(q, {})
                miss = [d for d in pos + neg if d not in tq]
                if miss:
                    raise UsageError(f"{self.source}: no teacher score for query {q!r} and "
                                     f"document {miss[0]!r}")
                broken = [d for d in pos + neg if not finite_score(tq[d])]
                if broken:
                    raise UsageError(f"{self.source}: the teacher score of query {q!r} and "
                                     f"document {broken[0]!r} is {tq[broken[0]]!r}, not a "
                                     "finite number")


@dataclass(frozen=True)
class Group:
    """One training example: a query, its positive (first) and ``G - 1`` negatives."""

    qid: str
    query: str
    doc_ids: tuple[str, ...]
    docs: tuple[str, ...]
    teacher: tuple[float, ...] | None = None


@lru_cache(maxsize=64)
def _perm(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"perm:{seed}:{epoch}").shuffle(order)
    return tuple(order)


def sample_groups(data: TrainingData, step: int, batch_size: int, group_size: int,
                  seed: int) -> list[Group]:
    """The ``batch_size`` groups of optimizer step ``step`` (0-based), a pure function of
    ``(data, step, batch_size, group_size, seed)``.

    Queries are visited in a seeded permutation per epoch; each group takes one positive at
    random and ``group_size - 1`` distinct negatives (with replacement only when the query has
    fewer)."""
    qids = data.qids
    n = len(qids)
    if n == 0:
        raise UsageError(f"{data.source}: no training queries")
    out = []
    k = group_size - 1
    for j in range(batch_size):
        i = step * batch_size + j
        epoch, pos = divmod(i, n)
        qid = qids[_perm(n, seed, epoch)[pos]]
        rng = random.Random(f"group:{seed}:{i}")
        p = rng.choice(data.positives[qid])
        pool = data.negatives[qid]
        negs = rng.sample(pool, k) if len(pool) >= k else [rng.choice(pool) for _ in range(k)]
        ids = (p, *negs)
        t = tuple(data.teacher[qid][d] for d in ids) if data.teacher is not None else None
        out.append(Group(qid, data.queries[qid], ids, tuple(data.texts[d] for d in ids), t))
    return out


# --------------------------------------------------------------------------- loading
def is_jsonl(data: str) -> bool:
    return data.endswith((".jsonl", ".jsonl.gz", ".json")) or Path(data).is_file()


def load_training_data(data: str, *, first_stage: str = "bm25", docs: str | None = None,
                       negatives_depth: int = 100, val_queries: int = 50,
                       val_depth: int = 100, limit_queries: int | None = None,
                       cache_dir: Path | None = None, message: Callable[[str], None] | None = None
                       ) -> TrainingData:
    """Load ``data`` (an ir_datasets id or a JSONL path); see the module docstring."""
    if is_jsonl(data):
        out = read_jsonl(data, val_queries=val_queries, limit_queries=limit_queries)
    else:
        out = load_irds(data, first_stage=first_stage, docs=docs,
                        negatives_depth=negatives_depth, val_queries=val_queries,
                        val_depth=val_depth, limit_queries=limit_queries,
                        cache_dir=cache_dir or Path(".cache"), message=message)
    out.check()
    return out


def _split(qids: list[str], val_queries: int) -> tuple[list[str], list[str]]:
    """(training qids in their order, validation qids) with a fixed-seed choice."""
    if val_queries <= 0:
        return list(qids), []
    if val_queries >= len(qids):
        raise UsageError(f"--val-queries {val_queries} leaves no training query "
                         f"({len(qids)} queries with positives)")
    order = sorted(qids)
    random.Random(VAL_SEED).shuffle(order)
    val = set(order[:val_queries])
    return [q for q in qids if q not in val], [q for q in qids if q in val]


def read_jsonl(path: str, val_queries: int = 50, limit_queries: int | None = None
               ) -> TrainingData:
    """Read (query, positive, negatives[, scores]) lines (``.gz``: gzip-compressed); a bad
    line is a UsageError naming the file and line, a file that is not (gzip) UTF-8 text one
    naming the file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--data {p}: no such file (a JSONL of query, positive, negatives"
                         f"[, scores], or an ir_datasets id)")
    queries: dict[str, str] = {}
    pos: dict[str, list[str]] = {}
    neg: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    teacher: dict[str, dict[str, float]] = {}
    seen: dict[str, bool] = {}
    gz = p.suffix == ".gz"
    if gz:
        with p.open("rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise UsageError(f"--data {p}: not a gzip file (its name ends in .gz); "
                                 "compress it with gzip or drop the .gz")
    n = 0
    try:
        with (gzip.open(p, "rt", encoding="utf-8") if gz else p.open(encoding="utf-8")) as f:
            for n, line in enumerate(f, 1):
                _read_line(p, n, line, queries, pos, neg, texts, teacher, seen)
    except (OSError, EOFError, UnicodeDecodeError) as e:   # a damaged gzip, not UTF-8
        what = "damaged gzip data" if gz and not isinstance(e, UnicodeDecodeError) else \
            "not UTF-8 text"
        raise UsageError(f"--data {p}: {what} after line {n} ({type(e).__name__})"
                         ) from None
    return _assemble(p, queries, pos, neg, texts, teacher, seen.get("scores", False),
                     val_queries, limit_queries)


def _read_line(p: Path, n: int, line: str, queries: dict, pos: dict, neg: dict, texts: dict,
               teacher: dict, seen: dict) -> None:
    """Parse line ``n`` of a JSONL training file into the accumulators (UsageError naming
    ``FILE:LINE`` when it is malformed)."""
    if not line.strip():
        return

    def bad(msg: str):
        raise UsageError(f"--data {p}:{n}: {msg}; expected {{\"query\": str, "
                         "\"positive\": str, \"negatives\": [str, ...], \"scores\": "
                         "[positive, negative...] (optional)}")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        bad(f"not JSON ({e})")
    if not isinstance(obj, dict):
        bad("not a JSON object")
    q, ps, ns = obj.get("query"), obj.get("positive"), obj.get("negatives")
    if not isinstance(q, str) or not q.strip():
        bad("'query' must be a non-empty string")
    if not isinstance(ps, str) or not ps.strip():
        bad("'positive' must be a non-empty string")
    if not isinstance(ns, list) or not ns or not all(isinstance(x, str) and x.strip()
                                                    for x in ns):
        bad("'negatives' must be a non-empty list of non-empty strings")
    sc = obj.get("scores")
    if sc is not None:
        if not isinstance(sc, list) or len(sc) != 1 + len(ns) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in sc):
            bad(f"'scores' must be {1 + len(ns)} numbers (the positive's, then one per "
                "negative)")
        wrong = [x for x in sc if not finite_score(x)]
        if wrong:
            bad(f"'scores' holds {wrong[0]!r}: teacher scores must be finite numbers")
    has = sc is not None
    with_scores = seen.setdefault("scores", has)
    if has != with_scores:
        bad("every line needs 'scores' or none does (line "
            f"{'without' if with_scores else 'with'} scores after lines "
            f"{'with' if with_scores else 'without'})")
    qid = "q" + _h(q)
    queries.setdefault(qid, q)
    ids = []
    for t in [ps, *ns]:
        did = "d" + _h(t)
        texts[did] = t
        ids.append(did)
    if ids[0] not in pos.setdefault(qid, []):
        pos[qid].append(ids[0])
    lst = neg.setdefault(qid, [])
    for d in ids[1:]:
        if d not in lst:
            lst.append(d)
    if has:
        tq = teacher.setdefault(qid, {})
        for d, s in zip(ids, sc):
            tq[d] = float(s)


def _assemble(p: Path, queries: dict, pos: dict, neg: dict, texts: dict, teacher: dict,
              with_scores: bool, val_queries: int, limit_queries: int | None) -> TrainingData:
    """The :class:`TrainingData` of a read JSONL: negatives that are positives dropped,
    the validation split, the texts that are used."""
    if not queries:
        raise UsageError(f"--data {p}: no training lines")
    notes = []
    dropped = 0
    for qid in queries:  # a positive is never a negative of its query
        keep = [d for d in neg[qid] if d not in set(pos[qid])]
        dropped += len(neg[qid]) - len(keep)
        neg[qid] = keep
    if dropped:
        notes.append(f"{dropped} negatives that are positives of their query dropped")
    empty = [q for q in queries if not neg[q]]
    if empty:
        notes.append(f"{len(empty)} queries without negatives dropped")
    qids = [q for q in queries if neg[q]]
    n_val = min(val_queries, len(qids) // 5) if val_queries > 0 else 0
    train_q, val_q = _split(qids, n_val)
    if limit_queries is not None:
        train_q = train_q[:limit_queries]
    data = TrainingData(
        source=str(p), queries={q: queries[q] for q in train_q},
        positives={q: pos[q] for q in train_q}, negatives={q: neg[q] for q in train_q},
        texts={}, teacher={q: teacher[q] for q in train_q} if with_scores else None,
        val_queries={q: queries[q] for q in val_q},
        val_qrels={q: {**{d: 0 for d in neg[q]}, **{d: 1 for d in pos[q]}} for q in val_q},
        val_candidates={q: pos[q] + neg[q] for q in val_q}, notes=notes)
    need = {d for q in train_q for d in pos[q] + neg[q]} | \
        {d for q in val_q for d in data.val_candidates[q]}
    data.texts = {d: texts[d] for d in texts if d in need}
    return data


def load_irds(data: str, *, first_stage: str, docs: str | None, negatives_depth: int,
              val_queries: int, val_depth: int, limit_queries: int | None, cache_dir: Path,
              message: Callable[[str], None] | None = None) -> TrainingData:
    """Training groups from an ir_datasets id with qrels and a first stage."""
    from ..data.collections import load_collection, resolve_datasets
    from ..data.firststage import (FirstStage, ranked, read_trec_run,
                                            run_first_stage, write_trec_run)

    irds_id = data[5:] if data.startswith("irds:") else data
    try:
        info = resolve_datasets("irds:" + irds_id)[0]
        coll = load_collection(info, docs_path=docs)
    except UsageError as e:
        raise UsageError(f"--data {data}: {e}. Training needs an ir_datasets split with "
                         "queries and qrels (e.g. beir/nfcorpus/train, beir/scifact/train, "
                         "msmarco-passage/train/judged) or a JSONL file") from None
    posq = [q for q in coll.queries if any(g > 0 for g in coll.qrels[q].values())]
    if not posq:
        raise UsageError(f"--data {data}: no query has a relevant document")
    train_q, val_q = _split(posq, val_queries)
    if limit_queries is not None:
        train_q = train_q[:limit_queries]
    fs = FirstStage.parse(first_stage)
    depth = max(negatives_depth, val_depth if val_q else 0)
    need_q = train_q + val_q
    sub = replace(coll, queries={q: coll.queries[q] for q in need_q},
                  qrels={q: coll.qrels[q] for q in need_q})
    key = _h(json.dumps([info.irds_id, sub.corpus_fingerprint(), str(fs), depth, need_q]))
    cached = Path(cache_dir) / "firststage" / f"{info.name}-{fs.tag(info.name)}-{key}.trec"
    if fs.kind == "bm25" and cached.exists():
        run = read_trec_run(cached)
    else:
        if message:
            message(f"first stage {fs} on {len(need_q)} queries of {info.irds_id} ...")
        run = run_first_stage(fs, sub, depth, Path(cache_dir))
        if fs.kind == "bm25":
            write_trec_run(cached, run, "bm25")
    run = {q: run.get(q, {}) for q in need_q}
    pos = {q: [d for d, g in coll.qrels[q].items() if g > 0] for q in train_q}
    neg = {q: [d for d, _ in ranked(run[q])[:negatives_depth] if coll.qrels[q].get(d, 0) <= 0]
           for q in train_q}
    notes = []
    empty = [q for q in train_q if not neg[q]]
    if empty:
        notes.append(f"{len(empty)} training queries without a first-stage negative dropped")
        train_q = [q for q in train_q if neg[q]]
    cands = {q: [d for d, _ in ranked(run[q])[:val_depth]] for q in val_q}
    ids = sorted({d for q in train_q for d in pos[q] + neg[q]} |
                 {d for q in val_q for d in cands[q]})
    if message:
        message(f"reading {len(ids)} document texts ...")
    texts = coll.doc_texts(ids)
    if not train_q:
        raise UsageError(f"--data {data}: no training query has both a positive and a "
                         "first-stage negative")
    return TrainingData(
        source=f"irds:{info.irds_id} ({fs}, negatives from the top {negatives_depth})",
        queries={q: coll.queries[q] for q in train_q}, positives={q: pos[q] for q in train_q},
        negatives={q: neg[q] for q in train_q}, texts=texts,
        val_queries={q: coll.queries[q] for q in val_q},
        val_qrels={q: coll.qrels[q] for q in val_q}, val_candidates=cands, notes=notes)


# --------------------------------------------------------------------------- teacher
def teacher_scores(data: TrainingData, teacher, teacher_name: str, cache_dir: Path,
                   batch_size: int = 64, progress: Callable[[int, int], None] | None = None
                   ) -> dict[str, dict[str, float]]:
    """Scores of every (training query, positive or negative) pair by ``teacher`` (a
    :class:`~mice_bench.model.InteractionModel`), computed once and cached on disk."""
    from ..effectiveness.keys import model_identity
    from ..results import atomic_write_json

    ex = teacher.executor("auto")
    key = _h(json.dumps({"teacher": model_identity(teacher_name), "variant": str(teacher.spec),
                         "weights": weights_fingerprint(teacher),
                         "device": str(next(teacher.parameters()).device.type),
                         "qmax": teacher.query_max_tokens, "dmax": teacher.doc_max_tokens,
                         "data": data.fingerprint(with_teacher=False)}, sort_keys=True,
                        default=str))
    path = Path(cache_dir) / "teacher" / f"{key}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())["scores"]
            if all(finite_score(v) for tq in cached.values() for v in tq.values()):
                return cached
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # a broken cache file is recomputed
    pairs = [(q, d) for q in data.queries for d in data.positives[q] + data.negatives[q]]
    out: dict[str, dict[str, float]] = {}
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        s = ex.score_pairs([data.queries[q] for q, _ in chunk],
                           [data.texts[d] for _, d in chunk], batch_size=batch_size)
        for (q, d), v in zip(chunk, s.tolist()):
            out.setdefault(q, {})[d] = float(v)
        if progress:
            progress(min(i + batch_size, len(pairs)), len(pairs))
    broken = [(q, d, v) for q, tq in out.items() for d, v in tq.items() if not finite_score(v)]
    if broken:
        q, d, v = broken[0]
        raise UsageError(f"--teacher {teacher_name}: {len(broken)} of {len(pairs)} teacher "
                         f"scores are not finite (query {q!r}, document {d!r}: {v}); nothing "
                         "cached")
    atomic_write_json(path, {"teacher": teacher_name, "variant": str(teacher.spec),
                             "scores": out}, indent=None)
    return out


__all__ = ["TrainingData", "Group", "sample_groups", "load_training_data", "read_jsonl",
           "load_irds", "teacher_scores", "weights_fingerprint", "is_jsonl"]
