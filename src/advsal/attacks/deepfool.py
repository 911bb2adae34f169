"""DeepFool (Moosavi-Dezfooli et al. 2016, Algorithm 2): minimal L2 steps to the nearest linearised
boundary."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attack, check_nonnegative, check_positive_int


class DeepFool(Attack):
    """Multi-class DeepFool, L2, batched over examples.

    Per iteration and still-correct example, with ``f'_k = f_k − f_y`` and ``w'_k = ∇f_k − ∇f_y`` over the
    candidate classes ``k`` (the ``candidates`` top-scoring classes of the clean input other than ``y``; Alg.
    2 l. 5–8): ``l = argmin_k |f'_k| / ‖w'_k‖₂`` and ``r = (|f'_l| + 1e-4) / ‖w'_l‖₂² · w'_l`` (Eq. 8); the
    total perturbation is applied with overshoot, ``x + (1 + η)·Σr`` (§3.2), and clipped to [0, 1]. The
    Jacobian of the candidate logits costs one backward pass over the batch per candidate. ``y`` plays the
    role of the paper's ``k̂(x₀)``, so an example that is already misclassified is returned unchanged.
    Targeted: the only candidate is the target, and an example stops when it is classified as the target.
    """

    name = "deepfool"

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int = 10,
                 batch_size: int | None = None):
        super().__init__(batch_size)
        self.steps = check_positive_int("steps", steps)
        self.overshoot = check_nonnegative("overshoot", overshoot)
        self.candidates = check_positive_int("candidates", candidates, minimum=2)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        with torch.no_grad():
            logits0 = model(x)
        if targets is not None:
            cand = targets.view(-1, 1)
        else:
            # top classes of the clean input, the label excluded (it is pushed to the end by −inf)
            k = min(self.candidates, logits0.shape[1]) - 1
            cand = logits0.scatter(1, y.view(-1, 1), -torch.inf).topk(k, dim=1).indices
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = self._still_active(logits0, y, targets)
        for step in range(self.steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xa = x_adv[idx].detach().requires_grad_(True)
            out = model(xa)
            if step > 0:  # the forward pass of this step also tells which examples the last step finished
                t_idx = targets[idx] if targets is not None else None
                still = self._still_active(out.detach(), y[idx], t_idx)
                active[idx] = still
                if not still.any():
                    break
                idx, out, xa_rows = idx[still], out[still], still
            else:
                xa_rows = torch.ones_like(idx, dtype=torch.bool)
            diffs = out.gather(1, cand[idx]) - out.gather(1, y[idx].view(-1, 1))  # f'_k, (n, K)
            grads = []
            for j in range(diffs.shape[1]):
                (g,) = torch.autograd.grad(diffs[:, j].sum(), xa, retain_graph=j + 1 < diffs.shape[1])
                grads.append(g[xa_rows])
            w = torch.stack(grads, 1).flatten(2)  # w'_k, (n, K, D)
            f = diffs.detach()
            w_norm = w.norm(dim=2).clamp_min(1e-12)
            best = (f.abs() / w_norm).argmin(1)
            f_l = f.gather(1, best.view(-1, 1)).squeeze(1)
            w_l = w[torch.arange(len(idx), device=x.device), best]
            w_l_norm = w_norm.gather(1, best.view(-1, 1)).squeeze(1)
            r = ((f_l.abs() + 1e-4) / w_l_norm**2).view(-1, 1) * w_l
            r_total[idx] += r.view(-1, *x.shape[1:])
            x_adv[idx] = (x[idx] + (1 + self.overshoot) * r_total[idx]).clamp(0, 1)
            if self._reporting:
                self._info(f"step {step + 1}/{self.steps}, {len(idx)} active")
        return x_adv

    @staticmethod
    def _still_active(logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        pred = logits.argmax(1)
        return pred != targets if targets is not None else pred == y
