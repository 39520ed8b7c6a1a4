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
