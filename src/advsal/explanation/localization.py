"""Ground-truth localisation scores for explanation masks (seed 003 §5.2) and two common companions.

* CC hit rate (seed 003 §5.2, Table 1 "CCs hit rate"): the share of the explanation mask's connected
  components that intersect the ground-truth object; components come from ``scipy.ndimage.label`` with
  8-connectivity by default (4 with ``connectivity=4``). Undefined (NaN) for an empty mask.
* Pointing game (Zhang et al. 2016): is a maximum of the saliency map inside the object? Ties count as a hit
  when any maximiser is inside; a constant map points nowhere and scores NaN. ``tolerance`` (pixels) dilates
  the object.
* Mask area: the share of the image's pixels that the mask covers.

Masks are given per pixel as (N, H, W) or (N, C, H, W) tensors; with channels a pixel counts if any channel
does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError


@dataclass
class LocalizationScores:
    """Per-example scores (float tensors of shape (N,)): ``cc_hit_rate`` (NaN for empty masks), ``pointing``
    (1/0, NaN for constant maps), ``area`` (fraction of pixels), ``components`` (number of CCs)."""

    cc_hit_rate: torch.Tensor
    pointing: torch.Tensor
    area: torch.Tensor
    components: torch.Tensor

    def mean(self) -> dict[str, float]:
        """Set means, ignoring the NaN (undefined) entries; NaN when no example is defined."""
        def nanmean(t: torch.Tensor) -> float:
            ok = ~torch.isnan(t)
            return float(t[ok].mean()) if ok.any() else float("nan")
        return {"cc_hit_rate": nanmean(self.cc_hit_rate), "pointing": nanmean(self.pointing),
                "area": float(self.area.mean()), "components": float(self.components.float().mean())}


def _pixel_maps(t: torch.Tensor, name: str, n: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dim() == 4:
        t = t.any(1) if t.dtype == torch.bool else t.abs().sum(1)
    if t.dim() != 3:
        raise InputError(f"{name} must have shape (N, H, W) or (N, C, H, W), got {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise InputError(f"{name} has {t.shape[0]} maps but {n} were expected")
    return t.detach().cpu()


def _pair(mask: torch.Tensor, gt: torch.Tensor, mask_name: str = "mask") -> tuple[torch.Tensor, torch.Tensor]:
    gt = _pixel_maps(gt, "gt").to(torch.bool)
    m = _pixel_maps(mask, mask_name, gt.shape[0])
    if m.shape != gt.shape:
        raise InputError(f"{mask_name} of shape {tuple(m.shape)} and gt of shape {tuple(gt.shape)} must "
                         "cover the same pixels; resize the ground-truth masks to the image size")
    return m, gt


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise InputError(f"connectivity must be 4 or 8, got {connectivity}")


def connected_components(mask: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Number of connected components of each (N, H, W) mask, as an int64 tensor."""
    m = _pixel_maps(mask, "mask").to(torch.bool).numpy()
    st = _structure(connectivity)
    return torch.tensor([ndimage.label(mi, structure=st)[1] for mi in m], dtype=torch.int64)


def cc_hit_rate(mask: torch.Tensor, gt: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Seed 003 §5.2: per example, (components of ``mask`` touching ``gt``) / (components of ``mask``)."""
    m, g = _pair(mask, gt)
    st = _structure(connectivity)
    rates = []
    for mi, gi in zip(m.to(torch.bool).numpy(), g.numpy(), strict=True):
        labels, k = ndimage.label(mi, structure=st)
        if k == 0:
            rates.append(float("nan"))
            continue
        hit = np.unique(labels[gi & (labels > 0)])
        rates.append(len(hit) / k)
    return torch.tensor(rates, dtype=torch.float32)


def pointing_game(saliency: torch.Tensor, gt: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Per example 1.0 if a maximum of ``saliency`` lies inside ``gt`` (dilated by ``tolerance`` pixels),
    else 0.0; NaN for a constant map."""
    if tolerance < 0:
        raise InputError(f"tolerance must be ≥ 0 pixels, got {tolerance}")
    s, g = _pair(saliency, gt, "saliency")
    s = s.to(torch.float32)
    if tolerance:
        square = np.ones((3, 3), bool)
        g = torch.from_numpy(np.stack([ndimage.binary_dilation(gi, square, iterations=tolerance)
                                       for gi in g.numpy()]))
    flat, gflat = s.flatten(1), g.flatten(1)
    top = flat.max(1).values
    hit = ((flat == top[:, None]) & gflat).any(1).to(torch.float32)
    constant = flat.min(1).values == top
    return torch.where(constant, torch.full_like(hit, float("nan")), hit)


def mask_area(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels covered by each (N, H, W) mask."""
    m = _pixel_maps(mask, "mask").to(torch.bool)
    return m.flatten(1).to(torch.float32).mean(1)


def localization_scores(mask: torch.Tensor, gt: torch.Tensor, saliency: torch.Tensor | None = None,
                        connectivity: int = 8) -> LocalizationScores:
    """All three scores at once; the pointing game uses ``saliency`` when given, else the mask itself."""
    return LocalizationScores(cc_hit_rate(mask, gt, connectivity),
                              pointing_game(mask.to(torch.float32) if saliency is None else saliency, gt),
                              mask_area(mask), connected_components(mask, connectivity))
