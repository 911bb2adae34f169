"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search"), L∞ and L2.

A score-based random search: each iteration proposes to change one random square window of side
``s = round(√(p·d/c))`` (p the fraction of pixels, §3 "the p schedule": halved at iterations 10, 50, 200, 500,
1000, 2000, 4000, 6000, 8000) and keeps the proposal when it lowers the margin loss
``L = z_y − max_{i≠y} z_i`` (Eq. 2), or when it misclassifies. Only the model's logits are used (no
gradients); the result carries the number of queries per example.

- L∞ (Algorithm 2): initialise with vertical stripes (each column of each channel at ±ε), then set each
  square's channels to x ± ε (Eq. 3: a single random sign per channel for the whole window).
- L2 (Algorithm 3): initialise with a grid of ``h/5``-sized "η" blocks (Eq. 4, a pseudo-Gaussian bump with
  1/(k+1)² rings and opposite signs in its two halves); each step moves the perturbation mass of a second
  window into the chosen one (Eq. 5), keeping ‖δ‖₂ = ε.

Windows and signs are drawn per example (the reference PyTorch code shares one window across the batch).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import Attack, check_nonnegative, check_norm, check_positive_int, check_seed, default_budget
from .gradient import _per_image

LOSSES = ("margin", "ce")
_TINY = 1e-12
#: §3 (p schedule for 10,000 queries): p is halved after each of these iterations.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(iteration: int, p_init: float, n_queries: int = 10_000, rescale: bool = False) -> float:
    """The fraction of pixels a square covers at ``iteration`` (0-based): ``p_init`` halved once per passed
    entry of ``P_HALVINGS``; ``rescale`` maps the schedule of 10,000 queries onto ``n_queries``."""
    it = int(iteration / n_queries * 10_000) if rescale else iteration
    return p_init / 2 ** sum(it > h for h in P_HALVINGS)


def square_side(p: float, n_features: int, channels: int, height: int, norm: str) -> int:
    """Side of the square for pixel fraction ``p``: ``round(√(p·d/c))``, at least 1 (L∞) or 3 and odd (L2),
    and smaller than the image."""
    s = int(round(math.sqrt(p * n_features / channels)))
    if norm == "linf":
        return max(min(s, height - 1), 1)
    s = max(s, 3)
    s = s + 1 if s % 2 == 0 else s                        # odd, as the authors' code
    return s if s <= height else height - (1 - height % 2)


def square_mask(n: int, height: int, width: int, side: int, rows: Tensor, cols: Tensor) -> Tensor:
    """Boolean masks (n, 1, H, W), true on the side × side window at (rows[i], cols[i]) of example i."""
    ar_h = torch.arange(height, device=rows.device)
    ar_w = torch.arange(width, device=rows.device)
    in_rows = (ar_h >= rows[:, None]) & (ar_h < rows[:, None] + side)
    in_cols = (ar_w >= cols[:, None]) & (ar_w < cols[:, None] + side)
    return (in_rows[:, None, :, None] & in_cols[:, None, None, :]).view(n, 1, height, width)


def linf_square_update(x: Tensor, x_best: Tensor, eps: Tensor | float, mask: Tensor, signs: Tensor) -> Tensor:
    """Algorithm 2's proposal: inside each example's window every channel moves to ``x ± ε`` (``signs`` of
    shape (n, C, 1, 1)), outside it ``x_best`` is kept; the result lies in the ε-ball and in [0, 1]."""
    e = _per_image(eps, x)
    moved = torch.minimum(torch.maximum(x_best + 2 * e * signs, x - e), x + e).clamp(0, 1)
    return torch.where(mask, moved, x_best)


