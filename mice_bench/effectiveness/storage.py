"""Storage against effectiveness: bytes of stored document states per document vs nDCG@10.

Every result of a split-first variant records ``timing.doc_store`` (``store``: fp32 | fp16 |
int8, ``content``: ``states`` (split-layer hidden states) or ``vectors`` (a late-interaction
head's projected unit vectors, a ColBERT index; absent in older files: states),
``bytes_per_doc``: bytes on disk of the document-state shards per document,
``tokens_per_doc``). :func:`storage_rows` collects them from a results folder and
:func:`storage_table` renders one Markdown table: a row per (model, variant, store), for each
dataset nDCG@10 and KiB per document, plus the ratio to the same variant's fp32 store. The
MICE paper does not measure this trade-off; ``colbert`` and ``mice-*`` are its subject, other
split-first variants (``biencoder``, ``prettr-*[qlen=..]``) are shown when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..results import ResultFileError
from .result import EffectivenessResult

__all__ = ["StorageRow", "storage_rows", "storage_table"]

STORE_ORDER = {"fp32": 0, "fp16": 1, "int8": 2}


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


def storage_rows(results_dir: str | Path, measure: str = "nDCG@10") -> list[StorageRow]:
    """One row per result file that recorded its document store (newest file wins when two
    measure the same model, variant, store, dataset and first stage)."""
    root = Path(results_dir)
    best: dict[tuple, StorageRow] = {}
    for p in sorted(root.rglob("*.json")):
        try:
            res = EffectivenessResult.load(p)
        except (ResultFileError, ValueError, KeyError, OSError):
            continue                     # summaries, other kinds, unreadable files
        ds = res.timing.get("doc_store") if isinstance(res.timing, dict) else None
        if not isinstance(ds, dict) or not ds.get("bytes_per_doc"):
            continue
        row = StorageRow(model=res.model_label or "", variant=res.variant,
                         store=str(ds.get("store", "?")), dataset=res.dataset_name,
                         first_stage=res.first_stage, ndcg10=res.aggregates.get(measure),
                         bytes_per_doc=float(ds["bytes_per_doc"]),
                         tokens_per_doc=ds.get("tokens_per_doc"), created=res.created,
                         file=p.relative_to(root).as_posix(),
                         content=str(ds.get("content", "states")))
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
            vals += ["–" if r.ndcg10 is None else f"{r.ndcg10:.4f}",
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
