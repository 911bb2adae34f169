"""The explanation study (seed 003, Shoshan & Ratner): regularized adversarial examples as explanations against
Fong & Vedaldi's "meaningful perturbation" (MP), scored with APE_D and the CC hit rate — Table 1 of seed 003 on
``cluttered-mnist``, where the ground-truth object is the "finding" digit (DDSM is not available offline).

Pipeline, every expensive step a cached stage of the run store (resumable):

1. Train the classifier on image labels only (seed 003 §5.1: the model never sees a location). Default
   ``finding-net``: three conv stages, global max pooling, FC-256.
2. Select ``n_images`` positive test images (label = ``positive_class``, non-empty ground-truth mask) that the
   classifier classifies positive, in a seeded random order. Every method explains that class on the same
   images.
3. Regularized method (seed 003 §4, ``advsal.explanation.regularized_explanation``): per (α, β) of Table 1's
   "ours" rows and per ``classification_loss`` — ``"probability"`` is Eq. 13 as written; ``"log-complement"``
   (−log(1 − M(Î)_i)) is this study's option, see below. Mask = S ≥ 0 (Eq. 14); APE_D of the phase-2 image Ĩ.
4. Meaningful perturbation (``advsal.explanation.meaningful_perturbation``): per deletion image ("min", "blur")
   and (λ1, λ2, TV β) of Table 1's MP rows, then seed 003 §5.1's threshold scan: one threshold T for the whole
   set, the one with the best mean APE_D, region = {1 − m > T}, Î = deletion image inside the region. The paper
   scans at steps of 1e-6; the grid here is ``thresholds`` evenly spaced values plus ``fine_thresholds``
   log-spaced values from 1e-6 to 1e-2, which resolves the near-zero thresholds that heavily penalised masks
   (λ1 = 6 or 40) need.
5. Contrast (not in seed 003): plain gradient saliency |∂logit/∂x| and Grad-CAM of the explained class, each
   cut to its top-k pixels with k = the pixel count of a regularized row's mask (per image), then phase 2 of the
   regularized method inside that mask. Same area, same perturbation procedure: only *where* the mask lies
   differs.
6. Metrics per row: APE_D terms with α_sp = α_sm = α_cl = 1 (L0 and TV of B(I − Î) over N elements, the class
   probability M(Î)_i), CC hit rate (seed 003 §5.2: share of the mask's connected components touching the
   ground truth; the mean over images with a non-empty mask and the pooled share of all components), pointing
   game, mask area and components per mask. Paired comparisons on the same images (Wilcoxon signed-rank,
   two-sided): every regularized row against the MP rows with the same (L0, TV) coefficients — the rows seed 003
   Table 1 puts side by side — and against its own gradient / Grad-CAM contrast rows.

Coefficient conventions. Table 1 uses one pair of columns ("L0 approx. coeff", "tv coeff") for both methods, so
both are read in one convention: the coefficients multiply per-element *means*. For MP that is the convention of
the widely used PyTorch implementation of Fong & Vedaldi, whose defaults (λ1 = 0.01, λ2 = 0.2, β = 3) are Table
1's second MP row: λ1·mean|1 − m| + λ2·(mean|∂x m|^β + mean|∂y m|^β). ``meaningful_perturbation`` weights the
area term by the mean too but divides the TV sum by the mask side s, so λ2 is passed as λ2/(s − 1)
(:func:`mp_tv_coeff`). For the regularized method ``regularized_explanation`` already uses α·mean(S) +
β·TV(S)/N, so α and β are Table 1's values as they are.

Classification loss option. With Eq. 13's probability term, the gradient M_i(1 − M_i)·∂(log-odds) vanishes on
images the classifier is sure of (M_i ≈ 1, in float32 exactly 0), and the sparsity and smoothness terms then
hold every element in place: such images are not explained at all. ``"log-complement"`` minimises
−log(1 − M(Î)_i) instead, an increasing function of the same probability (so it "reduces the classification
value of class i", §4), in both phases. The paper's text leaves the optimiser's loss scale, step size and number
of steps open; it does not name this choice, so both are run and reported, and the APE metrics always use the
probability itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import ImageSet
from ..explanation import (
    CLASSIFICATION_LOSSES,
    DELETIONS,
    MeaningfulExplanation,
    localization_scores,
    meaningful_perturbation,
    minimize_in_mask,
    regularized_explanation,
    scan_threshold,
)
from ..explanation.ape import ape_d
from ..saliency import grad_cam, gradient
from ..store import RunStore
from ..tensors import predict_logits
from .common import DataConfig, Log, ModelConfig, as_plain, config_from_yaml, finish_study, start_study
from .stats import finite_pairs, nanmean, paired_test

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs"
LOSS_TAGS = {"probability": "prob", "log-complement": "logc"}  # short names for row ids and stage names

#: Seed 003 Table 1 (DDSM mammograms, inception-resnet-v2 features, ~2,000 validation images), copied from the
#: paper: method, L0 approx. coeff, tv coeff, tv_γ (None: "-"), then L0, tv, classification, APE_D (α_sp = α_sm =
#: α_cl = 1) and the CC hit rate in %.
PAPER_TABLE1: list[dict[str, Any]] = [
    {"method": "MP min", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 1, "l0": 0.9947, "tv": 0.0019,
     "classification": 0.0044, "ape": 1.001, "cc_hit_rate": 10.5},
    {"method": "MP min", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 3, "l0": 0.5254, "tv": 0.0059,
     "classification": 0.0027, "ape": 0.5340, "cc_hit_rate": 12.6},
    {"method": "MP min", "l0_coeff": 6, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.6699, "tv": 0.0002,
     "classification": 0.0883, "ape": 0.7585, "cc_hit_rate": 23.9},
    {"method": "MP min", "l0_coeff": 40, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.0606, "tv": 0.0002,
     "classification": 0.0881, "ape": 0.1489, "cc_hit_rate": 27.0},
    {"method": "MP blur", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 1, "l0": 0.9958, "tv": 0.0042,
     "classification": 0.0137, "ape": 1.0137, "cc_hit_rate": 0.10},
    {"method": "MP blur", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 3, "l0": 0.5487, "tv": 0.0100,
     "classification": 0.009, "ape": 0.5680, "cc_hit_rate": 0.11},
    {"method": "MP blur", "l0_coeff": 6, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.7240, "tv": 0.0130,
     "classification": 0.0927, "ape": 0.8297, "cc_hit_rate": 10.4},
    {"method": "MP blur", "l0_coeff": 40, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.191, "tv": 0.0009,
     "classification": 0.0760, "ape": 0.2679, "cc_hit_rate": 11.9},
    {"method": "ours", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": None, "l0": 0.0203, "tv": 0.0027,
     "classification": 0.0003, "ape": 0.0234, "cc_hit_rate": 13.9},
    {"method": "ours", "l0_coeff": 6, "tv_coeff": 120, "tv_gamma": None, "l0": 0.0004, "tv": 0.0001,
     "classification": 0.0286, "ape": 0.0291, "cc_hit_rate": 29.1},
    {"method": "ours", "l0_coeff": 40, "tv_coeff": 120, "tv_gamma": None, "l0": 0.0001, "tv": 0.0001,
     "classification": 0.0174, "ape": 0.0176, "cc_hit_rate": 38.2},
]


@dataclass
class RegularizedConfig:
    """The regularized method (seed 003 §4). ``settings``: (α, β) pairs, Table 1's "ours" rows; γ, ε: §5.1.
    Steps and step sizes are not given in the paper: the library defaults (Adam, lr 0.01 ≈ ε per step,
    300 + 100 iterations)."""

    settings: list[list[float]] = field(default_factory=lambda: [[0.01, 0.2], [6.0, 120.0], [40.0, 120.0]])
    losses: list[str] = field(default_factory=lambda: ["probability", "log-complement"])
    gamma: float = 30.0
    eps: float = 0.01
    steps: int = 300
    lr: float = 0.01
    phase2_steps: int = 100
    phase2_lr: float | None = None  # None: lr


@dataclass
class MeaningfulConfig:
    """Meaningful perturbation (Fong & Vedaldi 2017). ``settings``: (λ1, λ2, TV β) triples, Table 1's MP rows,
    in the per-element-mean convention (module docstring); F&V's optimiser: Adam, lr 0.1, 300 iterations, mask
    8× coarser than the image. Threshold grid: ``thresholds`` evenly spaced values in [0, 1) plus
    ``fine_thresholds`` log-spaced values in [1e-6, 1e-2]."""

    settings: list[list[float]] = field(default_factory=lambda: [[0.01, 0.2, 1.0], [0.01, 0.2, 3.0],
                                                                 [6.0, 120.0, 1.0], [40.0, 120.0, 1.0]])
    deletions: list[str] = field(default_factory=lambda: ["min", "blur"])
    steps: int = 300
    lr: float = 0.1
    mask_scale: int = 8
    blur_sigma: float | None = None  # None: F&V's σ = 10 at 224 px, scaled to the image height
    thresholds: int = 100
    fine_thresholds: int = 13


@dataclass
class Config:
    name: str = "explanation-mnist5k"
    data: DataConfig = field(default_factory=lambda: DataConfig(name="cluttered-mnist"))
    classifier: ModelConfig = field(default_factory=lambda: ModelConfig(architecture="finding-net", epochs=8,
                                                                          batch_size=64))
    positive_class: str | int = "positive"  # the class explained ("finding present"); a name or an index
    n_images: int = 100
    regularized: RegularizedConfig = field(default_factory=RegularizedConfig)
    meaningful: MeaningfulConfig = field(default_factory=MeaningfulConfig)
    contrast: bool = True  # gradient and Grad-CAM cut to the regularized masks' areas
    cam_layer: str | None = None  # None: the model's cam_layer
    connectivity: int = 8
    alpha: float = 0.05  # significance level of the paired comparisons
    figure_images: int = 4
    batch_size: int = 100  # images optimised together
    seed: int = 0


def load_config(path: str | Path | None) -> Config:
    return validate_config(config_from_yaml(Config, path, CONFIGS_DIR))


def validate_config(cfg: Config) -> Config:
    """Raise ValueError naming the bad option and what would be valid."""
    for name, v in (("n_images", cfg.n_images), ("batch_size", cfg.batch_size),
                    ("meaningful.mask_scale", cfg.meaningful.mask_scale),
                    ("meaningful.thresholds", cfg.meaningful.thresholds)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    for name, v in (("regularized.steps", cfg.regularized.steps),
                    ("regularized.phase2_steps", cfg.regularized.phase2_steps),
                    ("meaningful.steps", cfg.meaningful.steps),
                    ("meaningful.fine_thresholds", cfg.meaningful.fine_thresholds),
                    ("figure_images", cfg.figure_images)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if not cfg.regularized.settings and not cfg.meaningful.settings:
        raise ValueError("regularized.settings and meaningful.settings are both empty: nothing to explain with")
    for s in cfg.regularized.settings:
        if len(s) != 2 or any(v < 0 for v in s):
            raise ValueError(f"regularized.settings entries must be [alpha, beta] with both ≥ 0, got {s}")
    for s in cfg.meaningful.settings:
        if len(s) != 3 or s[0] < 0 or s[1] < 0 or not s[2] > 0:
            raise ValueError(f"meaningful.settings entries must be [l1_coeff, tv_coeff, tv_beta] with the "
                             f"coefficients ≥ 0 and tv_beta > 0, got {s}")
    if cfg.regularized.settings and not cfg.regularized.losses:
        raise ValueError(f"regularized.losses is empty; use some of {', '.join(CLASSIFICATION_LOSSES)}")
    for loss in cfg.regularized.losses:
        if loss not in CLASSIFICATION_LOSSES:
            raise ValueError(f"unknown regularized.losses entry {loss!r}; use {', '.join(CLASSIFICATION_LOSSES)}")
    if cfg.meaningful.settings and not cfg.meaningful.deletions:
        raise ValueError(f"meaningful.deletions is empty; use some of {', '.join(DELETIONS)}")
    for d in cfg.meaningful.deletions:
        if d not in DELETIONS:
            raise ValueError(f"unknown meaningful.deletions entry {d!r}; use {', '.join(DELETIONS)}")
    if cfg.connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {cfg.connectivity}")
    if not 0 < cfg.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {cfg.alpha}")
    return cfg


# ----------------------------------------------------------------------------------------------------
# Rows of Table 1 and conventions


def _g(v: float) -> str:
    return f"{v:g}"


def regularized_rows(cfg: Config) -> list[dict[str, Any]]:
    """One row per (loss, (α, β)); ``id`` names its stage."""
    rows = []
    for loss in cfg.regularized.losses:
        for alpha, beta in cfg.regularized.settings:
            rows.append({"id": f"ours-{LOSS_TAGS[loss]}-a{_g(alpha)}-b{_g(beta)}", "family": "ours",
                         "method": "ours" if loss == "probability" else f"ours ({loss})", "loss": loss,
                         "l0_coeff": float(alpha), "tv_coeff": float(beta), "tv_gamma": None})
    return rows


def meaningful_rows(cfg: Config) -> list[dict[str, Any]]:
    """One row per (deletion, (λ1, λ2, TV β)), deletions outermost as in Table 1."""
    return [{"id": f"mp-{d}-l{_g(l1)}-t{_g(tv)}-g{_g(beta)}", "family": "mp", "method": f"MP {d}",
             "deletion": d, "l0_coeff": float(l1), "tv_coeff": float(tv), "tv_gamma": float(beta)}
            for d in cfg.meaningful.deletions for l1, tv, beta in cfg.meaningful.settings]


def mp_tv_coeff(tv_coeff: float, height: int, width: int, mask_scale: int) -> float:
    """λ2 of the per-element-mean convention as ``meaningful_perturbation``'s ``tv_coeff`` (which divides the TV
    sum by the mask side s): mean|∂x m|^β + mean|∂y m|^β = Σ/(s(s − 1)) on an s×s mask, so tv_coeff = λ2/(s − 1).
    A one-cell mask has no neighbours and no TV."""
    side = math.sqrt(math.ceil(height / mask_scale) * math.ceil(width / mask_scale))
    return tv_coeff / (side - 1) if side > 1 else 0.0


def threshold_grid(linear: int, fine: int) -> list[float]:
    """0, 1/k, …, (k−1)/k plus ``fine`` log-spaced values in [1e-6, 1e-2] (seed 003 §5.1 scans at 1e-6 steps)."""
    grid = {i / linear for i in range(linear)}
    if fine:
        grid |= {float(v) for v in np.logspace(-6, -2, fine)}
    return sorted(grid)


def top_k_masks(maps: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: the ``counts[i]`` highest pixels of ``maps[i]`` (ties by position, stable)."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return (rank < counts.view(-1, 1)).view_as(maps)


def resolve_positive(classes: list[str], positive: str | int) -> int:
    if isinstance(positive, int) and not isinstance(positive, bool):
        if not 0 <= positive < len(classes):
            raise ValueError(f"positive_class {positive} is not a class index (0..{len(classes) - 1})")
        return positive
    if positive not in classes:
        raise ValueError(f"positive_class {positive!r} is not a class of the data ({', '.join(classes)}); "
                         "name the class whose evidence the masks mark")
    return classes.index(positive)


def select_images(model: nn.Module, test: ImageSet, positive: int, n: int,
                  seed: int) -> tuple[torch.Tensor, int]:
    """Indices of up to ``n`` test images labelled and classified ``positive`` with a non-empty mask (seeded
    order), and how many qualified."""
    masks = getattr(test, "masks", None)
    if masks is None:
        raise ValueError(f"{test.name} has no ground-truth masks; use cluttered-mnist or masked-folder data")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    pred = predict_logits(model, test.x[order]).argmax(1)
    ok = (test.y[order] == positive) & (pred == positive) & masks[order].flatten(1).any(1)
    chosen = order[ok]
    if len(chosen) == 0:
        raise ValueError(f"no test image is labelled and classified {test.classes[positive]!r} with a non-empty "
                         "mask; train the classifier longer (classifier.epochs) or check positive_class")
    return chosen[:n], int(ok.sum())


# ----------------------------------------------------------------------------------------------------
# Statistics


def paired_comparison(a: np.ndarray, b: np.ndarray, lower_is_better: bool, alpha: float) -> dict[str, Any]:
    """Row a vs row b on the same images (``stats.paired_test`` over the images where both are defined): means
    of both, mean difference a − b, Wilcoxon p (two-sided) and the verdict for a: better / worse (p < alpha, in
    the direction of the mean difference), no significant difference, or not testable (no pair)."""
    fa, fb = finite_pairs(a, b)
    test = paired_test(fa, fb)
    out: dict[str, Any] = {"n": test["n"], "a": nanmean(fa), "b": nanmean(fb), "diff": test["estimate"],
                           "p": test["p"], "verdict": "not testable"}
    if not test["n"]:
        return out
    sign = -1.0 if lower_is_better else 1.0
    if out["p"] < alpha and sign * out["diff"] > 0:
        out["verdict"] = "better"
    elif out["p"] < alpha and sign * out["diff"] < 0:
        out["verdict"] = "worse"
    else:
        out["verdict"] = "no significant difference"
    return out


def paper_verdicts(ours: dict[str, Any], mp: dict[str, Any]) -> dict[str, str] | None:
    """Seed 003 Table 1's own comparison of an "ours" row with an MP row of the same coefficients (None when
    the paper has no such pair)."""
    def find(method: str, row: dict[str, Any]) -> dict[str, Any] | None:
        for p in PAPER_TABLE1:
            if p["method"] == method and math.isclose(p["l0_coeff"], row["l0_coeff"]) \
                    and math.isclose(p["tv_coeff"], row["tv_coeff"]) \
                    and (method == "ours" or math.isclose(p["tv_gamma"], row["tv_gamma"])):
                return p
        return None

    p_ours, p_mp = find("ours", ours), find(mp["method"], mp)
    if p_ours is None or p_mp is None:
        return None
    return {"ape": "better" if p_ours["ape"] < p_mp["ape"] else "worse",
            "cc_hit_rate": "better" if p_ours["cc_hit_rate"] > p_mp["cc_hit_rate"] else "worse",
            "ours_ape": p_ours["ape"], "mp_ape": p_mp["ape"], "ours_cc": p_ours["cc_hit_rate"],
            "mp_cc": p_mp["cc_hit_rate"]}


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, Any]:
    """Table 1 columns (set means) and the localisation companions of one row."""
    comps, cc = per_image["components"], per_image["cc_hit_rate"]
    defined = np.isfinite(cc)
    pooled = float((cc[defined] * comps[defined]).sum() / comps[defined].sum()) if comps[defined].sum() else math.nan
    return {"n": len(cc), "l0": float(per_image["l0"].mean()), "tv": float(per_image["tv"].mean()),
            "classification": float(per_image["classification"].mean()), "ape": float(per_image["ape"].mean()),
            "cc_hit_rate": nanmean(cc), "cc_hit_pooled": pooled, "pointing": nanmean(per_image["pointing"]),
            "area": float(per_image["area"].mean()), "components": float(comps.mean()),
            "empty_masks": int((~defined).sum())}


# ----------------------------------------------------------------------------------------------------
# Stages


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _ape_payload(prefix: str, ape) -> dict[str, torch.Tensor]:
    return {f"{prefix}l0": ape.l0, f"{prefix}tv": ape.tv, f"{prefix}classification": ape.classification,
            f"{prefix}ape": ape.total}


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in parts[0].items():
        out[k] = torch.cat([p[k] for p in parts]) if isinstance(v, torch.Tensor) else v
    return out


def _regularized_stage(store: RunStore, key: dict, row: dict, cfg: Config, model: nn.Module, x: torch.Tensor,
                       target: torch.Tensor) -> dict[str, Any]:
    rc = cfg.regularized

    def compute() -> dict[str, Any]:
        start, cpu = time.perf_counter(), time.process_time()
        parts = []
        for sl in _chunks(len(x), cfg.batch_size):
            r = regularized_explanation(model, x[sl], target[sl], alpha=row["l0_coeff"], beta=row["tv_coeff"],
                                        gamma=rc.gamma, eps=rc.eps, steps=rc.steps, lr=rc.lr,
                                        phase2_steps=rc.phase2_steps, phase2_lr=rc.phase2_lr,
                                        classification_loss=row["loss"])
            parts.append({"mask": r.pixel_mask, "x_hat": r.x_adv, "x_phase1": r.x_phase1,
                          "saliency": r.saliency, **_ape_payload("", r.ape),
                          **_ape_payload("phase1_", r.ape_phase1)})
        return {**_cat(parts), "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}

    spec = {k: row[k] for k in ("loss", "l0_coeff", "tv_coeff")}
    return store.cached(f"regularized-{row['id'][5:]}", {**key, "spec": spec, "method": as_plain(rc),
                                                          "batch_size": cfg.batch_size}, compute)


def _meaningful_stage(store: RunStore, key: dict, row: dict, cfg: Config, model: nn.Module, x: torch.Tensor,
                      target: torch.Tensor) -> dict[str, Any]:
    mc = cfg.meaningful
    tv = mp_tv_coeff(row["tv_coeff"], x.shape[2], x.shape[3], mc.mask_scale)

    def compute() -> dict[str, Any]:
        start, cpu = time.perf_counter(), time.process_time()
        parts = []
        for sl in _chunks(len(x), cfg.batch_size):
            e = meaningful_perturbation(model, x[sl], target[sl], deletion=row["deletion"], steps=mc.steps,
                                        lr=mc.lr, l1_coeff=row["l0_coeff"], tv_coeff=tv,
                                        tv_beta=row["tv_gamma"], mask_scale=mc.mask_scale,
                                        blur_sigma=mc.blur_sigma)
            parts.append({"mask": e.mask, "deletion_image": e.deletion_image, "x_blend": e.x_blend,
                          "probability": e.probability})
        return {**_cat(parts), "library_tv_coeff": tv, "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu}

    spec = {k: row[k] for k in ("deletion", "l0_coeff", "tv_coeff", "tv_gamma")}
    method = {k: v for k, v in as_plain(mc).items() if k not in ("settings", "deletions", "thresholds",
                                                                   "fine_thresholds")}
    return store.cached(row["id"], {**key, "spec": spec, "method": method, "batch_size": cfg.batch_size}, compute)


def _scan_stage(store: RunStore, mp_stage: str, row: dict, cfg: Config, model: nn.Module, x: torch.Tensor,
                target: torch.Tensor, mp: dict[str, Any]) -> dict[str, Any]:
    """Seed 003 §5.1's threshold scan of one MP row (``mp_stage``: the directory name of its mask stage)."""
    grid = threshold_grid(cfg.meaningful.thresholds, cfg.meaningful.fine_thresholds)

    def compute() -> dict[str, Any]:
        start = time.perf_counter()
        e = MeaningfulExplanation(x, mp["mask"], mp["deletion_image"], mp["x_blend"], mp["probability"], target)
        s = scan_threshold(model, e, grid)
        chosen = min(grid, key=lambda g: abs(g - float(s.threshold[0])))  # the grid value (the scan uses float32)
        return {"threshold": chosen, "mask": s.region, "x_hat": s.x_hat, "saliency": e.saliency,
                **_ape_payload("", s.ape), "grid": s.thresholds, "mean_ape": s.mean_ape,
                "seconds": time.perf_counter() - start}

    return store.cached(f"scan-{row['id'][3:]}", {"mp_stage": mp_stage, "grid": grid}, compute)


