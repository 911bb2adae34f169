"""Metrics on saliency and class-activation maps: diffusion, shift, attraction to perturbed pixels.

Seed 004 (Kotyan & Vargas, "Deep neural network loses attention to adversarial images") compares saliency maps
(guided backprop, §3 Eq. 5–7) and Grad-CAM maps (§3 Eq. 8–11) of original and adversarial images by eye:
PGD "diffuses" saliency, Pixel Attack "calls attention" to the perturbed pixels, the true class's activation
map is "destroyed". These functions turn each of those words into a number. Every function takes a batch of
maps ``(N, H, W)`` (one map per example; signed maps are compared by magnitude |m|) and returns one value per
example.

Conventions:

- The *mass distribution* of a map is ``p = |m| / Σ|m|``; an all-zero map has no distribution, so every
  distribution-based metric (entropy, spread, centre of mass, mass shares) returns NaN for it.
- Coordinates are ``(row, column)`` in pixels of the map, pixel centres at integer positions.
- Distances are Euclidean, in pixels of the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from ..errors import InputError

_TINY = 1e-12


def _check_maps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, H, W), got {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise InputError(f"{name} must have shape (N, H, W) (one map per example), got {tuple(maps.shape)}; "
                         "reduce channels first, e.g. saliency.abs().amax(1)")
    if not maps.is_floating_point():
        maps = maps.float()
    if torch.isnan(maps).any():
        raise InputError(f"{name} contains NaN values; compute the maps again or drop those examples")
    return maps.detach()


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _check_maps(a, "a"), _check_maps(b, "b")
    if a.shape != b.shape:
        raise InputError(f"maps a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape; upsample "
                         "Grad-CAM maps to the input size (CamResult.upsampled) before comparing")
    return a, b


def mass_distribution(maps: torch.Tensor) -> torch.Tensor:
    """``p = |m| / Σ|m|`` per map, shape (N, H, W); rows of an all-zero map are NaN."""
    m = _check_maps(maps).abs().double()
    total = m.flatten(1).sum(1)
    p = m / total.clamp_min(_TINY).view(-1, 1, 1)
    p[total <= 0] = float("nan")
    return p


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(h, device=device, dtype=torch.float64).view(h, 1).expand(h, w)
    cols = torch.arange(w, device=device, dtype=torch.float64).view(1, w).expand(h, w)
    return rows, cols


def saliency_entropy(maps: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Shannon entropy ``H = −Σ p log p`` of the map's mass distribution (nats), per map.

    With ``normalized=True`` (default) divided by ``log(H·W)``, the entropy of the uniform map, so the value
    lies in [0, 1]: 0 for all mass on one pixel, 1 for a uniform map. "Diffused saliency" (seed 004 §4.1,
    Fig. 2) means a higher entropy. NaN for an all-zero map.
    """
    p = mass_distribution(maps)
    terms = torch.where(p > 0, -p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    terms = torch.where(torch.isnan(p), p, terms)
    h = terms.flatten(1).sum(1)
    if normalized:
        n = p.shape[1] * p.shape[2]
        h = h / math.log(n) if n > 1 else torch.zeros_like(h)
    return h.float()


def center_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``Σ p·(row, col)`` of each map, shape (N, 2); NaN for an all-zero map."""
    p = mass_distribution(maps)
    rows, cols = _grid(p.shape[1], p.shape[2], p.device)
    return torch.stack([(p * rows).flatten(1).sum(1), (p * cols).flatten(1).sum(1)], dim=1).float()


def spatial_spread(maps: torch.Tensor) -> torch.Tensor:
    """Root-mean-square distance of the mass from its centre of mass, ``sqrt(Σ p·‖u − com‖²)``, in pixels.

    0 for a single-pixel map; a uniform H×W map gives ``sqrt((H² − 1)/12 + (W² − 1)/12)``. The second
    diffusion measure next to :func:`saliency_entropy`: entropy counts how many pixels share the mass, spread
    how far apart they lie.
    """
    p = mass_distribution(maps)
    rows, cols = _grid(p.shape[1], p.shape[2], p.device)
    com = center_of_mass(maps).double()
    d2 = (rows - com[:, 0].view(-1, 1, 1)) ** 2 + (cols - com[:, 1].view(-1, 1, 1)) ** 2
    return (p * d2).flatten(1).sum(1).sqrt().float()


def com_displacement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (pixels) between the centres of mass of ``a[i]`` and ``b[i]``; 0 for equal maps."""
    a, b = _check_pair(a, b)
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)


