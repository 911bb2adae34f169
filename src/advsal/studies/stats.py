"""Statistics shared by the studies: NaN-aware means and standard deviations, paired tests (Wilcoxon
signed-rank, sign-flip permutation) and Holm's correction.

Every statistical test a study reports lives here, built on ``scipy.stats`` where it does the job; each function
is checked against ``scipy.stats`` (or a hand computation where scipy has no equivalent) in tests/test_stats.py.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from ..errors import InputError


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


def nanstd(a: np.ndarray) -> float:
    """Sample standard deviation (ddof = 1) of the finite entries (NaN when there are fewer than two)."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.std(a, ddof=1)) if len(a) > 1 else math.nan


#: Up to this many non-zero differences the sign-flip test enumerates all 2^n flips (65,536 at most).
EXACT_FLIPS = 16


def paired_permutation_test(differences: np.ndarray, n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Two-sided sign-flip permutation test of H0 "the paired differences are symmetric about 0"
    (``scipy.stats.permutation_test`` with ``permutation_type="samples"`` on one sample, i.e. sign flips).

    Statistic: the sum of the differences, equivalent to their mean (zero differences do not change under a
    flip). Over the finite differences: exact enumeration for ≤ ``EXACT_FLIPS`` non-zero ones, else
    ``n_resamples`` seeded Monte-Carlo flips with scipy's (1 + hits) / (1 + resamples) estimate. For 0/1
    outcomes this is an exact McNemar-type test on the discordant pairs. Returns ``n`` (finite pairs),
    ``n_nonzero``, ``estimate`` (mean difference over all ``n``), ``p`` (1 with fewer than two non-zero
    differences, NaN without pairs) and ``exact``."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    nz = d[d != 0]
    out: dict[str, Any] = {"n": len(d), "n_nonzero": len(nz), "estimate": float(d.mean()) if len(d) else math.nan,
                           "p": 1.0 if len(d) else math.nan, "exact": True}
    if len(nz) < 2:  # both flips of one difference are as extreme as itself (scipy needs two observations)
        return out
    exact = len(nz) <= EXACT_FLIPS
    res = stats.permutation_test((nz,), _sum, permutation_type="samples", vectorized=True,
                                 n_resamples=2 ** len(nz) if exact else n_resamples, alternative="two-sided",
                                 batch=max(1, (1 << 22) // len(nz)), rng=np.random.default_rng(seed))
    out.update(p=float(min(1.0, res.pvalue)), exact=exact)
    return out


def _sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(x, axis=axis)


def holm(pvalues: list[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order: for the i-th smallest
    of the m finite p-values, max over j ≤ i of (m − j + 1)·p_(j), capped at 1. Non-finite entries (and None)
    are left out of m and come back NaN.

    Written out because scipy has no family-wise correction: ``scipy.stats.false_discovery_control`` is
    Benjamini–Hochberg/–Yekutieli, which controls the false discovery rate, not the family-wise error the
    studies' verdicts promise (statsmodels' ``multipletests`` has Holm, but is not a dependency)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(pvalues[i])))
        out[i] = running
    return out


# -- appended for the attention study (seed 004): interval estimates and unpaired / correlation tests ----------
def mean_ci(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean with a Student-t interval (``scipy.stats.t.interval``), median and n of the finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": math.nan, "lo": math.nan, "hi": math.nan, "median": math.nan}
    mean = float(v.mean())
    lo = hi = math.nan
    if n > 1:
        sem = float(stats.sem(v))
        lo, hi = (mean, mean) if sem == 0 else map(float, stats.t.interval(level, n - 1, loc=mean, scale=sem))
    return {"n": n, "mean": mean, "lo": lo, "hi": hi, "median": float(np.median(v))}


def groups_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mann-Whitney U (two-sided) of the finite values of ``a`` vs ``b``: ``n`` (smaller group), ``n_a``,
    ``n_b``, ``p``, ``estimate`` (difference of medians) and ``effect`` = Cliff's δ = P(a > b) − P(a < b)
    (Cliff 1993), which is 2U/(n_a·n_b) − 1 of the same U statistic."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {"n": min(len(a), len(b)), "n_a": len(a), "n_b": len(b), "effect": math.nan, "p": math.nan,
           "estimate": math.nan}
    if len(a) and len(b):
        res = stats.mannwhitneyu(a, b, alternative="two-sided")
        out.update(effect=float(2 * res.statistic / (len(a) * len(b)) - 1), p=float(res.pvalue),
                   estimate=float(np.median(a) - np.median(b)))
    return out


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's δ = P(a > b) − P(a < b) over all pairs of finite values, in [−1, 1] (NaN if either is empty)."""
    return groups_test(a, b)["effect"]


def correlation_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Spearman's ρ (``effect`` and ``estimate``) with its two-sided ``p`` over the finite pairs (NaN with fewer
    than 3 pairs or a constant side)."""
    a, b = finite_pairs(a, b)
    out = {"n": len(a), "effect": math.nan, "estimate": math.nan, "p": math.nan}
    if len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        res = stats.spearmanr(a, b)
        out.update(effect=float(res.statistic), estimate=float(res.statistic), p=float(res.pvalue))
    return out


def median_bootstrap(values: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> dict[str, float]:
    """Median of the finite values with a percentile-bootstrap interval (``scipy.stats.bootstrap``, seeded)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "estimate": math.nan, "lo": math.nan, "hi": math.nan}
    med = float(np.median(v))
    if len(v) == 1 or np.ptp(v) == 0:
        return {"n": len(v), "estimate": med, "lo": med, "hi": med}
    ci = stats.bootstrap((v,), np.median, n_resamples=resamples, confidence_level=level, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return {"n": len(v), "estimate": med, "lo": float(ci.low), "hi": float(ci.high)}


# -- appended for the reports (issue #17): bootstrap intervals over test images ----------------------------------
#: Bootstrap resamples for the reports' intervals: percentile bounds at 95% move by < 0.01 beyond this many.
BOOTSTRAP_RESAMPLES = 1000


def _auroc_along(clean: np.ndarray, adv: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC of ``adv`` (positives) vs ``clean`` scores along ``axis``: Mann-Whitney U / (n_clean · n_adv), ties
    counted half (mid-ranks), vectorised over resamples."""
    both = np.concatenate([clean, adv], axis=axis)
    ranks = stats.rankdata(both, axis=axis)
    n_c, n_a = clean.shape[axis], adv.shape[axis]
    u = np.take(ranks, np.arange(n_c, n_c + n_a), axis=axis).sum(axis=axis) - n_a * (n_a + 1) / 2
    return u / (n_c * n_a)


def bootstrap_interval(samples: tuple[np.ndarray, ...], statistic, *, paired: bool = False,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> dict[str, float]:
    """``statistic(*samples)`` with a percentile-bootstrap interval over the samples' entries (test images):
    ``scipy.stats.bootstrap`` with ``vectorized=True`` (``statistic(*samples, axis=-1)``), seeded. ``paired``
    resamples the same indices in every sample (e.g. a clean image and its adversarial version). Returns
    ``estimate``, ``lo``, ``hi`` and ``n`` (entries of the first sample); a degenerate sample (one entry, or a
    constant statistic) gives lo = hi = estimate, an empty one NaN."""
    arrays = tuple(np.asarray(s, dtype=np.float64).ravel() for s in samples)
    n = len(arrays[0])
    if any(len(a) == 0 for a in arrays):
        return {"estimate": math.nan, "lo": math.nan, "hi": math.nan, "n": n}
    estimate = float(statistic(*arrays, axis=-1))
    if all(len(a) < 2 or np.ptp(a) == 0 for a in arrays):
        return {"estimate": estimate, "lo": estimate, "hi": estimate, "n": n}
    ci = stats.bootstrap(arrays, statistic, paired=paired, vectorized=True, n_resamples=resamples,
                         confidence_level=level, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # every resample equal: scipy returns NaN bounds
        lo = hi = estimate
    return {"estimate": estimate, "lo": min(lo, estimate), "hi": max(hi, estimate), "n": n}


def rate_interval(outcomes: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """A rate (mean of 0/1 outcomes, one per test image) with its percentile-bootstrap interval."""
    return bootstrap_interval((np.asarray(outcomes, dtype=np.float64),), np.mean, resamples=resamples, seed=seed,
                              level=level)


def auroc_interval(scores_clean: np.ndarray, scores_adv: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """AUROC (adversarial = positive) with a percentile-bootstrap interval over test images; clean and
    adversarial scores are resampled together (paired) when they come from the same images (equal lengths)."""
    clean, adv = np.asarray(scores_clean, dtype=np.float64), np.asarray(scores_adv, dtype=np.float64)
    return bootstrap_interval((clean, adv), _auroc_along, paired=len(clean) == len(adv), resamples=resamples,
                              seed=seed, level=level)


def seeds_interval(values: list[float] | np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean ± Student-t interval over repeated seeds (``mean_ci``), as ``estimate``/``lo``/``hi``/``n``."""
    m = mean_ci(np.asarray(values, dtype=float), level)
    return {"estimate": m["mean"], "lo": m["lo"], "hi": m["hi"], "n": m["n"]}


def intervals_overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two intervals (``lo``/``hi``) overlap; an interval with a NaN bound counts as overlapping."""
    bounds = [a.get("lo"), a.get("hi"), b.get("lo"), b.get("hi")]
    if any(v is None or not np.isfinite(v) for v in bounds):
        return True
    return a["lo"] <= b["hi"] and b["lo"] <= a["hi"]


# -- appended for the imbalance study (seed 002, issue #18): right-censored values and seed-level tests ---------
def _censored(values: np.ndarray, censored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(censored, dtype=bool).ravel()
    if v.shape != c.shape:
        raise InputError(f"values ({v.shape}) and censored ({c.shape}) must have the same length")
    keep = np.isfinite(v)
    return v[keep], c[keep]


def km_median(values: np.ndarray, censored: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Kaplan–Meier median of right-censored values (``censored[i]``: the true value is *at least*
    ``values[i]``, e.g. an image never fooled up to ε_max) with the interval where the survival function's
    pointwise ``level`` band (``scipy.stats.ecdf(CensoredData).sf.confidence_interval``, Greenwood, log-log)
    crosses 0.5. ``median`` / ``hi`` are +inf when the curve (band) never falls to 0.5 — more than half of the
    values lie beyond the largest observed one. Returns ``n``, ``n_censored``, ``median``, ``lo``, ``hi``."""
    v, c = _censored(values, censored)
    out = {"n": len(v), "n_censored": int(c.sum()), "median": math.nan, "lo": math.nan, "hi": math.nan}
    if not len(v):
        return out
    if c.all():  # no event: the survival curve stays at 1
        return {**out, "median": math.inf, "lo": float(v.max()), "hi": math.inf}
    sf = stats.ecdf(stats.CensoredData(uncensored=v[~c], right=v[c])).sf
    out["median"] = _first_at_most_half(sf.quantiles, sf.probabilities)
    if (~c).sum() > 1:
        with warnings.catch_warnings():  # scipy warns that the band is undefined where S is 0 or 1: NaN there
            warnings.filterwarnings("ignore", "The confidence interval is undefined", RuntimeWarning)
            band = sf.confidence_interval(level, method="log-log")
        out["lo"] = _first_at_most_half(band.low.quantiles, band.low.probabilities)
        out["hi"] = _first_at_most_half(band.high.quantiles, band.high.probabilities)
    return out


def _first_at_most_half(t: np.ndarray, s: np.ndarray) -> float:
    hit = np.nonzero(np.nan_to_num(s, nan=1.0) <= 0.5)[0]
    return float(t[hit[0]]) if len(hit) else math.inf


def logrank_test(a: np.ndarray, a_censored: np.ndarray, b: np.ndarray, b_censored: np.ndarray) -> dict[str, float]:
    """Two-sided log-rank test (``scipy.stats.logrank``) of H0 "the two right-censored samples share one
    survival function". Returns ``n_a``, ``n_b``, ``events`` (uncensored values), ``statistic`` (scipy's
    signed z: positive when ``a`` has more events than expected, i.e. smaller values) and ``p``; NaN without
    values in both groups or without any event."""
    a, ac = _censored(a, a_censored)
    b, bc = _censored(b, b_censored)
    out = {"n_a": len(a), "n_b": len(b), "events": int((~ac).sum() + (~bc).sum()), "statistic": math.nan,
           "p": math.nan}
    if len(a) and len(b) and out["events"]:
        if np.ptp(np.concatenate([a, b])) == 0 and not (ac.any() or bc.any()):
            return {**out, "statistic": 0.0, "p": 1.0}  # all events at one value: nothing to tell apart
        res = stats.logrank(stats.CensoredData(uncensored=a[~ac], right=a[ac]),
                            stats.CensoredData(uncensored=b[~bc], right=b[bc]), alternative="two-sided")
        out.update(statistic=float(res.statistic), p=float(res.pvalue))
    return out


def seed_level_test(differences: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Test across training seeds: one-sample Student t (``scipy.stats.ttest_1samp``, two-sided) of H0 "the mean
    per-seed difference is 0", with its t interval, and the exact two-sided sign test (``scipy.stats.binomtest``)
    on the signs. Unlike an image-level test pooled over seeds, it treats the seed (training randomness) as the
    unit, so a significant result speaks for the intervention, not for a few trained models. (With n seeds a
    sign test cannot fall below 2^(1−n): 0.0625 for 5 seeds.) Returns ``n``, ``estimate``, ``lo``, ``hi``,
    ``p`` (t), ``p_sign``, ``up``, ``down`` and ``consistent`` (all non-zero differences share one sign)."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    up, down = int((d > 0).sum()), int((d < 0).sum())
    ci = mean_ci(d, level)
    out: dict[str, Any] = {"n": len(d), "estimate": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "p": math.nan,
                           "p_sign": math.nan, "up": up, "down": down,
                           "consistent": bool(up + down > 0 and (up == 0 or down == 0))}
    if up + down:
        out["p_sign"] = float(stats.binomtest(up, up + down, 0.5).pvalue)
    if len(d) > 1 and np.ptp(d) > 0:
        out["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    elif len(d) > 1:  # identical differences: no spread, t is 0/0 (all zero) or infinite
        out["p"] = 1.0 if d[0] == 0 else 0.0
    return out


# -- appended for the attention study (issue #18): equivalence and interval estimates of paired effects ---------
def equivalence_test(after: np.ndarray, before: np.ndarray, margin: float, alpha: float = 0.05) -> dict[str, Any]:
    """Paired two one-sided t-tests (TOST; Schuirmann 1987) of H0 "|mean(after − before)| ≥ margin" over the
    finite pairs, with ``scipy.stats.ttest_1samp`` on the differences against ±``margin``: ``p`` = the larger
    one-sided p (small → the mean difference lies within ±margin), ``estimate`` (mean difference), ``lo``/``hi``
    (its 1 − 2α Student-t interval: equivalent at level α exactly when it lies inside ±margin), ``effect``
    (paired dominance, as :func:`paired_test`), ``margin`` and ``n``."""
    a, b = finite_pairs(after, before)
    d = a - b
    out = {"n": len(d), "estimate": float(d.mean()) if len(d) else math.nan, "lo": math.nan, "hi": math.nan,
           "effect": float(np.sign(d).mean()) if len(d) else math.nan, "p": math.nan, "margin": float(margin)}
    if len(d) < 2:
        return out
    if np.ptp(d) == 0:  # no spread: equivalent exactly when the constant difference lies inside the margin
        out.update(lo=out["estimate"], hi=out["estimate"], p=0.0 if abs(out["estimate"]) < margin else 1.0)
        return out
    p_low = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    p_high = stats.ttest_1samp(d, margin, alternative="less").pvalue
    lo, hi = stats.t.interval(1 - 2 * alpha, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    out.update(p=float(max(p_low, p_high)), lo=float(lo), hi=float(hi))
    return out


def paired_interval(after: np.ndarray, before: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean of the paired differences ``after − before`` (finite pairs) with its Student-t interval, as
    ``estimate``/``lo``/``hi``/``n`` (:func:`mean_ci` of the differences)."""
    a, b = finite_pairs(after, before)
    m = mean_ci(a - b, level)
    return {"estimate": m["mean"], "lo": m["lo"], "hi": m["hi"], "n": m["n"]}


def spearman_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Spearman's ρ over the finite pairs with a Fisher-z interval, standard error √(1.06 / (n − 3)) (Fieller,
    Hartley & Pearson 1957); NaN bounds with fewer than 4 pairs or a constant side."""
    a, b = finite_pairs(a, b)
    out = {"estimate": math.nan, "lo": math.nan, "hi": math.nan, "n": len(a)}
    if len(a) < 4 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    rho = float(stats.spearmanr(a, b).statistic)
    z, half = math.atanh(min(max(rho, -0.999999), 0.999999)), stats.norm.ppf(0.5 + level / 2) * math.sqrt(
        1.06 / (len(a) - 3))
    out.update(estimate=rho, lo=math.tanh(z - half), hi=math.tanh(z + half))
    return out


def rate_test(outcomes: np.ndarray, p0: float = 0.5) -> dict[str, Any]:
    """Exact two-sided binomial test (``scipy.stats.binomtest``) of the rate of 1s among the finite 0/1
    ``outcomes`` against ``p0``: ``n``, ``estimate`` (the rate), ``lo``/``hi`` (Clopper-Pearson 95%), ``p`` and
    ``effect`` = 2·(rate − p0) (so ±1 at the extremes for p0 = 0.5)."""
    v = np.asarray(outcomes, dtype=float)
    v = v[np.isfinite(v)]
    if not np.isin(v, (0.0, 1.0)).all():
        raise InputError("rate_test takes 0/1 outcomes (NaN for none), got other values")
    out = {"n": len(v), "estimate": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "effect": math.nan}
    if not len(v):
        return out
    k = int(v.sum())
    res = stats.binomtest(k, len(v), p0)
    ci = res.proportion_ci(0.95)
    out.update(estimate=k / len(v), lo=float(ci.low), hi=float(ci.high), p=float(res.pvalue),
               effect=2 * (k / len(v) - p0))
    return out


# -- appended for the reports of the imbalance, attention and explanation studies (issue #17) -------------------
def proportion_interval(k: int, n: int, method: str = "wilson", level: float = 0.95) -> dict[str, float]:
    """The proportion ``k / n`` with its binomial interval (``scipy.stats.binomtest(k, n).proportion_ci``:
    ``method`` "wilson" (score interval) or "exact" (Clopper–Pearson)), as ``estimate``/``lo``/``hi``/``n``
    (NaN without trials)."""
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise InputError(f"proportion_interval needs 0 ≤ k ≤ n, got k={k}, n={n}")
    if n == 0:
        return {"estimate": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    ci = stats.binomtest(k, n).proportion_ci(level, method=method)
    return {"estimate": k / n, "lo": float(ci.low), "hi": float(ci.high), "n": n}
