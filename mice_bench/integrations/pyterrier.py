"""PyTerrier stages: any mice-bench checkpoint and variant inside a PyTerrier pipeline.

Needs the ``pyterrier`` extra (``pip install "mice-bench[pyterrier]"``: the core package
``pyterrier`` >= 1.1; nothing here starts Java)::

    import pyterrier as pt
    from mice_bench.integrations.pyterrier import BM25, MiceReranker

    bm25 = BM25("scifact", depth=100)      # or first_stage("bm25.trec.gz") >> DocText(docs)
    rr = MiceReranker("path/or/hub-id", variant="biencoder")
    pt.Experiment([bm25, bm25 >> rr], bm25.topics(), bm25.qrels(), ["nDCG@10", "RR@10"],
                  baseline=0)

* :class:`MiceReranker`: R frame (``qid, query, docno, text``) -> the same frame with
  ``score`` and ``rank`` (:func:`pyterrier.model.add_ranks`: rank from 0 per query, score
  descending); other columns are kept. Pairs are scored in batches across queries, with a
  progress bar on long frames.
* :class:`MiceDocStates` / :class:`MiceStoreReranker`: for variants whose documents can be
  precomputed (MICE, PreTTR with ``qlen``, ``colbert``, ``biencoder``): the first stores each
  document once in mice-bench's document-state store
  (:class:`~mice_bench.store.docstore.DocStateStore`, ``fp16`` / ``fp32`` / ``int8`` / ...)
  as the variant's scoring reads it (split-layer states; ``colbert``'s head vectors; one
  pooled, normalised vector per document for ``biencoder``), the second re-ranks an R frame
  (``qid, query, docno``) from the store without encoding a document again.
* :class:`BM25`: the BM25 of ``mice-bench effectiveness`` (bm25s, the same parameters and
  cached index) on a staged dataset: a topics frame (``qid, query``) in, its top ``depth``
  documents with their ``text`` out, the ranking of the command's BM25 run.
* :func:`first_stage` (a TREC run, read with :func:`pyterrier.io.read_results`) and
  :class:`DocText` (adds ``text`` from a ``{docno: text}`` mapping): a first stage from a
  run file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..errors import UsageError

try:
    import pyterrier as pt
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("mice_bench.integrations.pyterrier needs PyTerrier: "
                      'pip install "mice-bench[pyterrier]"') from e

__all__ = ["MiceReranker", "MiceDocStates", "MiceStoreReranker", "BM25", "first_stage",
           "DocText"]

#: frames longer than this show a progress bar unless ``verbose`` says otherwise
PROGRESS_ROWS = 2000


def _reranker(model, variant, device, dtype, executor, batch_size):
    from ..api import Reranker

    if isinstance(model, Reranker):
        if variant is not None and variant != model.variant:
            raise UsageError(f"variant {variant!r} given with a Reranker of {model.variant!r}")
        return model
    return Reranker.from_pretrained(model, variant=variant, executor=executor, device=device,
                                    dtype=dtype, batch_size=batch_size)


def _bar(total: int, verbose: bool | None, desc: str):
    from tqdm.auto import tqdm

    show = total > PROGRESS_ROWS if verbose is None else bool(verbose)
    return tqdm(total=total, desc=desc, unit="pairs", disable=not show, leave=False)


def _texts(frame: pd.DataFrame, column: str, key: str) -> list[str]:
    """The texts of ``column``; a value that is not a string (a NaN, a number) is a
    :class:`UsageError` naming its row by ``key`` and the column."""
    vals = frame[column].tolist()
    for k, v in zip(frame[key].tolist(), vals):
        if not isinstance(v, str):
            raise UsageError(f"{key} {k}: column {column!r} holds {type(v).__name__} "
                             f"{v!r:.40}, not a text")
    return vals


def _ranked(out: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    out["score"] = scores.astype(np.float64)
    out = pt.model.add_ranks(out)
    return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)


class MiceReranker(pt.Transformer):
    """Re-rank candidates with a checkpoint and variant (:class:`~mice_bench.api.Reranker`).

    ``model``: a hub id, a local checkpoint, an architecture name (random weights) or a
    ``Reranker``; ``variant`` defaults to the checkpoint's. ``device`` / ``dtype`` /
    ``executor`` as everywhere in mice-bench; ``batch_size`` pairs per forward;
    ``text_field`` the column holding the document text; ``verbose``: progress bar (None:
    on frames of more than 2,000 rows)."""

    def __init__(self, model: Any, variant: str | None = None, *, batch_size: int = 32,
                 device: str = "cpu", dtype: str = "fp32", executor: str = "auto",
                 text_field: str = "text", verbose: bool | None = None):
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.reranker = _reranker(model, variant, device, dtype, executor, batch_size)
        self.batch_size = batch_size
        self.text_field = text_field
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"MiceReranker({self.reranker.variant!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp, extra_columns=["query", self.text_field])
        out = inp.copy()
        n = len(out)
        scores = np.zeros(n, dtype=np.float32)
        q = _texts(out, "query", "qid")
        d = _texts(out, self.text_field, "docno")
        step = self.batch_size * 8            # rows of several queries per call
        with _bar(n, self.verbose, f"{self.reranker.variant}: score") as bar:
            for i in range(0, n, step):
                scores[i:i + step] = self.reranker.predict(
                    list(zip(q[i:i + step], d[i:i + step])), batch_size=self.batch_size)
                bar.update(min(step, n - i))
        return _ranked(out, scores)


def _store(reranker, directory, fmt: str, pool_factor: int = 1):
    from ..store.packing import store_content
    from ..store.docstore import STORE_FORMATS, DocStateStore

    if fmt not in STORE_FORMATS:
        raise UsageError(f"unknown document store {fmt!r}; valid: {', '.join(STORE_FORMATS)}")
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, int) or pool_factor < 1:
        raise UsageError(f"pool_factor must be a whole number >= 1, got {pool_factor!r}")
    if not reranker.precomputable:
        raise UsageError(f"{reranker.variant}: its documents cannot be precomputed (joint "
                         "input); use MiceReranker")
    ex = reranker._ex
    content = store_content(ex)
    bb = reranker.model.backbone
    identity = ex.doc_identity(content)
    meta = {"model": bb.source or bb.name, "variant": reranker.variant,
            "settings": ex.settings(), "dtype": str(bb.dtype), "identity": identity}
    d = Path(directory)
    mp = d / "meta.json"
    if mp.is_file():
        have = json.loads(mp.read_text())
        want = dict(meta, store=fmt, content=content)
        if pool_factor > 1:
            want["pool_factor"] = pool_factor
        want = json.loads(json.dumps(want, sort_keys=True, default=str))
        if have != want:
            raise UsageError(f"document store {d} holds states of another model or settings "
                             f"({have.get('model')}, {have.get('variant')}); use a new folder")
    store = DocStateStore(d, meta=json.loads(json.dumps(meta, default=str)), fmt=fmt,
                          content=content, identity=identity,
                          pool_factor=pool_factor)
    if not mp.is_file():            # claim the folder now: a later model is refused above
        from ..results import atomic_write_json

        atomic_write_json(mp, store.meta)
    return store


class MiceDocStates(pt.Transformer):
    """Store documents once, as the variant's scoring reads them (split-layer states,
    ``colbert``'s head vectors, ``biencoder``'s pooled vector): a document frame (``docno,
    text``) in, the same frame out; documents already in the store are not encoded again. ``index(frame_or_iter)`` does the
    same for an iterable of ``{"docno", "text"}`` dicts."""

    def __init__(self, model: Any, directory: str | Path, variant: str | None = None, *,
                 store: str = "fp16", pool_factor: int = 1, doc_batch_size: int = 64,
                 device: str = "cpu",
                 dtype: str = "fp32", executor: str = "auto", text_field: str = "text"):
        self.reranker = _reranker(model, variant, device, dtype, executor, 32)
        self.store = _store(self.reranker, directory, store, pool_factor)
        self.doc_batch_size = doc_batch_size
        self.text_field = text_field

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.document_frame(inp, extra_columns=[self.text_field])
        self._ensure(dict(zip(inp["docno"].astype(str),
                              _texts(inp, self.text_field, "docno"))))
        return inp

    def index(self, docs) -> int:
        """Encode what is not stored yet; returns how many documents were encoded."""
        frame = docs if isinstance(docs, pd.DataFrame) else pd.DataFrame(list(docs))
        if frame.empty:
            return 0
        return self._ensure(dict(zip(frame["docno"].astype(str),
                                     _texts(frame, self.text_field, "docno"))))

    def _ensure(self, texts: Mapping[str, str]) -> int:
        from ..store.packing import store_encoder

        bs = self.doc_batch_size
        return self.store.ensure(list(texts), lambda ids: {i: texts[i] for i in ids},
                                 store_encoder(self.reranker._ex, bs), batch_size=bs)


class MiceStoreReranker(pt.Transformer):
    """Re-rank an R frame (``qid, query, docno``) from stored document states: each query is
    encoded once and scored against its candidates' stored states (no document encoding; a
    document missing from the store is an error naming it)."""

    def __init__(self, states: MiceDocStates, *, batch_size: int = 32,
                 verbose: bool | None = None):
        self.states = states
        self.reranker = states.reranker
        self.batch_size = batch_size
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"MiceStoreReranker({self.reranker.variant!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp, extra_columns=["query"])
        out = inp.copy()
        _texts(out, "query", "qid")
        docnos = out["docno"].astype(str).tolist()
        uniq = list(dict.fromkeys(docnos))
        missing = self.states.store.missing(uniq)
        if missing:
            raise UsageError(f"{len(missing)} documents are not in the document store "
                             f"{self.states.store.dir} (e.g. {missing[:3]}); run MiceDocStates "
                             "on them first")
        ex = self.reranker._ex
        states = self.states.store.load(uniq, device=str(self.reranker.model.backbone.device))
        pos = {d: i for i, d in enumerate(uniq)}
        scores = np.zeros(len(out), dtype=np.float32)
        with _bar(len(out), self.verbose, f"{self.reranker.variant}: score") as bar:
            for (qid, query), rows in out.groupby(["qid", "query"], sort=False).indices.items():
                qs = ex.encode_queries([str(query)])
                idx = [pos[docnos[r]] for r in rows]
                scores[rows] = ex.score_query(qs, states, idx,
                                              batch_size=self.batch_size).numpy()
                bar.update(len(rows))
        return _ranked(out, scores)


class BM25(pt.Transformer):
    """The BM25 first stage of ``mice-bench effectiveness`` as a PyTerrier transformer.

    ``dataset``: a dataset name of mice-bench's registry (``scifact``, ``dl19``, ...) or
    ``irds:<id>``, read offline from ``IR_DATASETS_HOME`` as the command reads it; ``docs``:
    a documents JSONL to index instead of the ir_datasets corpus (the command's ``--docs``);
    ``cache_dir``: the command's ``--cache-dir`` (default ``~/.cache/mice-bench/effectiveness``
    or ``$MICE_BENCH_CACHE``), where the index is built once and read from then on.

    A topics frame (``qid, query``) in; out, per query its top ``depth`` documents with
    ``docno, score, rank`` (from 0) and the document ``text`` (``text_field``; None leaves it
    out), ranked as the command ranks its BM25 run (ties by docno). :meth:`topics` and
    :meth:`qrels` give the dataset's judged queries and judgements as PyTerrier frames."""

    def __init__(self, dataset: str = "scifact", *, depth: int = 100,
                 docs: str | Path | None = None, cache_dir: str | Path | None = None,
                 text_field: str | None = "text"):
        from ..data.collections import load_collection, resolve_datasets
        from ..data.firststage import load_or_build_bm25
        from ..effectiveness.plan import default_cache_dir

        if depth < 1:
            raise UsageError(f"depth must be >= 1, got {depth}")
        infos = resolve_datasets(dataset)
        if len(infos) != 1:
            raise UsageError(f"BM25 takes one dataset, {dataset!r} names {len(infos)}")
        if docs is not None and not Path(docs).is_file():
            raise UsageError(f"docs file {docs} does not exist")
        self.collection = load_collection(infos[0], docs)
        self.depth = depth
        self.text_field = text_field
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.retriever, self.ids = load_or_build_bm25(self.collection, cache)

    def __repr__(self) -> str:
        return f"BM25({self.collection.name!r}, depth={self.depth})"

    def topics(self) -> pd.DataFrame:
        """The judged queries (``qid, query``), in dataset order."""
        q = self.collection.queries
        return pd.DataFrame({"qid": list(q), "query": list(q.values())})

    def qrels(self) -> pd.DataFrame:
        """The judgements (``qid, docno, label``)."""
        rows = [(q, d, g) for q, docs in self.collection.qrels.items() for d, g in docs.items()]
        return pd.DataFrame(rows, columns=["qid", "docno", "label"])

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        from ..data.firststage import bm25_search, ranked

        pt.validate.query_frame(inp, extra_columns=["query"])
        queries = dict(zip(inp["qid"].astype(str), inp["query"].astype(str)))
        drop_same = self.collection.info.ignore_identical_ids
        run = bm25_search(self.retriever, self.ids, queries, self.depth + int(drop_same))
        rows = []
        for qid, query in queries.items():
            docs = run.get(qid, {})
            if drop_same:                 # BEIR: a document with the query's id never counts
                docs = {d: s for d, s in docs.items() if d != qid}
            rows += [(qid, query, d, s) for d, s in ranked(docs)[:self.depth]]
        out = pd.DataFrame(rows, columns=["qid", "query", "docno", "score"])
        if self.text_field is not None:
            texts = self.collection.doc_texts(list(dict.fromkeys(out["docno"])))
            out[self.text_field] = [texts[d] for d in out["docno"]]
        return pt.model.add_ranks(out)


