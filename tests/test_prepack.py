"""``--prepack``: linear layers on MKL-prepacked weights give PyTorch's ``F.linear`` results
(the scores of every variant within 1e-5 of the plain path, on post-norm BERT and on pre-norm
ModernBERT), apply to every row of a latency run (each row records the share of its linear
calls that ran packed, and the run's configuration says so), leave the backbone as it was
after the run, and are refused where some row would run without them."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mice_bench.backbones import prepack as P
from mice_bench.cli import app
from mice_bench.errors import UsageError
from mice_bench.executors import make_executor
from mice_bench.latency import runner as R
from mice_bench.latency.config import LatencyConfig
from mice_bench.latency.schema import check

from conftest import DOCS, QUERIES
from test_reliability import assert_usage_error

pytestmark = pytest.mark.skipif(P.available() is not None, reason="PyTorch without MKL")

VARIANTS = ["ce", "mice-l3+2", "mice-l2+2[order=self]", "colbert", "biencoder", "prettr-l3"]


@contextlib.contextmanager
def packed(bb):
    packs = P.prepack(bb)
    try:
        yield packs
    finally:
        P.unpack(bb)


# --------------------------------------------------------------------------- the product
@pytest.mark.parametrize("shape", [(1, 34, 48), (34, 48), (3, 7, 48), (1, 1, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_product_equals_f_linear(shape, bias):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 48, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    x = torch.randn(*shape, generator=g)
    packs = P.LinearPacks([w])
    with torch.inference_mode():
        got = packs.linear(x, w, b)
        again = packs.linear(x, w, b)         # the second call reuses the pack
    want = F.linear(x, w, b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(again, want, rtol=1e-6, atol=1e-6)
    assert packs.calls == 2 and packs.packed_calls == 2


def test_packed_product_of_strided_views_equals_f_linear():
    """The head reads ``x[:, 0]`` (a strided view); transposed and stepped views too."""
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(40, 48, generator=g), torch.randn(40, generator=g)
    x = torch.randn(5, 7, 48, generator=g)
    packs = P.LinearPacks([w])
    with torch.inference_mode():
        for view in (x[:, 0], x.transpose(0, 1), x[:, ::2]):
            assert not view.is_contiguous()
            torch.testing.assert_close(packs.linear(view, w, b), F.linear(view, w, b),
                                       rtol=1e-6, atol=1e-6)
    assert packs.packed_calls == 3


def test_what_is_not_packed_runs_f_linear():
    g = torch.Generator().manual_seed(1)
    w, other = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    packs = P.LinearPacks([w])
    x = torch.randn(5, 16, generator=g)
    # another weight (even one with the same values), another dtype, autograd
    torch.testing.assert_close(packs.linear(x, other), F.linear(x, other))
    torch.testing.assert_close(packs.linear(x, w.clone()), F.linear(x, w))
    xb = x.to(torch.bfloat16)
    assert packs.linear(xb, w.to(torch.bfloat16)).dtype == torch.bfloat16
    xg = x.clone().requires_grad_(True)
    y = packs.linear(xg, w)
    y.sum().backward()
    torch.testing.assert_close(xg.grad, w.sum(0).expand(5, 16))
    assert packs.calls == 4 and packs.packed_calls == 0


def test_a_weight_is_packed_for_a_bounded_number_of_row_counts():
    w = torch.randn(8, 16)
    packs = P.LinearPacks([w])
    with torch.inference_mode():
        for rows in range(1, P.MAX_SHAPES + 3):
            x = torch.randn(rows, 16)
            torch.testing.assert_close(packs.linear(x, w), F.linear(x, w), rtol=1e-6,
                                       atol=1e-6)
    assert packs.packed_calls == P.MAX_SHAPES and packs.calls == P.MAX_SHAPES + 2


def test_linear_weights_are_every_matrix_of_the_layers_and_the_head(tiny_bb):
    ws = P.linear_weights(tiny_bb)
    # 6 matrices per layer (q, k, v, o, ffn in, ffn out), 4 more where a MICE executor built
    # on this (shared) backbone added cross-attention weights, and the head's
    per_layer = [6 + (4 if lw.cross is not None else 0) for lw in tiny_bb.layers]
    head = sum(getattr(tiny_bb, n) is not None for n in ("emb_proj_w", "pooler_w", "cls_w"))
    assert len(ws) == sum(per_layer) + head
    assert all(any(w is p for p in tiny_bb.parameters()) for w in ws)


# --------------------------------------------------------------------------- the scores
def _scores(bb, variant):
    ex = make_executor(variant, bb)
    pairs = ex.score_pairs(QUERIES * 2, DOCS + DOCS[::-1], batch_size=3)
    ranked = ex.rerank(QUERIES[1], DOCS, batch_size=2)
    return torch.cat([pairs, ranked])


def _same_scores(bb, variants):
    for v in variants:
        plain = _scores(bb, v)
        with packed(bb) as packs:
            fast = _scores(bb, v)
        spread = float(plain.max() - plain.min())
        assert spread > 1e-3, f"{v}: degenerate scores {plain}"
        assert float((fast - plain).abs().max()) <= 1e-5 * max(spread, 1.0), v
        assert packs.calls > 0 and packs.packed_calls == packs.calls, (v, packs.calls,
                                                                       packs.packed_calls)
        assert bb.linear_packs is None


class _CountLinear(torch.overrides.TorchFunctionMode):
    """Counts the ``F.linear`` calls that run (a product that bypassed the packs)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["ce", "mice-l3+2", "colbert", "biencoder"])
