"""The family registry: ``config.model_type`` -> family adapter (filled by the package's
``__init__``, one :func:`register_family` call per adapter)."""

from __future__ import annotations

from ..errors import UsageError
from .base import Family

__all__ = ["FAMILIES", "register_family", "family_for", "get_family"]

#: ``config.model_type`` -> family adapter
FAMILIES: dict[str, Family] = {}
_BY_NAME: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register an adapter under its name and every ``model_type`` it reads."""
    _BY_NAME[family.name] = family
    for mt in family.model_types:
        FAMILIES[mt] = family
    return family


def family_for(model_type: str) -> Family:
    """The adapter of a Hugging Face ``model_type`` (UsageError listing the valid ones)."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise UsageError(f"model_type {model_type!r} is not supported; mice-bench runs "
                         f"{', '.join(sorted(FAMILIES))}") from None


def get_family(name: str | Family) -> Family:
    """The adapter by family name (``bert``, ``electra``, ``roberta``, ``modernbert``)."""
    if isinstance(name, Family):
        return name
    if name in _BY_NAME:
        return _BY_NAME[name]
    return family_for(name)
