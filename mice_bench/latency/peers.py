"""Peer runtimes timed in the same interleaved run as mice-bench's rows
(``mice-bench latency --peers hf,st,st-onnx,ort``), and ``--runtime ort``.

Every peer scores the same (query, document) texts with the same weights in batches of the
run's batch size; its rows carry the same statistics and the FLOPs of the variant it runs:

* ``hf``: Hugging Face ``AutoModelForSequenceClassification`` eager (the same weights: the
  architecture's seeded random model, or the checkpoint), the tokenizer called in the
  ``tokenize`` phase, the model on the token ids in the ``interaction`` phase (``ce``);
* ``st``: sentence-transformers ``CrossEncoder.predict`` with the torch backend, which
  tokenizes inside ``predict`` (the whole call is the ``interaction`` phase) (``ce``);
* ``st-onnx``: the same with the ONNX backend (optimum + onnxruntime); skipped with the reason
  when that backend cannot be loaded;
* ``ort``: mice-bench's own ONNX export (:mod:`mice_bench.export`) of every variant of the
  run under onnxruntime; variants that cannot be exported are skipped with the reason;
* the same as deployed at lower precision: ``hf-bf16`` (the Hugging Face model with its
  weights cast to bf16), ``st-onnx-int8`` (sentence-transformers' dynamic int8 ONNX export),
  ``st-openvino`` / ``st-openvino-int8`` (its OpenVINO backend, fp32 and NNCF int8),
  ``ort-int8`` (mice-bench's export quantized by onnxruntime's ``quantize_dynamic``). Each
  peer row records its ``dtype``.

Tokenization is inside the timed run for every row (mice-bench's and the peers'); each row's
``tokenization`` says where. ``speedup_vs_fastest_ce`` compares every row with the fastest
cross-encoder (``ce``) row of the same point, whatever its runtime.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..executors.base import ExecutorTraits
from ..errors import UsageError
from ..spec import InteractionSpec, parse
from .timing import PhaseTimer

TOKENIZE_PHASE = "timed: tokenize phase"
TOKENIZE_IN_CALL = "timed: inside CrossEncoder.predict"


def own_tokenization(wl, protocol: str) -> str:
    """Where a mice-bench row tokenizes (:class:`~.workloads.Workload`)."""
    if protocol == "rerank" and wl.precompute:
        return TOKENIZE_PHASE + " (query; documents offline)"
    return TOKENIZE_PHASE


@dataclass
class Peer:
    """One peer row per sweep point: what runs it and how it is labelled."""

    runtime: str
    spec: InteractionSpec
    ex: Any                                  # has ``kind``; the executor API for ``ort``
    tokenization: str
    workload: Callable[..., Any]             # (batch, query, docs, point) -> workload
    notes: list[str] = field(default_factory=list)
    dtype: str = "fp32"                      # the precision the peer computes in

    @property
    def label(self) -> str:
        return f"{self.spec} ({self.runtime})"


class PairsWorkload:
    """A cross-encoder peer on one query's candidates (rerank) or on one call's pairs (paper):
    chunks of ``batch_size`` pairs; ``tokenize(queries, docs)`` in the tokenize phase (None:
    ``forward`` takes the texts and tokenizes itself), ``forward`` in the interaction phase."""

    split = precompute = kv_cache = doc_vectors = False
    packed = doc_store = doc_content = None
    linear_calls = packed_linear_calls = 0

    def __init__(self, tokenize: Callable | None, forward: Callable, query: str,
                 docs: list[str], batch_size: int):
        self.tokenize, self.forward = tokenize, forward
        self.query, self.docs, self.batch_size = query, docs, batch_size
        self.pairs_per_run = len(docs)
        self.ds = None
        self.offline: dict[str, Any] = {}

    def prepare(self, device) -> None:
        pass

    def run(self, t: PhaseTimer) -> None:
        B = self.batch_size
        with torch.inference_mode():
            for i in range(0, len(self.docs), B):
                chunk = self.docs[i:i + B]
                queries = [self.query] * len(chunk)
                if self.tokenize is None:
                    with t.phase("interaction"):
                        self.forward(queries, chunk)
                    continue
                with t.phase("tokenize"):
                    enc = self.tokenize(queries, chunk)
                with t.phase("interaction"):
                    self.forward(enc)


class _Kind(ExecutorTraits):
    """A peer's runner, as the latency rows see it: its kind, nothing precomputed."""

    def __init__(self, kind: str):
        self.kind = kind


def same_hf_model(model: str, seed: int, device, dtype):
    """The Hugging Face classifier with the weights mice-bench loads for ``model``."""
    from ..backbone import ARCH_ONLY, random_hf_model

    if model in ARCH_ONLY:
        m = random_hf_model(model, seed=seed)
    else:
        from transformers import AutoModelForSequenceClassification

        m = AutoModelForSequenceClassification.from_pretrained(str(Path(model).expanduser()),
                                                               num_labels=1)
    return m.to(device=device, dtype=dtype).eval()


