"""``mice-bench train``: losses by hand, data invariants, learning a synthetic task, exact
resume, two-process Gloo DDP = one process, checkpoint round trip, bad input -> exit 2.

Everything runs offline on CPU with tiny random BERT models (a few seconds each); the
synthetic task is "a document is relevant iff it contains the query's rare word".
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mice_bench.errors import UsageError
from mice_bench.training import TrainReporter, make_config, train
from mice_bench.training.data import TrainingData, read_jsonl, sample_groups
from mice_bench.training.losses import bce, listwise_ce, margin_mse
from mice_bench.training.loop import validate_model

REPO = Path(__file__).resolve().parents[1]

RARE = ("apple river piano tiger rocket violin garden castle desert silver pepper marble "
        "falcon harbor candle meadow copper jungle lemon orbit").split()
FILL = "the a of and some very about with from into over under near little big old new".split()


# --------------------------------------------------------------------------- helpers
def tiny_model(variant: str = "ce", hidden: int = 64, layers: int = 3, heads: int = 2,
               seed: int = 0):
    from transformers import BertConfig

    from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model
    from mice_bench.model import InteractionModel

    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=2 * hidden,
                     max_position_embeddings=64, num_labels=1)
    bb = from_hf(random_hf_model(cfg, seed=seed), packaged_tokenizer(), name="tiny")
    return InteractionModel(bb, variant, query_max_tokens=8, doc_max_tokens=16)


def synthetic(n_train: int = 200, n_val: int = 20, n_cand: int = 10, per_word: int = 15,
              seed: int = 0, q_fill: tuple[int, int] = (0, 1),
              d_fill: tuple[int, int] = (3, 6)) -> TrainingData:
    """Queries of 0-1 filler words and one rare word, documents of 3-6 filler words and one; every training document (15 per rare
    word) is a positive of the queries of its word and a negative of all others, so that
    nothing but matching the rare word solves it. Validation: fresh documents, 1 positive and
    9 negatives per query (chance RR ~ 0.29)."""
    rng = random.Random(seed)

    def text(w: str, lo: int, hi: int) -> str:
        ws = [rng.choice(FILL) for _ in range(rng.randint(lo, hi))]
        ws.insert(rng.randrange(len(ws) + 1), w)
        return " ".join(ws)

    texts: dict[str, str] = {}
    by_word: dict[str, list[str]] = {}
    for w in RARE:
        for j in range(per_word):
            d = f"t-{w}-{j}"
            texts[d] = text(w, *d_fill)
            by_word.setdefault(w, []).append(d)
    queries, pos, neg = {}, {}, {}
    for i in range(n_train):
        w = rng.choice(RARE)
        queries[f"q{i}"] = text(w, *q_fill)
        pos[f"q{i}"] = list(by_word[w])
        neg[f"q{i}"] = [d for x in RARE if x != w for d in by_word[x]]
    vq, vqr, vc = {}, {}, {}
    for i in range(n_val):
        w = rng.choice(RARE)
        vq[f"v{i}"] = text(w, *q_fill)
        ids = [f"v{i}-p"] + [f"v{i}-n{j}" for j in range(n_cand - 1)]
        texts[ids[0]] = text(w, *d_fill)
        for d in ids[1:]:
            texts[d] = text(rng.choice([x for x in RARE if x != w]), *d_fill)
        vqr[f"v{i}"] = {ids[0]: 1}
        vc[f"v{i}"] = ids
    return TrainingData("synthetic", queries, pos, neg, texts, None, vq, vqr, vc)


def write_jsonl(path: Path, n: int = 40, scores: bool = False, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        w = RARE[i % len(RARE)]
        others = [x for x in RARE if x != w]
        obj = {"query": f"{w} {rng.choice(FILL)} {i}",
               "positive": f"{rng.choice(FILL)} {w} {rng.choice(FILL)}",
               "negatives": [f"{rng.choice(FILL)} {rng.choice(others)} {rng.choice(FILL)}"
                             for _ in range(4)]}
        if scores:
            obj["scores"] = [5.0] + [round(rng.uniform(-2, 2), 3) for _ in range(4)]
        lines.append(json.dumps(obj))
    path.write_text("\n".join(lines) + "\n")
    return path


def cfg_for(tmp_path: Path, name: str = "out", **kw):
    base = dict(model="tiny", data=str(tmp_path / "data.jsonl"), output=str(tmp_path / name),
                log_dir=str(tmp_path / "logs"), cache_dir=str(tmp_path / "cache"),
                progress=False, query_max_tokens=8, doc_max_tokens=16)
    base.update(kw)
    return make_config(**base)


def _cli(*args: str, env: dict | None = None, timeout: int = 240):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random ``ce`` checkpoint on disk (what --model reads)."""
    d = tmp_path_factory.mktemp("tiny") / "tiny-ce"
    tiny_model("ce", hidden=32, layers=4, heads=2).save_pretrained(d)
    return d


