"""Model cards: what the Hugging Face Hub's own card parser reads from a checkpoint's README.

The checkpoint is trained here by mice-bench's trainer (a tiny MICE model, a few steps) and
measured by the real ``mice-bench effectiveness`` command (a subprocess, on the tiny DL19
fixture), next to another checkpoint of the same variant; the card's front matter is read
with ``huggingface_hub`` (``ModelCard.load``, ``metadata_load``) and PyYAML, its result
values are compared with the result files as :class:`EffectivenessResult` reads them, its
matrix with what ``mice-bench variants show`` prints, and its loading snippet is run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

hub = pytest.importorskip("huggingface_hub", reason="pip install huggingface_hub")
yaml = pytest.importorskip("yaml", reason="pip install pyyaml")

from mice_bench.effectiveness.result import EffectivenessResult  # noqa: E402
from mice_bench.checkpoint_files.card import render_card, write_card  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "effectiveness"
VARIANT = "mice-l1+2"
LAYERS = 3
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           MICE_BENCH_ALLOW_DOWNLOAD="0", OMP_NUM_THREADS="1", COLUMNS="1000",
           TOKENIZERS_PARALLELISM="false")


def _tiny(variant: str, seed: int = 0):
    from transformers import BertConfig

    from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model
    from mice_bench.model import InteractionModel

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=LAYERS,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                     num_labels=1)
    bb = from_hf(random_hf_model(cfg, seed=seed), packaged_tokenizer(), name="tiny")
    return InteractionModel(bb, variant, query_max_tokens=8, doc_max_tokens=16)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """``ck``: trained by ``train`` (3 steps); ``other``: another checkpoint of the variant;
    ``out``: ``mice-bench effectiveness`` results of both, for ``VARIANT`` and ``ce``."""
    from mice_bench.training import make_config, train

    t = tmp_path_factory.mktemp("card")
    data = t / "data.jsonl"
    data.write_text("".join(json.dumps({"query": f"apple {i}", "positive": "an apple pie",
                                        "negatives": ["a river", "a stone", "a car"]}) + "\n"
                            for i in range(16)))
    cfg = make_config(model="tiny", variant=VARIANT, data=str(data), output=str(t / "ck"),
                      log_dir=str(t / "logs"), cache_dir=str(t / "cache"), progress=False,
                      query_max_tokens=8, doc_max_tokens=16, steps=3, batch_size=4,
                      val_queries=0, warmup=0, seed=7)
    trained = train(cfg, model=_tiny(VARIANT))
    _tiny(VARIANT, seed=1).save_pretrained(t / "other")
    home = t / "irds" / "msmarco-passage" / "trec-dl-2019"   # the fixture as DL19
    home.mkdir(parents=True)
    shutil.copy(FIX / "queries.tsv", home / "queries.tsv")
    shutil.copy(FIX / "qrels.txt", home / "qrels")
    r = subprocess.run(
        [sys.executable, "-m", "mice_bench.cli", "effectiveness", "--datasets", "dl19",
         "--model", f"ck={t / 'ck'}", "--model", f"other={t / 'other'}",
         "--variants", f"{VARIANT},ce", "--first-stage", f"run:{FIX / 'run.txt'}",
         "--docs", str(FIX / "docs.jsonl"), "--output-dir", str(t / "out"),
         "--cache-dir", str(t / "cache"), "--no-progress"],
        env=dict(ENV, IR_DATASETS_HOME=str(t / "irds")), capture_output=True, text=True,
        timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    mine = next(p for p in (t / "out").rglob(f"{VARIANT}.json") if p.parent.name == "ck")
    return SimpleNamespace(t=t, ck=t / "ck", other=t / "other", out=t / "out", data=data,
                           trained=trained, cfg=cfg, result=mine)


def _split(text: str) -> tuple[str, str]:
    m = re.match(r"---\n(.*?\n)---\n(.*)", text, re.S)
    assert m, "no YAML front matter"
    return m.group(1), m.group(2)


def _card(path: Path):
    """(front matter as the Hub reads it, PyYAML's reading, the body)."""
    card = hub.ModelCard.load(str(path))
    fm, body = _split(path.read_text())
    assert yaml.safe_load(fm) == hub.metadata_load(path)
    return card, yaml.safe_load(fm), body


def _section(body: str, title: str) -> str:
    return body.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_front_matter_and_results_of_this_checkpoint_only(work):
    card, fm, body = _card(write_card(work.ck, results_dirs=[work.out]))
    d = card.data
    assert d.library_name == "mice-bench" and d.pipeline_tag == "text-ranking"
    assert {"mice-bench", f"variant:{VARIANT}", "family:mice"} <= set(d.tags)
    assert d.base_model is None                          # "tiny" is no hub id
    # the training record: what the trainer was asked for and reported
    assert d.datasets == [str(work.data)]
    tr = fm["mice_bench"]["training"]
    assert tr["steps"] == work.trained.steps == 3 and tr["loss_fn"] == work.cfg.loss
    assert tr["loss"] == pytest.approx(work.trained.final_loss) and tr["seed"] == 7
    assert tr["data"] == str(work.data) and fm["mice_bench"]["variant"] == VARIANT
    # model-index: exactly the ck / VARIANT result, values as the result reader reads them
    res = EffectivenessResult.load(work.result)
    assert res.config["model"] == str(work.ck) and res.variant == VARIANT
    assert d.model_name == work.ck.name
    evs = d.eval_results
    assert evs and {e.dataset_type for e in evs} == {res.dataset["irds_id"]}
    assert {e.task_type for e in evs} == {"text-ranking"}
    assert {e.dataset_name for e in evs} == {"dl19"}
    got = {e.metric_name: e.metric_value for e in evs}
    assert got == {m: round(v, 4) for m, v in res.aggregates.items()}
    assert {e.metric_type for e in evs} >= {"ndcg_at_10", "mrr_at_10"}
    table = _section(body, "Results")
    assert str(work.result) in table and "No measured results" not in table
    others = [p for p in work.out.rglob("*.json") if p != work.result and p.name != "summary.json"]
    assert len(others) == 4 and not any(str(p) in body for p in others)
    row = next(line for line in table.splitlines() if str(work.result) in line)
    assert f"{res.aggregates['nDCG@10']:.4f}" in row and res.first_stage in row


def test_without_results_no_model_index_and_the_card_says_so(work, tmp_path):
    saved = work.ck / "README.md"                       # written by save_pretrained (train)
    elsewhere = tmp_path / "foreign"                    # another checkpoint's, another variant's
    for p in work.out.rglob("*.json"):
        if p != work.result:
            dst = elsewhere / p.relative_to(work.out)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst)
    for path in (saved, write_card(work.ck, results_dirs=[elsewhere])):
        card, fm, body = _card(path)
        assert "model-index" not in fm and not card.data.eval_results
        assert "No measured results" in _section(body, "Results")
    write_card(work.ck, results_dirs=[work.out])        # (the card the other tests expect)


