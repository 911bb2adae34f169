"""Issue #17, intervals in the imbalance, attention and explanation reports: the findings cite the 95% interval of
the rates they state, state a direction only where the intervals support one, and follow planted numbers; the
imbalance study's image-bootstrap intervals contain their estimates and shrink with more images. (The tiny runs'
stored and rendered intervals are checked at the end of each study's test module, on its run.)"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from advsal.report.attention import attention_findings
from advsal.report.explanation import explanation_findings
from advsal.report.imbalance import imbalance_findings
from advsal.studies.imbalance.analysis import rate_intervals
from advsal.studies.stats import proportion_interval


# --- imbalance ---------------------------------------------------------------------------------------------------
def _t52_row(cls: int, balanced_correct: int, depleted_correct: int, n: int = 100) -> dict:
    bal, dep = balanced_correct / n, depleted_correct / n
    return {"class": cls, "class_accuracy": dep, "balanced_class_accuracy": bal, "class_accuracy_delta": bal - dep,
            "accuracy": 0.95, "accuracy_delta": -0.001,
            "ci": {"class_accuracy": proportion_interval(depleted_correct, n),
                   "balanced_class_accuracy": proportion_interval(balanced_correct, n),
                   "accuracy": proportion_interval(950, 1000), "balanced_accuracy": proportion_interval(951, 1000)}}


def _imbalance_results(rows: list[dict]) -> dict:
    return {"classes": [str(c) for c in range(10)], "table52": {"rows": rows}, "conclusions": [], "tests": []}


def test_imbalance_accuracy_finding_cites_the_intervals_and_follows_them():
    clear = imbalance_findings(_imbalance_results([_t52_row(3, 97, 60), _t52_row(8, 95, 93)]))[0]
    assert clear["section"] == "table-5-2"
    text = clear["text"]
    assert text.startswith("Depletion lowered the depleted class's own test accuracy for 1 of 2 classes")
    lo, hi = proportion_interval(60, 100)["lo"], proportion_interval(60, 100)["hi"]
    assert f"60.0% [95% CI {lo:.1%}, {hi:.1%}]" in text and "largest for '3'" in text
    assert "within the intervals for every model" in text  # overall 0.950 vs 0.951: no direction
    # the same mean drop of ~2 points on both classes: the intervals overlap, so no direction is stated
    small = imbalance_findings(_imbalance_results([_t52_row(3, 97, 95), _t52_row(8, 95, 93)]))[0]["text"]
    assert small.startswith("Depletion did not measurably change") and "lowered" not in small and small != text
    # the point estimates went up for one class beyond its interval
    up = imbalance_findings(_imbalance_results([_t52_row(3, 60, 97), _t52_row(8, 97, 60)]))[0]["text"]
    assert "lower for 1, higher for 1 of 2 classes" in up


def test_imbalance_rate_intervals_contain_the_estimates_and_shrink_with_more_images():
    rng = np.random.default_rng(0)

    def aligned(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for _ in range(2):  # two seeds on the same images, each with its own images that enter
            b = (rng.random(n) < 0.3).astype(float)
            d = (rng.random(n) < 0.6).astype(float)
            out.append((b, d, rng.random(n) < 0.9))
        return out

    small, large = rate_intervals(aligned(40)), rate_intervals(aligned(1000))
    for res in (small, large):
        for iv in res.values():
            assert iv["lo"] <= iv["estimate"] <= iv["hi"]
    for key in ("balanced", "depleted", "difference"):
        assert large[key]["hi"] - large[key]["lo"] < 0.5 * (small[key]["hi"] - small[key]["lo"]), key
    assert large["difference"]["lo"] > 0  # 0.6 vs 0.3 on 1000 images: clearly apart
    # the estimates are the table's: the mean over seeds of the per-seed rates, and the pooled difference
    triples = aligned(50)
    res = rate_intervals(triples)
    per_seed = [b[m].mean() for b, _, m in triples]
    pooled = np.concatenate([(d - b)[m] for b, d, m in triples]).mean()
    assert res["balanced"]["estimate"] == pytest.approx(np.mean(per_seed))
    assert res["difference"]["estimate"] == pytest.approx(pooled)


# --- attention ---------------------------------------------------------------------------------------------------
def _attention_results(successes: int, attacked: int = 200) -> dict:
    return {"attacks": {"pgd": {"n_success": successes, "n_attacked": attacked, "success_rate": successes / attacked,
                                "ci": {"success_rate": proportion_interval(successes, attacked, "exact")}}},
            "claims": [{"id": "pgd-diffuses", "claim": "PGD diffuses saliency.", "source": "§4.1",
                        "verdict": "supported",
                        "tests": [{"label": "entropy", "kind": "rate", "n": 50, "estimate": 0.8, "lo": 0.66,
                                   "hi": 0.9, "outcome": "confirmed"}]}]}


def test_attention_finding_cites_the_success_rate_interval_and_follows_it():
    f = attention_findings(_attention_results(150))
    iv = proportion_interval(150, 200, "exact")
    assert f[0]["section"] == "attacks"
    assert f"150 of 200 (0.750 [95% CI {iv['lo']:.3f}, {iv['hi']:.3f}])" in f[0]["text"]
    assert f[1]["section"] == "claims" and "[+0.660, +0.900]" in f[1]["text"]  # the claim's own interval
    other = attention_findings(_attention_results(20))[0]["text"]
    iv = proportion_interval(20, 200, "exact")
    assert other != f[0]["text"] and f"0.100 [95% CI {iv['lo']:.3f}, {iv['hi']:.3f}]" in other


# --- explanation -------------------------------------------------------------------------------------------------
def _ex_row(family: str, method: str, ape: float, half: float, cc: float = 0.5) -> dict:
    return {"id": f"{family}-{ape}", "family": family, "method": method, "l0_coeff": 0.01, "tv_coeff": 0.2,
            "tv_gamma": 3.0 if family == "mp" else None, "ape": ape, "cc_hit_rate": cc, "n": 50, "empty_masks": 0,
            "ci": {"ape": {"estimate": ape, "lo": ape - half, "hi": ape + half},
                   "cc_hit_rate": {"estimate": cc, "lo": cc - 0.1, "hi": cc + 0.1}}}


def test_explanation_best_setting_finding_cites_intervals_and_ties_when_they_overlap():
    results = {"table1": [_ex_row("ours", "ours", 0.30, 0.02), _ex_row("mp", "MP min", 0.40, 0.02)],
               "comparisons": []}
    found = {f["text"].split(":")[0]: f for f in explanation_findings(results)}
    ape = found["Best APE_D"]["text"]
    assert "0.3000 [95% CI 0.2800, 0.3200]" in ape and "0.4000 [95% CI 0.3800, 0.4200]" in ape
    assert "regularized method is better than meaningful perturbation" in ape
    assert "50.0% [95% CI 40.0%, 60.0%]" in found["Best CC hit rate"]["text"]
    assert "tied with" in found["Best CC hit rate"]["text"]  # equal rates: overlapping intervals tie
    wide = copy.deepcopy(results)
    for r in wide["table1"]:
        r["ci"]["ape"].update(lo=r["ape"] - 0.08, hi=r["ape"] + 0.08)
    text = {f["text"].split(":")[0]: f["text"] for f in explanation_findings(wide)}["Best APE_D"]
    assert "tied with" in text and "intervals overlap" in text and "better than" not in text


def _tuned_results(ape_lo: float, ape_hi: float) -> dict:
    ours, mp = _ex_row("ours", "ours", 0.30, 0.02), _ex_row("mp", "MP min", 0.40, 0.02)

    def test(a, b, lo, hi, lower_is_better):
        return {"a": a, "b": b, "diff": a - b, "lo": lo, "hi": hi, "p": 0.01, "p_holm": 0.02, "n": 40,
                "lower_is_better": lower_is_better, "verdict": "better" if hi < 0 or lo > 0 else
                "no significant difference"}

    picked = [{"id": "tuned-o", "family": "ours", "row": ours["id"], "threshold": None, "candidates": 2,
               "ci": {"cc_hit_all": {"estimate": 0.6, "lo": 0.45, "hi": 0.75}}},
              {"id": "tuned-m", "family": "mp", "row": mp["id"], "threshold": 0.5, "candidates": 2,
               "ci": {"cc_hit_all": {"estimate": 0.5, "lo": 0.35, "hi": 0.65}}}]
    comp = {"ours": "tuned-o", "mp": "tuned-m", "ape": test(0.30, 0.40, ape_lo, ape_hi, True),
            "cc_hit_rate": test(0.6, 0.5, -0.05, 0.25, False), "area": {"a": 0.1, "b": 0.2}}
    return {"table1": [ours, mp], "comparisons": [],
            "tuned": {"n_tune": 10, "n_eval": 40, "picked": picked, "comparisons": [comp]}}


def test_explanation_held_out_finding_states_a_direction_only_when_the_interval_excludes_zero():
    clear = explanation_findings(_tuned_results(-0.15, -0.05))[0]
    assert clear["section"] == "tuned"
    assert "ours lower (better) on APE_D" in clear["text"]
    assert "60.0% [95% CI 45.0%, 75.0%] vs 50.0% [95% CI 35.0%, 65.0%]" in clear["text"]
    assert "no clear direction on CC hit rate (the 95% interval covers 0)" in clear["text"]
    vague = explanation_findings(_tuned_results(-0.2, 0.01))[0]["text"]
    assert "no clear direction on APE_D" in vague and "ours lower (better)" not in vague
    ranks_only = _tuned_results(-0.2, 0.01)
    ranks_only["tuned"]["comparisons"][0]["ape"]["verdict"] = "better"  # Wilcoxon significant, mean interval ∋ 0
    text = explanation_findings(ranks_only)[0]["text"]
    assert "no clear verdict (Wilcoxon on ranks says better" in text and "ours significantly better" not in text
    assert "ours significantly better" in clear["text"]  # both agree: the direction is stated
