"""Storage against effectiveness: bytes of stored document states vs nDCG@10.

Every result of a split-first variant records ``timing.doc_store`` (``store``: fp32 | fp16 |
int8 | residual1 | residual2 | residual4, ``content``: ``states`` (split-layer hidden states),
``vectors`` (a late-interaction head's unit vectors, a ColBERT index) or ``pooled`` (a
bi-encoder's one vector per document; absent in older files: states), ``bytes_per_doc``:
bytes on disk of the document-state shards per document, ``tokens_per_doc``,
``bytes_per_token`` and, for residual stores, ``codec_bytes`` (the centroid table and bucket
weights, once per store)). :func:`storage_rows` collects them from a results folder;
:func:`storage_table` renders a row per (model, variant, store), for each dataset nDCG@10 and
KiB per document with the ratio to the same variant's fp32 store; :func:`fidelity_table`
compares every store with the fp32 store of the same variant and dataset (paired nDCG@10
difference with its 95 % CI and t-test, Kendall tau, top-10 overlap, largest score error
relative to the spread: :mod:`.fidelity`) and computes the size of an MS MARCO passage store;
:func:`tradeoff_series` is the data of the nDCG@10-vs-bytes-per-token figure. The MICE paper
does not measure this trade-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..results import ResultFileError, result_kind
from ..evaluation.fidelity import (MS_MARCO_PASSAGES, ms_marco_bytes, paired_difference,
                                   score_fidelity)
from ..store.codecs import colbert_centroids
from .result import KIND, EffectivenessResult

__all__ = ["StorageRow", "storage_rows", "storage_table", "fidelity_rows", "fidelity_table",
           "tradeoff_series"]

STORE_ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "residual4": 3, "residual2": 4,
               "residual1": 5}
#: datasets whose documents are MS MARCO passages (their tokens per passage size MS MARCO)
MS_MARCO_DATASETS = ("dl19", "dl20")


@dataclass(frozen=True)
class StorageRow:
    model: str
    variant: str
    store: str
    dataset: str
    first_stage: str
    ndcg10: float | None
    bytes_per_doc: float
    tokens_per_doc: float | None
    created: str
    file: str
    content: str = "states"
    bytes_per_token: float | None = None
    codec_bytes: float = 0.0
    centroids: int | None = None
    per_query: dict | None = None        # measure per query
    run_path: str | None = None          # the TREC run (scores) next to the result file
    random_head: bool = False            # random weights or a seeded random head: no quality
    pool_factor: int = 1                 # stored tokens pooled to ~1/N per document
    depth: int | None = None             # candidates per query
    orig_tokens_per_doc: float | None = None      # before pooling
    bytes_per_orig_token: float | None = None     # shards + the codec's share, per original
    decode_ms_per_query: float | None = None      # reading the candidates' states, per query
    rerank_ms_per_query: float | None = None      # scoring from them, per query

    @property
    def setting(self) -> str:
        """The store and its pool factor, as the tables name them."""
        return self.store if self.pool_factor == 1 else f"{self.store} pool {self.pool_factor}"

    @property
    def shard_bytes_per_orig_token(self) -> float | None:
        """Shard bytes per original token (the codec file not included)."""
        t = self.orig_tokens_per_doc or self.tokens_per_doc
        return self.bytes_per_doc / float(t) if t else None


def storage_rows(results_dir: str | Path, measure: str = "nDCG@10") -> list[StorageRow]:
    """One row per result file that recorded its document store (newest file wins when two
    measure the same model, variant, store, dataset and first stage)."""
    root = Path(results_dir)
    best: dict[tuple, StorageRow] = {}
    for p in sorted(root.rglob("*.json")):
        if result_kind(p) != KIND:
            continue                     # summaries and other kinds
        res = EffectivenessResult.load(p)     # an edited file is named (ResultFileError)
        ds = res.timing.get("doc_store")
        if ds is None or not ds.get("bytes_per_doc"):
            continue
        bpt = ds.get("bytes_per_token")
        if bpt is None and ds.get("tokens_per_doc"):
            bpt = float(ds["bytes_per_doc"]) / float(ds["tokens_per_doc"])
        t = res.timing
        nq = t.get("queries_scored") or 0
        load_q = t.get("doc_load_s") / nq if nq and t.get("doc_load_s") is not None else None
        row = StorageRow(model=res.model_label or "", variant=res.variant,
                         store=str(ds.get("store", "?")), dataset=res.dataset_name,
                         first_stage=res.first_stage, ndcg10=res.aggregates.get(measure),
                         bytes_per_doc=float(ds["bytes_per_doc"]),
                         tokens_per_doc=ds.get("tokens_per_doc"), created=res.created,
                         file=p.relative_to(root).as_posix(),
                         content=str(ds.get("content", "states")),
                         bytes_per_token=bpt, codec_bytes=float(ds.get("codec_bytes") or 0),
                         centroids=ds.get("centroids"),
                         per_query=res.per_query.get(measure),
                         run_path=str(p.parent / res.run_file) if res.run_file else None,
                         random_head=bool((res.model or {}).get("classifier_random")
                                          or (res.model or {}).get("random_weights")),
                         pool_factor=int(ds.get("pool_factor") or 1),
                         depth=res.config.get("depth"),
                         orig_tokens_per_doc=ds.get("orig_tokens_per_doc"),
                         bytes_per_orig_token=ds.get("bytes_per_orig_token"),
                         decode_ms_per_query=None if load_q is None else 1e3 * load_q,
                         rerank_ms_per_query=1e3 * t["scoring_s"] / nq
                         if nq and t.get("scoring_s") is not None else None)
        key = (row.model, row.variant, row.store, row.pool_factor, row.content, row.dataset,
               row.first_stage, row.depth)
        if key not in best or row.created > best[key].created:
            best[key] = row
    return list(best.values())


def storage_table(rows: list[StorageRow], measure: str = "nDCG@10") -> str | None:
    """Markdown: rows (model, variant, store), per dataset ``measure`` and KiB/doc (× fp32)."""
    if not rows:
        return None
    datasets = sorted({(r.dataset, r.first_stage) for r in rows})
    # a store name carries its pool factor and, where runs differ in it, the depth
    depths = len({r.depth for r in rows}) > 1
    name = {id(r): r.setting + (f" @{r.depth}" if depths and r.depth else "") for r in rows}
    systems = sorted({(r.model, r.variant, name[id(r)], r.content) for r in rows},
                     key=lambda s: (s[0], s[1], s[3], STORE_ORDER.get(s[2].split()[0], 9),
                                    s[2]))
    cell = {(r.model, r.variant, name[id(r)], r.content, r.dataset, r.first_stage): r
            for r in rows}
    multi_fs = len({d for d, _ in datasets}) < len(datasets)
    head = ["model", "variant", "store", "content"]
    for d, fs in datasets:
        name = f"{d} ({fs})" if multi_fs else d
        head += [f"{name} {measure}", f"{name} KiB/doc", f"{name} tokens/doc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, v, s, c in systems:
        vals = [m, v, s, c]
        for d, fs in datasets:
            r = cell.get((m, v, s, c, d, fs))
            if r is None:
                vals += ["–", "–", "–"]
                continue
            ref = _ref_of(rows).get((m, v, c, d, fs, r.depth))
            ratio = f" ({r.bytes_per_doc / ref.bytes_per_doc:.2f}×)" if ref and ref is not r \
                else ""
            vals += [_ndcg(r),
                     f"{r.bytes_per_doc / 1024:.1f}{ratio}",
                     "–" if r.tokens_per_doc is None else f"{float(r.tokens_per_doc):.0f}"]
        lines.append("| " + " | ".join(vals) + " |")
    lines += ["", f"KiB/doc: bytes on disk of the stored document states per document (the "
              f"real tokens only, safetensors shards); content: `states` are the split-layer "
              f"hidden states (H-dim), `vectors` a late-interaction head's projected unit "
              f"vectors (a ColBERT index: 128-d for `colbert`); in parentheses the ratio to "
              f"the fp32 store of the same variant and content; tokens/doc: stored tokens per "
              f"document (each variant's document length: a longer one costs more). {measure} "
              "of re-ranking with states read back from that store (scores are computed in "
              "fp32)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- fidelity
def _ref_of(rows: list[StorageRow]) -> dict[tuple, StorageRow]:
    """The unpooled fp32 row of each (model, variant, content, dataset, first stage, depth)."""
    return {(r.model, r.variant, r.content, r.dataset, r.first_stage, r.depth): r
            for r in rows if r.store == "fp32" and r.pool_factor == 1}


def _read_run(path: str | None):
    from ..data.firststage import read_trec_run

    if path is None or not Path(path).exists():
        return None
    return read_trec_run(path)


def fidelity_rows(rows: list[StorageRow], measure: str = "nDCG@10") -> list[dict]:
    """Each row against the fp32 store of the same model, variant, content and dataset:
    ``{"row", "diff" (paired_difference of the per-query measure), "fidelity"
    (score_fidelity of the runs), "ms_marco_gib"}``; rows without an fp32 reference keep
    None there. ``ms_marco_gib``: computed from the row's bytes per token and the mean
    tokens per passage of the same variant's MS MARCO-passage datasets (DL19/DL20) rows."""
    refs = _ref_of(rows)
    runs: dict[str, object] = {}

    def run(path):
        if path not in runs:
            runs[path] = _read_run(path)
        return runs[path]

    tok: dict[tuple, list[float]] = {}
    for r in rows:
        t = r.orig_tokens_per_doc or r.tokens_per_doc
        if r.dataset in MS_MARCO_DATASETS and t:
            tok.setdefault((r.model, r.variant, r.content), []).append(float(t))
    out = []
    order = sorted(rows, key=lambda r: (r.dataset, r.first_stage, r.depth or 0, r.model,
                                        r.variant, r.content, STORE_ORDER.get(r.store, 9),
                                        r.store, r.pool_factor))
    for r in order:
        ref = refs.get((r.model, r.variant, r.content, r.dataset, r.first_stage, r.depth))
        diff = fid = None
        if ref is not None and ref is not r:
            if ref.per_query is not None and r.per_query is not None:
                diff = paired_difference(ref.per_query, r.per_query)
            a, b = run(ref.run_path), run(r.run_path)
            if a is not None and b is not None:
                fid = score_fidelity(a, b)
        t = tok.get((r.model, r.variant, r.content))
        mm = None
        per = r.shard_bytes_per_orig_token
        if t and per:
            # the codec an MS MARCO store would train: ColBERTv2's centroids for its tokens
            codec = ms_marco_codec_bytes(r, sum(t) / len(t)) if r.codec_bytes else 0.0
            mm = ms_marco_bytes(per, sum(t) / len(t), codec) / 2**30
        out.append({"row": r, "diff": diff, "fidelity": fid, "ms_marco_gib": mm})
    return out


