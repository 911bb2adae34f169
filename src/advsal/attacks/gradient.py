"""Gradient attacks on the cross-entropy loss: FGSM, BIM (iterative FGSM) and PGD, in L∞ and L2.

One loop serves all three: FGSM is one BIM step of size ε; PGD is BIM with a random start inside the ε-ball
and restarts that keep, per example, the best result (Madry et al. 2018).

``eps`` (and ``alpha``) may be one number or a per-example tensor of shape (N,): each image is then attacked
within its own budget (projection, random start and the default step size all broadcast per example).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, check_budget, check_differentiable, check_norm, check_positive_int, check_seed

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
    check_differentiable(logits, "a gradient attack")
    if labels is None:
        labels = logits.detach().argmax(1)
    loss = F.cross_entropy(logits, labels, reduction="none")
    objective = -loss if targeted else loss
    (grad,) = torch.autograd.grad(objective.sum(), x)
    return grad, objective.detach()


def _per_image(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A float as is; a per-example (N,) tensor viewed as (N, 1, 1, ...) to broadcast against ``like``."""
    return value.view(-1, *([1] * (like.dim() - 1))) if isinstance(value, Tensor) else value


def _rows(value: float | Tensor, idx: Tensor) -> float | Tensor:
    """The entries of a per-example parameter for the examples ``idx`` (a float is shared by all)."""
    return value[idx] if isinstance(value, Tensor) else value


def _l2_normalise(v: Tensor) -> Tensor:
    norms = v.flatten(1).norm(dim=1).clamp_min(_TINY)
    return v / norms.view(-1, *([1] * (v.dim() - 1)))


