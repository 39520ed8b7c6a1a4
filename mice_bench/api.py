"""The public Python API: a small facade in the style of sentence-transformers' ``CrossEncoder``.

>>> from mice_bench import Reranker
>>> rr = Reranker.from_pretrained("minilm-l6", variant="mice-l2+2")   # random weights
>>> scores = rr.predict([("what is a cat", "a cat is an animal")])   # numpy [1]
>>> ranked = rr.rank("what is a cat", ["a cat is an animal", "spiders"], top_k=1)
>>> ranked[0]["corpus_id"] in (0, 1)
True
>>> states = rr.encode_documents(["a cat is an animal", "spiders"])  # once, storable
>>> rr.score_documents("what is a cat", states).shape
(2,)
>>> import tempfile
>>> store = rr.document_store(tempfile.mkdtemp(), {"a": "a cat", "b": "spiders"}, store="int8")
>>> rr.score_documents("what is a cat", store, doc_ids=["b", "a"]).shape
(2,)

Everything runs through one :class:`~mice_bench.model.InteractionModel` (weights + variant) and its
executor (``executor="auto"``: the fast path when the variant has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import UsageError, positive_int
from .model import InteractionModel


def text_list(texts, name: str) -> list:
    """``texts`` as a list; a single string (which would be read as one document per
    character) is a :class:`UsageError` naming ``name``."""
    if isinstance(texts, (str, bytes)):
        raise UsageError(f"{name} must be a list of texts, got a single string {texts!r:.40}")
    return list(texts)


class Reranker:
    """Score (query, document) pairs with any interaction variant of a checkpoint."""

    def __init__(self, model: InteractionModel, executor: str = "auto", batch_size: int = 32):
        positive_int("batch_size", batch_size)
        self.model = model
        self.executor_kind = executor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, model: str | Path, variant: str | None = None,
                        executor: str = "auto", device: str = "cpu", dtype: Any = "fp32",
                        batch_size: int = 32, **kw) -> "Reranker":
        """Load a checkpoint (hub id, local path, mice-bench or MICE reference checkpoint, or
        an architecture name such as ``minilm-l12`` with random weights)."""
        return cls(InteractionModel.from_pretrained(model, variant=variant, device=device,
                                             dtype=dtype, **kw), executor, batch_size)

    @property
    def variant(self) -> str:
        return str(self.model.spec)

    @property
    def _ex(self):
        return self.model.executor(self.executor_kind)

    def predict(self, pairs: Iterable[Sequence[str]], batch_size: int | None = None
                ) -> np.ndarray:
        """Scores of ``(query, document)`` pairs as a float32 array."""
        positive_int("batch_size", batch_size, optional=True)
        if isinstance(pairs, (str, bytes)):
            raise UsageError("pairs must be a list of (query, document) pairs, got a string")
        pairs = list(pairs)
        for i, p in enumerate(pairs):
            if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
                raise UsageError(f"pair {i} must be a (query, document) pair, got {p!r:.60}")
        q = [p[0] for p in pairs]
        d = [p[1] for p in pairs]
        return self._ex.score_pairs(q, d, batch_size=batch_size or self.batch_size).numpy()

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False) -> list[dict]:
        """Documents sorted by score: ``[{"corpus_id", "score"[, "text"]}, ...]``; the first
        ``top_k`` (>= 1) when given."""
        positive_int("top_k", top_k, optional=True)
        documents = text_list(documents, "documents")
        scores = self._ex.rerank(query, documents, batch_size=self.batch_size).numpy()
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else None]
        out = []
        for i in order:
            row = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                row["text"] = documents[i]
            out.append(row)
        return out

    def encode_documents(self, documents: Sequence[str], kv_cache: bool = False):
        """Document states, computed once: hidden states at the split layer for the variants
        that allow it (``precomputable``), the head's projected unit vectors for a
        late-interaction variant (``colbert``: what a ColBERT index keeps), one pooled,
        normalised vector per document for a bi-encoder (``[N, 1, H]``), the texts
        otherwise. Save them with ``.save()`` where they are tensors."""
        ex = self._ex
        documents = text_list(documents, "documents")
        if ex.has_doc_precompute:
            return ex.encode_documents(list(documents), kv_cache=kv_cache,
                                       batch_size=self.batch_size)
        return ex.encode_documents(list(documents))

    def document_store(self, directory: str | Path, documents: dict[str, str],
                       store: str = "fp16", seed: int = 0, pool_factor: int = 1):
        """Encode ``{doc_id: text}`` once into a :class:`~mice_bench.store.docstore.
        DocStateStore` under ``directory`` in format ``store`` (fp32 | fp16 | int8 |
        residual1 | residual2 | residual4; residual formats train their centroids on these
        documents, seeded). Holds what the variant's scoring reads: split-layer states,
        ``colbert``'s head vectors, a bi-encoder's pooled vector. Documents already stored are
        not encoded again; a directory of another format is refused. ``pool_factor``: each
        document's tokens pooled to about ``1 / pool_factor`` before they are stored
        (hierarchical clustering, each cluster's mean; 1: none)."""
        from .store.packing import store_content, store_encoder
        from .store.docstore import DocStateStore

        ex = self._ex
        if not ex.has_doc_precompute:
            raise ValueError(f"{self.variant}: documents cannot be precomputed (a joint variant "
                             "reads query and document together)")
        docs = dict(documents)
        content = store_content(ex)
        st = DocStateStore(directory, meta={"model": self.model.backbone.describe(),
                                            "variant": self.variant},
                           fmt=store, content=content, seed=seed,
                           identity=ex.doc_identity(content),
                           pool_factor=pool_factor)
        st.ensure(list(docs), lambda ids: {d: docs[d] for d in ids},
                  store_encoder(ex, self.batch_size), batch_size=self.batch_size)
        return st

    def score_documents(self, query: str, states, doc_index=None,
                        doc_ids: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``query`` against stored document states (all of them by default), or
        against the documents ``doc_ids`` of a :meth:`document_store` (decoded on the model's
        device)."""
        from .executors import DocStates
        from .store.docstore import DocStateStore

        ex = self._ex
        if isinstance(states, DocStateStore):
            if states.identity is None:
                raise UsageError(f"document store {states.dir} does not record the model that "
                                 "made it (written before stores recorded it): delete the "
                                 "folder and build it again with document_store")
            ids = list(doc_ids) if doc_ids is not None else list(states.location())
            # a bi-encoder's store loads its pooled vectors, scored by one dot product
            states = states.load(ids, device=self.model.backbone.device)
        elif isinstance(states, DocStates):
            if not ex.has_doc_precompute:
                raise UsageError(f"{self.variant} reads query and document together: score "
                                 "the texts (encode_documents returns them)")
            if states.identity is None:
                raise UsageError("these document states carry no record of the model that "
                                 "made them (saved before states recorded it?): encode the "
                                 "documents again with encode_documents")
        qs = ex.encode_queries([query])
        return ex.score_query(qs, states, d_index=doc_index,
                              batch_size=self.batch_size).numpy()

    @property
    def precomputable(self) -> bool:
        return bool(self._ex.has_doc_precompute)

    def save_pretrained(self, path: str | Path) -> Path:
        return self.model.save_pretrained(path)

    def __repr__(self) -> str:
        return f"Reranker({self.variant!r}, {self.model.backbone.describe()})"


def predict(model: str, variant: str, pairs: Iterable[Sequence[str]], **kw) -> np.ndarray:
    """One-shot helper: ``Reranker.from_pretrained(model, variant).predict(pairs)``."""
    return Reranker.from_pretrained(model, variant=variant, **kw).predict(pairs)


__all__ = ["Reranker", "InteractionModel", "predict"]
