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


def parse_measures(names: Sequence[str]) -> list:
    """Measure names (``["nDCG@10", "RR@10"]``) -> ir_measures measure objects (unknown ->
    UsageError)."""
    import ir_measures

    if isinstance(names, str):
        raise TypeError("parse_measures takes a list of names (split_measures splits text)")
    out = []
    for n in (x for x in names if x):
        try:
            out.append(ir_measures.parse_measure(_ALIASES.get(n.lower(), n)))
        except (ValueError, NameError, SyntaxError, TypeError) as e:
            raise UsageError(f"unknown measure {n!r} ({e}); examples: nDCG@10, RR@10, R@100, "
                             "RR(rel=2)@10, AP") from None
    if not out:
        raise UsageError("no measure given")
    return out


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
