"""Analysis of the attention study: stored stage payloads → per-attack tables, PGD vs Pixel Attack, and one row
per claim of seed 004 with its tests and a verdict (plain data for results.json).

Decision rules (explicit, applied mechanically to the numbers):

- A *paired* test (same images, e.g. adversarial vs original, or adversarial vs the same-budget random
  control) uses the Wilcoxon signed-rank test (two-sided), the paired dominance ``P(d > 0) − P(d < 0)`` of the
  per-image differences as effect size and the 95% t-interval of the mean difference; a *matched* test (PGD vs
  Pixel Attack) is the same test on the images both attacks broke, against PGD stopped at its first
  misclassification and against full-strength PGD; an *equivalence* test ("keeps the region", "changes
  minimally") is a paired TOST within ±``equivalence_margin`` of the random control; a *correlation* test uses
  Spearman's ρ (Fisher-z interval); a *rate* test the exact binomial test (Clopper-Pearson interval). Every
  p-value of the claims table is Holm-corrected over the whole table (tests with enough examples).
- A test is **confirmed** when its corrected p < ``alpha`` and its effect points the claimed way with
  |effect| ≥ ``min_effect`` (0.147, the "small" bound of Cliff's δ; Romano et al. 2006; |ρ| ≥ 0.1 for
  correlations), **contradicted** when the same holds in the opposite direction, **inconclusive** otherwise, and
  **untestable** with fewer than ``min_examples`` examples. An equivalence test is confirmed when its corrected
  TOST p < ``alpha`` and contradicted when the 1 − 2α interval lies wholly outside the margin. A *threshold*
  test (median retained CAM energy below ``destroy_ratio``, reported beside the spatial "distorts" claim) is
  confirmed when the 95% bootstrap interval of the median lies on the claimed side, contradicted when it lies
  on the other side.
- A claim is **supported** when every testable test is confirmed, **not supported** when none is, **mixed**
  otherwise, and **not testable** when no test is testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ...errors import InputError
from ...saliency.compare import chance_iou
from ...store import Stage
from ..stats import (
    correlation_test,
    equivalence_test,
    holm,
    mean_ci,
    median_bootstrap,
    paired_interval,
    paired_test,
    proportion_interval,
    rate_test,
    spearman_interval,
)
from .config import Config


@dataclass(frozen=True)
class Test:
    """One test of a claim against a named ``baseline``. ``kind``: paired (metric ``a`` vs ``b`` on the same
    images of ``group``), equivalence (``a`` ≈ ``b`` on the same images within ± the configured margin: TOST),
    matched (metric ``a`` of ``group`` vs of ``group_b`` on the images both attacks broke), correlation (``a``
    vs ``b`` within ``group``), threshold (median of ``a`` vs ``threshold``) or count (share of PGD-vs-Pixel
    metrics that differ ≥ ``threshold``). ``direction`` is +1 when the claim predicts a > b (positive ρ, median
    above), −1 for the opposite."""

    label: str
    kind: str
    group: str
    a: str
    b: str = ""
    direction: int = 1
    group_b: str = ""
    threshold: float = math.nan
    baseline: str = ""


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    tests: tuple[Test, ...]


#: The random control of the same budget, named in every test that uses it as the baseline.
CONTROL = "same-budget random control, same images"
PGD_VARIANTS = ("pgd-early", "pgd")  # matched strength first (stopped at the first misclassification), then full


def _vs_pgd(label: str, group: str, a: str, direction: int = 1) -> tuple[Test, ...]:
    """A matched (paired) PGD-vs-Pixel test against each PGD variant, on the images both attacks broke."""
    names = {"pgd-early": "PGD stopped at first misclassification", "pgd": "full-strength PGD"}
    return tuple(Test(f"{label} [{names[v]}]", "matched", group, a, direction=direction, group_b=v,
                      baseline=f"{names[v]}, same images") for v in PGD_VARIANTS)


def claims(layers: list[str], destroy_ratio: float) -> list[Claim]:
    """Every claim of seed 004, with the tests that decide it (metric names as in :func:`image_metrics`).
    Spatial claims ("distorted", "keeps the region") are decided by IoU / rank correlation with the clean map,
    against the same-budget random control; "keeps" and "changes minimally" are equivalence tests."""
    last = layers[-1]
    inner = layers[:-1]
    cam = f"cam:{last}"
    clean = "the same images' clean maps"
    out = [
        Claim("pgd-diffuses", "PGD diffuses the image's saliency (predicted class).",
              "§4.1, Fig. 2; abstract", (
                  Test("SM entropy: x̂ w.r.t. Ĉ > x w.r.t. C", "paired", "pgd", "sm:entropy:a_d",
                       "sm:entropy:x_c", baseline=clean),
                  Test("SM spread: x̂ w.r.t. Ĉ > x w.r.t. C", "paired", "pgd", "sm:spread:a_d",
                       "sm:spread:x_c", baseline=clean),
                  Test("SM entropy: x̂ w.r.t. Ĉ > random control w.r.t. C", "paired", "pgd", "sm:entropy:a_d",
                       "sm:entropy:ctrl", baseline=CONTROL))),
        Claim("pgd-diffuses-around-roi", "The PGD diffusion spreads the saliency around the region of "
              "interest.", "§4.1, Fig. 2", (
                  Test("SM mass in the ring around x:C's top region: x̂:Ĉ > x:C", "paired", "pgd", "sm:ring:a_d",
                       "sm:ring:x_c", baseline=clean),
                  Test("SM mass in the ring around x:C's top region: x̂:Ĉ > random control:C", "paired", "pgd",
                       "sm:ring:a_d", "sm:ring:ctrl", baseline=CONTROL))),
        Claim("pgd-distortion-dominates", "Under PGD the distorted saliency dominates the attention w.r.t. the "
              "correct class too (on x̂ the maps of C and Ĉ become alike).", "§4.1, Figs. 3–4", (
                  Test("SM rank corr.(C map, Ĉ map): on x̂ > on x", "paired", "pgd", "sm:rank:cross_adv",
                       "sm:rank:cross_clean", baseline="the same pair of classes on the clean image"),
                  Test(f"AM {last} top-k IoU(C map, Ĉ map): on x̂ > on x", "paired", "pgd",
                       f"{cam}:iou:cross_adv", f"{cam}:iou:cross_clean",
                       baseline="the same pair of classes on the clean image"))),
        Claim("pgd-diffuses-both-classes",
              "The PGD diffusion occurs for both the true and the adversarial class.",
              "§4.1, Figs. 3–4", (
                  Test("SM entropy w.r.t. C: x̂ > x", "paired", "pgd", "sm:entropy:a_c",
                       "sm:entropy:x_c", baseline=clean),
                  Test("SM entropy w.r.t. Ĉ: x̂ > x", "paired", "pgd", "sm:entropy:a_d",
                       "sm:entropy:x_d", baseline=clean))),
        Claim("pgd-keeps-roi", "PGD keeps the region of interest (saliency and last-layer attention stay in "
              "the same region).", "§4.1; §4.2, Fig. 5", (
                  Test("SM top-k IoU with x:C: x̂:Ĉ ≈ random control:C", "equivalence", "pgd", "sm:iou:pred",
                       "sm:iou:true_ctrl", baseline=CONTROL),
                  Test("SM rank corr. with x:C: x̂:Ĉ ≈ random control:C", "equivalence", "pgd", "sm:rank:pred",
                       "sm:rank:true_ctrl", baseline=CONTROL),
                  Test(f"AM {last} top-k IoU with x:C: x̂:Ĉ ≈ random control:C", "equivalence", "pgd",
                       f"{cam}:iou:pred", f"{cam}:iou:true_ctrl", baseline=CONTROL))),
        Claim("pgd-distorts-true-cam", "PGD destroys (distorts) the class activation map of the true class.",
              "§1; §4.2, Fig. 6", (
                  Test(f"AM {last} w.r.t. C top-k IoU with x: x̂ < random control", "paired", "pgd",
                       f"{cam}:iou:true", f"{cam}:iou:true_ctrl", -1, baseline=CONTROL),
                  Test(f"AM {last} w.r.t. C rank corr. with x: x̂ < random control", "paired", "pgd",
                       f"{cam}:rank:true", f"{cam}:rank:true_ctrl", -1, baseline=CONTROL))),
        Claim("pgd-true-cam-energy", "(Not spatial; reported beside the claim above.) PGD lowers the true "
              "class's last-layer CAM energy — for a global-average-pool → linear head this is (logit_C − b_C) "
              "/ (h·w), i.e. the logit drop PGD optimises.", "§1; §4.2, Fig. 6", (
                  Test(f"median retained AM {last} energy w.r.t. C < {destroy_ratio:g}", "threshold",
                       "pgd", f"{cam}:retained:c", direction=-1, threshold=destroy_ratio,
                       baseline=f"ratio {destroy_ratio:g} (x̂/x)"),)),
        Claim("pgd-adv-cam-moves-to-true", "Under PGD the adversarial class's attention moves close to the "
              "true class's original attention.", "§4.2, Fig. 7", (
                  Test(f"AM {last} IoU(x̂:Ĉ, x:C) > IoU(x:Ĉ, x:C)", "paired", "pgd", f"{cam}:iou:pred",
                       f"{cam}:iou:cross_clean", baseline="the adversarial class's clean map x:Ĉ"),)),
        Claim("pixel-attracts-saliency", "Pixel Attack shifts the saliency to the perturbed pixels.",
              "§4.1, Fig. 2", (
                  Test("SM mass near perturbed pixels: x̂:Ĉ > x:C", "paired", "pixel", "sm:near:a_d",
                       "sm:near:x_c", baseline=clean),
                  Test("SM mass near perturbed pixels x̂:Ĉ > area share", "paired", "pixel",
                       "sm:near:a_d", "sm:near:chance", baseline="area share of the neighbourhood (uniform map)"),
                  Test("SM mass near perturbed pixels x̂:Ĉ > control map's near its own pixels", "paired",
                       "pixel", "sm:near:a_d", "sm:near:ctrl", baseline=CONTROL))),
        Claim("pixel-not-diffuse", "Pixel Attack does not diffuse saliency the way PGD does.",
              "§4.1, Fig. 2", _vs_pgd("SM entropy change (x̂:Ĉ − x:C): Pixel < PGD", "pixel",
                                      "sm:d_entropy:pred", -1)),
        Claim("pixel-true-saliency-minimal", "Under Pixel Attack the saliency w.r.t. the true class changes "
              "minimally, that w.r.t. the adversarial class changes.", "§4.1, Figs. 3–4", (
                  Test("SM rank corr. x vs x̂: w.r.t. C > w.r.t. Ĉ", "paired", "pixel", "sm:rank:true",
                       "sm:rank:adv", baseline="the same images' maps w.r.t. Ĉ"),
                  Test("SM rank corr. with x:C: x̂:C ≈ random control:C", "equivalence", "pixel", "sm:rank:true",
                       "sm:rank:true_ctrl", baseline=CONTROL))),
        Claim("pixel-shifts-roi", "Pixel Attack changes the region of interest (PGD does not).",
              "§4.1; conclusions", (
                  Test("SM top-k IoU with x:C: x̂:Ĉ < random control:C", "paired", "pixel", "sm:iou:pred",
                       "sm:iou:true_ctrl", -1, baseline=CONTROL),
                  *_vs_pgd("SM top-k IoU(x:C, x̂:Ĉ): Pixel < PGD", "pixel", "sm:iou:pred", -1),
                  *_vs_pgd("SM centre-of-mass shift (x:C → x̂:Ĉ): Pixel > PGD", "pixel", "sm:com:pred"))),
        Claim("pixel-cam-toward-or-away", "Pixel Attack's last-layer attention moves towards or away from "
              "the perturbed pixels (more than PGD's does from its most changed pixels).", "§4.2, Fig. 5", (
                  Test(f"|Δ AM {last} mass w.r.t. C near perturbed pixels|: x̂ > control near its own pixels",
                       "paired", "pixel", f"{cam}:abs_d_near:c", f"{cam}:abs_d_near:ctrl", baseline=CONTROL),
                  *_vs_pgd(f"excess over control of |Δ AM {last} near-mass w.r.t. C|: Pixel > PGD", "pixel",
                           f"{cam}:excess_near:c"))),
        Claim("pixel-cam-true-minimal", "Pixel Attack mainly distorts the adversarial class's activation "
              "map; the true class's changes minimally.", "§4.2, Figs. 6–7", (
                  Test(f"AM {last} IoU x vs x̂: w.r.t. C > w.r.t. Ĉ", "paired", "pixel",
                       f"{cam}:iou:true", f"{cam}:iou:adv", baseline="the same images' maps w.r.t. Ĉ"),
                  Test(f"AM {last} IoU with x:C: x̂:C ≈ random control:C", "equivalence", "pixel",
                       f"{cam}:iou:true", f"{cam}:iou:true_ctrl", baseline=CONTROL))),
        Claim("complementary-features", "When one class's activation map retracts from a perturbed pixel, "
              "another class's map focuses on it (complementary features).", "§4.2", (
                  Test(f"share of images whose AM {last} near-mass w.r.t. C and w.r.t. Ĉ move in opposite "
                       "directions > 1/2 (within image)", "rate", "pixel", f"{cam}:opposite", threshold=0.5,
                       baseline="1/2 (independent directions)"),
                  Test(f"Spearman ρ(Δ AM {last} near-mass w.r.t. C, w.r.t. Ĉ) < 0 (between images)",
                       "correlation", "pixel", f"{cam}:d_near:c", f"{cam}:d_near:d", -1, baseline="ρ = 0"),)),
        Claim("attacks-differ", "PGD and Pixel Attack change saliency and activation maps differently.",
              "§4.2; conclusions", (
                  Test("share of compared metrics with a significant PGD–Pixel difference ≥ 0.5", "count",
                       "pgd", "", threshold=0.5, baseline="half of the compared metrics"),)),
        Claim("not-naive", "Adversarial examples do not fool the network naively: they distort its saliency "
              "(more than a random perturbation of the same budget).", "conclusions", (
                  Test("PGD: SM rank corr. w.r.t. C, x vs random control > x vs x̂", "paired", "pgd",
                       "sm:rank:true_ctrl", "sm:rank:true", baseline=CONTROL),
                  Test("Pixel: SM rank corr. w.r.t. C, x vs random control > x vs x̂", "paired", "pixel",
                       "sm:rank:true_ctrl", "sm:rank:true", baseline=CONTROL))),
    ]
    if inner:
        out += [
            Claim("diversion-intensifies", "The attention diversion propagates through the network and "
                  "intensifies (the true class's map is distorted more, beyond the random control, in the last "
                  "layer than in the first).", "§4.2; conclusions", tuple(
                      Test(f"{_nice_group(g)}: AM excess distortion w.r.t. C (control IoU − adversarial IoU): "
                           f"{last} > {inner[0]}", "paired", g, f"{cam}:distortion:true",
                           f"cam:{inner[0]}:distortion:true", baseline=f"the same images' {inner[0]} layer")
                      for g in ("pgd", "pixel"))),
            Claim("pgd-inner-lose-true", "PGD makes intermediate layers lose attention for the correct "
                  "class.", "abstract; conclusions", tuple(
                      Test(f"AM {lay} energy w.r.t. C: x̂ < x", "paired", "pgd",
                           f"cam:{lay}:energy:a_c", f"cam:{lay}:energy:x_c", -1, baseline=clean)
                      for lay in inner) + tuple(
                      Test(f"AM {lay} w.r.t. C top-k IoU with x: x̂ < random control", "paired", "pgd",
                           f"cam:{lay}:iou:true", f"cam:{lay}:iou:true_ctrl", -1, baseline=CONTROL)
                      for lay in inner)),
            Claim("pgd-inner-gain-adv",
                  "…while intermediate layers gain attention for the misclassified class.",
                  "conclusions", tuple(
                      Test(f"AM {lay} energy w.r.t. Ĉ: x̂ > x", "paired", "pgd",
                           f"cam:{lay}:energy:a_d", f"cam:{lay}:energy:x_d", baseline=clean) for lay in inner)),
            Claim("pixel-inner-roi", "Pixel Attack changes the region of attention of intermediate "
                  "convolution layers (more than random pixels do).", "conclusions", tuple(
                      Test(f"AM {lay} IoU w.r.t. C: x vs random control > x vs x̂", "paired", "pixel",
                           f"cam:{lay}:iou:true_ctrl", f"cam:{lay}:iou:true", baseline=CONTROL)
                      for lay in inner)),
        ]
    return out


def _nice_group(group: str) -> str:
    return {"pgd": "PGD", "pgd-early": "PGD (early-stopped)", "pixel": "Pixel"}.get(group, group)


def comparison_metrics(layers: list[str]) -> dict[str, str]:
    """The headline metrics compared between PGD and Pixel Attack: name → description."""
    last = layers[-1]
    out = {
        "sm:d_entropy:pred": "Δ SM entropy (x:C → x̂:Ĉ)",
        "sm:d_spread:pred": "Δ SM spread, px (x:C → x̂:Ĉ)",
        "sm:iou:pred": "SM top-k IoU (x:C, x̂:Ĉ)",
        "sm:rank:pred": "SM rank corr. (x:C, x̂:Ĉ)",
        "sm:rank:true": "SM rank corr. w.r.t. C (x, x̂)",
        "sm:com:pred": "SM centre-of-mass shift, px (x:C → x̂:Ĉ)",
        "sm:d_near:pred": "Δ SM mass near perturbed px (x:C → x̂:Ĉ)",
        f"cam:{last}:iou:pred": f"AM {last} IoU (x:C, x̂:Ĉ)",
        f"cam:{last}:peak:true": f"AM {last} peak shift w.r.t. C, px",
        f"cam:{last}:d_near:pred": f"Δ AM {last} mass near perturbed px (x:C → x̂:Ĉ)",
    }
    for lay in layers:
        out[f"cam:{lay}:retained:c"] = f"retained AM {lay} energy w.r.t. C (x̂/x)"
        out[f"cam:{lay}:retained:d"] = f"AM {lay} energy gain w.r.t. Ĉ (x̂/x)"
    return out


def _outcome(res: dict[str, Any], direction: int, cfg: Config, p_key: str = "p_holm") -> str:
    if res.get("n", 0) < cfg.min_examples:
        return "untestable"
    p, eff = res.get(p_key, math.nan), res.get("effect", math.nan)
    if not (np.isfinite(p) and np.isfinite(eff)) or p >= cfg.alpha:
        return "inconclusive"
    bound = 0.1 if res.get("kind") == "correlation" else cfg.min_effect  # |ρ| ≥ 0.1: Cohen's "small"
    if abs(eff) < bound:
        return "inconclusive"
    return "confirmed" if np.sign(eff) == direction else "contradicted"


def _equivalence_outcome(res: dict[str, Any], cfg: Config) -> str:
    """confirmed: Holm-corrected TOST p < alpha (the 1 − 2α interval inside ±margin); contradicted: that interval
    lies wholly outside ±margin; inconclusive otherwise."""
    if res.get("n", 0) < cfg.min_examples:
        return "untestable"
    p, lo, hi, m = res.get("p_holm", math.nan), res.get("lo", math.nan), res.get("hi", math.nan), res["margin"]
    if np.isfinite(p) and p < cfg.alpha:
        return "confirmed"
    if np.isfinite(lo) and np.isfinite(hi) and (lo > m or hi < -m):
        return "contradicted"
    return "inconclusive"


def verdict(outcomes: list[str]) -> str:
    """supported / not supported / mixed / not testable from the outcomes of a claim's tests."""
    testable = [o for o in outcomes if o != "untestable"]
    if not testable:
        return "not testable"
    confirmed = sum(o == "confirmed" for o in testable)
    if confirmed == len(testable):
        return "supported"
    return "not supported" if confirmed == 0 else "mixed"


