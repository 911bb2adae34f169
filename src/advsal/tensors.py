"""Input validation and model-state helpers shared by every library layer.

Conventions (DESIGN.md): images are float NCHW tensors in [0, 1], labels int64; the library never changes a
caller's train()/eval() mode or requires_grad flags without restoring them, and never modifies inputs in place.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import InputError


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a float NCHW batch of finite pixels in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"{name} must be a 4-D NCHW batch, got shape {tuple(x.shape)}; add a batch dimension "
                         "with x.unsqueeze(0) for a single image")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a float tensor with pixels in [0, 1], got dtype {x.dtype}; "
                         "divide uint8 images by 255")
    if not x.numel():
        return
    # one pass and one device sync for the NaN and the range checks (aminmax propagates NaN): this runs on
    # every attack call, where four passes cost as much as FGSM's own arithmetic on a small model
    lo, hi = torch.stack(torch.aminmax(x)).tolist()
    if math.isnan(lo) or math.isnan(hi):
        raise InputError(f"{name} contains NaN pixels; clean or drop those images first")
    if lo < 0 or hi > 1:
        raise InputError(f"{name} has pixels outside [0, 1] (min {lo:.3g}, max {hi:.3g}); "
                         "advsal expects un-normalised images — put mean/std normalisation inside the model "
                         "with advsal.models.Normalize")


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "y") -> None:
    """Raise ValueError unless ``y`` is an integer vector of length ``n`` with values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},) to match the batch, got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if not y.numel():
        return
    lo, hi = torch.stack(torch.aminmax(y)).tolist()  # one pass, one device sync
    if lo < 0:
        raise InputError(f"{name} has a negative class index ({lo})")
    if num_classes is not None and hi >= num_classes:
        raise InputError(f"{name} has class index {hi} but the model has {num_classes} classes "
                         f"(valid: 0..{num_classes - 1})")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameter gradients off; restore both on exit (also on error)."""
    modes = {m: m.training for m in model.modules()}
    training = any(modes.values())  # attacked models are usually in eval mode already: then nothing to undo
    grads = [p for p in model.parameters() if p.requires_grad]
    if training:
        model.eval()
    for p in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        if training:
            for m, mode in modes.items():
                m.train(mode)
        for p in grads:
            p.requires_grad_(True)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def check_model_dtype(x: torch.Tensor, model: nn.Module, name: str = "x") -> None:
    """Raise InputError when ``x``'s float type differs from the model's parameters' (float64 images into a
    float32 model fail deep inside a layer otherwise). Images are never cast silently: the caller chooses."""
    for p in model.parameters():
        if p.is_floating_point() and x.is_floating_point() and p.dtype != x.dtype:
            raise InputError(f"{name} is {str(x.dtype).replace('torch.', '')} but the model's parameters are "
                             f"{str(p.dtype).replace('torch.', '')}; pass {name}.to({p.dtype}) (or convert the "
                             "model)")
        return


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, in batches, returned on x's device."""
    check_model_dtype(x, model)
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
                raise InputError('target="true" needs the labels: pass labels=y')
            check_labels(labels, n, name="labels")
            return labels.to(x.device)
        raise InputError(f'unknown target {target!r}: use a tensor of class indices, "predicted" or "true"')
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=x.device)
    if isinstance(target, torch.Tensor):
        if target.dim() == 0:
            return target.expand(n).long().to(x.device)
        check_labels(target, n, name="target")
        return target.long().to(x.device)
    raise InputError(f"target must be a tensor, an int, 'predicted' or 'true', got {type(target).__name__}")


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


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else Apple's MPS, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``"mps"`` as a ``torch.device``; a device this machine lacks raises DeviceError naming the ones it has."""
    from .errors import DeviceError

    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DeviceError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {spec!r}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + (["mps"] if has_mps else [])
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"device {spec!r} is not available here (available: {', '.join(available)}); "
                          "use --device auto")
    if device.type == "mps" and not has_mps:
        raise DeviceError(f"device 'mps' is not available here (available: {', '.join(available)})")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def batch_slices(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)`` — the one chunker for batched loops."""
    if size < 1:
        raise InputError(f"batch size must be ≥ 1, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def map_batches(fn: Callable[[slice], torch.Tensor], n: int, size: int) -> torch.Tensor:
    """``torch.cat`` of ``fn(s)`` over :func:`batch_slices` ``(n, size)``."""
    return torch.cat([fn(s) for s in batch_slices(n, size)])
