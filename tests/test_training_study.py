"""Training studies (`[training]` study files, `ablations/mini-replication.toml`): the schema
and its sizes, the plan (`--dry-run`), what is skipped when results or checkpoints exist, the
derivation of the steps from measured pairs/s, the summary (systems as rows, Holm), the
report's study table and figures from synthetic result files, and (with ../shared/data) a
tiny end-to-end run that skips everything the second time."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.ablations.training_study import (derive_student_steps, derive_teacher_steps,
                                                 plan_training_study, study_summary)
from mice_bench.cli import app
from mice_bench.study import StudyError, load_study

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "ablations" / "mini-replication.toml"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MICE_BENCH_CACHE", str(tmp_path / "cache"))


def _plan(study, results, **kw):
    return plan_training_study(study, results, base_model=kw.pop("base", "minilm-l6"),
                               log=lambda s: None, **kw)


def _state(tasks) -> dict[str, bool]:
    return {t.label.split(" (")[0]: t.done for t in tasks}


# --------------------------------------------------------------------------- schema
def test_mini_replication_parses_at_every_size():
    smoke = load_study(STUDY)                      # default_size
    assert smoke.size == "smoke" and set(smoke.sizes) == {"smoke", "gpu"}
    tr = smoke.training
    assert tr.teacher.variant == "ce" and tr.teacher.loss == "lce"
    assert tr.data == "beir/nfcorpus/train" and tr.options["first_stage"] == "bm25"
    labels = [r.label for r in tr.students]
    assert len(labels) == 14 and len(set(labels)) == 14
    assert {"ce", "mask2", "colbert", "mask3-l2", "prettr-l4", "mice-l1+2", "mice-l4+2",
            "mice-l2+1", "mice-l2+3"} <= set(labels)
    ft = [r for r in tr.students if r.init == "teacher"]
    assert [(r.label, r.variant) for r in ft] == [("mice-l2+2-from-teacher", "mice-l2+2")]
    assert all(r.loss == "marginmse" and r.group_size in (None, 2) for r in tr.students)
    assert all(isinstance(r.steps, int) and r.steps <= 5 for r in tr.systems)
    assert smoke.effectiveness.datasets == ["nfcorpus", "scifact", "dl19", "dl20"]
    assert smoke.effectiveness.options["in_domain"] == ["nfcorpus"]
    assert smoke.effectiveness.options["limit_queries"] <= 5
    assert smoke.latency[0].options["device"] == "cpu"
    gpu = load_study(STUDY, "gpu")
    assert all(r.steps == "auto" for r in gpu.training.systems)
    assert gpu.auto.budget_s == 480 and gpu.training.auto_steps
    assert "limit_queries" not in gpu.effectiveness.options
    assert gpu.effectiveness.options["depth"] == 100
    assert "limit_queries" not in gpu.training.options
    # sizes never leak into each other
    assert smoke.training.options["doc_max_tokens"] < gpu.training.options["doc_max_tokens"]


BASE = '''variants = ["ce", "mice-l1+1"]
[training]
base = "minilm-l6"
data = "x.jsonl"
steps = 2
[effectiveness]
datasets = ["dl19"]
'''


@pytest.mark.parametrize("extra,key", [
    ("[training.teacher]\nloss = 'hinge'\n", "'training.teacher.loss'"),
    ("[training.teacher]\nsteps = 'fast'\n", "'training.teacher.steps'"),
    ("[training.teacher]\nvariants = ['ce']\n", "'training.teacher.variants'"),
    ("[[training.students]]\ninit = 'random'\n", "'training.students[0].init'"),
    ("[[training.students]]\ngroup_size = 4\n", "'training.students[0].group_size'"),
    ("[[training.students]]\nvariants = ['mice-l9+9x']\n", "'training.students[0].variants"),
    ("[[training.students]]\n[[training.students]]\n", "trained twice"),
    ("[sizes.small.training]\nstepz = 1\n", "'sizes.small.training.stepz'"),
    ("[sizes.small.training.students]\ninit = 'x'\n", "'sizes.small.training.students.init'"),
    ("[sizes.small.latency]\nname = 'x'\n", "'sizes.small.latency.name'"),
    ("[sizes.small]\ncolour = 1\n", "'sizes.small.colour'"),
    ("[auto]\nbudget_s = -1\n", "'auto.budget_s'"),
])
def test_malformed_training_study_names_the_key(tmp_path, extra, key):
    text = BASE + extra
    if "[training." in extra or "[[training." in extra:   # tables of [training] go after it
        text = BASE.replace("[effectiveness]", extra + "[effectiveness]")
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(StudyError) as e:
        load_study(p)
    assert key in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("text,needle", [
    (BASE.replace('datasets = ["dl19"]', 'datasets = ["dl19"]\nmodels = ["m"]'),
     "'effectiveness.models'"),
    (BASE.replace('base = "minilm-l6"\n', ""), "'training.base'"),
    (BASE.replace("steps = 2\n", ""), "'training.teacher.steps'"),
    ('default_size = "big"\n' + BASE, "'default_size'"),
    (BASE.replace('[effectiveness]\ndatasets = ["dl19"]\n', "[[latency]]\nname = 'a'\n"),
     "'effectiveness'"),
])
def test_training_study_required_keys(tmp_path, text, needle):
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(StudyError, match=needle.replace("[", r"\[")):
        load_study(p)


def test_unknown_size_lists_the_sizes(tmp_path):
    with pytest.raises(StudyError, match="unknown size 'huge'; valid: smoke, gpu"):
        load_study(STUDY, "huge")
    r = CliRunner().invoke(app, ["run", str(STUDY), "--size", "huge", "--dry-run"])
    assert r.exit_code == 2 and "huge" in r.output


# --------------------------------------------------------------------------- plan
def test_dry_run_prints_the_plan(tmp_path):
    r = CliRunner().invoke(app, ["run", str(STUDY), "--dry-run", "--results",
                                 str(tmp_path / "res"), "--base-model", "minilm-l6"])
    assert r.exit_code == 0, r.output
    out = "".join(r.output.split())           # the console wraps long lines anywhere
    assert "sizesmoke" in out and "33task(s),33torun" in out
    for needle in ("[to run] latency workload 'rerank'", "[to run] train teacher (ce, lce",
                   "[to run] teacher scores", "[to run] evaluate teacher",
                   "train mice-l2+2-from-teacher (mice-l2+2, marginmse, from the teacher",
                   "--loss marginmse", "--steps 3", "[to run] summary"):
        assert "".join(needle.split()) in out, needle
    assert not (tmp_path / "res").exists()          # a dry run writes nothing
    r = CliRunner().invoke(app, ["run", str(STUDY), "--size", "gpu", "--dry-run", "--results",
                                 str(tmp_path / "res"), "--base-model", "minilm-l6"])
    assert r.exit_code == 0, r.output
    out = "".join(r.output.split())
    assert "calibratetheteacher" in out and "calibratethestudents" in out
    assert "--steps<auto>" in out and "--dtypebf16" in out
    assert "mini-replication/gpu" in out


def _result(root: Path, label: str | None, variant: str, dataset: str, qids, seed: int,
            layers: int = 6, hidden: int = 384, fs: str = "bm25") -> None:
    """A synthetic effectiveness result file (as `mice-bench effectiveness` writes it)."""
    from mice_bench.effectiveness.result import EffectivenessResult
    from mice_bench.effectiveness.resultfiles import result_path

    rng = random.Random(f"{label}-{variant}-{dataset}-{seed}")
    pq = {m: {q: rng.random() for q in qids} for m in ("nDCG@10", "RR@10")}
    agg = {m: sum(v.values()) / len(v) for m, v in pq.items()}
    model = None if label is None else {"label": label, "num_layers": layers,
                                        "hidden_size": hidden}
    tag = "bm25" if fs == "bm25" else "run-x"
    path = result_path(root / "effectiveness", dataset, tag, variant, label)
    EffectivenessResult(
        config={"dataset": dataset, "variant": variant, "model_label": label,
                "first_stage": fs if fs == "bm25" else "run:x.txt"},
        dataset={"name": dataset, "group": "ood"}, aggregates=agg, per_query=pq,
        num_candidates=10, timing={}, run_file="x.trec", model=model).save(path)


def _fake_results(study, results: Path, labels: list[str] | None = None) -> Path:
    root = study.results_root(results)
    qids = [f"q{i}" for i in range(12)]
    for ds in study.effectiveness.datasets:
        fs = "run" if ds.startswith("dl") else "bm25"
        _result(root, None, "bm25", ds, qids, 0, fs=fs)
        for r in study.training.systems:
            if labels is None or r.label in labels:
                _result(root, r.label, r.variant, ds, qids, 1, fs=fs)
    return root


def test_skip_logic(tmp_path):
    st = load_study(STUDY)
    res = tmp_path / "results"
    s = _state(_plan(st, res))
    assert not any(s.values())                     # nothing exists: everything runs
    # every system evaluated: no training, no evaluation; only the summary is missing
    _fake_results(st, res)
    tasks = _plan(st, res, only="effectiveness")
    s = _state(tasks)
    assert [k for k, done in s.items() if not done] == ["summary: paired tests vs the "
                                                         "baseline system, Holm; study.json, README"]
    assert all(t.existing for t in tasks if t.kind == "effectiveness")
    # one student's results removed: it trains (from the teacher, which trains again for its
    # scores), the others stay skipped
    root = st.results_root(res)
    for f in (root / "effectiveness").rglob("mice-l2+1/*.json"):
        f.unlink()
    s = _state(_plan(st, res, only="effectiveness"))
    todo = {k for k, done in s.items() if not done}
    assert todo == {"train teacher", "teacher scores of the training pairs", "evaluate teacher",
                    "train mice-l2+1", "evaluate mice-l2+1",
                    "summary: paired tests vs the baseline system, Holm; study.json, README"}
    # its checkpoint exists (and the teacher's does not): only its evaluation runs
    from mice_bench.ablations.training_study import Context

    ctx = Context(st, res, "minilm-l6")
    ck = ctx.output(next(r for r in st.training.students if r.label == "mice-l2+1"))
    ck.mkdir(parents=True)
    (ck / "training.json").write_text("{}")
    (ck / "mice_bench.json").write_text("{}")
    s = _state(_plan(st, res, only="effectiveness"))
    assert {k for k, done in s.items() if not done} == {
        "evaluate mice-l2+1",
        "summary: paired tests vs the baseline system, Holm; study.json, README"}
    # --overwrite redoes everything
    assert not any(_state(_plan(st, res, overwrite=True, only="effectiveness")).values())


def test_calibration_file_sets_auto_steps(tmp_path):
    st = load_study(STUDY, "gpu")
    res = tmp_path / "results"
    root = st.results_root(res)
    root.mkdir(parents=True)
    steps = {r.label: (400 if r.role == "teacher" else 250) for r in st.training.systems}
    (root / "calibration.json").write_text(json.dumps({"steps": steps}))
    tasks = _plan(st, res)
    cal = [t for t in tasks if t.kind == "calibrate"]
    assert cal and all(t.done for t in cal)
    args = {t.label.split(" (")[0]: t.args for t in tasks if t.kind == "train"}
    a = args["train teacher"]
    assert a[a.index("--steps") + 1] == "400"
    a = args["train colbert"]
    assert a[a.index("--steps") + 1] == "250"


# --------------------------------------------------------------------------- sizing
def test_step_derivation():
    steps, how = derive_teacher_steps(480, 0.15, 256, 2000.0, 20, 5000, 10)
    assert steps == 560 and "562" in how               # 0.15 * 480 * 2000 / 256 = 562.5
    assert derive_teacher_steps(480, 0.15, 256, 1.0, 20, 5000, 10)[0] == 20   # minimum
    assert derive_teacher_steps(480, 0.15, 2, 1e6, 20, 5000, 10)[0] == 5000   # maximum
    rows = [{"pairs_per_step": 128, "pairs_per_s": 4000.0, "overhead_s": 2.0},
            {"pairs_per_step": 128, "pairs_per_s": 8000.0, "overhead_s": 2.0}]
    # (300 - 2 * (2 + 10)) / (0.032 + 0.016) = 5750 -> max 5000; with less time left:
    steps, how = derive_student_steps(300, rows, 10.0, 20, 5000, 10)
    assert steps == 5000
    steps, how = derive_student_steps(100, rows, 10.0, 20, 5000, 10)
    assert steps == 1580 and "1583" in how             # (100 - 24) / 0.048 = 1583.3
    assert derive_student_steps(10, rows, 10.0, 20, 5000, 10)[0] == 20


# --------------------------------------------------------------------------- summary, report
def test_summary_rows_are_systems_with_holm(tmp_path):
    st = load_study(STUDY)
    root = _fake_results(st, tmp_path / "results")
    summary, cfg = study_summary(st, root)
    rows = [r.variant for r in summary.rows]
    assert rows[0] == "bm25" and rows[1] == "teacher" and "mice-l2+2-from-teacher" in rows
    assert len(rows) == 16 and summary.baseline == "ce" and summary.correction == "holm"
    assert {d.name: d.group for d in summary.datasets} == {
        "nfcorpus": "id", "scifact": "ood", "dl19": "ood", "dl20": "ood"}
    # every (system but ce) x dataset is one comparison of the family
    assert summary.comparisons["nDCG@10"] == 15 * 4
    assert cfg["baseline_system"] == "ce"
    assert {s["label"]: s["init"] for s in cfg["systems"]}["mice-l2+2-from-teacher"] == \
        "teacher"


def _latency_file(root: Path, variants: list[str], layers=6, hidden=384) -> None:
    """A synthetic rerank latency result for the study's variants."""
    src = REPO / "tests" / "fixtures" / "report" / "results" / "latency" / "rerank-d64.json"
    from mice_bench.results import SCHEMA_VERSIONS

    doc = json.loads(src.read_text())
    doc["schema_version"] = SCHEMA_VERSIONS["latency"]   # current names: no legacy renaming
    proto = doc["rows"][0]
    new = []
    for i, v in enumerate(variants):
        r = json.loads(json.dumps(proto))
        r["variant"] = v
        r["throughput_pairs_per_s"] = 50.0 if v == "ce" else 100.0 * (i + 1)
        r["notes"] = []
        new.append(r)
    doc["rows"] = new
    doc["config"]["variants"] = variants
    doc["model"].update(num_layers=layers, hidden_size=hidden)
    (root / "latency").mkdir(parents=True, exist_ok=True)
    (root / "latency" / "x.json").write_text(json.dumps(doc))


