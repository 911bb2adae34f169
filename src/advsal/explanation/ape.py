"""APE — "Adversarial Perturbative Explanation" metrics (seed 003 §3.2) and the binary-map helpers they use.

Unit conventions (seed 003, Eqs. 5 and 9, "N = number of elements on I"):

* ``N = C·H·W`` counts every element of one image (all channels), so for a 1-channel image it is the pixel
  count.
* ``L0`` is reported already divided by ``N``: the *fraction* of elements that changed, in [0, 1].
* ``TV`` of a binary map is the anisotropic total variation Σ|B(x+1,y) − B(x,y)| + |B(x,y+1) − B(x,y)| summed
  over channels (for a binary map this is the number of neighbouring element pairs that disagree, i.e. the
  length of the region's boundary), also divided by ``N``. For a binary map the exponent β of TV^β is
  irrelevant (|±1|^β = 1).
* ``classification`` is ``M(Î)_i``, the model's softmax probability of class ``i`` (the seed's model ends in a
  softmax over its classes; Table 1's classification column is that probability).

``B(f)(x) = 1 if f(x) ≠ 0`` (Eq. 1) is applied element-wise to ``I − Î`` with an exact comparison by default;
``tol`` > 0 treats changes up to ``tol`` as no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..tensors import check_images, frozen, model_device, resolve_target

Target = torch.Tensor | str | int


@dataclass
class APEResult:
    """Per-example APE terms (all already divided by N) and the weighted total (Eq. 10).

    ``l0``, ``tv``, ``classification`` and ``total`` are float tensors of shape (batch,); ``weights`` is
    (α_sp, α_sm, α_cl).
    """

    l0: torch.Tensor
    tv: torch.Tensor
    classification: torch.Tensor
    total: torch.Tensor
    weights: tuple[float, float, float]

    def mean(self) -> dict[str, float]:
        """Set averages of every term, as plain floats (what Table 1 reports)."""
        return {"l0": float(self.l0.mean()), "tv": float(self.tv.mean()),
                "classification": float(self.classification.mean()), "ape": float(self.total.mean())}


def binarize(diff: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    """Eq. 1: ``B(f)(x) = 1`` where ``|f(x)| > tol`` (``tol = 0``: where ``f(x) ≠ 0``), as a float 0/1
    tensor."""
    if tol < 0:
        raise InputError(f"tol must be ≥ 0, got {tol}")
    return (diff.abs() > tol).to(diff.dtype if diff.is_floating_point() else torch.float32)


def l0_fraction(binary: torch.Tensor) -> torch.Tensor:
    """``L0(b) / N`` per example for a (batch, ...) map: the fraction of non-zero elements."""
    flat = binary.flatten(1)
    return (flat != 0).sum(1).to(torch.float32) / flat.shape[1]


def total_variation(maps: torch.Tensor, beta: float = 1.0, normalize: bool = True) -> torch.Tensor:
    """Anisotropic TV^β of (batch, C, H, W) maps: Σ |∂x|^β + |∂y|^β over channels and positions, per example.

    With ``normalize`` (the APE convention) the sum is divided by the number of elements C·H·W.
    """
    if maps.dim() != 4:
        raise InputError(f"total_variation needs (batch, C, H, W) maps, got shape {tuple(maps.shape)}")
    dx = (maps[..., :, 1:] - maps[..., :, :-1]).abs()
    dy = (maps[..., 1:, :] - maps[..., :-1, :]).abs()
    if beta != 1.0:
        dx, dy = dx.pow(beta), dy.pow(beta)
    tv = dx.flatten(1).sum(1) + dy.flatten(1).sum(1)
    return tv / maps[0].numel() if normalize else tv


def smooth_support(diff: torch.Tensor, gamma: float = 30.0, eps: float = 0.01) -> torch.Tensor:
    """Eq. 11: ``S = 2 / (1 + exp(−γ(|d| − ε))) − 1`` (computed as tanh(γ(|d| − ε)/2), the same function).

    S lies in (−1, 1), is negative exactly where |d| < ε and non-negative where |d| ≥ ε, so ``(S + 1) / 2``
    tends to the binarisation of Eq. 1 with tolerance ε as γ grows. The paper uses γ = 30, ε = 0.01.
    """
    if gamma <= 0 or eps < 0:
        raise InputError(f"smooth_support needs gamma > 0 and eps ≥ 0, got gamma={gamma}, eps={eps}")
    return torch.tanh(0.5 * gamma * (diff.abs() - eps))


def class_probability(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``M(x)_i``: softmax probability of class ``target[k]`` for each image (differentiable w.r.t. ``x``)."""
    logits = model(x)
    return F.softmax(logits, dim=1).gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    check_images(x, "x")
    check_images(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise InputError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(x_hat.shape)}")


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    w = tuple(float(v) for v in weights)
    if len(w) != 3 or any(v < 0 for v in w):
        raise InputError(f"weights must be three non-negative numbers (α_sp, α_sm, α_cl), "
                         f"got {tuple(weights)}")
    return w  # type: ignore[return-value]


@torch.no_grad()
def _probabilities(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    device = model_device(model)
    with frozen(model):
        return class_probability(model, x.to(device), target.to(device)).to(x.device)


def ape_d(model: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, target: Target = "predicted",
          weights: Sequence[float] = (1.0, 1.0, 1.0), labels: torch.Tensor | None = None,
          tol: float = 0.0) -> APEResult:
    """APE_D, the smallest-destroying-region metric (seed 003 Eq. 5, weighted as Eq. 10), per example.

    ``α_sp·L0(I − Î)/N + α_sm·TV(B(I − Î))/N + α_cl·M(Î)_i`` with ``weights = (α_sp, α_sm, α_cl)``; Table 1
    uses (1, 1, 1). ``x_hat`` must already be clipped to [0, 1] (the paper's Î). ``target`` is the class i: a
    tensor, an int, ``"predicted"`` (the class predicted on ``x``) or ``"true"`` (with ``labels``). Lower is
    better.
    """
    _check_pair(x, x_hat)
    w = _check_weights(weights)
    target = resolve_target(model, x, target, labels)
    b = binarize(x - x_hat, tol)
    l0, tv = l0_fraction(b), total_variation(b)
    cls = _probabilities(model, x_hat, target)
    return APEResult(l0, tv, cls, w[0] * l0 + w[1] * tv + w[2] * cls, w)


def ape_s(model: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, target: Target = "predicted",
          weights: Sequence[float] = (1.0, 1.0, 1.0), labels: torch.Tensor | None = None,
          tol: float = 0.0) -> APEResult:
    """APE_S, the smallest-sufficient-region metric (seed 003 Eq. 9, weighted symmetrically to Eq. 10).

    ``α_sp·L0(1 − B(I − Î))/N + α_sm·TV(1 − B(I − Î))/N + α_cl·|M(Î)_i − M(I)_i|``: the kept (unchanged)
    region should be small and simple while the class probability is preserved. Lower is better.
    """
    _check_pair(x, x_hat)
    w = _check_weights(weights)
    target = resolve_target(model, x, target, labels)
    kept = 1.0 - binarize(x - x_hat, tol)
    l0, tv = l0_fraction(kept), total_variation(kept)
    cls = (_probabilities(model, x_hat, target) - _probabilities(model, x, target)).abs()
    return APEResult(l0, tv, cls, w[0] * l0 + w[1] * tv + w[2] * cls, w)
