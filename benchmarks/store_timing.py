"""Encode and decode time of every document-store format, per 1,000 documents (timed).

Run on an idle machine; writes one JSON file. For a model and variant, the first ``--docs``
documents of a collection are encoded into an fp32 store (timed: encoding, seconds per 1,000
documents), then every other format is built from that fp32 store (timed: compression,
including the codec's k-means for residual formats) and read back whole (timed: decoding on
``--device``, batched, as a re-ranker reads it). Bytes per token and per document come from
the stores themselves.

    python benchmarks/store_timing.py --model PATH --variant 'colbert[proj=0,qaug=0]' \\
        --dataset nfcorpus --docs 1000 --output results/effectiveness/storage/timing-colbert.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--dataset", default="nfcorpus")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--doc-max-tokens", type=int, default=254)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--formats", default="fp32,fp16,int8,residual4,residual2,residual1")
    ap.add_argument("--output", required=True)
    a = ap.parse_args()

    from mice_bench.backbone import load_backbone
    from mice_bench.data.collections import load_collection, resolve_datasets
    from mice_bench.store.packing import store_content, store_encoder
    from mice_bench.store.docstore import DocStateStore
    from mice_bench.executors import make_executor

    (info,) = resolve_datasets([a.dataset])
    coll = load_collection(info)
    docs: dict[str, str] = {}
    for did, text in coll.iter_corpus():
        docs[did] = text
        if len(docs) >= a.docs:
            break
    ids = list(docs)
    bb = load_backbone(a.model, device=a.device, dtype="fp32", seed=0)
    ex = make_executor(a.variant, bb, doc_max_tokens=a.doc_max_tokens)
    content = store_content(ex)
    per_k = 1000.0 / len(ids)
    out = {"model": a.model, "variant": a.variant, "dataset": a.dataset, "docs": len(ids),
           "device": a.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "content": content, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ref = DocStateStore(Path(tmp) / "fp32", fmt="fp32", content=content)
        ref.ensure(ids, lambda x: {d: docs[d] for d in x}, store_encoder(ex, a.batch_size),
                   batch_size=a.batch_size)
        encode_s = time.perf_counter() - t
        for fmt in a.formats.split(","):
            st = ref if fmt == "fp32" else DocStateStore(Path(tmp) / fmt, fmt=fmt,
                                                         content=content)
            t = time.perf_counter()
            if fmt != "fp32":
                st.ensure(ids, lambda x: {d: docs[d] for d in x}, None,
                          batch_size=a.batch_size, source=lambda x: ref.load(x))
            compress_s = time.perf_counter() - t
            st.load(ids[:8], device=a.device)                        # warm-up
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            st.load(ids, device=a.device)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            decode_s = time.perf_counter() - t
            u = st.usage()
            out["formats"][fmt] = {
                "encode_s_per_1000_docs": encode_s * per_k,
                "compress_s_per_1000_docs": compress_s * per_k,
                "decode_s_per_1000_docs": decode_s * per_k,
                "bytes_per_token": u["bytes_per_token"], "bytes_per_doc": u["bytes_per_doc"],
                "tokens_per_doc": u["tokens_per_doc"], "codec_bytes": u.get("codec_bytes", 0),
                "centroids": u.get("centroids")}
            print(fmt, json.dumps(out["formats"][fmt]))
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