def test_no_product_of_a_prepacked_backbone_bypasses_the_packs(tiny_bb, variant):
    ex = make_executor(variant, tiny_bb)
    with packed(tiny_bb) as packs, torch.inference_mode(), _CountLinear() as plain:
        ex.rerank(QUERIES[0], DOCS, batch_size=2)
    assert packs.packed_calls > 0 and plain.n == 0


def test_prepacked_scores_equal_the_plain_path_bert(tiny_bb):
    _same_scores(tiny_bb, VARIANTS)


def test_prepacked_scores_equal_the_plain_path_modernbert():
    from mice_bench.backbone import from_hf
    from oracle.reference import bert_tokenizer, perturbed_modernbert_cls

    bb = from_hf(perturbed_modernbert_cls(num_layers=4, seed=3), bert_tokenizer())
    _same_scores(bb, ["ce", "mice-l2+1", "colbert", "biencoder"])


def test_a_converted_copy_runs_plain(tiny_bb):
    """The packs belong to the weights they packed: a copy of the backbone (other tensors)
    multiplies its own weights, never the packed originals."""
    with packed(tiny_bb):
        copy = tiny_bb.converted(dtype=torch.float32)
        got = _scores(copy, "colbert")
    assert copy.linear_packs is None or copy.linear_packs.packed_calls == 0
    with torch.no_grad():
        for p in copy.parameters():
            p.mul_(1.5)                 # the copy's own weights: its scores must move
    moved = _scores(copy, "colbert")
    want = _scores(tiny_bb, "colbert")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((moved - want).abs().max()) > 1e-3


# --------------------------------------------------------------------------- latency runs
def _config(model, **kw):
    return LatencyConfig(model=model, variants=["ce", "mice-l3+2", "colbert", "biencoder"],
                         batch_sizes=[2], doc_tokens=[12], query_tokens=4, depth=4, warmup=1,
                         runs=2, min_seconds=0, threads=1, **kw)


def test_every_row_of_a_prepack_run_is_prepacked(tiny_bb):
    doc = R.run_latency(_config("tiny", prepack=True), backbone=tiny_bb).to_doc()
    check(doc)
    assert doc["config"]["prepack"] is True
    assert {r["variant"] for r in doc["rows"]} == {"ce", "mice-l3+2", "colbert", "biencoder"}
    for r in doc["rows"]:
        assert r["prepacked"] == 1.0, r["variant"]
        assert any("MKL-prepacked weights" in n for n in r["notes"]), r["notes"]
    assert tiny_bb.linear_packs is None          # the backbone is left as it was


def test_a_plain_run_records_no_prepacking(tiny_bb):
    doc = R.run_latency(_config("tiny"), backbone=tiny_bb).to_doc()
    check(doc)
    assert doc["config"]["prepack"] is False
    assert all(r["prepacked"] is None for r in doc["rows"])
    assert not any("prepacked" in n for r in doc["rows"] for n in r["notes"])


def test_the_backbone_is_unpacked_when_a_run_fails(tiny_bb, monkeypatch):
    def boom(*a, **k):
        assert tiny_bb.linear_packs is not None
        raise RuntimeError("boom")

    monkeypatch.setattr(R, "sweep_points", boom)
    with pytest.raises(RuntimeError, match="boom"):
        R.run_latency(_config("tiny", prepack=True), backbone=tiny_bb)
    assert tiny_bb.linear_packs is None


@pytest.mark.parametrize("extra,needle", [
    (dict(compile=True), "--compile"),
    (dict(peers=["hf"]), "--peers"),
    (dict(dtype="bf16"), "--dtype bf16"),
])
def test_prepack_refuses_rows_it_would_not_reach(extra, needle):
    with pytest.raises(UsageError, match="--prepack") as e:
        _config("tiny", prepack=True, **extra).resolved()
    assert needle in str(e.value)


def test_cli_refuses_prepack_with_compile_before_any_work(tmp_path):
    out = tmp_path / "lat.json"
    r = CliRunner().invoke(app, ["latency", "--model", "minilm-l6", "--prepack", "--compile",
                                 "--output", str(out)])
    assert_usage_error(r, "--prepack", "--compile")
    assert not out.exists()


def test_a_prepack_run_is_its_own_point_in_tables(tiny_bb, tmp_path):
    """Reports keep a --prepack run beside the plain run of the same point (neither replaces
    the other), and the seed's side-by-side table shows the plain one."""
    from mice_bench.latency import table as lt
    from mice_bench.latency.records import records
    from mice_bench.latency.result import LatencyResult

    rows = []
    for name, on in (("plain", False), ("prepack", True)):
        res = R.run_latency(_config("tiny", prepack=on), backbone=tiny_bb)
        res.save(tmp_path / f"{name}.json")
        rows += records(LatencyResult.load(tmp_path / f"{name}.json"), f"{name}.json")[1]
    kept = lt.dedupe(rows)
    assert {(r.variant, r.run.file) for r in kept} == {(r.variant, r.run.file) for r in rows}
    groups = lt.by_group(rows, deduped=False)
    assert len(groups) == 1
    for group, grp in groups.items():
        table = lt.side_by_side_table(group, grp)
        assert "plain.json" in table.caption and "prepack.json" not in table.caption