def _write_summary(st, root: Path) -> None:
    from mice_bench.ablations.training_study import study_summary

    from mice_bench.evaluation.table import write_summary

    s, cfg = study_summary(st, root)
    write_summary(s, root / "summary", cfg, {})
    sys_ = [{"label": r.label, "train_pairs_per_s": 12.5, "steps": 3}
            for r in st.training.systems]
    (root / "study.json").write_text(json.dumps({"systems": sys_}))


def test_report_study_table_and_figures(tmp_path):
    from mice_bench.report import build_report
    from mice_bench.report.latency_io import load_latency

    st = load_study(STUDY)
    res = tmp_path / "results"
    root = _fake_results(st, res)
    _write_summary(st, root)
    abl = tmp_path / "ablations"
    abl.mkdir()
    (abl / STUDY.name).write_text(STUDY.read_text())
    # no latency: the table and the merge-layer figure, the Pareto figure skipped with a reason
    rep = build_report(res, tmp_path / "out", abl)
    stem = "study-mini-replication-smoke"
    assert f"tables/{stem}.md" in rep.files
    assert f"figures/{stem}-ndcg-vs-merge-layer.png" in rep.files
    assert any("effectiveness vs throughput" in s and "latency" in s for s in rep.skipped)
    md = (tmp_path / "out" / "tables" / f"{stem}.md").read_text()
    assert "mice-l2+2-from-teacher" in md and "teacher" in md and "12.5" in md
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Training studies" in readme and "Size `smoke`" in readme
    # the other size has no results: noted, nothing made up
    # with latency of the same architecture: the Pareto figure, ce on it
    _latency_file(root, [v for v in st.variants])
    _, rows = load_latency(root)
    if not rows or (rows[0].run.num_layers, rows[0].run.hidden_size) != (6, 384):
        pytest.skip("latency fixture could not be re-labelled to the study's architecture")
    rep = build_report(res, tmp_path / "out", abl)
    assert any(f.startswith(f"figures/{stem}-pareto-") for f in rep.files), rep.skipped
    again = build_report(res, tmp_path / "out2", abl)
    for f in rep.files:
        if f.endswith((".png", ".md")):
            assert (tmp_path / "out" / f).read_bytes() == (tmp_path / "out2" / f).read_bytes(), f
    assert again.files == rep.files


