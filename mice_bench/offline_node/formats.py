"""Plain-file formats of a staged folder and of what a node run writes (standard library +
numpy only).

Used by :mod:`~mice_bench.offline_node.stage` (on the connected machine), by the node run
(``node.sh``, :mod:`~mice_bench.offline_node.study`; the node needs no IR library) and by
:mod:`~mice_bench.offline_node.collect` (back on the connected machine). Nothing here imports
torch or an IR library.

The model weights travel byte-shuffled and deflated (``model.safetensors.shz``): the two
bytes of every fp16 value are split into two planes before zlib, which packs the
all-MiniLM-L6-v2 fp16 weights into ~37 MiB instead of 43. ``unpack_model`` restores the exact
safetensors file::

    python -m mice_bench.offline_node.formats unpack-model STAGED DST

which first checks every model file against the sha256 in ``STAGED/MANIFEST.json``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

from ..errors import UsageError
from ..safeio import sha256_file

SHZ_MAGIC = b"MBSHZ1\0\0"
SHZ_NAME = "model.safetensors.shz"
#: the datasets a staged folder may hold (candidates, queries, texts)
DATASETS = ("dl19", "dl20", "nfcorpus")
#: a staged folder's manifest, and what its "staged_by" entry says
MANIFEST = "MANIFEST.json"
STAGED_BY = "mice-bench offline-node stage"

Run = dict[str, dict[str, float]]


# --------------------------------------------------------------------------- model weights
def pack_safetensors(src: Path, dst: Path, level: int = 9) -> int:
    """Write ``src`` (a safetensors file) byte-shuffled and deflated to ``dst``; returns the
    size written."""
    import numpy as np

    raw = Path(src).read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    head, body = raw[:8 + hlen], raw[8 + hlen:]
    pad = len(body) % 2
    arr = np.frombuffer(body + b"\0" * pad, dtype=np.uint8).reshape(-1, 2)
    shuffled = arr.T.tobytes()  # low bytes of every 2-byte unit, then the high bytes
    payload = zlib.compress(shuffled, level)
    with open(dst, "wb") as f:
        f.write(SHZ_MAGIC)
        f.write(struct.pack("<QQB", len(head), len(body), pad))
        f.write(zlib.compress(head, level))
        f.write(payload)
    return Path(dst).stat().st_size


def unpack_safetensors(src: Path, dst: Path) -> None:
    import numpy as np

    blob = Path(src).read_bytes()
    if blob[:8] != SHZ_MAGIC:
        raise ValueError(f"{src}: not a byte-shuffled safetensors file")
    hlen, blen, pad = struct.unpack("<QQB", blob[8:25])
    d = zlib.decompressobj()
    head = d.decompress(blob[25:])
    rest = d.unused_data
    if len(head) != hlen:
        raise ValueError(f"{src}: header is {len(head)} bytes, expected {hlen}")
    planes = np.frombuffer(zlib.decompress(rest), dtype=np.uint8).reshape(2, -1)
    body = planes.T.tobytes()[:blen]
    if len(body) != blen:
        raise ValueError(f"{src}: body is {len(body)} bytes, expected {blen}")
    tmp = Path(str(dst) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(head)
        f.write(body)
    tmp.replace(dst)


def unpack_model(src_dir: Path, dst_dir: Path) -> Path:
    """Copy the carried model folder to the new folder ``dst_dir`` with
    ``model.safetensors`` restored."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    shutil.copytree(src_dir, dst_dir, ignore=shutil.ignore_patterns(SHZ_NAME))
    if (src_dir / SHZ_NAME).exists():
        unpack_safetensors(src_dir / SHZ_NAME, dst_dir / "model.safetensors")
    if not (dst_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"{src_dir}: neither {SHZ_NAME} nor model.safetensors")
    return dst_dir


