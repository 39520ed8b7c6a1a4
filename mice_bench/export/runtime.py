"""Run an ONNX export under onnxruntime behind the executor API (``latency --runtime ort``).

:class:`OrtExecutor` offers what :class:`~mice_bench.latency.workloads.Workload` and
``score_pairs`` / ``rerank`` call on an executor: the PyTorch executor's own tokenizer
builds the inputs (so both paths see the same tokens), the graphs of the export compute.
Documents precomputed by :meth:`~OrtExecutor.encode_documents` are what the documents graph
returns (states, head vectors or embeddings) held as arrays; :meth:`~OrtExecutor.encode_queries`
runs the query graph once per query (its states or embedding held as arrays) and
:meth:`~OrtExecutor.score_states` runs the scores graph once per batch of candidates.

Every session is made by :func:`session_options`: ``threads`` intra-op threads, one
inter-op thread, and no spinning: onnxruntime's worker threads otherwise keep spinning
after each run and take the CPU from whatever runs next (a PyTorch row timed after an
onnxruntime row in the same interleaved run would be slowed by it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


from ..executors.base import DOC_NONE, DOC_POOLED, DOC_STATES, DOC_VECTORS, ExecutorTraits
from ..errors import UsageError

#: the manifest of an export folder
MANIFEST = "export.json"
#: the graphs of a split export (documents, query once per query, scores per batch)
SPLIT_GRAPHS = ("documents", "query", "scores")
#: session config entries set on every session: worker threads sleep between runs
NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def session_options(threads: int):
    """onnxruntime session options for timing: ``threads`` intra-op threads, one inter-op
    thread, full graph optimisation, worker threads that do not spin between runs
    (:data:`NO_SPINNING`)."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    for k, v in NO_SPINNING.items():
        opts.add_session_config_entry(k, v)
    return opts


