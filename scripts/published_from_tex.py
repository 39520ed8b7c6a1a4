"""Regenerate mice_bench/report/published/mice-paper.json from the MICE paper's LaTeX tables.

Usage (maintainers; needs a git clone of the public repository xpmir/mice)::

    python scripts/published_from_tex.py PATH/TO/xpmir-mice COMMIT \\
        mice_bench/report/published/mice-paper.json

Reads ``figures/table_eff.tex`` and ``figures/table{1,2,3}.tex`` at ``COMMIT`` (``git show``)
and writes one entry per number with its source ``xpmir/mice@COMMIT:file:line``.
"""
import json, re, subprocess, sys
REPO = sys.argv[1]
COMMIT = subprocess.run(["git", "-C", REPO, "rev-parse", sys.argv[2]], capture_output=True,
                        text=True, check=True).stdout.strip()
from mice_bench.data.registry import ABBREV
INV = {v: k for k, v in ABBREV.items()}

def show(path):
    return subprocess.run(["git", "-C", REPO, "show", f"{COMMIT}:{path}"], capture_output=True, text=True, check=True).stdout

def clean(label):
    s = label
    s = re.sub(r"\\cite\{[^}]*\}", "", s)
    s = re.sub(r"\\cref\{mask_step:(\d)\}", r"Mask\1", s)
    s = s.replace("$\\ell$", "ℓ").replace("\\ell", "ℓ").replace("$", "")
    s = s.replace("\\ft", " (fine-tuned)").replace("\\hf", " (HF)")
    s = re.sub(r"\\textbf\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\\multicolumn\{\d\}\{\w\}\{(.*)\}", r"\1", s)
    s = re.sub(r"[{}]", "", s)
    return re.sub(r"\s+", " ", s).strip()

def variant_of(label):
    l = label.replace(" (fine-tuned)", "").replace(" (HF)", "").strip()
    m = re.fullmatch(r"Mask([0-2])", l)
    if m: return f"mask{m.group(1)}"
    m = re.fullmatch(r"Mask3-ℓ ?(\d+)", l)
    if m: return f"mask3-l{m.group(1)}"
    m = re.fullmatch(r"MICE-ℓ ?(\d+)\+(\d+)", l) or re.fullmatch(r"MICE ℓ(\d+)\+(\d+)", l)
    if m: return f"mice-l{m.group(1)}+{m.group(2)}"
    m = re.fullmatch(r"MICE-ℓ ?(\d+)", l)
    if m: return f"mice-l{m.group(1)}"
    m = re.fullmatch(r"PreTTR \(ℓ ?(\d+)\)", l)
    if m: return f"prettr-l{m.group(1)}"
    if l in ("Cross-Encoder", "baseline", "Baseline"): return "ce"
    if l == "ColBERT": return "colbert"
    if l == "BM25": return "bm25"
    return None

def cell(text):
    t = text.strip()
    mark = "up" if "\\uparrow" in t else "down" if "\\downarrow" in t else None
    t = re.sub(r"\$\s*\\(up|down)arrow\s*\$", "", t).strip()
    if t in ("-", ""): return None, mark
    return float(t), mark

entries = []
def add(table, path, lineno, group, row, column, value, dataset=None, std=None, mark=None, unit=None, variant="auto"):
    e = {"table": table, "group": group, "row": row,
         "variant": variant_of(row) if variant == "auto" else variant,
         "column": column, "value": value}
    if dataset: e["dataset"] = dataset
    if std is not None: e["std"] = std
    if mark: e["mark"] = mark
    if unit: e["unit"] = unit
    e["source"] = f"xpmir/mice@{COMMIT[:7]}:{path}:{lineno}"
    entries.append(e)

def rows(path):
    for i, ln in enumerate(show(path).splitlines(), 1):
        s = ln.strip()
        if not s or s.startswith("%"): continue
        yield i, s

