"""Summarise a node run's folder (the run's work folder, or an unpacked archive)::

    python -m mice_bench.offline_node.summary DIR    # prints; writes DIR/summary.txt and .json

Reads ``steps.tsv``, ``env.txt``, ``tests/junit.xml`` (else the pytest log), ``tests/
sdpa-kernels.json``, ``latency/*.json`` (mice-bench latency results) and ``training/
study.json``. Reports ratios, not absolute times, against the paper's table (MiniLM-L12,
128 pairs x 512 tokens on the authors' GPU: CE 470 ms; MICE-l4+3 113 ms with precomputed
documents, 241 ms without; ColBERT 130 ms), and the two targets measured in the same run:

* T1: mice-l4+3 reaches >= 70 % of its FLOP-bound speedup over ce, bf16, rerank protocol;
* T2: ce reaches >= 50 % of the run's measured bf16 matmul peak at batch 128 x 512.

Standard library only (runs on the node and on the connected machine).
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PAPER_MS = {"ce": 470.0, "mice_pre": 113.0, "mice_nopre": 241.0, "colbert": 130.0}
PAPER_RATIOS = {
    "CE / MICE-l4+3 (precomputed docs)": PAPER_MS["ce"] / PAPER_MS["mice_pre"],
    "CE / MICE-l4+3 (no precompute)": PAPER_MS["ce"] / PAPER_MS["mice_nopre"],
    "CE / ColBERT": PAPER_MS["ce"] / PAPER_MS["colbert"],
    "MICE no-pre / pre": PAPER_MS["mice_nopre"] / PAPER_MS["mice_pre"],
}
T1_MIN, T2_MIN = 0.70, 0.50
MICE = "mice-l4+3"


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(doc: dict, variant: str, precompute: bool | None = None) -> list[dict]:
    out = []
    for r in doc.get("rows", []):
        if r.get("variant") != variant:
            continue
        if precompute is not None and bool(r.get("precompute_applied")) != precompute:
            continue
        out.append(r)
    return out


def _mean(r: dict, phase: str | None = None) -> float | None:
    try:
        if phase:
            return float(r["phases_s"][phase]["mean"])
        return float(r["latency_s"]["mean"])
    except (KeyError, TypeError, ValueError):
        return None


def _fmt(x, spec=".2f", none="-") -> str:
    return none if x is None else format(x, spec)


def tests_summary(work: Path) -> dict:
    res = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "failures": []}
    junit = work / "tests" / "junit.xml"
    if junit.exists():
        try:
            root = ET.parse(junit).getroot()
            for tc in root.iter("testcase"):
                name = tc.get("name", "?")
                if tc.find("failure") is not None:
                    res["failed"] += 1
                    msg = tc.find("failure").get("message", "")
                    res["failures"].append(f"{name}: {msg.splitlines()[0] if msg else ''}"[:200])
                elif tc.find("error") is not None:
                    res["errors"] += 1
                    res["failures"].append(f"{name}: error")
                elif tc.find("skipped") is not None:
                    res["skipped"] += 1
                else:
                    res["passed"] += 1
            res["source"] = "junit.xml"
            return res
        except ET.ParseError:
            pass
    logf = work / "logs" / "tests.log"
    if logf.exists():  # killed before the end: count the -v lines
        for line in logf.read_text(errors="replace").splitlines():
            m = re.match(r"^(tests/\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR)", line)
            if m:
                key = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped",
                       "ERROR": "errors"}[m.group(2)]
                res[key] += 1
                if key in ("failed", "errors"):
                    res["failures"].append(m.group(1))
        res["source"] = "tests.log (incomplete run)"
        return res
    res["source"] = None
    return res


def latency_summary(work: Path) -> dict:
    out: dict = {"files": {}, "paper": {}, "t1": [], "t2": []}
    for f in sorted((work / "latency").glob("*.json")):
        doc = _load(f)
        if not doc or "rows" not in doc:
            continue
        name = f.stem
        cfg = doc.get("config", {})
        peak = (doc.get("matmul_peak") or {}).get("flops_per_s")
        rows = []
        for r in doc["rows"]:
            p = r.get("point", {})
            rows.append({
                "variant": r.get("variant"), "pre": bool(r.get("precompute_applied")),
                "kv": bool(r.get("kv_cache_applied")), "compiled": bool(r.get("compiled")),
                "batch": p.get("batch_size"), "ms": (_mean(r) or 0) * 1e3,
                "speedup": r.get("speedup_vs_ce"), "flop_ratio": r.get("flop_ratio_vs_ce"),
                "peak_fraction": r.get("peak_fraction"), "oom_halvings": r.get("oom_halvings"),
                "notes": r.get("notes", [])})
        out["files"][name] = {"protocol": cfg.get("protocol"), "dtype": cfg.get("dtype"),
                              "compile": cfg.get("compile"), "kv_cache": cfg.get("kv_cache"),
                              "peak_tflops": peak / 1e12 if peak else None,
                              "device": (doc.get("environment") or {}).get("device_name"),
                              "rows": rows}
        if cfg.get("protocol") == "paper":
            ce = _rows(doc, "ce", False)
            mp, mn = _rows(doc, MICE, True), _rows(doc, MICE, False)
            cp, cn = _rows(doc, "colbert", True), _rows(doc, "colbert", False)
            t = lambda rs: _mean(rs[0]) if rs else None  # noqa: E731
            ce_t = t(ce)
            ratios = {}
            for label, num, den in (
                    ("CE / MICE-l4+3 (precomputed docs)", ce_t, t(mp)),
                    ("CE / MICE-l4+3 (no precompute)", ce_t, t(mn)),
                    ("CE / ColBERT", ce_t, t(cp) or t(cn)),
                    ("MICE no-pre / pre", t(mn), t(mp))):
                ratios[label] = num / den if num and den else None
            ratios["CE / ColBERT (no precompute)"] = ce_t / t(cn) if ce_t and t(cn) else None
            out["paper"][cfg.get("dtype", "?")] = ratios
        if cfg.get("protocol") == "rerank" and cfg.get("dtype") == "bf16":
            for r in _rows(doc, MICE, True):
                s, b = r.get("speedup_vs_ce"), r.get("flop_ratio_vs_ce")
                ce = _rows(doc, "ce")
                # compute only: ce's model time (interaction phase, tokenization excluded)
                # over MICE's query encoding + interaction
                comp = None
                if ce:
                    ce_pp = (_mean(ce[0], "interaction") or 0) / ce[0]["pairs_per_run"]
                    me = ((_mean(r, "interaction") or 0) + (_mean(r, "query_encode") or 0))
                    me_pp = me / r["pairs_per_run"]
                    comp = ce_pp / me_pp if me_pp > 0 else None
                out["t1"].append({
                    "file": name, "compiled": bool(r.get("compiled")),
                    "kv": bool(r.get("kv_cache_applied")), "speedup": s, "flop_bound": b,
                    "fraction": (s / b) if s and b else None,
                    "compute_speedup": comp,
                    "compute_fraction": (comp / b) if comp and b else None})
        if cfg.get("dtype") == "bf16" and peak:
            for r in _rows(doc, "ce"):
                p = r.get("point", {})
                inter = _mean(r, "interaction")
                fl = (r.get("flops") or {}).get("per_pair")
                pairs = r.get("pairs_per_run")
                comp = fl * pairs / inter / peak if inter and fl and pairs else None
                out["t2"].append({
                    "file": name, "batch": p.get("batch_size"),
                    "tokens": (p.get("query_tokens") or 0) + (p.get("doc_tokens_effective")
                                                              or p.get("doc_tokens") or 0),
                    "compiled": bool(r.get("compiled")),
                    "fraction_total": r.get("peak_fraction"), "fraction_model": comp})
    return out


def training_summary(work: Path) -> dict | None:
    return _load(work / "training" / "study.json")


def render(work: Path, s: dict) -> str:
    L: list[str] = []
    env = s.get("env") or {}
    L.append(f"== mice-bench offline-node run: {env.get('gpu', env.get('device', '?'))}, torch "
             f"{env.get('torch', '?')}, CUDA {env.get('cuda', '?')}")
    L.append("== steps")
    for st in s["steps"]:
        L.append(f"  {st['name']:<32} {st['status']:<8} {st['seconds']:>5}s")
    t = s["tests"]
    L.append(f"== GPU tests ({t.get('source')}): {t['passed']} passed, {t['failed']} failed, "
             f"{t['errors']} errors, {t['skipped']} skipped")
    for f in t["failures"][:12]:
        L.append(f"  FAIL {f}")
    k = s.get("sdpa") or {}
    if k:
        L.append("== SDPA kernels (variant dtype device: kernels)")
        for key in sorted(k):
            L.append(f"  {key:<32} {','.join(k[key].get('kernels', [])) or '-'}")
    lat = s["latency"]
    if lat["files"]:
        L.append("== latency (ms per run; speedup vs ce, FLOP bound in parentheses; % of the "
                 "run's matmul peak)")
        for name, f in lat["files"].items():
            L.append(f"  -- {name}: {f['protocol']} {f['dtype']}"
                     f"{' compile' if f['compile'] else ''}{' kv' if f['kv_cache'] else ''}; "
                     f"matmul peak {_fmt(f['peak_tflops'], '.3g')} TFLOP/s")
            for r in f["rows"]:
                sp = (f"{_fmt(r['speedup'], '.1f')}x ({_fmt(r['flop_ratio'], '.1f')}x)")
                pf = _fmt(r["peak_fraction"] * 100 if r["peak_fraction"] is not None else None,
                          ".0f")
                flags = ("pre " if r["pre"] else "") + ("kv " if r["kv"] else "") + \
                    ("comp" if r["compiled"] else "")
                L.append(f"     {r['variant']:<11} {flags:<13} {r['ms']:>9.2f} ms  {sp:>15}  "
                         f"{pf:>3}%" + (f"  OOM x{r['oom_halvings']}" if r["oom_halvings"]
                                       else ""))
    if lat["paper"]:
        L.append("== paper protocol: ratios vs the paper's table (authors' GPU)")
        dts = sorted(lat["paper"])
        L.append("  " + f"{'ratio':<36}{'paper':>8}" + "".join(f"{d:>8}" for d in dts))
        for label, ref in PAPER_RATIOS.items():
            L.append("  " + f"{label:<36}{ref:>8.2f}" + "".join(
                f"{_fmt(lat['paper'][d].get(label)):>8}" for d in dts))
        L.append("  " + f"{'CE / ColBERT (no precompute)':<36}{'':>8}" + "".join(
            f"{_fmt(lat['paper'][d].get('CE / ColBERT (no precompute)')):>8}" for d in dts))
    comp = [(n, r) for n, f in lat["files"].items() if f["compile"] for r in f["rows"]]
    if comp:
        eager = [f"{n}:{r['variant']}" for n, r in comp if not r["compiled"]]
        L.append("== --compile: " + ("every row compiled" if not eager else
                                      "ran eager (compile failed): " + ", ".join(eager)))
    L.append(f"== T1: {MICE} >= {T1_MIN:.0%} of its FLOP-bound speedup over ce (bf16, rerank)")
    if not lat["t1"]:
        L.append("  no measurement")
    for r in lat["t1"]:
        ok = r["fraction"] is not None and r["fraction"] >= T1_MIN
        L.append(f"  {r['file']:<24} speedup {_fmt(r['speedup'], '.1f')}x of "
                 f"{_fmt(r['flop_bound'], '.1f')}x = {_fmt(r['fraction'] and r['fraction'] * 100, '.0f')}%"
                 f"  [{'PASS' if ok else 'FAIL'}]   model time only: "
                 f"{_fmt(r['compute_speedup'], '.1f')}x = "
                 f"{_fmt(r['compute_fraction'] and r['compute_fraction'] * 100, '.0f')}%")
    L.append(f"== T2: ce >= {T2_MIN:.0%} of the run's bf16 matmul peak at batch 128 x 512")
    if not lat["t2"]:
        L.append("  no measurement")
    for r in lat["t2"]:
        ft, fm = r["fraction_total"], r["fraction_model"]
        ok = fm is not None and fm >= T2_MIN
        L.append(f"  {r['file']:<24} batch {r['batch']} x {r['tokens']} tok: whole run "
                 f"{_fmt(ft and ft * 100, '.0f')}% (tokenization included), model "
                 f"{_fmt(fm and fm * 100, '.0f')}%  [{'PASS' if ok else 'FAIL'}]")
    tr = s.get("training")
    L.append("== training mini-replication (NFCorpus train; TREC runs evaluated by "
             "offline-node collect)")
    if not tr:
        L.append("  not run")
    elif tr.get("skipped"):
        L.append(f"  skipped: {tr['skipped']}")
    else:
        cal = tr.get("calibration") or {}
        L.append(f"  {tr.get('steps', '?')} steps x {tr['hyper']['batch_size']} queries x "
                 f"{tr['hyper']['group_size']} docs, {tr['loss']}; calibration "
                 f"{_fmt(cal.get('median_step_s') and cal['median_step_s'] * 1e3, '.0f')} ms/step")
        for r in tr.get("rows", []):
            thr = r.get("throughput") or {}
            L.append(f"  {r['variant']:<12} {r.get('status', '?'):<16} "
                     f"{_fmt(thr.get('pairs_per_s'), '.0f')} pairs/s  loss "
                     f"{_fmt(r.get('loss_first'), '.3f')} -> {_fmt(r.get('loss_last'), '.3f')}"
                     f"  train {_fmt(r.get('train_wall_s'), '.0f')} s")
    runs = sorted(p.name for p in (work / "runs").glob("*.trec*") if not
                  p.name.startswith("probe."))
    if runs:
        L.append(f"  runs: {', '.join(runs)}")
    return "\n".join(L) + "\n"


def summarize(work: Path) -> dict:
    steps = []
    tsv = work / "steps.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                steps.append({"name": parts[0], "status": parts[1], "exit": parts[2],
                              "seconds": parts[3]})
    env = None
    envf = work / "env.txt"
    if envf.exists():
        txt = envf.read_text(errors="replace")
        m = re.search(r"\{.*\}", txt, re.S)
        if m:
            try:
                env = json.loads(m.group(0))
            except ValueError:
                env = None
    return {"env": env, "steps": steps, "tests": tests_summary(work),
            "sdpa": _load(work / "tests" / "sdpa-kernels.json"),
            "latency": latency_summary(work), "training": training_summary(work)}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[0])
    s = summarize(work)
    text = render(work, s)
    (work / "summary.json").write_text(json.dumps(s, indent=1, default=str) + "\n")
    (work / "summary.txt").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
