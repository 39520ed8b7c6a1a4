"""Typed result models: every kind written then read back by the same class, old schema
versions (the committed results/) loading through the upgraders, per-kind versions, and the
import hygiene of the latency package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mice_bench import results as resultsmod
from mice_bench.effectiveness.result import EffectivenessResult
from mice_bench.evaluation.summary import EffectivenessSummary
from mice_bench.results import ResultFileError, load_result, schema_version

REPO = Path(__file__).resolve().parents[1]
EFF = REPO / "results" / "effectiveness"
LAT = REPO / "results" / "latency"
def _version(p: Path) -> int | None:
    return json.loads(p.read_text()).get("schema_version")


def _kind(p: Path) -> str:
    return str(json.loads(p.read_text()).get("schema", ""))


# version-1 files (written before version 2) go through the upgraders; newer ones (e.g.
# results/effectiveness/storage/) load as written
COMMITTED_SUMMARIES = sorted(p for p in EFF.glob("*.json") if _version(p) == 1)
COMMITTED_RECORDS = sorted(p for p in EFF.rglob("*.json")
                           if p.parent != EFF and _version(p) == 1)
COMMITTED_CURRENT = sorted(p for p in EFF.rglob("*.json") if _version(p) != 1)
COMMITTED_LATENCY_ALL = sorted(LAT.glob("*.json"))
# version-1 files (measured with the earlier definitions) go through the upgrader; newer ones
# load as written
# plus the real version-1 files kept as fixtures once the committed ones were re-measured
COMMITTED_LATENCY = [p for p in COMMITTED_LATENCY_ALL
                     if json.loads(p.read_text()).get("schema_version") == 1] + sorted(
    (REPO / "tests" / "fixtures" / "latency-v1").glob("*.json"))
COMMITTED_LATENCY_CURRENT = [p for p in COMMITTED_LATENCY_ALL if p not in COMMITTED_LATENCY]
assert COMMITTED_LATENCY, "version-1 latency files (tests/fixtures/latency-v1) are missing"
# what the committed (pre-core-v2) names measured, written out by hand (docs/report.md)
RENAMED = {"colbert": "colbert[proj=0,qaug=0]", "mice-l4+3": "mice-l4+3[attn=joint]",
           "mice-l4+8": "mice-l4+8[attn=joint]", "mice-l2+2-cross": "mice-l2+2[order=self]"}


def test_every_kind_has_its_own_version():
    assert schema_version("latency") == 2
    assert schema_version("effectiveness") == 3
    assert schema_version("effectiveness-summary") == 3


@pytest.mark.parametrize("old,new", [*RENAMED.items(), ("ce", "ce"), ("biencoder", "biencoder"),
                                     ("mask3-l4", "mask3-l4"), ("prettr-l4", "prettr-l4"),
                                     ("colbert[proj=1]", "colbert[qaug=0]")])
def test_old_variant_names_map_to_what_they_measured(old, new):
    from mice_bench.legacy import current_name, legacy_note

    assert current_name(old) == new
    assert (legacy_note(old) is None) == (old in ("ce", "biencoder", "mask3-l4"))


@pytest.mark.skipif(not COMMITTED_RECORDS, reason="no committed effectiveness results")
@pytest.mark.parametrize("path", COMMITTED_RECORDS, ids=lambda p: str(p.relative_to(EFF)))
def test_committed_effectiveness_files_load_through_the_upgrader(path):
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1                     # written before version 2
    res = EffectivenessResult.load(path)
    assert res.aggregates == pytest.approx(raw["aggregates"])
    old = raw["config"]["variant"]
    assert res.variant == RENAMED.get(old, old) and res.dataset_name == raw["dataset"]["name"]
    if old in RENAMED:                                     # the old name is kept, with why
        assert res.config["variant_as_written"] == old
        assert "earlier definitions" in res.config["legacy_note"]
    else:
        assert "variant_as_written" not in res.config
    for p in ("ir_datasets", "ir_measures", "bm25s"):      # unknown in version 1
        assert res.environment[p] is None
    if res.model is not None:
        assert res.model["revision"] is None


@pytest.mark.skipif(not COMMITTED_CURRENT, reason="no current-version effectiveness files")
@pytest.mark.parametrize("path", COMMITTED_CURRENT, ids=lambda p: str(p.relative_to(EFF)))
def test_committed_current_effectiveness_files_load_as_written(path):
    """Files of the current schema version load without an upgrader, with their values."""
    raw = json.loads(path.read_text())
    if _kind(path).endswith("effectiveness-summary"):
        assert raw["schema_version"] == schema_version("effectiveness-summary")
        s, _ = EffectivenessSummary.load(path)
        assert [r.variant for r in s.rows] == [r["variant"] for r in raw["summary"]["rows"]]
        return
    assert raw["schema_version"] == schema_version("effectiveness")
    res = EffectivenessResult.load(path)
    assert res.aggregates == raw["aggregates"] and res.variant == raw["config"]["variant"]
    for p in ("ir_datasets", "ir_measures", "bm25s"):      # recorded since version 2
        assert res.environment[p] is not None


@pytest.mark.skipif(not COMMITTED_SUMMARIES, reason="no committed summaries")
@pytest.mark.parametrize("path", COMMITTED_SUMMARIES, ids=lambda p: p.name)
def test_committed_summaries_load_through_the_upgrader(path):
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1
    s, _ = EffectivenessSummary.load(path)
    old = raw["summary"]
    assert s.baseline == old["baseline"] and s.measures == old["measures"]
    assert [r.variant for r in s.rows] == [RENAMED.get(r["variant"], r["variant"])
                                           for r in old["rows"]]
    for r_new, r_old in zip(s.rows, old["rows"]):
        for ds, per in r_old["cells"].items():
            assert r_new.files[ds] == per["files"]          # moved out of the cells
            for m in old["measures"]:
                c = r_new.cells[ds][m]
                assert c.mean == pytest.approx(per[m]["mean"])
                assert c.mark == per[m].get("mark", "")
                assert c.p_corrected == per[m].get("p_corrected")
    # the version-1 file counted no comparisons; the upgrader counts the tested cells
    for m in old["measures"]:
        assert s.comparisons[m] == sum(1 for r in old["rows"] for per in r["cells"].values()
                                       if per[m].get("p") is not None)


def test_minilm_rerank_comparisons_are_eight():
    p = EFF / "minilm-rerank.json"
    if not p.exists():
        pytest.skip("no committed minilm-rerank summary")
    s, _ = EffectivenessSummary.load(p)
    assert s.comparisons["nDCG@10"] == 8     # 2 variants x 4 datasets against bm25


def test_effectiveness_result_written_then_read_back(tmp_path):
    res = EffectivenessResult(
        config={"dataset": "scifact", "variant": "colbert", "model_label": "m",
                "first_stage": "bm25"},
        dataset={"name": "scifact", "irds_id": "beir/scifact/test", "group": "ood",
                 "num_queries": 2, "docs": None},
        aggregates={"nDCG@10": 0.5}, per_query={"nDCG@10": {"1": 0.25, "2": 0.75}},
        num_candidates=200, timing={"pairs_per_s": 10.0}, run_file="colbert.trec",
        model={"label": "m", "revision": "abc"}, environment={"torch": "x"})
    p = res.save(tmp_path / "r.json")
    assert json.loads(p.read_text())["schema_version"] == 3
    assert EffectivenessResult.load(p) == res


def test_summary_written_then_read_back(tmp_path):
    from mice_bench.evaluation.summary import SummaryDataset, SummarySettings, summarize

    class R:
        def __init__(self, v, vals):
            self.variant, self.model, self.dataset_name, self.file = v, "m", "d", f"{v}.json"
            self.per_query = {"nDCG@10": {str(i): x for i, x in enumerate(vals)}}
            self.aggregates = {"nDCG@10": sum(vals) / len(vals)}

    s = summarize([R("bm25", [0.1, 0.2, 0.4]), R("ce", [0.5, 0.6, 0.9])],
                  [SummaryDataset("d", None, "ood", "bm25")], ["bm25", "ce"],
                  SummarySettings())
    from mice_bench.evaluation.table import write_summary

    write_summary(s, tmp_path / "sum", {"k": 1}, {"torch": "x"})
    back, doc = EffectivenessSummary.load(tmp_path / "sum.json")
    assert back == s and doc["schema_version"] == 3 and doc["config"] == {"k": 1}
    assert (tmp_path / "sum.md").read_text().startswith("### nDCG@10")


def test_a_newer_version_is_refused_and_a_missing_upgrader_named(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "mice-bench/effectiveness", "schema_version": 4}))
    with pytest.raises(ResultFileError, match="newer"):
        load_result(p)
    p.write_text(json.dumps({"schema": "mice-bench/effectiveness", "schema_version": 1}))
    import mice_bench.effectiveness.schema  # noqa: F401 - registers the upgraders

    monkeypatch.setitem(resultsmod.UPGRADERS, "effectiveness", {})
    with pytest.raises(ResultFileError, match="no upgrader"):
        load_result(p)


@pytest.mark.skipif(not COMMITTED_LATENCY, reason="no committed latency results")
@pytest.mark.parametrize("path", COMMITTED_LATENCY, ids=lambda p: p.name)
def test_committed_latency_files_load_through_the_upgrader(path):
    """Version-1 files: the numbers unchanged, the pre-v2 mice / colbert rows renamed to what
    they measured and noted, prettr rows noted, the other rows untouched."""
    from mice_bench.latency.result import LatencyResult

    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1
    res = LatencyResult.load(path)
    assert len(res.rows) == len(raw["rows"])
    for new, old in zip(res.rows, raw["rows"]):
        v = old["variant"]
        assert new.variant == RENAMED.get(v, v)
        assert new.latency_s == old["latency_s"] and new.speedup_vs_ce == old["speedup_vs_ce"]
        assert new.throughput_pairs_per_s == old["throughput_pairs_per_s"]
        added = new.notes[len(old["notes"]):]
        assert new.notes[:len(old["notes"])] == old["notes"]
        if v in RENAMED or v.startswith("prettr"):
            assert len(added) == 1 and added[0].startswith("pre-v2 definition") and v in added[0]
        else:
            assert added == []
    assert res.config["variants"] == [RENAMED.get(v, v) for v in raw["config"]["variants"]]


@pytest.mark.skipif(not COMMITTED_LATENCY_CURRENT, reason="no current latency results")
@pytest.mark.parametrize("path", COMMITTED_LATENCY_CURRENT, ids=lambda p: p.name)
def test_committed_current_latency_files_load_unchanged(path):
    from mice_bench.latency.result import LatencyResult

    raw = json.loads(path.read_text())
    res = LatencyResult.load(path)
    assert [r.variant for r in res.rows] == [r["variant"] for r in raw["rows"]]
    assert all(not any(n.startswith("pre-v2") for n in r.notes) for r in res.rows)


def test_latency_result_written_then_read_back(tmp_path):
    """The typed latency result: save (schema-checked) then load gives the same object, and
    the document is the current version."""
    from mice_bench.latency.result import LatencyResult

    src = LatencyResult.load(COMMITTED_LATENCY[0]) if COMMITTED_LATENCY else pytest.skip()
    p = src.save(tmp_path / "lat.json")
    doc = json.loads(p.read_text())
    assert doc["schema_version"] == 2 and doc["schema"] == "mice-bench/latency"
    back = LatencyResult.load(p)
    assert back.to_doc() == src.to_doc() == doc
    assert back.rows == src.rows


def test_environment_records_the_data_stack_versions():
    env = resultsmod.environment(device="cpu", dtype="fp32")
    from importlib import metadata

    for p in ("ir_datasets", "ir_measures", "bm25s"):
        assert env[p] == metadata.version(p)


def test_import_latency_pulls_no_data_or_plotting_stack():
    """``mice_bench.latency`` must run where only torch and transformers exist."""
    code = ("import sys, mice_bench.latency; "
            "print(','.join(m for m in ('ir_datasets', 'bm25s', 'matplotlib', 'ir_measures') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_one_cache_root_for_every_command(tmp_path, monkeypatch):
    """``$MICE_BENCH_CACHE`` moves every cache; without it they live under
    ``$XDG_CACHE_HOME/mice-bench``."""
    from types import SimpleNamespace

    from mice_bench.ablations.training_study.paths import checkpoints_dir
    from mice_bench.effectiveness.plan import default_cache_dir
    from mice_bench.results import cache_dir
    from mice_bench.training.config import TrainConfig

    study = SimpleNamespace(training=SimpleNamespace(checkpoints=None))
    monkeypatch.delenv("MICE_BENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mice-bench" / "effectiveness"
    monkeypatch.setenv("MICE_BENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "effectiveness"
    assert TrainConfig(model="m", data="d").cache_path() == tmp_path / "c" / "training"
    assert checkpoints_dir(study) == tmp_path / "c" / "runs" == cache_dir("runs")
    with pytest.raises(ValueError, match="unknown cache kind 'tmp'; valid: effectiveness"):
        cache_dir("tmp")


def test_the_variant_renaming_is_one_step_of_the_upgrader_chain():
    """``legacy`` registers its steps by (kind, version) like any upgrader; a version-2
    effectiveness file goes through it alone (2 -> 3)."""
    import mice_bench.legacy as legacy

    assert legacy.STEPS == {("effectiveness", 2): legacy.rename_effectiveness,
                            ("effectiveness-summary", 2): legacy.rename_summary,
                            ("latency", 1): legacy.rename_latency}
    for (kind, version), step in legacy.STEPS.items():
        assert resultsmod.UPGRADERS[kind][version] is step
    doc = {"schema": "mice-bench/effectiveness", "schema_version": 2,
           "config": {"variant": "mice-l4+3-cross"}}
    up = legacy.rename_effectiveness(doc)
    assert up["config"]["variant"] == "mice-l4+3[order=self]"
    assert up["config"]["variant_as_written"] == "mice-l4+3-cross"
    assert doc["config"] == {"variant": "mice-l4+3-cross"}     # the input is not modified
