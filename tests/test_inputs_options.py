"""Option values that contradict each other or cannot mean anything end in one line (exit 2)
before any work, instead of a run that ignores them, a wrong verdict or a plan that would
fail: verify's tolerance, latency's empty variant list and rerank-only options under the
paper protocol, and a study's measures and depth (refused by ``run --dry-run`` already)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.study import StudyError, load_study

from test_reliability import assert_usage_error


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_verify_tolerance_must_be_a_positive_number(value):
    """An impossible tolerance is the input's fault (exit 2), not a failed check (exit 1)."""
    r = CliRunner().invoke(app, ["verify", "--model", "minilm-l6", "--pairs", "2",
                                 "--variants", "ce", "--tolerance", value])
    assert_usage_error(r, "--tolerance", "finite number > 0")


@pytest.mark.parametrize("args,needles", [
    (["--variants", ""], ["--variants is empty"]),
    (["--variants", " , "], ["--variants is empty"]),
    (["--protocol", "paper", "--query-tokens", "5"], ["--query-tokens", "rerank protocol"]),
    (["--protocol", "paper", "--depth", "5", "--query-tokens", "3"],
     ["--query-tokens and --depth", "rerank protocol"]),
])
def test_latency_options_that_would_be_ignored_are_refused(tmp_path, args, needles):
    t = time.perf_counter()
    r = CliRunner().invoke(app, ["latency", "--output", str(tmp_path / "l" / "x.json"),
                                 "--no-progress", *args])
    assert_usage_error(r, *needles)
    assert time.perf_counter() - t < 20 and not (tmp_path / "l").exists()


def _study(tmp_path: Path, eff: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text('variants = ["ce"]\n[effectiveness]\nmodels = ["minilm-l6"]\n'
                 f'datasets = ["scifact"]\n{eff}\n')
    return p


@pytest.mark.parametrize("eff,needles", [
    ('measures = ["nDCG@0"]', ["'effectiveness.measures'", "cutoff @0"]),
    ('measures = "RR(rel=0)@10"', ["'effectiveness.measures'", "rel=0"]),
    ('measures = ["bogus@3"]', ["'effectiveness.measures'", "unknown measure"]),
    ("depth = 0", ["'effectiveness.depth'", ">= 1"]),
    ('depth = 20\nmeasures = ["nDCG@10", "R@100"]', ["R@100", "depth 20"]),
])
def test_study_measures_and_depth_are_checked_when_the_study_loads(tmp_path, eff, needles):
    p = _study(tmp_path, eff)
    with pytest.raises(StudyError):
        load_study(p)
    r = CliRunner().invoke(app, ["run", str(p), "--dry-run", "--results",
                                 str(tmp_path / "res")])
    assert_usage_error(r, *needles)
    assert not (tmp_path / "res").exists()


def test_default_measures_over_a_small_depth_still_plan(tmp_path):
    """The default measures are flagged in the results, not refused (as the command does)."""
    st = load_study(_study(tmp_path, 'depth = 8\nmeasures = ["nDCG@10", "RR@10", "R@100"]'))
    assert st.effectiveness.options["depth"] == 8
