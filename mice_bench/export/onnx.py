"""Export an executor to ONNX graphs, check them against the PyTorch path, describe them.

:func:`export_onnx` writes into one folder:

* ``pairs.onnx`` (``ce``), or ``documents.onnx`` + ``query.onnx`` + ``scores.onnx``
  (variants with document precomputation), see :mod:`.graphs`; batch and lengths are
  dynamic axes;
* ``export.json``: the manifest (variant, model, graphs with their inputs and outputs, the
  tokenizer settings the inputs must follow, and the check).

:func:`ort_executor` exports an executor into a temporary folder and returns its
onnxruntime runner (:class:`~.runtime.OrtExecutor`; ``latency --runtime ort`` / ``--peers
ort``); :func:`pairs_runtime` does so once per model and variant (``effectiveness --runtime
ort``).

The check (:func:`check_export`, onnxruntime) scores probe texts of unequal lengths through
the graphs and through the executor (aligned pairs and, for split exports, each query
against every document: one query row broadcast to the candidates): the largest absolute difference must be within
``1e-4`` of the spread (max - min) of the PyTorch scores, else the export is removed and
refused. Tracing runs with ``torch.onnx.export(dynamo=False)``; the layer code's data-dependent
branches are taken at their general case by tracing on padded inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import UsageError
from .graphs import DocumentsGraph, PairsGraph, QueryGraph, ScoresGraph, check_exportable
from .runtime import MANIFEST, OrtExecutor, require_onnxruntime

FORMATS = ("onnx",)
#: the largest |ONNX - PyTorch| score difference, as a fraction of the PyTorch score spread
TOLERANCE = 1e-4
OPSET = 17
#: the staging folder of an export in progress, inside its output folder
STAGE_PREFIX = ".mice-bench-export-"

#: probe texts of unequal lengths: every part padded, so traced branches are the general ones
PROBE_QUERIES = ["what is a cat", "how many legs does a spider have on an ordinary day", "x"]
PROBE_DOCS = ["a cat is a small animal that likes milk and sleeps a lot",
              "spiders have eight legs and build webs to catch insects " * 3,
              "short"]


class ExportCheckError(RuntimeError):
    """The exported graphs disagree with the PyTorch path."""


@contextmanager
def _traceable() -> Iterator[None]:
    """Functions the layer code calls, replaced while tracing by the same math in a form
    ONNX can express, or that runs faster under onnxruntime:

    * ``layer_norm`` reads its normalised shape from the traced tensor (the symbolic needs it
      constant; the hidden size is);
    * ``isin`` has no ONNX operator (an equality against each test value is the same);
    * ``scaled_dot_product_attention`` (no dropout, no causal mask) scales the queries (not
      the keys), adds a mask bias made once from the boolean mask on its own (broadcast)
      shape, and skips the exported operator's NaN clean-up of the attention weights (the
      layer code never leaves a row without an allowed key)."""
    F = torch.nn.functional
    orig_ln, orig_isin, orig_sdpa = F.layer_norm, torch.isin, F.scaled_dot_product_attention

    def layer_norm(x, shape, *a, **k):
        return orig_ln(x, tuple(int(v) for v in shape), *a, **k)

    def isin(elements, test_elements, **k):
        if k:  # assume_unique / invert: not used by the layer code
            return orig_isin(elements, test_elements, **k)
        test = torch.as_tensor(test_elements, device=elements.device).reshape(-1)
        return (elements[..., None] == test).any(-1)

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if dropout_p or is_causal or kw:
            return orig_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                             is_causal=is_causal, scale=scale, **kw)
        scale = float(int(q.shape[-1]) ** -0.5) if scale is None else scale
        w = torch.matmul(q * scale, k.transpose(-2, -1))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.where(attn_mask, torch.zeros((), dtype=w.dtype),
                                        torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
            w = w + attn_mask
        return torch.matmul(torch.softmax(w, -1), v)

    F.layer_norm, torch.isin, F.scaled_dot_product_attention = layer_norm, isin, sdpa
    try:
        yield
    finally:
        F.layer_norm, torch.isin, F.scaled_dot_product_attention = orig_ln, orig_isin, orig_sdpa


def _trace(module: torch.nn.Module, args: tuple, path: Path, dynamic: dict[str, dict[int, str]],
           opset: int) -> None:
    with warnings.catch_warnings(), _traceable(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=list(module.input_names[:len(args)]),
                          output_names=list(module.output_names), dynamic_axes=dynamic,
                          do_constant_folding=True)


def _axes(names, kinds: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
    return {n: kinds[n] for n in names if n in kinds}


def export_onnx(ex, out_dir: str | Path, model: str = "", check: bool = True,
                opset: int = OPSET) -> dict[str, Any]:
    """Export executor ``ex`` into ``out_dir`` (created; must be empty or absent, see
    :func:`check_export_folder`); returns the manifest (also written as ``export.json``).
    ``check``: verify with onnxruntime (needs ``pip install onnxruntime``) and refuse the
    export when it disagrees. The graphs are written in a staging folder inside ``out_dir``
    (``.mice-bench-export-*``) and moved into it at the end, ``export.json`` last; a failed or
    interrupted export removes the staging folder and the folders it created (never one that
    was there before), and a staging folder left by a killed export is replaced."""
    from ..backbone import dtype_name

    kind = check_exportable(ex, dtype_name(ex.backbone.dtype))
    out = Path(out_dir)
    check_export_folder(out)
    if check:
        require_onnxruntime()
    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob(STAGE_PREFIX + "*"):      # the graphs of a killed export
        shutil.rmtree(p, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        manifest = _export(ex, stage, kind, model, opset)
        if check:
            manifest["check"] = check_export(ex, stage, manifest)
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        mode = 0o666 & ~_umask()
        for f in sorted(stage.iterdir(), key=lambda f: f.name == MANIFEST):  # manifest last
            os.chmod(f, mode)
            os.replace(f, out / f.name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for p in made:                  # only the folders this export created, while empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
    stage.rmdir()
    return manifest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_export_folder(out: Path, option: str = "--output") -> None:
    """Refuse (:class:`~mice_bench.errors.UsageError`, one line) an export folder that holds
    other files, a path that is a file or lies under one, and a folder that cannot be written
    (a write test in it, or in the nearest folder above it that exists). An export's own
    staging folder left by a killed run does not count: the next export replaces it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out}: is a file; give a new or empty folder")
    if out.is_dir() and any(not p.name.startswith(STAGE_PREFIX) for p in out.iterdir()):
        raise UsageError(f"{option} {out} exists and is not an empty folder; give a new or "
                         "empty folder")
    near = next(p for p in (out, *out.parents) if p.exists())
    if not near.is_dir():
        raise UsageError(f"{option} {out}: {near} is a file, not a folder; give a new or "
                         "empty folder")
    try:
        with tempfile.NamedTemporaryFile(dir=near, prefix=".write-test.", suffix=".tmp"):
            pass
    except OSError as e:
        raise UsageError(f"{option} {out}: not writable ({e.strerror or e}); choose another "
                         "folder") from None


