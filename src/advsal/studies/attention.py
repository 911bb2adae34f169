"""The attention-under-attack study (seed 004, Kotyan & Vargas): how PGD and Pixel Attack change what a
ResNet attends to, with every qualitative claim of the paper turned into a measured number and a verdict.

Pipeline, every step a cached stage of the run store (resumable):

1. Train the classifier (default ``resnet20``; seed 004 §4 uses a ResNet on CIFAR-10).
2. Pick ``n_images`` correctly classified test images (seeded) and attack every one of them with PGD (L∞,
   white-box, Madry et al. 2018) and Pixel Attack with 1, 3 and 5 pixels (L0, black-box differential
   evolution, Su et al. 2019). Only the successful adversarial examples enter the analysis. The "pixel" group
   pools the Pixel Attack runs: per image the successful run with the fewest pixels (one example per image).
3. Per successful example: guided-backprop saliency maps SM (seed 004 Eq. 5–7; |·|, max over channels) and
   Grad-CAM maps AM (Eq. 8–11) of the last convolutional stage and of the intermediate stages, for the
   original x and the adversarial x̂, w.r.t. the true class C and the adversarial class Ĉ — the six panels of
   Figs. 2–7 (predicted class = C on x, Ĉ on x̂). A random perturbation of the same budget (±ε signs for PGD,
   the same number of random pixels for Pixel Attack) is the control.
4. Metrics per example (``advsal.saliency.compare``): diffusion (entropy, spatial spread), shift (top-k
   IoU, Spearman rank correlation, centre-of-mass displacement), attraction to the perturbed pixels (Pixel
   Attack: the changed pixels; PGD: the ``top_pixels`` most changed pixels, ties broken at random), CAM energy
   and peak displacement per layer; aggregated per attack as mean with 95% t-interval and median.
5. PGD vs Pixel Attack on every headline metric: Mann-Whitney U (two-sided) and Cliff's δ, Holm-corrected.
6. One row per claim of the paper with its tests and a verdict, by the decision rules below.

Decision rules (explicit, applied mechanically to the numbers):

- A *paired* test (same images, e.g. adversarial vs original) uses the Wilcoxon signed-rank test (two-sided)
  and the paired dominance ``P(d > 0) − P(d < 0)`` of the per-image differences as effect size; an *unpaired*
  test (PGD vs Pixel Attack) uses Mann-Whitney U and Cliff's δ; a *correlation* test uses Spearman's ρ.
  Every p-value of the claims table is Holm-corrected over the whole table (tests with enough examples).
- A test is **confirmed** when its corrected p < ``alpha`` and its effect points the claimed way with
  |effect| ≥ ``min_effect`` (0.147, the "small" bound of Cliff's δ; Romano et al. 2006), **contradicted**
  when the same holds in the opposite direction, **inconclusive** otherwise, and **untestable** with fewer
  than ``min_examples`` examples. A *threshold* test (e.g. "destroys": median retained CAM energy below
  ``destroy_ratio``) is confirmed when the 95% bootstrap interval of the median lies on the claimed side,
  contradicted when it lies on the other side.
- A claim is **supported** when every testable test is confirmed, **not supported** when none is, **mixed**
  otherwise, and **not testable** when no test is testable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..attacks.gradient import PGD
from ..attacks.pixel import PixelAttack
from ..data import ImageSet
from ..progress import Bar
from ..saliency import compare as cmp
from ..saliency import grad_cam, guided_backprop
from ..store import RunStore
from ..tensors import predict_logits
from .common import DataConfig, Log, ModelConfig, as_plain, config_from_yaml, finish_study, start_study
from .stats import finite_pairs, holm, paired_test

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs"
#: The four map combinations of seed 004: (image, class) with x = original, a = adversarial, c = true class C,
#: d = adversarial class Ĉ. Predicted class: C on x, Ĉ on x̂ (Figs. 2 and 5).
COMBOS = {"x_c": ("x", "c"), "x_d": ("x", "d"), "a_c": ("a", "c"), "a_d": ("a", "d")}
PAIRS = {"pred": ("x_c", "a_d"), "true": ("x_c", "a_c"), "adv": ("x_d", "a_d"), "cross_clean": ("x_c", "x_d")}


@dataclass
class PGDConfig:
    """PGD L∞ (Madry et al. 2018), step size 2.5·ε/steps unless ``alpha`` is given."""

    eps: float = 0.1
    steps: int = 20
    alpha: float | None = None
    top_pixels: int = 5  # the "perturbed pixels" of PGD for the attraction metric: the k most changed


@dataclass
class PixelConfig:
    """Pixel Attack (Su et al. 2019) by differential evolution. Su et al. use population 400 × 100
    generations; the default 100 × 20 (at most 2,100 model evaluations per image, an image stops at its first
    success; ≈ 1.7 CPU-s per unsuccessful 28×28 image on resnet20) keeps the default study within 20 minutes
    on 2 CPU cores even single-threaded. The report gives the success rate per pixel count."""

    pixels: list[int] = field(default_factory=lambda: [1, 3, 5])
    population: int = 100
    generations: int = 20


@dataclass
class Config:
    name: str = "attention-mnist5k"
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ModelConfig = field(default_factory=lambda: ModelConfig(architecture="resnet20", epochs=4,
                                                                          batch_size=64))
    n_images: int = 200  # correctly classified test images, attacked by every attack
    pgd: PGDConfig = field(default_factory=PGDConfig)
    pixel: PixelConfig = field(default_factory=PixelConfig)
    layers: list[str] | None = None  # Grad-CAM layers, shallow → deep; the last is "the last conv layer"
    top_fraction: float = 0.1  # region of interest = top 10% of pixels
    radius: float = 2.0  # "near a perturbed pixel" = within this many pixels
    alpha: float = 0.05
    min_effect: float = 0.147
    destroy_ratio: float = 0.5  # "destroys" = median retained true-class CAM energy below this
    min_examples: int = 10
    bootstrap: int = 2000
    figure_images: int = 4
    batch_size: int = 100
    seed: int = 0


def load_config(path: str | Path | None) -> Config:
    return config_from_yaml(Config, path, CONFIGS_DIR)


def default_layers(model: torch.nn.Module) -> list[str]:
    """Grad-CAM layers: the stages after the stem for resnet20 (``features.3``, ``.4``, ``.5``), else the
    model's default CAM layer only."""
    names = dict(model.named_modules())
    cam = getattr(model, "cam_layer", None)
    if cam == "features.5" and all(f"features.{i}" in names for i in (3, 4, 5)):
        return ["features.3", "features.4", "features.5"]
    if cam is None:
        raise ValueError("the classifier has no cam_layer; set `layers:` in the config")
    return [cam]


