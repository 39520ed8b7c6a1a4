"""The one device / dtype policy (mice_bench.devices) and the three commands that use it:
fp16 on CPU is refused with exit 2 and the valid choices, before any model is loaded."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mice_bench.devices import check_dtype, placement, resolve_device
from mice_bench.errors import UsageError


def test_policy_units():
    assert check_dtype("fp32", "cpu") == "fp32" and check_dtype("bf16", "cpu") == "bf16"
    assert check_dtype("float32", "cpu") == "fp32"          # the long names are accepted
    with pytest.raises(UsageError, match="valid on CPU: fp32, bf16"):
        check_dtype("fp16", "cpu")
    with pytest.raises(UsageError, match="valid on CPU"):
        check_dtype("float16", "cpu")
    with pytest.raises(UsageError, match="valid: fp32, bf16, bf16-autocast, int8, fp16, auto"):
        check_dtype("int4", "cpu")
    assert check_dtype("int8", "cpu") == "int8"
    with pytest.raises(UsageError, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(UsageError, match="CUDA is not available"):
            placement("cuda:0", "fp32")
    assert placement("cpu", "bfloat16").dtype == "bf16"


@pytest.fixture(scope="module")
def app():
    from mice_bench.cli import app

    return app


# a model path that does not exist: had the command loaded the model before checking the
# dtype, the error would be about the model
@pytest.mark.parametrize("args", [
    ["latency", "--model", "/nonexistent/model", "--device", "cpu", "--dtype", "fp16"],
    ["effectiveness", "--datasets", "scifact", "--variants", "bm25", "--device", "cpu",
     "--dtype", "fp16"],
    ["verify", "--model", "/nonexistent/model", "--device", "cpu", "--dtype", "fp16"],
], ids=["latency", "effectiveness", "verify"])
def test_fp16_on_cpu_is_refused_by_every_command(app, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # nothing may be written either
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "fp16 is not supported on CPU" in res.output
    assert "fp32, bf16" in res.output.replace("\n", " ")
    assert list(tmp_path.iterdir()) == []
