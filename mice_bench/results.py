"""Versioned result files: the common envelope, environment capture and atomic writes.

Every results JSON written by mice-bench has the envelope::

    {
      "schema": "mice-bench/<kind>",      # latency | effectiveness | ...
      "schema_version": 1,
      "mice_bench_version": "0.1.0",
      "git_commit": "abc123..." | null,
      "created": "2026-11-27T10:00:00+00:00",
      "environment": {...},               # see :func:`environment`
      "config": {...},                    # the full configuration of the run
      ...                                 # kind-specific payload
    }

Each kind has its own ``schema_version`` (:data:`SCHEMA_VERSIONS`). Reports read these files
only (never re-run models); :func:`load_result` upgrades older versions of a kind, one step at
a time, through :data:`UPGRADERS` (keyed by kind and version; registered by the modules of
:data:`UPGRADER_MODULES`: :mod:`mice_bench.effectiveness.schema` for the effectiveness kinds'
own steps, :mod:`mice_bench.legacy` for the renaming of variants whose definition changed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from . import __version__

#: the current schema version of each result kind
SCHEMA_VERSIONS: dict[str, int] = {"latency": 2, "effectiveness": 3, "effectiveness-summary": 3}
#: the modules that register a kind's upgrade steps in :data:`UPGRADERS` when imported
UPGRADER_MODULES: dict[str, tuple[str, ...]] = {
    "latency": ("mice_bench.legacy",),
    "effectiveness": ("mice_bench.effectiveness.schema", "mice_bench.legacy"),
    "effectiveness-summary": ("mice_bench.effectiveness.schema", "mice_bench.legacy")}


def schema_version(kind: str) -> int:
    """The version this mice-bench writes for ``kind`` (1 for a kind without a registry entry)."""
    return SCHEMA_VERSIONS.get(kind, 1)


def package_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of distributions (None when absent); never imports them."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


class ResultFileError(ValueError):
    """A results file that cannot be read or does not follow the schema."""


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The current git commit of the repository holding ``path`` (or the cwd), if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or os.getcwd(), capture_output=True,
            text=True, timeout=5,
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
            # GIT_OPTIONAL_LOCKS=0: git status must not rewrite the checkout's index
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=path or os.getcwd(), capture_output=True, text=True,
                                   timeout=5, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
                                   ).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - git absent or not a repository
        pass
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Describe the machine and software a measurement ran on."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "hostname_hash": hashlib.sha256(platform.node().encode()).hexdigest()[:8],
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        env["transformers"] = None
    # the data and evaluation stack (effectiveness); None where not installed (latency-only)
    env.update(package_versions("ir_datasets", "ir_measures", "bm25s"))
    if device is not None:
        env["device"] = device
        if str(device).startswith("cuda") and torch.cuda.is_available():
            env["device_name"] = torch.cuda.get_device_name(torch.device(device))
        else:
            env["device_name"] = env["cpu_model"]
    if dtype is not None:
        env["dtype"] = dtype
    env["attention_kernel"] = "torch.nn.functional.scaled_dot_product_attention"
    return env


def envelope(kind: str, config: dict[str, Any], env: dict[str, Any] | None = None,
             **payload: Any) -> dict[str, Any]:
    return {
        "schema": f"mice-bench/{kind}",
        "schema_version": schema_version(kind),
        "mice_bench_version": __version__,
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": env if env is not None else environment(),
        "config": config,
        **payload,
    }


#: result kinds with a default ad-hoc results folder (:func:`default_results_dir`)
RESULT_KINDS = ("latency", "effectiveness", "training")
#: the environment variable that moves ad-hoc results (``$MICE_BENCH_RESULTS/<kind>``)
RESULTS_ENV = "MICE_BENCH_RESULTS"
#: the ad-hoc results folder under the current directory when the variable is not set
#: (git-ignored: the committed ``results/`` is only written with an explicit ``--output``)
ADHOC_RESULTS = "mice-bench-results"


def default_results_dir(kind: str) -> Path:
    """Where a command writes its results when no ``--output`` is given:
    ``$MICE_BENCH_RESULTS/<kind>`` if the variable is set, else
    ``./mice-bench-results/<kind>`` -- never the committed ``results/`` tree (``mice-bench run``
    studies write where their study file says; committed results are produced by passing
    ``--output results/...`` explicitly)."""
    if kind not in RESULT_KINDS:
        raise ValueError(f"unknown result kind {kind!r}; valid: {', '.join(RESULT_KINDS)}")
    base = os.environ.get(RESULTS_ENV, "").strip()
    root = Path(base).expanduser() if base else Path(ADHOC_RESULTS)
    return root / kind


#: the variable that moves every cache of mice-bench (default ``$XDG_CACHE_HOME/mice-bench``)
CACHE_ENV = "MICE_BENCH_CACHE"
#: what lives under the cache root: effectiveness caches (document states, scores, BM25
#: indexes), the training command's teacher scores, training studies' checkpoints
CACHE_KINDS = ("effectiveness", "training", "runs")


def cache_dir(kind: str) -> Path:
    """Where mice-bench keeps what it can compute again: ``$MICE_BENCH_CACHE/<kind>`` if the
    variable is set, else ``$XDG_CACHE_HOME/mice-bench/<kind>`` (``~/.cache/mice-bench``)."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; valid: {', '.join(CACHE_KINDS)}")
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / kind
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mice-bench" / kind


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w",
                encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success flush, ``fsync`` and
    ``os.replace`` it onto ``path`` (readers see the old file or the new one, never a part);
    on any error the temp file is removed and ``path`` is left as it was. Temp names are
    unique (``tempfile.NamedTemporaryFile(dir=..., delete=False)``), so concurrent writers
    never share one. ``mode``: ``"w"`` (text, ``encoding``) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes new files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = tempfile.NamedTemporaryFile(mode=mode, dir=path.parent, prefix=f".{path.name}.",
                                    suffix=".tmp", delete=False,
                                    encoding=None if "b" in mode else encoding)
    tmp = f.name
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            # a failed write or fsync names no file: name the one being written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Write JSON to ``path`` atomically (:func:`atomic_file`). The document is serialised
    before the temp file is created, so a value that cannot be written leaves nothing."""
    text = json.dumps(data, indent=indent, sort_keys=False, default=json_default) + "\n"
    return atomic_write_text(path, text)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def json_default(o: Any) -> Any:
    """``json.dumps``' ``default`` of every result file: numpy scalars and arrays, paths,
    sets (sorted); anything else is an error (a result holds plain data)."""
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def parse_fields(path: str | os.PathLike, what: str, parse: Callable[[], Any]) -> Any:
    """Run ``parse()`` over a loaded results file; a missing or ill-typed field becomes a
    :class:`ResultFileError` naming the file (``what``: "latency", "effectiveness", ...)."""
    try:
        return parse()
    except ResultFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ResultFileError(f"{path}: malformed {what} results file "
                              f"({type(e).__name__}: {e})") from None


def result_kind(path: str | os.PathLike) -> str:
    """The kind a results file says it is (``latency``, ``effectiveness``, ...; ``""`` when it
    names no ``mice-bench/`` schema); a file that is not a JSON object is a
    :class:`ResultFileError` naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{path}: cannot read results file: {e}") from None
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: not a mice-bench results file (no schema)")
    schema = data.get("schema")
    return schema.removeprefix("mice-bench/") if isinstance(schema, str) and \
        schema.startswith("mice-bench/") else ""