def _export(ex, out: Path, kind: str, model: str, opset: int) -> dict[str, Any]:
    b, t = {0: "batch"}, {0: "batch", 1: "tokens"}
    graphs: dict[str, Any] = {}
    if kind == "pairs":
        tb = ex.tokenize_pairs(PROBE_QUERIES, PROBE_DOCS)
        g = PairsGraph(ex)
        _trace(g, (tb.input_ids, tb.attention_mask.long(), tb.token_type_ids), out / "pairs.onnx",
               _axes(g.input_names, {n: t for n in g.input_names}) | {"scores": b}, opset)
        graphs["pairs"] = {"file": "pairs.onnx", "inputs": list(g.input_names),
                           "outputs": list(g.output_names)}
    else:
        dtb = ex.tokenize_docs(PROBE_DOCS)
        dg = DocumentsGraph(ex)
        d_axes = {"input_ids": t, "segment_ids": t,
                  dg.output: b if dg.output == "doc_embeddings" else t}
        _trace(dg, (dtb.input_ids, dtb.segment_ids), out / "documents.onnx", d_axes, opset)
        # the query graph and the scores graph are traced on aligned, padded query rows
        qtb = ex.tokenize_queries(PROBE_QUERIES)
        qg = QueryGraph(ex)
        q_t = {0: "queries", 1: "query_tokens"}
        q_axes = {"query_input_ids": q_t, "query_segment_ids": q_t,
                  qg.output: {0: "queries"} if qg.output == "query_embeddings" else q_t}
        _trace(qg, (qtb.input_ids, qtb.segment_ids), out / "query.onnx", q_axes, opset)
        with torch.no_grad():
            docs = dg(dtb.input_ids, dtb.segment_ids)
            query = qg(qtb.input_ids, qtb.segment_ids)
        sg = ScoresGraph(ex)
        args = (query, docs) if dg.output == "doc_embeddings" else \
            (query, qtb.segment_ids, docs, dtb.segment_ids)
        s_axes = {qg.output: q_axes[qg.output], "query_segment_ids": q_t,
                  dg.output: d_axes[dg.output], "doc_segment_ids": t, "scores": b}
        _trace(sg, args, out / "scores.onnx", s_axes, opset)
        for name, g in (("documents", dg), ("query", qg), ("scores", sg)):
            graphs[name] = {"file": f"{name}.onnx", "inputs": list(g.input_names),
                            "outputs": list(g.output_names)}
        graphs["query"]["runs"] = "once per query"
        graphs["scores"]["runs"] = "once per batch of candidates"
        graphs["scores"]["query_rows"] = "1 (one query against every document) or one per " \
                                         "document"
    bb = ex.backbone
    return {"format": "onnx", "variant": str(ex.spec), "model": model or bb.name,
            "description": bb.describe(), "random_weights": bool(bb.random_weights),
            "kind": kind, "opset": opset, "torch": torch.__version__, "graphs": graphs,
            "segment_ids": "-1 padding, 0 [CLS], 1 query, 2 query [SEP], 3 document, "
                           "4 document [SEP], 5 skip-list, 6 query expansion",
            "tokenizer": ex.settings()}


