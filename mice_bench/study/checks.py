"""Checks of single values of a study file: types, choices, names and lists.

Every failure is a :class:`~.schema.StudyError` naming the file and the key (exit 2).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .schema import CHOICES, StudyError

__all__ = ["check_keys", "check_value", "int_list", "plain_name", "variant_names"]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]*")


def plain_name(path: Path, key: str, value: Any) -> str:
    """A name that becomes part of a result file's path: letters, digits and ``. _ + -``,
    never a folder (``/``), ``..`` or a hidden name, so that every file stays inside the
    results folder."""
    v = str(value)
    if not _PLAIN_NAME.fullmatch(v) or ".." in v:
        raise StudyError(f"{path}: key {key!r} = {v!r} names result files: use letters, "
                         "digits and . _ + - only (no folders, no '..'), e.g. 'rerank-cpu'")
    return v


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "a list", dict: "a table"}
    return " or ".join(names[t] for t in types)


def check_value(path: Path, key: str, value: Any, types: tuple) -> None:
    """``value`` of ``key`` is one of ``types`` (true/false is no integer) and, for a key
    with fixed choices (:data:`~.schema.CHOICES`), one of them."""
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool))
             for t in types)
    if not ok:
        raise StudyError(f"{path}: key {key!r} must be {_type_name(types)}, got "
                         f"{type(value).__name__} {value!r}")
    if key.split(".")[-1] in CHOICES and CHOICES[key.split(".")[-1]] and \
            value not in CHOICES[key.split(".")[-1]]:
        raise StudyError(f"{path}: key {key!r} = {value!r} is not one of "
                         f"{', '.join(CHOICES[key.split('.')[-1]])}")


def variant_names(path: Path, key: str, names: list) -> list[str]:
    """The canonical names of the variants ``names`` (``bm25`` kept); at least one."""
    from ..spec import SpecError, parse

    out = []
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise StudyError(f"{path}: key '{key}[{i}]' must be a variant name, got {n!r}")
        if n == "bm25":
            out.append(n)
            continue
        try:
            out.append(str(parse(n)))
        except SpecError as e:
            raise StudyError(f"{path}: key '{key}[{i}]' = {n!r}: {e}") from None
    if not out:
        raise StudyError(f"{path}: key {key!r} is empty")
    return out


def int_list(path: Path, key: str, v: Any) -> list[int]:
    """``v`` (one integer or a list) as a non-empty list of positive integers."""
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                           for x in vals):
        raise StudyError(f"{path}: key {key!r} needs positive integers, got {v!r}")
    return vals



def check_keys(path: Path, where: str, table: dict, allowed: dict) -> None:
    """Every key of ``table`` (named ``where.KEY``) is in ``allowed`` and of its types."""
    for k, v in table.items():
        if k not in allowed:
            raise StudyError(f"{path}: unknown key '{where}.{k}'; valid: {', '.join(allowed)}")
        check_value(path, f"{where}.{k}", v, allowed[k])
