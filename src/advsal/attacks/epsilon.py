"""Searching the smallest attack budget that breaks a classifier (seed 001 §IV-B, after Metzen et al.
2017)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..tensors import check_images, check_labels, predict_logits
from .base import Attack, check_nonnegative, check_positive_int


@dataclass
class MinimalEpsilon:
    """Result of ``minimal_epsilon``: ``eps`` (accuracy < ``max_accuracy`` there), ``accuracy`` at ``eps``,
    ``lower`` (the largest probed eps with accuracy ≥ ``max_accuracy``), ``clean_accuracy``, and every probe
    as ``curve`` — a list of (eps, accuracy) sorted by eps."""

    eps: float
    accuracy: float
    lower: float
    clean_accuracy: float
    max_accuracy: float
    curve: list[tuple[float, float]] = field(default_factory=list)


def attacked_accuracy(attack: Attack, model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy over all of ``x`` after the attack: originally correct examples that stay correct."""
    correct = predict_logits(model, x).argmax(1).to(y.device) == y
    result = attack(model, x, y)
    return float((correct & (result.pred.to(y.device) == y)).float().mean())


def minimal_epsilon(attack_factory: Callable[[float], Attack], model: nn.Module, x: Tensor, y: Tensor,
                    max_accuracy: float = 0.30, lo: float = 0.0, hi: float = 1.0,
                    tol: float = 0.02) -> MinimalEpsilon:
    """The smallest ε (by bisection) at which the classifier's accuracy on the attacked set drops below
    ``max_accuracy`` — seed 001 §IV-B: "ε minimal under the constraint that the classification accuracy is
    below 30%" (following Metzen et al.).

    ``attack_factory(eps)`` builds the attack for a budget (e.g. ``lambda e: BIM(e, steps=10)``). Bisection
    keeps ``acc(lo) ≥ max_accuracy > acc(hi)`` and stops when ``hi − lo ≤ tol·hi`` (``tol`` is relative, so a
    ``tol``-smaller ε is already above the threshold for an attack whose accuracy falls with ε — use a
    deterministic one such as BIM; FGSM's accuracy need not be monotone). Raises ValueError when even ``hi``
    leaves the accuracy at or above ``max_accuracy``.
    """
    check_images(x)
    check_labels(y, x.shape[0])
    if not 0 < max_accuracy <= 1:
        raise InputError(f"max_accuracy must be in (0, 1], got {max_accuracy!r}")
    lo, hi = check_nonnegative("lo", lo), check_nonnegative("hi", hi)
    if hi <= lo:
        raise InputError(f"need lo < hi, got lo={lo} and hi={hi}")
    if not 0 < tol < 1:
        raise InputError(f"tol (relative bracket width) must be in (0, 1), got {tol!r}")
    probes: dict[float, float] = {}

    def accuracy(eps: float) -> float:
        if eps not in probes:
            probes[eps] = attacked_accuracy(attack_factory(eps), model, x, y)
        return probes[eps]

    clean = float((predict_logits(model, x).argmax(1).to(y.device) == y).float().mean())
    if accuracy(hi) >= max_accuracy:
        raise InputError(f"the attack leaves accuracy {probes[hi]:.3f} ≥ max_accuracy={max_accuracy} even at "
                         f"eps=hi={hi}; raise hi or use a stronger attack")
    if accuracy(lo) < max_accuracy:
        hi = lo
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        if accuracy(mid) < max_accuracy:
            hi = mid
        else:
            lo = mid
    curve = sorted(probes.items())
    return MinimalEpsilon(eps=hi, accuracy=probes[hi], lower=lo, clean_accuracy=clean,
                          max_accuracy=max_accuracy, curve=curve)


@dataclass
class PerExampleEpsilon:
    """Result of ``minimal_epsilon_per_example``, one entry per image: ``eps`` (the smallest budget found at
    which the attack fools the model; 0 for images misclassified already, +inf where ``found`` is False),
    ``lower`` (the largest probed budget at which it did not), and ``found`` (fooled at ``hi``, or before)."""

    eps: Tensor
    lower: Tensor
    found: Tensor


def minimal_epsilon_per_example(attack_factory: Callable[[Tensor], Attack], model: nn.Module, x: Tensor,
                                y: Tensor, lo: float = 0.0, hi: float = 1.0, steps: int = 10) -> PerExampleEpsilon:
    """For each image, the smallest ε (by bisection) at which the attack fools the model (``pred != y``).

    All images are bisected at once: ``attack_factory(eps)`` receives a per-example budget tensor of shape
    (n,) (e.g. ``lambda e: BIM(e, steps=10)``; FGSM, BIM and PGD accept one) and is called on the images
    still being searched. First every image is attacked at ``hi``; those not fooled there get ``eps = +inf``
    and ``found = False``. Then ``steps`` halvings of ``[lo, hi]`` leave each bracket ``(hi − lo)/2^steps``
    wide, with the attack failing at ``lower`` and succeeding at ``eps``. Images the model already gets wrong
    have ``eps = 0``. As for ``minimal_epsilon``, use a deterministic attack whose success grows with ε.
    """
    check_images(x)
    check_labels(y, x.shape[0])
    lo, hi = check_nonnegative("lo", lo), check_nonnegative("hi", hi)
    if hi <= lo:
        raise InputError(f"need lo < hi, got lo={lo} and hi={hi}")
    steps = check_positive_int("steps", steps, minimum=0)
    n = x.shape[0]
    y = y.to(x.device)  # indexed with x's indices below
    wrong = predict_logits(model, x).argmax(1) != y
    lower = torch.full((n,), lo, device=x.device)
    upper = torch.full((n,), hi, device=x.device)

    def fooled(idx: Tensor, eps: Tensor) -> Tensor:
        result = attack_factory(eps.to(x.device))(model, x[idx], y[idx])
        return result.success.to(x.device)

    todo = (~wrong).nonzero().squeeze(1)
    found = wrong.clone()
    if todo.numel():
        found[todo] = fooled(todo, upper[todo])
    todo = todo[found[todo]]
    for _ in range(steps):
        if todo.numel() == 0:
            break
        mid = (lower[todo] + upper[todo]) / 2
        ok = fooled(todo, mid)
        upper[todo] = torch.where(ok, mid, upper[todo])
        lower[todo] = torch.where(ok, lower[todo], mid)
    eps = torch.where(found, upper, torch.full_like(upper, torch.inf))
    eps[wrong] = 0.0
    lower[wrong] = 0.0
    return PerExampleEpsilon(eps=eps, lower=lower, found=found)


__all__ = ["MinimalEpsilon", "PerExampleEpsilon", "attacked_accuracy", "minimal_epsilon",
           "minimal_epsilon_per_example"]
