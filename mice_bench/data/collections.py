"""Offline-safe loading of queries, qrels and texts of the datasets of the registry
(:mod:`mice_bench.data.registry`), and ``irds:<id>`` for any other ir_datasets id.

ir_datasets downloads files it does not find under ``IR_DATASETS_HOME``. Inside
:func:`offline_guard` such a download raises :class:`DatasetUnavailable` (a
:class:`~mice_bench.errors.UsageError`, so the CLI exits 2) naming the dataset id, the file
it wanted and how to stage it, before any network access. ``MICE_BENCH_ALLOW_DOWNLOAD=1``
lets ir_datasets download as usual.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import UsageError

__all__ = [
    "DatasetInfo", "DATASETS", "GROUPS", "DatasetUnavailable", "resolve_datasets",
    "offline_guard", "Collection", "load_collection", "read_docs_jsonl", "shared_data_dir",
]


# the registry's names, re-exported for the loaders' callers (one resolver: the registry's)
from .registry import (DATASETS, GROUPS, DatasetInfo, resolve_datasets,  # noqa: F401
                        shared_data_dir, valid_names)


# --------------------------------------------------------------------------- offline guard


class DatasetUnavailable(UsageError):
    """ir_datasets would have to download a file that is not staged."""


def _irds_home() -> str:
    return os.environ.get("IR_DATASETS_HOME", str(Path.home() / ".ir_datasets"))


def _stage_help() -> str:
    sd = shared_data_dir()
    script = str(sd / "stage-ir-datasets.sh") if sd else "shared/data/stage-ir-datasets.sh"
    return (f"to work offline, place the file at that path under IR_DATASETS_HOME; for the data "
            f"in shared/data run `{script} DIR` and `export IR_DATASETS_HOME=DIR` (DIR must be "
            f"writable); or set MICE_BENCH_ALLOW_DOWNLOAD=1 to let ir_datasets download it")


def _missing_message(info: DatasetInfo, dl) -> str:
    urls = [getattr(m, "url", None) or str(getattr(m, "_path", "")) for m in dl.mirrors]
    urls = [u for u in urls if u and "mirror.ir-datasets.com" not in u and "/downloads/" not in u]
    want = dl._cache_path or (urls[0] if urls else "?")
    msg = (f"dataset {info.name!r} (ir_datasets id {info.irds_id}) needs {want}"
           + (f" (downloaded from {urls[0]})" if urls else "")
           + f", which is not in IR_DATASETS_HOME={_irds_home()}; {_stage_help()}")
    return msg


def _quiet_ir_datasets() -> None:
    """ir_datasets logs every step at INFO on stderr; keep warnings only."""
    import ir_datasets

    ir_datasets.log.easy().logger().setLevel(logging.WARNING)
    _silence_irds_bars()


def _silence_irds_bars() -> None:
    """ir_datasets draws tqdm bars on stderr (docstore builds, corpus iteration); tqdm reads
    ``TQDM_DISABLE`` only when it is imported, so pass ``disable=True`` to them directly."""
    from ir_datasets import log as irlog

    cls = irlog.Logger
    if getattr(cls, "_mice_bench_quiet", False):
        return
    pbar, pbar_raw = cls.pbar, cls.pbar_raw

    def quiet_pbar(self, it, *args, **kwargs):
        kwargs.setdefault("disable", True)
        return pbar(self, it, *args, **kwargs)

    def quiet_pbar_raw(self, *args, **kwargs):
        kwargs.setdefault("disable", True)
        return pbar_raw(self, *args, **kwargs)

    cls.pbar, cls.pbar_raw = quiet_pbar, quiet_pbar_raw
    cls._mice_bench_quiet = True


@contextlib.contextmanager
def offline_guard(info: DatasetInfo) -> Iterator[None]:
    """Make ir_datasets raise :class:`DatasetUnavailable` instead of downloading.

    Patches ``ir_datasets.util.download.Download.path``/``stream`` for the duration: a file
    that is already in the cache (or a local mirror) is used as usual; anything else raises
    before any network access.
    """
    _quiet_ir_datasets()
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # ir_datasets' own tqdm bars (we draw Rich bars)
    try:
        if os.environ.get("MICE_BENCH_ALLOW_DOWNLOAD", "") in ("1", "true", "yes"):
            yield
        else:
            with _block_downloads(info):
                yield
    finally:
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm


@contextlib.contextmanager
def _block_downloads(info: DatasetInfo) -> Iterator[None]:
    from ir_datasets.util import download as dlmod

    orig_path, orig_stream = dlmod.Download.path, dlmod.Download.stream

    def available(dl) -> bool:
        cp = dl._cache_path
        if cp and cp != os.devnull and os.path.exists(cp):
            return True
        return any(isinstance(m, dlmod.LocalDownload) and m._path.exists() for m in dl.mirrors)

    def path(self, force=True):
        if force and self._path is None and not available(self):
            raise DatasetUnavailable(_missing_message(info, self))
        return orig_path(self, force)

    def stream(self):
        if self._stream and not available(self):
            raise DatasetUnavailable(_missing_message(info, self))
        return orig_stream(self)

    dlmod.Download.path, dlmod.Download.stream = path, stream
    try:
        yield
    finally:
        dlmod.Download.path, dlmod.Download.stream = orig_path, orig_stream


# --------------------------------------------------------------------------- collections
def read_docs_jsonl(path: str | os.PathLike) -> dict[str, str]:
    """Read ``{"doc_id": ..., "text": ...}`` lines (``title`` is prepended when present)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--docs {p}: no such file (expected JSONL with doc_id and text)")
    out: dict[str, str] = {}
    try:
        return _read_docs_lines(p, out)
    except UnicodeDecodeError as e:
        raise UsageError(f"--docs {p}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise UsageError(f"--docs {p}: cannot read it ({e.strerror or e})") from None


def _read_docs_lines(p: Path, out: dict[str, str]) -> dict[str, str]:
    """Strict: every line a JSON object with a string (or integer) ``doc_id`` (or ``_id``)
    and a string ``text`` (``title``: a string or absent); a ``doc_id`` repeated with another
    text is refused (an identical repeat is harmless). Errors name the line and the id."""
    first_line: dict[str, int] = {}
    expect = "expected a JSON object with a string doc_id and a string text"
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"--docs {p}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not JSON ({e.msg}); {expect}") from None
            if not isinstance(obj, dict):
                raise UsageError(f"{where}: a JSON {type(obj).__name__}, {expect}")
            key = "doc_id" if "doc_id" in obj else "_id" if "_id" in obj else None
            if key is None:
                raise UsageError(f"{where}: no doc_id; {expect}")
            raw = obj[key]
            if isinstance(raw, bool) or not isinstance(raw, (str, int)) or \
                    (isinstance(raw, str) and not raw.strip()):
                raise UsageError(f"{where}: {key} {raw!r} is not a non-empty string; {expect}")
            did = str(raw)
            if "text" not in obj:
                raise UsageError(f"{where}: document {did!r} has no text; {expect}")
            text, title = obj["text"], obj.get("title")
            if not isinstance(text, str):
                raise UsageError(f"{where}: document {did!r} has text {_show(text)}; {expect}")
            if title is not None and not isinstance(title, str):
                raise UsageError(f"{where}: document {did!r} has title {_show(title)}; "
                                 "expected a string or no title")
            full = f"{title} {text}".strip() if title else text
            if did in out and out[did] != full:
                raise UsageError(f"{where}: doc_id {did!r} repeats line {first_line[did]} with "
                                 "another text; each doc_id once (or identical repeats)")
            first_line.setdefault(did, n)
            out[did] = full
    return out


