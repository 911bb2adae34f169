"""Statistics shared by the studies: NaN-aware means, paired Wilcoxon tests and Holm's correction."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def nanmean(a: np.ndarray) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    return float(a[finite].mean()) if finite.any() else math.nan


def finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a_i, b_i) where both are finite."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def paired_test(after: np.ndarray, before: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank (two-sided) on ``after − before`` over the finite pairs: ``n``, ``estimate`` (mean
    difference), ``effect`` (paired dominance P(d>0) − P(d<0)) and ``p`` (1 when every difference is 0, NaN
    without pairs)."""
    a, b = finite_pairs(after, before)
    d = a - b
    out = {"n": len(d), "estimate": float(np.mean(d)) if len(d) else math.nan,
           "effect": float(np.sign(d).mean()) if len(d) else math.nan, "p": math.nan}
    if len(d) and np.any(d != 0):
        out["p"] = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    elif len(d):
        out["p"] = 1.0
    return out


def holm(pvalues: list[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order: for the i-th smallest
    of the m finite p-values, max over j ≤ i of (m − j + 1)·p_(j), capped at 1. Non-finite entries (and None)
    are left out of m and come back NaN."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(pvalues[i])))
        out[i] = running
    return out