def project(delta: Tensor, eps: float | Tensor, norm: str) -> Tensor:
    """Project perturbations onto the ε-ball: clamp (L∞) or rescale those longer than ε (L2). ``eps`` is a
    number or a per-example tensor of shape (N,)."""
    if norm == "linf":
        if isinstance(eps, Tensor):
            e = _per_image(eps, delta)
            return torch.minimum(torch.maximum(delta, -e), e)
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1)
    scale = torch.where(norms > eps, eps / norms.clamp_min(_TINY), torch.ones_like(norms))
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def random_start(x: Tensor, eps: float | Tensor, norm: str, generator: torch.Generator) -> Tensor:
    """A uniformly random point of the ε-ball around ``x`` (L∞: uniform cube; L2: uniform in the ball), in
    [0, 1]. ``eps`` is a number or a per-example tensor of shape (N,)."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * _per_image(eps, x)
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
    ``restarts`` repeats the attack on the examples not yet broken and keeps per example the best run (a
    successful one, else the highest loss). Default ``alpha = 2.5·ε/steps`` (Madry et al.'s choice: enough to
    cross the ball and back), resolved when the attack runs.

    Arguments:
        eps (float or Tensor): budget, one number or one per example (shape (N,)).
        alpha (float or Tensor, optional): step size (default 2.5·ε/steps, per example with ε).
        steps (int): gradient steps per run (default 10).
        norm (str): "linf" or "l2" (default "linf").
        random_start (bool): start at a uniform random point of the ball (default True).
        restarts (int): runs, each on the examples not yet broken (default 1).
        seed (int): random-start seed (default 0).
        batch_size (int, optional): examples per chunk.

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = PGD(eps=8 / 255, steps=10)(model, x, y)
        >>> result = PGD(eps=torch.full((len(x),), 0.1), norm="linf")(model, x, y)  # per-example budget
    """

    name = "pgd"
    per_example = ("eps", "alpha")

    def __init__(self, eps: float | Tensor, alpha: float | Tensor | None = None, steps: int = 10,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(batch_size)
        self.norm = check_norm(norm)
        self.eps = check_budget("eps", eps, norm)
        self.steps = check_positive_int("steps", steps)
        self.alpha = None if alpha is None else check_budget("alpha", alpha)
        self.random_start = bool(random_start)
        self.restarts = check_positive_int("restarts", restarts)
        self.seed = check_seed(seed)

    def _labels(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor | None:
        return targets if targets is not None else y

    def _step_size(self, eps: float | Tensor, x: Tensor) -> float | Tensor:
        return 2.5 * eps / self.steps if self.alpha is None else self._per_example(self.alpha, x)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        eps = self._per_example(self.eps, x)
        if not (eps > 0).any() if isinstance(eps, Tensor) else eps == 0:
            return x
        labels = self._labels(model, x, y, targets)
        targeted = targets is not None
        alpha = self._step_size(eps, x)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        if self.restarts == 1:
            return self._ascend(model, x, labels, targeted, eps, alpha, generator, 0)
        best = x.clone()
        best_success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_objective = torch.full((x.shape[0],), -math.inf, device=x.device)
        for restart in range(self.restarts):
            idx = (~best_success).nonzero().squeeze(1)  # later runs only attack what is still unbroken
            if idx.numel() == 0:
                break
            xi, li = x[idx], labels[idx]
            x_adv = self._ascend(model, xi, li, targeted, _rows(eps, idx), _rows(alpha, idx), generator, restart)
            with torch.no_grad():
                logits = model(x_adv)
                loss = F.cross_entropy(logits, li, reduction="none")
                objective = -loss if targeted else loss
                success = logits.argmax(1) == li if targeted else logits.argmax(1) != li
            better = success | (objective > best_objective[idx])
            keep = idx[better]
            best[keep] = x_adv[better]
            best_success[keep] = success[better]
            best_objective[keep] = objective[better]
        return best

    def _box(self, x: Tensor, eps: float | Tensor) -> tuple[Tensor | float, Tensor | float]:
        """L∞: the bounds [max(x−ε, 0), min(x+ε, 1)] that project onto the ε-ball and the image range at once."""
        return (x - _per_image(eps, x)).clamp_min(0), (x + _per_image(eps, x)).clamp_max(1)

    def _ascend(self, model: nn.Module, x: Tensor, labels: Tensor | None, targeted: bool, eps: float | Tensor,
                alpha: float | Tensor, generator: torch.Generator, restart: int) -> Tensor:
        """One run of ``steps`` projected steps from the input (or a random start) on a batch."""
        x_adv = random_start(x, eps, self.norm, generator) if self.random_start else x
        a = _per_image(alpha, x)
        lo, hi = self._box(x, eps) if self.norm == "linf" else (None, None)
        shape = (-1, *([1] * (x.dim() - 1)))
        for step in range(self.steps):
            grad, _ = loss_gradient(model, x_adv, labels, targeted)
            with torch.no_grad():
                if self.norm == "linf":
                    # Π_ε then clip to [0, 1] in one pass: the box [max(x−ε, 0), min(x+ε, 1)]; in place on the
                    # fresh gradient (a·sign + x_adv is bitwise x_adv + a·sign: IEEE addition commutes)
                    x_adv = grad.sign_().mul_(a).add_(x_adv).clamp_(lo, hi)
                else:
                    # x + Π_ε(x_adv + α·∇/‖∇‖ − x), clipped: the same operations in the same order as
                    # project(), done in place on the fresh gradient (no per-step temporaries)
                    delta = grad.div_(grad.flatten(1).norm(dim=1).clamp_min(_TINY).view(shape)).mul_(a)
                    delta = delta.add_(x_adv).sub_(x)
                    norms = delta.flatten(1).norm(dim=1)
                    delta.mul_(torch.where(norms > eps, eps / norms.clamp_min(_TINY), 1.0).view(shape))
                    x_adv = delta.add_(x).clamp_(0, 1)
            if self._reporting:
                self._info(f"restart {restart + 1}/{self.restarts} step {step + 1}/{self.steps}")
        return x_adv


class BIM(PGD):
    """Basic iterative method / iterative FGSM (Kurakin et al. 2016; seed 001 §II-B): PGD from the input
    itself, no random start, one run. ``norm="l2"`` takes normalised-gradient steps with L2 projection.

    Arguments:
        eps (float or Tensor): budget, one number or one per example (shape (N,)).
        alpha (float or Tensor, optional): step size (default 2.5·ε/steps).
        steps (int): default 10. norm (str): "linf" or "l2". batch_size (int, optional).

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = BIM(eps=0.1, steps=10)(model, x, y)
    """

    name = "bim"

    def __init__(self, eps: float | Tensor, alpha: float | Tensor | None = None, steps: int = 10,
                 norm: str = "linf", batch_size: int | None = None):
        super().__init__(eps, alpha, steps, norm, random_start=False, restarts=1, batch_size=batch_size)

    def __repr__(self) -> str:
        return (f"BIM(eps={self.eps!r}, alpha={self.alpha!r}, steps={self.steps!r}, norm={self.norm!r}, "
                f"batch_size={self.batch_size!r})")


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015; seed 001 Eq. 6): ``x* = clip(x + ε·sign(∇ₓJ))``.

    By default the loss uses the model's own prediction instead of the true label, which avoids label leaking
    (Kurakin et al. 2016, as seed 001 §IV does); ``use_true_labels=True`` uses ``y``. Targeted: one step down
    the cross-entropy of the target.

    Arguments:
        eps (float or Tensor): budget (= step size), one number or one per example (shape (N,)).
        use_true_labels (bool): default False. batch_size (int, optional).

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = FGSM(eps=0.3)(model, x, y)
    """

    name = "fgsm"

    def __init__(self, eps: float | Tensor, use_true_labels: bool = False, batch_size: int | None = None):
        super().__init__(eps, alpha=None, steps=1, norm="linf", random_start=False, restarts=1,
                         batch_size=batch_size)
        self.use_true_labels = bool(use_true_labels)

    def _step_size(self, eps: float | Tensor, x: Tensor) -> float | Tensor:
        return eps  # one step of the full budget

    def _box(self, x: Tensor, eps: float | Tensor) -> tuple[float, float]:
        return 0.0, 1.0  # one ε step from x never leaves the ε-ball: only the image range clips

    def _labels(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor | None:
        if targets is not None:
            return targets
        # None: the prediction is read off the forward pass of the gradient step itself (one pass, not two)
        return y if self.use_true_labels else None

    def __repr__(self) -> str:
        return (f"FGSM(eps={self.eps!r}, use_true_labels={self.use_true_labels!r}, "
                f"batch_size={self.batch_size!r})")
