"""Gradient attacks on the cross-entropy loss: FGSM, BIM (iterative FGSM) and PGD, in L∞ and L2.

One loop serves all three: FGSM is one BIM step of size ε; PGD is BIM with a random start inside the ε-ball
and restarts that keep, per example, the best result (Madry et al. 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, check_nonnegative, check_positive_int

NORMS = ("linf", "l2")
_TINY = 1e-12


def loss_gradient(model: nn.Module, x: Tensor, labels: Tensor | None,
                  targeted: bool) -> tuple[Tensor, Tensor]:
    """Gradient w.r.t. ``x`` of the per-example objective to *ascend*, and that objective.

    ``labels=None`` uses the model's own prediction from the same forward pass (FGSM without label leaking).

    Untargeted: the cross-entropy of the labels (push away from them); targeted: minus the cross-entropy of
    the targets (pull towards them). The losses are summed, not averaged, so each example's gradient is
    independent of the batch size.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if labels is None:
        labels = logits.detach().argmax(1)
    loss = F.cross_entropy(logits, labels, reduction="none")
    objective = -loss if targeted else loss
    (grad,) = torch.autograd.grad(objective.sum(), x)
    return grad, objective.detach()


def _l2_normalise(v: Tensor) -> Tensor:
    norms = v.flatten(1).norm(dim=1).clamp_min(_TINY)
    return v / norms.view(-1, *([1] * (v.dim() - 1)))


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project perturbations onto the ε-ball: clamp (L∞) or rescale those longer than ε (L2)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1)
    scale = torch.where(norms > eps, eps / norms.clamp_min(_TINY), torch.ones_like(norms))
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """A uniformly random point of the ε-ball around ``x`` (L∞: uniform cube; L2: uniform in the ball), in
    [0, 1]."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    else:
        direction = _l2_normalise(torch.randn(x.shape, generator=generator, device=x.device))
        d = x[0].numel()
        radius = eps * torch.rand(x.shape[0], generator=generator, device=x.device) ** (1.0 / d)
        delta = direction * radius.view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0, 1)


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018, Eq. 2), L∞ or L2.

    Each step ascends the loss: L∞ ``x ← Π(x + α·sign(∇))`` (seed 001 §II-B, iterative FGSM); L2
    ``x ← Π(x + α·∇/‖∇‖₂)``; Π projects onto the ε-ball around the input and clips to [0, 1]. Targeted attacks
    descend the cross-entropy of the targets. ``random_start`` begins at a uniform random point of the ball;
    ``restarts`` repeats the attack and keeps per example the best run (a successful one, else the highest
    loss). Default ``alpha = 2.5·ε/steps`` (Madry et al.'s choice: enough to cross the ball and back).
    """

    name = "pgd"

    def __init__(self, eps: float, alpha: float | None = None, steps: int = 10, norm: str = "linf",
                 random_start: bool = True, restarts: int = 1, seed: int = 0, batch_size: int | None = None):
        super().__init__(batch_size)
        self.eps = check_nonnegative("eps", eps)
        self.steps = check_positive_int("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_nonnegative("alpha", alpha)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        self.random_start = bool(random_start)
        self.restarts = check_positive_int("restarts", restarts)
        self.seed = int(seed)

    def _labels(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor | None:
        return targets if targets is not None else y

    def _step(self, grad: Tensor) -> Tensor:
        return self.alpha * (grad.sign() if self.norm == "linf" else _l2_normalise(grad))

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        if self.eps == 0:
            return x
        labels = self._labels(model, x, y, targets)
        targeted = targets is not None
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x
        best_success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_objective = torch.full((x.shape[0],), -math.inf, device=x.device)
        for restart in range(self.restarts):
            x_adv = random_start(x, self.eps, self.norm, generator) if self.random_start else x
            for step in range(self.steps):
                grad, _ = loss_gradient(model, x_adv, labels, targeted)
                x_adv = (x + project(x_adv + self._step(grad) - x, self.eps, self.norm)).clamp(0, 1)
                self._info(f"restart {restart + 1}/{self.restarts} step {step + 1}/{self.steps}")
            if self.restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = model(x_adv)
                loss = F.cross_entropy(logits, labels, reduction="none")
                objective = -loss if targeted else loss
                success = logits.argmax(1) == labels if targeted else logits.argmax(1) != labels
            better = (success & ~best_success) | ((success == best_success) & (objective > best_objective))
            best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
            best_success |= success
            best_objective = torch.where(better, objective, best_objective)
        return best


class BIM(PGD):
    """Basic iterative method / iterative FGSM (Kurakin et al. 2016; seed 001 §II-B): PGD from the input
    itself,
    no random start, one run. ``norm="l2"`` takes normalised-gradient steps with L2 projection."""

    name = "bim"

    def __init__(self, eps: float, alpha: float | None = None, steps: int = 10, norm: str = "linf",
                 batch_size: int | None = None):
        super().__init__(eps, alpha, steps, norm, random_start=False, restarts=1, batch_size=batch_size)

    def __repr__(self) -> str:
        return (f"BIM(eps={self.eps!r}, alpha={self.alpha!r}, steps={self.steps!r}, norm={self.norm!r}, "
                f"batch_size={self.batch_size!r})")


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015; seed 001 Eq. 6): ``x* = clip(x + ε·sign(∇ₓJ))``.

    By default the loss uses the model's own prediction instead of the true label, which avoids label leaking
    (Kurakin et al. 2016, as seed 001 §IV does); ``use_true_labels=True`` uses ``y``. Targeted: one step down
    the cross-entropy of the target.
    """

    name = "fgsm"

    def __init__(self, eps: float, use_true_labels: bool = False, batch_size: int | None = None):
        super().__init__(eps, alpha=eps, steps=1, norm="linf", random_start=False, restarts=1,
                         batch_size=batch_size)
        self.use_true_labels = bool(use_true_labels)

    def _labels(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor | None:
        if targets is not None:
            return targets
        # None: the prediction is read off the forward pass of the gradient step itself (one pass, not two)
        return y if self.use_true_labels else None

    def __repr__(self) -> str:
        return (f"FGSM(eps={self.eps!r}, use_true_labels={self.use_true_labels!r}, "
                f"batch_size={self.batch_size!r})")