def _saliency_stage(store: RunStore, key: dict, cfg: Config, model: nn.Module, x: torch.Tensor,
                    target: torch.Tensor) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        start = time.perf_counter()
        grads, cams = [], []
        for sl in _chunks(len(x), cfg.batch_size):
            grads.append(gradient(model, x[sl], target[sl], reduce="max")[:, 0])
            cams.append(grad_cam(model, x[sl], target[sl], layer=cfg.cam_layer).upsampled)
        return {"gradient": torch.cat(grads), "gradcam": torch.cat(cams), "seconds": time.perf_counter() - start}

    return store.cached("saliency", {**key, "cam_layer": cfg.cam_layer}, compute)


def _contrast_stage(store: RunStore, row: dict, cfg: Config, model: nn.Module, x: torch.Tensor,
                    target: torch.Tensor, ours: dict[str, Any], maps: dict[str, Any]) -> dict[str, Any]:
    """Gradient and Grad-CAM cut to the same per-image area as the regularized row, then phase 2 inside."""
    rc = cfg.regularized

    def compute() -> dict[str, Any]:
        start = time.perf_counter()
        counts = ours["mask"].flatten(1).sum(1)
        out: dict[str, Any] = {}
        for name in ("gradient", "gradcam"):
            mask = top_k_masks(maps[name], counts)
            parts = []
            for sl in _chunks(len(x), cfg.batch_size):
                x_hat = minimize_in_mask(model, x[sl], mask[sl], target[sl], rc.phase2_steps,
                                         rc.phase2_lr or rc.lr, description=f"phase 2 in {name} mask",
                                         classification_loss=row["loss"])
                parts.append({"x_hat": x_hat, **_ape_payload("", ape_d(model, x[sl], x_hat, target[sl]))})
            joined = _cat(parts)
            out.update({f"{name}/mask": mask, **{f"{name}/{k}": v for k, v in joined.items()}})
        out["seconds"] = time.perf_counter() - start
        return out

    return store.cached(f"contrast-{row['id'][5:]}", {"ours_stage": ours["_stage"], "saliency_stage": maps["_stage"]},
                        compute)


