"""Second-round (adaptive) attacks on a classifier F and an adversarial-example detector D together.

    result = MetzenAttack(eps=0.3, alpha=0.01, steps=40, sigma=0.5)(F, D, x, y)
    result = AdaptiveSaliencyAttack(eps=0.3, alpha=0.01, steps=40)(F, D, x, y)
    result.both.float().mean()    # share of inputs that fool F *and* pass D as clean

Both attacks are batched L∞ attacks on [0, 1] images with budget ``eps``; they rely only on the
:class:`advsal.detection.protocol.Detector` protocol (``is_fitted``, ``threshold``, ``adversarial_logit``,
``score``), and for a :class:`~advsal.detection.protocol.SaliencyInputDetector` on its saliency members. They
return an
``AdaptiveResult``: the usual ``AttackResult`` (``success`` = ``both``, ``pred`` = F's prediction) plus
per-example ``fooled_f`` (F(x_adv) ≠ y), ``evaded_d`` (D's score ≤ D's threshold, i.e. called clean) and
``detector_score``.

``MetzenAttack`` is seed 001 Eq. 10 (Metzen et al. 2017 §3.3): it treats a saliency detector's saliency input
as a constant, which is why seed 001 reports it "not applicable". ``AdaptiveSaliencyAttack`` differentiates
through the saliency map as well. For ReLU networks ∂S/∂x = ∂²F_c/∂x² is zero almost everywhere (the network
is piecewise linear), so it uses BPDA (Athalye et al. 2018): the forward pass uses the real saliency, the
backward pass the saliency of a smooth surrogate in which every ReLU is replaced by softplus(β·z)/β.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..detection.protocol import Detector, SaliencyInputDetector
from ..errors import InputError
from ..progress import Bar, is_quiet
from ..tensors import ReLUReplacementMode, check_images, check_labels, frozen, model_device
from .base import (
    Attack,
    AttackResult,
    Reporting,
    check_model,
    check_nonnegative,
    check_positive_int,
    perturbation_norms,
)
from .gradient import loss_gradient


@dataclass
class AdaptiveResult(AttackResult):
    """``AttackResult`` of an attack on classifier + detector; ``success`` is ``both``.

    ``fooled_f``: F(x_adv) ≠ y. ``evaded_d``: the detector calls x_adv clean (score ≤ its threshold).
    ``both``: fooled_f & evaded_d. ``detector_score``: the detector's probability "adversarial" on x_adv.
    """

    fooled_f: Tensor | None = None
    evaded_d: Tensor | None = None
    both: Tensor | None = None
    detector_score: Tensor | None = None

    def rates(self) -> dict[str, float]:
        """Shares of examples with fooled_f, evaded_d and both (JSON-ready)."""
        def share(t: Tensor) -> float:
            return float(t.float().mean()) if t.numel() else 0.0
        return {"fooled_f": share(self.fooled_f), "evaded_d": share(self.evaded_d), "both": share(self.both)}


# --------------------------------------------------------------------------------------------- surrogate ReLU
class _SoftplusReLUMode(ReLUReplacementMode):
    """Replaces every ReLU called in a forward pass with softplus(β·z)/β, a smooth function with non-zero second
    derivative (see ``advsal.tensors.ReLUReplacementMode`` for which calls are caught)."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def replace(self, z: Tensor, inplace: bool) -> Tensor:
        out = F.softplus(z.clone() if inplace else z, beta=self.beta)
        return z.copy_(out) if inplace else out


@contextlib.contextmanager
def softplus_relus(beta: float) -> Iterator[_SoftplusReLUMode]:
    """Within the block every ReLU evaluates as softplus(β·z)/β (β → ∞ recovers the ReLU)."""
    if not beta > 0:
        raise InputError(f"beta must be a positive number, got {beta!r}")
    with _SoftplusReLUMode(float(beta)) as mode:
        yield mode


def _bpda_saliency(detector: SaliencyInputDetector, x: Tensor, target: Tensor, beta: float | None) -> Tensor:
    """The detector's saliency of x with a backward path to x: the real value, and the gradient of the
    softplus surrogate's saliency (BPDA) — or, with ``beta=None``, the real saliency's own graph."""
    if beta is None:
        return detector.saliency(x, target=target, create_graph=True)
    real = detector.saliency(x.detach(), target=target)
    with softplus_relus(beta):
        smooth = detector.saliency(x, target=target, create_graph=True)
    return smooth + (real - smooth).detach()


def _uses_saliency(detector: Detector) -> bool:
    return isinstance(detector, SaliencyInputDetector) and detector.uses_saliency


