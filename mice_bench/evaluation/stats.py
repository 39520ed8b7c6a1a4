"""Paired significance tests and multiple-comparison corrections.

* :func:`paired_ttest` – two-sided paired t-test (``scipy.stats.ttest_rel``).
* :func:`paired_randomization` – two-sided paired randomization (sign-flip) test, seeded:
  ``p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + R)`` over ``R`` random sign vectors ``s``.
* :func:`holm` / :func:`bonferroni` – family-wise corrections of a list of p-values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TESTS = ("ttest", "randomization")
CORRECTIONS = ("holm", "bonferroni", "none")


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {x.shape} and {y.shape}")
    return x - y


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value of ``a`` vs ``b`` (``[Q]`` each). 1.0 if no difference."""
    from scipy import stats

    d = _paired(a, b)
    # order-independent checks (against 0 and the mean, not the first query's difference)
    if len(d) < 2 or np.allclose(d, 0.0):
        return 1.0
    if np.allclose(d, d.mean()):  # constant non-zero difference: zero variance, certain effect
        return 0.0
    return float(stats.ttest_rel(np.asarray(a, float), np.asarray(b, float)).pvalue)


def paired_randomization(a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000,
                         seed: int = 0) -> float:
    """Two-sided paired randomization test p-value (random sign flips of the differences).

    a, b: per-query values ``[Q]``. Deterministic for a given ``seed``.
    """
    d = _paired(a, b)
    if len(d) == 0 or np.allclose(d, 0.0):
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    hits = 0
    chunk = 2_000
    done = 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(r, len(d)))  # [r, Q]
        means = np.abs(signs @ d) / len(d)                              # [r]
        hits += int(np.count_nonzero(means >= observed - 1e-12))
        done += r
    return (hits + 1) / (n_resamples + 1)


def paired_test(name: str, a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    if name == "ttest":
        return paired_ttest(a, b)
    if name == "randomization":
        return paired_randomization(a, b, seed=seed)
    raise ValueError(f"unknown test {name!r}; valid: {', '.join(TESTS)}")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (same order as the input).

    Sort ascending ``p_(1) <= ... <= p_(m)``; ``adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))``.
    NaNs are kept as NaN and do not count in ``m``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    idx = np.flatnonzero(ok)
    m = len(idx)
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Bonferroni adjusted p-values ``min(1, m p)`` (NaNs kept, not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = int(np.count_nonzero(~np.isnan(p)))
    return np.where(np.isnan(p), np.nan, np.minimum(1.0, p * m)).tolist()


def correct(name: str, pvalues: Sequence[float]) -> list[float]:
    if name == "holm":
        return holm(pvalues)
    if name == "bonferroni":
        return bonferroni(pvalues)
    if name == "none":
        return [float(x) for x in pvalues]
    raise ValueError(f"unknown correction {name!r}; valid: {', '.join(CORRECTIONS)}")
