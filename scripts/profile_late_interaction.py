"""Profile of the rerank protocol's late-interaction baselines against ``ce`` (CPU, fp32).

One interleaved loop (a round runs every measurement once, in turn, so that a change in
machine load hits them alike; medians over rounds, ratios taken within a round):

* ``colbert`` / ``biencoder`` whole rerank runs (one query, ``--depth`` candidates of
  ``--doc-tokens`` tokens in one batch, documents precomputed) and their parts: query
  tokenization, query encoding, interaction + head; plain ``F.linear`` and ``--prepack``;
* a bare Hugging Face ``BertModel`` forward of the same query (same weights' shapes);
* ``ce`` on ``--ce-pairs`` pairs of the same lengths, plain and prepacked: the rate that the
  FLOP ratio assumes the baselines reach;
* the query encoding's 72 matrix products alone (34 rows: plain, prepacked; 290 rows), and
  the same 12 layer calls over 1, 2, 4 or 12 distinct layers' weights (the working set);
* the MaxSim product alone and the memory read rate for 7 MB and 85 MB buffers.

``python scripts/profile_late_interaction.py --threads 1 --rounds 15``
"""

from __future__ import annotations

import argparse
import contextlib
import statistics as st
import time

import torch
import torch.nn.functional as F


class _NoTimer:
    def phase(self, name):
        return contextlib.nullcontext()


