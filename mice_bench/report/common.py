"""Small shared helpers: variant ordering, colours, slugs, group labels."""

from __future__ import annotations

import re

#: Okabe-Ito colour-blind-safe palette (the low-contrast yellow last)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000",
             "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", "-.", ":")

_FAMILY = ("bm25", "ce", "mask0", "mask1", "mask2", "mask3", "prettr", "mice", "colbert",
           "biencoder")


def variant_key(name: str) -> tuple:
    """Sort key: paper order of families, then numbers inside the name."""
    base = re.split(r"[-\[+]", name, maxsplit=1)[0]
    fam = _FAMILY.index(base) if base in _FAMILY else len(_FAMILY)
    nums = tuple(int(x) for x in re.findall(r"\d+", name[len(base):]))
    return (fam, nums, name)


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.+]+", "-", str(text)).strip("-").lower()
    return s or "x"


def _parts(group: tuple) -> tuple[str, str, str, str, str]:
    g = tuple(group) + ("",) * (5 - len(group))
    return g[:5]  # type: ignore[return-value]


def group_label(group: tuple) -> str:
    """``minilm-l12 on AMD EPYC (cpu), fp32, 2 threads`` / ``... NVIDIA H100 (cuda), bf16``."""
    dev, name, dtype, threads, model = _parts(group)
    t = f", {threads} thread{'s' if threads != '1' else ''}" if threads else ""
    m = f"{model} on " if model else ""
    return f"{m}{name} ({dev}), {dtype}{t}"


def group_slug(group: tuple) -> str:
    dev, name, dtype, threads, model = _parts(group)
    return slug((f"{model}-" if model else "") + f"{dev}-{name}-{dtype}"
                + (f"-{threads}t" if threads else ""))


class Palette:
    """A stable colour + marker per name (order given once, up front)."""

    def __init__(self, names):
        self.names = sorted(set(names), key=variant_key)

    def color(self, name: str) -> str:
        i = self.names.index(name) if name in self.names else len(self.names)
        return OKABE_ITO[i % len(OKABE_ITO)]

    def marker(self, name: str) -> str:
        i = self.names.index(name) if name in self.names else len(self.names)
        return MARKERS[i % len(MARKERS)]

    def linestyle(self, name: str) -> str:
        i = self.names.index(name) if name in self.names else len(self.names)
        return LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)]


def short_commit(commit: str | None) -> str:
    """``abc123def456`` (+ ``-dirty`` when the tree had uncommitted changes)."""
    if not commit:
        return "–"
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
