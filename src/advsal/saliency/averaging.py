"""Saliency averaged over many evaluations: SmoothGrad (Smilkov et al. 2017) and Integrated Gradients
(Sundararajan et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import InputError
from ..progress import track
from ..tensors import check_model_dtype, frozen, model_device, resolve_target
from ._core import SCORES, Target, check_choice, check_inputs, class_scores, relaxed_range
from .gradcam import CamResult
from .gradients import input_gradients

RULES = ("midpoint", "trapezoid", "left", "right")


def _chunks(total: int, per_chunk: int) -> list[tuple[int, int]]:
    return [(i, min(per_chunk, total - i)) for i in range(0, total, per_chunk)]


def smoothgrad(method: str | Callable, model: nn.Module, x: torch.Tensor, target: Target = "predicted", *,
               labels: torch.Tensor | None = None, n: int = 25, sigma: float = 0.15, seed: int = 0,
               batch_size: int = 1024, **kw) -> torch.Tensor | CamResult:
    """SmoothGrad (Smilkov et al. 2017 Eq. 3): M̂_c(x) = 1/n Σ_i M_c(x + N(0, σ²)).

    Args:
        method: a saliency function of ``(model, x, target, **kw)`` returning a tensor or a CamResult, or
            the name of one in :data:`advsal.saliency.methods.SALIENCY_METHODS` that averages
            (``"gradient"``, ``"guided-backprop"``, ``"grad-cam"``, ``"guided-grad-cam"``).
        n: noise samples per image; sigma: noise standard deviation in pixel units (pixels span [0, 1], so
            this is the paper's σ / (x_max − x_min)). Noisy images are not clipped, as in the paper.
        target: resolved once on the clean images (``"predicted"`` = the clean prediction) and kept for every
            noisy copy; labels: the true labels for ``target="true"``.
        seed: seeds the noise (a private generator; the global RNG is untouched).
        batch_size: at most this many noisy images per call of ``method`` (at least one copy of the batch).
        kw: passed to ``method`` (e.g. ``reduce="abs"``, ``layer="features.8"``).

    Returns the averaged output of ``method``: a tensor of its shape, or a CamResult with averaged maps.
    """
    if isinstance(method, str):
        from .methods import SALIENCY_METHODS, SMOOTHABLE_METHODS

        check_choice(method, SMOOTHABLE_METHODS, "method")
        method = SALIENCY_METHODS[method].function
    if not callable(method):
        raise InputError(f"method must be a saliency function or a name, got {type(method).__name__}")
    if n < 1:
        raise InputError(f"n (noise samples) must be ≥ 1, got {n}")
    if not sigma >= 0:
        raise InputError(f"sigma must be ≥ 0 (pixel units), got {sigma}")
    check_inputs(x)
    t = resolve_target(model, x, target, labels)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    per_chunk = max(1, batch_size // max(1, x.shape[0]))
    total: torch.Tensor | CamResult | None = None
    with relaxed_range():
        for _, k in track(_chunks(n, per_chunk), "smoothgrad"):
            # one draw per noise sample, so the noise does not depend on batch_size
            noise = torch.stack([torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
                                 for _ in range(k)])
            noisy = (x.detach().unsqueeze(0) + sigma * noise).flatten(0, 1)
            out = method(model, noisy, t.repeat(k), **kw)
            total = _accumulate(total, out, k)
    return _scale(total, 1.0 / n)


def _fold(v: torch.Tensor, k: int) -> torch.Tensor:
    return v.reshape(k, -1, *v.shape[1:]).sum(0)


def _accumulate(total, out, k: int):
    if isinstance(out, CamResult):
        cam = _fold(out.cam, k)
        up = None if out.upsampled is None else _fold(out.upsampled, k)
        if total is None:
            return replace(out, cam=cam, upsampled=up, target=None if out.target is None else out.target[
                :out.target.shape[0] // k])
        return replace(total, cam=total.cam + cam, upsampled=None if up is None else total.upsampled + up)
    if not isinstance(out, torch.Tensor):
        raise InputError(f"smoothgrad needs a method that returns a tensor or a CamResult, got "
                         f"{type(out).__name__}")
    return _fold(out, k) if total is None else total + _fold(out, k)


def _scale(total, factor: float):
    if isinstance(total, CamResult):
        return replace(total, cam=total.cam * factor,
                       upsampled=None if total.upsampled is None else total.upsampled * factor)
    return total * factor


@dataclass(frozen=True)
class IGResult:
    """Integrated Gradients of a batch: ``attributions`` (N, C, H, W); ``delta`` (N,) the completeness error
    |Σ attributions − (F(x) − F(baseline))| (Sundararajan et al. 2017 Prop. 1); ``target`` (N,)."""

    attributions: torch.Tensor
    delta: torch.Tensor
    target: torch.Tensor


def _path(steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points α_k on [0, 1] and weights w_k with Σ_k w_k g(α_k) ≈ ∫_0^1 g(α) dα."""
    k = torch.arange(steps, dtype=torch.float64)
    if rule == "midpoint":
        return (k + 0.5) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if rule == "left":
        return k / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if rule == "right":
        return (k + 1) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if steps < 2:
        raise InputError("the trapezoid rule needs steps ≥ 2")
    w = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
    w[0] = w[-1] = 0.5 / (steps - 1)
    return k / (steps - 1), w


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target = "predicted", *,
                         labels: torch.Tensor | None = None, baseline: torch.Tensor | float | None = None,
                         steps: int = 50, score: str = "logit", rule: str = "midpoint",
                         batch_size: int = 1024) -> IGResult:
    """Integrated Gradients (Sundararajan et al. 2017 Eq. 3, Riemann approximation):
    IG_i(x) = (x_i − x'_i) · Σ_k w_k ∂F(x' + α_k (x − x'))/∂x_i.

    Args:
        target: one class per example (tensor, int, ``"predicted"`` on x, ``"true"`` with ``labels``).
        baseline: x' — None (black image, zeros), a float (constant image) or a tensor broadcastable to x.
        steps: points on the straight path; ``rule``: ``"midpoint"`` (default), ``"trapezoid"``, ``"left"`` or
            ``"right"`` Riemann sum.
        score: F — ``"logit"``, ``"log_softmax"`` or ``"softmax"`` of the target class.
        batch_size: at most this many path images per forward/backward pass (at least one copy of the batch).

    Returns an :class:`IGResult`; ``delta`` → 0 as ``steps`` grows (completeness, Prop. 1).
    """
    check_inputs(x)
    check_choice(score, SCORES, "score")
    check_choice(rule, RULES, "rule")
    if steps < 1:
        raise InputError(f"steps must be ≥ 1, got {steps}")
    if baseline is None:
        base = torch.zeros_like(x)
    elif isinstance(baseline, (int, float)):
        base = torch.full_like(x, float(baseline))
    elif isinstance(baseline, torch.Tensor):
        try:
            base = baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError:
            raise InputError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the images "
                             f"{tuple(x.shape)}") from None
        if not torch.isfinite(base).all():
            raise InputError("baseline contains NaN or infinite values")
    else:
        raise InputError(f"baseline must be None, a float or a tensor, got {type(baseline).__name__}")
    t = resolve_target(model, x, target, labels)
    x = x.detach()
    diff = x - base
    alphas, weights = _path(steps, rule)
    per_chunk = max(1, batch_size // max(1, x.shape[0]))
    avg_grad = torch.zeros_like(x)
    with relaxed_range():
        for start, k in track(_chunks(steps, per_chunk), "integrated gradients"):
            a = alphas[start:start + k].to(x.device, x.dtype).view(k, 1, 1, 1, 1)
            w = weights[start:start + k].to(x.device, x.dtype).view(k, 1, 1, 1, 1)
            points = (base.unsqueeze(0) + a * diff.unsqueeze(0)).flatten(0, 1)
            grad, _ = input_gradients(model, points, t.repeat(k), score=score)
            avg_grad += (w * grad.view(k, *x.shape)).sum(0)
    attributions = diff * avg_grad
    check_model_dtype(x, model)
    device = model_device(model)
    with frozen(model), torch.no_grad():
        ends = class_scores(model(torch.cat([x, base]).to(device)), score).to(x.device)
    n = x.shape[0]
    gain = ends[:n].gather(1, t.view(-1, 1)).squeeze(1) - ends[n:].gather(1, t.view(-1, 1)).squeeze(1)
    delta = (attributions.flatten(1).sum(1) - gain).abs()
    return IGResult(attributions, delta, t)
