"""The import graph of ``mice_bench``, read from the source with :mod:`ast` (no module is
imported): no import cycle, and no private (``_name``) name imported from another module.

Every import counts, also the ones inside functions: a lazy import hides a cycle from the
interpreter, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mice_bench"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _absolute(mod: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> list[tuple[str, str, str | None, int]]:
    """(importer, imported module, imported name or None, line) for every import of a
    ``mice_bench`` module. ``from pkg import sub`` where ``sub`` is a module counts as an
    import of ``pkg.sub``."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "mice_bench":
                        out.append((mod, a.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(mod, is_package, node)
                if target.split(".")[0] != "mice_bench":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:
                        out.append((mod, sub, None, node.lineno))
                    else:
                        out.append((mod, target, a.name, node.lineno))
    return out


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in mods}
    for src, dst, _, _ in imports(mods):
        if dst in mods and dst != src:
            g[src].add(dst)
    return g


def _parents(mod: str) -> set[str]:
    """A package and its parents: importing ``a.b.c`` runs ``a`` and ``a.b`` first; a
    submodule importing its own package's ``__init__`` is no cycle of the code's design."""
    parts = mod.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted;
    edges from a module to one of its enclosing packages are left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v] - _parents(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def private_imports(mods: dict[str, Path]) -> list[str]:
    """``importer:line imports module._name`` for every private name taken from another
    module (a package's ``__init__`` re-exporting its own submodules' names included)."""
    out = []
    for src, dst, name, line in imports(mods):
        if name and name.startswith("_") and not name.startswith("__") and dst != src:
            out.append(f"{src}:{line} imports {dst}.{name}")
        elif name is None and dst.rsplit(".", 1)[-1].startswith("_") \
                and not dst.rsplit(".", 1)[-1].startswith("__"):
            out.append(f"{src}:{line} imports private module {dst}")
    return sorted(out)


# ------------------------------------------------------------------ the checks themselves
def test_the_checker_finds_a_planted_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "mice_bench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import _helper\n")
    (pkg / "c.py").write_text("from mice_bench import a\n")
    mods = modules(pkg)
    assert set(mods) == {"mice_bench", "mice_bench.a", "mice_bench.sub", "mice_bench.sub.b",
                         "mice_bench.c"}
    assert cycles(graph(mods)) == [["mice_bench.a", "mice_bench.sub.b"]]
    assert private_imports(mods) == ["mice_bench.sub.b:2 imports mice_bench.a._helper"]


#: cycles still in the package, each with the imports that close it (remove an entry when
#: its cycle is broken: the strict xfail below then reports it)
KNOWN_CYCLES: dict[frozenset, str] = {}


def test_the_package_has_no_new_import_cycle():
    found = [c for c in cycles(graph(modules())) if frozenset(c) not in KNOWN_CYCLES]
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.xfail(bool(KNOWN_CYCLES), strict=True, reason="; ".join(KNOWN_CYCLES.values()))
def test_the_package_has_no_import_cycle():
    found = cycles(graph(modules()))
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_private_name_is_imported_from_another_module():
    found = private_imports(modules())
    assert found == [], "private names imported across modules:\n" + "\n".join(found)


@pytest.mark.parametrize("mod", ["mice_bench.spec", "mice_bench.families", "mice_bench.layerspec",
                                 "mice_bench.naming"])
def test_the_pure_modules_import_nothing_heavy(mod):
    """The variant registry and the naming helpers stay importable without torch."""
    path = modules()[mod]
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and not n.level}
    assert not names & {"torch", "numpy", "matplotlib", "transformers"}


# ------------------------------------------------------------------ the layers
#: each module's layer, by the longest prefix that names it: the core (the library), then data
#: and evaluation, then the commands and integrations; a module may import its own layer and
#: the layers below it, never one above
LAYERS: dict[str, int] = {
    "mice_bench": 0, "mice_bench.spec": 0, "mice_bench.families": 0, "mice_bench.layerspec": 0,
    "mice_bench.naming": 0, "mice_bench.errors": 0, "mice_bench.backbone": 0,
    "mice_bench.backbones": 0, "mice_bench.executors": 0, "mice_bench.model": 0,
    "mice_bench.store": 0, "mice_bench.api": 0, "mice_bench.checkpoints": 0,
    "mice_bench.results": 0, "mice_bench.safeio": 0, "mice_bench.progress": 0,
    "mice_bench.console": 0, "mice_bench.devices": 0, "mice_bench.distributed": 0,
    "mice_bench.legacy": 0, "mice_bench.checkpoint_files": 0, "mice_bench.viz": 0,
    "mice_bench.data": 1, "mice_bench.evaluation": 1,
}
LAYER_NAMES = ("core", "data and evaluation", "commands and integrations")


def layer(mod: str) -> int:
    """The layer of ``mod``: that of the longest prefix in :data:`LAYERS`, else the top."""
    parts = mod.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in LAYERS and (i > 1 or name == mod):
            return LAYERS[name]
    return len(LAYER_NAMES) - 1


def upward_imports(mods: dict[str, Path]) -> list[str]:
    """``importer:line (layer) imports module (layer)`` for every import of a higher layer."""
    out = []
    for src, dst, _, line in imports(mods):
        if dst in mods and layer(dst) > layer(src):
            out.append(f"{src}:{line} ({LAYER_NAMES[layer(src)]}) imports {dst} "
                       f"({LAYER_NAMES[layer(dst)]})")
    return sorted(out)


def test_layers_are_assigned_by_the_longest_prefix():
    assert layer("mice_bench.store.docstore") == 0
    assert layer("mice_bench.executors") == 0
    assert layer("mice_bench.evaluation.stats") == 1
    assert layer("mice_bench.data") == 1
    assert layer("mice_bench.latency.runner") == 2
    assert layer("mice_bench.cli") == 2
    assert layer("mice_bench.storehouse") == 2  # a prefix of a name is not its package


def test_the_checker_finds_a_planted_upward_import(tmp_path):
    pkg = tmp_path / "mice_bench"
    (pkg / "store").mkdir(parents=True)
    (pkg / "evaluation").mkdir()
    (pkg / "latency").mkdir()
    for d in ("", "store", "evaluation", "latency"):
        (pkg / d / "__init__.py").write_text("")
    (pkg / "store" / "docstore.py").write_text("def f():\n    from ..evaluation import stats\n")
    (pkg / "evaluation" / "stats.py").write_text("from ..store import docstore\n")
    (pkg / "evaluation" / "table.py").write_text("from mice_bench.latency import rows\n")
    (pkg / "latency" / "rows.py").write_text("from ..evaluation import stats\n")
    assert upward_imports(modules(pkg)) == [
        "mice_bench.evaluation.table:1 (data and evaluation) imports mice_bench.latency.rows "
        "(commands and integrations)",
        "mice_bench.store.docstore:2 (core) imports mice_bench.evaluation.stats "
        "(data and evaluation)",
    ]


def test_nothing_imports_a_higher_layer():
    found = upward_imports(modules())
    assert found == [], "imports of a higher layer:\n" + "\n".join(found)