# ----------------------------------------------------------------------------------------------------
# Statistics


def mean_ci(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean with a Student-t interval, median and n of the finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": math.nan, "lo": math.nan, "hi": math.nan, "median": math.nan}
    mean = float(v.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half, "median": float(np.median(v))}


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's δ = P(a > b) − P(a < b) over all pairs (Cliff 1993), in [−1, 1]."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(a) or not len(b):
        return math.nan
    diff = a[:, None] - b[None, :]
    return float((np.sign(diff)).mean())


def groups_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mann-Whitney U (two-sided) of a vs b with Cliff's δ; estimate = difference of medians."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {"n": min(len(a), len(b)), "n_a": len(a), "n_b": len(b), "effect": cliffs_delta(a, b),
           "p": math.nan, "estimate": float(np.median(a) - np.median(b)) if len(a) and len(b) else math.nan}
    if len(a) and len(b):
        out["p"] = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return out


def correlation_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Spearman's ρ with its two-sided p-value."""
    a, b = finite_pairs(a, b)
    out = {"n": len(a), "effect": math.nan, "estimate": math.nan, "p": math.nan}
    if len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        rho, p = stats.spearmanr(a, b)
        out.update(effect=float(rho), estimate=float(rho), p=float(p))
    return out


def median_bootstrap(values: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Median with a 95% percentile-bootstrap interval (seeded)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "estimate": math.nan, "lo": math.nan, "hi": math.nan}
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, len(v), (resamples, len(v)))], axis=1)
    return {"n": len(v), "estimate": float(np.median(v)), "lo": float(np.quantile(meds, 0.025)),
            "hi": float(np.quantile(meds, 0.975))}


# ----------------------------------------------------------------------------------------------------
# Claims and decision rules


@dataclass(frozen=True)
class Test:
    """One test of a claim. ``kind``: paired (metric ``a`` vs ``b`` on the same images of ``group``), groups
    (metric ``a`` of ``group`` vs of ``group_b``), correlation (``a`` vs ``b`` within ``group``), threshold
    (median of ``a`` vs ``threshold``) or count (share of PGD-vs-Pixel metrics that differ ≥ ``threshold``).
    ``direction`` is +1 when the claim predicts a > b (positive ρ, median above), −1 for the opposite."""

    label: str
    kind: str
    group: str
    a: str
    b: str = ""
    direction: int = 1
    group_b: str = ""
    threshold: float = math.nan


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    tests: tuple[Test, ...]