def check_export(ex, out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Score the probe pairs through the graphs (onnxruntime) and through ``ex``; raise
    :class:`ExportCheckError` beyond :data:`TOLERANCE` of the score spread."""
    ort_ex = OrtExecutor(ex, out, manifest=manifest, threads=1)
    # every query against every document: 9 pairs, each part padded somewhere
    qs = [q for q in PROBE_QUERIES for _ in PROBE_DOCS]
    ds = [d for _ in PROBE_QUERIES for d in PROBE_DOCS]
    ref = ex.score_pairs(qs, ds, batch_size=len(qs)).float()
    got = ort_ex.score_pairs(qs, ds, batch_size=len(qs)).float()
    if ort_ex.split:            # and each query against every document: one query row
        ref = torch.cat([ref] + [ex.rerank(q, PROBE_DOCS).float() for q in PROBE_QUERIES])
        got = torch.cat([got] + [ort_ex.rerank(q, PROBE_DOCS).float() for q in PROBE_QUERIES])
    diff = float((ref - got).abs().max())
    spread = float(ref.max() - ref.min())
    res = {"pairs": len(ref), "max_abs_diff": diff, "score_spread": spread,
           "tolerance": TOLERANCE, "runtime": "onnxruntime", "ok": diff <= TOLERANCE * spread}
    if not res["ok"]:
        raise ExportCheckError(f"the exported graphs disagree with PyTorch: max |diff| {diff:.3g}"
                               f" > {TOLERANCE:g} x score spread {spread:.3g}")
    return res


def ort_executor(ex, log=lambda s: None, pairs_only: bool = False,
                 int8: bool = False) -> "OrtExecutor":
    """Executor ``ex`` exported to ONNX (checked against PyTorch) and run by onnxruntime;
    raises :class:`~mice_bench.errors.UsageError` for what cannot be exported. The graphs
    are written to a temporary folder, loaded, and the folder removed. ``int8``: every graph
    then quantized by onnxruntime's ``quantize_dynamic`` (:func:`quantize_export`)."""
    require_onnxruntime()
    check_exportable(ex)
    log(f"{ex.spec}: exporting to ONNX (checked against PyTorch)"
        + (", then quantized to int8" if int8 else ""))
    with tempfile.TemporaryDirectory(prefix="mice-bench-onnx-") as tmp:
        folder = Path(tmp) / "export"
        manifest = export_onnx(ex, folder, check=True)
        if int8:
            quantize_export(folder, manifest)
        return OrtExecutor(ex, folder, manifest=manifest, pairs_only=pairs_only)


def quantize_export(folder: Path, manifest: dict) -> None:
    """Replace every graph of an export by onnxruntime's dynamic int8 quantization of it
    (``onnxruntime.quantization.quantize_dynamic``, int8 weights of the MatMul / Gemm
    products, activations quantized per call)."""
    import os

    from onnxruntime.quantization import QuantType, quantize_dynamic

    for g in manifest["graphs"].values():
        f = Path(folder) / g["file"]
        q = f.with_name(f.stem + ".int8.onnx")
        quantize_dynamic(str(f), str(q), weight_type=QuantType.QInt8)
        os.replace(q, f)


def pairs_runtime(ex, cache: dict, key) -> "OrtExecutor":
    """Executor ``ex`` exported (checked) once per ``key`` and run by onnxruntime on
    (query, document) pairs (``pairs_only``: no document store)."""
    if key not in cache:
        cache[key] = ort_executor(ex, pairs_only=True)
    ort_ex = cache[key]
    ort_ex.ex = ex
    return ort_ex
