"""The "meaningful perturbation" baseline (Fong & Vedaldi 2017, arXiv:1704.03296) and seed 003's threshold
scan.

A preservation mask m ∈ [0, 1] (1 = keep, 0 = delete) blends the image with a deletion image x₀ (F&V Eq. 1):
Φ(x; m) = m·x + (1 − m)·x₀. The mask is optimised on a grid ``mask_scale``× coarser than the image and
upsampled bilinearly (F&V: 28×28 for 224×224 inputs, i.e. 8×), minimising (F&V Eq. 3 with the TV^β term of §4)

    λ₁ · Σ|1 − m| / n + λ₂ · Σ(|∂x m|^β + |∂y m|^β) / √n + f_c(Φ(x; m)),      n = cells of the mask,

f_c being the softmax probability of the explained class, with Adam (lr 0.1, 300 iterations) and m clamped to
[0, 1] after every step, starting from m = 1. The area term is divided by the number of mask cells n and the
boundary term by the mask's side √n, so that a region covering the same share of the image costs the same at
any resolution: F&V's λ₁ = 1e-4 and λ₂ = 1e-2 on sums over their 28×28 = 784-cell mask become the defaults
λ₁ = 1e-4·784 = 0.0784 and λ₂ = 1e-2·28 = 0.28 here, with β = 3. F&V's random jitter of the mask during
optimisation is left out: it only fights artefacts of deep ImageNet nets and makes the result stochastic.

Deletion images (seed 003 Table 1): ``"min"`` — a constant image at the smallest value of each original image;
``"blur"`` — a Gaussian blur with σ = 10·H/224 (F&V's σ₀ = 10 at 224×224, scaled to the image height); or a
tensor of the images' shape.

Seed 003 §5.1 then binarises the masks with one threshold T for the whole set, scanned for the best APE_D: the
explanation region is {u : 1 − m(u) > T} and Î_T = Φ(x; 1 − region), i.e. the region replaced by the deletion
image and everything else untouched (:func:`scan_threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..progress import Bar
from ..tensors import check_images, frozen, model_device, resolve_target
from .ape import APEResult, Target, _check_weights, ape_d, class_probability, total_variation

DELETIONS = ("min", "blur")


@dataclass
class MeaningfulExplanation:
    """Result of :func:`meaningful_perturbation`: ``mask`` (N, 1, H, W) preservation mask m in [0, 1] at full
    resolution; ``deletion_image`` x₀; ``x_blend`` Φ(x; m); ``probability`` f_c(Φ(x; m)); ``target``."""

    x: torch.Tensor
    mask: torch.Tensor
    deletion_image: torch.Tensor
    x_blend: torch.Tensor
    probability: torch.Tensor
    target: torch.Tensor

    @property
    def saliency(self) -> torch.Tensor:
        """(N, H, W) deletion amount 1 − m: high where deleting evidence lowers the class probability."""
        return 1.0 - self.mask[:, 0]


@dataclass
class ThresholdScan:
    """Outcome of :func:`scan_threshold`: the chosen ``threshold`` (one per example; all equal unless
    ``per_example``), the binary explanation ``region`` (N, H, W), the perturbed images ``x_hat``, their APE_D
    terms ``ape``, and the scanned ``thresholds`` with the set-mean APE_D at each (``mean_ape``) and the
    per-example APE_D at each (``ape_table``, (k, N): for choosing T on some examples and scoring others)."""

    threshold: torch.Tensor
    region: torch.Tensor
    x_hat: torch.Tensor
    ape: APEResult
    thresholds: torch.Tensor
    mean_ape: torch.Tensor
    ape_table: torch.Tensor | None = None


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of NCHW images (kernel radius ⌈3σ⌉, replicated borders); σ ≤ 0 returns x."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def deletion_image(x: torch.Tensor, deletion: str | torch.Tensor = "blur",
                   blur_sigma: float | None = None) -> torch.Tensor:
    """The reference image x₀ that stands for "no evidence" (see the module docstring)."""
    if isinstance(deletion, torch.Tensor):
        check_images(deletion, "deletion")
        if deletion.shape != x.shape:
            raise InputError(f"a deletion image tensor must have the images' shape {tuple(x.shape)}, "
                             f"got {tuple(deletion.shape)}")
        return deletion.to(x.device, x.dtype)
    if deletion == "min":
        return x.flatten(1).min(1).values.view(-1, 1, 1, 1).expand_as(x).clone()
    if deletion == "blur":
        sigma = 10.0 * x.shape[2] / 224.0 if blur_sigma is None else float(blur_sigma)
        return gaussian_blur(x, sigma).clamp(0.0, 1.0)
    raise InputError(f"unknown deletion {deletion!r}: use 'min', 'blur' or a tensor of deletion images")


def meaningful_perturbation(model: nn.Module, x: torch.Tensor, target: Target = "predicted", *,
                            deletion: str | torch.Tensor = "blur", steps: int = 300, lr: float = 0.1,
                            l1_coeff: float = 0.0784, tv_coeff: float = 0.28, tv_beta: float = 3.0,
                            mask_scale: int = 8, blur_sigma: float | None = None,
                            labels: torch.Tensor | None = None) -> MeaningfulExplanation:
    """Fong & Vedaldi's deletion mask for class ``target`` on ``x``, batched (defaults: see the module
    docstring)."""
    check_images(x)
    if steps < 0 or not lr > 0:
        raise InputError(f"steps must be ≥ 0 and lr > 0, got steps={steps}, lr={lr}")
    if l1_coeff < 0 or tv_coeff < 0 or tv_beta <= 0:
        raise InputError(f"l1_coeff and tv_coeff must be ≥ 0 and tv_beta > 0, got {l1_coeff}, {tv_coeff}, "
                         f"{tv_beta}")
    if int(mask_scale) != mask_scale or mask_scale < 1:
        raise InputError(f"mask_scale must be a positive integer (8 = F&V's 28×28 mask for 224×224), "
                         f"got {mask_scale}")
    target = resolve_target(model, x, target, labels)
    device = model_device(model)
    x0, tgt = x.detach().to(device), target.to(device)
    ref = deletion_image(x0, deletion, blur_sigma)
    n, _, h, w = x0.shape
    small = torch.ones(n, 1, math.ceil(h / mask_scale), math.ceil(w / mask_scale), device=device,
                       dtype=x0.dtype, requires_grad=True)
    side = math.sqrt(small[0, 0].numel())
    opt = torch.optim.Adam([small], lr=lr)

    def upsample(m: torch.Tensor) -> torch.Tensor:
        return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)

    label = deletion if isinstance(deletion, str) else "custom"
    with frozen(model), Bar(f"meaningful ({label})", steps) as bar:
        for _ in range(steps):
            m = upsample(small)
            prob = class_probability(model, m * x0 + (1 - m) * ref, tgt)
            loss = (prob + l1_coeff * (1 - small).abs().flatten(1).mean(1)
                    + tv_coeff * total_variation(small, tv_beta, normalize=False) / side)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                small.clamp_(0.0, 1.0)
            bar.update(info=f"p {prob.mean().item():.4f}")
    with torch.no_grad(), frozen(model):
        m = upsample(small.detach()).clamp(0.0, 1.0)
        blend = m * x0 + (1 - m) * ref
        prob = class_probability(model, blend, tgt)
    return MeaningfulExplanation(x.detach(), m.to(x.device), ref.to(x.device), blend.to(x.device),
                                 prob.to(x.device), target)


def threshold_region(explanation: MeaningfulExplanation, threshold: float | torch.Tensor) -> torch.Tensor:
    """The binary explanation region {1 − m > T} as (N, H, W) bool; ``threshold`` is a float or one per
    example."""
    t = torch.as_tensor(threshold, dtype=explanation.mask.dtype, device=explanation.mask.device)
    return explanation.saliency > t.view(-1, 1, 1) if t.dim() else explanation.saliency > t


def apply_region(explanation: MeaningfulExplanation, region: torch.Tensor) -> torch.Tensor:
    """Î: the deletion image inside ``region`` (N, H, W), the original image elsewhere."""
    return torch.where(region.unsqueeze(1), explanation.deletion_image, explanation.x)


@torch.no_grad()
def scan_threshold(model: nn.Module, explanation: MeaningfulExplanation,
                   thresholds: Sequence[float] | torch.Tensor | int = 100,
                   weights: Sequence[float] = (1.0, 1.0, 1.0), per_example: bool = False) -> ThresholdScan:
    """Seed 003 §5.1: binarise the masks with the threshold T giving the best (lowest) mean APE_D over the
    set.

    ``thresholds`` is a sequence of candidate values in [0, 1) or a count k of evenly spaced values
    0, 1/k, …, (k−1)/k. (The paper scans at steps of 1e-6, i.e. a million model evaluations of the whole set;
    a grid is the practical version and a finer one can be passed.) With ``per_example`` each example gets
    its own best T. Ties go to the smallest threshold.
    """
    w = _check_weights(weights)
    if isinstance(thresholds, int):
        if thresholds < 1:
            raise InputError(f"thresholds must be a positive count or a list of values, got {thresholds}")
        grid = torch.arange(thresholds, dtype=torch.float64) / thresholds
    else:
        grid = torch.as_tensor(list(thresholds) if not isinstance(thresholds, torch.Tensor) else thresholds,
                               dtype=torch.float64).flatten()
        if grid.numel() == 0 or grid.min() < 0 or grid.max() >= 1:
            raise InputError("thresholds must be a non-empty list of values in [0, 1)")
    grid = grid.sort().values
    totals = []
    for t in grid.tolist():
        x_hat = apply_region(explanation, threshold_region(explanation, t))
        totals.append(ape_d(model, explanation.x, x_hat, explanation.target, w).total)
    table = torch.stack(totals)  # (k, N)
    mean_ape = table.mean(1)
    n = explanation.x.shape[0]
    best = table.argmin(0) if per_example else mean_ape.argmin().expand(n)
    chosen = grid.to(device=explanation.mask.device, dtype=explanation.mask.dtype)[best]
    region = threshold_region(explanation, chosen)
    x_hat = apply_region(explanation, region)
    return ThresholdScan(chosen, region, x_hat, ape_d(model, explanation.x, x_hat, explanation.target, w),
                         grid.to(torch.float32), mean_ape, table)
