"""The few-pixel attack by differential evolution (Su, Vargas & Sakurai 2019; seed 004 §4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attack, check_positive_int, check_seed

_MUTATION = 0.5  # Su et al.: F = 0.5, no crossover


class PixelAttack(Attack):
    """Black-box ``pixels``-pixel attack with DE/rand/1 (Su et al. 2019, §3).

    A candidate is ``pixels`` tuples ``(row, col, value_1..value_C)``. The initial population draws positions
    uniformly over the image and values from N(0.5, 0.5²) (Su et al.'s N(128, 127) on 0–255), clipped to [0,
    1]. Each generation builds one child per member, ``x_r1 + F·(x_r2 − x_r3)`` with distinct random ``r1, r2,
    r3`` and no crossover, and a child replaces its parent when its fitness is at least as good. Fitness (only
    the softmax output is used): the probability of the true class (untargeted, minimised) or of the target
    (targeted, maximised). Positions are rounded to the nearest pixel when a candidate is applied. An example
    stops as soon as one candidate succeeds (misclassified / classified as the target); ``queries`` counts the
    model evaluations spent on each example. The populations of all examples are evaluated together in forward
    passes of ``eval_batch`` images.
    """

    name = "pixel"

    def __init__(self, pixels: int = 1, population: int = 400, generations: int = 100, seed: int = 0,
                 eval_batch: int = 1024, batch_size: int | None = None):
        super().__init__(batch_size)
        self.pixels = check_positive_int("pixels", pixels)
        self.population = check_positive_int("population", population, minimum=4)
        self.generations = check_positive_int("generations", generations, minimum=0)
        self.seed = check_seed(seed)
        self.eval_batch = check_positive_int("eval_batch", eval_batch)

    def _apply(self, x: Tensor, cand: Tensor) -> Tensor:
        """``x`` (n, C, H, W) with the candidates ``cand`` (n, P, pixels, 2 + C) applied: (n·P, C, H, W)."""
        n, c, h, w = x.shape
        pop = cand.shape[1]
        imgs = x.unsqueeze(1).expand(n, pop, c, h, w).reshape(n * pop, c, h * w).clone()
        rows = cand[..., 0].round().clamp(0, h - 1).long()
        cols = cand[..., 1].round().clamp(0, w - 1).long()
        where = (rows * w + cols).reshape(n * pop, 1, self.pixels).expand(-1, c, -1)
        values = cand[..., 2:].clamp(0, 1).reshape(n * pop, self.pixels, c).transpose(1, 2)
        imgs.scatter_(2, where, values)
        return imgs.view(n * pop, c, h, w)

    def _fitness(self, model: nn.Module, x: Tensor, cand: Tensor, labels: Tensor,
                 targeted: bool) -> tuple[Tensor, Tensor]:
        """(fitness to maximise, success) for every candidate, shape (n, P)."""
        n, pop = cand.shape[:2]
        imgs = self._apply(x, cand)
        fit, hit = [], []
        per_label = labels.repeat_interleave(pop)
        with torch.no_grad():
            for i in range(0, imgs.shape[0], self.eval_batch):
                probs = model(imgs[i:i + self.eval_batch]).softmax(1)
                lab = per_label[i:i + self.eval_batch]
                p = probs.gather(1, lab.view(-1, 1)).squeeze(1)
                pred = probs.argmax(1)
                fit.append(p if targeted else -p)
                hit.append(pred == lab if targeted else pred != lab)
        return torch.cat(fit).view(n, pop), torch.cat(hit).view(n, pop)

    def _partners(self, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
        """Indices ``r1, r2, r3`` per member (n, P, 3): distinct from each other and from the member.

        Drawn as offsets from the member's index: ``a1`` from 1..P−1, then ``a2``/``a3`` from the remaining
        offsets by drawing from a shorter range and skipping the offsets already taken.
        """
        pop = self.population
        draw = lambda m: torch.randint(1, m, (n, pop), generator=gen, device=device)  # noqa: E731
        a1 = draw(pop)
        a2 = draw(pop - 1)
        a2 = a2 + (a2 >= a1).long()
        lo, hi = torch.minimum(a1, a2), torch.maximum(a1, a2)
        a3 = draw(pop - 2)
        a3 = a3 + (a3 >= lo).long()
        a3 = a3 + (a3 >= hi).long()
        member = torch.arange(pop, device=device).view(1, pop)
        return (member.unsqueeze(2) + torch.stack([a1, a2, a3], 2)) % pop

    def _run(self, model: nn.Module, x: Tensor, y: Tensor,
             targets: Tensor | None) -> tuple[Tensor, Tensor]:
        targeted = targets is not None
        labels = targets if targeted else y
        n, c, h, w = x.shape
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        pop, k = self.population, self.pixels
        low = torch.tensor([0.0, 0.0] + [0.0] * c, device=x.device)
        high = torch.tensor([h - 1.0, w - 1.0] + [1.0] * c, device=x.device)
        cand = torch.empty(n, pop, k, 2 + c, device=x.device)
        cand[..., 0] = torch.rand(n, pop, k, generator=gen, device=x.device) * (h - 1)
        cand[..., 1] = torch.rand(n, pop, k, generator=gen, device=x.device) * (w - 1)
        cand[..., 2:] = (0.5 + 0.5 * torch.randn(n, pop, k, c, generator=gen, device=x.device)).clamp(0, 1)
        fit, hit = self._fitness(model, x, cand, labels, targeted)
        queries = torch.full((n,), pop, dtype=torch.long, device=x.device)
        done = hit.any(1)
        best = torch.where(hit, fit, fit - 1e9).argmax(1)  # a successful candidate if any, else the fittest
        for g in range(self.generations):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            r = self._partners(idx.numel(), gen, x.device)
            sub = cand[idx]
            r1, r2, r3 = (sub.gather(1, r[..., j, None, None].expand(-1, -1, k, 2 + c)) for j in range(3))
            child = torch.minimum(torch.maximum(r1 + _MUTATION * (r2 - r3), low), high)
            child_fit, child_hit = self._fitness(model, x[idx], child, labels[idx], targeted)
            queries[idx] += pop
            keep = child_fit >= fit[idx]
            cand[idx] = torch.where(keep[..., None, None], child, sub)
            fit[idx] = torch.where(keep, child_fit, fit[idx])
            hit[idx] = torch.where(keep, child_hit, hit[idx])
            newly = child_hit.any(1)
            # the first successful child is the answer for an example that just succeeded
            best[idx] = torch.where(newly, torch.where(child_hit, child_fit, child_fit - 1e9).argmax(1),
                                    fit[idx].argmax(1))
            cand[idx[newly]] = torch.where(child_hit[newly][..., None, None], child[newly], cand[idx[newly]])
            done[idx] = newly
            if self._reporting:
                self._info(f"generation {g + 1}/{self.generations}, {int((~done).sum())} left")
        winner = cand[torch.arange(n, device=x.device), best].unsqueeze(1)
        return self._apply(x, winner), queries
