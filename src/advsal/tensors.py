"""Input validation and model-state helpers shared by every library layer.

Conventions (DESIGN.md): images are float NCHW tensors in [0, 1], labels int64; the library never changes a
caller's train()/eval() mode or requires_grad flags without restoring them, and never modifies inputs in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a float NCHW batch of finite pixels in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D NCHW batch, got shape {tuple(x.shape)}; add a batch dimension "
                         "with x.unsqueeze(0) for a single image")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor with pixels in [0, 1], got dtype {x.dtype}; "
                         "divide uint8 images by 255")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN pixels; clean or drop those images first")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} has pixels outside [0, 1] (min {x.min().item():.3g}, max {x.max().item():.3g}); "
                         "advsal expects un-normalised images — put mean/std normalisation inside the model "
                         "with advsal.models.Normalize")


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "y") -> None:
    """Raise ValueError unless ``y`` is an integer vector of length ``n`` with values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the batch, got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.numel() and y.min() < 0:
        raise ValueError(f"{name} has a negative class index ({y.min().item()})")
    if num_classes is not None and y.numel() and y.max() >= num_classes:
        raise ValueError(f"{name} has class index {y.max().item()} but the model has {num_classes} classes "
                         f"(valid: 0..{num_classes - 1})")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameter gradients off; restore both on exit (also on error)."""
    modes = {m: m.training for m in model.modules()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.train(training)
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, in batches, returned on x's device."""
    device = model_device(model)
    with frozen(model):
        outs = [model(x[i:i + batch_size].to(device)).to(x.device) for i in range(0, len(x), batch_size)]
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def resolve_target(model: nn.Module, x: torch.Tensor, target: torch.Tensor | str | int,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """Turn a target specification into one class index per example.

    ``target`` is a tensor of class indices (one per example), an int (the same class for all), ``"predicted"``
    (the model's top class) or ``"true"`` (requires ``labels``).
    """
    n = x.shape[0]
    if isinstance(target, str):
        if target == "predicted":
            return predict_logits(model, x).argmax(1).to(x.device)
        if target == "true":
            if labels is None:
                raise ValueError('target="true" needs the labels: pass labels=y')
            check_labels(labels, n, name="labels")
            return labels.to(x.device)
        raise ValueError(f'unknown target {target!r}: use a tensor of class indices, "predicted" or "true"')
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=x.device)
    if isinstance(target, torch.Tensor):
        if target.dim() == 0:
            return target.expand(n).long().to(x.device)
        check_labels(target, n, name="target")
        return target.long().to(x.device)
    raise ValueError(f"target must be a tensor, an int, 'predicted' or 'true', got {type(target).__name__}")


class ReLUReplacementMode(TorchFunctionMode):
    """A torch-function mode that reroutes every ReLU called while it is active — ``nn.ReLU`` (which calls
    ``F.relu``), in-place ``nn.ReLU(inplace=True)``, ``torch.relu``/``F.relu``/``relu_`` and ``Tensor.relu(_)`` —
    to ``self.replace(z, inplace)``. Guided backprop and the smooth surrogate of adaptive attacks subclass it;
    ``replaced`` counts the ReLUs rerouted."""

    _INPLACE = {torch.relu: False, torch.relu_: True, torch.Tensor.relu: False, torch.Tensor.relu_: True}

    def __init__(self) -> None:
        super().__init__()
        self.replaced = 0

    def replace(self, z: torch.Tensor, inplace: bool) -> torch.Tensor:
        raise NotImplementedError

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.relu:
            inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
        elif func in self._INPLACE:
            inplace = self._INPLACE[func]
        else:
            return func(*args, **kwargs)
        self.replaced += 1
        return self.replace(args[0], inplace)