def claims(layers: list[str], destroy_ratio: float) -> list[Claim]:
    """Every claim of seed 004, with the tests that decide it (metric names as in :func:`image_metrics`)."""
    last = layers[-1]
    inner = layers[:-1]
    cam = f"cam:{last}"
    out = [
        Claim("pgd-diffuses", "PGD diffuses the image's saliency (predicted class).",
              "§4.1, Fig. 2; abstract", (
                  Test("SM entropy: x̂ w.r.t. Ĉ > x w.r.t. C", "paired", "pgd", "sm:entropy:a_d",
                       "sm:entropy:x_c"),
                  Test("SM spread: x̂ w.r.t. Ĉ > x w.r.t. C", "paired", "pgd", "sm:spread:a_d",
                       "sm:spread:x_c"))),
        Claim("pgd-diffuses-both-classes",
              "The PGD diffusion occurs for both the true and the adversarial class.",
              "§4.1, Figs. 3–4", (
                  Test("SM entropy w.r.t. C: x̂ > x", "paired", "pgd", "sm:entropy:a_c",
                       "sm:entropy:x_c"),
                  Test("SM entropy w.r.t. Ĉ: x̂ > x", "paired", "pgd", "sm:entropy:a_d",
                       "sm:entropy:x_d"))),
        Claim("pgd-keeps-roi", "PGD keeps the region of interest (saliency and last-layer attention stay in "
              "the same region).", "§4.1; §4.2, Fig. 5", (
                  Test("SM top-k IoU(x:C, x̂:Ĉ) > same with another image's x̂", "paired", "pgd", "sm:iou:pred",
                       "sm:iou:pred_shuffled"),
                  Test(f"AM {last} IoU(x:C, x̂:Ĉ) > same with another image's x̂", "paired", "pgd",
                       f"{cam}:iou:pred", f"{cam}:iou:pred_shuffled"))),
        Claim("pgd-destroys-true-cam", "PGD destroys the class activation map of the true class.",
              "§1; §4.2, Fig. 6", (
                  Test(f"AM {last} energy w.r.t. C: x̂ < x", "paired", "pgd", f"{cam}:energy:a_c",
                       f"{cam}:energy:x_c", -1),
                  Test(f"median retained AM {last} energy w.r.t. C < {destroy_ratio:g}", "threshold",
                       "pgd", f"{cam}:retained:c", direction=-1, threshold=destroy_ratio))),
        Claim("pgd-adv-cam-moves-to-true", "Under PGD the adversarial class's attention moves close to the "
              "true class's original attention.", "§4.2, Fig. 7", (
                  Test(f"AM {last} IoU(x̂:Ĉ, x:C) > IoU(x:Ĉ, x:C)", "paired", "pgd", f"{cam}:iou:pred",
                       f"{cam}:iou:cross_clean"),)),
        Claim("pixel-attracts-saliency", "Pixel Attack shifts the saliency to the perturbed pixels.",
              "§4.1, Fig. 2", (
                  Test("SM mass near perturbed pixels: x̂:Ĉ > x:C", "paired", "pixel", "sm:near:a_d",
                       "sm:near:x_c"),
                  Test("SM mass near perturbed pixels x̂:Ĉ > area share", "paired", "pixel",
                       "sm:near:a_d", "sm:near:chance"))),
        Claim("pixel-not-diffuse", "Pixel Attack does not diffuse saliency the way PGD does.",
              "§4.1, Fig. 2", (
            Test("SM entropy change (x̂:Ĉ − x:C): Pixel < PGD", "groups", "pixel", "sm:d_entropy:pred",
                 direction=-1, group_b="pgd"),)),
        Claim("pixel-true-saliency-minimal", "Under Pixel Attack the saliency w.r.t. the true class changes "
              "minimally, that w.r.t. the adversarial class changes.", "§4.1, Figs. 3–4", (
                  Test("SM rank corr. x vs x̂: w.r.t. C > w.r.t. Ĉ", "paired", "pixel", "sm:rank:true",
                       "sm:rank:adv"),
                  Test("SM rank corr. w.r.t. C (x vs x̂): Pixel > PGD", "groups", "pixel", "sm:rank:true",
                       group_b="pgd"))),
        Claim("pixel-shifts-roi", "Pixel Attack changes the region of interest (PGD does not).",
              "§4.1; conclusions", (
                  Test("SM top-k IoU(x:C, x̂:Ĉ): Pixel < PGD", "groups", "pixel", "sm:iou:pred", direction=-1,
                       group_b="pgd"),
                  Test("SM centre-of-mass shift (x:C → x̂:Ĉ): Pixel > PGD", "groups", "pixel",
                       "sm:com:pred", group_b="pgd"))),
        Claim("pixel-cam-toward-or-away", "Pixel Attack's last-layer attention moves towards or away from "
              "the perturbed pixels (more than PGD's does from its most changed pixels).", "§4.2, Fig. 5", (
                  Test(f"|Δ AM {last} mass near perturbed pixels| (x:C → x̂:Ĉ): Pixel > PGD", "groups",
                       "pixel", f"{cam}:abs_d_near:pred", group_b="pgd"),)),
        Claim("pixel-cam-true-minimal", "Pixel Attack mainly distorts the adversarial class's activation "
              "map; the true class's changes minimally.", "§4.2, Figs. 6–7", (
                  Test(f"AM {last} IoU x vs x̂: w.r.t. C > w.r.t. Ĉ", "paired", "pixel",
                       f"{cam}:iou:true", f"{cam}:iou:adv"),
                  Test(f"retained AM {last} energy w.r.t. C: Pixel > PGD", "groups", "pixel",
                       f"{cam}:retained:c", group_b="pgd"))),
        Claim("complementary-features", "When one class's activation map retracts from a perturbed pixel, "
              "another class's map focuses on it (complementary features).", "§4.2", (
                  Test(f"Spearman ρ(Δ AM {last} near-mass w.r.t. C, w.r.t. Ĉ) < 0", "correlation", "pixel",
                       f"{cam}:d_near:c", f"{cam}:d_near:d", -1),)),
        Claim("attacks-differ", "PGD and Pixel Attack change saliency and activation maps differently.",
              "§4.2; conclusions", (
                  Test("share of compared metrics with a significant PGD–Pixel difference ≥ 0.5", "count",
                       "pgd", "", threshold=0.5),)),
        Claim("not-naive", "Adversarial examples do not fool the network naively: they distort its saliency "
              "(more than a random perturbation of the same budget).", "conclusions", (
                  Test("PGD: SM rank corr. w.r.t. C, x vs random control > x vs x̂", "paired", "pgd",
                       "sm:rank:true_ctrl", "sm:rank:true"),
                  Test("Pixel: SM rank corr. w.r.t. C, x vs random control > x vs x̂", "paired", "pixel",
                       "sm:rank:true_ctrl", "sm:rank:true"))),
    ]
    if inner:
        out += [
            Claim("pgd-inner-lose-true", "PGD makes intermediate layers lose attention for the correct "
                  "class.", "abstract; conclusions", tuple(
                      Test(f"AM {lay} energy w.r.t. C: x̂ < x", "paired", "pgd",
                           f"cam:{lay}:energy:a_c", f"cam:{lay}:energy:x_c", -1) for lay in inner)),
            Claim("pgd-inner-gain-adv",
                  "…while intermediate layers gain attention for the misclassified class.",
                  "conclusions", tuple(
                      Test(f"AM {lay} energy w.r.t. Ĉ: x̂ > x", "paired", "pgd",
                           f"cam:{lay}:energy:a_d", f"cam:{lay}:energy:x_d") for lay in inner)),
            Claim("pixel-inner-roi", "Pixel Attack changes the region of attention of intermediate "
                  "convolution layers (more than random pixels do).", "conclusions", tuple(
                      Test(f"AM {lay} IoU w.r.t. C: x vs random control > x vs x̂", "paired", "pixel",
                           f"cam:{lay}:iou:true_ctrl", f"cam:{lay}:iou:true") for lay in inner)),
        ]
    return out


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


