"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): APGD with the cross-entropy or the DLR loss, and the targeted APGD-T, in L∞
and L2.

APGD is PGD without a step size to tune (§3): it starts at η = 2ε, takes momentum steps (§3.1)

    z⁽ᵏ⁺¹⁾ = P_S(x⁽ᵏ⁾ + η⁽ᵏ⁾ ∇f(x⁽ᵏ⁾))
    x⁽ᵏ⁺¹⁾ = P_S(x⁽ᵏ⁾ + α(z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)),   α = 0.75 (1 at the first step)

(∇ replaced by its sign in L∞ and by ∇/‖∇‖₂ in L2) and halves η at the checkpoints w_j = ⌈p_j·N_iter⌉,
p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), when (§3.2)

    1. Σ_{i=w_{j−1}}^{w_j−1} 1[f(x⁽ⁱ⁺¹⁾) > f(x⁽ⁱ⁾)] < ρ·(w_j − w_{j−1}),  ρ = 0.75, or
    2. η⁽ʷʲ⁻¹⁾ = η⁽ʷʲ⁾ and f_max⁽ʷʲ⁻¹⁾ = f_max⁽ʷʲ⁾ (the step was not halved and the best loss did not rise),

restarting then from the best point found. The schedule is the pure ``StepSizeSchedule`` below, so it can be
tested on a planted loss trajectory.

Unlike the reference code, an example leaves the batch as soon as it is misclassified (its adversarial is
final), so later iterations cost only the still-robust examples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import Attack, check_differentiable, check_norm, check_positive_int, check_seed, default_budget
from .gradient import _l2_normalise, _per_image

#: §3.2: the fraction of loss-increasing steps below which η is halved.
RHO = 0.75
#: §3.1: momentum weight α.
MOMENTUM = 0.75
LOSSES = ("ce", "dlr")
_TINY = 1e-12


# ---------------------------------------------------------------- losses (§4)

