"""Regularized adversarial examples for explanation (seed 003 §4): a two-phase, APE_D-driven perturbation.

Phase 1 (Eqs. 12–13) starts from Î = I and minimises, with Adam and clipping Î to [0, 1] after every step,

    E(I, Î) = M(Î)_i + α · ΣS / N + β · TV(S) / N,        S = smooth support of I − Î (Eq. 11).

The sums are divided by N = C·H·W, as in APE_D (Eq. 5), so α = β = 1 makes E the smooth counterpart of APE_D
with unit weights (the paper's un-normalised Eq. 13 with coefficient α' corresponds to α = α'·N here). The
saliency mask is ``sal = S ≥ 0`` (Eq. 14), i.e. the elements moved by at least ε. Phase 2 (Eqs. 15–16) starts
again from Ĩ = I and minimises M(Ĩ)_i alone with the gradient multiplied by ``sal``, so only elements inside
the mask may change.

``classification_loss`` picks how the classification term enters both phases: ``"probability"`` is Eq. 13 as
written, M(Î)_i. ``"log-complement"`` uses −log(1 − M(Î)_i) instead — the cross-entropy of "not class i", the
loss of the Kurakin et al. attacks the method builds on. It is a strictly increasing function of M(Î)_i, so it
"reduces the classification value of class i" like Eq. 13's first term, but its gradient does not vanish when
the model is confident: ∂M_i = M_i(1 − M_i)·∂(log-odds) is ≈ 0 at M_i ≈ 1 (exactly 0 once float32 rounds M_i
to 1), where the sparsity and smoothness terms then hold every element in place; ∂(−log(1 − M_i)) =
M_i·∂(log-odds) stays large there and fades as the class is destroyed (M_i → 0). The APE metrics always use
M(Î)_i itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..progress import Bar
from ..tensors import check_images, frozen, model_device, resolve_target
from .ape import APEResult, Target, _check_weights, ape_d, smooth_support, total_variation


@dataclass
class RegularizedExplanation:
    """Result of :func:`regularized_explanation` for a batch (all tensors on the input's device).

    ``x``: the explained images; ``mask``: (N, C, H, W) bool, Eq. 14 per element; ``support``: S of phase 1
    (Eq. 11); ``x_phase1``: Î after phase 1; ``x_adv``: Ĩ after phase 2 (differs from x only inside
    ``mask``); ``ape_phase1`` / ``ape``: APE_D of Î and of Ĩ; ``target``: the explained class per example.
    """

    x: torch.Tensor
    mask: torch.Tensor
    support: torch.Tensor
    x_phase1: torch.Tensor
    x_adv: torch.Tensor
    target: torch.Tensor
    ape_phase1: APEResult
    ape: APEResult
    steps_run: int = -1  # phase-1 iterations actually run (< steps when the convergence rule stopped it)

    @property
    def pixel_mask(self) -> torch.Tensor:
        """(N, H, W) bool: a pixel is in the explanation if any of its channels is."""
        return self.mask.any(1)

    @property
    def perturbation(self) -> torch.Tensor:
        """Ĩ − I, the adversarial "patch" of phase 2 (zero outside the mask)."""
        return self.x_adv - self.x

    @property
    def saliency(self) -> torch.Tensor:
        """(N, H, W) float: |Ĩ − I| summed over channels, a graded map (e.g. for the pointing game)."""
        return self.perturbation.abs().sum(1)


CLASSIFICATION_LOSSES = ("probability", "log-complement")


def _check_common(steps: int, lr: float, classification_loss: str = "probability") -> None:
    if steps < 0:
        raise InputError(f"steps must be ≥ 0, got {steps}")
    if not lr > 0:
        raise InputError(f"lr must be positive, got {lr}")
    if classification_loss not in CLASSIFICATION_LOSSES:
        raise InputError(f"unknown classification_loss {classification_loss!r}; use one of "
                         f"{', '.join(CLASSIFICATION_LOSSES)}")


def classification_term(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                        classification_loss: str = "probability", temperature: float = 1.0) -> torch.Tensor:
    """The classification term per example: ``M(x)_i`` (``"probability"``, Eq. 13) or ``−log(1 − M(x)_i)``
    (``"log-complement"``, computed stably as logsumexp(all logits) − logsumexp(logits of the other classes)).
    ``temperature`` T divides the logits first (temperature scaling: M_T = softmax(z/T); 1 = the model as is)."""
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    logits = model(x) / temperature if temperature != 1.0 else model(x)
    if classification_loss == "probability":
        return torch.softmax(logits, 1).gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)
    others = logits.scatter(1, target.view(-1, 1).to(logits.device), float("-inf"))
    return torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)


def minimize_in_mask(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, target: Target = "predicted",
                     steps: int = 100, lr: float = 0.01, labels: torch.Tensor | None = None,
                     description: str = "phase 2", classification_loss: str = "probability",
                     temperature: float = 1.0) -> torch.Tensor:
    """Phase 2 (Eqs. 15–16): from Ĩ = x, minimise ``M(Ĩ)_i`` (or −log(1 − M(Ĩ)_i), see the module docstring)
    with Adam, updates multiplied by ``mask``, clipping Ĩ to [0, 1] after each step. Elements outside ``mask``
    are returned bit-for-bit equal to ``x``.

    ``mask`` is a bool tensor broadcastable to x: (N, C, H, W), (N, 1, H, W) or (N, H, W).
    """
    check_images(x)
    _check_common(steps, lr, classification_loss)
    mask = _as_element_mask(mask, x)
    target = resolve_target(model, x, target, labels)
    device = model_device(model)
    x0, keep = x.detach().to(device), mask.to(device)
    weight = keep.to(x0.dtype)
    x_t = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x_t], lr=lr)
    with frozen(model), Bar(description, steps) as bar:
        for _ in range(steps):
            term = classification_term(model, x_t, target.to(device), classification_loss, temperature)
            opt.zero_grad(set_to_none=True)
            term.sum().backward()
            x_t.grad.mul_(weight)
            opt.step()
            with torch.no_grad():
                x_t.clamp_(0.0, 1.0)
            bar.update(info=f"loss {term.mean().item():.4f}")
    # Adam never moves an element whose gradient is always zero; the where() makes that a guarantee.
    return torch.where(keep, x_t.detach(), x0).to(x.device)


def _as_element_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"mask must be a bool tensor, got {type(mask).__name__}")
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    n, c, h, w = x.shape
    if mask.dim() != 4 or mask.shape[0] != n or mask.shape[2:] != (h, w) or mask.shape[1] not in (1, c):
        raise InputError(f"mask must have shape ({n}, {c} or 1, {h}, {w}) or ({n}, {h}, {w}) to match the "
                         f"images, got {tuple(mask.shape)}")
    return mask.to(torch.bool).expand(n, c, h, w).to(x.device)


def regularized_explanation(model: nn.Module, x: torch.Tensor, target: Target = "predicted", *,
                            alpha: float = 0.01, beta: float = 0.2, gamma: float = 30.0, eps: float = 0.01,
                            steps: int = 300, lr: float = 0.01, phase2_steps: int = 100,
                            phase2_lr: float | None = None, labels: torch.Tensor | None = None,
                            ape_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                            classification_loss: str = "probability", temperature: float = 1.0,
                            patience: int = 0, tol: float = 1e-4) -> RegularizedExplanation:
    """Explain ``model``'s class ``target`` on ``x`` with the two-phase method of seed 003 §4, batched.

    Defaults: γ = 30, ε = 0.01 (the paper's values, §4 and §5.1); α = 0.01, β = 0.2 (Table 1's first "ours"
    setting); Adam (the paper's optimiser) with step ``lr`` = 0.01 in pixel units, so one step moves an
    element by about ε; 300 phase-1 and 100 phase-2 iterations (the paper gives no counts). α and β weight the
    per-element-normalised sparsity and smoothness terms (module docstring). Because S has slope ≈ γ/2 at
    zero, an element only starts to move when its classification gradient exceeds ≈ 15·α/N, so large α (Table
    1 also uses (6, 120) and (40, 120)) leaves a confident model's image untouched unless the image is large.
    Every example is optimised independently (the losses are summed and Adam is element-wise).
    ``classification_loss``: ``"probability"`` (Eq. 13) or ``"log-complement"`` (module docstring), in both
    phases; ``temperature`` T > 0 divides the logits in that term (a temperature-calibrated model; the APE
    metrics use the model as is).

    Convergence rule (``patience`` > 0): phase 1 stops once no example has lowered its best E by more than
    ``tol``·max(1, |best E|) for ``patience`` consecutive steps (``steps`` stays the cap; ``steps_run`` says
    how many ran). ``patience`` 0 runs exactly ``steps``.
    """
    check_images(x)
    _check_common(steps, lr, classification_loss)
    if alpha < 0 or beta < 0:
        raise InputError(f"alpha and beta must be ≥ 0, got {alpha} and {beta}")
    _check_weights(ape_weights)
    target = resolve_target(model, x, target, labels)
    device = model_device(model)
    x0, tgt = x.detach().to(device), target.to(device)
    if patience < 0 or tol < 0:
        raise InputError(f"patience and tol must be ≥ 0, got {patience} and {tol}")
    x_hat = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x_hat], lr=lr)
    best = torch.full((x0.shape[0],), float("inf"), device=device)
    stale, steps_run = 0, 0
    with frozen(model), Bar("phase 1", steps) as bar:
        for _ in range(steps):
            s = smooth_support(x0 - x_hat, gamma, eps)
            term = classification_term(model, x_hat, tgt, classification_loss, temperature)
            loss = term + alpha * s.flatten(1).mean(1) + beta * total_variation(s)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            steps_run += 1
            with torch.no_grad():
                x_hat.clamp_(0.0, 1.0)
                e = loss.detach()
                improved = torch.isinf(best) | (e < best - tol * best.abs().clamp(min=1.0))
                best = torch.minimum(best, e)
                stale = 0 if bool(improved.any()) else stale + 1
            bar.update(info=f"E {loss.mean().item():.4f}")
            if patience and stale >= patience:
                break
    x_hat = x_hat.detach()
    support = smooth_support(x0 - x_hat, gamma, eps)
    mask = support >= 0
    x_adv = minimize_in_mask(model, x0, mask, tgt, phase2_steps, phase2_lr or lr,
                             classification_loss=classification_loss, temperature=temperature).to(x.device)
    x_hat = x_hat.to(x.device)
    return RegularizedExplanation(x.detach(), mask.to(x.device), support.to(x.device), x_hat, x_adv, target,
                                  ape_d(model, x, x_hat, target, ape_weights),
                                  ape_d(model, x, x_adv, target, ape_weights), steps_run)
