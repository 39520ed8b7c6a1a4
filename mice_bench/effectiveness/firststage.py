"""First stages: BM25 (bm25s, cached index), TREC run files, and run-file helpers.

A *run* is ``dict[qid, dict[doc_id, score]]`` (higher is better).

BM25 follows Pyserini's BM25-flat as closely as bm25s allows: the Lucene score variant,
``k1=0.9``, ``b=0.4``, lower-casing, English stopwords, the Snowball English stemmer
(PyStemmer), documents as ``title + " " + text``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .datasets import Collection

Run = dict[str, dict[str, float]]

BM25_PARAMS = {"method": "lucene", "k1": 0.9, "b": 0.4, "stopwords": "en", "stemmer": "english"}


# --------------------------------------------------------------------------- first-stage spec
@dataclass(frozen=True)
class FirstStage:
    """``bm25`` | ``run:PATH`` (``{dataset}`` in PATH is replaced) | ``full``."""

    kind: str
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> "FirstStage":
        t = text.strip()
        if t in ("bm25", "full"):
            return cls(t)
        if t.startswith("run:") and len(t) > 4:
            return cls("run", t[4:])
        raise UsageError(f"unknown first stage {text!r}; valid: bm25, full, run:PATH")

    def run_path(self, dataset: str) -> Path:
        assert self.path is not None
        return Path(self.path.replace("{dataset}", dataset))

    def tag(self, dataset: str) -> str:
        """Short file-system-safe name used in output paths (``bm25``, ``full``, ``run-<stem>``)."""
        if self.kind != "run":
            return self.kind
        stem = self.run_path(dataset).name
        for suf in (".gz", ".txt", ".trec", ".run", ".tsv"):
            stem = stem[: -len(suf)] if stem.endswith(suf) else stem
        parent = self.run_path(dataset).parent.name
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{parent}-{stem}")
        return f"run-{safe}"

    def describe(self, dataset: str) -> str:
        """``bm25``, ``full`` or ``run:<path with {dataset} expanded>``."""
        return f"run:{self.run_path(dataset)}" if self.kind == "run" else self.kind

    def __str__(self) -> str:
        return f"run:{self.path}" if self.kind == "run" else self.kind


# --------------------------------------------------------------------------- run files
def read_trec_run(path: str | os.PathLike) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``; gzip allowed)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"run file {p}: no such file")
    opener = _open_text(p)
    run: Run = {}
    with opener as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5:
                raise UsageError(f"run file {p}:{n}: expected 'qid Q0 docid rank score [tag]'")
            try:
                score = float(parts[4])
            except ValueError:
                raise UsageError(f"run file {p}:{n}: score {parts[4]!r} is not a number") from None
            run.setdefault(parts[0], {})[parts[2]] = score
    return run


def _open_text(p: Path):
    if p.suffix == ".gz":
        import gzip

        return gzip.open(p, "rt")
    return p.open()


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Documents by decreasing score; ties by doc id (deterministic)."""
    return sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))


def top_k(run: Run, k: int) -> Run:
    return {q: dict(ranked(d)[:k]) for q, d in run.items()}


def write_trec_run(path: str | os.PathLike, run: Run, tag: str) -> Path:
    """Write ``run`` in TREC format (ranked, 1-based ranks), atomically."""
    from ..results import atomic_write_text

    lines = []
    for q in run:
        for rank, (d, s) in enumerate(ranked(run[q]), 1):
            lines.append(f"{q} Q0 {d} {rank} {s:.6f} {tag}\n")
    return atomic_write_text(path, "".join(lines))


def run_first_stage(fs: FirstStage, coll: Collection, depth: int, cache_dir: Path) -> Run:
    """Candidates for every query of ``coll`` (at most ``depth`` per query).

    ``full`` is handled by the re-ranker (it scores the whole corpus); here it falls back to
    BM25, which is what the ``bm25`` pseudo-variant reports in that case.
    """
    if fs.kind == "run":
        run = read_trec_run(fs.run_path(coll.name))
        run = {q: run.get(q, {}) for q in coll.queries}
    else:
        run = bm25_run(coll, depth, cache_dir)
    if coll.info.ignore_identical_ids:
        run = {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}
    return top_k(run, depth)


# --------------------------------------------------------------------------- BM25
def _stemmer() -> Callable[[list[str]], list[str]]:
    import Stemmer

    return Stemmer.Stemmer(BM25_PARAMS["stemmer"]).stemWords


def _tokenize(texts: list[str], stemmer) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords=BM25_PARAMS["stopwords"], stemmer=stemmer,
                          return_ids=False, show_progress=False)


def bm25_cache_key(coll: Collection) -> str:
    import bm25s

    blob = json.dumps({"corpus": coll.corpus_fingerprint(), "params": BM25_PARAMS,
                       "bm25s": bm25s.__version__}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def load_or_build_bm25(coll: Collection, cache_dir: Path):
    """The bm25s index of ``coll``'s corpus and its doc ids; built once, cached on disk.

    Returns ``(retriever, doc_ids)`` with ``doc_ids[i]`` the id of index row ``i``.
    """
    import bm25s

    d = Path(cache_dir) / "bm25" / f"{coll.name}-{bm25_cache_key(coll)}"
    ids_file = d / "doc_ids.json"
    if ids_file.exists():
        retriever = bm25s.BM25.load(str(d), mmap=False)
        return retriever, json.loads(ids_file.read_text())
    ids: list[str] = []
    texts: list[str] = []
    for did, text in coll.iter_corpus():
        ids.append(did)
        texts.append(text)
    if not ids:
        raise UsageError(f"{coll.info.irds_id}: empty corpus")
    tokens = _tokenize(texts, _stemmer())
    retriever = bm25s.BM25(k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"],
                           method=BM25_PARAMS["method"])
    retriever.index(tokens, show_progress=False)
    tmp = d.with_name(d.name + f".tmp{os.getpid()}")
    retriever.save(str(tmp), show_progress=False)
    (tmp / "doc_ids.json").write_text(json.dumps(ids))
    try:
        os.replace(tmp, d)
    except OSError:  # another process won the race
        pass
    return retriever, ids


def bm25_run(coll: Collection, depth: int, cache_dir: Path) -> Run:
    """BM25 top-``depth`` (+1 when identical ids are dropped) for every query of ``coll``."""
    retriever, ids = load_or_build_bm25(coll, cache_dir)
    qids = list(coll.queries)
    k = min(depth + (1 if coll.info.ignore_identical_ids else 0), len(ids))
    qtok = _tokenize([coll.queries[q] for q in qids], _stemmer())
    # bm25s rejects empty queries: give them an impossible token (they retrieve nothing)
    qtok = [t if t else ["\x00"] for t in qtok]
    res, scores = retriever.retrieve(qtok, k=k, show_progress=False, n_threads=0)
    run: Run = {}
    for i, q in enumerate(qids):
        run[q] = {ids[int(j)]: float(s) for j, s in zip(res[i], scores[i]) if s > 0}
    return run
