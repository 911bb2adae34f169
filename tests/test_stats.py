"""advsal.studies.stats against scipy.stats (or a hand computation where scipy has no equivalent)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from advsal.studies import stats


def test_nanmean_and_nanstd_agree_with_numpy_on_the_finite_entries():
    a = np.array([1.0, np.nan, 4.0, 2.5, np.nan, -3.0])
    assert stats.nanmean(a) == pytest.approx(np.nanmean(a))
    assert stats.nanstd(a) == pytest.approx(np.nanstd(a, ddof=1))
    assert stats.nanstd(a) == pytest.approx(sp.tstd(a[np.isfinite(a)]))
    with_inf = np.array([1.0, np.inf, 3.0, -np.inf])  # infinities are left out too, by hand: mean of 1 and 3
    assert stats.nanmean(with_inf) == 2.0 and stats.nanstd(with_inf) == pytest.approx(math.sqrt(2))
    assert math.isnan(stats.nanmean(np.array([np.nan]))) and math.isnan(stats.nanmean(np.array([])))
    assert math.isnan(stats.nanstd(np.array([5.0, np.nan])))  # one finite value: no sample deviation


def test_finite_pairs_keeps_the_pairs_where_both_are_finite():
    a, b = stats.finite_pairs(np.array([1.0, np.nan, 3.0, 4.0]), np.array([5.0, 6.0, np.inf, 8.0]))
    assert a.tolist() == [1.0, 4.0] and b.tolist() == [5.0, 8.0]


def test_paired_test_is_scipys_wilcoxon_on_the_finite_differences():
    rng = np.random.default_rng(0)
    before = rng.normal(0, 1, 40)
    after = before + rng.normal(0.4, 1, 40)
    after[3] = np.nan
    out = stats.paired_test(after, before)
    a, b = after[np.isfinite(after)], before[np.isfinite(after)]
    assert out["n"] == 39
    assert out["p"] == pytest.approx(sp.wilcoxon(a - b, zero_method="wilcox").pvalue)
    assert out["estimate"] == pytest.approx(np.mean(a - b))
    assert out["effect"] == pytest.approx(np.mean(a > b) - np.mean(a < b))
    assert stats.paired_test(np.ones(5), np.ones(5))["p"] == 1.0
    assert math.isnan(stats.paired_test(np.array([np.nan]), np.array([1.0]))["p"])


def _holm_by_hand(p: list[float]) -> list[float]:
    """Holm (1979) as in the textbook: reject in order while p_(i) ≤ α/(m − i + 1); the adjusted p-value is the
    smallest α that rejects H_(i), i.e. the running maximum of (m − j + 1)·p_(j), capped at 1."""
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    for rank, i in enumerate(order):
        adjusted[i] = min(1.0, max((m - j) * p[order[j]] for j in range(rank + 1)))
    return adjusted.tolist()


def test_holm_matches_the_hand_computation():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(1)
    p = (rng.random(25) ** 3).tolist()
    np.testing.assert_allclose(stats.holm(p), _holm_by_hand(p))
    out = stats.holm([0.02, float("nan"), None, 0.01])  # non-finite entries leave the family
    assert out[0] == pytest.approx(0.02) and out[3] == pytest.approx(0.02) and all(map(math.isnan, out[1:3]))


def test_holm_is_never_below_the_raw_p_nor_above_bonferroni():
    p = np.random.default_rng(2).random(12)
    adjusted = np.array(stats.holm(p))
    assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1, p * len(p)) + 1e-12)


def test_sign_flip_test_is_exact_enumeration_for_few_differences():
    d = np.array([1.0, 2.0, -1.0, 3.0, 0.5, 2.0, 0.0, -0.5])
    out = stats.paired_permutation_test(d)
    nz = d[d != 0]
    sums = np.array([np.dot(s, nz) for s in itertools.product((1.0, -1.0), repeat=len(nz))])
    assert out["exact"] and out["n"] == 8 and out["n_nonzero"] == 7
    assert out["p"] == pytest.approx(np.mean(np.abs(sums) >= abs(nz.sum()) - 1e-12))
    assert out["estimate"] == pytest.approx(d.mean())
    # six positive differences: only the all-plus and all-minus flips are as extreme → p = 2 / 2^6
    assert stats.paired_permutation_test(np.array([1.0, 2, 1, 3, 1, 2, 0]))["p"] == pytest.approx(2 / 64)


def test_sign_flip_test_agrees_with_scipy_permutation_test_monte_carlo():
    rng = np.random.default_rng(3)
    d = rng.normal(0.15, 1, 200)
    out = stats.paired_permutation_test(d, n_resamples=3000, seed=7)
    ref = sp.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                              vectorized=True, n_resamples=3000, alternative="two-sided",
                              rng=np.random.default_rng(7))
    assert not out["exact"]
    assert out["p"] == pytest.approx(ref.pvalue)


def test_sign_flip_test_flags_a_planted_difference_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    balanced = (rng.random(400) < 0.30).astype(float)
    planted = (rng.random(400) < 0.50).astype(float)
    same = (rng.random(400) < 0.30).astype(float)
    hit = stats.paired_permutation_test(planted - balanced, 2000, seed=1)
    miss = stats.paired_permutation_test(same - balanced, 2000, seed=1)
    assert hit["p"] < 0.001 and hit["estimate"] > 0.1
    assert miss["p"] > 0.2


def test_sign_flip_test_degenerate_inputs():
    assert stats.paired_permutation_test(np.zeros(10))["p"] == 1.0
    assert stats.paired_permutation_test(np.array([0.0, 2.0, np.nan]))["p"] == 1.0  # one non-zero difference
    empty = stats.paired_permutation_test(np.array([np.nan]))
    assert empty["n"] == 0 and math.isnan(empty["p"])


# --- interval estimates and unpaired / correlation tests (attention study) ----------------------------------


def test_mean_ci_is_the_student_t_interval():
    v = np.array([2.0, 3.5, np.nan, 1.0, 4.0, 2.5])
    out = stats.mean_ci(v)
    f = v[np.isfinite(v)]
    half = sp.t.ppf(0.975, len(f) - 1) * f.std(ddof=1) / math.sqrt(len(f))  # by hand
    assert out["n"] == 5 and out["mean"] == pytest.approx(f.mean()) and out["median"] == 2.5
    assert (out["lo"], out["hi"]) == pytest.approx((f.mean() - half, f.mean() + half))
    assert math.isnan(stats.mean_ci(np.array([1.0]))["lo"]) and stats.mean_ci(np.array([]))["n"] == 0


def test_groups_test_is_mann_whitney_with_cliffs_delta():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.5, 1, 30), rng.normal(0, 1, 25)
    out = stats.groups_test(np.append(a, np.nan), b)
    by_hand = np.mean(np.sign(a[:, None] - b[None, :]))  # P(a > b) − P(a < b) over all pairs
    assert out["p"] == pytest.approx(sp.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert out["effect"] == pytest.approx(by_hand) and stats.cliffs_delta(a, b) == pytest.approx(by_hand)
    assert out["estimate"] == pytest.approx(np.median(a) - np.median(b))
    assert (out["n"], out["n_a"], out["n_b"]) == (25, 30, 25)
    assert math.isnan(stats.groups_test(np.array([]), b)["p"])


def test_correlation_test_is_spearman():
    rng = np.random.default_rng(5)
    a = rng.random(40)
    b = a + rng.normal(0, 0.3, 40)
    out = stats.correlation_test(a, b)
    ranks = np.corrcoef(sp.rankdata(a), sp.rankdata(b))[0, 1]  # by hand: Pearson of the ranks
    assert out["effect"] == pytest.approx(ranks) and out["p"] == pytest.approx(sp.spearmanr(a, b).pvalue)
    assert math.isnan(stats.correlation_test(np.ones(5), np.arange(5.0))["p"])  # a constant side


def test_median_bootstrap_is_scipys_percentile_bootstrap():
    v = np.random.default_rng(6).exponential(1, 60)
    out = stats.median_bootstrap(v, 500, seed=3)
    ci = sp.bootstrap((v,), np.median, n_resamples=500, method="percentile",
                      rng=np.random.default_rng(3)).confidence_interval
    assert out["estimate"] == np.median(v) and (out["lo"], out["hi"]) == pytest.approx((ci.low, ci.high))
    assert stats.median_bootstrap(np.full(4, 2.0), 100, seed=0) == {"n": 4, "estimate": 2.0, "lo": 2.0, "hi": 2.0}


# --- right-censored values and seed-level tests (imbalance study, issue #18) ---------------------------------


def test_km_median_matches_a_hand_kaplan_meier_and_scipy():
    # events at 1, 2, 3, 5; censored at 2 (at risk at the event there), 4, 6: S(1) = 6/7, S(2) = 6/7·5/6 = 5/7,
    # S(3) = 5/7·3/4 = 15/28 > 0.5, S(5) = 15/28·1/2 ≤ 0.5 → median 5; treating censored values as exact gives 3
    v = np.array([1, 2, 2, 3, 4, 5, 6], dtype=float)
    c = np.array([0, 0, 1, 0, 1, 0, 1], dtype=bool)
    m = stats.km_median(v, c)
    assert m["median"] == 5.0 and np.median(v) == 3.0 and m["n"] == 7 and m["n_censored"] == 3
    sf = sp.ecdf(sp.CensoredData(uncensored=v[~c], right=v[c])).sf
    np.testing.assert_allclose(sf.evaluate([1, 2, 3, 5]), [6 / 7, 5 / 7, 15 / 28, 15 / 56])
    assert m["lo"] <= m["median"] <= m["hi"]
    # more than half censored at the largest value: the median lies beyond it
    assert stats.km_median(np.array([0.1, 0.3, 0.3, 0.3]), np.array([0, 1, 1, 1], bool))["median"] == math.inf
    assert stats.km_median(np.array([0.3, 0.3]), np.array([1, 1], bool))["median"] == math.inf
    # no censoring: the ordinary lower median
    assert stats.km_median(np.array([4.0, 1, 3, 2]), np.zeros(4, bool))["median"] == 2.0
    with pytest.raises(ValueError, match="same length"):
        stats.km_median(np.ones(3), np.ones(2, bool))


def test_logrank_test_agrees_with_scipy_and_detects_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(1.0, 40), rng.exponential(3.0, 40)
    ac, bc = a > 2.0, b > 2.0  # censored at 2 (an ε_max): the values become "at least 2"
    a, b = np.minimum(a, 2.0), np.minimum(b, 2.0)
    res = stats.logrank_test(a, ac, b, bc)
    ref = sp.logrank(sp.CensoredData(uncensored=a[~ac], right=a[ac]),
                     sp.CensoredData(uncensored=b[~bc], right=b[bc]))
    assert res["p"] == pytest.approx(ref.pvalue) and res["statistic"] == pytest.approx(ref.statistic)
    assert res["p"] < 0.01 and res["statistic"] > 0  # a has the smaller values: more events than expected
    assert res["events"] == int((~ac).sum() + (~bc).sum())
    same = stats.logrank_test(a, ac, a, ac)
    assert same["p"] == pytest.approx(1.0)
    assert math.isnan(stats.logrank_test(a, ac, np.array([]), np.array([], bool))["p"])
    assert math.isnan(stats.logrank_test(a, np.ones(40, bool), b, np.ones(40, bool))["p"])  # no event


def test_seed_level_test_is_a_t_test_and_a_sign_test_over_seeds():
    d = np.array([0.10, 0.20, 0.05, 0.30, 0.10, np.nan])
    res = stats.seed_level_test(d)
    ref = sp.ttest_1samp(d[:5], 0.0)
    assert res["n"] == 5 and res["p"] == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval()
    assert res["lo"] == pytest.approx(lo) and res["hi"] == pytest.approx(hi)
    assert res["p_sign"] == pytest.approx(2 / 2 ** 5) and res["consistent"] and res["up"] == 5
    mixed = stats.seed_level_test(np.array([0.3, -0.1, 0.2]))
    assert not mixed["consistent"] and mixed["down"] == 1 and mixed["p_sign"] == pytest.approx(1.0)
    assert stats.seed_level_test(np.zeros(3))["p"] == 1.0 and not stats.seed_level_test(np.zeros(3))["consistent"]
    assert math.isnan(stats.seed_level_test(np.array([0.2]))["p"])


def test_equivalence_test_is_two_one_sided_t_tests():
    rng = np.random.default_rng(3)
    before = rng.normal(size=40)
    after = before + rng.normal(0.02, 0.05, 40)
    res = stats.equivalence_test(after, before, margin=0.1)
    d = after - before
    p = max(sp.ttest_1samp(d, -0.1, alternative="greater").pvalue, sp.ttest_1samp(d, 0.1, alternative="less").pvalue)
    assert res["p"] == pytest.approx(p) and res["p"] < 0.05 and res["n"] == 40
    assert -0.1 < res["lo"] < res["estimate"] < res["hi"] < 0.1  # the 90% interval inside ±margin ⟺ p < α
    far = stats.equivalence_test(before + 0.5, before + rng.normal(0, 0.01, 40), margin=0.1)
    assert far["p"] > 0.5 and far["lo"] > 0.1
    assert stats.equivalence_test(before + 0.05, before, margin=0.1)["p"] == 0.0  # constant, inside
    assert math.isnan(stats.equivalence_test(np.array([1.0]), np.array([0.0]), 0.1)["p"])


def test_paired_and_spearman_intervals():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30), rng.normal(size=30)
    pi = stats.paired_interval(a, b)
    lo, hi = sp.t.interval(0.95, 29, loc=(a - b).mean(), scale=sp.sem(a - b))
    assert (pi["lo"], pi["hi"]) == pytest.approx((lo, hi)) and pi["n"] == 30
    c = a + rng.normal(0, 0.5, 30)
    si = stats.spearman_interval(a, c)
    rho = sp.spearmanr(a, c).statistic
    half = sp.norm.ppf(0.975) * math.sqrt(1.06 / 27)
    assert si["estimate"] == pytest.approx(rho)
    assert (si["lo"], si["hi"]) == pytest.approx((math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)))
    assert math.isnan(stats.spearman_interval(a[:3], c[:3])["lo"])


def test_rate_test_is_scipys_binomial_test():
    v = np.array([1, 1, 1, 0, 1, 1, 1, 1, np.nan, 0, 1, 1], dtype=float)
    res = stats.rate_test(v, 0.5)
    ref = sp.binomtest(9, 11, 0.5)
    assert res["n"] == 11 and res["estimate"] == pytest.approx(9 / 11) and res["p"] == pytest.approx(ref.pvalue)
    assert (res["lo"], res["hi"]) == pytest.approx(tuple(ref.proportion_ci(0.95)))
    assert res["effect"] == pytest.approx(2 * (9 / 11 - 0.5))
    assert stats.rate_test(np.array([np.nan]))["n"] == 0
    with pytest.raises(ValueError, match="0/1"):
        stats.rate_test(np.array([0.5, 1.0]))


def test_proportion_interval_is_scipys_binomial_interval():
    for method in ("wilson", "exact"):
        res = stats.proportion_interval(17, 40, method)
        ref = sp.binomtest(17, 40).proportion_ci(0.95, method=method)
        assert res["estimate"] == pytest.approx(17 / 40) and res["n"] == 40
        assert (res["lo"], res["hi"]) == pytest.approx((ref.low, ref.high))
    wide, narrow = stats.proportion_interval(5, 10), stats.proportion_interval(500, 1000)
    assert wide["lo"] < narrow["lo"] < 0.5 < narrow["hi"] < wide["hi"]
    assert stats.proportion_interval(0, 20, "exact")["lo"] == 0.0 and math.isnan(stats.proportion_interval(0, 0)["lo"])
    with pytest.raises(ValueError, match="k ≤ n"):
        stats.proportion_interval(3, 2)