def hf_peer(hf_model, tokenizer, spec: InteractionSpec, max_length: int, device,
            name: str = "hf", dtype: str = "fp32") -> Peer:
    def tokenize(queries, docs):
        return tokenizer(queries, docs, padding=True, truncation="longest_first",
                         max_length=max_length, return_tensors="pt").to(device)

    def forward(enc):
        return hf_model(**enc).logits

    def workload(batch, query, docs, pt):
        return PairsWorkload(tokenize, forward, query, docs, batch)

    return Peer(name, spec, _Kind("hf-eager" if dtype == "fp32" else f"hf-eager-{dtype}"),
                TOKENIZE_PHASE, workload, dtype=dtype)


def st_peer(folder: Path, spec: InteractionSpec, backend: str, max_length: int,
            device, int8: bool = False) -> Peer:
    """sentence-transformers ``CrossEncoder`` over the saved model in ``folder``; raises
    :class:`PeerSkipped` when the backend cannot load. ``int8``: the backend's own dynamic
    int8 quantization of its exported model (sentence-transformers'
    ``export_dynamic_quantized_onnx_model`` for ONNX, ``export_static_quantized_openvino_model``
    for OpenVINO), loaded from the file it writes."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as e:
        raise PeerSkipped(f"sentence-transformers is not installed ({e})") from None
    what = f"{backend} int8" if int8 else backend
    try:
        kw = dict(device=str(device), num_labels=1, max_length=max_length,
                  activation_fn=torch.nn.Identity(), local_files_only=True)
        ce = CrossEncoder(str(folder), backend=backend, **kw)
        if int8:
            ce = _st_int8(ce, folder, backend, kw)
    except Exception as e:  # noqa: BLE001 - missing optional backends fail in many ways
        msg = (str(e).splitlines()[0] if str(e) else type(e).__name__).split(". ")[0]
        raise PeerSkipped(f"the CrossEncoder {what} backend cannot load here ({msg})") \
            from None

    def forward(queries, docs):
        return ce.predict(list(zip(queries, docs)), batch_size=len(docs),
                          show_progress_bar=False, convert_to_tensor=True)

    def workload(batch, query, docs, pt):
        return PairsWorkload(None, forward, query, docs, batch)

    name = ("st" if backend == "torch" else f"st-{backend}") + ("-int8" if int8 else "")
    return Peer(name, spec, _Kind(f"CrossEncoder[{what}]"), TOKENIZE_IN_CALL, workload,
                dtype="int8" if int8 else "fp32")


def _st_int8(ce, folder: Path, backend: str, kw: dict):
    """The CrossEncoder of ``folder`` quantized to int8 by sentence-transformers' own export
    helpers (ONNX: dynamic, AVX-512 VNNI config; OpenVINO: static, NNCF) and reloaded."""
    import sentence_transformers as st

    from sentence_transformers import CrossEncoder

    if backend == "onnx":
        st.export_dynamic_quantized_onnx_model(ce, "avx512_vnni", str(folder))
        file_name = "onnx/model_qint8_avx512_vnni.onnx"
    else:
        st.export_static_quantized_openvino_model(ce, None, str(folder))
        file_name = "openvino/openvino_model_qint8_quantized.xml"
    return CrossEncoder(str(folder), backend=backend, model_kwargs={"file_name": file_name},
                        **kw)


def _fresh_copy(src: Path, dst: Path) -> Path:
    """A copy of the saved model per CrossEncoder peer (its backends write exports beside)."""
    import shutil

    shutil.copytree(src, dst)
    return dst


class PeerSkipped(Exception):
    """A peer that cannot run here; the message is the reason recorded in the results."""


def build_peers(names: list[str], c, bb, executors: dict[str, Any], device, dtype,
                log: Callable[[str], None] = lambda s: None) -> tuple[list[Peer], list[dict]]:
    """The peers of run ``c`` (a resolved :class:`~.config.LatencyConfig`; ``executors``:
    the run's own, by variant name) and the skipped ones with their reasons
    (``[{"peer": ..., "variant": ..., "reason": ...}]``)."""
    with tempfile.TemporaryDirectory(prefix="mice-bench-peers-") as tmp:
        return _build_peers(names, c, bb, executors, device, dtype, log, Path(tmp))


def _build_peers(names, c, bb, executors, device, dtype, log, work: Path):
    """:func:`build_peers` with ``work`` as scratch folder (removed after: the peers hold
    their models in memory)."""
    from ..backbone import dtype_name
    from .workloads import Workload

    peers: list[Peer] = []
    skipped: list[dict] = []
    ce = parse("ce")
    max_length = bb.max_positions
    hf_model = None
    if any(n.startswith(("hf", "st")) for n in names):
        hf_model = same_hf_model(c.model, c.seed, device, dtype)
        saved = work / "hf"
        hf_model.save_pretrained(saved)
        bb.tokenizer.save_pretrained(saved)
    for n in names:
        try:
            if n == "hf":
                peers.append(hf_peer(hf_model, bb.tokenizer, ce, max_length, device,
                                     dtype=dtype_name(dtype)))
            elif n == "hf-bf16":         # as deployed: the weights cast to bf16
                peers.append(hf_peer(same_hf_model(c.model, c.seed, device, torch.bfloat16),
                                     bb.tokenizer, ce, max_length, device, name=n,
                                     dtype="bf16"))
            elif n.startswith("st"):
                backend = {"st": "torch", "st-onnx": "onnx",
                           "st-openvino": "openvino"}[n.removesuffix("-int8")]
                peers.append(st_peer(_fresh_copy(work / "hf", work / n), ce, backend,
                                     max_length, device, int8=n.endswith("-int8")))
            elif c.runtime == "ort":
                skipped.append({"peer": n, "variant": "*", "reason": "the run's own rows "
                                "already run the ONNX export (--runtime ort)"})
            else:
                for name, ex in executors.items():
                    try:
                        from ..export.onnx import ort_executor

                        oex = ort_executor(ex, log, int8=n == "ort-int8")
                    except UsageError as e:
                        skipped.append({"peer": n, "variant": name, "reason": str(e)})
                        log(f"peer ort skipped for {name}: {e}")
                        continue

                    def workload(batch, query, docs, pt, oex=oex):
                        return Workload(oex, c.protocol, batch, query, docs, pt.precompute,
                                        False, doc_vectors=c.doc_vectors)

                    notes = [] if not oex.split else [
                        "onnxruntime: the query graph runs once per query, the scores graph "
                        "once per batch of candidates"]
                    peers.append(Peer(n, ex.spec, oex, "", workload, notes,
                                      dtype="int8" if n == "ort-int8" else "fp32"))
        except PeerSkipped as e:
            skipped.append({"peer": n, "variant": "ce", "reason": str(e)})
            log(f"peer {n} skipped: {e}")
    return peers, skipped


def add_fastest_ce(rows) -> None:
    """``speedup_vs_fastest_ce`` / ``fastest_ce``: every row against the fastest ``ce`` row
    (any runtime) at the same requested batch size and document length, per pair."""
    best: dict[tuple, Any] = {}
    for r in rows:
        if r.variant != "ce":
            continue
        k = (r.point.batch_size_requested, r.point.doc_tokens)
        pp = r.latency_s["mean"] / r.pairs_per_run
        if k not in best or pp < best[k][0]:
            best[k] = (pp, r)
    for r in rows:
        b = best.get((r.point.batch_size_requested, r.point.doc_tokens))
        if b is None:
            continue
        me = r.latency_s["mean"] / r.pairs_per_run
        sp = b[0] / me if me > 0 else None
        r.speedup_vs_fastest_ce = sp if sp is not None and math.isfinite(sp) else None
        rt, dt = b[1].runtime, b[1].dtype
        r.fastest_ce = rt + (f" {dt}" if dt and not rt.endswith(dt) else "")
    add_best_vs_best(rows, best)


def add_best_vs_best(rows, best_ce: dict | None = None) -> None:
    """``best_vs_best`` on every row: the fastest cross-encoder row of the point (any runtime,
    any dtype) against the fastest row of the row's variant (any runtime, any dtype), per
    pair; ``variant_best`` marks the variant's fastest row. Rows at points without a ``ce``
    row get None."""
    if best_ce is None:
        best_ce = {}
        for r in rows:
            if r.variant == "ce":
                k = (r.point.batch_size_requested, r.point.doc_tokens)
                pp = r.latency_s["mean"] / r.pairs_per_run
                if k not in best_ce or pp < best_ce[k][0]:
                    best_ce[k] = (pp, r)
    fastest: dict[tuple, Any] = {}
    for r in rows:
        k = (r.point.batch_size_requested, r.point.doc_tokens, r.variant)
        pp = r.latency_s["mean"] / r.pairs_per_run
        if k not in fastest or pp < fastest[k][0]:
            fastest[k] = (pp, r)
    for r in rows:
        ce = best_ce.get((r.point.batch_size_requested, r.point.doc_tokens))
        me = fastest[(r.point.batch_size_requested, r.point.doc_tokens, r.variant)]
        r.variant_best = me[1] is r
        ratio = ce[0] / me[0] if ce is not None and me[0] > 0 else None
        r.best_vs_best = ratio if ratio is not None and math.isfinite(ratio) else None


def label_row(row, peer: Peer) -> None:
    """Mark a row measured for ``peer`` (its runtime, executor, tokenization, notes)."""
    row.runtime = peer.runtime
    row.executor = peer.ex.kind
    if peer.tokenization:
        row.tokenization = peer.tokenization
    row.notes.extend(peer.notes)
