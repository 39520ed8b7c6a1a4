"""The examples in docstrings (``>>>``) are run: a wrong example is a failing test."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mice_bench


def _modules() -> list[str]:
    out = []
    for m in pkgutil.walk_packages(mice_bench.__path__, "mice_bench."):
        if m.name.endswith("__main__"):
            continue
        spec = importlib.util.find_spec(m.name)
        src = spec.origin if spec else None
        if src and src.endswith(".py") and ">>>" in open(src, encoding="utf-8").read():
            out.append(m.name)
    return out


MODULES = _modules()


def test_some_modules_have_examples():
    assert len(MODULES) >= 5, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples failed in {name}"
