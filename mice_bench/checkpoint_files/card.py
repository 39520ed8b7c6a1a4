"""Model cards: the ``README.md`` of a saved checkpoint, generated from what it records.

The card is written by :meth:`~mice_bench.model.InteractionModel.save_pretrained` and regenerated,
never edited by hand::

    python -m mice_bench.checkpoint_files.card CHECKPOINT_DIR [--results DIR ...]

Front matter (YAML, as the Hugging Face Hub reads it): ``library_name: mice-bench``,
``pipeline_tag: text-ranking``, ``base_model`` (a hub id only), ``tags`` (the variant, its
family, the other library that reads the checkpoint), ``datasets`` (the training data of the
training record), ``mice_bench`` (variant, family, training settings) and ``model-index``
only from ``mice-bench effectiveness`` result files of this checkpoint (``config.model`` is
this directory, the variant is the checkpoint's, written after its weights; the body names
each result's file). The body: what
the variant removes (the matrices of ``mice-bench variants show``), how to load it (mice-bench;
sentence-transformers or PyLate where they read it), training, and results with their source
files, or a line saying there are none.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Iterable

__all__ = ["render_card", "write_card", "find_results", "CARD_FILE"]

CARD_FILE = "README.md"
_HF_METRIC = {"nDCG@10": "ndcg_at_10", "RR@10": "mrr_at_10", "R@100": "recall_at_100",
              "R@1000": "recall_at_1000", "nDCG@20": "ndcg_at_20", "MAP": "map"}


def _hub_id(name: str | None) -> str | None:
    """``name`` when it looks like a Hugging Face hub id (``org/model``), else None."""
    if not name or os.path.isabs(name) or name.startswith((".", "~")) or Path(name).exists():
        return None
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) else None


def find_results(checkpoint: str | Path, variant: str,
                 dirs: Iterable[str | Path]) -> list[tuple[Path, dict]]:
    """Effectiveness result files (``schema: mice-bench/effectiveness``) under ``dirs`` whose
    ``config.model`` is ``checkpoint``, whose variant is ``variant`` and which were written
    after the checkpoint's weights: ``[(path, result), ...]`` sorted by path."""
    ck = Path(checkpoint).resolve()
    weights = ck / "model.safetensors"
    since = weights.stat().st_mtime if weights.exists() else 0.0
    out = []
    for d in dirs:
        for p in sorted(Path(d).rglob("*.json")):
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            if not isinstance(doc, dict) or doc.get("schema") != "mice-bench/effectiveness":
                continue
            cfg = doc.get("config") or {}
            model = cfg.get("model")
            if not model or cfg.get("variant") != variant:
                continue
            try:
                same = Path(str(model)).expanduser().resolve() == ck
            except OSError:
                same = False
            if same and p.stat().st_mtime >= since:
                out.append((p, doc))
    return out


def _front_matter(meta: dict, name: str, results: list[tuple[Path, dict]]) -> dict:
    from ..spec import parse

    spec = parse(meta["variant"])
    layouts = meta.get("layouts") or {}
    tags = ["mice-bench", "reranking", f"variant:{spec}", f"family:{spec.family}"]
    lib = layouts.get("library")
    if lib:
        tags += {"sentence-transformers CrossEncoder": ["sentence-transformers",
                                                        "cross-encoder"],
                 "sentence-transformers SentenceTransformer": ["sentence-transformers",
                                                               "sentence-similarity"],
                 "PyLate ColBERT": ["PyLate", "ColBERT"]}[lib]
    fm: dict = {"library_name": "mice-bench", "pipeline_tag": "text-ranking"}
    base = _hub_id(meta.get("base_model"))
    if base:
        fm["base_model"] = base
    fm["tags"] = tags
    trained = meta.get("trained") or {}
    if trained.get("data"):
        fm["datasets"] = [str(trained["data"])]
    mb = {"variant": str(spec), "family": spec.family,
          "base_model": meta.get("base_model"), "random_init": meta.get("random_init") or [],
          "mice_bench_version": meta.get("mice_bench_version")}
    if trained:
        mb["training"] = {k: v for k, v in trained.items() if k != "previous"}
    fm["mice_bench"] = mb
    if results:
        entries = []
        for p, doc in results:
            ds = doc.get("dataset") or {}
            metrics = [{"type": _HF_METRIC.get(m, m), "name": m, "value": round(float(v), 4)}
                       for m, v in (doc.get("aggregates") or {}).items()]
            # no "source": the Hub's parser wants a URL with it; the body names each file
            entries.append({"task": {"type": "text-ranking"},
                            "dataset": {"name": ds.get("name"), "type": ds.get("irds_id")},
                            "metrics": metrics})
        fm["model-index"] = [{"name": name, "results": entries}]
    return fm


