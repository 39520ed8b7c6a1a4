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
  run under onnxruntime; variants that cannot be exported are skipped with the reason.

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


def hf_peer(hf_model, tokenizer, spec: InteractionSpec, max_length: int, device) -> Peer:
    def tokenize(queries, docs):
        return tokenizer(queries, docs, padding=True, truncation="longest_first",
                         max_length=max_length, return_tensors="pt").to(device)

    def forward(enc):
        return hf_model(**enc).logits

    def workload(batch, query, docs, pt):
        return PairsWorkload(tokenize, forward, query, docs, batch)

    return Peer("hf", spec, _Kind("hf-eager"), TOKENIZE_PHASE, workload)


def st_peer(folder: Path, spec: InteractionSpec, backend: str, max_length: int,
            device) -> Peer:
    """sentence-transformers ``CrossEncoder`` over the saved model in ``folder``; raises
    :class:`PeerSkipped` when the backend cannot load."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as e:
        raise PeerSkipped(f"sentence-transformers is not installed ({e})") from None
    try:
        ce = CrossEncoder(str(folder), device=str(device), backend=backend, num_labels=1,
                          max_length=max_length, activation_fn=torch.nn.Identity(),
                          local_files_only=True)
    except Exception as e:  # noqa: BLE001 - missing optional backends fail in many ways
        msg = (str(e).splitlines()[0] if str(e) else type(e).__name__).split(". ")[0]
        raise PeerSkipped(f"the CrossEncoder {backend} backend cannot load here ({msg})") \
            from None

    def forward(queries, docs):
        return ce.predict(list(zip(queries, docs)), batch_size=len(docs),
                          show_progress_bar=False, convert_to_tensor=True)

    def workload(batch, query, docs, pt):
        return PairsWorkload(None, forward, query, docs, batch)

    name = "st" if backend == "torch" else f"st-{backend}"
    return Peer(name, spec, _Kind(f"CrossEncoder[{backend}]"), TOKENIZE_IN_CALL, workload)


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
    from .workloads import Workload

    peers: list[Peer] = []
    skipped: list[dict] = []
    ce = parse("ce")
    max_length = bb.max_positions
    hf_model = None
    if any(n in ("hf", "st", "st-onnx") for n in names):
        hf_model = same_hf_model(c.model, c.seed, device, dtype)
        saved = work / "hf"
        hf_model.save_pretrained(saved)
        bb.tokenizer.save_pretrained(saved)
    for n in names:
        try:
            if n == "hf":
                peers.append(hf_peer(hf_model, bb.tokenizer, ce, max_length, device))
            elif n in ("st", "st-onnx"):
                peers.append(st_peer(work / "hf", ce, "torch" if n == "st" else "onnx",
                                     max_length, device))
            elif c.runtime == "ort":
                skipped.append({"peer": n, "variant": "*", "reason": "the run's own rows "
                                "already run the ONNX export (--runtime ort)"})
            else:
                for name, ex in executors.items():
                    try:
                        from ..export.onnx import ort_executor

                        oex = ort_executor(ex, log)
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
                    peers.append(Peer("ort", ex.spec, oex, "", workload, notes))
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
        r.fastest_ce = b[1].runtime


def label_row(row, peer: Peer) -> None:
    """Mark a row measured for ``peer`` (its runtime, executor, tokenization, notes)."""
    row.runtime = peer.runtime
    row.executor = peer.ex.kind
    if peer.tokenization:
        row.tokenization = peer.tokenization
    row.notes.extend(peer.notes)