Index = dict[str, np.ndarray]


def common_images(index: Index | None, metrics: dict[str, dict[str, np.ndarray]], group: str,
                  group_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``group``'s and ``group_b``'s metric arrays for the images both attacks broke (``index[g]``: the
    selected-image position of each row; without ``index`` the rows are taken as the same images)."""
    if index is None or group not in index or group_b not in index:
        n = min((len(next(iter(metrics.get(g, {}).values()), [])) for g in (group, group_b)), default=0)
        return np.arange(n), np.arange(n)
    _, rows_a, rows_b = np.intersect1d(index[group], index[group_b], return_indices=True)
    return rows_a, rows_b


def matched_test(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired Wilcoxon test of ``a − b`` on the same images, with the Student-t interval of the mean difference."""
    iv = paired_interval(a, b)
    return {**paired_test(a, b), "lo": iv["lo"], "hi": iv["hi"]}


def evaluate_claims(metrics: dict[str, dict[str, np.ndarray]], cfg: Config, layers: list[str],
                    comparison: dict[str, Any] | None = None, index: Index | None = None) -> list[dict[str, Any]]:
    """Run every claim's tests on per-image ``metrics[group][metric]`` arrays and assign verdicts; ``index``
    aligns the groups' rows by image for the matched PGD-vs-Pixel tests."""
    rows: list[dict[str, Any]] = []
    flat: list[dict[str, Any]] = []
    for claim in claims(layers, cfg.destroy_ratio):
        tests = []
        for t in claim.tests:
            g = metrics.get(t.group, {})
            missing = {"n": 0, "effect": math.nan, "estimate": math.nan, "p": math.nan, "lo": math.nan,
                       "hi": math.nan}
            if t.kind == "paired":
                res = matched_test(g[t.a], g[t.b]) if t.a in g and t.b in g else missing
            elif t.kind == "equivalence":
                res = (equivalence_test(g[t.a], g[t.b], cfg.equivalence_margin, cfg.alpha)
                       if t.a in g and t.b in g else {**missing, "margin": cfg.equivalence_margin})
            elif t.kind == "matched":
                gb = metrics.get(t.group_b, {})
                if t.a in g and t.a in gb:
                    ra, rb = common_images(index, metrics, t.group, t.group_b)
                    res = matched_test(g[t.a][ra], gb[t.a][rb])
                else:
                    res = missing
            elif t.kind == "correlation":
                res = (correlation_test(g[t.a], g[t.b]) | {k: v for k, v in spearman_interval(g[t.a], g[t.b])
                                                            .items() if k in ("lo", "hi")}
                       if t.a in g and t.b in g else missing)
            elif t.kind == "rate":
                res = rate_test(g[t.a], t.threshold) if t.a in g else missing
            elif t.kind == "threshold":
                res = median_bootstrap(g[t.a], cfg.bootstrap, cfg.seed) if t.a in g else dict(missing)
            elif t.kind == "count":
                rows_c = [r for r in (comparison or {}).get("rows", []) if r.get("variant", "pgd-early")
                          == (comparison or {}).get("primary", "pgd-early")]
                k = sum(r["outcome"] == "differs" for r in rows_c)
                share = k / len(rows_c) if rows_c else math.nan
                lo, hi = ((lambda ci: (float(ci.low), float(ci.high)))(binomtest(k, len(rows_c))
                                                                        .proportion_ci()) if rows_c
                          else (math.nan, math.nan))
                res = {"n": min((r["n"] for r in rows_c), default=0), "estimate": share, "effect": math.nan,
                       "p": math.nan, "lo": lo, "hi": hi}
            else:
                raise InputError(f"unknown test kind {t.kind!r}")
            entry = {"label": t.label, "kind": t.kind, "group": t.group, "group_b": t.group_b, "a": t.a,
                     "b": t.b, "direction": t.direction, "threshold": t.threshold, "baseline": t.baseline, **res}
            tests.append(entry)
            flat.append(entry)
        rows.append({"id": claim.id, "claim": claim.text, "source": claim.source, "tests": tests})
    # the Holm family: every p-valued test with enough examples (untestable ones are not tests at all)
    testable = [e for e in flat if e["kind"] in P_KINDS]
    family = [e for e in testable if e["n"] >= cfg.min_examples]
    for e in testable:
        e["p_holm"] = math.nan
    for e, p in zip(family, holm([e["p"] for e in family]), strict=True):
        e["p_holm"] = p
    for e in flat:
        if e["kind"] == "equivalence":
            e["outcome"] = _equivalence_outcome(e, cfg)
        elif e["kind"] in P_KINDS:
            e["outcome"] = _outcome(e, e["direction"], cfg)
        elif e["kind"] == "threshold":
            if e["n"] < cfg.min_examples:
                e["outcome"] = "untestable"
            elif (e["hi"] < e["threshold"]) if e["direction"] < 0 else (e["lo"] > e["threshold"]):
                e["outcome"] = "confirmed"
            elif (e["lo"] > e["threshold"]) if e["direction"] < 0 else (e["hi"] < e["threshold"]):
                e["outcome"] = "contradicted"
            else:
                e["outcome"] = "inconclusive"
        else:  # count
            if e["n"] < cfg.min_examples or not np.isfinite(e["estimate"]):
                e["outcome"] = "untestable"
            else:
                e["outcome"] = "confirmed" if e["estimate"] >= e["threshold"] else "contradicted"
    for row in rows:
        row["verdict"] = verdict([t["outcome"] for t in row["tests"]])
    return rows


P_KINDS = ("paired", "equivalence", "matched", "correlation", "rate")


def compare_attacks(metrics: dict[str, dict[str, np.ndarray]], cfg: Config, layers: list[str],
                    index: Index | None = None) -> dict[str, Any]:
    """PGD vs Pixel Attack on every headline metric, paired on the images both attacks broke, for each PGD
    variant present (stopped at the first misclassification, full strength): Wilcoxon signed-rank, paired
    dominance, the interval of the mean difference, Holm over the table. ``primary``: the variant the "attacks
    differ" claim counts (early-stopped PGD when run, the strength Pixel Attack has)."""
    rows = []
    variants = [v for v in PGD_VARIANTS if v in metrics]
    for variant in variants:
        ra, rb = common_images(index, metrics, variant, "pixel")
        for key, label in comparison_metrics(layers).items():
            a, b = metrics.get(variant, {}).get(key), metrics.get("pixel", {}).get(key)
            if a is None or b is None:
                continue
            a, b = a[ra], b[rb]
            rows.append({"metric": key, "label": label, "variant": variant, "pgd": mean_ci(a), "pixel": mean_ci(b),
                         **matched_test(a, b)})
    for r, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = p
        ok = (r["n"] >= cfg.min_examples and np.isfinite(p) and p < cfg.alpha
              and abs(r["effect"]) >= cfg.min_effect)
        r["outcome"] = "differs" if ok else ("untestable" if r["n"] < cfg.min_examples else "no difference")
    return {"rows": rows, "primary": variants[0] if variants else "pgd"}


# ------------------------------------------------------------------------------------------------ tables
def metric_arrays(payload: Stage | dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-image metrics of a metrics stage, name → array (no entries for an attack without successes)."""
    items = payload.payload.items() if isinstance(payload, Stage) else payload.items()
    return {k[2:]: v.numpy() for k, v in items if k.startswith("m:")}


def pool_pixel_attacks(per_k: dict[int, Stage | dict[str, Any]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One Pixel Attack example per image: the successful run with the fewest pixels. ``per_k[k]`` holds the
    image ``index`` and the metrics of the run with k pixels. Returns the pooled metric arrays and, per pooled
    example, its pixel count."""
    chosen: dict[int, tuple[int, int]] = {}  # image index → (pixels, row in that run's metrics)
    for k in sorted(per_k):
        for row, i in enumerate(per_k[k]["index"].tolist()):
            chosen.setdefault(int(i), (k, row))
    order = sorted(chosen)
    arrays = {k: metric_arrays(p) for k, p in per_k.items()}
    used = [set(arrays[k]) for k in {k for k, _ in chosen.values()}]  # runs without successes have no metrics
    names = set.intersection(*used) if used else set()
    pooled = {m: np.array([arrays[chosen[i][0]][m][chosen[i][1]] for i in order], dtype=float) for m in names}
    return pooled, np.array([chosen[i][0] for i in order])


def pooled_index(per_k: dict[int, Stage | dict[str, Any]]) -> np.ndarray:
    """The selected-image positions of the pooled Pixel Attack rows (:func:`pool_pixel_attacks`' order)."""
    return np.array(sorted({int(i) for p in per_k.values() for i in p["index"].tolist()}), dtype=np.int64)


def distribution_metrics(layers: list[str]) -> list[str]:
    """The metrics whose per-image values go into results (the report's distribution plots)."""
    last = layers[-1]
    return (["sm:d_entropy:pred", "sm:iou:pred", "sm:rank:true", "sm:com:pred", "sm:near:a_d", "sm:near:x_c",
             f"cam:{last}:iou:pred", f"cam:{last}:d_near:pred"]
            + [f"cam:{lay}:retained:c" for lay in layers] + [f"cam:{lay}:retained:d" for lay in layers])


def attack_row(spec: dict[str, Any], adv: Stage, maps: Stage) -> dict[str, Any]:
    """One attack's line of the attacks table: success, norms, queries, control flips and timings; ``ci``: the
    success rate's and the control flip rate's exact (Clopper–Pearson) 95% intervals (simple proportions of the
    attacked images and of the successful examples)."""
    succ = adv["success"].bool()
    row = {"spec": spec, "n_attacked": len(succ), "n_success": int(succ.sum()),
           "success_rate": float(succ.float().mean()), "seconds": float(adv["seconds"]),
           "cpu_seconds": float(adv["cpu_seconds"]),
           "mean_linf": float(adv["linf"][succ].mean()) if succ.any() else math.nan,
           "mean_l0": float(adv["l0"][succ].mean()) if succ.any() else math.nan,
           "control_flips": maps.get("control_flips", math.nan),
           "maps_seconds": float(maps["seconds"]), "maps_cpu_seconds": float(maps["cpu_seconds"])}
    n_ctrl = int(maps.get("n", 0))
    flips = row["control_flips"]
    row["ci"] = {"success_rate": proportion_interval(int(succ.sum()), len(succ), "exact"),
                 "control_flips": proportion_interval(round(float(flips) * n_ctrl), n_ctrl, "exact")
                 if n_ctrl and math.isfinite(float(flips)) else proportion_interval(0, 0)}
    if "steps" in adv:
        row["mean_steps"] = float(adv["steps"].mean())
    if "queries" in adv:
        row["mean_queries"] = float(adv["queries"].mean())
        row["mean_queries_success"] = float(adv["queries"][succ].mean()) if succ.any() else math.nan
    return row


def analyse(cfg: Config, layers: list[str], specs: dict[str, dict[str, Any]], adv: dict[str, Stage],
            maps: dict[str, Stage], metrics: dict[str, Stage]) -> dict[str, Any]:
    """The results' tables and verdicts from the stored stages: attacks, the pooled Pixel Attack group,
    aggregates (mean [95% CI], median) per group, distributions, PGD vs Pixel Attack, and the claims."""
    groups: dict[str, dict[str, np.ndarray]] = {name: metric_arrays(m) for name, m in metrics.items()}
    index: Index = {name: m["index"].numpy() for name, m in metrics.items()}
    per_k = {int(k): metrics[f"pixel{k}"] for k in cfg.pixel.pixels}
    pooled, pixels_used = pool_pixel_attacks(per_k)
    groups["pixel"] = pooled
    index["pixel"] = pooled_index(per_k)
    comparison = compare_attacks(groups, cfg, layers, index)
    return {
        "layers": layers,
        "attacks": {name: attack_row(spec, adv[name], maps[name]) for name, spec in specs.items()},
        "pixel_pool": {"n": len(pixels_used),
                       "pixels": {str(k): int((pixels_used == k).sum()) for k in cfg.pixel.pixels}},
        "aggregates": {g: {m: mean_ci(v) for m, v in sorted(arrs.items())} for g, arrs in groups.items()},
        "distributions": {g: {m: [float(v) for v in groups[g].get(m, [])] for m in distribution_metrics(layers)}
                          for g in groups},
        "comparison": comparison,
        "claims": evaluate_claims(groups, cfg, layers, comparison, index),
        "paired_images": {v: int(len(np.intersect1d(index[v], index["pixel"]))) for v in PGD_VARIANTS
                          if v in index},
        "chance_iou": chance_iou(cfg.top_fraction),
    }


def summary(results: dict[str, Any]) -> list[str]:
    """The command line's few lines about a finished run."""
    lines = [f"classifier test accuracy {results['classifier']['test']['accuracy']:.4f}"]
    for name, a in results["attacks"].items():
        lines.append(f"{name:<8} success {a['n_success']}/{a['n_attacked']} ({a['success_rate']:.2f})")
    counts: dict[str, int] = {}
    for c in results["claims"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    lines.append("claims: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return lines
