"""Precisions beyond fp32 (``--dtype bf16 | bf16-autocast | int8 | auto``): scores checked
against Hugging Face's model run the same way by PyTorch itself (``quantize_dynamic``,
``torch.autocast``), the tolerances of ``verify``, the CPU features and ``auto``, and the
best-against-best arithmetic of the runtimes table by hand."""

from __future__ import annotations

import warnings

import pytest
import torch

from mice_bench import devices
from mice_bench.backbone import load_backbone, random_hf_model
from mice_bench.executors import make_executor
from mice_bench.latency import peers as peersmod
from mice_bench.latency.result import LatencyRowResult, RowPoint

QS = ["what is a cat", "river water climate", "protein cell disease"]
DS = ["a cat is a small animal that people keep", "the river carries water to the sea",
      "a protein in the cell fights the disease in the network of cells"]


def _hf_scores(model, idx=None) -> torch.Tensor:
    from mice_bench.backbone import packaged_tokenizer

    tok = packaged_tokenizer()
    idx = range(len(QS)) if idx is None else idx
    enc = tok([QS[i] for i in idx], [DS[i] for i in idx], padding=True, truncation=True,
              return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits[:, 0].float()


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model("minilm-l6", seed=0).eval()


def test_int8_scores_as_pytorchs_quantize_dynamic_of_the_hf_model(hf_model):
    """Our int8 ``ce`` = the Hugging Face model with every ``nn.Linear`` dynamically quantized
    by PyTorch, far closer to it than to fp32. One pair per call: dynamic quantization scales
    the activations of each call by their range, so a padded batch scores a little otherwise
    (in both)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(hf_model, {torch.nn.Linear}, dtype=torch.qint8)
    bb = load_backbone("minilm-l6", dtype="int8", seed=0)
    assert bb.precision == "int8" and bb.dtype == torch.float32
    ex = make_executor("ce", bb)
    for i in range(len(QS)):
        want = _hf_scores(q, [i])
        fp32 = _hf_scores(hf_model, [i])
        got = ex.score_pairs([QS[i]], [DS[i]])
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (got, want)
        assert (fp32 - want).abs().max() > 100 * (got - want).abs().max()
    assert bb.linear_packs.packed_calls > 0


def test_bf16_autocast_scores_as_the_hf_model_under_autocast(hf_model):
    """``bf16-autocast``: fp32 weights, products in bf16 as ``torch.autocast`` runs them:
    the scores move away from fp32, closer to HF's under the same autocast than fp32's are
    (not equal: the two models order their bf16 roundings differently)."""
    from mice_bench.backbones.precision import compute

    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _hf_scores(hf_model)
    fp32 = _hf_scores(hf_model)
    bb = load_backbone("minilm-l6", dtype="bf16-autocast", seed=0)
    assert bb.dtype == torch.float32
    with compute(bb):
        got = make_executor("ce", bb).score_pairs(QS, DS)
    assert (got - want).abs().max() < (fp32 - want).abs().max(), (got, want, fp32)
    assert (got - fp32).abs().max() > 1e-4
    # the context is what makes it autocast: without it the scores are fp32's
    plain = make_executor("ce", bb).score_pairs(QS, DS)
    assert torch.allclose(plain, fp32, atol=1e-4)


def test_bf16_weights_cast_score_as_the_hf_model_cast(hf_model):
    want = _hf_scores(random_hf_model("minilm-l6", seed=0).eval().to(torch.bfloat16))
    fp32 = _hf_scores(hf_model)
    bb = load_backbone("minilm-l6", dtype="bf16", seed=0)
    got = make_executor("ce", bb).score_pairs(QS, DS)
    assert (got - want).abs().max() < (fp32 - want).abs().max(), (got, want, fp32)
    assert (got - fp32).abs().max() > 1e-4


# ----------------------------------------------------------------------- verify's tolerances
def test_relative_error_by_hand():
    from mice_bench.verify import relative_error

    ref = torch.tensor([1.0, 3.0, 2.0])
    assert relative_error(torch.tensor([1.1, 2.9, 2.0]), ref) == pytest.approx(0.05)
    assert relative_error(ref.clone(), ref) == 0.0
    assert relative_error(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.0


@pytest.mark.parametrize("dtype", ["bf16", "bf16-autocast", "int8"])
def test_every_precision_stays_within_its_tolerance_of_fp32(dtype):
    from mice_bench.verify import DTYPE_TOLERANCE, FAST_TOLERANCE, verify_variants

    rows, _ = verify_variants("minilm-l6", "ce,mice-l3+2,colbert,biencoder,prettr-l3",
                              pairs=6, dtype=dtype)
    for r in rows:
        assert 0 < r["vs_fp32"] <= DTYPE_TOLERANCE[dtype], r
        if r["max_abs_diff"] is not None:
            assert r["max_abs_diff"] <= FAST_TOLERANCE[dtype], r


def test_a_broken_quantization_falls_outside_the_int8_tolerance(monkeypatch):
    """A quantized layer fed the wrong weight (every weight halved) is caught."""
    from mice_bench.backbones import precision
    from mice_bench.verify import DTYPE_TOLERANCE, verify_variants

    real = precision.quantize_linear
    monkeypatch.setattr(precision, "quantize_linear", lambda w, b: real(w * 0.5, b))
    rows, _ = verify_variants("minilm-l6", "ce,colbert", pairs=6, dtype="int8")
    assert all(r["vs_fp32"] > DTYPE_TOLERANCE["int8"] for r in rows), rows


def test_verify_exits_1_when_a_precision_strays(monkeypatch):
    from typer.testing import CliRunner

    from mice_bench.backbones import precision
    from mice_bench.cli import app

    # seeded texts: with 8 pairs int8 stays at 0.25 of the spread (4 or 16 pairs: 0.43, 0.47)
    ok = CliRunner().invoke(app, ["verify", "--variants", "ce", "--dtype", "int8",
                                  "--pairs", "8"])
    assert ok.exit_code == 0, ok.output
    assert "vs fp32" in ok.output
    real = precision.quantize_linear
    monkeypatch.setattr(precision, "quantize_linear", lambda w, b: real(w * 0.5, b))
    bad = CliRunner().invoke(app, ["verify", "--variants", "ce", "--dtype", "int8",
                                   "--pairs", "4"])
    assert bad.exit_code == 1 and "FAIL" in bad.output


# ----------------------------------------------------------------------- CPU features, auto
AMX = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"}
EPYC = {"avx2", "fma", "sse4_2"}


def test_cpu_features_from_flags():
    f = devices.cpu_features(AMX)
    assert f["amx_bf16"] and f["avx512_bf16"] and f["isa"] == "amx"
    g = devices.cpu_features(EPYC)
    assert not g["amx_bf16"] and not g["avx512_vnni"] and g["avx2"] and g["isa"] == "avx2"
    assert devices.cpu_features({"avx512f", "avx512_bf16"})["isa"] == "avx512-bf16"
    assert devices.cpu_features(set())["flags_read"] is False


@pytest.mark.parametrize("flags, want", [(AMX, "bf16"), (EPYC, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_has_amx(monkeypatch, flags, want):
    monkeypatch.setattr(devices, "cpu_flags", lambda: set(flags))
    assert devices.placement("cpu", "auto").dtype == want


def test_latency_auto_says_which_it_picked(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mice_bench.cli import app

    monkeypatch.setattr(devices, "cpu_flags", lambda: set(EPYC))
    out = tmp_path / "lat.json"
    r = CliRunner().invoke(app, ["latency", "--device", "cpu", "--model", "minilm-l6",
                                 "--variants", "ce", "--dtype", "auto", "--depth", "2",
                                 "--doc-tokens", "8", "--query-tokens", "4", "--batch-size",
                                 "2", "--runs", "1", "--min-seconds", "0", "--warmup", "0",
                                 "--threads", "1", "--no-progress", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "--dtype auto: fp32 (no AMX" in r.output
    import json

    doc = json.loads(out.read_text())
    assert doc["environment"]["dtype"] == "fp32"
    assert doc["environment"]["dtype_requested"] == "auto"
    assert doc["environment"]["cpu_features"]["isa"] == "avx2"


def test_int8_is_refused_on_cuda_with_the_choices():
    from mice_bench.errors import UsageError

    with pytest.raises(UsageError, match="CPU only; valid on CUDA"):
        devices.check_dtype("int8", "cuda")


# ----------------------------------------------------------------------- best against best
def _row(variant, runtime, mean, dtype, pairs=32, b=16):
    return LatencyRowResult(variant=variant, point=RowPoint(b, b, 128, 128, 32, 32, True, False),
                            latency_s={"mean": mean}, pairs_per_run=pairs,
                            throughput_pairs_per_s=pairs / mean, runtime=runtime,
                            flops={"per_pair": 1.0}, dtype=dtype)


def test_best_against_best_by_hand():
    """The issue's own figures: HF eager in bf16 624 ms is the fastest cross-encoder, MICE
    in bf16 51 ms its fastest row: 624 / 51 = 12.2x, on every row of the variant."""
    rows = [_row("ce", "torch", 2.3, "fp32"), _row("ce", "torch", 0.89, "bf16"),
            _row("ce", "hf", 0.624, "bf16"), _row("ce", "torch", 1.59, "int8"),
            _row("mice-l4+3", "torch", 0.136, "fp32"), _row("mice-l4+3", "torch", 0.051, "bf16"),
            _row("colbert", "torch", 0.020, "fp32"), _row("colbert", "torch", 0.0125, "bf16"),
            _row("colbert", "torch", 0.4, "fp32", b=8)]
    from mice_bench.latency.rows import add_speedups

    add_speedups(rows)
    peersmod.add_fastest_ce(rows)
    assert rows[4].best_vs_best == pytest.approx(0.624 / 0.051)
    assert rows[5].best_vs_best == pytest.approx(0.624 / 0.051)
    assert rows[5].variant_best and not rows[4].variant_best
    assert rows[7].best_vs_best == pytest.approx(0.624 / 0.0125)
    assert rows[2].best_vs_best == pytest.approx(1.0) and rows[2].variant_best
    assert rows[8].best_vs_best is None            # no cross-encoder at its point
    # speedups against ce stay within a precision
    assert rows[5].speedup_vs_ce == pytest.approx(0.89 / 0.051)
    assert rows[4].speedup_vs_ce == pytest.approx(2.3 / 0.136)
    assert rows[4].fastest_ce == "hf bf16"


def test_runs_on_cpus_with_different_matrix_features_are_never_one_group():
    from mice_bench.latency.records import RunInfo

    def info(isa):
        return RunInfo(file="f", created="", protocol="rerank", model="minilm-l12",
                       model_description="", num_layers=12, random_weights=True,
                       hidden_size=384, device="cpu", device_name="Intel Xeon", dtype="fp32",
                       threads=2, compiled=False,
                       environment={"cpu_features": {"isa": isa}})

    assert info("amx").group != info("avx512").group
    assert info("amx").group == info("amx").group
    from mice_bench.naming import group_label

    assert "(cpu, amx)" in group_label(info("amx").group)