# --------------------------------------------------------------------------- staged files
def read_manifest(carry: Path) -> dict:
    """The manifest of a staged folder (UsageError when it is none)."""
    path = Path(carry) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a staged folder's manifest ({e}); stage the folder "
                         "again with `mice-bench offline-node stage`") from None
    if not isinstance(doc, dict) or doc.get("staged_by") != STAGED_BY:
        raise UsageError(f"{path}: not written by `{STAGED_BY}`; stage the folder again")
    return doc


def checked(carry: Path, rel: str) -> Path:
    """``carry/rel`` after checking it against the sha256 that the manifest records for it
    (a file damaged or cut short in transfer is named, never read)."""
    path = Path(carry) / rel
    entry = (read_manifest(carry).get("files") or {}).get(rel)
    if not isinstance(entry, dict):
        raise UsageError(f"{path}: not listed in {MANIFEST}; stage the folder again")
    if not path.is_file() or sha256_file(path) != entry.get("sha256"):
        raise UsageError(f"{path}: differs from the sha256 in {MANIFEST} (damaged or cut "
                         "short in transfer?); copy the staged folder again")
    return path


def unpack_staged_model(carry: Path, dst_dir: Path) -> Path:
    """The staged folder's model, every file checked against the manifest, into the new
    folder ``dst_dir``."""
    carry = Path(carry)
    for p in sorted((carry / "model").rglob("*")):
        if p.is_file():
            checked(carry, p.relative_to(carry).as_posix())
    return unpack_model(carry / "model", dst_dir)


# --------------------------------------------------------------------------- data files
def _open(path: Path, mode: str = "rt"):
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8") if "t" in mode else gzip.open(path, mode)
    return path.open(mode, encoding="utf-8") if "t" in mode else path.open(mode)


def read_jsonl(path: Path):
    with _open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_queries(path: Path) -> dict[str, str]:
    return {str(o["qid"]): o["text"] for o in read_jsonl(path)}


def read_docs(path: Path) -> dict[str, str]:
    return {str(o["doc_id"]): o["text"] for o in read_jsonl(path)}


def read_trec(path: Path) -> Run:
    run: Run = {}
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (5, 6):
                raise ValueError(f"{path}:{n}: expected 'qid Q0 docid rank score [tag]'")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Decreasing score, ties by doc id (as mice_bench.effectiveness ranks)."""
    return sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))


def write_trec(path: Path, run: Run, tag: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)  # same suffix: gzip when path ends in .gz
    with _open(tmp, "wt") as f:
        for q, docs in run.items():
            for rank, (d, s) in enumerate(ranked(docs), 1):
                f.write(f"{q} Q0 {d} {rank} {s:.6f} {tag}\n")
    tmp.replace(path)
    return path


def expand_training_jsonl(groups_path: Path, docs_path: Path, out: Path,
                          max_negatives: int | None = None,
                          limit_queries: int | None = None) -> dict:
    """Write the JSONL that ``mice-bench train --data`` reads from the carried id groups.

    One line per kept positive; the first line of a query holds all its negatives, the
    others one (``mice_bench.training.data.read_jsonl`` merges lines of the same query and
    de-duplicates negatives), so the file stays a few times the size of the texts it uses.
    """
    docs = read_docs(docs_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nq = npos = nneg = 0
    with _open(out, "wt") as f:
        for g in read_jsonl(groups_path):
            if limit_queries is not None and nq >= limit_queries:
                break
            negs = [docs[d] for d in g["negatives"][:max_negatives] if d in docs]
            pos = [docs[d] for d in g["positives"] if d in docs]
            if not negs or not pos:
                continue
            for i, p in enumerate(pos):
                f.write(json.dumps({"query": g["query"], "positive": p,
                                    "negatives": negs if i == 0 else negs[:1]},
                                   ensure_ascii=False) + "\n")
            nq, npos, nneg = nq + 1, npos + len(pos), nneg + len(negs)
    return {"queries": nq, "positives": npos, "negatives": nneg, "path": str(out)}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "unpack-model":
        try:
            print(unpack_staged_model(Path(argv[1]), Path(argv[2])))
        except (UsageError, OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