def _frozen_detector(detector: Detector) -> contextlib.AbstractContextManager:
    """A detector that is an nn.Module is frozen like the classifier (eval mode, no parameter gradients)."""
    return frozen(detector) if isinstance(detector, nn.Module) else contextlib.nullcontext()


def saliency_path_gradient(classifier: nn.Module, detector: Detector, x: Tensor,
                           beta: float | None = 10.0) -> Tensor:
    """d D(x)/dx through the saliency input only: the gradient of D's score w.r.t. x when the image channels
    are held constant and S(x) = ∂F_c/∂x varies (c = F's class at x).

    With ``beta`` this is the BPDA gradient ``AdaptiveSaliencyAttack`` uses (softplus(β·)/β surrogate); with
    ``beta=None`` it differentiates the real saliency, which on a ReLU network is exactly zero — the reason a
    surrogate is needed. Returns a tensor shaped like x (zeros when the detector does not use saliency).
    """
    if not _uses_saliency(detector):
        return torch.zeros_like(x)
    device = model_device(classifier)
    with frozen(classifier), _frozen_detector(detector), torch.enable_grad():
        xr = x.detach().to(device).requires_grad_(True)
        with torch.no_grad():
            target = detector.saliency_target_for(classifier(xr))
        s = _bpda_saliency(detector, xr, target, beta)
        score = torch.sigmoid(detector.logit_from_features(detector.assemble(xr.detach(), s)))
        (grad,) = torch.autograd.grad(score.sum(), xr, allow_unused=True)
    return (torch.zeros_like(xr) if grad is None else grad).to(x.device)


# ------------------------------------------------------------------------------------------------ attacks
def _check_detector(detector: object) -> None:
    if not isinstance(detector, Detector):
        raise InputError("detector must meet the advsal.detection.Detector protocol (is_fitted, threshold, "
                         f"score, adversarial_logit, ...), got {type(detector).__name__}")
    if not detector.is_fitted:
        raise InputError(f"the {type(detector).__name__} is not trained: call detector.fit(x_clean, x_adv) "
                         "first")


