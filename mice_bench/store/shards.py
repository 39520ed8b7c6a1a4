"""The bytes of the document-state store's files: safetensors shards and codec files.

* :func:`shard_bytes` / :func:`read_shard`: a shard's tensors and its metadata (document ids,
  format, the SHA-256 of the codec file its codes belong to), written as **one** metadata key
  (:func:`one_key`): safetensors writes a map of several keys in a different order from one
  call to the next, so a seeded store would not be the same bytes twice;
* :func:`file_metadata`: the metadata of a shard or codec file (older shards: several keys);
* :func:`token_ranges`: the token rows of documents given their starts and lengths.
"""

from __future__ import annotations

import json

import torch

__all__ = ["shard_bytes", "read_shard", "file_metadata", "one_key", "token_ranges"]


def token_ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The concatenation of ``arange(s, s + n)`` for every (start, length), vectorised."""
    lengths = lengths.long()
    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    before = torch.cumsum(lengths, 0) - lengths
    return torch.repeat_interleave(starts.long() - before, lengths) + torch.arange(total)


def shard_bytes(tensors: dict[str, torch.Tensor], ids: list[str], fmt: str,
                codec_sha: str | None = None) -> bytes:
    from safetensors.torch import save

    meta = {"ids": ids, "format": fmt}
    if codec_sha:
        meta["codec"] = codec_sha
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=one_key(meta))


def read_shard(data: bytes) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors.torch import load

    tensors = load(data)
    ids = file_metadata(data)["ids"]
    if isinstance(ids, str):           # shards written before the one-key metadata
        ids = json.loads(ids)
    return tensors, [str(x) for x in ids]


def one_key(meta: dict) -> dict[str, str]:
    """safetensors metadata as one key (see the module docstring)."""
    return {"mice_bench": json.dumps(meta, sort_keys=True)}


def file_metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + n])
    meta = header.get("__metadata__", {})
    return json.loads(meta["mice_bench"]) if "mice_bench" in meta else meta