def _show(v) -> str:
    return "null" if v is None else f"{json.dumps(v)[:40]} (a {type(v).__name__})"


def _doc_text(doc) -> str:
    """Title + text (BEIR/MTEB convention ``(title + " " + text).strip()``)."""
    title = getattr(doc, "title", "") or ""
    text = getattr(doc, "text", None)
    if text is None:
        text = getattr(doc, "body", "") or ""
    return f"{title} {text}".strip() if title else text


@dataclass
class Collection:
    """Queries, qrels and document access for one dataset.

    ``queries``: qid -> text, judged queries only, in dataset order.
    ``qrels``: qid -> {doc_id: grade}. ``docs_path``: optional ``--docs`` JSONL.
    """

    info: DatasetInfo
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    docs_path: Path | None = None
    _docs: dict[str, str] | None = field(default=None, repr=False)
    _irds: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    def iter_corpus(self) -> Iterator[tuple[str, str]]:
        """All documents ``(doc_id, title + text)`` of the corpus (needs ir_datasets docs)."""
        if self.docs_path is not None:
            yield from self._jsonl_docs().items()
            return
        with offline_guard(self.info), _friendly_docs_errors(self.info):
            for d in self._irds.docs_iter():
                yield d.doc_id, _doc_text(d)

    def doc_texts(self, doc_ids: list[str]) -> dict[str, str]:
        """Texts of ``doc_ids`` (from ``--docs`` or the ir_datasets docstore)."""
        if self.docs_path is not None:
            docs = self._jsonl_docs()
            missing = [d for d in doc_ids if d not in docs]
            if missing:
                raise UsageError(f"--docs {self.docs_path}: {len(missing)} candidate documents "
                                 f"have no text, e.g. {missing[:3]}")
            return {d: docs[d] for d in doc_ids}
        with offline_guard(self.info), _friendly_docs_errors(self.info):
            store = self._irds.docs_store()
            got = store.get_many(doc_ids)
        missing = [d for d in doc_ids if d not in got]
        if missing:
            raise UsageError(f"{self.info.irds_id}: {len(missing)} candidate documents are not in "
                             f"the corpus, e.g. {missing[:3]}")
        return {d: _doc_text(got[d]) for d in doc_ids}

    def check_docs(self, doc_ids) -> None:
        """Read the ``--docs`` file now (strictly) and prove every id of ``doc_ids`` has a
        text: what :meth:`doc_texts` would refuse later, refused before any result is
        written. Nothing to do for an ir_datasets corpus (its docstore is read when scored)."""
        if self.docs_path is not None:
            self.doc_texts(list(dict.fromkeys(doc_ids)))

    def _jsonl_docs(self) -> dict[str, str]:
        if self._docs is None:
            self._docs = read_docs_jsonl(self.docs_path)
        return self._docs

    def corpus_fingerprint(self) -> str:
        """Identifies the document texts (ir_datasets id, or the --docs file's size+mtime)."""
        if self.docs_path is not None:
            st = self.docs_path.stat()
            return f"docs:{self.docs_path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
        return f"irds:{self.info.irds_id}"