# --------------------------------------------------------------------------- losses
def test_margin_mse_by_hand():
    s = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, -1.0]])
    t = torch.tensor([[2.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # margins s: (2, 2.5), (-2, 1); teacher: (1, 1), (1, 1) -> squared errors 1, 2.25, 9, 0
    assert margin_mse(s, t).item() == pytest.approx((1 + 2.25 + 9 + 0) / 4)
    assert margin_mse(t, t).item() == 0.0


def test_lce_and_bce_by_hand():
    s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    row0 = -(2 - math.log(math.exp(2) + 2))
    row1 = -(0 - math.log(1 + math.e + math.exp(-1)))
    assert listwise_ce(s).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)

    def sp(x):  # softplus: -log sigmoid(-x)
        return math.log1p(math.exp(x))
    expect = (sp(-2) + sp(0) + sp(0) + sp(0) + sp(1) + sp(-1)) / 6
    assert bce(s).item() == pytest.approx(expect, rel=1e-6)


# --------------------------------------------------------------------------- data
def test_jsonl_negatives_never_positive_and_batches_deterministic(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"query": "q one", "positive": "doc a", "negatives": ["doc b", "doc c"]},
            # same query, its negative is the first line's positive: dropped
            {"query": "q one", "positive": "doc d", "negatives": ["doc a", "doc e"]},
            {"query": "q two", "positive": "doc b", "negatives": ["doc a", "doc f"]}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = read_jsonl(str(p), val_queries=0)
    assert "1 negatives that are positives of their query dropped" in data.notes[0]
    for q in data.queries:
        assert not set(data.positives[q]) & set(data.negatives[q])
    q1 = next(q for q, t in data.queries.items() if t == "q one")
    assert sorted(data.texts[d] for d in data.positives[q1]) == ["doc a", "doc d"]
    assert sorted(data.texts[d] for d in data.negatives[q1]) == ["doc b", "doc c", "doc e"]
    # "doc b" is a negative of q one and the positive of q two: allowed across queries
    syn = synthetic(n_train=30)
    for step in range(20):
        for g in sample_groups(syn, step, 8, 6, seed=3):
            assert g.doc_ids[0] in syn.positives[g.qid]
            assert not set(g.doc_ids[1:]) & set(syn.positives[g.qid])
            assert len(set(g.doc_ids[1:])) == 5
    a = [sample_groups(syn, s, 8, 4, seed=1) for s in range(5)]
    assert a == [sample_groups(syn, s, 8, 4, seed=1) for s in range(5)]
    assert a != [sample_groups(syn, s, 8, 4, seed=2) for s in range(5)]
    # one epoch visits every training query once
    seen = [g.qid for s in range(3) for g in sample_groups(syn, s, 10, 2, seed=1)]
    assert sorted(seen) == sorted(syn.queries)


def test_jsonl_bad_lines_are_named(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"query": "q", "positive": "p", "negatives": ["n"]})
    for bad, what in [("{not json", "not JSON"),
                      (json.dumps({"query": "q", "positive": "p", "negatives": []}),
                       "'negatives'"),
                      (json.dumps({"query": "q", "positive": "p", "negatives": ["n"],
                                   "scores": [1.0]}), "'scores' must be 2 numbers")]:
        p.write_text(good + "\n\n" + bad + "\n")
        with pytest.raises(UsageError, match=rf"bad\.jsonl:3: .*{what}"):
            read_jsonl(str(p))


@pytest.mark.data
def test_irds_training_data_with_bm25_negatives(shared_data, tmp_path, monkeypatch):
    import os
    import sys

    if "ir_datasets" in sys.modules and not os.environ.get("MB_IRDS_SUBPROCESS"):
        # ir_datasets fixes its data folder when first imported: run in a fresh interpreter
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"{__file__}::test_irds_training_data_with_bm25_negatives"],
                           env=dict(os.environ, MB_IRDS_SUBPROCESS="1"), capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        return
    home = tmp_path / "irds"
    subprocess.run(["bash", str(shared_data / "stage-ir-datasets.sh"), str(home)], check=True,
                   capture_output=True)
    monkeypatch.setenv("IR_DATASETS_HOME", str(home))
    from mice_bench.training.data import load_training_data

    data = load_training_data("beir/scifact/train", negatives_depth=20, val_queries=5,
                              val_depth=10, limit_queries=15, cache_dir=tmp_path / "c")
    import ir_datasets

    qrels: dict = {}
    for q in ir_datasets.load("beir/scifact/train").qrels_iter():
        qrels.setdefault(q.query_id, {})[q.doc_id] = q.relevance
    assert len(data.queries) == 15 and len(data.val_queries) == 5
    assert not set(data.queries) & set(data.val_queries)
    for q in data.queries:
        rel = {d for d, g in qrels[q].items() if g > 0}
        assert set(data.positives[q]) == rel
        assert data.negatives[q] and not set(data.negatives[q]) & rel
        assert q not in data.negatives[q]  # BEIR: a document with the query's id never counts
    assert all(len(c) == 10 for c in data.val_candidates.values())
    # the first stage run is cached: a second load reads it back identically
    again = load_training_data("beir/scifact/train", negatives_depth=20, val_queries=5,
                               val_depth=10, limit_queries=15, cache_dir=tmp_path / "c")
    assert again.fingerprint() == data.fingerprint()
    with pytest.raises(UsageError, match="no queries or no qrels|unknown ir_datasets id"):
        load_training_data("beir/scifact", cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- learning
@pytest.fixture
def one_thread():
    """Training a tiny model from scratch is chaotic: pin the float summation order (one
    thread) so that the fixed seed gives the same trajectory wherever the test runs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("variant,steps,batch,lr", [("ce", 300, 32, 2e-3),
                                                    ("mice-l1+2", 400, 16, 2e-3),
                                                    ("colbert", 100, 16, 1e-3)])
def test_tiny_model_learns_the_synthetic_task(tmp_path, one_thread, variant, steps, batch, lr):
    data = synthetic()
    model = tiny_model(variant)
    cfg = cfg_for(tmp_path, variant=variant, loss="lce", group_size=8, batch_size=batch,
                  steps=steps, lr=lr, warmup=10, weight_decay=0.0, val_every=50,
                  val_queries=20, val_metric="RR@10")
    before = validate_model(model, data, cfg)["RR@10"]
    res = train(cfg, model=model, data=data)
    assert before < 0.6, f"{variant}: already solved before training ({before})"
    assert res.best_metrics["RR@10"] > 0.9, (variant, res.validation_curve)
    assert res.pairs_per_s and res.pairs_per_s > 0
    log = json.loads(res.log_path.read_text())
    assert log["schema"] == "mice-bench/training" and log["schema_version"] == 1
    assert log["status"] == "finished" and log["data_fingerprint"] == data.fingerprint()
    assert [v["step"] for v in log["curves"]["validation"]] == list(range(50, steps + 1, 50))
    assert log["curves"]["loss"][-1]["loss"] < log["curves"]["loss"][0]["loss"]
    assert log["throughput"]["pairs_per_s"] > 0 and "torch" in log["environment"]


def test_a_validation_tie_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    """The best checkpoint is the first to reach the best value: a later validation that only
    equals it does not replace it (values given here, step by step)."""
    from mice_bench.training import trainer

    values = iter([0.4, 0.7, 0.7, 0.5])             # validations at steps 2, 4, 6, 8
    monkeypatch.setattr(trainer, "validate_model",
                        lambda *a, **k: {"RR@10": next(values), "nDCG@10": 0.0})
    cfg = cfg_for(tmp_path, variant="ce", group_size=4, batch_size=8, steps=8, lr=1e-3,
                  val_every=2, val_queries=4, val_metric="RR@10")
    res = train(cfg, model=tiny_model("ce", hidden=32, layers=2),
                data=synthetic(n_train=40, n_val=4))
    assert res.best_step == 4 and res.best_metrics["RR@10"] == 0.7
    log = json.loads(res.log_path.read_text())
    assert log["best"]["step"] == 4
    assert [v["step"] for v in log["curves"]["validation"]] == [2, 4, 6, 8]


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_identical_scores(tmp_path):
    from mice_bench.backbone import load_backbone
    from mice_bench.executors import make_executor
    from mice_bench.model import InteractionModel

    data = synthetic(n_train=40, n_val=4)
    model = tiny_model("mice-l1+2", hidden=32)
    cfg = cfg_for(tmp_path, variant="mice-l1+2", group_size=4, batch_size=8, steps=6,
                  lr=1e-3, val_queries=4)
    res = train(cfg, model=model, data=data)
    # the output is the best validation checkpoint; re-save the final weights to compare
    model.save_pretrained(tmp_path / "final")
    qs = [data.val_queries[q] for q in data.val_candidates for _ in data.val_candidates[q]]
    ds = [data.texts[d] for q in data.val_candidates for d in data.val_candidates[q]]
    want = model.executor().score_pairs(qs, ds)
    back = InteractionModel.from_pretrained(tmp_path / "final")
    assert str(back.spec) == "mice-l1+2"
    assert torch.equal(back.executor().score_pairs(qs, ds), want)
    # what `effectiveness --model DIR --variants mice-l1+2` does
    ex = make_executor("mice-l1+2", load_backbone(str(tmp_path / "final")),
                       query_max_tokens=8, doc_max_tokens=16)
    assert torch.allclose(ex.score_pairs(qs, ds), want, atol=1e-6)
    assert (res.output / "mice_bench.json").exists()
    assert json.loads((res.output / "training.json").read_text())["selected"] == res.selected


class _Kill(TrainReporter):
    def __init__(self, at: int):
        self.at = at

    def step(self, step, loss, pairs_per_s, lr):
        if step == self.at:
            raise KeyboardInterrupt("killed")


def test_resume_ends_with_the_same_weights(tmp_path):
    data = synthetic(n_train=40, n_val=4)
    kw = dict(variant="ce", group_size=4, batch_size=8, steps=10, lr=1e-3, warmup=3,
              checkpoint_every=3, val_every=5, val_queries=4)
    a = tiny_model("ce", hidden=32)
    train(cfg_for(tmp_path, "a", **kw), model=a, data=data)
    b = tiny_model("ce", hidden=32)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "b", **kw), _Kill(8), model=b, data=data)
    assert not (tmp_path / "b").exists()
    assert sorted(p.name for p in (tmp_path / "b.train").glob("checkpoint-*.pt")) == \
        ["checkpoint-000000005.pt", "checkpoint-000000006.pt"]
    with pytest.raises(UsageError, match="already exists"):
        train(cfg_for(tmp_path, "b", **kw), model=tiny_model("ce", hidden=32), data=data)
    c = tiny_model("ce", hidden=32, seed=5)  # other initial weights: the checkpoint wins
    res = train(cfg_for(tmp_path, "b", resume=True, **kw), model=c, data=data)
    sa, sc = a.state_dict(), c.state_dict()
    assert sa.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k
    log_a = json.loads((tmp_path / "logs" / "a.json").read_text())
    log_b = json.loads((tmp_path / "logs" / "b.json").read_text())
    def strip(curves):  # timings differ; losses, learning rates, validations do not
        return {k: [{f: v for f, v in row.items() if f != "pairs_per_s"} for row in rows]
                for k, rows in curves.items()}
    assert strip(log_a["curves"]) == strip(log_b["curves"])
    assert res.best_step == log_a["best"]["step"]
    with pytest.raises(UsageError, match=r"different configuration \(lr: 0.001 then, 0.002"):
        train(cfg_for(tmp_path, "b", resume=True, **{**kw, "lr": 2e-3}),
              model=tiny_model("ce", hidden=32), data=data)


def test_overwrite_replaces_an_earlier_output_and_keeps_the_users_files(tmp_path):
    """``--overwrite`` installs the new model over the earlier run's files, never over a file
    or a folder of other files (refused before training), and keeps a file the user added."""
    data = synthetic(n_train=16, n_val=4)
    kw = dict(variant="ce", group_size=4, batch_size=8, steps=2, lr=1e-3, warmup=0,
              val_every=2, val_queries=4)
    train(cfg_for(tmp_path, "m", **kw), model=tiny_model("ce", hidden=32), data=data)
    (tmp_path / "m" / "notes.txt").write_text("mine")
    (tmp_path / "m").chmod(0o750)
    train(cfg_for(tmp_path, "m", overwrite=True, **kw), model=tiny_model("ce", hidden=32),
          data=data)
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o750
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "src.py").write_text("x")
    (tmp_path / "afile").write_text("x")
    for name, needle in (("proj", "not a mice-bench checkpoint (src.py)"),
                         ("afile", "is a file")):
        with pytest.raises(UsageError, match=re.escape(needle)):
            train(cfg_for(tmp_path, name, overwrite=True, **kw),
                  model=tiny_model("ce", hidden=32), data=data)
    assert (tmp_path / "proj" / "src.py").read_text() == "x"
    assert (tmp_path / "afile").read_text() == "x"


def test_marginmse_from_jsonl_scores(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", n=30, scores=True)
    cfg = cfg_for(tmp_path, variant="colbert", loss="marginmse", batch_size=8, steps=60,
                  lr=2e-3, warmup=0,
                  val_queries=0, log_every=5)
    res = train(cfg, model=tiny_model("colbert", hidden=32))
    assert res.selected == "last" and res.best_step is None
    curve = [x["loss"] for x in res.loss_curve]
    assert curve[-1] < curve[0] / 2, curve


# --------------------------------------------------------------------------- command line
def test_cli_bad_input_exits_2_and_keeps_files(tmp_path, tiny_dir):
    write_jsonl(tmp_path / "data.jsonl")
    base = ["-m", "mice_bench.cli", "train", "--model", str(tiny_dir), "--no-progress",
            "--log-dir", str(tmp_path / "logs"), "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cases = [
        (["--data", str(tmp_path / "data.jsonl"), "--output", str(out)], "already exists"),
        (["--data", "beir/nosuchset/train", "--output", str(tmp_path / "o1")],
         "unknown ir_datasets id"),
        (["--data", str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "o2"),
          "--variant", "mice-l13+3"], "mice-l13+3"),
        (["--data", str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "o3"),
          "--loss", "marginmse", "--teacher", str(tmp_path / "no-such-teacher")],
         "--teacher"),
        (["--data", str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "o4"),
          "--loss", "hinge"], "valid: marginmse, lce, bce"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text((tmp_path / "data.jsonl").read_text() + '{"query": "q"}\n')
    cases.append((["--data", str(bad), "--output", str(tmp_path / "o5")], "bad.jsonl:41:"))
    for args, msg in cases:
        r = _cli(*base, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert msg in " ".join(r.stderr.split()), (msg, r.stderr)
        assert "Traceback" not in r.stderr
    assert (out / "keep.txt").read_text() == "mine"
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_torchrun_two_gloo_ranks_equal_one_process(tmp_path, tiny_dir):
    """Data-parallel over 2 CPU processes (Gloo) = 1 process with the same global batch; the
    CLI output is a checkpoint `InteractionModel.from_pretrained` reads with its variant."""
    from safetensors.torch import load_file

    write_jsonl(tmp_path / "data.jsonl", n=40)
    common = ["train", "--model", str(tiny_dir), "--variant", "colbert",
              "--data", str(tmp_path / "data.jsonl"), "--steps", "6", "--batch-size", "8",
              "--group-size", "3", "--lr", "1e-3", "--warmup", "2", "--val-queries", "4",
              "--query-max-tokens", "8", "--doc-max-tokens", "16", "--no-progress",
              "--log-dir", str(tmp_path / "logs"), "--cache-dir", str(tmp_path / "cache")]
    one = _cli("-m", "mice_bench.cli", *common, "--output", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = _cli("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(29500 + os.getpid() % 1000), "-m", "mice_bench.cli", *common,
               "--output", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = 0
    init = load_file(str(tiny_dir / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
        moved += k in init and not torch.equal(init[k], a[k])
    assert moved > 10  # it trained
    la = json.loads((tmp_path / "logs" / "one.json").read_text())
    lb = json.loads((tmp_path / "logs" / "two.json").read_text())
    assert lb["world_size"] == 2 and la["world_size"] == 1
    for x, y in zip(la["curves"]["loss"], lb["curves"]["loss"]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
    from mice_bench.model import InteractionModel

    assert str(InteractionModel.from_pretrained(tmp_path / "two").spec) == "colbert"


def test_paper_recipe_is_the_reference_yaml_and_stays_overridable():
    """``--recipe paper`` against the values of xpmir/mice experiments/mice_v1/
    mice_MiniLM_l4.yaml at b4dc361, typed here by hand (steps_per_epoch 100 x max_epochs
    2000; validation_interval 50 and checkpoint_interval 100 are in epochs)."""
    c = make_config("paper", data="x.jsonl", output="o", teacher="t")
    want = dict(model="microsoft/MiniLM-L12-H384-uncased", loss="marginmse", batch_size=32,
                lr=7e-6, warmup=5000, weight_decay=0.0, adam_eps=1e-8, grad_clip=1.0,
                steps=100 * 2000, val_every=50 * 100, checkpoint_every=100 * 100,
                val_depth=100, seed=12, repeats=3, schedule="linear", dropout=True)
    assert {k: getattr(c, k) for k in want} == want
    assert c.effective_group_size == 2                       # (query, positive, negative)
    d = make_config("paper", data="x.jsonl", output="o", teacher="t", lr=1e-5,
                    dropout=False, steps=10)
    assert (d.lr, d.dropout, d.steps, d.batch_size) == (1e-5, False, 10, 32)
    assert make_config(data="x.jsonl", output="o").dropout is False     # off by default


def test_dropout_is_random_in_training_only_and_resume_keeps_it_exact(tmp_path):
    """With dropout the training forward pass differs between two calls (masks), never in
    eval mode; a run killed and resumed ends with the weights of an uninterrupted one (the
    RNG state is in the checkpoint)."""
    m = tiny_model("ce", hidden=32)
    m.dropout = True
    m.train()
    qs, ds = ["alpha beta"] * 3, ["alpha gamma delta", "beta", "zeta eta"]
    with torch.enable_grad():
        a, b = m(qs, ds), m(qs, ds)
    assert not torch.allclose(a, b)
    m.eval()
    with torch.enable_grad():
        assert torch.equal(m(qs, ds), m(qs, ds))
    m.train()
    m.dropout = False
    with torch.enable_grad():
        assert torch.equal(m(qs, ds), m(qs, ds))

    data = synthetic(n_train=40, n_val=4)
    kw = dict(variant="ce", group_size=4, batch_size=8, steps=8, lr=1e-3, warmup=2,
              checkpoint_every=3, val_every=4, val_queries=4, dropout=True)
    a = tiny_model("ce", hidden=32)
    train(cfg_for(tmp_path, "a", **kw), model=a, data=data)
    nodrop = tiny_model("ce", hidden=32)
    train(cfg_for(tmp_path, "n", **{**kw, "dropout": False}), model=nodrop, data=data)
    b = tiny_model("ce", hidden=32)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "b", **kw), _Kill(5), model=b, data=data)
    c = tiny_model("ce", hidden=32, seed=5)
    train(cfg_for(tmp_path, "b", resume=True, **kw), model=c, data=data)
    sa, sc, sn = a.state_dict(), c.state_dict(), nodrop.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k
    assert any(not torch.equal(sa[k], sn[k]) for k in sa)   # dropout did change the run


@pytest.mark.xfail(strict=True, reason="not met yet: once the tiny model starts to learn, "
                   "the bf16 loss drifts 12 % from fp32's (1.96 against 1.74 at step 70)")
def test_bf16_loss_curve_stays_within_its_tolerance_of_fp32(tmp_path, one_thread):
    """``--precision bf16`` on CPU (autocast) trains as fp32 does: every logged loss (the mean
    over its 10 steps) within 10 % of fp32's over the same batches (120 steps of a tiny ce)."""
    data = synthetic()
    curves = {}
    for prec in ("fp32", "bf16"):
        cfg = cfg_for(tmp_path, name=prec, variant="ce", loss="lce", group_size=8,
                      batch_size=16, steps=120, lr=5e-3, warmup=5, weight_decay=0.0,
                      val_every=120, val_queries=5, val_metric="RR@10", precision=prec)
        res = train(cfg, model=tiny_model("ce", hidden=32, layers=2), data=data)
        log = json.loads(res.log_path.read_text())
        curves[prec] = [p["loss"] for p in log["curves"]["loss"]]
    a, b = curves["fp32"], curves["bf16"]
    assert len(a) == len(b) >= 10 and a != b            # bf16 computed otherwise
    for i, (la, lb) in enumerate(zip(a, b)):
        assert abs(lb - la) <= 0.10 * la, (i, la, lb)
