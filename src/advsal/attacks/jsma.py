"""The Jacobian-based saliency map attack (Papernot et al. 2016, Algorithms 2–3; seed 001 Eq. 8)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import Attack, check_nonnegative, check_seed
from .targets import least_likely_targets, random_targets

VARIANTS = ("increase", "decrease")
SALIENCY_MAPS = ("pairwise", "target")
TARGET_SELECTIONS = ("random", "least-likely", "required")


def _pareto_front(u: Tensor, v: Tensor) -> Tensor:
    """Mask of the points (per row) not dominated in (u, v) by an earlier point of the (u↓, v↓) order.

    Points with ``u = −inf`` (outside the search domain) are never on the front.
    """
    order_v = v.argsort(dim=1, descending=True, stable=True)
    order = order_v.gather(1, u.gather(1, order_v).argsort(dim=1, descending=True, stable=True))
    vs = v.gather(1, order)
    prev_max = torch.cat([torch.full_like(vs[:, :1], -torch.inf), vs.cummax(1).values[:, :-1]], 1)
    on_front = (vs > prev_max) & (u.gather(1, order) > -torch.inf)
    return torch.zeros_like(on_front).scatter(1, order, on_front)


def best_pairs(u: Tensor, v: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the pair ``p ≠ q`` maximising ``(u_p + u_q)·(v_p + v_q)`` subject to both sums > 0.

    This is Papernot et al.'s Algorithm 3 pair search with ``u = α`` (target-gradient) and ``v = −β`` (minus
    the summed other-class gradients), so the score is ``−α·β`` with ``α > 0, β < 0``. Exact, without the D×D
    pair matrix: if ``q'`` dominates ``q`` (``u_q' ≥ u_q`` and ``v_q' ≥ v_q``) it satisfies the sign
    conditions whenever ``q`` does and scores at least as high with any ``p``. Hence for every ``p`` a best
    partner lies on the Pareto front of the points, or — when that dominating point is ``p`` itself — on the
    front of the rest (the second front); applying this to both members of an optimal pair, some optimal pair
    lies inside ``F1 ∪ F2``. Each front is one sort plus a running maximum (O(D log D), O(D) memory), and the
    pair search runs over the (typically few dozen) front points in row chunks, so memory is O(D + |F|·chunk)
    per example. Rows without a valid pair get score −inf. Returns (p, q, score).
    """
    f1 = _pareto_front(u, v)
    f2 = _pareto_front(u.masked_fill(f1, -torch.inf), v.masked_fill(f1, -torch.inf))
    cand_mask = f1 | f2
    width = max(int(cand_mask.sum(1).max()), 1)
    cand = (~cand_mask).to(torch.uint8).argsort(dim=1, stable=True)[:, :width]  # front points first
    valid = cand_mask.gather(1, cand)
    cu = u.gather(1, cand).masked_fill(~valid, -torch.inf)
    cv = v.gather(1, cand).masked_fill(~valid, -torch.inf)
    n = u.shape[0]
    best_score = torch.full((n,), -torch.inf, device=u.device)
    best_i = torch.zeros(n, dtype=torch.long, device=u.device)
    best_j = torch.zeros(n, dtype=torch.long, device=u.device)
    cols = torch.arange(width, device=u.device)
    for start in range(0, width, chunk):
        rows = cols[start:start + chunk]
        su = cu[:, rows, None] + cu[:, None, :]                                    # (n, r, width)
        sv = cv[:, rows, None] + cv[:, None, :]
        ok = (su > 0) & (sv > 0) & (rows[:, None] != cols[None, :])
        score = torch.where(ok, su * sv, torch.full_like(su, -torch.inf)).flatten(1)
        value, flat = score.max(1)
        better = value > best_score
        best_score = torch.where(better, value, best_score)
        best_i = torch.where(better, rows[flat // width], best_i)
        best_j = torch.where(better, flat % width, best_j)
    p = cand.gather(1, best_i.view(-1, 1)).squeeze(1)
    q = cand.gather(1, best_j.view(-1, 1)).squeeze(1)
    return p, q, best_score


class JSMA(Attack):
    """Targeted JSMA with the pairwise saliency map (Papernot et al. 2016, Alg. 3; seed 001 Eq. 8).

    Each iteration computes, on the logits, ``α = ∂Z_t/∂x`` and ``β = ∑_{j≠t} ∂Z_j/∂x`` (two backward passes:
    the target logit and the sum of all logits), picks the pair of search-domain features maximising
    ``−(α_p+α_q)(β_p+β_q)`` with ``α_p+α_q > 0`` and ``β_p+β_q < 0`` (see ``best_pairs``), and changes both by
    ``theta`` (``variant="increase"``: up, clipped at 1; ``"decrease"``: down, clipped at 0, with the sign
    conditions mirrored). A feature leaves the search domain when it reaches the bound. An example stops when
    it is classified as its target, when ``gamma`` (the maximum fraction of features changed) is used up —
    ``⌊D·γ/2⌋`` pair iterations — or when no valid pair is left.

    ``saliency_map="target"`` replaces the pairwise map by the simplification ART's ``SaliencyMapMethod`` uses:
    the two search-domain features with the largest target gradient ``α`` (smallest for ``"decrease"``), one
    backward pass per iteration and no sign conditions. It ignores the other classes' gradients, yet on the
    benchmark's mnist-net it succeeds more often at γ = 0.1 (65% vs 40%, benchmarks/README.md).

    Targets: pass ``targets=``; without them ``target_selection`` picks them (``"random"``: uniform over the
    other classes with ``seed``; ``"least-likely"``: the lowest logit; ``"required"``: raise). Success is
    always "classified as the target".
    """

    name = "jsma"

    def __init__(self, theta: float = 1.0, gamma: float = 0.1, variant: str = "increase",
                 target_selection: str = "random", seed: int = 0, saliency_map: str = "pairwise",
                 batch_size: int | None = None):
        super().__init__(batch_size)
        self.theta = check_nonnegative("theta", theta)
        if not 0 < self.theta <= 1:
            raise InputError(f"theta must be in (0, 1] (the pixel change per selection), got {theta!r}")
        self.gamma = check_nonnegative("gamma", gamma)
        if not 0 < self.gamma <= 1:
            raise InputError(f"gamma must be in (0, 1] (the maximum fraction of features changed), got "
                             f"{gamma!r}")
        if variant not in VARIANTS:
            raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        if target_selection not in TARGET_SELECTIONS:
            raise InputError(f"target_selection must be one of {TARGET_SELECTIONS}, got {target_selection!r}")
        self.target_selection = target_selection
        if saliency_map not in SALIENCY_MAPS:
            raise InputError(f"saliency_map must be one of {SALIENCY_MAPS}, got {saliency_map!r}")
        self.saliency_map = saliency_map
        self.requires_targets = target_selection == "required"
        self.seed = check_seed(seed)

    def _default_targets(self, model: nn.Module, x: Tensor, y: Tensor, num_classes: int) -> Tensor | None:
        if self.target_selection == "random":
            return random_targets(y, num_classes, self.seed)
        if self.target_selection == "least-likely":
            return least_likely_targets(model, x, y)
        return None

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        assert targets is not None  # the base supplies targets (explicit or from _default_targets)
        n = x.shape[0]
        flat = x.flatten(1).clone()
        d = flat.shape[1]
        increase = self.variant == "increase"
        domain = flat < 1 if increase else flat > 0
        max_iters = int(d * self.gamma / 2)
        pairwise = self.saliency_map == "pairwise"
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        rows = torch.arange(n, device=x.device)
        for it in range(max_iters + 1):
            idx = rows[active]
            if idx.numel() == 0:
                break
            xa = flat[idx].view(-1, *x.shape[1:]).requires_grad_(True)
            logits = model(xa)
            hit = logits.detach().argmax(1) == targets[idx]
            if it == max_iters or hit.all():
                active[idx[hit]] = False
                break
            (g_target,) = torch.autograd.grad(logits.gather(1, targets[idx].view(-1, 1)).sum(), xa,
                                              retain_graph=pairwise)
            alpha = g_target.flatten(1)
            if not increase:  # decreasing a feature flips the sign of its effect
                alpha = -alpha
            dom = domain[idx]
            u = alpha.masked_fill(~dom, -torch.inf)
            if pairwise:
                (g_all,) = torch.autograd.grad(logits.sum(), xa)
                beta = g_all.flatten(1) - g_target.flatten(1)
                v = (beta if not increase else -beta).masked_fill(~dom, -torch.inf)
                p, q, score = best_pairs(u, v)
            else:
                score, top = u.topk(2, dim=1)
                p, q, score = top[:, 0], top[:, 1], score[:, 1]  # finite iff two features are left
            stuck = ~torch.isfinite(score)
            move = ~hit & ~stuck
            active[idx[hit | stuck]] = False
            idx, p, q = idx[move], p[move], q[move]
            for feat in (p, q):
                old = flat[idx, feat]
                new = (old + self.theta).clamp(max=1) if increase else (old - self.theta).clamp(min=0)
                flat[idx, feat] = new
                domain[idx, feat] = new < 1 if increase else new > 0
            if self._reporting:
                self._info(f"iteration {it + 1}/{max_iters}, {int(active.sum())} active")
        return flat.view_as(x)