def test_a_result_older_than_the_weights_is_not_used(work):
    w = work.ck / "model.safetensors"
    st = w.stat()
    newer = work.result.stat().st_mtime + 60            # the weights rewritten after it
    os.utime(w, (newer, newer))
    try:
        card, fm, body = _card(write_card(work.ck, results_dirs=[work.out]))
        assert "model-index" not in fm and "No measured results" in body
    finally:
        os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    card, fm, _ = _card(write_card(work.ck, results_dirs=[work.out]))
    assert card.data.eval_results


def test_body_matrix_loading_snippet_and_no_other_library(work):
    _, _, body = _card(write_card(work.ck, results_dirs=[work.out]))
    shown = subprocess.run([sys.executable, "-m", "mice_bench.cli", "variants", "show", VARIANT,
                            "--layers", str(LAYERS)], env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr
    block = _section(body, "What the variant removes").split("```\n", 1)[1].split("```")[0]
    assert block.strip() == shown.stdout.strip()
    load = _section(body, "Load it")
    assert "No other library runs this variant" in load
    assert "sentence_transformers" not in load and "pylate" not in load
    code = load.split("```python\n", 1)[1].split("```")[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=work.ck.parent, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from mice_bench import Reranker

    want = Reranker.from_pretrained(str(work.ck)).predict([("what is a cat",
                                                            "a cat is an animal")])
    got = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", r.stdout)]
    assert got == pytest.approx([float(x) for x in want], abs=1e-4), r.stdout


@pytest.mark.parametrize("variant,tags,says_none", [
    ("mask1", {"variant:mask1", "family:mask1"}, True),
    ("ce", {"variant:ce", "sentence-transformers", "cross-encoder"}, False),
    ("biencoder", {"variant:biencoder", "family:biencoder", "sentence-transformers"}, False),
])
def test_cards_of_other_variants(variant, tags, says_none, tmp_path):
    d = _tiny(variant).save_pretrained(tmp_path / variant)
    card, fm, body = _card(Path(d) / "README.md")
    assert tags <= set(card.data.tags), card.data.tags
    assert card.data.pipeline_tag == "text-ranking" and "model-index" not in fm
    assert ("No other library runs this variant" in body) == says_none
    assert "Not trained by mice-bench" in _section(body, "Training")
    assert "datasets" not in fm and "training" not in fm["mice_bench"]


def test_base_model_only_when_it_is_a_hub_id(work, tmp_path):
    meta = json.loads((work.ck / "mice_bench.json").read_text())
    for base, want in (("sentence-transformers/all-MiniLM-L6-v2",
                        "sentence-transformers/all-MiniLM-L6-v2"),
                       (str(tmp_path), None), ("tiny", None), ("./rel/dir", None)):
        p = tmp_path / "README.md"
        p.write_text(render_card(dict(meta, base_model=base, num_layers=LAYERS), "m"))
        card, fm, _ = _card(p)
        assert card.data.base_model == want, base
        assert fm["mice_bench"]["base_model"] == base


def test_regenerating_is_deterministic(work, tmp_path):
    cmd = [sys.executable, "-m", "mice_bench.checkpoint_files.card", str(work.ck),
           "--results", str(work.out)]
    texts = []
    for _ in range(2):
        r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        texts.append((work.ck / "README.md").read_bytes())
    assert texts[0] == texts[1]
    assert write_card(work.ck, results_dirs=[work.out]).read_bytes() == texts[0]
    m = _tiny("mask1")
    a = m.save_pretrained(tmp_path / "a" / "same")
    b = m.save_pretrained(tmp_path / "b" / "same")
    assert (Path(a) / "README.md").read_bytes() == (Path(b) / "README.md").read_bytes()


def test_card_command_bad_input_exits_2(work, tmp_path):
    for args, msg in (([str(tmp_path)], "not a mice-bench checkpoint"),
                      ([str(work.ck), "--results", str(tmp_path / "none")], "not a folder")):
        before = (work.ck / "README.md").read_bytes()
        r = subprocess.run([sys.executable, "-m", "mice_bench.checkpoint_files.card", *args],
                           env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert (work.ck / "README.md").read_bytes() == before
    assert not (tmp_path / "README.md").exists()
