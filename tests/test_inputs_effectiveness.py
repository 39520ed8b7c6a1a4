"""Bad ``effectiveness`` inputs are refused before the first result is written: ``--docs``
lines (null or numeric text, no doc_id, a repeated doc_id with another text), measures whose
parameters pytrec_eval cannot take (``nDCG@0`` aborts the process), cutoffs above the first
stage's depth, and documents of a run file missing from ``--docs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mice_bench.data.collections import read_docs_jsonl
from mice_bench.evaluation.metrics import parse_measures
from mice_bench.errors import UsageError

from test_effectiveness_pipeline import DOCS, FIX, fixture_collection, fixture_data  # noqa: F401
from test_reliability import assert_usage_error, invoke, written_files

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def any_docs(fixture_data, monkeypatch):
    """The fixture collection with whatever --docs file the command names."""
    from mice_bench.effectiveness import runner

    def collection(info, docs_path, limit_queries=None):
        coll = fixture_collection(info, DOCS, limit_queries)
        coll.docs_path = Path(docs_path)
        return coll

    monkeypatch.setattr(runner, "load_collection", collection)

FIXTURE_DOCS = (FIX / "docs.jsonl").read_text().splitlines()


def docs_with(tmp_path: Path, extra: str, at: int | None = None) -> Path:
    """The fixture's --docs file with ``extra`` appended (or put at line ``at``)."""
    lines = list(FIXTURE_DOCS)
    lines.insert(len(lines) if at is None else at - 1, extra)
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


# --------------------------------------------------------------------------- --docs lines
@pytest.mark.parametrize("line,needles", [
    ('{"doc_id": "x1", "text": null}', ["'x1'", "text null"]),
    ('{"doc_id": "x1", "text": 42}', ["'x1'", "text 42"]),
    ('{"doc_id": "x1", "text": ["a"]}', ["'x1'", "a list"]),
    ('{"doc_id": "x1"}', ["'x1'", "no text"]),
    ('{"text": "orphan"}', ["no doc_id"]),
    ('{"doc_id": null, "text": "a"}', ["doc_id None"]),
    ('{"doc_id": "", "text": "a"}', ["doc_id ''"]),
    ('{"doc_id": "x1", "text": "a", "title": 3}', ["title 3"]),
    ('["x1", "a"]', ["a JSON list"]),
    ('{"doc_id": "x1", "text": "a"', ["not JSON"]),
])
def test_bad_docs_lines_name_file_and_line(tmp_path, any_docs, line, needles):
    p = docs_with(tmp_path, line)
    n = len(FIXTURE_DOCS) + 1
    with pytest.raises(UsageError) as e:
        read_docs_jsonl(p)
    for needle in (f"{p}:{n}", *needles):
        assert needle in str(e.value)
    r = invoke(tmp_path, variants="bm25,ce", docs=str(p))
    assert_usage_error(r, f"{p}:{n}")
    assert written_files(tmp_path) == []             # not even the bm25 row


def test_repeated_doc_id_with_another_text_is_refused_naming_both_lines(tmp_path):
    first = json.loads(FIXTURE_DOCS[0])
    again = json.dumps({"doc_id": first["doc_id"], "text": first["text"] + " changed"})
    p = docs_with(tmp_path, again)
    with pytest.raises(UsageError) as e:
        read_docs_jsonl(p)
    msg = str(e.value)
    assert f":{len(FIXTURE_DOCS) + 1}:" in msg and repr(first["doc_id"]) in msg
    assert "repeats line 1" in msg


def test_identical_repeat_is_accepted(tmp_path):
    p = docs_with(tmp_path, FIXTURE_DOCS[0])
    assert read_docs_jsonl(p) == read_docs_jsonl(FIX / "docs.jsonl")


def test_integer_doc_ids_are_read_as_strings(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"doc_id": 7, "text": "seven"}\n{"_id": "8", "title": "T", "text": "b"}\n')
    assert read_docs_jsonl(p) == {"7": "seven", "8": "T b"}


