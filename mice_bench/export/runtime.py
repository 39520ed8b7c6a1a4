"""Run an ONNX export under onnxruntime behind the executor API (``latency --runtime ort``).

:class:`OrtExecutor` offers what :class:`~mice_bench.latency.workloads.Workload` and
``score_pairs`` / ``rerank`` call on an executor: the PyTorch executor's own tokenizer
builds the inputs (so both paths see the same tokens), the graphs of the export compute.
Documents precomputed by :meth:`~OrtExecutor.encode_documents` are what the documents graph
returns (states, head vectors or embeddings) held as arrays; the query is encoded inside the
scores graph, once per call (one call per batch of candidates).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError

#: the manifest of an export folder
MANIFEST = "export.json"



@dataclass
class OrtDocs:
    """Stored documents: the documents graph's output ``data`` (``[N, Td, D]`` or ``[N, H]``)
    and their segment ids ``seg [N, Td]`` (-1 = padding)."""

    data: np.ndarray
    seg: np.ndarray
    vectors: bool = False

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def select(self, idx) -> "OrtDocs":
        idx = np.asarray(idx, dtype=np.int64)
        seg = self.seg[idx]
        if self.data.ndim == 2:
            return OrtDocs(self.data[idx], seg, self.vectors)
        T = max(int((seg >= 0).sum(1).max()), 1) if len(idx) else 1
        return OrtDocs(self.data[idx][:, :T], seg[:, :T], self.vectors)

    @classmethod
    def cat(cls, parts: list["OrtDocs"]) -> "OrtDocs":
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


class OrtExecutor:
    """The export in ``folder`` of executor ``ex``'s variant, run by onnxruntime."""

    kind = "ort"
    kv_layers: list[int] = []

    def __init__(self, ex, folder: str | Path, manifest: dict[str, Any] | None = None,
                 threads: int | None = None, pairs_only: bool = False):
        ort = require_onnxruntime()
        self.ex, self.spec, self.backbone = ex, ex.spec, ex.backbone
        self.tokenizer = ex.tokenizer
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else load_manifest(folder)
        if self.manifest.get("variant") != str(ex.spec):
            from ..errors import UsageError

            raise UsageError(f"{folder} holds an export of {self.manifest.get('variant')!r}, "
                             f"not of {ex.spec}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads() or os.cpu_count())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.threads = opts.intra_op_num_threads
        self.sessions = {name: ort.InferenceSession(str(self.folder / g["file"]), opts,
                                                    providers=["CPUExecutionProvider"])
                         for name, g in self.manifest["graphs"].items()}
        self.inputs = {name: {i.name for i in s.get_inputs()} for name, s in self.sessions.items()}
        self.split = self.manifest["kind"] == "split"
        #: offer no document precomputation (callers then score pairs: effectiveness)
        self.pairs_only = bool(pairs_only)
        self.doc_output = self.manifest["graphs"]["documents"]["outputs"][0] if self.split \
            else None

    # ------------------------------------------------------------------ executor API
    @property
    def has_doc_precompute(self) -> bool:
        return self.split and not self.pairs_only

    @property
    def flags(self) -> dict:
        return self.ex.flags

    @property
    def late_interaction(self) -> bool:
        return self.doc_output == "doc_vectors"

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
            ds = self.encode_documents(dtb, batch_size=max(len(dtb), 1))
            return self._scores(qtb, ds)
        return torch.from_numpy(self._run("pairs", {
            "input_ids": _np(tb.input_ids), "attention_mask": _np(tb.attention_mask),
            "token_type_ids": _np(tb.token_type_ids)}))

    def encode_queries(self, queries):
        """The tokenized query parts (the scores graph encodes them)."""
        return queries if not isinstance(queries, list) else self.tokenize_queries(queries)

    def encode_documents(self, docs, kv_cache: bool = False, batch_size: int = 64,
                         vectors: bool = False, **_kw) -> OrtDocs:
        """The documents graph's output for ``docs`` (texts or a tokenized batch), in chunks
        of ``batch_size``; ``kv_cache`` / ``vectors`` are the export's own choice."""
        tb = docs if not isinstance(docs, list) else self.tokenize_docs(docs)
        parts = []
        for i in range(0, len(tb), max(batch_size, 1)):
            sub = tb.select(slice(i, i + batch_size))
            seg = _np(sub.segment_ids)
            out = self._run("documents", {"input_ids": _np(sub.input_ids), "segment_ids": seg})
            parts.append(OrtDocs(out, seg, self.late_interaction))
        return OrtDocs.cat(parts)

    def _scores(self, qtb, ds: OrtDocs) -> torch.Tensor:
        feed = {"query_input_ids": _np(qtb.input_ids), "query_segment_ids": _np(qtb.segment_ids),
                self.doc_output: ds.data, "doc_segment_ids": ds.seg}
        return torch.from_numpy(self._run("scores", feed)).float()

    def score_states(self, qs, q_index, ds: OrtDocs, d_index) -> torch.Tensor:
        """Scores of pairs ``(qs[q_index[i]], ds[d_index[i]])``; one query row is fed once
        for all its candidates."""
        q_index = torch.as_tensor(q_index, dtype=torch.long)
        rows = q_index[:1] if len(q_index) and bool((q_index == q_index[0]).all()) else q_index
        return self._scores(qs.select(rows), ds.select(torch.as_tensor(d_index).numpy()))

    def score_pairs(self, queries, docs, batch_size: int = 32) -> torch.Tensor:
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
