"""``latency`` refuses values that would hang or never fit before any work (non-finite or
absurd seconds, sizes, counts), its timing loops end by a count whatever the clock says, and
what it times are the timed runs only: a workload whose warm-up runs take another time than
its timed runs shows any warm-up counted as timed."""

from __future__ import annotations

import time

import pytest
import torch
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.errors import UsageError
from mice_bench.latency import scheduler as S
from mice_bench.latency.config import LIMITS, MAX_RUNS, LatencyConfig

from test_latency import FakeTimer
from test_reliability import assert_usage_error


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mice_bench.latency.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "bert", max_positions=512))


# --------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("args,needle", [
    (["--min-seconds", "nan"], "--min-seconds"),
    (["--min-seconds", "inf"], "--min-seconds"),
    (["--min-seconds", "-1"], "--min-seconds"),
    (["--min-seconds", "1e9"], "--min-seconds"),
    (["--protocol", "paper", "--batch-size", "1000000000"], "--batch-size 1000000000"),
    (["--batch-size", "4,1000000"], "--batch-size 1000000"),
    (["--depth", "100000000"], "--depth"),
    (["--query-tokens", "0"], "--query-tokens"),
    (["--doc-tokens", "0"], "--doc-tokens"),
    (["--warmup", "-1"], "--warmup"),
    (["--warmup", "1000000000"], "--warmup"),
    (["--runs", "0"], "--runs"),
    (["--runs", str(MAX_RUNS + 1)], "--runs"),
    (["--threads", "0"], "--threads"),
])
def test_absurd_values_are_refused_at_once(tmp_path, args, needle):
    t = time.perf_counter()
    r = CliRunner().invoke(app, ["latency", "--output", str(tmp_path / "l" / "x.json"),
                                 "--no-progress", *args])
    assert_usage_error(r, needle)
    assert time.perf_counter() - t < 20
    assert not (tmp_path / "l").exists() or not list((tmp_path / "l").iterdir())


def test_limits_are_named_in_the_message():
    with pytest.raises(UsageError, match=f"at most {LIMITS['--batch-size']:,}"):
        LatencyConfig(protocol="paper", batch_sizes=[LIMITS["--batch-size"] + 1]).resolved()
    LatencyConfig(protocol="paper", batch_sizes=[LIMITS["--batch-size"]]).resolved()
    with pytest.raises(UsageError, match="--min-seconds"):
        LatencyConfig(min_seconds=float("nan")).resolved()
    with pytest.raises(UsageError, match="--runs"):
        LatencyConfig(runs=True).resolved()       # a bool is not a count


# --------------------------------------------------------------------------- loop bounds
class WarmThenTimed:
    """The first ``warm`` runs (the warm-ups) last ``warm_s``; every later run ``timed_s``."""

    def __init__(self, warm: int, warm_s: float = 9.0, timed_s: float = 0.5):
        self.warm, self.warm_s, self.timed_s, self.calls = warm, warm_s, timed_s, 0

    def prepare(self, device):
        pass

    def run(self, t):
        self.calls += 1
        t.fake = self.warm_s if self.calls <= self.warm else self.timed_s


def test_zero_second_runs_end_by_count(monkeypatch):
    """A run that takes no time (or a min_seconds never reached) ends at max_runs."""
    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)
    wl = WarmThenTimed(0, timed_s=0.0)
    slot = S.Slot(spec="ce", ex=None, wl=wl, batch=1)
    S.time_slots([slot], torch.device("cpu"), runs=1, min_seconds=5.0, max_runs=7)
    assert len(slot.total) == 7 and wl.calls == 7


@pytest.mark.parametrize("warmup", [1, 3])
def test_warmups_are_never_timed(monkeypatch, warmup):
    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)
    wl = WarmThenTimed(warmup)
    slot = S.prepare_slot("ce", None, 4, lambda b: wl, torch.device("cpu"), warmup=warmup,
                          log=lambda m: None, doc_tokens=8)
    assert slot.total == [] and wl.calls == warmup
    S.time_slots([slot], torch.device("cpu"), runs=4, min_seconds=0.0)
    assert slot.total == [0.5] * 4 and wl.calls == warmup + 4
    assert slot.phases["interaction"] == [0.5] * 4


def test_no_warmup_times_the_first_run(monkeypatch):
    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)
    wl = WarmThenTimed(0)
    slot = S.prepare_slot("ce", None, 4, lambda b: wl, torch.device("cpu"), warmup=0,
                          log=lambda m: None, doc_tokens=8)
    S.time_slots([slot], torch.device("cpu"), runs=3, min_seconds=0.0)
    assert slot.total == [0.5] * 3 and wl.calls == 3


@pytest.mark.parametrize("schedule", ["interleaved", "sequential"])
def test_written_rows_hold_only_timed_runs(tiny_model, monkeypatch, schedule):
    """End to end: each variant's first 2 runs (its warm-ups) last 9 s, the rest 0.5 s; every
    row must report exactly 3 runs of 0.5 s."""
    from mice_bench.latency import runner as R
    from mice_bench.latency import workloads as W

    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)
    calls: dict[str, int] = {}

    def run(self, t):
        v = str(self.ex.spec)
        calls[v] = calls.get(v, 0) + 1
        t.fake = 9.0 if calls[v] <= 2 else 0.5

    monkeypatch.setattr(W.Workload, "run", run)
    cfg = LatencyConfig(model=tiny_model, variants=["ce", "mice-l2+2", "colbert"],
                        batch_sizes=[4], doc_tokens=[8], query_tokens=4, depth=8, warmup=2,
                        runs=3, min_seconds=0, threads=1, schedule=schedule)
    doc = R.run_latency(cfg).to_doc()
    assert len(doc["rows"]) == 3
    for row in doc["rows"]:
        assert row["raw_s"]["total"] == [0.5] * 3, row["variant"]
        assert row["latency_s"]["mean"] == pytest.approx(0.5)
    assert set(calls.values()) == {5}
