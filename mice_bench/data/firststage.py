"""First stages: BM25 (bm25s, cached index), TREC run files, and run-file helpers.

A *run* is ``dict[qid, dict[doc_id, score]]`` (higher is better).

BM25 follows Pyserini's BM25-flat as closely as bm25s allows: the Lucene score variant,
``k1=0.9``, ``b=0.4``, lower-casing, English stopwords, the Snowball English stemmer
(PyStemmer), documents as ``title + " " + text``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .collections import Collection

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
    """Read a TREC run (``qid Q0 docid rank score [tag]``; gzip allowed).

    Strict: every line has 5 or 6 columns, an integer rank and a finite numeric score, and a
    (qid, docid) pair appears once; an empty file is refused. Any violation is a
    :class:`UsageError` naming the file and line (exit 2), never a silently different run.
    Parsed runs are memoised by (path, size, mtime): the up-front check and the first stage
    read the file once.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"run file {p}: no such file")
    st = p.stat()
    memo_key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key in _RUN_MEMO:
        return {q: dict(d) for q, d in _RUN_MEMO[memo_key].items()}
    run: Run = {}
    fmt = "expected 'qid Q0 docid rank score [tag]'"
    try:
        with _open_text(p) as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) not in (5, 6):
                    raise UsageError(f"run file {p}:{n}: {len(parts)} columns, {fmt}")
                try:
                    int(parts[3])
                except ValueError:
                    raise UsageError(f"run file {p}:{n}: rank {parts[3]!r} is not an integer "
                                     f"({fmt})") from None
                try:
                    score = float(parts[4])
                except ValueError:
                    raise UsageError(f"run file {p}:{n}: score {parts[4]!r} is not a number "
                                     f"({fmt})") from None
                if not math.isfinite(score):
                    raise UsageError(f"run file {p}:{n}: score {parts[4]!r} is not finite")
                docs = run.setdefault(parts[0], {})
                if parts[2] in docs:
                    raise UsageError(f"run file {p}:{n}: document {parts[2]!r} is listed twice "
                                     f"for query {parts[0]!r}")
                docs[parts[2]] = score
    except UnicodeDecodeError as e:
        raise UsageError(f"run file {p}: not a text file ({e})") from None
    except (OSError, EOFError) as e:   # unreadable, or a truncated/corrupt .gz
        raise UsageError(f"run file {p}: cannot read it ({type(e).__name__}: {e})") from None
    if not run:
        raise UsageError(f"run file {p}: empty (no 'qid Q0 docid rank score [tag]' line)")
    _RUN_MEMO.clear()            # keep one run in memory at most
    _RUN_MEMO[memo_key] = run
    return {q: dict(d) for q, d in run.items()}


_RUN_MEMO: dict[tuple, Run] = {}


