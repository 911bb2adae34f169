"""Input-gradient saliency: the vanilla gradient (Simonyan et al. 2013) and guided backpropagation
(Springenberg et al. 2014).

Seed 001 Eq. 5 defines the saliency of an image as ∂f_θ(x)/∂x, the gradient of the class score with respect
to the input pixels; seed 004 §3 visualises saliency maps computed with guided-ReLU backpropagation.
"""

from __future__ import annotations

import contextlib

import torch

from ..tensors import ReLUReplacementMode, check_model_dtype, frozen, model_device
from ._core import (
    SCORES,
    Target,
    all_class_grads,
    check_choice,
    check_inputs,
    check_logits,
    class_scores,
    finish_targets,
    pre_resolve,
    prepare_input,
    selected_sum,
)

REDUCTIONS = (None, "abs", "max", "input")


class _GuidedReLUFunction(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive (Springenberg et al.
    2014, Fig. 1: R^l = (f^l > 0) · (R^{l+1} > 0) · R^{l+1})."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            out = x.clamp_(min=0)
        else:
            out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        # ReLU's own fused backward kernel (zero where out ≤ 0) applied to the clamped gradient: one pass
        # instead of a compare, a cast and a multiply
        return torch.ops.aten.threshold_backward(grad.clamp(min=0), out, 0), None


class _GuidedReLUMode(ReLUReplacementMode):
    """Routes every ReLU of a forward pass to the guided ReLU (see ``advsal.tensors.ReLUReplacementMode``)."""

    def replace(self, z: torch.Tensor, inplace: bool) -> torch.Tensor:
        return _GuidedReLUFunction.apply(z, inplace)


def input_gradients(model: torch.nn.Module, x: torch.Tensor, target: Target, *,
                    labels: torch.Tensor | None = None, score: str = "logit", guided: bool = False,
                    create_graph: bool = False, all_classes: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward and one backward for the whole batch; returns (gradient on x's device, targets or None)."""
    check_inputs(x)
    check_choice(score, SCORES, "score")
    check_model_dtype(x, model)
    device = model_device(model)
    pre = None if all_classes else pre_resolve(model, x, target, labels, device)
    with frozen(model), torch.enable_grad():
        if create_graph and x.requires_grad:
            xi = x.to(device)  # keep the caller's graph so the saliency can itself be differentiated
        else:
            xi = prepare_input(x, device).requires_grad_(True)
        with _GuidedReLUMode() if guided else contextlib.nullcontext():
            logits = model(xi)
        scores = class_scores(logits, score)
        if all_classes:
            check_logits(logits, x.shape[0])
            (grad,) = all_class_grads(scores, [xi], create_graph=create_graph)
            return grad.to(x.device), None
        t = finish_targets(pre, logits, x.shape[0])
        (grad,) = torch.autograd.grad(selected_sum(scores, t), xi, create_graph=create_graph)
    return grad.to(x.device), t.to(x.device)


def _reduce(grad: torch.Tensor, x: torch.Tensor, reduce: str | None) -> torch.Tensor:
    if reduce is None:
        return grad
    if reduce == "abs":
        return grad.abs()
    if reduce == "max":
        return grad.abs().amax(dim=-3, keepdim=True)
    return grad * (x.unsqueeze(1) if grad.dim() == 5 else x)


def gradient(model: torch.nn.Module, x: torch.Tensor, target: Target = "predicted", *,
             labels: torch.Tensor | None = None, score: str = "logit", reduce: str | None = None,
             create_graph: bool = False, all_classes: bool = False) -> torch.Tensor:
    """Vanilla gradient saliency ∂S_c(x)/∂x (seed 001 Eq. 5; Simonyan et al. 2013 Eq. 2–3).

    Args:
        model: any classifier mapping [0, 1] images to logits (its mode and flags are restored afterwards).
        x: (N, C, H, W) images in [0, 1].
        target: one class per example — a tensor of N indices, an int, ``"predicted"`` or ``"true"``.
        labels: the true labels, needed for ``target="true"``.
        score: the explained score S_c — ``"logit"`` (pre-softmax class score, as in the paper),
            ``"log_softmax"`` or ``"softmax"``.
        reduce: ``None`` → the signed gradient, shape (N, C, H, W), as seed 001 concatenates it with the
            image; ``"abs"`` → |gradient|; ``"max"`` → max over channels of |gradient| (Simonyan et al.
            §3.1), shape (N, 1, H, W); ``"input"`` → gradient × input.
        create_graph: keep the graph so the map can be differentiated again (second-round attacks on a
            saliency-based detector); if ``x`` requires grad the map is then differentiable w.r.t. ``x``.
            Model parameters are frozen during the call, so they are not part of that graph.
        all_classes: return the map for every class, shape (N, classes, C, H, W) (reduced per class), from one
            forward pass and one batched backward; ``target`` is then ignored.

    One forward and one backward pass for the whole batch. Returned on x's device; detached unless
    ``create_graph``.
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    grad, _ = input_gradients(model, x, target, labels=labels, score=score, create_graph=create_graph,
                              all_classes=all_classes)
    return _reduce(grad, x, reduce)


def guided_backprop(model: torch.nn.Module, x: torch.Tensor, target: Target = "predicted", *,
                    labels: torch.Tensor | None = None, score: str = "logit", reduce: str | None = None,
                    all_classes: bool = False) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2014 §3.4, Fig. 1; seed 004 §3 "guided ReLU").

    The gradient of the class score w.r.t. the input where every ReLU's backward pass keeps only positive
    gradients at positive inputs. Every ReLU the forward pass calls is replaced — ``nn.ReLU`` modules,
    in-place ``nn.ReLU(inplace=True)`` and functional ``torch.relu``/``F.relu``/``relu_``/``Tensor.relu`` —
    through a torch-function mode that is active only during this call's forward pass (removed also on error).
    Activations written as other ops (e.g. ``x.clamp(min=0)``) are not recognised and backpropagate as usual.

    Arguments and output as in :func:`gradient` (shape (N, C, H, W), or (N, classes, C, H, W) with
    ``all_classes``).
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    grad, _ = input_gradients(model, x, target, labels=labels, score=score, guided=True,
                              all_classes=all_classes)
    return _reduce(grad, x, reduce)
