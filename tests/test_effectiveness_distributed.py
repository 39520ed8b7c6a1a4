"""``effectiveness`` under ``torchrun``: two Gloo processes on the CPU shard the queries (and
the documents they need) and rank 0 merges; every written result equals the one-process run.

The one-process run is the independent check: it never touches the sharding code (one rank,
no gather), and the comparison is on the files a user reads (per-query values, TREC runs,
summary cells and marks).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stage_dl19_fixture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "effectiveness"


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together, so none is handed out twice)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(tmp: Path, out: str, nproc: int, *args: str) -> subprocess.CompletedProcess:
    home = stage_dl19_fixture(tmp / "irds")
    env = dict(os.environ, IR_DATASETS_HOME=str(home), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MICE_BENCH_ALLOW_DOWNLOAD="0", OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "mice_bench.cli"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-port", str(_free_ports(1)[0]), "-m", "mice_bench.cli"]
    return subprocess.run(
        [*launcher, "effectiveness", "--datasets", "dl19", "--model", "minilm-l6",
         "--docs", str(FIX / "docs.jsonl"), "--batch-size", "4", "--no-progress",
         "--output-dir", str(tmp / out), "--cache-dir", str(tmp / f"cache-{out}"), *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def _results(folder: Path) -> dict[str, dict]:
    return {str(f.relative_to(folder)): json.loads(f.read_text())
            for f in sorted(folder.rglob("*.json")) if f.name != "summary.json"}


def _cells(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())["summary"]
    return {r["variant"]: r["cells"] for r in s["rows"]}


@pytest.mark.parametrize("args", [
    ["--variants", "bm25,ce,colbert,mice-l4+2", "--first-stage", f"run:{FIX}/run.txt"],
    ["--variants", "biencoder", "--first-stage", "full", "--depth", "5"],
], ids=["rerank", "full"])
def test_two_gloo_ranks_write_what_one_process_writes(tmp_path, args):
    one = _run(tmp_path, "one", 1, *args)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(tmp_path, "two", 2, *args)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) >= 2
    model_files = 0
    for name in a:
        assert b[name]["per_query"].keys() == a[name]["per_query"].keys(), name
        for q, vals in a[name]["per_query"].items():
            assert b[name]["per_query"][q] == pytest.approx(vals, abs=1e-9), (name, q)
        run_a, run_b = (gzip.decompress((tmp_path / side / name).with_suffix(".trec.gz")
                                        .read_bytes()).decode().splitlines()
                        for side in ("one", "two"))
        assert [x.split()[:4] for x in run_a] == [x.split()[:4] for x in run_b], name
        for x, y in zip(run_a, run_b):     # the same scores: a pair's score is the pair's
            assert float(x.split()[4]) == pytest.approx(float(y.split()[4]), rel=1e-5,
                                                        abs=1e-6)
        if "bm25" not in name:
            model_files += 1
            t = b[name]["timing"]
            assert t["world_size"] == 2
            # both ranks did work, and together exactly the one process's pairs
            assert all(r["queries"] > 0 for r in t["per_rank"]), t["per_rank"]
            assert sum(r["pairs_scored"] for r in t["per_rank"]) == \
                a[name]["timing"]["pairs_scored"]
    assert model_files >= 1
    assert _cells(tmp_path / "two") == _cells(tmp_path / "one")
    # rank 0 prints the tables once
    assert two.stdout.count("results in") == 1


# --------------------------------------------------------------------------- session()
def _session_worker(rank: int, ports: list[int], out: str) -> None:
    """One rank: the first session creates the group, later sessions reuse it, ``shutdown``
    destroys it; a failing session destroys its own group; a caller's group is left alone."""
    import torch.distributed as dist

    from mice_bench import distributed
    from mice_bench.distributed import session

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    seen = {}
    with session("cpu") as (env, dev):
        seen["inside"] = dist.is_initialized()
        seen["rank"], seen["world"] = env.rank, env.world
        seen["gathered"] = env.gather(rank * 10)
        seen["bcast"] = env.broadcast("from rank 0" if env.main else None)
    seen["kept"] = dist.is_initialized()
    group = dist.group.WORLD
    # train then effectiveness in one process (the training study): the same group serves
    with session("cpu") as (env, _):
        seen["same_group"] = dist.group.WORLD is group
        seen["again"] = env.gather(rank + 1)
    distributed.shutdown()
    seen["after_shutdown"] = dist.is_initialized()
    # a session that raises destroys the group it made (its own rendezvous port: the first
    # group's store may still be up on the other rank)
    os.environ["MASTER_PORT"] = str(ports[1])
    try:
        with session("cpu"):
            raise KeyError("boom")
    except KeyError:
        seen["after_failure"] = dist.is_initialized()
    # a group that exists before the session belongs to the caller and outlives it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[2]}", rank=rank,
                            world_size=2)
    with session("cpu") as (env, _):
        env.barrier()
    distributed.shutdown()
    seen["caller_group_kept"] = dist.is_initialized()
    dist.destroy_process_group()
    # the last group is left to the atexit hook: the process must still exit cleanly
    os.environ["MASTER_PORT"] = str(ports[3])
    with session("cpu") as (env, _):
        seen["last"] = env.gather(rank)
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))