def _top_mask(m: torch.Tensor, k: int) -> torch.Tensor:
    flat = m.abs().flatten(1)
    idx = flat.topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask


def topk_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Intersection over union of the top ``fraction`` of pixels (by |value|) of ``a[i]`` and ``b[i]``.

    ``k = max(1, round(fraction · H · W))`` pixels per map (ties broken by position). 1 for identical maps, 0
    for disjoint regions of interest; two independent random maps give ``≈ f / (2 − f)`` on average
    (:func:`chance_iou`). NaN when either map is all zero (it has no region of interest). The "region of
    interest" comparison of seed 004 §4.1–4.2.
    """
    a, b = _check_pair(a, b)
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    n = a.shape[1] * a.shape[2]
    k = max(1, int(round(fraction * n)))
    ma, mb = _top_mask(a, k), _top_mask(b, k)
    inter = (ma & mb).sum(1).float()
    union = (ma | mb).sum(1).float()
    iou = inter / union
    iou[(a.abs().flatten(1).amax(1) <= 0) | (b.abs().flatten(1).amax(1) <= 0)] = float("nan")
    return iou


def chance_iou(fraction: float) -> float:
    """Expected top-k IoU of two independent random rankings, ``f / (2 − f)`` (large-map limit)."""
    return fraction / (2 - fraction)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the pixel magnitudes |a[i]| and |b[i]| (ties get their average rank).

    1 for maps with the same ordering of pixels, −1 for the reversed ordering; NaN when a map is constant.
    """
    a, b = _check_pair(a, b)
    ra = rankdata(a.abs().flatten(1).cpu().numpy(), axis=1)
    rb = rankdata(b.abs().flatten(1).cpu().numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)
    return torch.from_numpy(rho.astype(np.float32)).to(a.device)


