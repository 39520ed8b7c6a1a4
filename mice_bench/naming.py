"""Names shared by every command: file-name slugs, comma lists and the labels of latency
device groups (the variant sort order is :func:`mice_bench.spec.variant_key`, beside the
families it orders). Pure Python (no torch, numpy or plotting)."""

from __future__ import annotations

import hashlib
import json
import re

def split_top_level(text: str, brackets: str = "[]") -> list[str]:
    """Split ``text`` on the commas outside ``brackets`` (an opening and a closing
    character), stripped, empty parts dropped: the command line's comma lists whose items
    may hold commas themselves.

    >>> split_top_level("ce, colbert[proj=0,qaug=0],")
    ['ce', 'colbert[proj=0,qaug=0]']
    >>> split_top_level("nDCG@10,P(rel=2,judged_only=True)@5", "()")
    ['nDCG@10', 'P(rel=2,judged_only=True)@5']
    """
    opening, closing = brackets
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == opening) - (ch == closing)
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [x for x in out if x]


def key_hash(obj) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def slug(text: str, max_len: int = 60) -> str:
    """The one file-system-safe name of mice-bench (result files, caches, report files):
    ``mice-l4+3`` stays, ``colbert[proj=0,qaug=0]`` -> ``colbert_proj_0_qaug_0``,
    ``AMD EPYC (x)`` -> ``AMD_EPYC_-x``; longer than ``max_len`` -> cut + a hash of the text."""
    s = re.sub(r"[\[\],=:/\\ ]+", "_", str(text).strip()).strip("_")
    s = re.sub(r"[^A-Za-z0-9._+\-]+", "-", s).strip("-")
    if len(s) > max_len:
        s = s[: max_len - 13] + "-" + key_hash(text)
    return s or key_hash(text)


def _parts(group: tuple) -> tuple[str, str, str, str, str, str]:
    g = tuple(group) + ("",) * (6 - len(group))
    return g[:6]  # type: ignore[return-value]


def group_label(group: tuple) -> str:
    """``minilm-l12 on AMD EPYC (cpu, avx2), fp32, 2 threads`` / ``... NVIDIA H100 (cuda),
    bf16``; the CPU's matrix features (``amx``, ``avx512``, ...) where recorded."""
    dev, name, dtype, threads, model, isa = _parts(group)
    t = f", {threads} thread{'s' if threads != '1' else ''}" if threads else ""
    m = f"{model} on " if model else ""
    d = f"{dev}, {isa}" if isa else dev
    return f"{m}{name} ({d}), {dtype}{t}"


def group_slug(group: tuple) -> str:
    """The lower-case file-name part of a latency device group."""
    dev, name, dtype, threads, model, isa = _parts(group)
    parts = [model, dev, name, isa, dtype, f"{threads}t" if threads else ""]
    return "-".join(slug(p, max_len=60) for p in parts if p).lower()


def short_commit(commit: str | None) -> str:
    """``abc123def456`` (+ ``-dirty`` when the tree had uncommitted changes)."""
    if not commit:
        return "–"
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