def first_stage(run_file: str | Path, depth: int | None = None) -> pt.Transformer:
    """A first stage from a TREC run (``qid Q0 docno rank score tag``, ``.gz`` allowed), read
    with :func:`pyterrier.io.read_results`: for each input query its ranked results (the
    top ``depth`` when given), with the input's ``query`` column."""
    p = Path(run_file)
    if not p.is_file():
        raise UsageError(f"run file {p} does not exist")
    df = pt.io.read_results(str(p))
    df["qid"] = df["qid"].astype(str)
    df["docno"] = df["docno"].astype(str)
    df = df.sort_values(["qid", "score", "docno"], ascending=[True, False, True],
                        kind="stable")
    if depth is not None:
        df = df.groupby("qid", sort=False).head(depth)
    return _RunStage(df.reset_index(drop=True))


class _RunStage(pt.Transformer):
    def __init__(self, run: pd.DataFrame):
        self.run = run

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        q = inp[["qid", "query"]].astype({"qid": str})
        out = q.merge(self.run.drop(columns=["query"], errors="ignore"), on="qid")
        return pt.model.add_ranks(out[["qid", "query", "docno", "score"]].copy())


class DocText(pt.Transformer):
    """Adds ``text`` (``field``) to an R frame from a ``{docno: text}`` mapping; a docno the
    mapping lacks is an error naming it."""

    def __init__(self, docs: Mapping[str, str], field: str = "text"):
        self.docs = docs
        self.field = field

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp)
        docnos = inp["docno"].astype(str)
        lack = [d for d in dict.fromkeys(docnos) if d not in self.docs]
        if lack:
            raise UsageError(f"{len(lack)} documents have no text (e.g. {lack[:3]})")
        return inp.assign(**{self.field: [self.docs[d] for d in docnos]})
