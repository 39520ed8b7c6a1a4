"""Metrics through ir_measures: per-query values over the judged queries, and their means.

Every judged query counts: a query without candidates (or missing from the run) scores 0,
as with ``trec_eval -c``. ``MRR@10`` is accepted as an alias of ``RR@10``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..errors import UsageError

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100")
_ALIASES = {"mrr@10": "RR@10", "mrr": "RR", "ndcg@10": "nDCG@10", "recall@100": "R@100"}


def split_measures(text: str) -> list[str]:
    """The command line's ``--measures`` text -> names; commas inside parentheses belong to
    the measure (``P(rel=2,judged_only=True)@10``).

    >>> split_measures("nDCG@10, RR(rel=2)@10,P(rel=2,judged_only=True)@5")
    ['nDCG@10', 'RR(rel=2)@10', 'P(rel=2,judged_only=True)@5']
    """
    from ..naming import split_top_level

    return split_top_level(text, "()")


def parse_measures(names: Sequence[str], where: str = "") -> list:
    """Measure names (``["nDCG@10", "RR@10"]``) -> ir_measures measure objects (unknown or
    invalid parameters -> UsageError, prefixed by ``where``)."""
    import ir_measures

    if isinstance(names, str):
        raise TypeError("parse_measures takes a list of names (split_measures splits text)")
    out = []
    try:
        for n in (x for x in names if x):
            try:
                out.append(ir_measures.parse_measure(_ALIASES.get(n.lower(), n)))
            except (ValueError, NameError, SyntaxError, TypeError) as e:
                raise UsageError(f"unknown measure {n!r} ({e}); examples: nDCG@10, RR@10, "
                                 "R@100, RR(rel=2)@10, AP") from None
        if not out:
            raise UsageError("no measure given")
        for n, m in zip((x for x in names if x), out):
            check_measure(m, n)
    except UsageError as e:
        raise UsageError(f"{where}{e}") from None
    return out


def check_measure(m, name: str | None = None) -> None:
    """Every parameter of an ir_measures measure is one it supports, of its type and in its
    range: a cutoff is a whole number >= 1, ``rel`` a grade >= 1, a choice one of its choices,
    ``gains`` a mapping of whole numbers. pytrec_eval aborts the process (SIGABRT) on some
    values (``nDCG@0``), so they are refused here, before any evaluation."""
    what = f"measure {name or m!s}"
    supported = getattr(m, "SUPPORTED_PARAMS", {}) or {}
    for k, v in (getattr(m, "params", {}) or {}).items():
        if v is None:
            continue
        info = supported.get(k)
        if info is None:
            raise UsageError(f"{what}: unknown parameter {k!r}; valid: "
                             f"{', '.join(sorted(supported)) or 'none'}")
        dtype = getattr(info, "dtype", None)
        choices = getattr(info, "choices", None)
        if isinstance(choices, (list, tuple)) and v not in choices:
            raise UsageError(f"{what}: {k}={v!r} is not one of {', '.join(map(str, choices))}")
        if dtype is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise UsageError(f"{what}: {k}={v!r} must be a whole number")
        if dtype is bool and not isinstance(v, bool):
            raise UsageError(f"{what}: {k}={v!r} must be True or False")
        if k == "cutoff" and v < 1:
            raise UsageError(f"{what}: the cutoff @{v} must be >= 1 (e.g. nDCG@10)")
        if k == "rel" and v < 1:
            raise UsageError(f"{what}: rel={v} must be a relevance grade >= 1")
        if dtype is dict and (not isinstance(v, dict) or not all(
                isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool)
                and not isinstance(b, bool) for a, b in v.items())):
            raise UsageError(f"{what}: {k} must map whole-number grades to whole numbers")


def check_depth(names: Sequence[str], measures: Sequence, depth: int,
                option: str = "--measures") -> list[str]:
    """The measures cut off above ``depth``: refused (UsageError) when they were chosen
    (``names`` other than :data:`DEFAULT_MEASURES`), returned to be flagged in every result
    when they are the defaults."""
    beyond = measures_beyond_depth(measures, depth)
    if beyond and list(names) != list(DEFAULT_MEASURES):
        raise UsageError(f"{option} {', '.join(beyond)}: cutoff above depth {depth} (the "
                         "first stage gives at most that many candidates, so the number would "
                         f"be a measure at {depth}); raise the depth or lower the cutoff")
    return beyond


def measures_beyond_depth(measures: Iterable, depth: int) -> list[str]:
    """The measures whose cutoff is above ``depth`` (e.g. ``R@100`` over 20 candidates, which
    would equal recall@20 under another name)."""
    return [str(m) for m in measures
            if isinstance((getattr(m, "params", {}) or {}).get("cutoff"), int)
            and m.params["cutoff"] > depth]


def measure_names(measures: Iterable) -> list[str]:
    return [str(m) for m in measures]


def per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
              measures: Sequence) -> dict[str, dict[str, float]]:
    """``{measure name: {qid: value}}`` for every query in ``qrels`` (0 where unscored).

    qrels: qid -> {doc_id: grade}; run: qid -> {doc_id: score}.
    """
    import ir_measures

    names = measure_names(measures)
    out: dict[str, dict[str, float]] = {n: {q: 0.0 for q in qrels} for n in names}
    run = {q: docs for q, docs in run.items() if q in qrels and docs}
    if run:
        for m in ir_measures.iter_calc(list(measures), qrels, run):
            name = str(m.measure)
            if name in out and m.query_id in out[name]:
                out[name][m.query_id] = float(m.value)
    return out


def aggregate(pq: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each measure over its queries."""
    return {n: float(np.mean(list(v.values()))) if v else float("nan") for n, v in pq.items()}


def mean_over_seeds(per_seed: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-query mean over several seeds (the queries of the first seed; all must agree)."""
    if not per_seed:
        return {}
    qids = list(per_seed[0])
    for s in per_seed[1:]:
        if set(s) != set(qids):
            raise ValueError("seeds were evaluated on different queries")
    return {q: float(np.mean([s[q] for s in per_seed])) for q in qids}
