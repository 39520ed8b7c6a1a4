"""Study files (`ablations/*.toml`) and `mice-bench run`: parsing, errors naming the key,
planning against existing results, and a tiny real study that skips existing results."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.ablations.runner import plan_study
from mice_bench.study import StudyError, load_study
from mice_bench.cli import app

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "tests" / "fixtures" / "report" / "results"


def _study(tmp: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_shipped_studies_parse():
    got = {p.stem: load_study(p) for p in sorted((REPO / "ablations").glob("*.toml"))}
    assert {"masking", "mice", "merge-layer", "latency-paper", "latency-scaling"} <= set(got)
    assert got["masking"].variants == ["bm25", "ce", "mask0", "mask1", "mask2", "mask3-l4"]
    assert got["mice"].variants == ["bm25", "ce", "mask3-l4", "mice-l4+8", "mice-l4+3",
                                    "colbert"]
    assert [v for v in got["merge-layer"].variants if v.startswith("mice")] == \
        [f"mice-l{m}+3" for m in range(1, 9)]
    assert "msmarco-dev" in got["mice"].effectiveness.datasets
    assert len(got["mice"].effectiveness.datasets) == 16
    paper = {w.name: w for w in got["latency-paper"].latency}
    assert paper["paper"].options["protocol"] == "paper"
    assert paper["paper"].options["batch_size"] == [128]
    assert paper["paper"].options["doc_tokens"] == [512]
    scaling = got["latency-scaling"]
    doclen = next(w for w in scaling.latency if w.name == "doclen")
    assert doclen.options["doc_tokens"][0] == 64 and len(doclen.variants) >= 8
    assert sorted(w.options.get("depth") for w in scaling.latency
                  if w.name.startswith("depth-") and "cpu" not in w.name) == [10, 100, 1000]
    for st in got.values():   # every workload resolves to a valid latency configuration
        plan_study(st, RESULTS, only="latency")


@pytest.mark.parametrize("text,key", [
    ('variants = ["ce"]\nbogus = 1\n[[latency]]\nname = "a"\n', "'bogus'"),
    ('variants = ["ce", "nope"]\n[[latency]]\nname = "a"\n', "'variants[1]'"),
    ('variants = "ce"\n[[latency]]\nname = "a"\n', "'variants'"),
    ('description = "x"\n[[latency]]\nname = "a"\n', "'variants'"),
    ('variants = ["ce"]\n', "'effectiveness' or 'latency'"),
    ('variants = ["ce"]\n[[latency]]\nname = "a"\nbatchsize = 3\n', "'latency[0].batchsize'"),
    ('variants = ["ce"]\n[[latency]]\nname = "a"\ndepth = "x"\n', "'latency[0].depth'"),
    ('variants = ["ce"]\n[[latency]]\nname = "a"\nprotocol = "fast"\n',
     "'latency[0].protocol'"),
    ('variants = ["ce"]\n[[latency]]\nname = "a"\ndoc_tokens = [0]\n',
     "'latency[0].doc_tokens'"),
    ('variants = ["ce"]\n[[latency]]\nprotocol = "paper"\n', "'latency[0].name'"),
    ('variants = ["ce"]\n[[latency]]\nname = "a"\n[[latency]]\nname = "a"\n',
     "'latency[1].name'"),
    ('variants = ["ce"]\n[effectiveness]\ndatasets = ["scifact"]\n', "'effectiveness.models'"),
    ('variants = ["ce"]\n[effectiveness]\nmodels = ["m"]\ndatasets = ["nowhere"]\n',
     "'effectiveness.datasets[0]'"),
    ('variants = ["ce"]\n[effectiveness]\nmodels = ["m"]\ndatasets = ["scifact"]\n'
     'colour = 1\n', "'effectiveness.colour'"),
    ('variants = ["ce"]\n[effectiveness]\nmodels = ["m"]\ndatasets = ["scifact"]\n'
     'first_stage = "dense"\n', "'effectiveness.first_stage'"),
    ('variants = [\n', "not valid TOML"),
])
def test_malformed_study_names_the_key(tmp_path, text, key):
    p = _study(tmp_path, text)
    with pytest.raises(StudyError) as e:
        load_study(p)
    assert key in str(e.value) and str(p) in str(e.value)
    r = CliRunner().invoke(app, ["run", str(p), "--dry-run"])
    assert r.exit_code == 2
    assert key.strip("'") in r.output.replace("\n", "")


def test_unknown_study_file_exit_2(tmp_path):
    r = CliRunner().invoke(app, ["run", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "missing.toml" in r.output and "does not exist" in r.output


def test_latency_plan_invalid_values_exit_2(tmp_path):
    p = _study(tmp_path, 'variants = ["ce"]\n[[latency]]\nname = "a"\ndtype = "fp16"\n'
                         'device = "cpu"\nkv_cache = true\nprecompute = false\n')
    r = CliRunner().invoke(app, ["run", str(p), "--dry-run", "--results", str(tmp_path)])
    assert r.exit_code == 2 and "latency[0]" in r.output


def test_effectiveness_plan_skips_existing_results(tmp_path):
    p = _study(tmp_path, 'variants = ["bm25", "ce", "mask2", "mask1"]\n[effectiveness]\n'
                         'models = ["tests/tiny-ce"]\ndatasets = ["scifact", "dl19"]\n'
                         'baseline = "ce"\nlimit_queries = 5\n')
    st = load_study(p)
    (t,) = plan_study(st, RESULTS)
    assert not t.done
    a = t.args
    assert a[a.index("--datasets") + 1] == "scifact,dl19"
    assert a[a.index("--variants") + 1] == "mask1,ce"      # missing ones + the baseline
    assert a[a.index("--limit-queries") + 1] == "5"
    assert a[a.index("--output-dir") + 1] == str(RESULTS / "effectiveness")
    st.effectiveness.variants = ["bm25", "ce", "mask2"]
    (t,) = plan_study(st, RESULTS)
    assert t.done and t.existing
    (t,) = plan_study(st, RESULTS, overwrite=True)
    assert not t.done


def test_latency_plan_matches_existing_runs(tmp_path):
    res = tmp_path / "results"
    shutil.copytree(RESULTS / "latency", res / "latency")
    # the fixture is a pre-core-v2 run: its `colbert` rows are colbert[proj=0,qaug=0] now
    base = ('variants = ["ce", "colbert[proj=0,qaug=0]"]\n[[latency]]\nname = "a"\n'
            'model = "tiny-bert-8l"\nprotocol = "paper"\nbatch_size = 8\ndoc_tokens = 64\n'
            'device = "cpu"\n')
    st = load_study(_study(tmp_path, base))
    (t,) = plan_study(st, res)
    assert t.done and t.existing == ["latency/paper.json"]
    # ... so the current colbert (the paper's) still has to be measured
    st = load_study(_study(tmp_path, base.replace("colbert[proj=0,qaug=0]", "colbert")))
    (t,) = plan_study(st, res)
    assert not t.done
    st = load_study(_study(tmp_path, base.replace("doc_tokens = 64", "doc_tokens = 32")))
    (t,) = plan_study(st, res)
    assert not t.done and t.args[t.args.index("--output") + 1].endswith("latency/s-a.json")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mice_bench.latency.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", num_layers=4)


def test_run_tiny_study_then_skip(tmp_path, tiny_model):
    p = _study(tmp_path, f'''name = "tiny"
variants = ["ce", "mice-l1+2", "colbert"]
[[latency]]
name = "rr"
model = "{tiny_model}"
batch_size = 4
query_tokens = 8
doc_tokens = 16
depth = 4
warmup = 0
runs = 1
min_seconds = 0.0
device = "cpu"
''')
    res = tmp_path / "results"
    r = CliRunner().invoke(app, ["run", str(p), "--results", str(res)])
    assert r.exit_code == 0, r.output
    out = res / "latency" / "tiny-rr.json"
    assert out.exists()
    before = out.read_bytes()
    r = CliRunner().invoke(app, ["run", str(p), "--results", str(res)])
    assert r.exit_code == 0, r.output
    assert "skip" in r.output and "0 to run" in r.output
    assert out.read_bytes() == before
    (t,) = plan_study(load_study(p), res, overwrite=True)
    assert not t.done
    # and the report reads what the study wrote
    from mice_bench.report import build_report

    rep = build_report(res, tmp_path / "report")
    assert "tables/latency-all-model-cpu-" in " ".join(rep.files)


# ---------------------------------------------------------------------------- dry run and bad input
def _dry_run(tmp: Path, text: str, *extra: str):
    p = _study(tmp, text)
    return CliRunner().invoke(app, ["run", str(p), "--dry-run", "--results",
                                    str(tmp / "results"), *extra])


def _warnings(output: str) -> list[str]:
    """The warning lines (Rich may wrap a long line: join the continuation lines)."""
    out, cur = [], None
    for ln in output.splitlines():
        if ln.startswith("warning:"):
            cur = ln
            out.append(cur)
        elif cur is not None and ln and not ln.startswith(("  [", "study ")):
            out[-1] += " " + ln
        else:
            cur = None
    return out


def test_dry_run_warns_about_hub_models_and_all_datasets(tmp_path, monkeypatch):
    """A hub id that is not in the local Hugging Face cache and `datasets = "all"` cannot
    run offline: --dry-run says so (exit 0); architecture names and local directories are
    fine."""
    from mice_bench.ablations import offline

    r = _dry_run(tmp_path, 'variants = ["bm25", "ce"]\n[effectiveness]\n'
                           'models = ["some-org/not-cached-model"]\ndatasets = ["all"]\n'
                           '[[latency]]\nname = "a"\nmodel = "minilm-l12"\ndevice = "cpu"\n')
    assert r.exit_code == 0, r.output
    w = _warnings(r.output)
    assert any("'some-org/not-cached-model'" in x and "not in the local cache" in x
               and "offline" in x for x in w), w
    assert any('datasets = "all"' in x for x in w), w
    assert not any("minilm-l12" in x for x in w), w
    assert "Traceback" not in r.output and "[to run]" in r.output
    # nothing planned needs the network: no warning
    monkeypatch.setattr(offline, "dataset_offline_problem", lambda *a, **k: None)
    r = _dry_run(tmp_path, 'variants = ["bm25", "ce"]\n[effectiveness]\n'
                           f'models = ["minilm-l6", "{tmp_path}"]\ndatasets = ["scifact"]\n')
    assert r.exit_code == 0, r.output
    assert _warnings(r.output) == [], r.output
    # a model in the Hugging Face cache is fine too
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache",
                        lambda repo, f, **k: str(tmp_path / "s.toml"))
    assert offline.model_offline_problem("org/cached") is None
    assert "no such local directory" in offline.model_offline_problem("./not/here")


def test_dry_run_warns_about_datasets_not_staged(tmp_path, monkeypatch):
    """A planned dataset whose ir_datasets files are not in IR_DATASETS_HOME is named; one
    whose files are present (or whose documents the study gives) is not."""
    from mice_bench.ablations import offline

    seen = []

    def problem(name, irds_id, docs=True):
        seen.append((name, docs))
        return None if name == "scifact" else f"dataset {name!r} ({irds_id}): not available"

    monkeypatch.setattr(offline, "dataset_offline_problem", problem)
    r = _dry_run(tmp_path, 'variants = ["bm25"]\n[effectiveness]\nmodels = ["minilm-l6"]\n'
                           'datasets = ["scifact", "dl19"]\ndocs = ["dl19=x/{dataset}.jsonl"]\n')
    assert r.exit_code == 0, r.output
    w = _warnings(r.output)
    assert len(w) == 1 and "'dl19'" in w[0] and "not available" in w[0], w
    assert seen == [("scifact", True), ("dl19", False)]
    # results exist for everything planned: nothing to warn about
    assert offline.offline_warnings(load_study(tmp_path / "s.toml"), []) == []


def test_dataset_offline_check_reads_the_ir_datasets_files(tmp_path):
    """The real check on an unstaged dataset: names the missing file, downloads nothing."""
    from mice_bench.ablations.offline import dataset_offline_problem

    got = dataset_offline_problem("fiqa", "beir/fiqa/test")
    if got is None:
        pytest.skip("beir/fiqa is staged on this machine")
    assert "'fiqa'" in got and "not available offline" in got and "source.zip" in got
    assert "ir_datasets cannot load" in dataset_offline_problem("x", "no/such/dataset")


def test_study_checks_the_latency_output_before_measuring(tmp_path, monkeypatch):
    """A study whose results folder cannot hold the latency file exits 2 naming it, and
    never reaches the measurement."""
    import mice_bench.latency.runner as lr

    def boom(*a, **k):
        raise AssertionError("measured before checking the output")

    monkeypatch.setattr(lr, "run_latency", boom)
    p = _study(tmp_path, '''name = "t"
variants = ["ce"]
[[latency]]
name = "rr"
model = "minilm-l6"
device = "cpu"
''')
    res = tmp_path / "results"
    res.mkdir()
    (res / "latency").write_text("a file where the folder should be")
    r = CliRunner().invoke(app, ["run", str(p), "--results", str(res)])
    assert r.exit_code == 2, r.output
    assert "latency" in r.output and "not a folder" in r.output
    assert "Traceback" not in r.output


def test_study_effectiveness_task_runs_through_the_typed_library_path(tmp_path, monkeypatch,
                                                                      tiny_bb):
    """A plain study's effectiveness task end to end: planned into a typed
    EffectivenessConfig (lists, ModelRef, per-dataset first stage and docs), run by the
    library (no command line), its files read back, then skipped on the second run. The
    per-dataset overrides of the study file must reach the run (the fixture's run file and
    documents; a wrong override would load the dataset's own BM25 and fail offline)."""
    import mice_bench.backbone
    from mice_bench.effectiveness import runner as eff_runner
    from mice_bench.effectiveness.result import EffectivenessResult
    from mice_bench.effectiveness.plan import EffectivenessConfig, ModelRef
    from test_effectiveness_pipeline import DOCS, FIX, fixture_collection

    monkeypatch.setattr(eff_runner, "load_collection", fixture_collection)
    monkeypatch.setattr(mice_bench.backbone, "load_backbone", lambda name, **kw: tiny_bb)
    seen = []
    real = eff_runner.run_effectiveness

    def spy(cfg, *a, **k):
        seen.append(cfg)
        return real(cfg, *a, **k)

    monkeypatch.setattr(eff_runner, "run_effectiveness", spy)
    p = _study(tmp_path, f'''name = "e2e"
variants = ["bm25", "ce", "colbert"]
[effectiveness]
models = ["mine=minilm-l6"]
datasets = ["dl19"]
first_stage = ["bm25", "dl19=run:{FIX}/run.txt"]
docs = ["dl19={DOCS}"]
depth = 100
batch_size = 2
device = "cpu"
measures = ["nDCG@10", "RR@10"]
''')
    res = tmp_path / "results"
    r = CliRunner().invoke(app, ["run", str(p), "--results", str(res)])
    assert r.exit_code == 0, r.output
    (cfg,) = seen
    assert isinstance(cfg, EffectivenessConfig)
    assert cfg.datasets == ["dl19"] and cfg.variants == ["bm25", "ce", "colbert"]
    assert cfg.models == [ModelRef("minilm-l6", "mine")]
    assert cfg.first_stage == "bm25" and cfg.first_stage_for == {"dl19": f"run:{FIX}/run.txt"}
    assert cfg.docs is None and cfg.docs_for == {"dl19": DOCS}
    assert cfg.measures == ["nDCG@10", "RR@10"]
    files = sorted((res / "effectiveness").rglob("*.json"))
    got = {EffectivenessResult.load(f).variant for f in files if f.name != "summary.json"}
    assert got == {"bm25", "ce", "colbert"}
    for f in files:
        if f.name != "summary.json":
            r0 = EffectivenessResult.load(f)
            assert set(r0.aggregates) == {"nDCG@10", "RR@10"}
            assert r0.first_stage.startswith("run:")
    r = CliRunner().invoke(app, ["run", str(p), "--results", str(res)])
    assert r.exit_code == 0 and "0 to run" in r.output, r.output
    assert len(seen) == 1