def dilate(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels within Euclidean distance ``radius`` of any True pixel of ``mask`` (N, H, W), as a bool mask."""
    if mask.dim() != 3:
        raise InputError(f"mask must have shape (N, H, W), got {tuple(mask.shape)}")
    if radius < 0:
        raise InputError(f"radius must be ≥ 0 pixels, got {radius}")
    r = int(math.floor(radius))
    if r == 0:
        return mask.bool().clone()
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2) <= radius ** 2 + 1e-9).float()
    hit = F.conv2d(mask.float().unsqueeze(1).cpu(), disk.view(1, 1, 2 * r + 1, 2 * r + 1), padding=r)
    return (hit[:, 0] > 0.5).to(mask.device)


@dataclass(frozen=True)
class Attraction:
    """Share of a map's mass near given pixels (``share``) against the share expected by chance (``chance``:
    the area share of that neighbourhood, i.e. the mass share of a uniform map); ``ratio = share / chance``
    (> 1: attention drawn to those pixels, < 1: drawn away). All of shape (N,)."""

    share: torch.Tensor
    chance: torch.Tensor
    ratio: torch.Tensor


def attraction(maps: torch.Tensor, pixels: torch.Tensor, radius: float = 2.0) -> Attraction:
    """How much of each map's mass lies within ``radius`` pixels of the marked pixels (seed 004 §4.1: Pixel
    Attack "calls the network's attention towards" the perturbed pixels).

    Args:
        maps: (N, H, W) maps (magnitudes are used).
        pixels: (N, H, W) bool mask of the perturbed pixels (e.g. :func:`perturbed_pixels`), same H, W.
        radius: neighbourhood radius in pixels (0: the marked pixels only).

    ``share`` is 1 when all mass lies on the neighbourhood; NaN for an all-zero map or an empty mask.
    """
    maps = _check_maps(maps)
    if pixels.shape != maps.shape:
        raise InputError(f"pixels mask {tuple(pixels.shape)} must match the maps {tuple(maps.shape)}")
    near = dilate(pixels.bool(), radius)
    p = mass_distribution(maps)
    share = (p * near.double()).flatten(1).sum(1).float()
    area = near.flatten(1).float().mean(1)
    empty = area <= 0
    share[empty] = float("nan")
    chance = torch.where(empty, torch.full_like(area, float("nan")), area)
    return Attraction(share, chance, share / chance)


def perturbed_pixels(x: torch.Tensor, x_adv: torch.Tensor, top_k: int | None = None, tolerance: float = 1e-6,
                     seed: int = 0) -> torch.Tensor:
    """Bool mask (N, H, W) of perturbed pixels: max over channels of |x_adv − x| above ``tolerance``.

    With ``top_k`` only the k most changed pixels per image — for L∞ attacks such as PGD, which change nearly
    every pixel by exactly ε; ties are then broken uniformly at random (seeded by ``seed``), not by position.
    """
    if x.shape != x_adv.shape or x.dim() != 4:
        raise InputError(f"x and x_adv must be NCHW batches of one shape, got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")
    change = (x_adv - x).abs().amax(1)
    mask = change > tolerance
    if top_k is not None:
        if top_k < 1:
            raise InputError(f"top_k must be ≥ 1, got {top_k}")
        k = min(top_k, change[0].numel())
        flat = change.flatten(1).cpu()
        gen = torch.Generator().manual_seed(seed)
        # a random order first, then a stable sort by change: equal changes keep their random order
        shuffle = torch.argsort(torch.rand(flat.shape, generator=gen), dim=1)
        order = torch.sort(flat.gather(1, shuffle), dim=1, descending=True, stable=True).indices
        top = torch.zeros_like(flat, dtype=torch.bool)
        top.scatter_(1, shuffle.gather(1, order[:, :k]), True)
        mask = mask & top.view_as(mask).to(mask.device)
    return mask


def cam_energy(cams: torch.Tensor) -> torch.Tensor:
    """Mean activation of each Grad-CAM map (after its ReLU), per example — the strength of a class's
    attention at that layer. Comparing clean and adversarial ``cam_energy`` w.r.t. the true class measures
    how far an attack "destroys the class activation map" (seed 004 §4.2, Fig. 6)."""
    return _check_maps(cams).flatten(1).mean(1)


def cam_peak(cams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Location ``(row, col)`` (N, 2) and value (N,) of each map's maximum (first one on ties)."""
    c = _check_maps(cams)
    flat = c.flatten(1)
    value, idx = flat.max(1)
    w = c.shape[2]
    return torch.stack([idx // w, idx % w], dim=1).float(), value


def peak_displacement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (pixels) between the peaks of ``a[i]`` and ``b[i]``; NaN when either map is all zero
    (no peak)."""
    a, b = _check_pair(a, b)
    pa, pb = cam_peak(a)[0], cam_peak(b)[0]
    d = (pa - pb).norm(dim=1)
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    d[(flat_a.abs().amax(1) <= 0) | (flat_b.abs().amax(1) <= 0)] = float("nan")
    return d


__all__ = ["Attraction", "attraction", "cam_energy", "cam_peak", "center_of_mass", "chance_iou",
           "com_displacement", "dilate", "mass_distribution", "peak_displacement", "perturbed_pixels",
           "rank_correlation",
           "saliency_entropy", "spatial_spread", "topk_iou"]