def test_report_without_study_results_notes_it(tmp_path):
    from mice_bench.report import build_report

    abl = tmp_path / "ablations"
    abl.mkdir()
    (abl / STUDY.name).write_text(STUDY.read_text())
    (tmp_path / "results").mkdir()
    rep = build_report(tmp_path / "results", tmp_path / "out", abl)
    assert any("study mini-replication" in s and "no results" in s for s in rep.skipped)
    assert not any(f.startswith("tables/study-mini") for f in rep.files)


# --------------------------------------------------------------------------- end to end
def _run_cli(*args: str, env: dict) -> "subprocess.CompletedProcess":
    """`mice-bench` in a fresh process: ir_datasets fixes its home folder when first
    imported, so an in-process run would not see this test's IR_DATASETS_HOME."""
    import os
    import subprocess
    import sys

    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false", **env}
    return subprocess.run([sys.executable, "-m", "mice_bench.cli", *args], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.data
@pytest.mark.slow
def test_tiny_training_study_runs_then_skips(shared_data, tmp_path, monkeypatch):
    """A tiny random BERT as the base, a JSONL training set, DL19 (2 queries x 4 BM25
    candidates): latency, teacher, teacher scores, 2 students (one from the teacher), their
    evaluations, the summary, the report; a second run skips everything."""
    import subprocess

    from mice_bench.latency.testing import make_tiny_model
    from mice_bench.report import build_report

    home = tmp_path / "irds"
    subprocess.run(["bash", str(shared_data / "stage-ir-datasets.sh"), str(home)], check=True,
                   capture_output=True)
    env = {"IR_DATASETS_HOME": str(home), "MICE_BENCH_SHARED_DATA": str(shared_data),
           "MICE_BENCH_CACHE": str(tmp_path / "cache")}
    base = make_tiny_model(tmp_path / "base", num_layers=3, hidden_size=32)
    lines = []
    for i in range(6):
        lines.append(json.dumps({"query": f"what is topic {i}", "positive": f"topic {i} is x",
                                 "negatives": [f"other {j} thing" for j in range(3)]}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    study = tmp_path / "ablations" / "tiny.toml"
    study.parent.mkdir()
    study.write_text(f'''name = "tiny"
default_size = "s"
variants = ["ce", "mice-l1+1"]
[training]
base = "{base}"
data = "{tmp_path / 'train.jsonl'}"
val_queries = 0
query_max_tokens = 8
doc_max_tokens = 16
device = "cpu"
steps = 2
batch_size = 2
eval_batch_size = 8
[training.teacher]
group_size = 3
[[training.students]]
[[training.students]]
variants = ["mice-l1+1"]
init = "teacher"
[effectiveness]
datasets = ["dl19"]
in_domain = ["dl19"]
first_stage = "dl19=run:{{shared_data}}/trec-dl-candidates/bm25/trec_results_{{dataset}}.txt"
docs = "dl19={{shared_data}}/trec-dl-candidates/{{dataset}}.docs.jsonl"
measures = ["nDCG@10", "RR@10"]
limit_queries = 2
depth = 4
device = "cpu"
query_max_tokens = 8
doc_max_tokens = 16
[[latency]]
name = "rr"
model = "{base}"
batch_size = 2
query_tokens = 8
doc_tokens = 16
depth = 4
warmup = 0
runs = 1
min_seconds = 0.0
device = "cpu"
[sizes.s]
description = "tiny smoke size"
''')
    res = tmp_path / "results"
    r = _run_cli("run", str(study), "--results", str(res), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    root = res / "tiny" / "s"
    for f in ("summary.json", "summary.md", "study.json", "README.md",
              "latency/tiny-rr.json"):
        assert (root / f).is_file(), f
    logs = sorted(p.name for p in (res / "training").glob("*.json"))
    assert logs == ["tiny-s-ce.json", "tiny-s-mice-l1+1-from-teacher.json",
                    "tiny-s-mice-l1+1.json", "tiny-s-teacher.json"]
    rec = json.loads((root / "study.json").read_text())
    assert all(s["train_pairs_per_s"] for s in rec["systems"])
    assert [s["steps"] for s in rec["systems"]] == [2, 2, 2, 2]
    summary = json.loads((root / "summary.json").read_text())["summary"]
    assert [x["variant"] for x in summary["rows"]] == ["bm25", "teacher", "ce", "mice-l1+1",
                                                       "mice-l1+1-from-teacher"]
    assert "smoke-size numbers" in (root / "README.md").read_text()
    before = {p: p.read_bytes() for p in (root / "effectiveness").rglob("*.json")}
    # everything exists: the second run trains and evaluates nothing
    r = _run_cli("run", str(study), "--results", str(res), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0torun" in "".join(r.stdout.split())
    assert before == {p: p.read_bytes() for p in (root / "effectiveness").rglob("*.json")}
    rep = build_report(res, tmp_path / "report", study.parent)
    assert "tables/study-tiny-s.md" in rep.files
    assert any(f.startswith("figures/study-tiny-s-pareto-") for f in rep.files), rep.skipped


@pytest.mark.data
def test_auto_steps_are_derived_and_recorded(shared_data, tmp_path, monkeypatch):
    """steps = "auto" on a tiny model: both calibrations run, calibration.json holds the
    measured pairs/s and the derivations, every student gets the same steps."""
    import subprocess

    from mice_bench.latency.testing import make_tiny_model

    home = tmp_path / "irds"
    subprocess.run(["bash", str(shared_data / "stage-ir-datasets.sh"), str(home)], check=True,
                   capture_output=True)
    env = {"IR_DATASETS_HOME": str(home), "MICE_BENCH_SHARED_DATA": str(shared_data),
           "MICE_BENCH_CACHE": str(tmp_path / "cache")}
    base = make_tiny_model(tmp_path / "base", num_layers=2, hidden_size=16)
    lines = [json.dumps({"query": f"what is topic {i}", "positive": f"topic {i} is x",
                         "negatives": [f"other {j} thing" for j in range(3)]})
             for i in range(6)]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    study = tmp_path / "auto.toml"
    study.write_text(f'''name = "auto"
variants = ["ce", "mice-l1+1"]
[training]
base = "{base}"
data = "{tmp_path / 'train.jsonl'}"
val_queries = 0
query_max_tokens = 8
doc_max_tokens = 16
device = "cpu"
steps = "auto"
batch_size = 2
eval_batch_size = 8
[training.teacher]
group_size = 3
[effectiveness]
datasets = ["dl19"]
first_stage = "dl19=run:{{shared_data}}/trec-dl-candidates/bm25/trec_results_{{dataset}}.txt"
docs = "dl19={{shared_data}}/trec-dl-candidates/{{dataset}}.docs.jsonl"
measures = ["nDCG@3"]
limit_queries = 1
depth = 3
device = "cpu"
query_max_tokens = 8
doc_max_tokens = 16
[auto]
budget_s = 600
teacher_share = 0.01
calib_steps = 4
min_steps = 2
max_steps = 6
round_to = 2
''')
    res = tmp_path / "results"
    r = _run_cli("run", str(study), "--results", str(res), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    cal = json.loads((res / "auto" / "calibration.json").read_text())
    assert cal["teacher"]["pairs_per_s"] > 0 and "pairs per step" in cal["teacher"]["derivation"]
    assert cal["teacher_eval_s"] >= 0 and cal["students"]["rows"]
    assert {row["label"] for row in cal["students"]["rows"]} == {"ce", "mice-l1+1"}
    assert 2 <= cal["steps"]["ce"] == cal["steps"]["mice-l1+1"] <= 6
    logs = {p.stem: json.loads(p.read_text()) for p in (res / "training").glob("*.json")}
    assert logs["auto-ce"]["config"]["steps"] == cal["steps"]["ce"]
    assert logs["auto-teacher"]["config"]["steps"] == cal["steps"]["teacher"]
    assert "How the steps were derived" in (res / "auto" / "README.md").read_text()