def ms_marco_codec_bytes(r: StorageRow, tokens_per_passage: float) -> float:
    """The codec file of a residual store of every MS MARCO passage: this row's codec with
    its centroid table grown to ColBERTv2's number for the collection's stored tokens
    (computed: the per-centroid bytes of this row's codec x the rule's count)."""
    if not r.codec_bytes or not r.centroids:
        return float(r.codec_bytes or 0)
    stored = tokens_per_passage * MS_MARCO_PASSAGES / r.pool_factor
    return r.codec_bytes / r.centroids * colbert_centroids(int(stored))


def _ndcg(r: StorageRow) -> str:
    """The measure, marked when the model's head is random (only fidelity counts then)."""
    if r.ndcg10 is None:
        return "–"
    return f"{r.ndcg10:.4f} (random head)" if r.random_head else f"{r.ndcg10:.4f}"


def _f(x, fmt: str = "{:.4f}") -> str:
    return "–" if x is None else fmt.format(x)


#: ColBERTv2's published MS MARCO passage index sizes (128-d vectors; Santhanam et al.,
#: "ColBERTv2: Effective and Efficient Retrieval via Lightweight Late Interaction", NAACL 2022)
COLBERTV2_PUBLISHED_GIB = {"ColBERT (16-bit vectors)": 154, "ColBERTv2 2-bit": 25,
                           "ColBERTv2 1-bit": 16}