# ----------------------------------------------------------------------------------------------------
# Run


def _per_image(payload: dict[str, Any], mask: torch.Tensor, saliency: torch.Tensor, gt: torch.Tensor,
               connectivity: int, prefix: str = "") -> dict[str, np.ndarray]:
    loc = localization_scores(mask, gt, saliency, connectivity)
    out = {k: payload[f"{prefix}{k}"].double().numpy() for k in ("l0", "tv", "classification", "ape")}
    out.update(cc_hit_rate=loc.cc_hit_rate.double().numpy(), pointing=loc.pointing.double().numpy(),
               area=loc.area.double().numpy(), components=loc.components.double().numpy())
    return out


def run(cfg: Config, run_dir: str | Path, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the explanation study in ``run_dir``; writes results.json and the report."""
    validate_config(cfg)
    run_dir = Path(run_dir)
    start = start_study("explanation", cfg, run_dir, log)
    store, stages, test, model, results = start.store, start.stages, start.test, start.model, start.results
    positive = resolve_positive(test.classes, cfg.positive_class)
    idx, candidates = select_images(model, test, positive, cfg.n_images, cfg.seed)
    x, gt = test.x[idx], test.masks[idx]
    target = torch.full((len(idx),), positive, dtype=torch.int64)
    key = {**start.key, "positive": positive, "images": idx.tolist()}
    p_clean = torch.softmax(predict_logits(model, x), 1)[:, positive]
    results["selection"] = {"positive_class": test.classes[positive], "n_explained": len(idx),
                            "n_requested": cfg.n_images, "n_candidates": candidates,
                            "mean_probability": float(p_clean.mean()),
                            "mean_object_area": float(gt.flatten(1).float().mean()),
                            "mean_object_components": float(localization_scores(gt, gt).components.float().mean())}

    rows: list[dict[str, Any]] = []
    per_image: dict[str, dict[str, np.ndarray]] = {}
    figure: dict[str, torch.Tensor] = {}
    k_fig = min(cfg.figure_images, len(idx))
    figure["x"], figure["gt"] = x[:k_fig], gt[:k_fig]

    def add_row(row: dict[str, Any], values: dict[str, np.ndarray], seconds: float, **extra: Any) -> None:
        per_image[row["id"]] = values
        rows.append({**row, **summarize(values), "seconds": seconds, **extra})

    ours_payloads: dict[str, dict[str, Any]] = {}
    for row in regularized_rows(cfg):
        pay = _regularized_stage(store, key, row, cfg, model, x, target)
        stages.flush()
        pay["_stage"] = store.records[-1].key
        ours_payloads[row["id"]] = pay
        add_row(row, _per_image(pay, pay["mask"], pay["saliency"], gt, cfg.connectivity), float(pay["seconds"]),
                phase1=summarize(_per_image(pay, pay["mask"], pay["saliency"], gt, cfg.connectivity, "phase1_")))
        figure[f"{row['id']}/mask"], figure[f"{row['id']}/x_hat"] = pay["mask"][:k_fig], pay["x_hat"][:k_fig]

    scans: dict[str, Any] = {}
    for row in meaningful_rows(cfg):
        mp = _meaningful_stage(store, key, row, cfg, model, x, target)
        stages.flush()
        scan = _scan_stage(store, store.records[-1].key, row, cfg, model, x, target, mp)
        stages.flush()
        scans[row["id"]] = {"grid": scan["grid"].tolist(), "mean_ape": scan["mean_ape"].tolist()}
        add_row(row, _per_image(scan, scan["mask"], scan["saliency"], gt, cfg.connectivity),
                float(mp["seconds"]) + float(scan["seconds"]), threshold=float(scan["threshold"]),
                library_tv_coeff=float(mp["library_tv_coeff"]))
        figure[f"{row['id']}/mask"], figure[f"{row['id']}/x_hat"] = scan["mask"][:k_fig], scan["x_hat"][:k_fig]
    results["threshold_scans"] = scans

    contrast_rows: list[dict[str, Any]] = []
    if cfg.contrast and ours_payloads:
        maps = _saliency_stage(store, key, cfg, model, x, target)
        maps["_stage"] = store.records[-1].key
        stages.flush()
        figure["gradient"], figure["gradcam"] = maps["gradient"][:k_fig], maps["gradcam"][:k_fig]
        for row in regularized_rows(cfg):
            pay = _contrast_stage(store, row, cfg, model, x, target, ours_payloads[row["id"]], maps)
            stages.flush()
            for name, label in (("gradient", "gradient"), ("gradcam", "Grad-CAM")):
                sub = {k.split("/", 1)[1]: v for k, v in pay.items() if k.startswith(f"{name}/")}
                crow = {"id": f"{name}@{row['id']}", "family": "contrast", "method": f"{label} top-k",
                        "area_of": row["id"], "loss": row["loss"], "l0_coeff": row["l0_coeff"],
                        "tv_coeff": row["tv_coeff"], "tv_gamma": None}
                per_image[crow["id"]] = _per_image(sub, sub["mask"], maps[name], gt, cfg.connectivity)
                contrast_rows.append({**crow, **summarize(per_image[crow["id"]]),
                                      "seconds": float(pay["seconds"]) / 2})
                figure[f"{crow['id']}/mask"] = sub["mask"][:k_fig]

    rows = [r for r in rows if r["family"] == "mp"] + [r for r in rows if r["family"] == "ours"]  # Table 1 order
    results["table1"] = rows
    results["contrast"] = contrast_rows
    results["paper_table1"] = PAPER_TABLE1
    results["per_image"] = {rid: {k: v.tolist() for k, v in vals.items() if k in ("ape", "cc_hit_rate",
                                                                                  "classification", "area")}
                            for rid, vals in per_image.items()}
    results["comparisons"] = compare_rows(rows, per_image, cfg.alpha)
    results["contrast_comparisons"] = compare_contrast(rows, contrast_rows, per_image, cfg.alpha)
    results["figure_rows"] = [r["id"] for r in rows] + [r["id"] for r in contrast_rows]
    _store_figure_tensors(run_dir, figure)

    return finish_study(run_dir, results, store, stages, render)


def compare_rows(rows: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]],
                 alpha: float) -> list[dict[str, Any]]:
    """Every regularized row against the MP rows with the same (L0, TV) coefficients, paired over images."""
    out = []
    for ours in (r for r in rows if r["family"] == "ours"):
        for mp in (r for r in rows if r["family"] == "mp"):
            if not (math.isclose(ours["l0_coeff"], mp["l0_coeff"]) and math.isclose(ours["tv_coeff"], mp["tv_coeff"])):
                continue
            a, b = per_image[ours["id"]], per_image[mp["id"]]
            out.append({"ours": ours["id"], "mp": mp["id"], "ours_method": ours["method"], "mp_method": mp["method"],
                        "l0_coeff": ours["l0_coeff"], "tv_coeff": ours["tv_coeff"], "tv_gamma": mp["tv_gamma"],
                        "ape": paired_comparison(a["ape"], b["ape"], True, alpha),
                        "cc_hit_rate": paired_comparison(a["cc_hit_rate"], b["cc_hit_rate"], False, alpha),
                        "paper": paper_verdicts(ours, mp)})
    return out


def compare_contrast(rows: list[dict[str, Any]], contrast: list[dict[str, Any]],
                     per_image: dict[str, dict[str, np.ndarray]], alpha: float) -> list[dict[str, Any]]:
    """Every regularized row against the gradient / Grad-CAM masks of the same area (same phase 2)."""
    out = []
    for c in contrast:
        a, b = per_image[c["area_of"]], per_image[c["id"]]
        out.append({"ours": c["area_of"], "contrast": c["id"], "contrast_method": c["method"],
                    "ape": paired_comparison(a["ape"], b["ape"], True, alpha),
                    "cc_hit_rate": paired_comparison(a["cc_hit_rate"], b["cc_hit_rate"], False, alpha)})
    return out


def _store_figure_tensors(run_dir: Path, tensors: dict[str, torch.Tensor]) -> None:
    """The figure examples' images, masks and maps, kept so the report draws from stored data."""
    from safetensors.torch import save

    from ..store import atomic_write_bytes

    atomic_write_bytes(run_dir / "figure_maps.safetensors",
                       save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


# ----------------------------------------------------------------------------------------------------
# Report


def render(run_dir: str | Path, results: dict[str, Any], store: RunStore | None = None) -> tuple[Path, Path]:
    from ..report.explanation import render_explanation_report

    return render_explanation_report(Path(run_dir), results)


def summary(results: dict[str, Any]) -> list[str]:
    from ..report.explanation import pct_text, setting_label

    sel = results["selection"]
    lines = [f"classifier test accuracy {results['classifier']['test']['accuracy']:.4f}; explained "
             f"{sel['n_explained']} positive test images"]
    for r in results["table1"]:
        lines.append(f"{r['method']:<24} {setting_label(r):<22} APE_D {r['ape']:.4f}  CC hit "
                     f"{pct_text(r['cc_hit_rate'])}  area {r['area']:.4f}")
    counts: dict[str, int] = {}
    for c in results["comparisons"]:
        for metric in ("ape", "cc_hit_rate"):
            counts[f"{metric}:{c[metric]['verdict']}"] = counts.get(f"{metric}:{c[metric]['verdict']}", 0) + 1
    if counts:
        lines.append("regularized vs MP (matched settings): "
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return lines