def _loading(meta: dict, name: str) -> str:
    lib = (meta.get("layouts") or {}).get("library")
    v = meta["variant"]
    out = ["```python", "from mice_bench import Reranker", "",
           f'rr = Reranker.from_pretrained("{name}")   # variant {v}',
           'print(rr.predict([("what is a cat", "a cat is an animal")]))', "```"]
    if lib == "sentence-transformers CrossEncoder":
        out += ["", "sentence-transformers reads it as a `CrossEncoder`; `predict` is the "
                "activation of the mice-bench score "
                f"(`{meta['layouts']['settings']['activation_fn']}`):", "",
                "```python", "from sentence_transformers import CrossEncoder", "",
                f'ce = CrossEncoder("{name}")',
                'print(ce.predict([("what is a cat", "a cat is an animal")]))', "```"]
    elif lib == "sentence-transformers SentenceTransformer":
        out += ["", "sentence-transformers reads it as a `SentenceTransformer` (the same "
                "pooled embeddings; the cosine is the mice-bench score):", "",
                "```python", "from sentence_transformers import SentenceTransformer", "",
                f'st = SentenceTransformer("{name}")',
                'q, d = st.encode(["what is a cat", "a cat is an animal"])',
                "print(st.similarity(q, d))", "```"]
        note = meta["layouts"]["settings"].get("note")
        if note:
            out += ["", note + "."]
    elif lib == "PyLate ColBERT":
        out += ["", "PyLate reads it as a `ColBERT` model (the same token vectors; MaxSim is "
                "the mice-bench score):", "",
                "```python", "from pylate import models, rank", "",
                f'm = models.ColBERT("{name}")',
                'q = m.encode(["what is a cat"], is_query=True)',
                'd = m.encode([["a cat is an animal", "spiders"]], is_query=False)',
                'print(rank.rerank(documents_ids=[[0, 1]], queries_embeddings=q, '
                'documents_embeddings=d))', "```"]
    else:
        reason = (meta.get("layouts") or {}).get("reason")
        why = f": {reason}" if reason else "; load it with mice-bench as above"
        out += ["", f"No other library runs this variant{why}."]
    return "\n".join(out)


def _training(meta: dict) -> str:
    trained = meta.get("trained")
    if not trained:
        ri = meta.get("random_init") or []
        extra = f" Initialised randomly: {', '.join(ri)}." if ri else ""
        return "Not trained by mice-bench: the weights are the base model's." + extra
    rows = ["| setting | value |", "|---|---|"]
    for k, v in trained.items():
        if k == "previous":
            continue
        rows.append(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |")
    if trained.get("previous"):
        rows.append("| previous | an earlier training (see `mice_bench.json`) |")
    return "\n".join(rows)


def _results(results: list[tuple[Path, dict]]) -> str:
    if not results:
        return ("No measured results: no `mice-bench effectiveness` result file for this "
                "checkpoint yet. Regenerate this card after measuring (`python -m "
                "mice_bench.checkpoint_files.card DIR --results RESULTS_DIR`).")
    measures = sorted({m for _, d in results for m in (d.get("aggregates") or {})})
    rows = ["| dataset | first stage | " + " | ".join(measures) + " | source |",
            "|---" * (len(measures) + 3) + "|"]
    for p, d in results:
        agg = d.get("aggregates") or {}
        cfg = d.get("config") or {}
        rows.append(f"| {(d.get('dataset') or {}).get('name')} | {cfg.get('first_stage')} | "
                    + " | ".join(f"{agg[m]:.4f}" if m in agg else "–" for m in measures)
                    + f" | `{p}` |")
    return "\n".join(rows)


def render_card(meta: dict, name: str, results: list[tuple[Path, dict]] | None = None) -> str:
    """The card text of a checkpoint with ``mice_bench.json`` content ``meta``."""
    import yaml

    from ..spec import parse
    from ..viz import matrix_text

    results = results or []
    spec = parse(meta["variant"])
    layers = int(meta.get("num_layers") or 12)
    fm = yaml.safe_dump(_front_matter(meta, name, results), sort_keys=False,
                        allow_unicode=True)
    body = [f"# {name}", "",
            f"A `{spec}` re-ranker ({spec.description()}) built with mice-bench from "
            f"`{meta.get('base_model')}`. This card is generated from the checkpoint's "
            "`mice_bench.json` and result files; regenerate it, do not edit it.", "",
            "## What the variant removes", "",
            "Which segment attends to which in each layer (rows from, columns to; `.` is a "
            "removed interaction), as `mice-bench variants show` prints it:", "",
            "```", matrix_text(spec, layers), "```", "",
            "## Load it", "", _loading(meta, name), "",
            "## Training", "", _training(meta), "",
            "## Results", "", _results(results), ""]
    return f"---\n{fm}---\n\n" + "\n".join(body)


def write_card(directory: str | Path, meta: dict | None = None, name: str | None = None,
               results_dirs: Iterable[str | Path] = ()) -> Path:
    """Write ``README.md`` into a checkpoint directory (``meta``: its ``mice_bench.json``,
    read from the directory when None)."""
    d = Path(directory)
    if meta is None:
        meta = json.loads((d / "mice_bench.json").read_text())
    name = name or d.name
    if not meta.get("num_layers"):
        cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() \
            else {}
        meta = dict(meta, num_layers=cfg.get("num_hidden_layers"))
    results = find_results(d, meta["variant"], results_dirs) if results_dirs else []
    p = d / CARD_FILE
    p.write_text(render_card(meta, name, results))
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mice_bench.checkpoint_files.card",
                                 description="Regenerate a checkpoint's model card.")
    ap.add_argument("checkpoint")
    ap.add_argument("--results", action="append", default=[],
                    help="a folder of effectiveness result files (repeatable)")
    ap.add_argument("--name", default=None, help="the model's name in the card")
    a = ap.parse_args(argv)
    d = Path(a.checkpoint)
    if not (d / "mice_bench.json").is_file():
        import sys

        print(f"error: {d} is not a mice-bench checkpoint (no mice_bench.json)",
              file=sys.stderr)
        return 2
    for r in a.results:
        if not Path(r).is_dir():
            import sys

            print(f"error: --results {r} is not a folder", file=sys.stderr)
            return 2
    print(write_card(d, name=a.name, results_dirs=a.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