def verdict(outcomes: list[str]) -> str:
    """supported / not supported / mixed / not testable from the outcomes of a claim's tests."""
    testable = [o for o in outcomes if o != "untestable"]
    if not testable:
        return "not testable"
    confirmed = sum(o == "confirmed" for o in testable)
    if confirmed == len(testable):
        return "supported"
    return "not supported" if confirmed == 0 else "mixed"


def evaluate_claims(metrics: dict[str, dict[str, np.ndarray]], cfg: Config, layers: list[str],
                    comparison: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run every claim's tests on per-image ``metrics[group][metric]`` arrays and assign verdicts."""
    rows: list[dict[str, Any]] = []
    flat: list[dict[str, Any]] = []
    for claim in claims(layers, cfg.destroy_ratio):
        tests = []
        for t in claim.tests:
            g = metrics.get(t.group, {})
            missing = {"n": 0, "effect": math.nan, "estimate": math.nan, "p": math.nan}
            if t.kind == "paired":
                res = paired_test(g[t.a], g[t.b]) if t.a in g and t.b in g else missing
            elif t.kind == "groups":
                gb = metrics.get(t.group_b, {})
                res = groups_test(g[t.a], gb[t.a]) if t.a in g and t.a in gb else missing
            elif t.kind == "correlation":
                res = correlation_test(g[t.a], g[t.b]) if t.a in g and t.b in g else missing
            elif t.kind == "threshold":
                res = median_bootstrap(g[t.a], cfg.bootstrap, cfg.seed) if t.a in g else dict(missing)
            elif t.kind == "count":
                rows_c = (comparison or {}).get("rows", [])
                share = float(np.mean([r["outcome"] == "differs" for r in rows_c])) if rows_c else math.nan
                res = {"n": min((r["n"] for r in rows_c), default=0), "estimate": share, "effect": math.nan,
                       "p": math.nan}
            else:
                raise ValueError(f"unknown test kind {t.kind!r}")
            entry = {"label": t.label, "kind": t.kind, "group": t.group, "group_b": t.group_b, "a": t.a,
                     "b": t.b, "direction": t.direction, "threshold": t.threshold, **res}
            tests.append(entry)
            flat.append(entry)
        rows.append({"id": claim.id, "claim": claim.text, "source": claim.source, "tests": tests})
    # the Holm family: every p-valued test with enough examples (untestable ones are not tests at all)
    testable = [e for e in flat if e["kind"] in ("paired", "groups", "correlation")]
    family = [e for e in testable if e["n"] >= cfg.min_examples]
    for e in testable:
        e["p_holm"] = math.nan
    for e, p in zip(family, holm([e["p"] for e in family]), strict=True):
        e["p_holm"] = p
    for e in flat:
        if e["kind"] in ("paired", "groups", "correlation"):
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


def compare_attacks(metrics: dict[str, dict[str, np.ndarray]], cfg: Config,
                    layers: list[str]) -> dict[str, Any]:
    """PGD vs Pixel Attack on every headline metric: Mann-Whitney U, Cliff's δ, Holm over the table."""
    rows = []
    for key, label in comparison_metrics(layers).items():
        a, b = metrics.get("pgd", {}).get(key), metrics.get("pixel", {}).get(key)
        if a is None or b is None:
            continue
        res = groups_test(a, b)
        rows.append({"metric": key, "label": label, "pgd": mean_ci(a), "pixel": mean_ci(b), **res})
    for r, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = p
        ok = (r["n"] >= cfg.min_examples and np.isfinite(p) and p < cfg.alpha
              and abs(r["effect"]) >= cfg.min_effect)
        r["outcome"] = "differs" if ok else ("untestable" if r["n"] < cfg.min_examples else "no difference")
    return {"rows": rows}


# ----------------------------------------------------------------------------------------------------
# Maps and per-image metrics


def _batched(fn: Callable[[slice], Any], n: int, size: int) -> list[Any]:
    return [fn(slice(i, i + size)) for i in range(0, n, size)]


def saliency_maps(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                  batch_size: int) -> torch.Tensor:
    """Guided-backprop saliency (seed 004 Eq. 5–7), |·| max over channels, shape (N, H, W)."""
    if not len(x):
        return torch.zeros(0, *x.shape[-2:])
    out = _batched(lambda s: guided_backprop(model, x[s], target=target[s], reduce="max")[:, 0], len(x),
                   batch_size)
    return torch.cat(out)


def cam_maps(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, layers: list[str],
             batch_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Grad-CAM (seed 004 Eq. 8–11) per layer: (raw maps at the layer's resolution, maps upsampled to H×W)."""
    raw: dict[str, list[torch.Tensor]] = {lay: [] for lay in layers}
    up: dict[str, list[torch.Tensor]] = {lay: [] for lay in layers}
    for i in range(0, len(x), batch_size):
        res = grad_cam(model, x[i:i + batch_size], target=target[i:i + batch_size], layer=list(layers))
        for lay in layers:
            raw[lay].append(res[lay].cam)
            up[lay].append(res[lay].upsampled)
    return {lay: (torch.cat(raw[lay]), torch.cat(up[lay])) for lay in layers}


def control_perturbation(x: torch.Tensor, x_adv: torch.Tensor, kind: str, eps: float,
                         seed: int) -> torch.Tensor:
    """A random perturbation with the adversarial one's budget: ±ε uniform signs (L∞) for ``kind="linf"``;
    for ``kind="l0"`` as many random pixels as x_adv changed, set to uniform random values."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "linf":
        signs = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
        return (x + eps * signs).clamp(0, 1)
    n, c, h, w = x.shape
    counts = cmp.perturbed_pixels(x, x_adv).flatten(1).sum(1)
    out = x.clone().flatten(2)
    for i in range(n):  # one permutation per image: the changed-pixel count differs between images
        where = torch.randperm(h * w, generator=gen)[: int(counts[i])]
        out[i][:, where] = torch.rand(c, len(where), generator=gen)
    return out.view_as(x)


def image_metrics(sm: dict[str, torch.Tensor], sm_ctrl: torch.Tensor,
                  cams: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]],
                  cams_ctrl: dict[str, tuple[torch.Tensor, torch.Tensor]], perturbed: torch.Tensor,
                  top_fraction: float, radius: float) -> dict[str, torch.Tensor]:
    """Every per-image metric from the maps (names ``family:metric:which``; see the module docstring).

    ``sm[combo]`` (N, H, W) and ``cams[combo][layer] = (raw, upsampled)`` for combo in ``COMBOS``; the control
    maps are w.r.t. the true class; ``perturbed`` (N, H, W) marks the perturbed pixels.
    """
    n = sm["x_c"].shape[0]
    out: dict[str, torch.Tensor] = {}
    shuffled = torch.roll(torch.arange(n), 1)  # another image's map, for the "same region by chance" baseline

    def shift_metrics(prefix: str, maps: dict[str, torch.Tensor], ctrl: torch.Tensor, spatial: bool) -> None:
        for name, (first, second) in PAIRS.items():
            out[f"{prefix}:iou:{name}"] = cmp.topk_iou(maps[first], maps[second], top_fraction)
            if spatial:
                out[f"{prefix}:rank:{name}"] = cmp.rank_correlation(maps[first], maps[second])
                out[f"{prefix}:com:{name}"] = cmp.com_displacement(maps[first], maps[second])
        out[f"{prefix}:iou:pred_shuffled"] = cmp.topk_iou(maps["x_c"], maps["a_d"][shuffled], top_fraction)
        out[f"{prefix}:iou:true_ctrl"] = cmp.topk_iou(maps["x_c"], ctrl, top_fraction)
        if spatial:
            out[f"{prefix}:rank:true_ctrl"] = cmp.rank_correlation(maps["x_c"], ctrl)
        near = {combo: cmp.attraction(maps[combo], perturbed, radius) for combo in COMBOS}
        for combo, att in near.items():
            out[f"{prefix}:near:{combo}"] = att.share
        out[f"{prefix}:near:chance"] = near["x_c"].chance
        out[f"{prefix}:d_near:pred"] = near["a_d"].share - near["x_c"].share
        out[f"{prefix}:abs_d_near:pred"] = out[f"{prefix}:d_near:pred"].abs()
        out[f"{prefix}:d_near:c"] = near["a_c"].share - near["x_c"].share
        out[f"{prefix}:d_near:d"] = near["a_d"].share - near["x_d"].share

    for combo in COMBOS:
        out[f"sm:entropy:{combo}"] = cmp.saliency_entropy(sm[combo])
        out[f"sm:spread:{combo}"] = cmp.spatial_spread(sm[combo])
    for kind in ("entropy", "spread"):
        out[f"sm:d_{kind}:pred"] = out[f"sm:{kind}:a_d"] - out[f"sm:{kind}:x_c"]
    shift_metrics("sm", sm, sm_ctrl, spatial=True)
    layers = list(cams["x_c"])
    for lay in layers:
        up = {combo: cams[combo][lay][1] for combo in COMBOS}
        shift_metrics(f"cam:{lay}", up, cams_ctrl[lay][1], spatial=lay == layers[-1])
        energy = {combo: cmp.cam_energy(cams[combo][lay][0]) for combo in COMBOS}
        for combo, e in energy.items():
            out[f"cam:{lay}:energy:{combo}"] = e
        out[f"cam:{lay}:energy:ctrl_c"] = cmp.cam_energy(cams_ctrl[lay][0])
        out[f"cam:{lay}:retained:c"] = _ratio(energy["a_c"], energy["x_c"])
        out[f"cam:{lay}:retained:d"] = _ratio(energy["a_d"], energy["x_d"])
        out[f"cam:{lay}:retained:ctrl_c"] = _ratio(out[f"cam:{lay}:energy:ctrl_c"], energy["x_c"])
        out[f"cam:{lay}:peak:true"] = cmp.peak_displacement(up["x_c"], up["a_c"])
        out[f"cam:{lay}:peak:pred"] = cmp.peak_displacement(up["x_c"], up["a_d"])
    return {k: v.float() for k, v in out.items()}


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = a / b.clamp_min(1e-12)
    r[b <= 0] = float("nan")
    return r


# ----------------------------------------------------------------------------------------------------
# Stages


def _attack_specs(cfg: Config) -> dict[str, dict[str, Any]]:
    specs = {"pgd": {"kind": "pgd", **as_plain(cfg.pgd)}}
    for k in cfg.pixel.pixels:
        specs[f"pixel{k}"] = {"kind": "pixel", "pixels": int(k), "population": cfg.pixel.population,
                              "generations": cfg.pixel.generations}
    return specs


def _make_attack(spec: dict[str, Any], seed: int):
    if spec["kind"] == "pgd":
        return PGD(eps=spec["eps"], alpha=spec["alpha"], steps=spec["steps"], seed=seed)
    return PixelAttack(pixels=spec["pixels"], population=spec["population"], generations=spec["generations"],
                       seed=seed, eval_batch=500)  # ~2x cheaper per image than huge batches on CPU


def _attack_stage(store: RunStore, key: dict, name: str, spec: dict, model: torch.nn.Module, x: torch.Tensor,
                  y: torch.Tensor, seed: int) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        attack = _make_attack(spec, seed)
        start, cpu = time.perf_counter(), time.process_time()
        res = attack(model, x, y)
        out = {"x_adv": res.x_adv, "success": res.success, "pred": res.pred, "linf": res.linf,
               "l0": res.l0.float(), "seconds": time.perf_counter() - start,
               "cpu_seconds": time.process_time() - cpu}
        if res.queries is not None:
            out["queries"] = res.queries.float()
        return out

    return store.cached(f"attack-{name}", {**key, "attack": name, "spec": spec, "seed": seed}, compute)


def _metrics_stage(store: RunStore, key: dict, name: str, spec: dict, cfg: Config, model: torch.nn.Module,
                   layers: list[str], x: torch.Tensor, y: torch.Tensor,
                   adv: dict[str, Any]) -> dict[str, Any]:
    """Maps and per-image metrics of the successful adversarial examples of one attack (cached)."""

    def compute() -> dict[str, Any]:
        start, cpu = time.perf_counter(), time.process_time()
        ok = adv["success"].bool()
        idx = ok.nonzero().flatten()
        xs, xa, c, d = x[idx], adv["x_adv"][idx], y[idx], adv["pred"][idx]
        out: dict[str, Any] = {"index": idx}
        if len(idx) == 0:
            return {**out, "n": 0, "seconds": 0.0, "cpu_seconds": 0.0}
        linf = spec["kind"] == "pgd"
        x_ctrl = control_perturbation(xs, xa, "linf" if linf else "l0", spec.get("eps", 0.0), cfg.seed + 7)
        images = {"x": xs, "a": xa}
        classes = {"c": c, "d": d}
        bs = cfg.batch_size
        sm: dict[str, torch.Tensor] = {}
        cams: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        with Bar(f"maps {name}", len(COMBOS) + 1) as bar:
            for combo, (i, t) in COMBOS.items():
                sm[combo] = saliency_maps(model, images[i], classes[t], bs)
                cams[combo] = cam_maps(model, images[i], classes[t], layers, bs)
                bar.update(1)
            sm_ctrl = saliency_maps(model, x_ctrl, c, bs)
            cams_ctrl = cam_maps(model, x_ctrl, c, layers, bs)
            bar.update(1)
        perturbed = cmp.perturbed_pixels(xs, xa, top_k=cfg.pgd.top_pixels if linf else None, seed=cfg.seed)
        metrics = image_metrics(sm, sm_ctrl, cams, cams_ctrl, perturbed, cfg.top_fraction, cfg.radius)
        ctrl_pred = predict_logits(model, x_ctrl).argmax(1)
        out.update({f"m:{k}": v for k, v in metrics.items()})
        out["control_flips"] = float((ctrl_pred != c).float().mean())
        k = min(cfg.figure_images, len(idx))
        out["fig:x"], out["fig:a"], out["fig:c"], out["fig:d"] = xs[:k], xa[:k], c[:k], d[:k]
        for combo in COMBOS:
            out[f"fig:sm:{combo}"] = sm[combo][:k]
            for lay in layers:
                out[f"fig:cam:{lay}:{combo}"] = cams[combo][lay][1][:k]
        out.update(n=len(idx), seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)
        return out

    mkey = {**key, "attack": name, "spec": spec, "layers": layers, "top_fraction": cfg.top_fraction,
            "radius": cfg.radius, "top_pixels": cfg.pgd.top_pixels, "seed": cfg.seed,
            "figure_images": cfg.figure_images}
    return store.cached(f"maps-{name}", mkey, compute)


def _metric_arrays(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k[2:]: v.numpy() for k, v in payload.items() if k.startswith("m:")}


def pool_pixel_attacks(per_k: dict[int, dict[str, Any]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One Pixel Attack example per image: the successful run with the fewest pixels. Returns the pooled
    metric arrays and, per pooled example, its pixel count."""
    chosen: dict[int, tuple[int, int]] = {}  # image index → (pixels, row in that run's metrics)
    for k in sorted(per_k):
        for row, i in enumerate(per_k[k]["index"].tolist()):
            chosen.setdefault(int(i), (k, row))
    order = sorted(chosen)
    arrays = {k: _metric_arrays(p) for k, p in per_k.items()}
    used = [set(arrays[k]) for k in {k for k, _ in chosen.values()}]  # runs without successes have no metrics
    names = set.intersection(*used) if used else set()
    pooled = {m: np.array([arrays[chosen[i][0]][m][chosen[i][1]] for i in order], dtype=float) for m in names}
    return pooled, np.array([chosen[i][0] for i in order])


def _select_images(model: torch.nn.Module, test: ImageSet, n: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=gen)
    x, y = test.x[order], test.y[order]
    correct = (predict_logits(model, x).argmax(1) == y).nonzero().flatten()[:n]
    if len(correct) < n:
        raise ValueError(f"only {len(correct)} correctly classified test images, n_images asks for {n}; "
                         "lower n_images or use a larger test set")
    return x[correct], y[correct]


def run(cfg: Config, run_dir: str | Path, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the attention study in ``run_dir``; writes results.json and the report."""
    run_dir = Path(run_dir)
    start = start_study("attention", cfg, run_dir, log)
    store, stages, test, model, results = start.store, start.stages, start.test, start.model, start.results
    layers = list(cfg.layers) if cfg.layers else default_layers(model)
    results["layers"] = layers
    key = {**start.key, "n_images": cfg.n_images}
    x, y = _select_images(model, test, cfg.n_images, cfg.seed)

    attacks: dict[str, Any] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for name, spec in _attack_specs(cfg).items():
        adv = _attack_stage(store, key, name, spec, model, x, y, cfg.seed)
        stages.flush()
        payloads[name] = _metrics_stage(store, key, name, spec, cfg, model, layers, x, y, adv)
        stages.flush()
        succ = adv["success"].bool()
        row = {"spec": spec, "n_attacked": len(y), "n_success": int(succ.sum()),
               "success_rate": float(succ.float().mean()), "seconds": float(adv["seconds"]),
               "cpu_seconds": float(adv["cpu_seconds"]),
               "mean_linf": float(adv["linf"][succ].mean()) if succ.any() else math.nan,
               "mean_l0": float(adv["l0"][succ].mean()) if succ.any() else math.nan,
               "control_flips": payloads[name].get("control_flips", math.nan),
               "maps_seconds": float(payloads[name]["seconds"]),
               "maps_cpu_seconds": float(payloads[name]["cpu_seconds"])}
        if "queries" in adv:
            row["mean_queries"] = float(adv["queries"].mean())
            row["mean_queries_success"] = float(adv["queries"][succ].mean()) if succ.any() else math.nan
        attacks[name] = row
    results["attacks"] = attacks

    metrics: dict[str, dict[str, np.ndarray]] = {"pgd": _metric_arrays(payloads["pgd"])}
    for k in cfg.pixel.pixels:
        metrics[f"pixel{k}"] = _metric_arrays(payloads[f"pixel{k}"])
    per_k = {int(k): payloads[f"pixel{k}"] for k in cfg.pixel.pixels}
    pooled, pixels_used = pool_pixel_attacks(per_k)
    metrics["pixel"] = pooled
    results["pixel_pool"] = {"n": len(pixels_used), "pixels": {str(k): int((pixels_used == k).sum())
                                                               for k in cfg.pixel.pixels}}
    results["aggregates"] = {g: {m: mean_ci(v) for m, v in sorted(arrs.items())}
                             for g, arrs in metrics.items()}
    results["distributions"] = {g: {m: [float(v) for v in metrics[g].get(m, [])] for m in
                                    _distribution_metrics(layers)} for g in metrics}
    results["comparison"] = compare_attacks(metrics, cfg, layers)
    results["claims"] = evaluate_claims(metrics, cfg, layers, results["comparison"])
    results["chance_iou"] = cmp.chance_iou(cfg.top_fraction)
    _store_figure_maps(run_dir, payloads, layers)

    return finish_study(run_dir, results, store, stages, render)


def _distribution_metrics(layers: list[str]) -> list[str]:
    last = layers[-1]
    return (["sm:d_entropy:pred", "sm:iou:pred", "sm:rank:true", "sm:com:pred", "sm:near:a_d", "sm:near:x_c",
             f"cam:{last}:iou:pred", f"cam:{last}:d_near:pred"]
            + [f"cam:{lay}:retained:c" for lay in layers] + [f"cam:{lay}:retained:d" for lay in layers])


def _store_figure_maps(run_dir: Path, payloads: dict[str, dict[str, Any]], layers: list[str]) -> None:
    """The sample images and their maps, kept in the run directory so the report draws from stored data."""
    from safetensors.torch import save

    from ..store import atomic_write_bytes

    tensors = {f"{name}/{k[4:]}": v.contiguous() for name, p in payloads.items() for k, v in p.items()
               if k.startswith("fig:") and isinstance(v, torch.Tensor)}
    if tensors:
        atomic_write_bytes(run_dir / "figure_maps.safetensors", save(tensors))


# ----------------------------------------------------------------------------------------------------
# Report


def render(run_dir: str | Path, results: dict[str, Any], store: RunStore | None = None) -> tuple[Path, Path]:
    from ..report.attention import render_attention_report

    return render_attention_report(Path(run_dir), results)


def summary(results: dict[str, Any]) -> list[str]:
    lines = [f"classifier test accuracy {results['classifier']['test']['accuracy']:.4f}"]
    for name, a in results["attacks"].items():
        lines.append(f"{name:<8} success {a['n_success']}/{a['n_attacked']} ({a['success_rate']:.2f})")
    counts: dict[str, int] = {}
    for c in results["claims"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    lines.append("claims: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return lines