def test_session_creates_reuses_and_destroys_its_process_group(tmp_path):
    """The Gloo abort at exit ("terminate called without an active exception", seen in CI
    once in about six two-rank runs) came from ranks leaving with the group alive; the group
    a session creates is destroyed at exit (or at once when the block fails), and a second
    session in the same process reuses it rather than rendezvous again on the same port
    (that raced in CI: "connectFullMesh ... Connection refused")."""
    import torch.multiprocessing as mp

    mp.spawn(_session_worker, args=(_free_ports(4), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["inside"] and seen["kept"] and seen["same_group"], seen
        assert not seen["after_shutdown"] and not seen["after_failure"], seen
        assert seen["caller_group_kept"], seen
        assert (seen["rank"], seen["world"]) == (rank, 2)
        assert seen["bcast"] == "from rank 0"
        assert seen["gathered"] == ([0, 10] if rank == 0 else None)
        assert seen["again"] == ([1, 2] if rank == 0 else None)
        assert seen["last"] == ([0, 1] if rank == 0 else None)


def test_session_outside_torchrun_is_a_no_op(monkeypatch):
    import torch.distributed as dist

    from mice_bench.distributed import session

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with session("cpu") as (env, dev):
        assert (env.rank, env.world, env.active, str(dev)) == (0, 1, False, "cpu")
        assert not dist.is_initialized()


# --------------------------------------------------------------------------- end_rank()
class _Exited(Exception):
    pass


@pytest.fixture
def fake_exit(monkeypatch):
    """``os._exit`` replaced by a recorder (the real one would end pytest)."""
    codes: list[int] = []

    def _exit(code):
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(os, "_exit", _exit)
    return codes


@pytest.mark.parametrize("code, status", [(0, 0), (None, 0), (2, 2), ("boom", 1)])
def test_end_rank_flushes_and_leaves_with_the_exit_status(fake_exit, capsys, code, status):
    from mice_bench.distributed import end_rank

    print("last line", end="")          # unflushed output must reach the stream first
    with pytest.raises(_Exited):
        end_rank(code)
    assert fake_exit == [status]
    out, err = capsys.readouterr()
    assert out == "last line"
    assert err == ("boom\n" if code == "boom" else "")


@pytest.mark.parametrize("argv, status", [(["variants", "--layers", "6"], 0),
                                          (["variants", "--layers", "0"], 2)])
def test_cli_under_torchrun_ends_each_rank_through_end_rank(monkeypatch, fake_exit, argv,
                                                             status):
    """Under torchrun the command's exit code reaches ``os._exit`` (after the command ran);
    outside it ``main`` returns or raises SystemExit as usual."""
    from mice_bench import cli

    monkeypatch.setattr(sys, "argv", ["mice-bench", *argv])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(_Exited):
        cli.main()
    assert fake_exit == [status]
    monkeypatch.setenv("WORLD_SIZE", "1")
    if status:
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == status
    else:
        with pytest.raises(SystemExit) as e:   # Typer's standalone mode exits 0
            cli.main()
        assert e.value.code in (0, None)
    assert fake_exit == [status]


def test_end_rank_loses_no_buffered_output_in_a_real_process(tmp_path):
    """``os._exit`` skips Python's own flush: what a rank printed to a pipe must still arrive
    (the pipe, not pytest's capture, is what torchrun reads), with the command's status.
    Python's own buffering is on, as for most users (this machine sets PYTHONUNBUFFERED)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    script = ("import logging, sys; from mice_bench.distributed import end_rank; "
              "logging.basicConfig(stream=sys.stderr); logging.warning('logged'); "
              "print('printed', end=''); end_rank(3)")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env=env)
    assert p.returncode == 3
    assert p.stdout == "printed"
    assert "logged" in p.stderr
    cli = subprocess.run([sys.executable, "-m", "mice_bench.cli", "variants", "--layers", "6"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=dict(env, WORLD_SIZE="2"))
    plain = subprocess.run([sys.executable, "-m", "mice_bench.cli", "variants", "--layers",
                            "6"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env=dict(env, WORLD_SIZE="1"))
    assert cli.returncode == plain.returncode == 0
    assert cli.stdout == plain.stdout and "mice" in cli.stdout
