"""Quality of a precision against fp32: nDCG@10 kept and Kendall's tau of the scores.

    python scripts/dtype_quality.py REF_DIR OTHER_DIR [OTHER_DIR ...] --output OUT.json

Each folder is an ``--output-dir`` of ``mice-bench effectiveness`` (one per ``--dtype``, the
same datasets, first stages, models and variants). For every result file of ``REF_DIR``
(``<dataset>/<first stage>/<model>/<variant>.json``) and the same file under each
``OTHER_DIR``: nDCG@10 of both, the ratio (other / ref), the paired difference over queries,
and :func:`mice_bench.evaluation.fidelity.score_fidelity` of the two runs (Kendall's tau-b per
query over the same candidates, its mean and minimum, top-10 overlap). Writes ``OUT.json`` and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from mice_bench.evaluation.fidelity import paired_difference, score_fidelity


def read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            q, _, d, _, s, _ = line.split()
            run.setdefault(q, {})[d] = float(s)
    return run


def compare(ref_dir: Path, other_dir: Path) -> list[dict]:
    rows = []
    for ref_json in sorted(ref_dir.rglob("*.json")):
        rel = ref_json.relative_to(ref_dir)
        if len(rel.parts) != 4:          # <dataset>/<first stage>/<model>/<variant>.json
            continue
        other_json = other_dir / rel
        if not other_json.exists():
            continue
        a, b = json.loads(ref_json.read_text()), json.loads(other_json.read_text())
        ra = read_run(ref_json.with_name(a["run_file"]))
        rb = read_run(other_json.with_name(b["run_file"]))
        na, nb = a["aggregates"]["nDCG@10"], b["aggregates"]["nDCG@10"]
        rows.append({
            "dataset": rel.parts[0], "first_stage": rel.parts[1], "model": rel.parts[2],
            "variant": rel.parts[3].removesuffix(".json"),
            "dtype": b["environment"].get("dtype"), "ref_dtype": a["environment"].get("dtype"),
            "queries": len(a["per_query"]["nDCG@10"]),
            "ndcg10_ref": na, "ndcg10": nb, "ndcg10_kept": nb / na if na else None,
            "ndcg10_paired": paired_difference(a["per_query"]["nDCG@10"],
                                               b["per_query"]["nDCG@10"]),
            "fidelity": score_fidelity(ra, rb),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref", type=Path)
    ap.add_argument("others", type=Path, nargs="+")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    from mice_bench.results import environment

    rows = [r for o in args.others for r in compare(args.ref, o)]
    doc = {"reference": str(args.ref), "others": [str(o) for o in args.others],
           "environment": environment(device="cpu"), "rows": rows}
    args.output.write_text(json.dumps(doc, indent=1) + "\n")
    print("| dataset | variant | dtype | queries | nDCG@10 fp32 | nDCG@10 | kept | "
          "tau mean | tau min | top-10 overlap |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f = r["fidelity"]
        print(f"| {r['dataset']} | {r['variant']} | {r['dtype']} | {r['queries']} | "
              f"{r['ndcg10_ref']:.4f} | {r['ndcg10']:.4f} | {100 * r['ndcg10_kept']:.1f} % | "
              f"{f['tau_mean']:.4f} | {f['tau_min']:.4f} | {f['top10_overlap']:.3f} |")


if __name__ == "__main__":
    main()