@dataclass
class OrtStates:
    """One part's graph output: stored documents (the documents graph's ``data``, ``[N, Td,
    D]`` or ``[N, H]``) or encoded queries (the query graph's, ``[Q, Tq, H]`` or ``[Q, H]``),
    with their segment ids ``seg [N, T]`` (-1 = padding)."""

    data: np.ndarray
    seg: np.ndarray
    vectors: bool = False

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def select(self, idx) -> "OrtStates":
        """Rows ``idx``, trimmed to their longest valid length; a contiguous range of rows
        is a view (no copy) unless trimming makes it non-contiguous."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and bool((np.diff(idx) == 1).all()):
            idx = slice(int(idx[0]), int(idx[-1]) + 1)
        seg = self.seg[idx]
        if self.data.ndim == 2:
            return OrtStates(self.data[idx], seg, self.vectors)
        T = max(int((seg >= 0).sum(1).max()), 1) if len(seg) else 1
        data = self.data[idx]
        if T < data.shape[1]:
            data, seg = np.ascontiguousarray(data[:, :T]), np.ascontiguousarray(seg[:, :T])
        return OrtStates(data, seg, self.vectors)

    @classmethod
    def cat(cls, parts: list["OrtStates"]) -> "OrtStates":
        T = max(p.seg.shape[1] for p in parts)

        def pad(a: np.ndarray, value) -> np.ndarray:
            if a.ndim == 1 or a.shape[1] == T:
                return a
            width = [(0, 0), (0, T - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, width, constant_values=value)

        data = parts[0].data if len(parts) == 1 else np.concatenate(
            [p.data if p.data.ndim == 2 else pad(p.data, 0.0) for p in parts])
        seg = np.concatenate([pad(p.seg, -1) for p in parts])
        return cls(np.ascontiguousarray(data), seg, parts[0].vectors)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.int64, copy=False)


class OrtExecutor(ExecutorTraits):
    """The export in ``folder`` of executor ``ex``'s variant, run by onnxruntime: an executor
    wrapping ``ex`` (same tokenizer and head settings); documents become what the export's
    documents graph returns, or nothing with ``pairs_only``."""

    kind = "ort"

    def __init__(self, ex, folder: str | Path, manifest: dict[str, Any] | None = None,
                 threads: int | None = None, pairs_only: bool = False):
        ort = require_onnxruntime()
        self.ex, self.spec, self.backbone = ex, ex.spec, ex.backbone
        self.tokenizer = ex.tokenizer
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else load_manifest(folder)
        if self.manifest.get("variant") != str(ex.spec):
            raise UsageError(f"{folder} holds an export of {self.manifest.get('variant')!r}, "
                             f"not of {ex.spec}")
        self.split = self.manifest.get("kind") == "split"
        if self.split and set(self.manifest.get("graphs", {})) != set(SPLIT_GRAPHS):
            raise UsageError(f"{folder} holds an export whose graphs "
                             f"({', '.join(self.manifest.get('graphs', {}))}) are not "
                             f"{', '.join(SPLIT_GRAPHS)} (an earlier layout that encoded the "
                             "query in the scores graph): export it again with mice-bench "
                             "export")
        opts = session_options(threads or torch.get_num_threads() or os.cpu_count() or 1)
        self.threads = opts.intra_op_num_threads
        self.sessions = {name: ort.InferenceSession(str(self.folder / g["file"]), opts,
                                                    providers=["CPUExecutionProvider"])
                         for name, g in self.manifest["graphs"].items()}
        self.inputs = {name: {i.name for i in s.get_inputs()} for name, s in self.sessions.items()}
        #: offer no document precomputation (callers then score pairs: effectiveness)
        self.pairs_only = bool(pairs_only)
        self.doc_output = self.manifest["graphs"]["documents"]["outputs"][0] if self.split \
            else None
        self.query_output = self.manifest["graphs"]["query"]["outputs"][0] if self.split \
            else None
        self.doc_repr = DOC_NONE if self.doc_output is None or self.pairs_only else \
            {"doc_vectors": DOC_VECTORS, "doc_embeddings": DOC_POOLED}.get(self.doc_output,
                                                                          DOC_STATES)

    # ------------------------------------------------------------------ executor API
    @property
    def flags(self) -> dict:
        return self.ex.flags

    def settings(self) -> dict:
        out = dict(self.ex.settings())
        out["runtime"] = {"name": "onnxruntime", "threads": self.threads,
                          "export": self.manifest.get("variant"),
                          "opset": self.manifest.get("opset")}
        return out

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        want = self.inputs[graph]
        return self.sessions[graph].run(None, {k: v for k, v in feed.items() if k in want})[0]

    def tokenize_pairs(self, queries, docs):
        return self.ex.tokenize_pairs(queries, docs)

    def tokenize_queries(self, queries):
        return self.ex.tokenize_queries(queries)

    def tokenize_docs(self, docs):
        return self.ex.tokenize_docs(docs)

    def forward_pairs(self, tb) -> torch.Tensor:
        if self.split:
            qtb, dtb = tb
            qs = self.encode_queries(qtb)
            ds = self.encode_documents(dtb, batch_size=max(len(dtb), 1))
            return self._scores(qs, ds)
        return torch.from_numpy(self._run("pairs", {
            "input_ids": _np(tb.input_ids), "attention_mask": _np(tb.attention_mask),
            "token_type_ids": _np(tb.token_type_ids)}))

    def encode_queries(self, queries) -> OrtStates:
        """The query graph's output for ``queries`` (texts or a tokenized batch), one run:
        what :meth:`score_states` feeds the scores graph."""
        tb = queries if not isinstance(queries, list) else self.tokenize_queries(queries)
        seg = _np(tb.segment_ids)
        out = self._run("query", {"query_input_ids": _np(tb.input_ids), "query_segment_ids": seg})
        return OrtStates(out, seg)

    def encode_documents(self, docs, kv_cache: bool = False, batch_size: int = 64,
                         vectors: bool = False, **_kw) -> OrtStates:
        """The documents graph's output for ``docs`` (texts or a tokenized batch), in chunks
        of ``batch_size``; ``kv_cache`` / ``vectors`` are the export's own choice."""
        tb = docs if not isinstance(docs, list) else self.tokenize_docs(docs)
        parts = []
        for i in range(0, len(tb), max(batch_size, 1)):
            sub = tb.select(slice(i, i + batch_size))
            seg = _np(sub.segment_ids)
            out = self._run("documents", {"input_ids": _np(sub.input_ids), "segment_ids": seg})
            parts.append(OrtStates(out, seg, self.late_interaction))
        return OrtStates.cat(parts)

    def _scores(self, qs: OrtStates, ds: OrtStates) -> torch.Tensor:
        feed = {self.query_output: qs.data, "query_segment_ids": qs.seg,
                self.doc_output: ds.data, "doc_segment_ids": ds.seg}
        return torch.from_numpy(self._run("scores", feed)).float()

    def score_states(self, qs: OrtStates, q_index, ds: OrtStates, d_index) -> torch.Tensor:
        """Scores of pairs ``(qs[q_index[i]], ds[d_index[i]])`` (``qs``: :meth:`encode_queries`);
        one query row is fed once for all its candidates (the graph broadcasts it)."""
        q_index = torch.as_tensor(q_index, dtype=torch.long)
        rows = q_index[:1] if len(q_index) and bool((q_index == q_index[0]).all()) else q_index
        return self._scores(qs.select(rows.numpy()), ds.select(torch.as_tensor(d_index).numpy()))

    def score_pairs(self, queries, docs, batch_size: int = 32) -> torch.Tensor:
        """Scores of aligned (query, document) texts in batches of ``batch_size``; split
        exports encode each distinct query once (one query graph run) and each distinct
        document once, as the PyTorch split executor does."""
        if self.split:
            uq, ud = list(dict.fromkeys(queries)), list(dict.fromkeys(docs))
            qpos, dpos = {q: i for i, q in enumerate(uq)}, {d: i for i, d in enumerate(ud)}
            qs = self.encode_queries(uq) if uq else None
            ds = self.encode_documents(ud, batch_size=max(batch_size, 1)) if ud else None
            qi = torch.tensor([qpos[q] for q in queries], dtype=torch.long)
            di = torch.tensor([dpos[d] for d in docs], dtype=torch.long)
            out = [self.score_states(qs, qi[i:i + batch_size], ds, di[i:i + batch_size])
                   for i in range(0, len(queries), batch_size)]
            return torch.cat(out) if out else torch.zeros(0)
        out = []
        for i in range(0, len(queries), batch_size):
            tb = self.tokenize_pairs(list(queries[i:i + batch_size]),
                                     list(docs[i:i + batch_size]))
            out.append(self.forward_pairs(tb))
        return torch.cat(out) if out else torch.zeros(0)

    def rerank(self, query: str, docs, batch_size: int = 32) -> torch.Tensor:
        if not self.has_doc_precompute:
            return self.score_pairs([query] * len(docs), list(docs), batch_size)
        qs = self.encode_queries([query])
        ds = self.encode_documents(list(docs), batch_size=batch_size)
        out = [self.score_states(qs, torch.zeros(len(c), dtype=torch.long), ds, c)
               for c in torch.arange(len(docs)).split(batch_size)]
        return torch.cat(out) if out else torch.zeros(0)


def require_onnxruntime():
    """onnxruntime, imported with its telemetry off (``ORT_DISABLE_TELEMETRY=1`` unless set):
    otherwise each process writes a device id and an event database under
    ``~/.cache/Microsoft/DeveloperTools`` and a ``.ses`` file in the temporary folder, outside
    anything the user named. The variable is read when onnxruntime is first imported."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("onnxruntime is not installed: pip install 'mice-bench[onnx]' (or "
                         "pass --no-check to export without the check)") from None
    return onnxruntime


def load_manifest(folder: str | Path) -> dict[str, Any]:
    p = Path(folder) / MANIFEST
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{folder} is not a mice-bench ONNX export (no readable {MANIFEST}: "
                         f"{type(e).__name__})") from None