def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (§4): ``DLR(x, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``, with
    ``z_π1 ≥ z_π2 ≥ …`` the sorted logits; shift- and scale-invariant in the logits. Needs ≥ 3 classes."""
    if logits.shape[1] < 3:
        raise InputError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}; use loss='ce'")
    top = logits.topk(3, dim=1).values
    own = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, y.view(-1, 1), -torch.inf).amax(1)
    return -(own - other) / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted_loss(logits: Tensor, y: Tensor, targets: Tensor) -> Tensor:
    """Targeted DLR (§4): ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``. Needs ≥ 4 classes."""
    if logits.shape[1] < 4:
        raise InputError(f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}; "
                         "use loss='ce'")
    top = logits.topk(4, dim=1).values
    own = logits.gather(1, y.view(-1, 1)).squeeze(1)
    target = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    return -(own - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


# ---------------------------------------------------------------- step-size schedule (§3.2)

def checkpoints(n_iter: int) -> list[int]:
    """The iterations w_j (1-based, ascending) at which APGD checks its step size: w_j = ⌈p_j·N_iter⌉ with
    p₁ = 0.22 and window shrinking by 0.03·N_iter per checkpoint down to 0.06·N_iter (in whole iterations,
    at least one, as in the authors' code)."""
    check_positive_int("n_iter", n_iter)
    window = max(int(0.22 * n_iter), 1)
    shrink, smallest = max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    points, w = [], 0
    while w + window <= n_iter:
        w += window
        points.append(w)
        window = max(window - shrink, smallest)
    return points


class StepSizeSchedule:
    """APGD's step-size control (§3.2) as a small state machine over the observed losses, per example.

    ``observe(loss)`` takes f(x⁽ᵏ⁾) after iteration k = 1, 2, …; at a checkpoint it returns the boolean mask
    of examples whose step size it halved (they should restart from their best point), otherwise None.
    ``step`` holds the current η. ``keep(idx)`` drops examples that left the batch.
    """

    def __init__(self, n_iter: int, loss0: Tensor, step0: Tensor, rho: float = RHO):
        self.points = set(checkpoints(n_iter))
        self.rho = rho
        self.step = step0.clone()
        self.k = 0
        self.window = 0
        self.previous = loss0.clone()
        self.best = loss0.clone()
        self.best_at_check = loss0.clone()
        self.increases = torch.zeros_like(loss0, dtype=torch.long)
        self.reduced = torch.zeros_like(loss0, dtype=torch.bool)

    def keep(self, idx: Tensor) -> None:
        for name in ("step", "previous", "best", "best_at_check", "increases", "reduced"):
            setattr(self, name, getattr(self, name)[idx])

    def observe(self, loss: Tensor) -> Tensor | None:
        self.k += 1
        self.window += 1
        self.increases += loss > self.previous
        self.previous = loss.clone()
        self.best = torch.maximum(self.best, loss)
        if self.k not in self.points:
            return None
        stalled = self.increases < self.rho * self.window                          # condition 1
        stuck = ~self.reduced & (self.best <= self.best_at_check)                  # condition 2
        halve = stalled | stuck
        self.step = torch.where(halve, self.step / 2, self.step)
        self.reduced = halve
        self.best_at_check = self.best.clone()
        self.increases.zero_()
        self.window = 0
        return halve

    def restarted(self, mask: Tensor, loss: Tensor) -> None:
        """Examples in ``mask`` jumped back to their best point, whose loss is ``loss``."""
        self.previous = torch.where(mask, loss, self.previous)


# ---------------------------------------------------------------- the attack

class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020, Algorithm 1), L∞ or L2, with the cross-entropy or the DLR loss.

    Starts at a random point of the ε-ball's surface region (L∞: ``x + ε·t/‖t‖∞``, t uniform in [−1, 1]ᵈ;
    L2: ``x + ε·t/‖t‖₂``, t Gaussian), takes ``steps`` momentum steps with the §3.2 step-size schedule (see
    the module docstring), and keeps per example the first misclassifying iterate (untargeted) or the first
    that reaches the target (targeted); examples never broken get the highest-loss iterate. ``restarts``
    repeats the run, from a new random start, on the examples still unbroken. ``eot`` averages the gradient
    over that many forward/backward passes (expectation over transformation, for randomised models).

    Targeted (``targets=`` given): the loss is −CE of the target or the targeted DLR loss of ``APGDT``.

    Arguments:
        eps (float or Tensor): budget, one number or one per example (shape (N,)); default 8/255 under L∞,
            none under L2.
        norm (str): "linf" or "l2" (default "linf").
        steps (int): iterations N_iter per run (default 100).
        loss (str): "ce" or "dlr" (default "ce").
        restarts (int): runs on the still-robust examples (default 1).
        eot (int): gradient samples per step (default 1).
        seed (int): random-start seed (default 0).
        batch_size (int, optional): examples per chunk.

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = APGD(eps=8 / 255, loss="ce")(model, x, y)
        >>> result = APGD(eps=0.5, norm="l2", loss="dlr")(model, x, y)
    """

    name = "apgd"
    per_example = ("eps",)

    def __init__(self, eps: float | Tensor | None = None, norm: str = "linf", steps: int = 100, loss: str = "ce",
                 restarts: int = 1, eot: int = 1, seed: int = 0, batch_size: int | None = None):
        super().__init__(batch_size)
        self.norm = check_norm(norm)
        self.eps = default_budget(eps, norm)
        self.steps = check_positive_int("steps", steps)
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.restarts = check_positive_int("restarts", restarts)
        self.eot = check_positive_int("eot", eot)
        self.seed = check_seed(seed)

    # -- pieces shared with APGDT

    def _objective(self, logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        """Per-example loss to *ascend*."""
        if targets is None:
            return F.cross_entropy(logits, y, reduction="none") if self.loss == "ce" else dlr_loss(logits, y)
        if self.loss == "ce":
            return -F.cross_entropy(logits, targets, reduction="none")
        return dlr_targeted_loss(logits, y, targets)

    def _gradient(self, model: nn.Module, x: Tensor, y: Tensor,
                  targets: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(∇f, f, logits) at ``x``; with ``eot`` > 1, f and ∇f are averaged over that many passes."""
        grad, total = None, None
        for _ in range(self.eot):
            xg = x.detach().requires_grad_(True)
            logits = model(xg)
            check_differentiable(logits, type(self).__name__)
            loss = self._objective(logits, y, targets)
            (g,) = torch.autograd.grad(loss.sum(), xg)
            grad = g if grad is None else grad + g
            total = loss.detach() if total is None else total + loss.detach()
        if self.eot > 1:
            grad, total = grad / self.eot, total / self.eot
        return grad, total, logits.detach()

    def _project(self, x_new: Tensor, x: Tensor, eps: Tensor, box: tuple[Tensor, Tensor] | None) -> Tensor:
        if box is not None:                                   # L∞: the box [max(x−ε, 0), min(x+ε, 1)]
            return torch.minimum(torch.maximum(x_new, box[0]), box[1])
        delta = x_new - x
        norms = delta.flatten(1).norm(dim=1)
        scale = (eps / norms.clamp_min(_TINY)).clamp(max=1.0)
        return (x + delta * _per_image(scale, x)).clamp(0, 1)

    def _start(self, x: Tensor, eps: Tensor, generator: torch.Generator) -> Tensor:
        if self.norm == "linf":
            t = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
            t = t / _per_image(t.flatten(1).abs().amax(1).clamp_min(_TINY), t)
        else:
            t = _l2_normalise(torch.randn(x.shape, generator=generator, device=x.device))
        return (x + _per_image(eps, x) * t).clamp(0, 1)

    def _apgd(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None, eps: Tensor,
              generator: torch.Generator, success_of: str) -> tuple[Tensor, Tensor]:
        """One APGD run on a batch: (adversarial, broken mask). ``success_of``: "label" (argmax ≠ y) or
        "target" (argmax = targets)."""
        n = x.shape[0]
        out = x.clone()
        broken = torch.zeros(n, dtype=torch.bool, device=x.device)
        ids = torch.arange(n, device=x.device)

        def hits(logits: Tensor, yy: Tensor, tt: Tensor | None) -> Tensor:
            return logits.argmax(1) == tt if success_of == "target" else logits.argmax(1) != yy

        x_adv = self._start(x, eps, generator)
        grad, loss, logits = self._gradient(model, x_adv, y, targets)
        box = ((x - _per_image(eps, x)).clamp_min(0), (x + _per_image(eps, x)).clamp_max(1)) \
            if self.norm == "linf" else None
        x_prev = x_adv
        x_best, grad_best, loss_best = x_adv, grad, loss
        schedule = StepSizeSchedule(self.steps, loss, 2 * eps)
        for k in range(self.steps + 1):
            hit = hits(logits, y, targets)                    # of the iterate just evaluated
            if hit.any():                                     # finished examples leave the batch
                out[ids[hit]] = x_adv[hit]
                broken[ids[hit]] = True
                keep = (~hit).nonzero().squeeze(1)
                if keep.numel() == 0:
                    return out, broken
                ids, x, y, eps, x_adv, x_prev, grad, loss = (
                    t[keep] for t in (ids, x, y, eps, x_adv, x_prev, grad, loss))
                targets = targets[keep] if targets is not None else None
                box = (box[0][keep], box[1][keep]) if box is not None else None
                x_best, grad_best, loss_best = x_best[keep], grad_best[keep], loss_best[keep]
                schedule.keep(keep)
            with torch.no_grad():
                if k > 0:                                     # k = 0: the starting point, nothing to compare
                    better = loss > loss_best
                    x_best = torch.where(_per_image(better, x), x_adv, x_best)
                    grad_best = torch.where(_per_image(better, x), grad, grad_best)
                    loss_best = torch.where(better, loss, loss_best)
                    halved = schedule.observe(loss)
                    if halved is not None and halved.any():   # halve η and restart from the best point
                        m = _per_image(halved, x)
                        x_adv = torch.where(m, x_best, x_adv)
                        grad = torch.where(m, grad_best, grad)
                        schedule.restarted(halved, loss_best)
                if k == self.steps:
                    break
                momentum = MOMENTUM if k > 0 else 1.0
                eta = _per_image(schedule.step, x)
                direction = grad.sign() if self.norm == "linf" else _l2_normalise(grad)
                z = self._project(x_adv + eta * direction, x, eps, box)
                x_new = self._project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev),
                                      x, eps, box)
            x_prev, x_adv = x_adv, x_new
            grad, loss, logits = self._gradient(model, x_adv, y, targets)
            if self._reporting:
                self._info(f"step {k + 1}/{self.steps}, {x.shape[0]} left")
        out[ids] = x_best                                     # never broken: the highest-loss iterate
        return out, broken

    def _runs(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None, eps: Tensor,
              generator: torch.Generator, success_of: str, out: Tensor, broken: Tensor) -> None:
        """``restarts`` runs on the examples not yet broken, writing into ``out``/``broken`` in place."""
        for _ in range(self.restarts):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                return
            adv, hit = self._apgd(model, x[idx], y[idx], targets[idx] if targets is not None else None,
                                  eps[idx], generator, success_of)
            out[idx] = adv
            broken[idx] = hit

    def _eps(self, x: Tensor) -> Tensor:
        eps = self._per_example(self.eps, x)
        return eps if isinstance(eps, Tensor) else torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        eps = self._eps(x)
        out = x.clone()
        broken = eps == 0                                     # nothing to do for a zero budget
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        self._runs(model, x, y, targets, eps, generator, "label" if targets is None else "target", out, broken)
        return out


