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

from ..results import result_kind
from ..evaluation.fidelity import ms_marco_bytes, paired_difference, score_fidelity
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
                                          or (res.model or {}).get("random_weights")))
        key = (row.model, row.variant, row.store, row.content, row.dataset, row.first_stage)
        if key not in best or row.created > best[key].created:
            best[key] = row
    return list(best.values())


def storage_table(rows: list[StorageRow], measure: str = "nDCG@10") -> str | None:
    """Markdown: rows (model, variant, store), per dataset ``measure`` and KiB/doc (× fp32)."""
    if not rows:
        return None
    datasets = sorted({(r.dataset, r.first_stage) for r in rows})
    systems = sorted({(r.model, r.variant, r.store, r.content) for r in rows},
                     key=lambda s: (s[0], s[1], s[3], STORE_ORDER.get(s[2], 9), s[2]))
    cell = {(r.model, r.variant, r.store, r.content, r.dataset, r.first_stage): r
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
            ref = cell.get((m, v, "fp32", c, d, fs))
            ratio = f" ({r.bytes_per_doc / ref.bytes_per_doc:.2f}×)" if ref and s != "fp32" \
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
    return {(r.model, r.variant, r.content, r.dataset, r.first_stage): r
            for r in rows if r.store == "fp32"}


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
        if r.dataset in MS_MARCO_DATASETS and r.tokens_per_doc:
            tok.setdefault((r.model, r.variant, r.content), []).append(float(r.tokens_per_doc))
    out = []
    order = sorted(rows, key=lambda r: (r.dataset, r.first_stage, r.model, r.variant, r.content,
                                        STORE_ORDER.get(r.store, 9), r.store))
    for r in order:
        ref = refs.get((r.model, r.variant, r.content, r.dataset, r.first_stage))
        diff = fid = None
        if ref is not None and ref is not r:
            if ref.per_query is not None and r.per_query is not None:
                diff = paired_difference(ref.per_query, r.per_query)
            a, b = run(ref.run_path), run(r.run_path)
            if a is not None and b is not None:
                fid = score_fidelity(a, b)
        t = tok.get((r.model, r.variant, r.content))
        mm = None
        if t and r.bytes_per_token:
            mm = ms_marco_bytes(r.bytes_per_token, sum(t) / len(t), r.codec_bytes) / 2**30
        out.append({"row": r, "diff": diff, "fidelity": fid, "ms_marco_gib": mm})
    return out


def _ndcg(r: StorageRow) -> str:
    """The measure, marked when the model's head is random (only fidelity counts then)."""
    if r.ndcg10 is None:
        return "–"
    return f"{r.ndcg10:.4f} (random head)" if r.random_head else f"{r.ndcg10:.4f}"


def _f(x, fmt: str = "{:.4f}") -> str:
    return "–" if x is None else fmt.format(x)


def fidelity_table(rows: list[StorageRow], measure: str = "nDCG@10") -> str | None:
    """Markdown: one line per (dataset, model, variant, content, store); see
    :func:`fidelity_rows`."""
    if not rows:
        return None
    head = ["dataset", "model", "variant", "content", "store", measure, "Δ vs fp32 [95 % CI]",
            "p (t-test)", "τ (mean / min)", "top-10 overlap", "err / spread (max / median)", "B/token",
            "KiB/doc", "codec KiB (centroids)", "MS MARCO GiB (computed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fr in fidelity_rows(rows, measure):
        r, d, f = fr["row"], fr["diff"], fr["fidelity"]
        ci = "–" if d is None else (f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, "
                                    f"{d['ci95'][1]:+.4f}]")
        tau = "–" if f is None or f["tau_mean"] is None else \
            f"{f['tau_mean']:.4f} / {f['tau_min']:.4f}"
        codec = "–" if not r.codec_bytes else f"{r.codec_bytes / 1024:.1f} ({r.centroids})"
        lines.append("| " + " | ".join([
            r.dataset, r.model, r.variant, r.content, r.store, _ndcg(r), ci,
            "–" if d is None else f"{d['p']:.3g}", tau,
            "–" if f is None else _f(f["top10_overlap"], "{:.3f}"),
            "–" if f is None else f"{f['max_err_over_spread']:.4f} / "
                                  f"{f['median_err_over_spread']:.4f}",
            _f(r.bytes_per_token, "{:.1f}"), f"{r.bytes_per_doc / 1024:.1f}", codec,
            _f(fr["ms_marco_gib"], "{:.1f}")]) + " |")
    lines += ["", f"Every store against the fp32 store of the same model, variant and dataset "
              f"(the same candidates): Δ: mean per-query difference of {measure} with its 95 % "
              "confidence interval (Student's t) and the two-sided paired t-test; τ: Kendall's "
              "tau-b of the candidates' scores per query (mean and smallest over queries); "
              "top-10 overlap: share of the fp32 top 10 kept; err / spread: per query the "
              "largest score difference divided by that query's fp32 score range, the largest "
              "over queries and the median. B/token and KiB/doc: "
              "shard bytes on disk (the codec file of a residual store, its centroid table, is "
              "not in them: it is the codec KiB column, once per store). MS MARCO GiB is "
              "computed, not measured: B/token × the mean tokens per passage of the same "
              "variant on DL19/DL20 (MS MARCO passages) × 8,841,823 passages + the codec file."]
    return "\n".join(lines) + "\n"


def tradeoff_series(rows: list[StorageRow]) -> dict[str, list[tuple[float, float, str]]]:
    """The figure's data: per ``"model variant (content) dataset"``, the points
    ``(bytes per token, nDCG@10, store)`` sorted by bytes per token (rows without either
    value, and models with a random head, whose nDCG@10 means nothing, are left out)."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    for r in rows:
        if r.bytes_per_token is None or r.ndcg10 is None or r.random_head:
            continue
        key = f"{r.model} {r.variant} ({r.content}) {r.dataset}"
        out.setdefault(key, []).append((float(r.bytes_per_token), float(r.ndcg10), r.store))
    return {k: sorted(v) for k, v in sorted(out.items())}