def test_candidate_missing_from_docs_is_refused_before_the_bm25_row(tmp_path, any_docs):
    """The run file names a document the --docs file lacks: refused before anything is
    written (the bm25 row used to be written first)."""
    first = json.loads(FIXTURE_DOCS[0])["doc_id"]
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(ln for ln in FIXTURE_DOCS
                           if json.loads(ln)["doc_id"] != first) + "\n")
    r = invoke(tmp_path, variants="bm25,ce", docs=str(p))
    assert_usage_error(r, str(p), "have no text", first)
    assert written_files(tmp_path) == []


def test_model_that_fails_to_load_leaves_no_bm25_row(tmp_path, fixture_data, monkeypatch):
    import mice_bench.backbone

    def fail(name, **kw):
        raise UsageError(f"model {name!r}: cannot load it")

    monkeypatch.setattr(mice_bench.backbone, "load_backbone", fail)
    r = invoke(tmp_path, variants="bm25,ce")
    assert_usage_error(r, "cannot load it")
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_full_ranking_with_a_variant_that_cannot_store_documents_writes_nothing(
        tmp_path, fixture_data):
    """Plain ``prettr-l2`` scores each document after its query, so it cannot rank the whole
    corpus: refused with the variants that can, before the BM25 index or row is written."""
    r = invoke(tmp_path, "--first-stage", "full", variants="bm25,prettr-l2", run=None)
    msg = assert_usage_error(r, "--first-stage full", "prettr-l2 cannot",
                             "prettr-l{k}[qlen=N], mice-l{m}+{n}, colbert, biencoder")
    assert "(prettr, mice" not in msg
    assert written_files(tmp_path) == []


# --------------------------------------------------------------------------- measures
@pytest.mark.parametrize("name,needle", [
    ("nDCG@0", "cutoff @0"), ("AP@0", "cutoff @0"), ("Judged@0", "cutoff @0"),
    ("RR(rel=0)@10", "rel=0"), ("nDCG(dcg='cubic')@10", "dcg='cubic'"),
    ("P(judged_only=1)@5", "True or False"),
])
def test_measure_parameters_are_checked_before_evaluation(tmp_path, fixture_data, name,
                                                          needle):
    with pytest.raises(UsageError, match="measure"):
        parse_measures([name])
    r = invoke(tmp_path, "--measures", name)
    assert_usage_error(r, name.split("(")[0].split("@")[0], needle)
    assert written_files(tmp_path) == []


def test_valid_measures_parse():
    names = ["nDCG@10", "RR(rel=2)@10", "P(rel=2,judged_only=True)@5", "AP", "R@100",
             "nDCG(dcg='exp-log2')@10", "MRR@10"]
    assert [str(m) for m in parse_measures(names)][:3] == names[:3]


def test_cutoff_above_depth_is_refused_when_asked_for(tmp_path, fixture_data):
    r = invoke(tmp_path, "--measures", "nDCG@10,R@100", "--depth", "20")
    assert_usage_error(r, "R@100", "depth 20")
    assert written_files(tmp_path) == []


def test_default_measures_above_depth_are_flagged_in_every_result(tmp_path, fixture_data,
                                                                 capsys):
    r = invoke(tmp_path, "--depth", "20", variants="bm25,ce")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "dl19" / "run-effectiveness-run" / "bm25.json")
                     .read_text())
    assert res["config"]["beyond_depth"] == ["R@100"]
    inside = json.loads((tmp_path / "out" / "dl19" / "run-effectiveness-run" / "minilm-l6" /
                         "ce.json").read_text())
    assert inside["config"]["beyond_depth"] == ["R@100"]
    assert "R@100" in " ".join((r.output + capsys.readouterr().err).split())


def test_depth_that_covers_every_cutoff_flags_nothing(tmp_path, fixture_data):
    r = invoke(tmp_path, variants="bm25")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "dl19" / "run-effectiveness-run" / "bm25.json")
                     .read_text())
    assert res["config"]["beyond_depth"] == []