class APGDT(APGD):
    """APGD-T (Croce & Hein 2020, §4): targeted APGD with the targeted DLR loss against each of the
    ``n_targets`` classes the model ranks highest after the true one, in turn, on the examples not yet
    misclassified. Success is misclassification (untargeted robustness evaluation); passing ``targets=``
    runs one targeted APGD towards them instead.

    Arguments:
        eps (float or Tensor): budget (default 8/255 under L∞, none under L2). norm (str): "linf" or "l2".
        steps (int): iterations per target (default 100). n_targets (int): top classes to try (default 9).
        loss (str): "dlr" (default) or "ce". restarts (int): runs per target (default 1).
        eot (int): gradient samples per step. seed (int). batch_size (int, optional).

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = APGDT(eps=8 / 255, n_targets=9)(model, x, y)
    """

    name = "apgd-t"

    def __init__(self, eps: float | Tensor | None = None, norm: str = "linf", steps: int = 100, n_targets: int = 9,
                 loss: str = "dlr", restarts: int = 1, eot: int = 1, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(eps, norm, steps, loss, restarts, eot, seed, batch_size)
        self.n_targets = check_positive_int("n_targets", n_targets)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        if targets is not None:
            return super()._run(model, x, y, targets)
        eps = self._eps(x)
        out = x.clone()
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        with torch.no_grad():
            logits = model(x)
        broken = (eps == 0) | (logits.argmax(1) != y)
        ranked = logits.argsort(1, descending=True)
        for i in range(1, min(self.n_targets, logits.shape[1] - 1) + 1):
            # the (i+1)-th highest class of the clean logits; y is the highest for every unbroken example
            self._runs(model, x, y, ranked[:, i], eps, generator, "label", out, broken)
            if broken.all():
                break
        return out


__all__ = ["APGD", "APGDT", "StepSizeSchedule", "checkpoints", "dlr_loss", "dlr_targeted_loss"]
