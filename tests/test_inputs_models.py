"""Bad model inputs end in one clear line (exit 2) in every command, before any work: a
checkpoint without tokenizer files or with an unusable tokenizer, broken or missing weights,
a hub id that cannot be reached offline (at once, no HTTP retries); and a random
classifier head is flagged only for the variants that read it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.effectiveness import runner, scoring
from mice_bench.errors import UsageError

from test_effectiveness_pipeline import DOCS, RUN, fixture_collection, fixture_data  # noqa: F401
from test_reliability import assert_usage_error

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def bare_checkpoint(tmp_path, tiny_hf):
    """A Hugging Face checkpoint folder with weights and config but no tokenizer files."""
    d = tmp_path / "bare"
    tiny_hf.save_pretrained(d)
    return d


@pytest.fixture
def full_checkpoint(bare_checkpoint):
    from mice_bench.backbone import packaged_tokenizer

    packaged_tokenizer().save_pretrained(bare_checkpoint)
    return bare_checkpoint


def effectiveness(tmp_path: Path, model: str, variants: str = "ce"):
    return CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--model", model, "--variants", variants,
        "--first-stage", RUN, "--docs", DOCS, "--output-dir", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--no-progress"])


def latency(tmp_path: Path, model: str):
    return CliRunner().invoke(app, ["latency", "--model", model, "--variants", "ce",
                                    "--output", str(tmp_path / "lat" / "x.json"),
                                    "--no-progress"])


def nothing_written(tmp_path: Path) -> bool:
    return not [p for d in ("out", "cache", "lat") for p in (tmp_path / d).rglob("*")
                if p.is_file()]


# --------------------------------------------------------------------------- tokenizer
def test_checkpoint_without_tokenizer_files_is_refused_everywhere(tmp_path, bare_checkpoint,
                                                                  monkeypatch):
    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    for r in (effectiveness(tmp_path, str(bare_checkpoint)),
              latency(tmp_path, str(bare_checkpoint)),
              CliRunner().invoke(app, ["verify", "--model", str(bare_checkpoint), "--pairs",
                                       "2", "--variants", "ce"])):
        assert_usage_error(r, f"model directory {bare_checkpoint}", "no tokenizer",
                           "vocab.txt")
    assert nothing_written(tmp_path)


def test_load_backbone_refuses_a_checkpoint_without_tokenizer(bare_checkpoint):
    from mice_bench.backbone import load_backbone

    with pytest.raises(UsageError, match="no tokenizer"):
        load_backbone(str(bare_checkpoint))


def test_a_tokenizer_that_reads_words_as_unknown_is_unusable(tmp_path):
    """What transformers builds from a near-empty vocabulary: every word is [UNK]."""
    from transformers import BertTokenizerFast

    from mice_bench.backbone import check_tokenizer, packaged_tokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    tiny = BertTokenizerFast(vocab_file=str(vocab))
    assert all(i == tiny.unk_token_id for i in tiny("the cat")["input_ids"][1:-1])
    with pytest.raises(UsageError, match="tokenizer is unusable"):
        check_tokenizer(tiny, "m", 30522)
    check_tokenizer(packaged_tokenizer(), "m", 30522)     # the real one passes


def test_checkpoint_with_tokenizer_still_loads(full_checkpoint, tiny_bb):
    from mice_bench.backbone import load_backbone

    bb = load_backbone(str(full_checkpoint))
    assert bb.num_layers == tiny_bb.num_layers and len(bb.tokenizer) == 30522


# --------------------------------------------------------------------------- weights
def _truncate(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _garbage(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"\x07" * 4096)


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


@pytest.mark.parametrize("break_it,needle", [(_truncate, "truncated"),
                                             (_garbage, "model.safetensors is broken"),
                                             (_no_weights, "no weight file")])
def test_broken_weights_are_one_line_in_latency_verify_and_effectiveness(
        tmp_path, full_checkpoint, monkeypatch, break_it, needle):
    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    break_it(full_checkpoint)
    for r in (latency(tmp_path, str(full_checkpoint)),
              effectiveness(tmp_path, str(full_checkpoint)),
              CliRunner().invoke(app, ["verify", "--model", str(full_checkpoint), "--pairs",
                                       "2", "--variants", "ce"]),
              CliRunner().invoke(app, ["variants", "show", "mice-l2+2", "--model",
                                       str(full_checkpoint)])):
        assert_usage_error(r, f"model directory {full_checkpoint}", needle)
    assert nothing_written(tmp_path)


def test_latency_names_a_path_that_does_not_exist(tmp_path):
    assert_usage_error(latency(tmp_path, str(tmp_path / "nope")), "no such directory")


# --------------------------------------------------------------------------- offline hub
def test_unknown_hub_id_offline_is_refused_at_once(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE (conftest) and nothing cached: refused before any dataset is read,
    without HTTP retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(runner, "load_collection", lambda *a, **k: pytest.fail("loaded data"))
    t = time.perf_counter()
    r = effectiveness(tmp_path, "some-org/no-such-model-xyz")
    assert_usage_error(r, "some-org/no-such-model-xyz", "not in the local Hugging Face cache",
                       "HF_HUB_OFFLINE")
    r = latency(tmp_path, "some-org/no-such-model-xyz")
    assert_usage_error(r, "some-org/no-such-model-xyz", "HF_HUB_OFFLINE")
    assert time.perf_counter() - t < 10
    assert nothing_written(tmp_path)


def test_no_network_is_detected_without_the_offline_variable(monkeypatch):
    """No HF_HUB_OFFLINE, and the hub's host cannot be reached: said so, at once."""
    import socket

    from mice_bench import backbone

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def refuse(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(backbone.socket, "create_connection", refuse)
    assert "no network" in backbone.hub_offline_reason()
    with pytest.raises(UsageError, match="no network"):
        backbone.check_hub_model("some-org/no-such-model-xyz")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert backbone.hub_offline_reason() == "HF_HUB_OFFLINE is set"


# --------------------------------------------------------------------------- random head
def test_random_classifier_is_flagged_only_for_variants_that_read_it(tmp_path, fixture_data,
                                                                    tiny_bb, monkeypatch):
    """A checkpoint without a classification head: ce (reads it) is flagged and warned
    about; biencoder (cosine, no head) records classifier_random false and no warning."""
    import warnings

    from mice_bench.effectiveness.runner import run_effectiveness

    from test_effectiveness_pipeline import cfg

    monkeypatch.setattr(tiny_bb, "classifier_random", True)
    warned: list[str] = []
    monkeypatch.setattr(scoring, "warn", warned.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no raw UserWarning either
        run_effectiveness(cfg(tmp_path, variants="bm25,ce,biencoder"))
    out = tmp_path / "out" / "dl19" / "run-effectiveness-run" / "minilm-l6"
    ce = json.loads((out / "ce.json").read_text())
    bi = json.loads((out / "biencoder.json").read_text())
    assert ce["model"]["classifier_random"] is True
    assert bi["model"]["classifier_random"] is False
    assert len([w for w in warned if "seeded random" in w]) == 1 and "ce" in warned[0]


# --------------------------------------------------------------------------- config vs weights
def test_a_config_asking_for_more_layers_than_the_weights_hold_is_refused(tmp_path,
                                                                          full_checkpoint,
                                                                          monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from mice_bench.api import Reranker

    cfg_p = full_checkpoint / "config.json"
    cfg = json.loads(cfg_p.read_text())
    cfg["num_hidden_layers"] = cfg["num_hidden_layers"] + 2
    cfg_p.write_text(json.dumps(cfg))
    # what transformers itself does with it: loads, the two extra layers freshly initialised
    _, info = AutoModelForSequenceClassification.from_pretrained(full_checkpoint,
                                                                 output_loading_info=True)
    assert any(".layer.6." in k for k in info["missing_keys"])
    with pytest.raises(UsageError, match="lack .* encoder tensors") as e:
        Reranker.from_pretrained(str(full_checkpoint), variant="ce")
    assert "\n" not in str(e.value) and "num_hidden_layers 8" in str(e.value)
    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    assert_usage_error(effectiveness(tmp_path, str(full_checkpoint)), "encoder tensors")
    assert nothing_written(tmp_path)


def test_a_checkpoint_without_its_classifier_still_loads_with_a_flagged_head(tmp_path, tiny_hf):
    from mice_bench.backbone import load_backbone, packaged_tokenizer

    tiny_hf.bert.save_pretrained(tmp_path / "enc")          # encoder only, no classifier
    packaged_tokenizer().save_pretrained(tmp_path / "enc")
    assert load_backbone(str(tmp_path / "enc")).classifier_random


# --------------------------------------------------------------------------- mice_bench.json
def _saved(tmp_path) -> Path:
    from mice_bench.model import InteractionModel

    d = tmp_path / "saved"
    InteractionModel.from_pretrained("minilm-l6", variant="mice-l2+2").save_pretrained(d)
    return d


@pytest.mark.parametrize("edit,needle", [
    (lambda m: [1, 2], "holds a list, not a JSON object"),
    (lambda m: dict(m, variant=123), "variant must be a JSON string, got 123"),
    (lambda m: dict(m, query_max_tokens=-5), "query_max_tokens must be a whole number >= 1"),
    (lambda m: dict(m, doc_max_tokens="64"), "doc_max_tokens must be a whole number >= 1"),
    (lambda m: dict(m, random_init="all"), "random_init must be a JSON list"),
], ids=["list", "variant-int", "negative-qmax", "string-dmax", "random-init-str"])
def test_an_edited_mice_bench_json_is_one_line_everywhere(tmp_path, edit, needle):
    from mice_bench.api import Reranker

    d = _saved(tmp_path)
    meta_p = d / "mice_bench.json"
    meta_p.write_text(json.dumps(edit(json.loads(meta_p.read_text()))))
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        Reranker.from_pretrained(str(d))
    assert_usage_error(latency(tmp_path, str(d)), "mice_bench.json", needle)
    assert_usage_error(CliRunner().invoke(app, ["variants", "show", "mice-l2+2", "--model",
                                                str(d)]), "mice_bench.json")


def test_stored_lengths_are_used_and_reported_as_the_checkpoints(tmp_path):
    from mice_bench.api import Reranker

    d = _saved(tmp_path)
    meta_p = d / "mice_bench.json"
    meta_p.write_text(json.dumps(dict(json.loads(meta_p.read_text()), query_max_tokens=3)))
    ex = Reranker.from_pretrained(str(d))._ex
    s = ex.settings()
    assert s["query_max_tokens"] == 3
    assert s["sources"]["query_max_tokens"] == "checkpoint:mice_bench.json"
    # [CLS] + 3 word pieces + [SEP], whatever the query's length
    assert ex.tokenize_queries(["one two three four five six"]).input_ids.shape[1] == 5
    flagged = Reranker.from_pretrained(str(d), query_max_tokens=4)._ex.settings()
    assert flagged["query_max_tokens"] == 4 and flagged["sources"]["query_max_tokens"] == "flag"


# --------------------------------------------------------------------------- Python API inputs
@pytest.fixture(scope="module")
def api_rr():
    from mice_bench.api import Reranker

    return Reranker.from_pretrained("minilm-l6", variant="mice-l2+2")


@pytest.mark.parametrize("call,needle", [
    (lambda r: r.rank("q", ["a", "b", "c"], top_k=-1), "top_k must be a whole number >= 1"),
    (lambda r: r.rank("q", ["a", "b"], top_k=0), "top_k must be a whole number >= 1"),
    (lambda r: r.rank("q", "a cat"), "documents must be a list of texts"),
    (lambda r: r.encode_documents("a cat"), "documents must be a list of texts"),
    (lambda r: r.predict([("q", "d")], batch_size=0), "batch_size must be a whole number"),
    (lambda r: r.predict(["qd"]), "pair 0 must be a (query, document) pair"),
    (lambda r: r.predict([("q", "d"), ("q", None)]), "pair 1: the document is NoneType"),
    (lambda r: r.predict([(float("nan"), "d")]), "pair 0: the query is float nan"),
    (lambda r: r.rank("q", ["a", 7]), "document 1: the document is int 7"),
    (lambda r: r.encode_documents(["a", 3.5]), "document 1: the document is float"),
], ids=["top_k-neg", "top_k-0", "rank-str", "encode-str", "batch-0", "pair-str", "doc-none",
        "query-nan", "rank-int", "encode-float"])
def test_api_inputs_are_checked_with_one_line_naming_them(api_rr, call, needle):
    with pytest.raises(UsageError) as e:
        call(api_rr)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_non_string_texts_are_named_under_a_joint_variant_too():
    from mice_bench.api import Reranker

    ce = Reranker.from_pretrained("minilm-l6", variant="ce")
    with pytest.raises(UsageError, match="pair 1: the document is int 3"):
        ce.predict([("q", "d"), ("q", 3)])


def test_top_k_keeps_that_many_of_the_full_ranking(api_rr):
    docs = ["a cat is an animal", "spiders have eight legs", "milk"]
    full = api_rr.rank("what is a cat", docs)
    assert [r["corpus_id"] for r in api_rr.rank("what is a cat", docs, top_k=2)] == \
        [r["corpus_id"] for r in full[:2]]
    assert sorted(r["corpus_id"] for r in full) == [0, 1, 2]


@pytest.mark.parametrize("kw,flag", [({"doc_max_tokens": 0}, "doc_max_tokens"),
                                     ({"query_max_tokens": -1}, "query_max_tokens"),
                                     ({"batch_size": 0}, "batch_size")])
def test_api_lengths_follow_the_cli_rule(tmp_path, kw, flag, monkeypatch):
    from mice_bench.api import Reranker

    with pytest.raises(UsageError, match=f"{flag} must be a whole number >= 1"):
        Reranker.from_pretrained("minilm-l6", variant="mice-l2+2", **kw)
    if flag != "batch_size":                 # the CLI refuses the same value, same words
        monkeypatch.setattr(runner, "load_collection", fixture_collection)
        opt = "--" + flag.replace("_", "-")
        r = CliRunner().invoke(app, [
            "effectiveness", "--datasets", "dl19", "--model", "minilm-l6", "--variants",
            "mice-l2+2", "--first-stage", RUN, "--docs", DOCS, "--output-dir",
            str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            opt, str(next(iter(kw.values())))])
        assert_usage_error(r, f"{opt} must be a whole number >= 1")
