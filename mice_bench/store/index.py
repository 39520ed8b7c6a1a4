"""A document-state store's index and its repair: what is on disk, checked against the index.

Functions over one open :class:`~mice_bench.store.docstore.DocStateStore` (its
directory, ``shards``, ``codec_entry``, ``params`` and ``verified``):

* :func:`read_index` / :func:`write_index`: ``index.json`` (``{"version": 2, "format",
  "shards": [...], "codec": {...}}``), read into the store or written from it;
* :func:`refuse_other_format`: a directory holding another format or content is refused
  (:class:`StoreFormatError`, one line naming both), never repaired;
* :func:`repair_store`: under the store's lock, rebuild or extend the index from the shard
  files on disk (:func:`adopt_shard`), drop every shard that fails its size / SHA-256 check
  (:func:`check_shard`) or belongs to no valid codec file (:func:`repair_codec`), and remove
  a crashed writer's temp files. What is dropped is reported by name and encoded again.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ..executors.identity import check_same
from ..results import atomic_write_json
from ..safeio import notice, sha256_bytes, sha256_file
from .shards import file_metadata, read_shard

__all__ = ["INDEX_VERSION", "StoreFormatError", "read_index", "write_index",
           "refuse_other_format", "repair_store", "repair_codec", "load_codec_params",
           "check_shard", "adopt_shard"]

INDEX_VERSION = 2


class StoreFormatError(UsageError):
    """The store directory holds another format (or content) than the one asked for."""


def refuse_other_format(store) -> None:
    """A store of another format, content or identity (the model and settings that made its
    states) in ``store.dir``: refuse (one line). A store without a recorded identity, asked
    for one: refused with a message to rebuild it, unless ``store.pinned`` (its directory key
    pins the model), where the identity is recorded."""
    meta_p = store.dir / "meta.json"
    try:
        old = json.loads(meta_p.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        old = None                 # no store yet, or a damaged meta.json (repaired)
    if not isinstance(old, dict):
        if store.identity is not None and not store.pinned and store.index_path.exists():
            raise StoreFormatError(
                f"document store {store.dir} has no readable meta.json naming the model that "
                "made it: delete the folder and build the store again")
        return
    for key, want, default in (("store", store.fmt, None), ("content", store.content, "states"),
                               ("pool_factor", store.pool_factor, 1)):
        have = old.get(key, default)
        if have is not None and have != want:
            raise StoreFormatError(
                f"document store {store.dir} holds {key} {have!r}, not {want!r}: open it "
                f"with {key}={have!r}, or use another directory for {want!r}")
    have = old.get("identity")
    if store.identity is None:    # opened without one: the store's own (its loads carry it)
        if isinstance(have, dict):
            store.identity = store.meta["identity"] = have
        return
    if have is None:
        if not store.pinned and store.index_path.exists():
            raise StoreFormatError(
                f"document store {store.dir} was written before stores recorded the model "
                "that made them: delete the folder and build the store again")
        return                     # recorded now (meta.json is rewritten under the lock)
    check_same(have, store.identity, f"the document states in store {store.dir}")
    store.meta["identity"] = have  # the first writer's names (variant) stay


# ------------------------------------------------------------------ index.json
def read_index(store, quiet: bool = False) -> bool:
    """Read ``index.json`` into ``store.shards`` / ``store.codec_entry``; False (and an
    empty index) when it is absent or unreadable (a notice unless ``quiet``)."""
    p = store.index_path
    store.shards = []
    store.codec_entry = None
    if not p.exists():
        return False
    try:
        doc = json.loads(p.read_text())
        if isinstance(doc, dict) and doc.get("version") == INDEX_VERSION \
                and doc.get("format") not in (None, store.fmt):
            raise StoreFormatError(
                f"document store {store.dir} holds format {doc['format']!r}, not "
                f"{store.fmt!r}: open it as {doc['format']!r}, or use another directory")
        if not (isinstance(doc, dict) and doc.get("version") == INDEX_VERSION
                and doc.get("format") == store.fmt and isinstance(doc.get("shards"), list)):
            raise ValueError("not a version-2 index of this store format")
        for e in doc["shards"]:
            if not (isinstance(e, dict) and {"file", "ids", "bytes", "sha256"} <= set(e)):
                raise ValueError("a shard entry lacks file/ids/bytes/sha256")
        codec = doc.get("codec")
        if store.codec.trained and codec is not None and not (
                isinstance(codec, dict) and {"file", "bytes", "sha256"} <= set(codec)):
            raise ValueError("the codec entry lacks file/bytes/sha256")
        store.shards = doc["shards"]
        store.codec_entry = codec if store.codec.trained else None
        return True
    except StoreFormatError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as e:
        if not quiet:
            notice(f"document-state index {p} is unreadable ({type(e).__name__}: "
                   f"{str(e)[:80]}); rebuilding it from the shard files")
        return False


def write_index(store) -> None:
    """Write ``index.json`` (atomically) from ``store.shards`` and ``store.codec_entry``."""
    doc = {"version": INDEX_VERSION, "format": store.fmt, "shards": store.shards}
    if store.codec.trained:
        doc["codec"] = store.codec_entry
    atomic_write_json(store.index_path, doc, indent=None)


# ------------------------------------------------------------------ repair
def repair_store(store) -> None:
    """Under the lock: re-read the index, rebuild or extend it from shard files on disk,
    drop shards that fail their size/checksum check (or belong to no valid codec file),
    remove stale temp files; ``meta.json`` is rewritten when it differs."""
    meta_p = store.dir / "meta.json"
    try:
        ok_meta = json.loads(meta_p.read_text()) == json.loads(json.dumps(
            store.meta, sort_keys=True, default=str))
    except (OSError, ValueError):
        ok_meta = False
    if not ok_meta:
        atomic_write_json(meta_p, store.meta)
    for tmp in store.dir.glob(".*.tmp"):       # a crashed writer's temp file (we hold the lock)
        tmp.unlink(missing_ok=True)
    had_index = store.index_path.exists()
    ok = read_index(store, quiet=not had_index)
    changed = not ok and had_index
    if store.codec.trained:
        changed = repair_codec(store) or changed
    good: list[dict] = []
    for e in store.shards:
        if check_shard(store, e):
            good.append(e)
        else:
            changed = True
    store.shards = good
    # shards on disk that the index does not name: written just before a kill, or the
    # whole store when the index was lost; adopt every one that parses completely
    known = {e["file"] for e in store.shards}
    for f in sorted(store.dir.glob("shard-*.safetensors")):
        if f.name in known:
            continue
        entry = adopt_shard(store, f)
        if entry is not None:
            store.shards.append(entry)
            changed = True
    if changed or not store.index_path.exists():
        write_index(store)


def repair_codec(store) -> bool:
    """Check (or, with the index lost, find) the codec file and load its parameters into
    ``store.params``; without a valid one every shard is dropped (its codes mean nothing
    without their centroids). True if the index changes."""
    e = store.codec_entry
    if e is None:                                  # index lost or never written
        for f in sorted(store.dir.glob("codec-*.safetensors")):
            data = f.read_bytes()
            try:
                load_codec_params(store, data)
            except StoreFormatError:
                raise
            except Exception as err:  # noqa: BLE001 - unreadable: trained again
                notice(f"document-store codec file {f} is unreadable "
                       f"({type(err).__name__}); training it again")
                f.unlink(missing_ok=True)
                continue
            store.codec_entry = {"file": f.name, "bytes": len(data),
                                 "sha256": sha256_bytes(data)}
            return True
        store.params = {}
        return False
    f = store.dir / e["file"]
    problem = None
    if not f.exists():
        problem = "is missing"
    elif f.stat().st_size != e["bytes"]:
        problem = f"has {f.stat().st_size} bytes, the index says {e['bytes']} (truncated?)"
    else:
        data = f.read_bytes()
        if sha256_bytes(data) != e["sha256"]:
            problem = "fails its SHA-256 check"
        else:
            try:
                load_codec_params(store, data)
            except StoreFormatError:
                raise
            except Exception as err:  # noqa: BLE001
                problem = f"is unreadable ({type(err).__name__})"
    if problem is None:
        return False
    notice(f"document-store codec file {f} {problem}: training the codec again and "
           f"encoding all {sum(len(s['ids']) for s in store.shards)} stored documents again")
    f.unlink(missing_ok=True)
    for s in store.shards:
        (store.dir / s["file"]).unlink(missing_ok=True)
    for orphan in store.dir.glob("shard-*.safetensors"):
        orphan.unlink(missing_ok=True)
    store.shards, store.codec_entry, store.params = [], None, {}
    return True


def load_codec_params(store, data: bytes) -> None:
    """Set ``store.params`` from the bytes of a codec file (centroids, cut-offs, weights);
    :class:`StoreFormatError` for a codec file of another format, ValueError when a tensor
    is missing."""
    from safetensors.torch import load

    meta = file_metadata(data)
    if meta.get("format") != store.fmt:
        raise StoreFormatError(f"document store {store.dir} holds a codec file of format "
                               f"{meta.get('format')!r}, not {store.fmt!r}")
    params = load(data)
    if not {"centroids", "cutoffs", "weights"} <= set(params):
        raise ValueError("centroids, cutoffs or weights missing")
    store.params = params


def check_shard(store, e: dict) -> bool:
    """Size and SHA-256 of one shard against its index entry ``e`` (a shard this process
    verified before is not hashed again); on failure a notice names the file, which is
    deleted (its documents are encoded again)."""
    f = store.dir / e["file"]
    if store.codec.trained and (store.codec_entry is None
                                or e.get("codec") != store.codec_entry["sha256"]):
        notice(f"document-state shard {f} was coded with another codec file: encoding its "
               f"{len(e['ids'])} documents again")
        f.unlink(missing_ok=True)
        return False
    if (e["file"], e["sha256"]) in store.verified and f.exists() \
            and f.stat().st_size == e["bytes"]:
        return True
    problem = None
    if not f.exists():
        problem = "is missing"
    elif f.stat().st_size != e["bytes"]:
        problem = f"has {f.stat().st_size} bytes, the index says {e['bytes']} (truncated?)"
    elif sha256_file(f) != e["sha256"]:
        problem = "fails its SHA-256 check"
    if problem is None:
        store.verified.add((e["file"], e["sha256"]))
        return True
    notice(f"document-state shard {f} {problem}: encoding its {len(e['ids'])} documents "
           "again")
    f.unlink(missing_ok=True)
    return False


def adopt_shard(store, f: Path) -> dict | None:
    """The index entry of shard file ``f`` that the index does not name, read from the
    file itself; None (and the file deleted) when it is unreadable or coded with another
    codec file; :class:`StoreFormatError` for a shard of another format."""
    try:
        data = f.read_bytes()
        meta = file_metadata(data)
    except Exception:  # noqa: BLE001 - unreadable header: handled below
        meta = {}
    if meta.get("format") not in (None, store.fmt):
        raise StoreFormatError(f"document store {store.dir} holds a shard of format "
                               f"{meta['format']!r} ({f.name}), not {store.fmt!r}")
    try:
        tensors, ids = read_shard(data)
        if len(ids) != tensors["lengths"].numel():
            raise ValueError("ids and lengths disagree")
        if store.codec.trained and (store.codec_entry is None
                                    or meta.get("codec") != store.codec_entry["sha256"]):
            raise ValueError("coded with another codec file")
    except Exception as e:  # noqa: BLE001 - anything unreadable is recomputed
        notice(f"document-state shard {f} is unreadable ({type(e).__name__}); encoding its "
               "documents again")
        f.unlink(missing_ok=True)
        return None
    sha = sha256_bytes(data)
    store.verified.add((f.name, sha))
    entry = {"file": f.name, "ids": ids, "bytes": len(data), "sha256": sha,
             "tokens": int(tensors["lengths"].sum())}
    if "orig_lengths" in tensors:
        entry["orig_tokens"] = int(tensors["orig_lengths"].sum())
    if store.codec.trained:
        entry["codec"] = store.codec_entry["sha256"]
    return entry