def check_run_coverage(run: Run, queries: dict[str, str], source: str) -> dict:
    """How many judged queries ``run`` covers; exit 2 when none, a warning when some are
    missing. Returns ``{"judged_queries", "with_candidates", "missing" (up to 5 ids)}``."""
    from ..safeio import warn

    have = [q for q in queries if run.get(q)]
    cov = {"judged_queries": len(queries), "with_candidates": len(have),
           "missing": [q for q in queries if not run.get(q)][:5]}
    if not have:
        raise UsageError(f"{source}: none of its {len(run)} query ids matches a judged query of "
                         f"the dataset (run: {', '.join(list(run)[:3])}...; dataset: "
                         f"{', '.join(list(queries)[:3])}...); wrong file or dataset?")
    if len(have) < len(queries):
        warn(f"{source} has candidates for {len(have)} of {len(queries)} judged queries; the "
             f"other {len(queries) - len(have)} (e.g. {', '.join(cov['missing'][:3])}) count as "
             f"0 (coverage is recorded in each result's dataset.coverage)")
    return cov


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
    """Write ``run`` in TREC format (ranked, 1-based ranks), atomically (fsync + rename);
    gzip-compressed when ``path`` ends in ``.gz`` (deterministic bytes: no time stamp, so a
    resumed run writes the same file). ``ir_measures`` and :func:`read_trec_run` read both.
    """
    from ..results import atomic_write_bytes, atomic_write_text

    lines = []
    for q in run:
        for rank, (d, s) in enumerate(ranked(run[q]), 1):
            lines.append(f"{q} Q0 {d} {rank} {s:.6f} {tag}\n")
    if str(path).endswith(".gz"):
        import gzip

        return atomic_write_bytes(path, gzip.compress("".join(lines).encode(), mtime=0))
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
    The index folder carries ``manifest.json`` (size and SHA-256 of every file); a folder that
    fails the check is reported and rebuilt. Building happens under a lock (a second run
    waits and loads the first's index) in a unique temporary folder renamed into place.
    """
    from ..safeio import cache_lock

    d = Path(cache_dir) / "bm25" / f"{coll.name}-{bm25_cache_key(coll)}"
    got = _load_bm25(d)
    if got is not None:
        return got
    with cache_lock(d.with_name(d.name + ".lock"), f"the BM25 index {d}"):
        got = _load_bm25(d, report=True)
        if got is not None:
            return got
        if d.exists():
            shutil.rmtree(d)
        for stale in d.parent.glob(f".{d.name}.*.tmp"):   # a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        return _build_bm25(coll, d)


def _load_bm25(d: Path, report: bool = False):
    """``(retriever, ids)`` when ``d`` holds a complete index, else None (a notice when
    ``report`` and the folder exists but fails its check)."""
    import bm25s

    from ..safeio import notice, sha256_file

    if not d.exists():
        return None
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        for name, (size, sha) in manifest["files"].items():
            f = d / name
            if f.stat().st_size != size:
                raise ValueError(f"{name} has {f.stat().st_size} bytes, expected {size}")
            if sha256_file(f) != sha:
                raise ValueError(f"{name} fails its SHA-256 check")
        ids = json.loads((d / "doc_ids.json").read_text())
        retriever = bm25s.BM25.load(str(d), mmap=False)
        if int(retriever.scores.get("num_docs", len(ids))) != len(ids):
            raise ValueError("index and doc_ids.json disagree")
        return retriever, ids
    except Exception as e:  # noqa: BLE001 - any unreadable index is rebuilt
        if report:
            notice(f"BM25 index {d} is incomplete or corrupt ({type(e).__name__}: "
                   f"{str(e)[:100]}); rebuilding it")
        return None


def _build_bm25(coll: Collection, d: Path):
    import bm25s

    from ..results import fsync_dir
    from ..safeio import sha256_file

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
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", suffix=".tmp", dir=d.parent))
    try:
        retriever.save(str(tmp), show_progress=False)
        (tmp / "doc_ids.json").write_text(json.dumps(ids))
        files = {}
        for f in sorted(tmp.iterdir()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.name] = [f.stat().st_size, sha256_file(f)]
        (tmp / "manifest.json").write_text(json.dumps({"files": files}))
        with open(tmp / "manifest.json", "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, d)
        fsync_dir(d.parent)
    finally:
        if tmp.exists():            # not renamed: never leave the temporary folder behind
            shutil.rmtree(tmp, ignore_errors=True)
    return retriever, ids


def bm25_run(coll: Collection, depth: int, cache_dir: Path) -> Run:
    """BM25 top-``depth`` (+1 when identical ids are dropped) for every query of ``coll``."""
    retriever, ids = load_or_build_bm25(coll, cache_dir)
    k = depth + (1 if coll.info.ignore_identical_ids else 0)
    return bm25_search(retriever, ids, coll.queries, k)


def bm25_search(retriever, ids: list[str], queries: dict[str, str], k: int) -> Run:
    """BM25 top-``k`` of ``queries`` (``{qid: text}``) in an index of
    :func:`load_or_build_bm25` (``retriever, ids``); zero scores are left out."""
    qids = list(queries)
    if not qids:
        return {}
    k = min(k, len(ids))
    qtok = _tokenize([queries[q] for q in qids], _stemmer())
    # bm25s rejects empty queries: give them an impossible token (they retrieve nothing)
    qtok = [t if t else ["\x00"] for t in qtok]
    res, scores = retriever.retrieve(qtok, k=k, show_progress=False, n_threads=0)
    run: Run = {}
    for i, q in enumerate(qids):
        run[q] = {ids[int(j)]: float(s) for j, s in zip(res[i], scores[i]) if s > 0}
    return run