def fidelity_table(rows: list[StorageRow], measure: str = "nDCG@10") -> str | None:
    """Markdown: one line per (dataset, depth, model, variant, content, store, pool factor);
    see :func:`fidelity_rows`."""
    if not rows:
        return None
    head = ["dataset", "depth", "model", "variant", "content", "store", measure,
            "Δ vs fp32 [95 % CI]", "p (t-test)", "τ (mean / min)", "top-10 overlap",
            "err / spread (max / median)", "B/orig. token", "B/stored token", "KiB/doc",
            "codec KiB (centroids)", "decode ms/q", "rerank ms/q", "MS MARCO GiB (computed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fr in fidelity_rows(rows, measure):
        r, d, f = fr["row"], fr["diff"], fr["fidelity"]
        ci = "–" if d is None else (f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, "
                                    f"{d['ci95'][1]:+.4f}]")
        tau = "–" if f is None or f["tau_mean"] is None else \
            f"{f['tau_mean']:.4f} / {f['tau_min']:.4f}"
        codec = "–" if not r.codec_bytes else f"{r.codec_bytes / 1024:.1f} ({r.centroids})"
        orig = r.bytes_per_orig_token
        if orig is None and r.tokens_per_doc:     # files from before pooling: one token each
            orig = r.bytes_per_token
        lines.append("| " + " | ".join([
            r.dataset, _f(r.depth, "{}"), r.model, r.variant, r.content, r.setting, _ndcg(r),
            ci, "–" if d is None else f"{d['p']:.3g}", tau,
            "–" if f is None else _f(f["top10_overlap"], "{:.3f}"),
            "–" if f is None else f"{f['max_err_over_spread']:.4f} / "
                                  f"{f['median_err_over_spread']:.4f}",
            _f(orig, "{:.1f}"), _f(r.bytes_per_token, "{:.1f}"),
            f"{r.bytes_per_doc / 1024:.1f}", codec,
            _f(r.decode_ms_per_query, "{:.2f}"), _f(r.rerank_ms_per_query, "{:.1f}"),
            _f(fr["ms_marco_gib"], "{:.1f}")]) + " |")
    published = "; ".join(f"{k} {v} GiB" for k, v in COLBERTV2_PUBLISHED_GIB.items())
    lines += ["", f"Every store against the unpooled fp32 store of the same model, variant, "
              f"dataset and candidates: Δ: mean per-query difference of {measure} with its "
              "95 % confidence interval (Student's t) and the two-sided paired t-test; τ: "
              "Kendall's tau-b of the candidates' scores per query (mean and smallest over "
              "queries); top-10 overlap: share of the fp32 top 10 kept; err / spread: per "
              "query the largest score difference divided by that query's fp32 score range, "
              "the largest over queries and the median. store: the format and its pool factor "
              "(each document's tokens pooled to about 1/N by hierarchical clustering, each "
              "cluster's mean stored). B/orig. token: bytes on disk (shards and the codec "
              "file's share) per **original** token, before pooling (result files made "
              "before pooling existed: shard bytes only); B/stored token: shard "
              "bytes per stored token; codec KiB: the codec file (centroid table, cut-offs, "
              "weights), once per store. decode ms/q: reading and decoding the candidates' "
              "states per query; rerank ms/q: scoring per query (query encoding and "
              "MaxSim / interaction layers), both on the machine of the run. MS MARCO GiB is "
              "computed, not measured: shard bytes per original token × the mean original "
              "tokens per passage of the same variant on DL19/DL20 (MS MARCO passages) × "
              "8,841,823 passages, plus a codec with ColBERTv2's number of centroids for that "
              f"many stored tokens. Published for comparison (128-d vectors, Santhanam et al., "
              f"NAACL 2022): {published}."]
    return "\n".join(lines) + "\n"


def tradeoff_series(rows: list[StorageRow]) -> dict[str, list[tuple[float, float, str]]]:
    """The figure's data: per ``"model variant (content) dataset"`` (and depth, where runs
    differ in it), the points ``(bytes per original token, nDCG@10, store and pool factor)``
    sorted by bytes (rows without either value, and models with a random head, whose
    nDCG@10 means nothing, are left out)."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    depths = len({r.depth for r in rows}) > 1
    for r in rows:
        b = r.bytes_per_orig_token or r.bytes_per_token
        if b is None or r.ndcg10 is None or r.random_head:
            continue
        key = f"{r.model} {r.variant} ({r.content}) {r.dataset}" + \
            (f" top-{r.depth}" if depths and r.depth else "")
        out.setdefault(key, []).append((float(b), float(r.ndcg10), r.setting))
    return {k: sorted(v) for k, v in sorted(out.items())}
