"""``mice-bench offline-node``: nothing lost, nothing read unchecked, nothing written outside.

Every path that stage / run / collect write is inside what the user named (or a temporary
folder the command makes and removes), seen by strace across every process of the command
and by a walk of the folders around it; a folder of the user is never deleted or replaced;
bad targets and inputs are refused in one line before any work; a staged file that differs
from the manifest's sha256 is named where the node reads it, never used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGED_BY = "mice-bench offline-node stage"


def _cli(*args: str):
    from typer.testing import CliRunner

    from mice_bench.cli import app

    return CliRunner().invoke(app, ["offline-node", *args])


def _one_line_error(r, *names: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:"), r.output
    text = " ".join(r.output.split())
    assert "Traceback" not in r.output and all(n in text for n in names), r.output


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (and every folder, as None)."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def _manifest(folder: Path) -> None:
    """A manifest that lists every file of ``folder`` with its sha256, as staging writes."""
    files = {p.relative_to(folder).as_posix(): {"sha256": hashlib.sha256(p.read_bytes())
                                                .hexdigest()}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "MANIFEST.json"}
    (folder / "MANIFEST.json").write_text(json.dumps({"staged_by": STAGED_BY,
                                                      "files": files}))


# --------------------------------------------------------------------------- stage
def test_stage_leaves_a_project_folder_as_it_was(tmp_path):
    project = tmp_path / "project"
    for rel, text in {"data/train.csv": "a,b\n", "src/main.py": "print(1)\n",
                      "notes.txt": "mine\n"}.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    before = _tree(tmp_path)
    r = _cli("stage", str(project))
    _one_line_error(r, str(project), "no MANIFEST.json", "a new folder")
    assert _tree(tmp_path) == before
    # a manifest that staging did not write, or a staged folder with a file of the user
    (project / "MANIFEST.json").write_text("{}")
    _one_line_error(_cli("stage", str(project)), "not written by")
    staged = tmp_path / "staged"
    (staged / "data").mkdir(parents=True)
    (staged / "data" / "dl19.queries.jsonl").write_text("{}\n")
    _manifest(staged)
    (staged / "data" / "mine.txt").write_text("mine\n")
    before = _tree(tmp_path)
    _one_line_error(_cli("stage", str(staged)), "holds data/mine.txt")
    assert _tree(tmp_path) == before


def test_stage_refuses_a_file_as_its_folder(tmp_path):
    target = tmp_path / "carry.tar"
    target.write_text("mine\n")
    _one_line_error(_cli("stage", str(target)), str(target), "is a file")
    _one_line_error(_cli("stage", str(target / "sub")), "is a file")
    assert target.read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == ["carry.tar"]


@pytest.mark.parametrize("args, names", [
    (["--wheel", "pytest-timeout==2.3.1", "--wheel", "torch"], ["--wheel 'torch'",
                                                                 "NAME==VERSION"]),
    (["--wheel", "torch>=2"], ["--wheel 'torch>=2'", "NAME==VERSION"]),
    (["--python-version", "312"], ["--python-version '312'", "MAJOR.MINOR"]),
])
def test_stage_checks_every_input_before_writing(tmp_path, args, names):
    r = _cli("stage", str(tmp_path / "carry"), "--cache", str(tmp_path / "cache"), *args)
    _one_line_error(r, *names)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- staged files
def _tiny_staged(tmp_path: Path) -> Path:
    """A staged folder with a packed model and one data set, its manifest as staging writes."""
    import torch
    from safetensors.torch import save_file

    from mice_bench.offline_node import formats

    carry = tmp_path / "carry"
    (carry / "model").mkdir(parents=True)
    plain = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(12, dtype=torch.float16)}, str(plain))
    formats.pack_safetensors(plain, carry / "model" / formats.SHZ_NAME)
    (carry / "model" / "config.json").write_text("{}")
    data = carry / "data"
    data.mkdir()
    (data / "dl19.queries.jsonl").write_text('{"qid": "q1", "text": "a query"}\n')
    formats.write_trec(data / "dl19.bm25.trec.gz", {"q1": {"d1": 2.0, "d2": 1.0}}, "bm25")
    with gzip.open(data / "dl19.docs.jsonl.gz", "wt") as f:
        f.write('{"doc_id": "d1", "text": "one"}\n{"doc_id": "d2", "text": "two"}\n')
    _manifest(carry)
    return carry


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def test_the_node_reads_only_staged_files_that_match_the_manifest(tmp_path):
    from mice_bench.errors import UsageError
    from mice_bench.offline_node import formats, study

    carry = _tiny_staged(tmp_path)
    restored = formats.unpack_staged_model(carry, tmp_path / "model")
    assert (restored / "model.safetensors").is_file()
    assert study.load_sets(carry, rehearsal=False)["dl19"]["cands"] == {"q1": ["d1", "d2"]}
    # cut short in transfer: named, not restored
    _cut(carry / "model" / formats.SHZ_NAME)
    r = subprocess.run([sys.executable, "-m", "mice_bench.offline_node.formats", "unpack-model",
                        str(carry), str(tmp_path / "model2")], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 1 and not (tmp_path / "model2").exists()
    assert f"model/{formats.SHZ_NAME}: differs from the sha256 in MANIFEST.json" in r.stderr
    # an edited candidate file: the study names it
    (carry / "data" / "dl19.bm25.trec.gz").write_bytes(
        gzip.compress(b"q1 Q0 d2 1 9.0 bm25\n", mtime=0))
    with pytest.raises(UsageError, match="dl19.bm25.trec.gz: differs from the sha256"):
        study.load_sets(carry, rehearsal=False)


def test_collect_checks_the_staged_candidates_it_compares_with(tmp_path, shared_data):
    from mice_bench.errors import UsageError
    from mice_bench.offline_node import collect, formats

    carry = _tiny_staged(tmp_path)
    run = tmp_path / "run"
    formats.write_trec(run / "runs" / "ce.dl19.trec.gz", {"19335": {"d1": 1.0}}, "ce")
    assert "bm25" in collect.evaluate(run, carry)["datasets"]["dl19"]["rows"]
    _cut(carry / "data" / "dl19.bm25.trec.gz")
    with pytest.raises(UsageError, match="dl19.bm25.trec.gz: differs from the sha256"):
        collect.evaluate(run, carry)


# --------------------------------------------------------------------------- run
def test_run_refuses_an_out_that_holds_other_files(tmp_path):
    carry = _tiny_staged(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    _one_line_error(_cli("run", str(carry), "--out", str(out)), f"--out {out}",
                    "holds other files")
    _one_line_error(_cli("run", str(carry), "--out", str(out / "notes.txt")), "is a file")
    assert os.listdir(out) == ["notes.txt"]


# --------------------------------------------------------------------------- collect
def _archive(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


RUN = {"./steps.tsv": b"env\tok\t0\t3\n", "./run.log": b"# run 2026-01-02T03:04:05Z\n",
       "./env.txt": b'{"cuda_available": false}\n', "./logs/env.log": b"ok\n"}


@pytest.mark.parametrize("files, links, names", [
    ({"./photos/cat.jpg": b"x", "./notes.txt": b"mine"}, None,
     ["not a node run's result", "photos/cat.jpg"]),
    ({**RUN, "./notes.txt": b"mine"}, None, ["notes.txt"]),
    ({k: v for k, v in RUN.items() if k != "./steps.tsv"}, None, ["no steps.tsv"]),
    ({**RUN, "../escape.txt": b"x"}, None, ["../escape.txt", "outside the archive"]),
    ({**RUN, "/abs.txt": b"x"}, None, ["/abs.txt", "outside the archive"]),
    (RUN, {"./logs/passwd": "/etc/passwd"}, ["logs/passwd", "link"]),
])
def test_collect_refuses_what_is_not_a_node_run(tmp_path, files, links, names):
    src = _archive(tmp_path / "a.tar.gz", files, links)
    dest = tmp_path / "dest"
    _one_line_error(_cli("collect", str(src), "--dest", str(dest), "--no-report",
                         "--staged", str(tmp_path / "none")), *names)
    assert sorted(os.listdir(tmp_path)) == ["a.tar.gz"]


def test_collect_writes_only_a_new_folder_named_by_the_tag(tmp_path):
    src = _archive(tmp_path / "a.tar.gz", RUN)
    dest = tmp_path / "deep" / "dest"
    for tag in ("../../x", "a/b", "..", ".hidden"):
        _one_line_error(_cli("collect", str(src), "--dest", str(dest), "--tag", tag,
                             "--no-report"), f"--tag {tag!r}", "one folder name")
    assert sorted(os.listdir(tmp_path)) == ["a.tar.gz"]
    r = _cli("collect", str(src), "--dest", str(dest), "--no-report", "--staged",
             str(tmp_path / "none"))
    assert r.exit_code == 0, r.output
    (folder,) = dest.iterdir()
    assert folder.name == "cpu-20260102-030405"
    assert (folder / "steps.tsv").read_bytes() == RUN["./steps.tsv"]
    (folder / "notes.txt").write_text("mine\n")  # the user's, after the first collect
    before = _tree(tmp_path)
    _one_line_error(_cli("collect", str(src), "--dest", str(dest), "--no-report"),
                    f"{folder} exists")
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------- the whole flow
#: the system calls that create, write, rename or delete a path (traced with chdir / fchdir)
WRITE_CALLS = ("openat", "open", "creat", "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir",
               "rename", "renameat", "renameat2", "truncate", "link", "linkat", "symlink",
               "symlinkat")
WRITES = re.compile(rf"^({'|'.join(WRITE_CALLS)})\((.*)\) += (-?\d+)")
PATH_ARG = re.compile(r'(?:(?:AT_FDCWD|\d+)<([^>]*)>, )?"((?:[^"\\]|\\.)*)"')


CHDIR = re.compile(r'^(?:chdir\("((?:[^"\\]|\\.)*)"\)|fchdir\(\d+<([^>]*)>\)) += 0')
FORK = re.compile(r"^(?:clone3?|v?fork)\(.*\) += (\d+)")


def _written(trace_dir: Path, cwd: Path) -> set[str]:
    """Every path that a traced process created, wrote, renamed or deleted. One trace file a
    process (``t.PID``); a relative path is taken from the process's working folder: the one
    it inherited at fork, as changed since by chdir / fchdir."""
    logs = {int(f.name.rpartition(".")[2]): f.read_text(errors="replace").splitlines()
            for f in trace_dir.iterdir()}
    forked = {int(f.group(1)) for lines in logs.values() for f in map(FORK.match, lines) if f}
    start = {pid: str(cwd) for pid in set(logs) - forked}  # the command itself
    todo = list(start)
    out = set()
    while todo:
        pid = todo.pop()
        here = start[pid]
        for line in logs.get(pid, []):
            c, f, m = CHDIR.match(line), FORK.match(line), WRITES.match(line)
            if c:
                here = os.path.normpath(os.path.join(here, c.group(1) or c.group(2)))
            elif f:
                start[int(f.group(1))] = here
                todo.append(int(f.group(1)))
            elif m and m.group(3) != "-1":
                call, args = m.group(1), m.group(2)
                if call.startswith("open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC",
                                                             args):
                    continue
                paths = PATH_ARG.findall(args)
                if call.startswith("symlink"):
                    paths = paths[-1:]
                out.update(os.path.normpath(os.path.join(base or here, name))
                           for base, name in paths)
    return out


def _traced(cmd: list[str], cwd: Path, env: dict, trace_dir: Path):
    shutil.rmtree(trace_dir, ignore_errors=True)
    trace_dir.mkdir()
    if shutil.which("strace"):  # without it, the walk of the folders around still runs
        cmd = ["strace", "-f", "-ff", "-qq", "-y", "-o", str(trace_dir / "t"),
               "-e", "trace=" + ",".join(("chdir", "fchdir", "clone", "clone3", "fork", "vfork",
                                       *WRITE_CALLS)), *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.data
def test_stage_run_collect_write_only_inside_what_the_user_named(tmp_path, shared_data,
                                                                 minilm_path):
    """The three commands in a row, each traced: every path written is inside the folder or
    file the user named, or a temporary folder that is gone when the command ends; the files
    around them (the user's notes, the working folder, HOME) stay as they were. A second run
    with the staged model cut short names it and restores no earlier run's model."""
    home, tmp, cwd, named = (tmp_path / d for d in ("home", "tmp", "cwd", "named"))
    for d in (home, tmp, cwd, named):
        d.mkdir()
    (named / "notes.txt").write_text("mine\n")
    (cwd / "gpu-carry").mkdir()  # the commands' default names must not be touched either
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MICE_GPU_", "IR_DATASETS", "OUT", "TMP", "TEMP"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS="1", MICE_BENCH_SHARED_DATA=str(shared_data),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    carry, out, dest = named / "carry", named / "out", named / "results"
    mice = [sys.executable, "-m", "mice_bench.cli", "offline-node"]
    steps = [
        ([*mice, "stage", str(carry), "--datasets", "dl19", "--limit-queries", "2", "--depth",
          "5", "--no-training", "--max-mib", "0"], carry),
        ([*mice, "run", str(carry), "--out", str(out), "--rehearse", "--pytest-k",
          "cuda_events", "--steps", "env,tests,train"], out),
        ([*mice, "collect", str(out / "mice-gpu-results.tar.gz"), "--staged", str(carry),
          "--dest", str(dest), "--tag", "t", "--no-report"], dest),
    ]
    allowed_always = ("/dev/", "/proc/")
    for cmd, target in steps:
        before = _tree(tmp_path)
        r = _traced(cmd, cwd, env, tmp_path / "trace")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        outside = sorted(p for p in _written(tmp_path / "trace", cwd)
                         if not p.startswith(allowed_always)
                         and not (p + "/").startswith((str(target) + "/", str(tmp) + "/")))
        assert outside == [], f"{cmd[4]} wrote outside {target}: {outside[:10]}"
        after = _tree(tmp_path)
        changed = sorted(k for k in set(before) | set(after) if before.get(k, 0) !=
                         after.get(k, 0) and not k.startswith(("trace/", "trace")))
        inside = f"{target.relative_to(tmp_path).as_posix()}"
        assert [k for k in changed if k != inside and not k.startswith(inside + "/")] == [], \
            f"{cmd[4]} changed files outside {target}: {changed[:10]}"
        assert os.listdir(tmp) == [], f"{cmd[4]} left temporary files: {os.listdir(tmp)}"
    assert (named / "notes.txt").read_text() == "mine\n"
    steps_tsv = (dest / "t" / "steps.tsv").read_text()
    assert [ln.split("\t")[:2] for ln in steps_tsv.splitlines()] == [
        ["env", "ok"], ["tests", "ok"], ["train", "ok"]]
    # a second run into the same output, with the model cut short in transfer: the model is
    # named and the training study skipped, never run with an earlier run's model
    from mice_bench.offline_node.formats import SHZ_NAME

    _cut(carry / "model" / SHZ_NAME)
    r = _traced(steps[1][0][:-2] + ["--steps", "train"], cwd, env, tmp_path / "trace")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "run.log").read_text()
    assert f"model/{SHZ_NAME}: differs from the sha256 in MANIFEST.json" in log
    with tarfile.open(out / "mice-gpu-results.tar.gz") as tf:
        rows = tf.extractfile("./steps.tsv").read().decode()
    assert [ln.split("\t")[:2] for ln in rows.splitlines()] == [["train", "skipped"]]
    assert os.listdir(tmp) == []
