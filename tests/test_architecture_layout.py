"""Maintainers' check (``pytest -m maintainer``): the layout in docs/architecture.md lists
every package and module of ``mice_bench`` and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _layout_paths(readme: str) -> set[str]:
    """``mice_bench/...`` paths of the layout block, from its indentation (two spaces a level)."""
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    stack: list[str] = []
    out: set[str] = set()
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m:
            continue
        depth, name = len(m.group(1)) // 2, m.group(2)
        if depth == 0:
            stack = [name] if name == "mice_bench/" else []
            continue
        if not stack:
            continue
        stack = stack[:depth]
        if len(stack) == depth:
            out.add("".join(stack) + name)
            if name.endswith("/"):
                stack.append(name)
    return {p.removeprefix("mice_bench/") for p in out}


def _package_paths() -> set[str]:
    root = REPO / "mice_bench"
    have = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if "__pycache__" in rel.parts or (len(rel.parts) > 1 and rel.parts[0] == "configs"):
            continue
        if p.is_dir():
            if any(p.glob("*.py")) or rel.as_posix() in ("configs", "report/published"):
                have.add(rel.as_posix() + "/")
        elif p.suffix in (".py", ".sh") and not (
                len(rel.parts) > 1 and rel.parts[-2] == "published"):
            have.add(rel.as_posix())
    return have


def test_layout_parser_reads_nesting():
    text = "## Layout\n\n```\nmice_bench/   x\n  a.py   y\n  sub/   z\n    b.py  w\n  c.py v\n" \
           "tests/  t\n  d.py\n```\n"
    assert _layout_paths(text) == {"a.py", "sub/", "sub/b.py", "c.py"}


@pytest.mark.maintainer
def test_architecture_layout_lists_every_module():
    listed = _layout_paths((REPO / "docs" / "architecture.md").read_text())
    have = _package_paths()
    assert sorted(have - listed) == [], "modules missing from the layout in docs/architecture.md"
    assert sorted(listed - have) == [], "docs/architecture.md lists modules that do not exist"
