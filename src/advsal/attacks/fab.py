"""FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
attack"), the targeted version AutoAttack runs (§3 of the AutoAttack paper), in L∞ and L2.

FAB looks for the smallest perturbation that changes the class. Each iteration linearises the decision boundary
between the true class y and a target class t at the current iterate x⁽ⁱ⁾ (§3.1),

    f(z) = z_y − z_t ≈ f(x⁽ⁱ⁾) + ⟨∇f(x⁽ⁱ⁾), z − x⁽ⁱ⁾⟩ = 0,

projects both x⁽ⁱ⁾ and the original x_orig onto that hyperplane within the box [0, 1]ᵈ (the minimal Lp step
with ⟨w, δ⟩ = c and 0 ≤ p + δ ≤ 1: ``boundary_projection``), and moves to a convex combination of the two
extrapolated projections (§3.2, Eq. 9)

    x⁽ⁱ⁺¹⁾ = P_[0,1]((1 − α)(x⁽ⁱ⁾ + η δ⁽ⁱ⁾) + α(x_orig + η δ_orig⁽ⁱ⁾)),
    α = min(‖δ⁽ⁱ⁾‖ / (‖δ⁽ⁱ⁾‖ + ‖δ_orig⁽ⁱ⁾‖), α_max),

with η = 1.05 (overshoot past the boundary) and α_max = 0.1 (bias towards the original point). Whenever an
iterate is misclassified it is kept if it is the closest adversarial so far and then pulled back towards the
original point, x⁽ⁱ⁺¹⁾ ← x_orig + β (x⁽ⁱ⁺¹⁾ − x_orig), β = 0.9 (§3.3). Restarts after the first start from a
random point at radius ½·min(best norm so far, ε) (§3.4). A final search (the authors' code, 3 steps) shrinks
the best adversarial along its segment to x_orig by regula falsi on the linearly interpolated margin.

The targeted version linearises only the boundary to one target, the 2nd, 3rd, …, (n_targets+1)-th class of
the clean logits in turn — one backward pass per iteration instead of the full Jacobian.

With a budget ``eps`` an example is done (and leaves the batch) as soon as it has an adversarial within ε, and
examples without one are returned unchanged, as AutoAttack counts them; with ``eps=None`` every iteration runs
and the closest adversarial found is returned (a minimum-norm attack).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import (
    Attack,
    check_budget,
    check_differentiable,
    check_nonnegative,
    check_norm,
    check_positive_int,
    check_seed,
)
from .gradient import _per_image

_TINY = 1e-12
#: The final search steps this fraction of the segment past the regula-falsi root.
SEARCH_OVERSHOOT = 1e-3


# ---------------------------------------------------------------- the projection (§3.1)

def boundary_projection(p: Tensor, w: Tensor, c: Tensor, norm: str) -> Tensor:
    """The minimal-norm step onto a hyperplane inside the box: per row i the δ of least ‖δ‖ (L∞ or L2) with
    ``⟨w_i, δ⟩ = c_i`` and ``0 ≤ p_i + δ ≤ 1``. Where the box makes that impossible, the δ of the box that
    gets closest (every coordinate with w ≠ 0 moved to the edge the hyperplane lies towards).

    p, w: (N, D); c: (N,). Exact, by sorting: with u_j the room coordinate j has in the direction of
    sign(w_j c), the best step of size s gives ⟨w, δ(s)⟩ = Σ_j |w_j| min(k_j s, u_j) (k_j = 1 in L∞, |w_j| in
    L2: δ_j ∝ w_j by the KKT conditions), piecewise linear and increasing in s; its breakpoints u_j / k_j are
    sorted and the segment holding |c| is solved in closed form.
    """
    check_norm(norm)
    sign = torch.where(c < 0, -1.0, 1.0).to(p.dtype)
    ws = w * sign[:, None]                                  # now ⟨ws, δ⟩ = |c| ≥ 0
    aw = ws.abs()
    room = torch.where(ws > 0, 1 - p, p).clamp_min(0) * (aw > 0)
    if norm == "linf":
        breaks, slope = room, aw
    else:
        breaks = torch.where(aw > 0, room / aw.clamp_min(_TINY), torch.finfo(p.dtype).max)
        slope = aw * aw
    breaks, order = breaks.sort(1)
    full = (aw * room).gather(1, order)                     # what coordinate j gives once saturated
    slope = slope.gather(1, order)
    before = full.cumsum(1) - full                          # Σ_{j<k} saturated contributions
    after = slope.flip(1).cumsum(1).flip(1)                 # Σ_{j≥k} slopes
    need = c.abs()[:, None]
    reached = before + breaks * after >= need               # ⟨w, δ(s_k)⟩ ≥ |c|
    feasible = reached.any(1)
    k = reached.int().argmax(1, keepdim=True)               # first breakpoint that reaches |c|
    s = ((need - before.gather(1, k)) / after.gather(1, k).clamp_min(_TINY)).squeeze(1).clamp_min(0)
    s = torch.where(feasible, s, torch.inf)[:, None]
    if norm == "linf":
        magnitude = torch.minimum(s, room)
    else:                                                   # s may be inf (infeasible): inf · 0 is nan
        magnitude = torch.where(aw > 0, torch.minimum(s * aw, room), torch.zeros_like(room))
    return torch.sign(ws) * magnitude


def _norm(delta: Tensor, norm: str) -> Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


# ---------------------------------------------------------------- the attack

class FABT(Attack):
    """FAB-T (Croce & Hein 2020): the targeted fast adaptive boundary attack, L∞ or L2 (see the module
    docstring), against each of the ``n_targets`` classes the model ranks highest after the true one, in turn.
    Success is misclassification (untargeted robustness evaluation, as AutoAttack uses it). Passing
    ``targets=`` runs towards the given classes instead and succeeds when they are reached; the boundary
    linearised is then z_j = z_t with j the highest-ranked other class at the current iterate (y at the start).

    Arguments:
        eps (float, Tensor or None): budget, one number or one per example (shape (N,)); an example with no
            adversarial within it is returned unchanged. None: no budget, the closest adversarial found is
            returned (default None).
        norm (str): "linf" or "l2" (default "linf").
        steps (int): iterations per target and restart (default 100).
        n_targets (int): top classes to try (default 9).
        restarts (int): runs per target; all but the first from a random start (default 1).
        alpha_max (float): largest weight of the original point, α_max (default 0.1).
        eta (float): overshoot η of the projections (default 1.05).
        beta (float): pull-back β towards the original point after a success (default 0.9).
        final_search (int): regula-falsi steps shrinking each adversarial towards x (default 3; 0: none).
        seed (int): random-start seed (default 0).
        batch_size (int, optional): examples per chunk.

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult``.

    Examples::
        >>> result = FABT(eps=8 / 255)(model, x, y)            # AutoAttack's FAB-T
        >>> result = FABT(norm="l2")(model, x, y)              # minimal L2 adversarials: result.l2
    """

    name = "fab-t"
    per_example = ("eps",)

    def __init__(self, eps: float | Tensor | None = None, norm: str = "linf", steps: int = 100,
                 n_targets: int = 9, restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9, final_search: int = 3, seed: int = 0, batch_size: int | None = None):
        super().__init__(batch_size)
        self.norm = check_norm(norm)
        self.eps = None if eps is None else check_budget("eps", eps, norm)
        self.steps = check_positive_int("steps", steps)
        self.n_targets = check_positive_int("n_targets", n_targets)
        self.restarts = check_positive_int("restarts", restarts)
        self.alpha_max = check_nonnegative("alpha_max", alpha_max)
        if self.alpha_max > 1:
            raise InputError(f"alpha_max is a convex weight in [0, 1], got {alpha_max!r} (the paper uses 0.1)")
        self.eta = check_nonnegative("eta", eta)
        if self.eta < 1:
            raise InputError(f"eta is the overshoot past the linearised boundary and must be ≥ 1, got {eta!r} (the "
                             "paper uses 1.05)")
        self.beta = check_nonnegative("beta", beta)
        if self.beta > 1:
            raise InputError(f"beta pulls an adversarial back towards x and must be in [0, 1], got {beta!r} "
                             "(the paper uses 0.9)")
        self.final_search = check_positive_int("final_search", final_search, minimum=0)
        self.seed = check_seed(seed)

    # -- one batched FAB run (Algorithm 1) towards fixed targets

    @staticmethod
    def _boundary(logits: Tensor, y: Tensor, t: Tensor, to_target: bool) -> Tensor:
        """f = z_y − z_t, whose zero set FAB linearises; reaching a given target, z_j − z_t with j the class
        ranked first among the others (the one in the way)."""
        own = logits.scatter(1, t[:, None], -torch.inf).amax(1) if to_target else logits.gather(1, y[:, None])[:, 0]
        return own - logits.gather(1, t[:, None])[:, 0]

    def _margin_gradient(self, model: nn.Module, x: Tensor, y: Tensor, t: Tensor,
                         to_target: bool) -> tuple[Tensor, Tensor]:
        """(f, ∇f) at ``x``: one forward and one backward pass."""
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        check_differentiable(logits, "FAB")
        f = self._boundary(logits, y, t, to_target)
        (grad,) = torch.autograd.grad(f.sum(), xg)
        return f.detach(), grad

    def _hits(self, logits: Tensor, y: Tensor, t: Tensor, to_target: bool) -> Tensor:
        return logits.argmax(1) == t if to_target else logits.argmax(1) != y

    def _fab(self, model: nn.Module, x0: Tensor, y: Tensor, t: Tensor, eps: Tensor, start: Tensor,
             to_target: bool, best: Tensor, best_norm: Tensor) -> None:
        """One run from ``start``; writes closer adversarials into ``best``/``best_norm`` (in place). With a
        finite ε an example leaves once it has an adversarial within it."""
        ids = torch.arange(x0.shape[0], device=x0.device)
        budgeted = torch.isfinite(eps)
        x1 = start.detach()
        xg = x1.clone().requires_grad_(True)
        logits = model(xg)
        check_differentiable(logits, "FAB")
        for k in range(self.steps + 1):
            with torch.no_grad():
                hit = self._hits(logits.detach(), y, t, to_target)
                dist = _norm(x1 - x0, self.norm)
                closer = hit & (dist < best_norm[ids])
                if closer.any():
                    best[ids[closer]] = x1[closer]
                    best_norm[ids[closer]] = dist[closer]
                done = hit & budgeted & (best_norm[ids] <= eps)   # within the budget: nothing left to do
            if k == self.steps or done.all():
                return
            # f and ∇f at the next point of each row: the graph's for rows that stay where they are, a new
            # pass for rows pulled back towards x0 (§3.3) — or one new pass for all when that is cheaper
            pulled = hit & ~done
            keep = ~done
            n, n_keep, n_pulled = len(ids), int(keep.sum()), int(pulled.sum())
            f = self._boundary(logits, y, t, to_target)
            with torch.no_grad():
                x1 = torch.where(_per_image(pulled, x1), x0 + self.beta * (x1 - x0), x1)
            if 2 * n + 3 * n_pulled <= 3 * n_keep:             # backward ≈ 2 forwards
                (grad,) = torch.autograd.grad(f.sum(), xg)
                f = f.detach()
                if n_pulled:
                    f_p, g_p = self._margin_gradient(model, x1[pulled], y[pulled], t[pulled], to_target)
                    f, grad = f.clone(), grad.clone()
                    f[pulled], grad[pulled] = f_p, g_p
                sel = keep.nonzero().squeeze(1)
                ids, x0, x1, y, t, eps, budgeted, f, grad = (
                    v[sel] for v in (ids, x0, x1, y, t, eps, budgeted, f, grad))
            else:
                sel = keep.nonzero().squeeze(1)
                ids, x0, x1, y, t, eps, budgeted = (v[sel] for v in (ids, x0, x1, y, t, eps, budgeted))
                f, grad = self._margin_gradient(model, x1, y, t, to_target)
            with torch.no_grad():
                x1 = self._step(x0, x1, f, grad)
            xg = x1.clone().requires_grad_(True)
            logits = model(xg)
            if self._reporting:
                self._info(f"step {k + 1}/{self.steps}, {len(ids)} left")

    def _step(self, x0: Tensor, x1: Tensor, f: Tensor, grad: Tensor) -> Tensor:
        """§3.2: project x⁽ⁱ⁾ and x_orig onto the linearised boundary ⟨∇f, z⟩ = ⟨∇f, x⁽ⁱ⁾⟩ − f and combine."""
        n = x1.shape[0]
        w = grad.flatten(1)
        p1, p0 = x1.flatten(1), x0.flatten(1)
        c1 = -f                                                 # ⟨w, δ⟩ needed from x⁽ⁱ⁾
        c0 = (w * (p1 - p0)).sum(1) - f                         # … and from x_orig
        d = boundary_projection(torch.cat((p1, p0)), torch.cat((w, w)), torch.cat((c1, c0)), self.norm)
        size = _norm(d, self.norm).clamp_min(1e-8)
        a1, a0 = size[:n], size[n:]
        alpha = (a1 / (a1 + a0)).clamp(0, self.alpha_max)[:, None]
        moved = (1 - alpha) * (p1 + self.eta * d[:n]) + alpha * (p0 + self.eta * d[n:])
        return moved.clamp(0, 1).view_as(x1)

    # -- restarts, targets, final search

    def _random_start(self, x0: Tensor, radius: Tensor, generator: torch.Generator) -> Tensor:
        """§3.4: x_orig + ½·radius·t/‖t‖ (L∞: t uniform in [−1, 1]ᵈ; L2: t Gaussian), in the box."""
        if self.norm == "linf":
            t = torch.rand(x0.shape, generator=generator, device=x0.device) * 2 - 1
        else:
            t = torch.randn(x0.shape, generator=generator, device=x0.device)
        t = t / _per_image(_norm(t, self.norm).clamp_min(_TINY), t)
        return (x0 + 0.5 * _per_image(radius, x0) * t).clamp(0, 1)

    def _runs(self, model: nn.Module, x: Tensor, y: Tensor, t: Tensor, eps: Tensor, to_target: bool,
              generator: torch.Generator, best: Tensor, best_norm: Tensor) -> None:
        for r in range(self.restarts):
            todo = (best_norm > 0) & ((best_norm > eps) | ~torch.isfinite(eps))   # budget: those not yet done
            if r > 0:
                radius = torch.minimum(best_norm, eps)
                todo &= torch.isfinite(radius)                       # nothing to scale a random start by
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            start = x[idx] if r == 0 else self._random_start(x[idx], radius[idx], generator)
            sub, sub_norm = best[idx].clone(), best_norm[idx].clone()
            self._fab(model, x[idx], y[idx], t[idx], eps[idx], start, to_target, sub, sub_norm)
            best[idx], best_norm[idx] = sub, sub_norm

    def _search(self, model: nn.Module, x: Tensor, adv: Tensor, y: Tensor, t: Tensor, to_target: bool) -> Tensor:
        """The final search: ``final_search`` regula-falsi steps on the segment [x, adv] towards the closest
        point where the success margin changes sign; returns adversarials no farther from x than ``adv``."""
        def margin(logits: Tensor) -> Tensor:                   # > 0: not (yet) successful
            if to_target:
                own = logits.gather(1, t[:, None]).squeeze(1)
                return logits.scatter(1, t[:, None], -torch.inf).amax(1) - own
            own = logits.gather(1, y[:, None]).squeeze(1)
            return own - logits.scatter(1, y[:, None], -torch.inf).amax(1)

        lo, hi = x, adv
        m_lo, m_hi = margin(model(lo)), margin(model(hi))
        for _ in range(self.final_search):
            s = m_lo / (m_lo - m_hi)
            # a hair past the interpolated root, so that an (almost) linear margin lands on the far side
            s = torch.where((s >= 0) & (s <= 1), (s + SEARCH_OVERSHOOT).clamp(max=1), torch.ones_like(s))
            mid = lo + _per_image(s, lo) * (hi - lo)
            m_mid = margin(model(mid))
            ok = m_mid < 0                                      # strictly: the argmax agrees
            hi = torch.where(_per_image(ok, hi), mid, hi)
            m_hi = torch.where(ok, m_mid, m_hi)
            lo = torch.where(_per_image(ok, lo), lo, mid)
            m_lo = torch.where(ok, m_lo, m_mid)
        return hi

    def _eps(self, x: Tensor) -> Tensor:
        if self.eps is None:
            return torch.full((x.shape[0],), math.inf, device=x.device, dtype=x.dtype)
        eps = self._per_example(self.eps, x)
        return eps if isinstance(eps, Tensor) else torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        eps = self._eps(x)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x.clone()
        best_norm = torch.full_like(eps, math.inf)
        with torch.no_grad():
            logits = model(x)
        to_target = targets is not None
        if to_target:
            self._runs(model, x, y, targets, eps, True, generator, best, best_norm)
            chosen = targets
        else:
            best_norm[logits.argmax(1) != y] = 0.0                  # misclassified already: x itself
            ranked = logits.argsort(1, descending=True)
            chosen = ranked[:, 1]
            for i in range(1, min(self.n_targets, logits.shape[1] - 1) + 1):
                # the (i+1)-th class of the clean logits (y is the first for every example still to do)
                before = best_norm.clone()
                self._runs(model, x, y, ranked[:, i], eps, False, generator, best, best_norm)
                chosen = torch.where(best_norm < before, ranked[:, i], chosen)
                if (torch.isfinite(eps) & (best_norm <= eps)).all():
                    break
        found = torch.isfinite(best_norm) & (best_norm > 0)
        if self.final_search and found.any():
            idx = found.nonzero().squeeze(1)
            with torch.no_grad():
                best[idx] = self._search(model, x[idx], best[idx], y[idx], chosen[idx], to_target)
            best_norm[idx] = _norm(best[idx] - x[idx], self.norm)
        within = best_norm <= eps                                   # always true without a budget
        return torch.where(_per_image(within, x), best, x)


__all__ = ["FABT", "boundary_projection"]
