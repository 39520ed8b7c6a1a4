"""The backbone modules import downward only (no cycle between ``mice_bench.backbone`` and
``mice_bench.backbones``), and a checkpoint's layer count is one public function that every
command uses."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from mice_bench.backbones.files import checkpoint_layers
from mice_bench.errors import UsageError

PKG = Path(__file__).resolve().parents[1] / "mice_bench"


def _imports(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` imports (relative imports resolved against its package)."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
    return out


def test_the_backbones_package_never_imports_backbone_py():
    for f in sorted((PKG / "backbones").glob("*.py")):
        bad = {m for m in _imports(f) if m == "mice_bench.backbone"}
        assert not bad, f"{f.name} imports {bad}"


def test_the_import_check_sees_a_relative_import():
    """The check above can fail: ``from ..backbone import X`` in the package is seen."""
    f = PKG / "backbones" / "bert.py"
    assert "mice_bench.backbones.weights" in _imports(f)
    assert "mice_bench.backbone" in _imports(f, "from ..backbone import Backbone\n")


def test_no_private_name_of_backbone_is_imported_elsewhere():
    for f in sorted(PKG.rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("backbone"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{f}: imports {private} from {node.module}"


def test_layer_count_of_architectures_folders_and_hub_ids(tmp_path, tiny_hf):
    from mice_bench.backbone import packaged_tokenizer

    assert checkpoint_layers("minilm-l6") == 6 and checkpoint_layers("ettin-17m") == 7
    d = tmp_path / "m"
    tiny_hf.save_pretrained(d)
    packaged_tokenizer().save_pretrained(d)
    assert checkpoint_layers(str(d)) == json.loads((d / "config.json").read_text())[
        "num_hidden_layers"]
    assert checkpoint_layers("org/some-model") is None            # not read here
    with pytest.raises(UsageError, match="no such directory"):
        checkpoint_layers(str(tmp_path / "nope"))
    (d / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(UsageError, match="model.safetensors is broken"):
        checkpoint_layers(str(d))


def test_every_command_reads_the_layer_count_through_the_one_function():
    """effectiveness, latency and variants/verify: no private config reading left."""
    for rel in ("effectiveness/checks.py", "latency/cli.py", "commands_core.py"):
        src = (PKG / rel).read_text()
        assert "checkpoint_layers" in src, rel
        assert "num_hidden_layers\"]" not in src, rel