@contextlib.contextmanager
def _friendly_docs_errors(info: DatasetInfo) -> Iterator[None]:
    try:
        yield
    except DatasetUnavailable as e:
        if info.docs_hint:
            raise DatasetUnavailable(f"{e}. Note: {info.docs_hint}") from None
        raise
    except NotImplementedError:
        raise UsageError(f"{info.irds_id} has no documents in ir_datasets; "
                         f"give the texts with --docs PATH") from None


def load_collection(info: DatasetInfo, docs_path: str | os.PathLike | None = None,
                    limit_queries: int | None = None) -> Collection:
    """Load the judged queries and qrels of ``info`` (offline-guarded)."""
    import ir_datasets

    with offline_guard(info):
        try:
            ds = ir_datasets.load(info.irds_id)
        except KeyError:
            raise UsageError(f"unknown ir_datasets id {info.irds_id!r}") from None
        if not (ds.has_queries() and ds.has_qrels()):
            raise UsageError(f"{info.irds_id} has no queries or no qrels: cannot evaluate")
        qrels: dict[str, dict[str, int]] = {}
        for q in ds.qrels_iter():
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        queries: dict[str, str] = {}
        for q in ds.queries_iter():
            if q.query_id in qrels:
                queries[q.query_id] = _query_text(q)
    if limit_queries is not None:
        queries = dict(list(queries.items())[:limit_queries])
    qrels = {q: qrels[q] for q in queries}
    if not queries:
        raise UsageError(f"{info.irds_id}: no judged queries")
    return Collection(info, queries, qrels, Path(docs_path) if docs_path else None, _irds=ds)


def _query_text(q) -> str:
    text = getattr(q, "text", None)
    if text is None:
        text = getattr(q, "title", "")
    return text