def _eta_rectangles(a: int, b: int) -> Tensor:
    delta = torch.zeros(a, b)
    r, c = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(r, 0):min(r + 2 * k + 1, a), max(c, 0):min(c + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r, c = r - 1, c - 1
    return delta / delta.norm()


@lru_cache(maxsize=64)
def eta(side: int) -> Tensor:
    """Eq. 4's s × s block: concentric 1/(k+1)² rings, positive in the top half, negative in the bottom half,
    unit L2 norm (CPU; callers move it)."""
    block = torch.cat([_eta_rectangles(side // 2, side), -_eta_rectangles(side - side // 2, side)])
    return block / block.norm()


def _window_index(n: int, c: int, side: int, rows: Tensor, cols: Tensor) -> tuple[Tensor, ...]:
    """Advanced-indexing tuple selecting each example's (c, side, side) window."""
    d = rows.device
    ar = torch.arange(side, device=d)
    return (torch.arange(n, device=d).view(n, 1, 1, 1), torch.arange(c, device=d).view(1, c, 1, 1),
            (rows[:, None] + ar).view(n, 1, side, 1), (cols[:, None] + ar).view(n, 1, 1, side))


def _l2_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020), score-based, L∞ (Algorithm 2) or L2 (Algorithm 3).

    Minimises the margin loss ``z_y − max_{i≠y} z_i`` (targeted: ``max_{i≠t} z_i − z_t`` with the
    cross-entropy of the target as the acceptance loss) by random search over square windows whose size
    follows the paper's p schedule; stops per example once it is misclassified. ``restarts`` reruns the search
    on the examples still unbroken. Returns queries per example (initialisation included).

    Arguments:
        eps (float or Tensor): budget, one number or one per example (shape (N,)); default 8/255 under L∞,
            none under L2.
        norm (str): "linf" or "l2" (default "linf").
        n_queries (int): iterations (queries after the initial one) per run (default 5000).
        p_init (float): initial fraction of pixels per square (default 0.8).
        loss (str): "margin" (default) or "ce" as the acceptance loss of untargeted runs.
        restarts (int): runs on the still-robust examples (default 1).
        rescale_schedule (bool): stretch the 10,000-query p schedule to ``n_queries`` (default False).
        seed (int): default 0. batch_size (int, optional).

    Shape:
        x: (N, C, H, W) in [0, 1]; y, targets: (N,) int64. Returns an ``AttackResult`` with ``queries``.

    Examples::
        >>> result = Square(eps=8 / 255, n_queries=5000)(model, x, y)
        >>> result.queries.float().mean()
    """

    name = "square"
    per_example = ("eps",)

    def __init__(self, eps: float | Tensor | None = None, norm: str = "linf", n_queries: int = 5000,
                 p_init: float = 0.8, loss: str = "margin", restarts: int = 1, rescale_schedule: bool = False,
                 seed: int = 0, batch_size: int | None = None):
        super().__init__(batch_size)
        self.norm = check_norm(norm)
        self.eps = default_budget(eps, norm)
        self.n_queries = check_positive_int("n_queries", n_queries)
        if isinstance(p_init, bool) or not 0 < check_nonnegative("p_init", p_init) <= 1:
            raise InputError(f"p_init (fraction of pixels per square) must be a number in (0, 1], got {p_init!r}")
        self.p_init = float(p_init)
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.restarts = check_positive_int("restarts", restarts)
        if not isinstance(rescale_schedule, bool):
            raise InputError(f"rescale_schedule must be True or False, got {rescale_schedule!r}")
        self.rescale_schedule = rescale_schedule
        self.seed = check_seed(seed)

    def _margin_and_loss(self, model: nn.Module, x: Tensor, y: Tensor,
                         targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """(margin, loss to minimise); margin ≤ 0 means success."""
        with torch.no_grad():
            logits = model(x)
        label = targets if targets is not None else y
        own = logits.gather(1, label.view(-1, 1)).squeeze(1)
        other = logits.scatter(1, label.view(-1, 1), -torch.inf).amax(1)
        if targets is not None:
            return other - own, F.cross_entropy(logits, targets, reduction="none")
        margin = own - other
        return margin, margin if self.loss == "margin" else -F.cross_entropy(logits, y, reduction="none")

    def _signs(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1

    def _init(self, x: Tensor, eps: Tensor, generator: torch.Generator) -> Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":                               # vertical stripes
            return (x + _per_image(eps, x) * self._signs((n, c, 1, w), generator, x.device)).clamp(0, 1)
        s = max(h // 5, 1)
        start = max((h - 5 * s) // 2, 0)
        delta = torch.zeros_like(x)
        for vh in range(start, start + s * (h // s) - s + 1, s):
            for vw in range(start, start + s * (w // s) - s + 1, s):
                if vh + s > h or vw + s > w:
                    continue
                block = eta(s).to(x.device, x.dtype) if s >= 2 else torch.ones(1, 1, device=x.device)
                if torch.rand(1, generator=generator, device=x.device).item() > 0.5:
                    block = block.t()
                delta[:, :, vh:vh + s, vw:vw + s] += block * self._signs((n, c, 1, 1), generator, x.device)
        return (x + delta / _l2_norm(delta).clamp_min(_TINY) * _per_image(eps, x)).clamp(0, 1)

    def _propose(self, x: Tensor, x_best: Tensor, eps: Tensor, p: float, generator: torch.Generator) -> Tensor:
        n, c, h, w = x.shape
        s = square_side(p, x[0].numel(), c, h, self.norm)
        s = min(s, w - 1 if self.norm == "linf" else w) or 1
        rows = torch.randint(0, h - s + 1, (n,), generator=generator, device=x.device)
        cols = torch.randint(0, w - s + 1, (n,), generator=generator, device=x.device)
        if self.norm == "linf":
            mask = square_mask(n, h, w, s, rows, cols)
            return linf_square_update(x, x_best, eps, mask, self._signs((n, c, 1, 1), generator, x.device))
        # L2 (Algorithm 3): move the mass of window 2 into window 1, keep ‖δ‖₂ = ε
        delta = x_best - x
        rows2 = torch.randint(0, h - s + 1, (n,), generator=generator, device=x.device)
        cols2 = torch.randint(0, w - s + 1, (n,), generator=generator, device=x.device)
        win1, win2 = _window_index(n, c, s, rows, cols), _window_index(n, c, s, rows2, cols2)
        mask = square_mask(n, h, w, s, rows, cols) | square_mask(n, h, w, s, rows2, cols2)
        old = delta[win1]                                                     # (n, c, s, s)
        norm_window = old.pow(2).sum((-2, -1), keepdim=True).sqrt()
        norm_image = _l2_norm(delta)
        norm_windows = _l2_norm(delta * mask)
        block = eta(s).to(x.device, x.dtype)
        flip = torch.rand(n, generator=generator, device=x.device) > 0.5
        blocks = torch.where(flip.view(n, 1, 1, 1), block.t(), block)
        new = blocks * self._signs((n, c, 1, 1), generator, x.device) + old / (norm_window + _TINY)
        budget = ((_per_image(eps, x) ** 2 - norm_image ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
        new = new / (new.pow(2).sum((-2, -1), keepdim=True).sqrt() + _TINY) * budget
        delta = delta.clone()
        delta[win2] = 0.0
        delta[win1] = new
        return (x + delta / _l2_norm(delta).clamp_min(_TINY) * _per_image(eps, x)).clamp(0, 1)

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None, eps: Tensor,
                generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One run: (best point, success mask, queries) for a batch."""
        n = x.shape[0]
        x_best = self._init(x, eps, generator)
        margin, loss = self._margin_and_loss(model, x_best, y, targets)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        out, done = x_best.clone(), margin <= 0
        active = (~done).nonzero().squeeze(1)
        xa, xb, ya, ea = x[active], x_best[active], y[active], eps[active]
        ta = targets[active] if targets is not None else None
        ma, la = margin[active], loss[active]
        for i in range(self.n_queries):
            if active.numel() == 0:
                break
            p = p_schedule(i, self.p_init, self.n_queries, self.rescale_schedule)
            x_new = self._propose(xa, xb, ea, p, generator)
            m_new, l_new = self._margin_and_loss(model, x_new, ya, ta)
            queries[active] += 1
            accept = (l_new < la) | (m_new <= 0)
            la = torch.where(l_new < la, l_new, la)
            ma = torch.where(accept, m_new, ma)
            xb = torch.where(_per_image(accept, xb), x_new, xb)
            fooled = ma <= 0
            if fooled.any():
                out[active[fooled]] = xb[fooled]
                done[active[fooled]] = True
                keep = (~fooled).nonzero().squeeze(1)
                active, xa, xb, ya, ea, ma, la = (t[keep] for t in (active, xa, xb, ya, ea, ma, la))
                ta = ta[keep] if ta is not None else None
            if self._reporting:
                self._info(f"query {i + 1}/{self.n_queries}, {active.numel()} left")
        out[active] = xb
        return out, done, queries

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        eps = self._per_example(self.eps, x)
        eps = eps if isinstance(eps, Tensor) else torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        out = x.clone()
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        broken = eps == 0
        for _ in range(self.restarts):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv, hit, q = self._search(model, x[idx], y[idx], targets[idx] if targets is not None else None,
                                       eps[idx], generator)
            out[idx], queries[idx] = adv, queries[idx] + q
            broken[idx] = hit
        return out, queries


__all__ = ["P_HALVINGS", "Square", "eta", "linf_square_update", "p_schedule", "square_mask", "square_side"]
