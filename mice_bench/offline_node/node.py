"""``mice-bench offline-node run``: the suite on a GPU node, from a staged folder, offline.

Checks the options, the output folder and the staged files it reads itself (exit 2 with one
line before anything runs), makes a temporary folder for everything that does not come back
(the restored model, trained checkpoints, compile caches, the staged wheels installed with
``pip --no-index``), runs ``node.sh`` with the options as environment variables and removes
that folder. ``node.sh`` keeps every step inside one time budget, records a step that fails
or runs out of time and goes on, and rewrites the archive in ``--out`` after each step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..naming import split_top_level
from .formats import MANIFEST, checked, read_manifest

HERE = Path(__file__).resolve().parent
NODE_SH = HERE / "node.sh"
PACKAGE = HERE.parent
CHECKOUT_TESTS = PACKAGE.parent / "tests" / "gpu"

#: the steps of a run, in the order they run
STEPS = ("env", "tests", "latency", "train")
#: latency sub-steps, in the order they run; all but the last by default
#: what a run writes into ``--out``
ARCHIVE = "mice-gpu-results.tar.gz"
LATENCY_STEPS = ("paper-bf16", "rerank-bf16-eager", "rerank-bf16-eager-kv", "paper-fp32",
                 "rerank-bf16-compile", "rerank-bf16-compile-kv", "rerank-fp32-eager")


def split_list(text: str) -> list[str]:
    """Names separated by commas and/or spaces."""
    return [w for part in text.split(",") for w in part.split() if w]


@dataclass
class RunOptions:
    out: Path = Path("offline-node-out")
    budget_s: int | None = None  # None: node.sh's default (450 s; 3600 s rehearsing)
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    latency: list[str] | None = None
    train_variants: str | None = None
    pytest_k: str | None = None
    rehearse: bool = False
    python: str = sys.executable


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder (stage one with `mice-bench offline-node "
                         "stage FOLDER` on a connected machine)")
    if not (folder / MANIFEST).is_file():
        raise UsageError(f"{folder} is not a staged folder: it has no {MANIFEST} (stage one "
                         "with `mice-bench offline-node stage FOLDER`)")
    read_manifest(folder)


def check_out(out: Path) -> None:
    """``--out`` must be new, empty or an earlier run's output (its archive is replaced)."""
    choices = f"give a new folder, an empty one or an earlier run's (with {ARCHIVE})"
    for above in out.parents:
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"--out {out}: {above} is a file; {choices}")
            break
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; {choices}")
    if out.is_dir() and any(out.iterdir()) and not (out / ARCHIVE).is_file():
        raise UsageError(f"--out {out} holds other files; {choices}")


def validate(opts: RunOptions) -> None:
    """Reject bad options before anything runs."""
    bad = [s for s in opts.steps if s not in STEPS]
    if bad or not opts.steps:
        raise UsageError(f"--steps: unknown {', '.join(bad) or '(none given)'}; choose from "
                         f"{', '.join(STEPS)}")
    if opts.latency is not None:
        bad = [s for s in opts.latency if s not in LATENCY_STEPS]
        if bad:
            raise UsageError(f"--latency: unknown {', '.join(bad)}; choose from "
                             f"{', '.join(LATENCY_STEPS)}")
    if opts.budget_s is not None and opts.budget_s < 1:
        raise UsageError(f"--budget-s must be at least 1, got {opts.budget_s}")
    if opts.train_variants is not None:
        from ..spec import parse

        names = split_top_level(opts.train_variants)
        if not names:
            raise UsageError("--train-variants: give at least one variant, e.g. ce,mice-l2+2")
        for name in names:
            parse(name)  # SpecError: one line naming the variant and the valid choices


def install_wheels(folder: Path, python: str, site: Path) -> Path | None:
    """Install ``folder/wheels/*.whl`` (each checked against the manifest) into the new
    folder ``site``, offline; returns ``site``, or None when the folder has no wheels."""
    wheels = [checked(folder, f"wheels/{w.name}")
              for w in sorted((folder / "wheels").glob("*.whl"))]
    if not wheels:
        return None
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--target", str(site),
                    *map(str, wheels)], check=True)
    return site


def gpu_checks(folder: Path) -> str:
    """The GPU checks to run: the staged copy (checked against the manifest), else a
    checkout's tests/gpu, else none."""
    staged = folder / "tests" / "test_gpu_checks.py"
    if staged.is_file():
        return str(checked(folder, "tests/test_gpu_checks.py"))
    if CHECKOUT_TESTS.is_dir():
        return str(CHECKOUT_TESTS)
    return ""


def node_env(folder: Path, opts: RunOptions, scratch: Path, site: Path | None = None,
             base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``node.sh`` runs with: everything it writes goes to ``opts.out`` or
    to the temporary folder ``scratch``."""
    env = dict(os.environ if base is None else base)
    staged_src = folder / "src"
    src = staged_src if (staged_src / "mice_bench").is_dir() else PACKAGE.parent
    env.update(MICE_GPU_CARRY=str(folder), MICE_NODE_SRC=str(src),
               MICE_NODE_TESTS=gpu_checks(folder), OUT=str(opts.out.resolve()),
               MICE_NODE_SCRATCH=str(scratch), PYTHON=opts.python,
               MICE_GPU_STEPS=" ".join(opts.steps),
               MICE_GPU_REHEARSAL="1" if opts.rehearse else "0",
               PYTHONDONTWRITEBYTECODE="1", TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"),
               TRITON_CACHE_DIR=str(scratch / "triton"), MPLCONFIGDIR=str(scratch / "mpl"))
    # node.sh runs in ``scratch`` (what a step writes to its working folder is removed with
    # it): the import path must not depend on the folder the run was started from
    paths = [str(site)] if site is not None else []
    paths += [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    optional = {"MICE_GPU_BUDGET_S": opts.budget_s, "MICE_GPU_TRAIN_VARIANTS":
                opts.train_variants, "MICE_GPU_PYTEST_K": opts.pytest_k,
                "MICE_GPU_LATENCY": None if opts.latency is None else " ".join(opts.latency)}
    for key, value in optional.items():
        if value is not None:
            env[key] = str(value)
        else:
            env.pop(key, None)
    return env


def run_node(folder: Path, opts: RunOptions) -> int:
    """Run the suite from the staged ``folder``; returns node.sh's exit status (0 unless it
    could not start: failed steps are recorded in the archive)."""
    folder = folder.resolve()
    check_folder(folder)
    validate(opts)
    check_out(opts.out.resolve())
    scratch = Path(tempfile.mkdtemp(prefix="mice-offline-node-"))
    try:
        site = install_wheels(folder, opts.python, scratch / "site")
        env = node_env(folder, opts, scratch, site)
        return subprocess.run(["bash", str(NODE_SH)], env=env, cwd=scratch).returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