def check_pair_inputs(classifier: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """Validate an attack's (classifier, x, y) as ``Attack`` does for untargeted attacks; returns the labels
    (the classifier's predictions when ``y`` is None). Call with the classifier frozen (after ``check_model``)."""
    check_images(x)
    if x.shape[0] == 0:
        raise InputError("x is an empty batch; pass at least one image")
    device = model_device(classifier)
    with torch.no_grad():
        probe = classifier(x[:1].to(device))
        if probe.dim() != 2:
            raise InputError(f"classifier must return logits of shape (N, classes), got {tuple(probe.shape)}")
        if y is None:
            y = torch.cat([classifier(x[i:i + 512].to(device)).argmax(1).to(x.device)
                           for i in range(0, len(x), 512)])
    check_labels(y, x.shape[0], probe.shape[1], name="y")
    return y.long()


def _linf_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The box [max(x − ε, 0), min(x + ε, 1)]: Π_ε then the clip to [0, 1] in one step, as in PGD/BIM."""
    return (x - eps).clamp_min(0), (x + eps).clamp_max(1)


def classification_margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y − max_{j≠y} z_j per example: positive while the classifier is still right (C&W's f6 without κ)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf).amax(1)
    return true - other


def _threshold_logit(detector: Detector) -> float:
    t = min(max(detector.threshold, 1e-7), 1 - 1e-7)
    return math.log(t / (1 - t))


@torch.no_grad()
def evaluate_pair(classifier: nn.Module, detector: Detector, x: Tensor, x_adv: Tensor, y: Tensor,
                  batch_size: int = 256) -> AdaptiveResult:
    """Score adversarial images ``x_adv`` (crafted from ``x``) against a classifier and a detector (e.g. a
    detector D other than the D′ they were crafted on: the transfer setting of Carlini & Wagner 2017)."""
    _check_detector(detector)
    device = model_device(classifier)
    with frozen(classifier):
        pred = torch.cat([classifier(x_adv[i:i + batch_size].to(device)).argmax(1).to(x.device)
                          for i in range(0, len(x_adv), batch_size)])
    score = detector.score(x_adv, batch_size).to(x.device)
    fooled = pred != y.to(x.device)
    evaded = score <= detector.threshold
    return AdaptiveResult(x_adv=x_adv, success=fooled & evaded, pred=pred, **perturbation_norms(x, x_adv),
                          fooled_f=fooled, evaded_d=evaded, both=fooled & evaded, detector_score=score)


class AdaptiveAttack(Reporting):
    """Base of attacks on (classifier, detector): ``attack(classifier, detector, x, y=None) -> AdaptiveResult``.

    Untargeted (fool F and evade D). Inputs are validated as for every ``Attack`` (``check_pair_inputs``); the
    detector must meet the :class:`~advsal.detection.protocol.Detector` protocol and be fitted; classifier
    and detector are frozen (eval mode, parameter gradients off, restored afterwards); ``batch_size``
    processes chunks with a progress bar. Subclasses implement ``_run_pair(classifier, detector, x, y)``.
    """

    #: Name used in progress bars and error messages (set by subclasses).
    name: str = "adaptive"

    def _run_pair(self, model: nn.Module, detector: Detector, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, classifier: nn.Module, detector: Detector, x: Tensor,
                 y: Tensor | None = None) -> AdaptiveResult:
        _check_detector(detector)
        check_model(classifier)
        with frozen(classifier), _frozen_detector(detector), torch.enable_grad():
            y = check_pair_inputs(classifier, x, y)
            device = model_device(classifier)
            size = self.batch_size or x.shape[0]
            advs = []
            with Bar(self.name, x.shape[0]) as bar:
                self._bar = None if is_quiet() else bar
                try:
                    for start in range(0, x.shape[0], size):
                        xc = x[start:start + size].detach().to(device, copy=True)  # one copy, also across devices
                        yc = y[start:start + size].to(device)
                        adv = self._run_pair(classifier, detector, xc, yc)
                        advs.append(adv.detach().clamp(0, 1).to(x.device))
                        bar.update(xc.shape[0])
                finally:
                    self._bar = None
        return evaluate_pair(classifier, detector, x, torch.cat(advs), y.to(x.device))


class MetzenAttack(AdaptiveAttack):
    """Second-round attack of Metzen et al. 2017 (seed 001 Eq. 10), L∞, from x itself:

        x_{n+1} = clip_ε{ x_n + α [ (1 − σ)·sign(∇ₓ J_f(x_n, y_true)) + σ·sign(∇ₓ J_d(x_n, adversarial)) ] }

    J_f is F's cross-entropy of the true label, J_d D's cross-entropy of the label "adversarial" (ascending it
    pushes D towards "clean"). Any saliency input of D is recomputed at every step but treated as a constant
    (only the image channels carry gradient), as the equation prescribes. σ = 0 is BIM on F alone.
    Default ``alpha = 2.5·ε/steps``.
    """

    name = "metzen"

    def __init__(self, eps: float, alpha: float | None = None, steps: int = 10, sigma: float = 0.5,
                 batch_size: int | None = None):
        super().__init__(batch_size)
        self.eps = check_nonnegative("eps", eps)
        self.steps = check_positive_int("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_nonnegative("alpha", alpha)
        self.sigma = check_nonnegative("sigma", sigma)
        if self.sigma > 1:
            raise InputError(f"sigma trades off classifier and detector objectives and must be in [0, 1], "
                             f"got {sigma}")

    def _run_pair(self, model, detector, x, y):
        if self.eps == 0:
            return x
        x_adv = x
        lo, hi = _linf_box(x, self.eps)
        for step in range(self.steps):
            grad_f, _ = loss_gradient(model, x_adv, y, False)
            with torch.enable_grad():
                xr = x_adv.detach().requires_grad_(True)
                # J_d(x, adversarial) = −log σ(logit); its gradient points away from "adversarial"
                j_d = F.softplus(-detector.adversarial_logit(xr)).sum()
                (grad_d,) = torch.autograd.grad(j_d, xr, allow_unused=True)
            if grad_d is None:  # a detector whose logit does not depend on x through autograd
                grad_d = torch.zeros_like(x_adv)
            direction = (1 - self.sigma) * grad_f.sign() + self.sigma * grad_d.sign()
            x_adv = torch.minimum(torch.maximum(x_adv + self.alpha * direction, lo), hi)
            if self._reporting:
                self._info(f"step {step + 1}/{self.steps}")
        return x_adv


class AdaptiveSaliencyAttack(AdaptiveAttack):
    """A fully adaptive white-box L∞ attack on F and a (saliency) detector D (Carlini & Wagner 2017,
    "Adversarial examples are not easily detected", §5: attack the combined model with a margin loss).

    It minimises, by signed-gradient steps projected onto the ε-ball (PGD-style, from x), the joint margin

        max(Z_y − max_{j≠y} Z_j, −κ) + max(ℓ_D − logit(τ), −κ)

    (C&W's f₆ for F, and D's adversarial logit ℓ_D against its threshold τ), so that F misclassifies AND D
    says clean, with confidence κ. D's input is concat(x, S(x)); its gradient flows through both the image and
    the saliency S = ∂F_c/∂x (c = F's class at the current point), using the BPDA softplus(β·)/β surrogate for
    the backward pass through S (see ``saliency_path_gradient``). Keeps per example the best iterate: one that
    fools both if any, else the lowest loss. Detectors without a saliency input are attacked through their own
    (exact) gradient. Default ``alpha = 2.5·ε/steps``. The default κ = 2 (logit units) keeps the iterate away
    from both decision boundaries; with κ = 0 the two hinge terms take turns and the iterate oscillates (on
    mnist-net, ε = 0.2, 20 steps: 38% fool both at κ = 0 vs 58% at κ = 2).
    """

    name = "adaptive-saliency"

    def __init__(self, eps: float, alpha: float | None = None, steps: int = 40, kappa: float = 2.0,
                 beta: float = 10.0, batch_size: int | None = None):
        super().__init__(batch_size)
        self.eps = check_nonnegative("eps", eps)
        self.steps = check_positive_int("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_nonnegative("alpha", alpha)
        self.kappa = check_nonnegative("kappa", kappa)
        if not (isinstance(beta, (int, float)) and beta > 0):
            raise InputError(f"beta (softplus sharpness of the surrogate) must be > 0, got {beta!r}")
        self.beta = float(beta)

    def _objective(self, model, detector, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(loss per example, its gradient, fooled_f, evaded_d) at x_adv."""
        with torch.enable_grad():
            xr = x_adv.detach().requires_grad_(True)
            logits = model(xr)
            margin_f = classification_margin(logits, y)
            if _uses_saliency(detector):
                s = _bpda_saliency(detector, xr, detector.saliency_target_for(logits), self.beta)
                d_logit = detector.logit_from_features(detector.assemble(xr, s))
            else:
                d_logit = detector.adversarial_logit(xr)
            margin_d = d_logit - _threshold_logit(detector)
            loss = (margin_f + self.kappa).clamp_min(0) + (margin_d + self.kappa).clamp_min(0)
            (grad,) = torch.autograd.grad(loss.sum(), xr)
        return loss.detach(), grad, (margin_f < 0).detach(), (margin_d <= 0).detach()

    def _run_pair(self, model, detector, x, y):
        if self.eps == 0:
            return x
        x_adv = x
        best = x
        best_both = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), math.inf, device=x.device)
        lo, hi = _linf_box(x, self.eps)
        for step in range(self.steps + 1):
            loss, grad, fooled, evaded = self._objective(model, detector, x_adv, y)
            both = fooled & evaded
            better = (both & ~best_both) | ((both == best_both) & (loss < best_loss))
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
            best_both |= both
            best_loss = torch.where(better, loss, best_loss)
            if step == self.steps or bool((best_both & (best_loss <= 0)).all()):
                break
            x_adv = torch.minimum(torch.maximum(x_adv - self.alpha * grad.sign(), lo), hi)
            if self._reporting:
                self._info(f"step {step + 1}/{self.steps} both {float(best_both.float().mean()):.2f}")
        return best


def attack_detector_pair(attack: AdaptiveAttack | Attack, classifier: nn.Module, detector: Detector, x: Tensor,
                         y: Tensor, evaluate_on: Detector | None = None) -> AdaptiveResult:
    """Run ``attack`` and score its adversarial images against ``evaluate_on`` (default: ``detector``).

    An ``AdaptiveAttack`` is run against (classifier, detector); any other ``Attack`` against the classifier
    alone (a first-round attack, ignorant of the detector). Passing a different ``evaluate_on`` gives the
    transfer setting: craft against a surrogate detector D′, evaluate against D.
    """
    if isinstance(attack, AdaptiveAttack):
        x_adv = attack(classifier, detector, x, y).x_adv
    elif isinstance(attack, Attack):
        x_adv = attack(classifier, x, y).x_adv
    else:
        raise InputError(f"attack must be an advsal Attack, got {type(attack).__name__}")
    return evaluate_pair(classifier, evaluate_on if evaluate_on is not None else detector, x, x_adv, y)


__all__ = ["AdaptiveAttack", "AdaptiveResult", "AdaptiveSaliencyAttack", "MetzenAttack",
           "attack_detector_pair", "check_pair_inputs", "evaluate_pair", "saliency_path_gradient",
           "softplus_relus"]