# efficiency
path = "figures/table_eff.tex"; sec = None
for i, s in rows(path):
    if "With docs precompute" in s: sec = "with docs precompute"; continue
    if "Without docs precompute" in s: sec = "without docs precompute"; continue
    if sec and s.endswith("\\\\") and "&" in s:
        c = [x.strip() for x in s[:-2].split("&")]
        label = clean(c[0])
        m = re.search(r"([\d.]+)\s*\\pm\s*([\d.]+)", c[2])
        g = dict(group=sec)
        add("efficiency", path, i, sec, label, "params", c[1])
        add("efficiency", path, i, sec, label, "latency_ms", float(m.group(1)), std=float(m.group(2)), unit="ms")
        add("efficiency", path, i, sec, label, "docs_per_s", float(c[3]), unit="docs/s")
        add("efficiency", path, i, sec, label, "peak_mem_mb", float(c[4].replace("MB", "").strip()), unit="MB")

def eff_table(name, path, first_cols):
    group, cols = "", None
    for i, s in rows(path):
        m = re.search(r"\\rotatebox\{90\}\{\\textbf\{([^}]*)\}\}", s)
        if m: group = m.group(1); continue
        if ("Re-Ranker" in s or "Re-ranker" in s or "\\textbf{Model}" in s) and "MSM" in s:
            hdr = [x.strip() for x in s.rstrip("\\").split("&")]
            cols = hdr[first_cols:]; continue
        if cols is None or not s.endswith("\\\\") or "&" not in s or s.startswith("\\multicolumn{3}"): continue
        parts = [x.strip() for x in s[:-2].split("&")]
        if name == "table3":
            label, vals = clean(parts[0]), parts[1:]
        elif parts[0].startswith("\\multicolumn{2}"):
            label, vals, g = clean(parts[0]), parts[1:], ""
        elif first_cols == 2:
            label, vals, g = clean(parts[1]), parts[2:], group
            if not label:   # BM25 row of table2: "& BM25 &"
                continue
        else:
            label, vals, g = clean(parts[0]), parts[1:], ""
        if name == "table3":
            f = clean(vals[0]); vals = vals[1:]
            mm = re.fullmatch(r"MICE\((.*)\)", label)
            base = mm.group(1) if mm else label
            if mm: label = f"MICE-{f}"
            elif label != "BM25": label = "baseline"
            g = base if label != "BM25" else ""
        if len(vals) != len(cols): raise SystemExit(f"{path}:{i}: {len(vals)} values for {len(cols)} columns")
        for col, v in zip(cols, vals):
            val, mark = cell(v)
            ds = INV.get(col)
            cname = {"ID": "avg-id", "OOD": "avg-ood", "Avg": "avg-id"}.get(col, col)
            add(name, path, i, g, label, cname, val, dataset=ds, mark=mark, unit="nDCG@10 x 100")

eff_table("table1", "figures/table1.tex", 2)
eff_table("table2", "figures/table2.tex", 2)
eff_table("table3", "figures/table3.tex", 2)
doc = {"schema": "mice-bench/published", "schema_version": 1,
       "title": "MICE paper (published)",
       "repository": "xpmir/mice", "commit": COMMIT,
       "note": ("The paper's tables as published in the public repository's figures/*.tex "
                "(the paper version b4dc361 is not in that repository's public history; the "
                "figures were read at its initial release, commit " + COMMIT[:7] + "). "
                "Effectiveness: mean nDCG@10 x 100 over 5 seeds, re-ranking BM25's top 1000; "
                "up/down: the paper's significance marks against its fine-tuned baseline. "
                "Efficiency: the paper's protocol (one call on (query, document) pairs), on "
                "the paper's hardware."),
       "tables": {"efficiency": "figures/table_eff.tex: Efficiency comparison of retrieval models",
                  "table1": "figures/table1.tex: masking experiment (Table 1)",
                  "table2": "figures/table2.tex: towards the final architecture (Table 2)",
                  "table3": "figures/table3.tex: scaling MICE to bigger models (Table 3)"},
       "entries": entries}
head = {k: v for k, v in doc.items() if k != "entries"}
text = json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "entries": [\n'
text += ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in entries) + "\n ]\n}\n"
json.loads(text)
open(sys.argv[3], "w").write(text)
print(len(entries), "entries from", COMMIT)
