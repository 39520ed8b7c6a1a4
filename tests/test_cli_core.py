"""CLI: `mice-bench variants`, `variants show`, `verify` and exit codes."""

import pytest
from typer.testing import CliRunner

from mice_bench.cli import app

runner = CliRunner()


def test_variants_lists_every_preset():
    r = runner.invoke(app, ["variants"], terminal_width=200)
    assert r.exit_code == 0, r.output
    for name in ("ce", "mask0", "mask1", "mask2", "mask3-l{k}", "prettr-l{k}", "mice-l{m}+{n}",
                 "colbert", "biencoder"):
        assert name in r.output


def test_variants_show_text_and_png(tmp_path):
    png = tmp_path / "m.png"
    r = runner.invoke(app, ["variants", "show", "mice-l4+3", "--layers", "12", "--png", str(png)])
    assert r.exit_code == 0, r.output
    assert "layers 0-3" in r.output and "layers 4-6" in r.output and "layers 7-11: dropped" \
        in r.output
    assert "frozen" in r.output
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args", [["variants", "show", "mice-l13+3"],
                                  ["variants", "show", "nonsense"],
                                  ["verify", "--variants", "bogus"]])
def test_bad_input_exits_2_without_traceback(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert "valid names" in r.output
    # one line: the refusal and the valid names together (the error console does not wrap)
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_verify_passes_on_random_model():
    r = runner.invoke(app, ["verify", "--model", "minilm-l6", "--pairs", "3",
                            "--variants", "ce,mice-l2+3,colbert,mask1"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "reference only" in r.output and "ok" in r.output


def test_verify_fails_when_fast_and_reference_disagree(monkeypatch):
    """A difference above the tolerance exits 1 (an impossible tolerance is exit 2: see
    test_inputs_options)."""
    import mice_bench.verify as verify

    real = verify.verify_variants

    def disagreeing(*a, **kw):
        rows, bb = real(*a, **kw)
        for r in rows:
            r["max_abs_diff"] = r["max_abs_diff"] + 1.0
        return rows, bb

    monkeypatch.setattr(verify, "verify_variants", disagreeing)
    r = runner.invoke(app, ["verify", "--model", "minilm-l6", "--pairs", "3",
                            "--variants", "colbert"], terminal_width=200)
    assert r.exit_code == 1 and "FAIL" in r.output


def test_a_missing_command_module_is_an_error(monkeypatch):
    """Every command module ships with the package: one that cannot be imported stops the
    command line instead of silently dropping its commands."""
    import importlib
    import sys

    from mice_bench import cli

    assert "mice_bench.report.cli" in cli.COMMAND_MODULES
    monkeypatch.setitem(sys.modules, "mice_bench.report.cli", None)   # import fails
    monkeypatch.delitem(sys.modules, "mice_bench.cli")
    with pytest.raises(ImportError, match="mice_bench.report.cli"):
        importlib.import_module("mice_bench.cli")
