"""What a checkpoint's files say before any weight is read: the one check of a local
checkpoint directory (config, weights complete, a usable tokenizer) and a checkpoint's layer
count from its config. Every command (``effectiveness``, ``latency``, ``verify``, ``variants``,
``run``) goes through these, so a broken checkpoint gets the same one line everywhere."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from ..checkpoints import read_saved_meta
from ..errors import UsageError

__all__ = ["ARCH_CONFIGS", "arch_config_path", "check_model_dir", "safetensors_problem",
           "tokenizer_files", "looks_like_path", "checkpoint_layers"]

#: architecture name -> shipped config (random weights)
ARCH_CONFIGS = {"minilm-l12": "minilm-l12.json", "minilm-l6": "minilm-l6.json",
                "electra-base": "electra-base.json", "roberta-base": "roberta-base.json",
                "modernbert-base": "modernbert-base.json", "ettin-17m": "ettin-17m.json",
                "ettin-32m": "ettin-32m.json", "ettin-68m": "ettin-68m.json",
                "ettin-150m": "ettin-150m.json"}

#: files any one of which carries a tokenizer's vocabulary (fast JSON, WordPiece, BPE,
#: SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def arch_config_path(name: str) -> Path:
    """The shipped config file of an architecture name (see :data:`ARCH_CONFIGS`)."""
    return Path(str(resources.files("mice_bench") / "configs" / ARCH_CONFIGS[name]))


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is written as a path (so it is never a hub id)."""
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..") or \
        name.endswith(os.sep) or os.sep + os.sep in name


def tokenizer_files(p: Path) -> list[str]:
    """The vocabulary files of a checkpoint directory (empty: it has no tokenizer)."""
    return [f for f in TOKENIZER_FILES if (p / f).is_file()]


def check_model_dir(p: Path, name: str | None = None, tokenizer: bool = True) -> dict:
    """A local checkpoint directory that can be loaded: ``config.json`` (valid JSON), weight
    files present, every ``*.safetensors`` complete, (``tokenizer``) a tokenizer's
    vocabulary file, and a ``mice_bench.json``, where there is one, that passes
    :func:`~mice_bench.checkpoints.read_saved_meta`. Returns the config; a
    :class:`UsageError` naming the directory else."""
    what = f"model directory {p}"
    if not p.is_dir():
        raise UsageError(f"--model {name or p}: {p} is a file, not a checkpoint directory")
    cfg_p = p / "config.json"
    if not cfg_p.is_file():
        raise UsageError(f"{what} has no config.json: not a Hugging Face checkpoint "
                         "(expected config.json, model.safetensors and tokenizer files)")
    try:
        cfg = json.loads(cfg_p.read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{what}: config.json is not valid JSON ({e})") from None
    weights = sorted(p.glob("*.safetensors")) + sorted(p.glob("pytorch_model*.bin"))
    if not weights:
        raise UsageError(f"{what} has no weight file (model.safetensors or pytorch_model.bin)")
    for f in sorted(p.glob("*.safetensors")):
        problem = safetensors_problem(f)
        if problem:
            raise UsageError(f"{what}: {f.name} is broken ({problem}); copy or download the "
                             "checkpoint again")
    if tokenizer and not tokenizer_files(p):
        raise UsageError(f"{what} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                         "save the tokenizer with the checkpoint "
                         "(tokenizer.save_pretrained(<directory>))")
    read_saved_meta(p)            # a mice-bench checkpoint's stored settings, as flags are
    return cfg


def safetensors_problem(f: Path) -> str | None:
    """Why a ``.safetensors`` file cannot be complete (header unreadable, data truncated), or
    None. Reads the header only."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a header"
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                return f"header of {n} bytes does not fit in {size} bytes (truncated?)"
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            return "header is not a JSON object"
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable header: {type(e).__name__}"
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            end = max(end, int(v["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            return f"tensor {k!r} has no data offsets"
    if 8 + n + end != size:
        return f"{size} bytes, its header needs {8 + n + end} (truncated?)"
    return None


def checkpoint_layers(name: str, option: str = "--model") -> int | None:
    """A checkpoint's layer count (``num_hidden_layers``) read from its config without
    loading weights: an architecture name's shipped config, or a local directory's
    ``config.json`` (the directory is checked by :func:`check_model_dir` on the way). None
    for a hub id (its config is not read here). A name written as a path that does not
    exist is a :class:`UsageError`."""
    if name in ARCH_CONFIGS:
        return int(json.loads(arch_config_path(name).read_text())["num_hidden_layers"])
    p = Path(name).expanduser()
    if p.exists():
        cfg = check_model_dir(p, name)
        n = cfg.get("num_hidden_layers")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None
    if looks_like_path(name):
        raise UsageError(f"{option} {name}: no such directory")
    return None
