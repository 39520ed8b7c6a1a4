"""The document-state store: split-layer states of every document, compact and fault-safe.

Layout of one store directory (one per model x split layer x document settings x format)::

    meta.json                     what the key covers (model, split layer, corpus, format, ...)
    index.json                    {"version": 2, "format", "shards": [{"file", "ids", "bytes",
                                   "sha256", "tokens"}, ...]}
    shard-<n>-<hash>.safetensors  one flush of encoded documents (see below)
    .lock                         held while a run repairs or encodes (``filelock``)

A shard holds only the **real tokens** of its documents (no padding), concatenated:
``hidden [tokens, H]`` in the store format, ``seg [tokens]`` (int8 segment ids),
``lengths [n]`` (int32), and for ``int8`` ``scale [tokens]`` (fp32); the safetensors metadata
repeats the document ids, so a lost ``index.json`` is rebuilt from the shards.

Formats (``--doc-store``): ``fp32``; ``fp16`` (the default: half the bytes, scores within
1e-3 of fp32 states); ``int8`` (per-token symmetric scaling ``h ~ q * scale``,
``scale = max|h| / 127``: a quarter of fp32 plus 4 bytes per token). Only the hidden states at
the split layer are stored: that is all a split-first variant reads (interaction-layer K/V
are recomputed per query batch). A late-interaction variant (``colbert``: maxsim head, no
interaction layer) stores its head's document vectors instead (``content: vectors``: final
norm, 128-d projection, unit length, as a ColBERT index does), a third of the 384-d states.

Faults: every file is written atomically (unique temp file, fsync, rename). The index records
each shard's size and SHA-256; a shard that is missing, truncated or altered is reported by
name and its documents are encoded again; an unreadable ``index.json`` is rebuilt from the
shards; shards written after the last index update (a kill between the two) are adopted. A
shard is written every ``flush_s`` seconds (and at most ``max_shard_docs`` documents), so a
killed run loses only the batch in flight and the last few seconds. Encoding happens under
an inter-process lock: a second run on the same store waits and then reuses the first's work.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..results import atomic_write_bytes, atomic_write_json
from .safeio import cache_lock, notice, sha256_bytes, sha256_file

__all__ = ["DocStateStore", "STORE_FORMATS", "DEFAULT_STORE", "CorruptStore"]

STORE_FORMATS = ("fp16", "fp32", "int8")
DEFAULT_STORE = "fp16"
INDEX_VERSION = 2
_FLOAT = {"fp32": torch.float32, "fp16": torch.float16}


class CorruptStore(RuntimeError):
    """A shard failed its check after the run had verified it (changed under the run)."""


def _hash_ids(ids: Sequence[str]) -> str:
    from .cache import key_hash

    return key_hash(list(ids))


class DocStateStore:
    """Document states stored in shards under one directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, meta: dict | None = None,
                 fmt: str = DEFAULT_STORE, flush_s: float = 5.0, max_shard_docs: int = 1024,
                 vectors: bool = False):
        """``vectors``: the store holds a late-interaction head's document vectors (what
        ``encode(..., vectors=True)`` returns), and :meth:`load` marks them so."""
        if fmt not in STORE_FORMATS:
            raise ValueError(f"unknown document store {fmt!r}; valid: {', '.join(STORE_FORMATS)}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.vectors = bool(vectors)
        self.meta = dict(meta or {}, store=fmt, content="vectors" if vectors else "states")
        self.flush_s = flush_s
        self.max_shard_docs = max_shard_docs
        self.shards: list[dict] = []
        self._verified: set[tuple[str, str]] = set()   # (file, sha256) checked by this process
        self.encoded_now = 0                            # documents encoded by this process
        self._load_index(quiet=True)

    # ------------------------------------------------------------------ index
    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def _load_index(self, quiet: bool = False) -> bool:
        """Read ``index.json``; False (and an empty index) when it is absent or unreadable."""
        p = self.index_path
        self.shards = []
        if not p.exists():
            return False
        try:
            doc = json.loads(p.read_text())
            if not (isinstance(doc, dict) and doc.get("version") == INDEX_VERSION
                    and doc.get("format") == self.fmt and isinstance(doc.get("shards"), list)):
                raise ValueError("not a version-2 index of this store format")
            for e in doc["shards"]:
                if not (isinstance(e, dict) and {"file", "ids", "bytes", "sha256"} <= set(e)):
                    raise ValueError("a shard entry lacks file/ids/bytes/sha256")
            self.shards = doc["shards"]
            return True
        except (ValueError, OSError, UnicodeDecodeError) as e:
            if not quiet:
                notice(f"document-state index {p} is unreadable ({type(e).__name__}: "
                       f"{str(e)[:80]}); rebuilding it from the shard files")
            return False

    def _write_index(self) -> None:
        atomic_write_json(self.index_path, {"version": INDEX_VERSION, "format": self.fmt,
                                            "shards": self.shards}, indent=None)

    def _repair(self) -> None:
        """Under the lock: re-read the index, rebuild or extend it from shard files on disk,
        drop shards that fail their size/checksum check, remove stale temp files."""
        meta_p = self.dir / "meta.json"
        try:
            ok_meta = json.loads(meta_p.read_text()) == json.loads(json.dumps(
                self.meta, sort_keys=True, default=str))
        except (OSError, ValueError):
            ok_meta = False
        if not ok_meta:
            atomic_write_json(meta_p, self.meta)
        for tmp in self.dir.glob(".*.tmp"):       # a crashed writer's temp file (we hold the lock)
            tmp.unlink(missing_ok=True)
        had_index = self.index_path.exists()
        ok = self._load_index(quiet=not had_index)
        changed = not ok and had_index
        good: list[dict] = []
        for e in self.shards:
            if self._check(e):
                good.append(e)
            else:
                changed = True
        self.shards = good
        # shards on disk that the index does not name: written just before a kill, or the
        # whole store when the index was lost; adopt every one that parses completely
        known = {e["file"] for e in self.shards}
        for f in sorted(self.dir.glob("shard-*.safetensors")):
            if f.name in known:
                continue
            entry = self._adopt(f)
            if entry is not None:
                self.shards.append(entry)
                changed = True
        if changed or not self.index_path.exists():
            self._write_index()

    def _check(self, e: dict) -> bool:
        """Size and SHA-256 of one shard against its index entry (notice + delete on failure)."""
        f = self.dir / e["file"]
        if (e["file"], e["sha256"]) in self._verified and f.exists() \
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
            self._verified.add((e["file"], e["sha256"]))
            return True
        notice(f"document-state shard {f} {problem}: encoding its {len(e['ids'])} documents "
               "again")
        f.unlink(missing_ok=True)
        return False

    def _adopt(self, f: Path) -> dict | None:
        try:
            data = f.read_bytes()
            tensors, ids = _unpack_bytes(data)
            if len(ids) != tensors["lengths"].numel():
                raise ValueError("ids and lengths disagree")
        except Exception as e:  # noqa: BLE001 - anything unreadable is recomputed
            notice(f"document-state shard {f} is unreadable ({type(e).__name__}); encoding its "
                   "documents again")
            f.unlink(missing_ok=True)
            return None
        sha = sha256_bytes(data)
        self._verified.add((f.name, sha))
        return {"file": f.name, "ids": ids, "bytes": len(data), "sha256": sha,
                "tokens": int(tensors["lengths"].sum())}

    # ------------------------------------------------------------------ queries
    def location(self) -> dict[str, tuple[int, int]]:
        """``doc_id -> (shard number, row)`` (the first shard holding the document; an adopted
        shard may repeat documents of another)."""
        loc: dict[str, tuple[int, int]] = {}
        for s, e in enumerate(self.shards):
            for r, d in enumerate(e["ids"]):
                loc.setdefault(d, (s, r))
        return loc

    def missing(self, doc_ids: Iterable[str]) -> list[str]:
        have = self.location()
        return [d for d in dict.fromkeys(doc_ids) if d not in have]

    def usage(self, doc_ids: Iterable[str] | None = None) -> dict:
        """Bytes on disk of the shards holding ``doc_ids`` (all when None), per document."""
        want = None if doc_ids is None else set(doc_ids)
        nbytes = ndocs = ntok = 0
        for e in self.shards:
            if want is not None and not want.intersection(e["ids"]):
                continue
            nbytes += e["bytes"]
            ndocs += len(e["ids"])
            ntok += e.get("tokens", 0)
        return {"store": self.fmt, "content": "vectors" if self.vectors else "states",
                "docs": ndocs, "bytes": nbytes,
                "bytes_per_doc": nbytes / ndocs if ndocs else None,
                "tokens_per_doc": ntok / ndocs if ndocs else None}

    # ------------------------------------------------------------------ encoding
    def ensure(self, doc_ids: Sequence[str], texts: Callable[[list[str]], dict[str, str]],
               encode: Callable[[list[str]], object], batch_size: int = 64,
               progress: Callable[[int], None] | None = None,
               on_todo: Callable[[int], None] | None = None) -> int:
        """Encode and store the documents of ``doc_ids`` that are not stored yet; returns how
        many this call encoded.

        texts: doc ids -> {doc_id: text}; encode: ``batch_size`` texts -> DocStates
        ``[n, T, H]``. Documents are encoded by length (little padding) ``batch_size`` at a
        time; ``progress(n)`` after each batch; a shard is flushed every ``flush_s`` seconds.
        ``on_todo(n)`` is called once with the number of documents left to encode (after
        the lock is held and the store repaired).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with cache_lock(self.dir / ".lock", f"document states in {self.dir}"):
            self._repair()
            todo = self.missing(doc_ids)
            if on_todo is not None:
                on_todo(len(todo))
            if not todo:
                return 0
            txt = texts(todo)
            todo.sort(key=lambda d: len(txt[d]))
            buf: list[dict[str, torch.Tensor]] = []
            buf_ids: list[str] = []
            last = time.monotonic()
            for i in range(0, len(todo), batch_size):
                ids = todo[i: i + batch_size]
                buf.append(_pack(encode([txt[d] for d in ids]), self.fmt))
                buf_ids.extend(ids)
                if progress is not None:
                    progress(len(ids))
                if time.monotonic() - last >= self.flush_s or len(buf_ids) >= self.max_shard_docs:
                    self._flush(buf, buf_ids)
                    buf, buf_ids, last = [], [], time.monotonic()
            if buf_ids:
                self._flush(buf, buf_ids)
            return len(todo)

    def _flush(self, parts: list[dict[str, torch.Tensor]], ids: list[str]) -> None:
        tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        data = _to_bytes(tensors, ids, self.fmt)
        name = f"shard-{len(self.shards):05d}-{_hash_ids(ids)}.safetensors"
        atomic_write_bytes(self.dir / name, data)
        sha = sha256_bytes(data)
        self._verified.add((name, sha))
        self.shards.append({"file": name, "ids": ids, "bytes": len(data), "sha256": sha,
                            "tokens": int(tensors["lengths"].sum())})
        self._write_index()
        self.encoded_now += len(ids)

    # ------------------------------------------------------------------ loading
    def load(self, doc_ids: Sequence[str], device: str = "cpu"):
        """DocStates of ``doc_ids`` in that order (``hidden [N, T, H]`` padded to the longest;
        fp32 for an fp32 store, else fp16)."""
        from ..executors import DocStates

        loc = self.location()
        missing = [d for d in doc_ids if d not in loc]
        if missing:
            raise KeyError(f"{len(missing)} documents are not stored, e.g. {missing[:3]}")
        by_shard: dict[int, list[int]] = {}
        for d in dict.fromkeys(doc_ids):
            by_shard.setdefault(loc[d][0], []).append(loc[d][1])
        rows: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for s, want in by_shard.items():
            e = self.shards[s]
            f = self.dir / e["file"]
            data = f.read_bytes()
            if (e["file"], e["sha256"]) not in self._verified:
                if len(data) != e["bytes"] or sha256_bytes(data) != e["sha256"]:
                    raise CorruptStore(f"document-state shard {f} changed while this run used it")
                self._verified.add((e["file"], e["sha256"]))
            tensors, _ = _unpack_bytes(data)
            hidden = _dequantize(tensors, self.fmt)
            off = torch.zeros(len(tensors["lengths"]) + 1, dtype=torch.long)
            off[1:] = torch.cumsum(tensors["lengths"].long(), 0)
            for r in want:
                a, b = int(off[r]), int(off[r + 1])
                rows[(s, r)] = (hidden[a:b], tensors["seg"][a:b].long())
        seq = [rows[loc[d]] for d in doc_ids]
        n = len(seq)
        T = max([h.shape[0] for h, _ in seq] + [1])
        H = seq[0][0].shape[1] if seq else 1
        dt = torch.float32 if self.fmt == "fp32" else torch.float16
        hidden = torch.zeros(n, T, H, dtype=dt)
        mask = torch.zeros(n, T, dtype=torch.bool)
        seg = torch.full((n, T), -1, dtype=torch.long)
        for i, (h, sg) in enumerate(seq):
            t = h.shape[0]
            hidden[i, :t] = h
            mask[i, :t] = True
            seg[i, :t] = sg
        return DocStates(hidden.to(device), mask.to(device), seg.to(device), None,
                         vectors=self.vectors)


# --------------------------------------------------------------------------- packing
def _pack(states, fmt: str) -> dict[str, torch.Tensor]:
    """DocStates ``[n, T, H]`` -> the real tokens, flat (see the module docstring)."""
    mask = states.mask.bool().cpu()
    lengths = mask.sum(1)
    T = mask.shape[1]
    prefix = torch.arange(T)[None, :] < lengths[:, None]
    if not bool((prefix == mask).all()):
        raise ValueError("document states are not right-padded; the store keeps real tokens "
                         "as a prefix of each row")
    hidden = states.hidden.detach().cpu().float()[mask]           # [tokens, H]
    out = {"lengths": lengths.to(torch.int32), "seg": states.seg.cpu()[mask].to(torch.int8)}
    if fmt == "int8":
        scale = hidden.abs().amax(1).clamp_min(1e-12) / 127.0      # [tokens]
        out["hidden"] = torch.round(hidden / scale[:, None]).clamp(-127, 127).to(torch.int8)
        out["scale"] = scale.to(torch.float32)
    else:
        out["hidden"] = hidden.to(_FLOAT[fmt])
    return out


def _to_bytes(tensors: dict[str, torch.Tensor], ids: list[str], fmt: str) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()},
                metadata={"ids": json.dumps(ids), "format": fmt})


def _unpack_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors.torch import load

    tensors = load(data)
    ids = json.loads(_metadata(data)["ids"])
    return tensors, [str(x) for x in ids]


def _metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + n])
    return header.get("__metadata__", {})


def _dequantize(tensors: dict[str, torch.Tensor], fmt: str) -> torch.Tensor:
    h = tensors["hidden"]
    if fmt == "int8":
        return (h.float() * tensors["scale"][:, None]).to(torch.float16)
    return h
