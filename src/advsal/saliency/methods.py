"""The one registry of saliency-method names, shared by the library (``smoothgrad(method=...)``), the CLI
(``advsal saliency --method``) and the studies.

Each :class:`SaliencyMethod` holds the library function and a ``display`` function that turns its output into
one map per example, shape (N, H, W) at the input's resolution — what a figure shows:

    from advsal.saliency.methods import SALIENCY_METHODS
    maps = SALIENCY_METHODS["grad-cam"].display(model, x, "predicted", layer="features.8")   # (N, H, W)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ._core import Target
from .averaging import integrated_gradients, smoothgrad
from .gradcam import grad_cam, guided_grad_cam
from .gradients import gradient, guided_backprop

#: ``display(model, x, target, *, layer=None, seed=0, labels=None) -> (N, H, W)``
DisplayFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class SaliencyMethod:
    """A registered saliency method: ``function`` is the library function (its own return type),
    ``display`` the (N, H, W) map a figure shows; ``uses_layer`` says whether ``layer`` matters (it is ignored
    otherwise), ``uses_seed`` whether ``seed`` does (SmoothGrad's noise)."""

    name: str
    function: Callable
    display: DisplayFn
    uses_layer: bool = False
    uses_seed: bool = False


def _gradient_map(model: nn.Module, x: torch.Tensor, target: Target, *, layer: str | None = None,
                  seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """max over channels of |∂S_c/∂x| (Simonyan et al. 2013 §3.1)."""
    return gradient(model, x, target, labels=labels, reduce="max")[:, 0]


def _guided_map(model: nn.Module, x: torch.Tensor, target: Target, *, layer: str | None = None,
                seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """max over channels of |guided backpropagation|."""
    return guided_backprop(model, x, target, labels=labels, reduce="max")[:, 0]


def _grad_cam_map(model: nn.Module, x: torch.Tensor, target: Target, *, layer: str | None = None,
                  seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The Grad-CAM map of ``layer`` upsampled to the input size."""
    up = grad_cam(model, x, target, layer=layer, labels=labels).upsampled
    assert up is not None
    return up


def _guided_grad_cam_map(model: nn.Module, x: torch.Tensor, target: Target, *, layer: str | None = None,
                         seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """max over channels of |Guided Grad-CAM|."""
    return guided_grad_cam(model, x, target, layer=layer, labels=labels).abs().amax(1)


def _smoothgrad_map(model: nn.Module, x: torch.Tensor, target: Target, *, layer: str | None = None,
                    seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """SmoothGrad of the gradient map (default n and σ), noise seeded by ``seed``."""
    return smoothgrad("gradient", model, x, target, labels=labels, seed=seed, reduce="max")[:, 0]


def _integrated_gradients_map(model: nn.Module, x: torch.Tensor, target: Target, *, layer: str | None = None,
                              seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """max over channels of |Integrated Gradients| (black baseline, 50 midpoint steps)."""
    return integrated_gradients(model, x, target, labels=labels).attributions.abs().amax(1)


SALIENCY_METHODS: dict[str, SaliencyMethod] = {m.name: m for m in (
    SaliencyMethod("gradient", gradient, _gradient_map),
    SaliencyMethod("guided-backprop", guided_backprop, _guided_map),
    SaliencyMethod("grad-cam", grad_cam, _grad_cam_map, uses_layer=True),
    SaliencyMethod("guided-grad-cam", guided_grad_cam, _guided_grad_cam_map, uses_layer=True),
    SaliencyMethod("smoothgrad", smoothgrad, _smoothgrad_map, uses_seed=True),
    SaliencyMethod("integrated-gradients", integrated_gradients, _integrated_gradients_map),
)}

#: The names ``smoothgrad(method=...)`` accepts: methods of ``(model, x, target, **kw)`` that return a map.
SMOOTHABLE_METHODS: tuple[str, ...] = ("gradient", "guided-backprop", "grad-cam", "guided-grad-cam")


def saliency_method(name: str) -> SaliencyMethod:
    """The registered method called ``name``; a ValueError listing the valid names otherwise."""
    if name not in SALIENCY_METHODS:
        raise InputError(f"unknown saliency method {name!r}; choose one of {', '.join(SALIENCY_METHODS)}")
    return SALIENCY_METHODS[name]


__all__ = ["SALIENCY_METHODS", "SMOOTHABLE_METHODS", "SaliencyMethod", "saliency_method"]
