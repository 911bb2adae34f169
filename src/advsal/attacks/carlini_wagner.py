"""Carlini & Wagner's L2 attack (Carlini & Wagner 2017, §V-A; seed 001 Eq. 9)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import Attack, check_nonnegative, check_positive_int

_BOX = 1 - 1e-6  # keeps atanh finite for pixels at exactly 0 or 1 (moves them by < L0_TOLERANCE)


class CarliniWagnerL2(Attack):
    """C&W L2: minimise ``‖x' − x‖₂² + c·f(x')`` over ``x' = ½(tanh(w) + 1)`` (the change of variables that
    keeps ``x'`` in the box, §V-A) with Adam, where ``f`` is their Eq. 6 objective on the logits ``Z``:

    - targeted, target ``t``: ``f = max(max_{i≠t} Z_i − Z_t, −κ)``;
    - untargeted, label ``y``: ``f = max(Z_y − max_{i≠y} Z_i, −κ)``.

    ``c`` is found per example by binary search (``binary_search_steps`` rounds of ``steps`` Adam steps,
    starting at ``c``; ×10 while no success has been found, bisection once one has). The smallest-L2
    successful adversarial over all rounds is returned; examples never broken are returned unchanged. As in
    the authors' code, a round stops early (``abort_early``) when the loss has not dropped by 0.01% over
    ``steps // 10`` steps. Success during the search means a margin above κ (``Z_t − max_{i≠t} Z_i > κ``,
    resp. ``max_{i≠y} Z_i − Z_y > κ``).

    Per-image step sizes (``adaptive=True``, the default): a pixel at 0 or 1 starts at ``w ≈ ±7.3`` and Adam
    moves ``w`` by about ``lr`` per step, so with a fixed ``lr=0.01`` 100 steps cannot change the saturated
    pixels of MNIST-like images at all. Each image therefore carries its own Adam step size: multiplied by
    ``growth`` after a step that lowered its loss (up to ``max_lr``), halved after one that raised it — the
    step size follows each image's loss landscape instead of depending on a lucky ``lr``. ``adaptive=False``
    is the plain fixed-``lr`` Adam of the paper.

    Arguments:
        c (float): initial constant (default 1). kappa (float): confidence κ (default 0).
        steps (int): Adam steps per binary-search round (default 100).
        binary_search_steps (int): rounds (default 5). lr (float): initial step size (default 0.1).
        abort_early (bool): default True. adaptive (bool): per-image step sizes (default True).
        growth (float): step-size factor after an improving step (default 1.2). max_lr (float): default 1.0.
        batch_size (int, optional).

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = CarliniWagnerL2(c=1.0, steps=100, binary_search_steps=5, lr=0.01)(model, x, y)
    """

    name = "cw"

    def __init__(self, c: float = 1.0, kappa: float = 0.0, steps: int = 100, binary_search_steps: int = 5,
                 lr: float = 0.1, abort_early: bool = True, adaptive: bool = True, growth: float = 1.2,
                 max_lr: float = 1.0, batch_size: int | None = None):
        super().__init__(batch_size)
        self.c = check_nonnegative("c", c)
        if self.c == 0:
            raise InputError("c must be > 0 (it weighs the misclassification term); the authors start at "
                             "1e-3")
        self.kappa = check_nonnegative("kappa", kappa)
        self.steps = check_positive_int("steps", steps)
        self.binary_search_steps = check_positive_int("binary_search_steps", binary_search_steps)
        self.lr = check_nonnegative("lr", lr)
        if self.lr == 0:
            raise InputError("lr must be > 0")
        self.abort_early = bool(abort_early)
        self.adaptive = bool(adaptive)
        if not growth >= 1:
            raise InputError(f"growth (step-size factor after an improving step) must be ≥ 1, got {growth!r}")
        self.growth = float(growth)
        self.max_lr = check_nonnegative("max_lr", max_lr)

    def _margin(self, logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
        """How far the example is past the boundary: > 0 means adversarial (before κ)."""
        own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
        other = logits.scatter(1, labels.view(-1, 1), -torch.inf).amax(1)
        return own - other if targeted else other - own

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        targeted = targets is not None
        labels = targets if targeted else y
        n = x.shape[0]
        dims = tuple(range(1, x.dim()))
        w0 = torch.atanh((2 * x - 1) * _BOX)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), 1e10, device=x.device)
        const = torch.full((n,), self.c, device=x.device)
        best_l2 = torch.full((n,), torch.inf, device=x.device)
        best_adv = x.clone()
        view = (-1,) + (1,) * (x.dim() - 1)
        beta1, beta2 = 0.9, 0.999
        max_lr = max(self.max_lr, self.lr)
        for round_ in range(self.binary_search_steps):
            w = w0.clone()
            m, v = torch.zeros_like(w), torch.zeros_like(w)          # Adam's moments, per element
            lr = torch.full((n,), self.lr, device=x.device)
            last = torch.full((n,), torch.inf, device=x.device)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = torch.inf
            check_every = max(self.steps // 10, 1)
            for step in range(self.steps):
                w.requires_grad_(True)
                x_adv = (torch.tanh(w) + 1) / 2
                l2sq = (x_adv - x).pow(2).sum(dims)
                logits = model(x_adv)
                margin = self._margin(logits, labels, targeted)
                loss_each = l2sq + const * (-margin).clamp_min(-self.kappa)
                (grad,) = torch.autograd.grad(loss_each.sum(), w)
                with torch.no_grad():  # bookkeeping on the iterate whose loss was just evaluated
                    w = w.detach()
                    loss_each, l2sq, x_adv = loss_each.detach(), l2sq.detach(), x_adv.detach()
                    success = margin.detach() > self.kappa
                    improved = success & (l2sq < best_l2)
                    best_l2 = torch.where(improved, l2sq, best_l2)
                    best_adv = torch.where(improved.view(view), x_adv, best_adv)
                    found |= success
                    if self.adaptive:
                        lr = torch.where(loss_each < last, (lr * self.growth).clamp(max=max_lr), lr / 2)
                        last = loss_each
                    t = step + 1
                    m.mul_(beta1).add_(grad, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denom = (v / (1 - beta2 ** t)).sqrt_().add_(1e-8)
                    w = w - (lr / (1 - beta1 ** t)).view(view) * m / denom
                if self.abort_early and (step + 1) % check_every == 0:
                    total = float(loss_each.sum())
                    if total > previous * 0.9999:
                        break
                    previous = total
                if self._reporting:
                    self._info(f"round {round_ + 1}/{self.binary_search_steps} step {step + 1}/{self.steps}")
            # per-example binary search over c (the authors' schedule)
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            searching = upper < 1e9
            const = torch.where(searching, (lower + upper) / 2, torch.where(found, const, const * 10))
        return best_adv
