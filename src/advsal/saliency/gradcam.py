"""Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017) of any named layer.

Seed 004 §3 visualises the Grad-CAM of the last convolutional layer with respect to the true, the predicted
and the adversarial class; seeds 000/001 §5 compare layer-wise Grad-CAM of clean and adversarial images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..tensors import check_model_dtype, frozen, model_device
from ._core import (
    SCORES,
    Target,
    all_class_grads,
    check_choice,
    check_inputs,
    check_logits,
    class_scores,
    default_layer,
    find_layers,
    finish_targets,
    pre_resolve,
    prepare_input,
    selected_sum,
)
from .gradients import guided_backprop

Layer = str | nn.Module


@dataclass(frozen=True)
class CamResult:
    """Grad-CAM of one layer.

    ``cam``: (N, h, w) at the layer's resolution — or (N, classes, h, w) with ``all_classes``;
    ``upsampled``: the same bilinearly resized to the input's (H, W) (None when ``upsample=False``);
    ``layer``: the layer name; ``target``: the explained class per example (None with ``all_classes``).
    Values are raw (not normalised to [0, 1]); the figure helpers normalise for display.
    """

    cam: torch.Tensor
    upsampled: torch.Tensor | None
    layer: str
    target: torch.Tensor | None


def _capture_hook(name: str, store: dict[str, torch.Tensor]):
    def hook(module: nn.Module, inputs: tuple, output: object) -> torch.Tensor:
        if name in store:
            raise InputError(f"layer {name!r} runs more than once in one forward pass (a shared module), so "
                             "its activation is ambiguous; give Grad-CAM a layer that is called once")
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise InputError(f"layer {name!r} outputs {shape}; Grad-CAM needs a layer with spatial "
                             "(N, K, h, w) output, such as a convolution, its activation or a conv block")
        # the first hooked layer becomes a leaf: the backward pass then stops there, nothing upstream is taped
        act = output if output.requires_grad else output.detach().requires_grad_(True)
        store[name] = act
        return act.clone()  # later in-place ops (ReLU(inplace=True)) must not overwrite the stored activation

    return hook


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target = "predicted", *, layer: Layer | None = None,
             labels: torch.Tensor | None = None, upsample: bool = True, relu: bool = True, score: str = "logit",
             all_classes: bool = False) -> CamResult:
    """Grad-CAM (Selvaraju et al. 2017 Eq. 1–2): α_k^c = mean_ij ∂y^c/∂A^k_ij, L^c = ReLU(Σ_k α_k^c A^k).

    Args:
        model: any classifier mapping [0, 1] images to logits (its mode and flags are restored afterwards).
        x: (N, C, H, W) images in [0, 1].
        target: one class per example — a tensor of N indices, an int, ``"predicted"`` or ``"true"``.
        layer: ONE ``model.named_modules()`` name (or the module) whose output A is explained; default
            ``model.cam_layer`` (zoo models: the last convolutional stage), else the model's last ``nn.Conv2d``.
            For several layers from one forward/backward pass use :func:`grad_cam_layers`.
        labels: the true labels, needed for ``target="true"``.
        upsample: also return the map bilinearly resized to (H, W) (``align_corners=False``).
        relu: apply the ReLU of Eq. 2 (off: the signed map).
        score: y^c — ``"logit"`` (the pre-softmax score, as in the paper), ``"log_softmax"`` or ``"softmax"``.
        all_classes: maps for every class, ``cam`` of shape (N, classes, h, w), from one forward pass and one
            batched backward (much cheaper than one call per class); ``target`` is then ignored.

    Returns a :class:`CamResult`, tensors on x's device.
    """
    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise InputError(f"grad_cam takes one layer (a name or a module), got {type(layer).__name__}; for "
                         "several layers from one pass call grad_cam_layers(model, x, target, layers=[...])")
    name = default_layer(model) if layer is None else layer
    (result,) = _grad_cams(model, x, target, [name], labels=labels, upsample=upsample, relu=relu, score=score,
                           all_classes=all_classes).values()
    return result


def grad_cam_layers(model: nn.Module, x: torch.Tensor, target: Target = "predicted", *, layers: Sequence[Layer],
                    labels: torch.Tensor | None = None, upsample: bool = True, relu: bool = True,
                    score: str = "logit", all_classes: bool = False) -> dict[str, CamResult]:
    """Grad-CAM of several layers from ONE forward and one backward pass: layer name → :class:`CamResult`
    (in the order of ``layers``; a module object is keyed by its ``named_modules()`` name). Each entry equals
    ``grad_cam(model, x, target, layer=name, ...)``; the other arguments are those of :func:`grad_cam`."""
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence):
        raise InputError(f"layers must be a list of layer names (or modules), got {type(layers).__name__}; "
                         "for one layer call grad_cam(model, x, target, layer=name)")
    if not layers:
        raise InputError("layers is empty; pass at least one layer name")
    return _grad_cams(model, x, target, list(layers), labels=labels, upsample=upsample, relu=relu, score=score,
                      all_classes=all_classes)


def _grad_cams(model: nn.Module, x: torch.Tensor, target: Target, requested: list[Layer], *,
               labels: torch.Tensor | None, upsample: bool, relu: bool, score: str,
               all_classes: bool) -> dict[str, CamResult]:
    """Grad-CAM of every requested layer from one forward pass (hooks capture the activations, removed also
    on error) and one backward pass (Eq. 1–2 per layer)."""
    check_inputs(x)
    check_choice(score, SCORES, "score")
    layers = list(dict(find_layers(model, requested)).items())
    check_model_dtype(x, model)
    device = model_device(model)
    pre = None if all_classes else pre_resolve(model, x, target, labels, device)

    acts: dict[str, torch.Tensor] = {}
    handles = []
    try:
        with frozen(model), torch.enable_grad():
            for name, module in layers:
                handles.append(module.register_forward_hook(_capture_hook(name, acts)))
            logits = model(prepare_input(x, device))
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, _ in layers if name not in acts]
    if missing:
        raise InputError(f"layer(s) {missing} did not run in the model's forward pass; pick layers it calls")
    check_logits(logits, x.shape[0])
    t = None if all_classes else finish_targets(pre, logits, x.shape[0])
    scores = class_scores(logits, score)
    tensors = [acts[name] for name, _ in layers]
    if not scores.requires_grad:
        raise InputError(f"the logits do not depend on layer(s) {[n for n, _ in layers]}; pick a layer on "
                         "the path from the input to the logits")
    with torch.enable_grad():
        if all_classes:
            grads = all_class_grads(scores, tensors)
        else:
            grads = list(torch.autograd.grad(selected_sum(scores, t), tensors, allow_unused=True))
    results: dict[str, CamResult] = {}
    for (name, _), act, grad in zip(layers, tensors, grads, strict=True):
        if grad is None:
            raise InputError(f"the logits do not depend on layer {name!r}; pick a layer on the path from the "
                             "input to the logits")
        weights = grad.mean(dim=(-2, -1))  # α_k^c, Eq. 1
        # Σ_k α_k^c A^k (Eq. 2) as a batched matrix product: no (N, classes, K, h, w) temporary
        cam = torch.einsum("nck,nkhw->nchw" if all_classes else "nk,nkhw->nhw", weights, act.detach())
        if relu:
            cam = cam.clamp(min=0)
        up = None
        if upsample:
            grid = cam if all_classes else cam.unsqueeze(1)
            up = F.interpolate(grid, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            up = (up if all_classes else up.squeeze(1)).to(x.device)
        results[name] = CamResult(cam.to(x.device), up, name, None if t is None else t.to(x.device))
    return results


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: Target = "predicted", *,
                    layer: Layer | None = None, labels: torch.Tensor | None = None,
                    score: str = "logit") -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017 §3): guided backpropagation × the upsampled Grad-CAM map,
    shape (N, C, H, W). Both use the same target classes."""
    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise InputError("guided_grad_cam takes one layer (a name or a module); call it once per layer")
    cam = grad_cam(model, x, target, layer=layer, labels=labels, score=score)
    assert cam.upsampled is not None
    guided = guided_backprop(model, x, cam.target, score=score)
    return guided * cam.upsampled.unsqueeze(1)
