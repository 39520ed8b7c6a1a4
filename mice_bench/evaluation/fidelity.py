"""How faithfully a compressed document store reproduces the fp32 store's scores and quality.

Pure functions over runs (``{qid: {doc_id: score}}``) and per-query measures
(``{qid: value}``):

* :func:`score_fidelity`: per query, Kendall's tau-b of the two score lists over the same
  candidates (``scipy.stats.kendalltau``) and the overlap of the two top-10s (fraction of the
  reference's top 10 found in the other's), each averaged over queries (the smallest tau is
  kept too); and the largest absolute score difference divided by that query's spread of
  reference scores (max - min), the largest over queries and its median;
* :func:`paired_difference`: the mean per-query difference (other - reference), its 95 %
  confidence interval (Student's t over queries) and the two-sided paired t-test p-value;
* :func:`ms_marco_bytes`: a store's size for MS MARCO passage, *computed* (not measured) from
  bytes per token and mean tokens per passage, plus the codec table once.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .stats import paired_ttest

__all__ = ["score_fidelity", "paired_difference", "ms_marco_bytes", "MS_MARCO_PASSAGES"]

Run = Mapping[str, Mapping[str, float]]
#: passages of the MS MARCO passage collection (msmarco-passage, 8,841,823)
MS_MARCO_PASSAGES = 8_841_823


def score_fidelity(ref: Run, other: Run, k: int = 10) -> dict:
    """Tau, top-``k`` overlap and the largest score error relative to the spread (module
    docstring), over the queries both runs score; pairs only one run has are ignored."""
    from scipy.stats import kendalltau

    taus, overlaps, errs = [], [], []
    for q in sorted(set(ref) & set(other)):
        docs = sorted(set(ref[q]) & set(other[q]))
        if len(docs) < 2:
            continue
        a = np.array([ref[q][d] for d in docs], dtype=np.float64)
        b = np.array([other[q][d] for d in docs], dtype=np.float64)
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            taus.append(float(kendalltau(a, b).statistic))
        elif np.array_equal(a, b):
            taus.append(1.0)
        n = min(k, len(docs))
        top_a = {docs[i] for i in np.argsort(-a, kind="stable")[:n]}
        top_b = {docs[i] for i in np.argsort(-b, kind="stable")[:n]}
        overlaps.append(len(top_a & top_b) / n)
        spread = float(np.ptp(a))
        diff = float(np.abs(a - b).max())
        errs.append(diff / spread if spread > 0 else (0.0 if diff == 0 else math.inf))
    return {"queries": len(overlaps),
            "tau_mean": float(np.mean(taus)) if taus else None,
            "tau_min": float(np.min(taus)) if taus else None,
            f"top{k}_overlap": float(np.mean(overlaps)) if overlaps else None,
            "max_err_over_spread": float(np.max(errs)) if errs else None,
            "median_err_over_spread": float(np.median(errs)) if errs else None}


def paired_difference(ref: Mapping[str, float], other: Mapping[str, float]) -> dict:
    """``other - ref`` over the queries both have: mean, 95 % CI (t), paired t-test p."""
    from scipy import stats

    qs = sorted(set(ref) & set(other))
    a = np.array([ref[q] for q in qs], dtype=np.float64)
    b = np.array([other[q] for q in qs], dtype=np.float64)
    d = b - a
    n = len(d)
    if n == 0:
        return {"queries": 0, "mean": None, "ci95": None, "p": None}
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"queries": n, "mean": mean, "ci95": [mean - half, mean + half],
            "p": float(paired_ttest(b, a))}


def ms_marco_bytes(bytes_per_token: float, tokens_per_passage: float,
                   codec_bytes: float = 0.0, passages: int = MS_MARCO_PASSAGES) -> float:
    """Bytes of a store of every MS MARCO passage (computed, not measured)."""
    return bytes_per_token * tokens_per_passage * passages + codec_bytes
