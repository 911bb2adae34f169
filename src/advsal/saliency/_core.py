"""Shared plumbing of the saliency methods: input checks, targets, scores, layer lookup, batched VJPs."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..tensors import check_images, resolve_target

SCORES = ("logit", "log_softmax", "softmax")
Target = torch.Tensor | int | str

# SmoothGrad and Integrated Gradients evaluate the methods on points that may leave [0, 1] (Gaussian noise, a
# baseline outside the pixel range); inside ``relaxed_range()`` the methods check shape and finiteness only.
_RELAXED_RANGE: contextvars.ContextVar[bool] = contextvars.ContextVar("advsal_relaxed_range", default=False)


@contextlib.contextmanager
def relaxed_range() -> Iterator[None]:
    token = _RELAXED_RANGE.set(True)
    try:
        yield
    finally:
        _RELAXED_RANGE.reset(token)


def check_inputs(x: torch.Tensor) -> None:
    """check_images, except that the [0, 1] range is not enforced inside ``relaxed_range()``."""
    if not _RELAXED_RANGE.get():
        check_images(x)
        return
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        check_images(x)  # raises the standard message for the shape/type problem
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values; clean or drop those images first")


def check_choice(value: object, choices: Sequence[object], name: str) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(repr(c) for c in choices)}")


def is_predicted(target: Target) -> bool:
    return isinstance(target, str) and target == "predicted"


def pre_resolve(model: nn.Module, x: torch.Tensor, target: Target, labels: torch.Tensor | None,
                device: torch.device) -> torch.Tensor | None:
    """Class indices for every target spec except ``"predicted"``, which is read off the method's own forward
    pass (saving the extra forward that ``resolve_target`` would run); None for ``"predicted"``."""
    if is_predicted(target):
        return None
    if isinstance(target, bool):
        raise InputError("target must be a tensor of class indices, an int, 'predicted' or 'true', "
                         "got a bool")
    return resolve_target(model, x, target, labels).to(device)


def check_logits(logits: torch.Tensor, n: int) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"the model must map a batch of {n} images to logits of shape ({n}, classes), got "
                         f"{shape}; wrap it so that it returns one logit row per image")


def finish_targets(pre: torch.Tensor | None, logits: torch.Tensor, n: int) -> torch.Tensor:
    """Complete ``pre_resolve`` from the logits and check every index against the model's class count."""
    check_logits(logits, n)
    t = logits.detach().argmax(1) if pre is None else pre
    num_classes = logits.shape[1]
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        bad = t.min().item() if t.min() < 0 else t.max().item()
        raise InputError(f"target class {bad} is out of range: the model has {num_classes} classes "
                         f"(valid: 0..{num_classes - 1})")
    return t


def class_scores(logits: torch.Tensor, score: str) -> torch.Tensor:
    """The per-class score whose gradient a method explains: raw logits (Simonyan et al. 2013 §3 use the
    unnormalised class score), log-softmax or softmax."""
    if score == "logit":
        return logits
    if score == "log_softmax":
        return torch.log_softmax(logits, 1)
    return torch.softmax(logits, 1)


def selected_sum(scores: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each example's target score: examples are independent in eval mode, so one
    backward of this sum gives every example's own gradient."""
    return scores.gather(1, t.view(-1, 1)).sum()


def all_class_grads(scores: torch.Tensor, inputs: Sequence[torch.Tensor],
                    create_graph: bool = False) -> list[torch.Tensor]:
    """∂scores[:, c]/∂input for every class c from one forward pass: the C vector-Jacobian products run as one
    vmapped (batched) backward. Returns tensors of shape (N, C, *input.shape[1:])."""
    n, c = scores.shape
    eye = torch.eye(c, dtype=scores.dtype, device=scores.device).unsqueeze(1).expand(c, n, c)
    try:
        grads = torch.autograd.grad(scores, list(inputs), grad_outputs=eye, is_grads_batched=True,
                                    create_graph=create_graph, retain_graph=create_graph)
    except RuntimeError:
        # an op without a batching rule: fall back to C backward passes over the same forward graph
        per_class = [torch.autograd.grad(scores[:, k].sum(), list(inputs), retain_graph=True,
                                         create_graph=create_graph) for k in range(c)]
        grads = tuple(torch.stack([g[i] for g in per_class]) for i in range(len(inputs)))
    return [g.transpose(0, 1) for g in grads]


def find_layers(model: nn.Module, names: Sequence[str | nn.Module]) -> list[tuple[str, nn.Module]]:
    """Look up modules by their ``model.named_modules()`` name (a module object is accepted too)."""
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if isinstance(name, nn.Module):
            match = [k for k, m in modules.items() if m is name]
            if not match:
                raise InputError(f"layer {type(name).__name__} is not a submodule of the model; pass one of "
                                 "its named_modules() names")
            found.append((match[0], name))
            continue
        if not isinstance(name, str) or name not in modules or name == "":
            valid = ", ".join(k for k in modules if k)
            raise InputError(f"unknown layer {name!r}; valid layer names (model.named_modules()): {valid}")
        found.append((name, modules[name]))
    return found


def default_layer(model: nn.Module) -> str:
    """``model.cam_layer`` (zoo models), else the last ``nn.Conv2d`` in the model."""
    cam_layer = getattr(model, "cam_layer", None)
    if cam_layer is not None:
        return cam_layer
    convs = [k for k, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputError("the model has no cam_layer attribute and no nn.Conv2d layer; pass layer= the name "
                         "of a layer with spatial (N, K, h, w) output")
    return convs[-1]


def prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A detached view of ``x`` on the model's device, differentiable without touching ``x``."""
    xi = x.detach().to(device)
    return xi.clone() if xi.is_inference() else xi