# schema_version -> function upgrading a dict of that version to version + 1
UPGRADERS: dict[str, dict[int, Callable[[dict], dict]]] = {}


def load_result(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Load a results file, checking the envelope and upgrading old schema versions."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{path}: cannot read results file: {e}") from e
    if not isinstance(data, dict) or "schema" not in data or "schema_version" not in data:
        raise ResultFileError(f"{path}: not a mice-bench results file (no schema/schema_version)")
    schema = str(data["schema"])
    if not schema.startswith("mice-bench/"):
        raise ResultFileError(f"{path}: unknown schema {schema!r}")
    k = schema.split("/", 1)[1]
    if kind is not None and k != kind:
        raise ResultFileError(f"{path}: expected a {kind} results file, found {k}")
    v = data["schema_version"]
    current = schema_version(k)
    if not isinstance(v, int) or isinstance(v, bool) or v > current:
        raise ResultFileError(f"{path}: {k} schema_version {v!r} is newer than this "
                              f"mice-bench's ({current}); upgrade mice-bench")
    if v < current:
        for module in UPGRADER_MODULES.get(k, ()):        # registers the kind's steps
            importlib.import_module(module)
    while v < current:
        up = UPGRADERS.get(k, {}).get(v)
        if up is None:
            raise ResultFileError(f"{path}: no upgrader from {k} schema version {v}")
        try:
            data = up(data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ResultFileError(f"{path}: cannot upgrade {k} schema version {v}: "
                                  f"{type(e).__name__}: {e}") from None
        v = data["schema_version"] = v + 1
    return data


def check_output(path: Path, option: str = "--output") -> None:
    """Prove the results file can be written before any model is loaded or measured: create
    its folder, create and remove a temp file in it (UsageError naming the path)."""
    import os
    import tempfile

    from .errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give the path of a .json file")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{option} {path}: {folder} exists and is not a folder") from None
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the folder {folder} "
                         f"({e.strerror or e}); choose another location") from None
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: {folder} exists and is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", suffix=".tmp"):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "the file exists and is read-only")
    except OSError as e:
        raise UsageError(f"{option} {path}: not writable ({e.strerror or e}); choose another "
                         "location") from None