def _timed(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ce-pairs", type=int, default=16)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--doc-tokens", type=int, default=256)
    ap.add_argument("--query-tokens", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from mice_bench.backbone import load_backbone, random_hf_model
    from mice_bench.backbones.prepack import prepack, unpack
    from mice_bench.executors import make_executor
    from mice_bench.executors.layers import embed, layer_forward
    from mice_bench.latency import flops as fm
    from mice_bench.latency.inputs import make_texts
    from mice_bench.latency.workloads import Workload
    from mice_bench.spec import parse

    bb = load_backbone("minilm-l12")
    query = make_texts(bb.tokenizer, 1, a.query_tokens, seed=7)[0]
    docs = make_texts(bb.tokenizer, a.depth, a.doc_tokens, seed=0)
    dims = fm.ModelDims.of(bb)

    def work(variant, n_docs):
        ex = make_executor(variant, bb, query_max_tokens=a.query_tokens)
        wl = Workload(ex, "rerank", n_docs, query, docs[:n_docs], True, False)
        wl.prepare(torch.device("cpu"))
        spec = parse(variant)
        fl = fm.pair_flops(spec, dims, a.query_tokens, a.doc_tokens, precompute=wl.precompute,
                           kv_cache=False, pairs_per_query=n_docs,
                           doc_vectors=wl.doc_vectors)["per_pair"] * n_docs
        return ex, wl, fl

    cb, wcb, f_cb = work("colbert", a.depth)
    be, wbe, f_be = work("biencoder", a.depth)
    _, wce, f_ce = work("ce", a.ce_pairs)
    tq = cb.tokenize_queries([query])
    qs = cb.encode_queries(tq)
    n = a.depth
    zeros, idx = torch.zeros(n, dtype=torch.long), torch.arange(n)
    hf = random_hf_model("minilm-l12", seed=0)
    hfb = getattr(hf, "bert", hf).eval()
    hf_in = dict(input_ids=tq.input_ids, attention_mask=tq.attention_mask.long(),
                 token_type_ids=tq.token_type_ids)
    M = tq.input_ids.numel()
    packs = prepack(bb)
    unpack(bb)

    def packed(fn, on):
        def run():
            bb.linear_packs = packs if on else None
            try:
                fn()
            finally:
                bb.linear_packs = None
        return run

    # the query encoding's products alone, and the same layer calls over fewer weights
    x_in = {k: torch.randn(M, k) for k in (bb.hidden_size, bb.intermediate_size)}
    x_290 = {k: torch.randn(290, k) for k in x_in}
    mats = [(w, b) for lw in bb.layers for w, b in
            ((lw.attn.wq, lw.attn.bq), (lw.attn.wk, lw.attn.bk), (lw.attn.wv, lw.attn.bv),
             (lw.attn.wo, lw.attn.bo), (lw.w_in, lw.b_in), (lw.w_out, lw.b_out))]
    f_mats = sum(2 * M * w.numel() for w, _ in mats)

    def products(xs, lin=F.linear):
        def run():
            for w, b in mats:
                lin(xs[w.shape[1]], w, b)
        return run

    ls = cb.sep_layers[0][1]
    x0 = embed(bb, tq.input_ids, tq.token_type_ids, tq.position_ids)

    def layers_over(k):
        order = [bb.layers[i % k] for i in range(bb.num_layers)]

        def run():
            x, memo = x0, {}
            for lw in order:
                x = layer_forward(bb, lw, ls, x, tq.segment_ids, memo=memo, pos=tq.position_ids)
        return run

    dv = wcb.ds.hidden
    a_ms, b_ms = dv.reshape(-1, dv.shape[-1]).contiguous(), torch.randn(dv.shape[-1], M)
    f_ms = 2 * a_ms.shape[0] * a_ms.shape[1] * M
    buf = {mb: torch.randn(mb * 2**18) for mb in (7, 85)}

    fns = {
        "colbert run": (packed(lambda: wcb.run(_NoTimer()), False), 10, f_cb),
        "colbert run, prepack": (packed(lambda: wcb.run(_NoTimer()), True), 10, f_cb),
        "biencoder run": (packed(lambda: wbe.run(_NoTimer()), False), 10, f_be),
        "biencoder run, prepack": (packed(lambda: wbe.run(_NoTimer()), True), 10, f_be),
        "ce run": (packed(lambda: wce.run(_NoTimer()), False), 1, f_ce),
        "ce run, prepack": (packed(lambda: wce.run(_NoTimer()), True), 1, f_ce),
        "  query tokenize": (lambda: cb.tokenize_queries([query]), 10, None),
        "  query encode": (lambda: cb.encode_queries(tq), 10, None),
        "  query encode, prepack": (packed(lambda: cb.encode_queries(tq), True), 10, None),
        "  colbert interaction": (lambda: cb.score_states(qs, zeros, wcb.ds, idx), 10, None),
        "  biencoder interaction": (lambda: be.score_states(qs, zeros, wbe.ds, idx), 10,
                                    None),
        "HF BertModel query forward": (lambda: hfb(**hf_in), 10, None),
        f"72 products, {M} rows": (products(x_in), 10, f_mats),
        f"72 products, {M} rows, prepack": (products(x_in, packs.linear), 10, f_mats),
        "72 products, 290 rows": (products(x_290), 2, f_mats * 290 / M),
        "12 layer calls, 1 layer's weights": (layers_over(1), 10, None),
        "12 layer calls, 2 layers' weights": (layers_over(2), 10, None),
        "12 layer calls, 4 layers' weights": (layers_over(4), 10, None),
        "12 layer calls, 12 layers' weights": (layers_over(bb.num_layers), 10, None),
        "MaxSim product alone": (lambda: a_ms @ b_ms, 20, f_ms),
        "read 7 MB": (lambda: buf[7].sum(), 20, None),
        "read 85 MB": (lambda: buf[85].sum(), 3, None),
    }
    res: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn, _, _ in fns.values():
            fn()
            fn()
        for _ in range(a.rounds):
            for k, (fn, reps, _) in fns.items():
                res[k].append(_timed(fn, reps))

    def ratio(x, y):
        return st.median([p / q for p, q in zip(res[x], res[y])])

    print(f"threads {a.threads}, {a.rounds} rounds; colbert {a.depth} x {a.doc_tokens} tokens, "
          f"ce on {a.ce_pairs} pairs; FLOP ratio ce/colbert per pair "
          f"{f_ce / a.ce_pairs / (f_cb / a.depth):.1f}")
    for k, (_, _, fl) in fns.items():
        med = st.median(res[k])
        rate = f"  {fl / med / 1e9:7.1f} GFLOP/s" if fl else ""
        extra = f"  {buf[int(k.split()[1])].numel() * 4 / med / 1e9:5.1f} GB/s" \
            if k.startswith("read") else ""
        print(f"{k:38s} {med * 1e3:9.3f} ms{rate}{extra}")
    for run, ce in (("colbert run", "ce run"), ("colbert run, prepack", "ce run, prepack"),
                    ("biencoder run", "ce run"), ("biencoder run, prepack", "ce run, prepack")):
        fl = f_cb if run.startswith("colbert") else f_be
        share = st.median([(fl / p) / (f_ce / q) for p, q in zip(res[run], res[ce])])
        print(f"share of the FLOP ratio, {run}: {share:.3f}")
    for x, y in (("  query encode", "colbert run"), ("  colbert interaction", "colbert run"),
                 ("  query tokenize", "colbert run"), ("colbert run", "HF BertModel query forward"),
                 ("  query encode", "HF BertModel query forward"),
                 ("  query encode, prepack", "  query encode"),
                 ("colbert run, prepack", "colbert run"), ("ce run, prepack", "ce run"),
                 ("  colbert interaction", "MaxSim product alone"),
                 ("12 layer calls, 1 layer's weights", "12 layer calls, 12 layers' weights")):
        print(f"{x.strip()} / {y.strip()}: {ratio(x, y):.3f}")
    parts = ("  query tokenize", "HF BertModel query forward", "MaxSim product alone")
    bound = st.median([w / sum(res[p][i] for p in parts)
                       for i, w in enumerate(res["colbert run"])])
    print(f"colbert run / (query tokenize + HF BertModel query forward + MaxSim product): "
          f"{bound:.3f}")


if __name__ == "__main__":
    main()
