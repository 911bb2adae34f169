"""Attacks on a classifier F guarded by any detector D (the :class:`~advsal.detection.protocol.Detector`
protocol): Selective and Orthogonal PGD (Bryniarski, Hingun, Pachuca, Wang & Carlini, ICLR 2022, "Evading
adversarial example detection defenses with orthogonal projected gradient descent", §4), and PGD on the
combined margin loss of Carlini & Wagner 2017 §5 with a weight λ on the detector term, in L∞ and L2.

    attack = DetectorPGD(eps=0.14, mode="orthogonal", steps=100, restarts=2)
    res = attack(F, D, x, y)                 # AdaptiveResult: fooled_f, evaded_d, both (exact F and D)
    res = strongest_attack(eps=0.14)(F, D, x, y)   # the ensemble: best point per image over several attacks

The two objectives, both to be driven to zero (hinges with margin κ, in logit units):

    h_F(x) = max(Z_y(x) − max_{j≠y} Z_j(x) + κ, 0)      F misclassifies x (C&W's f₆)
    h_D(x) = max(ℓ_D(x) − logit(τ) + κ, 0)                D calls x clean at its threshold τ

``mode`` chooses the step direction from their gradients g_F, g_D (§4.1-4.2 of Bryniarski et al.):

* ``"combined"``: g_F + λ·g_D (one loss; λ = 0 is PGD on F alone);
* ``"selective"``: only the objectives not yet met, 1[h_F > 0]·g_F + λ·1[h_D > 0]·g_D;
* ``"orthogonal"``: while F is not fooled, g_F with its component along g_D removed; once it is, g_D with its
  component along g_F removed — so a step on one objective does not undo the other to first order.

Gradients of D come from its own autograd graph, except where they vanish or do not exist (Athalye, Carlini &
Wagner 2018, BPDA): the gradient saliency of a ReLU network (a
:class:`~advsal.detection.protocol.SaliencyInputDetector`) is differentiated through the softplus(β·) surrogate
(``adaptive.saliency_path_gradient``); a detector with ``differentiable = False`` uses a surrogate registered in
:data:`SURROGATES` (feature squeezing: the squeezers' backward is the identity), else its autograd gradient.
``eot`` > 1 averages g_D over that many evaluations (Expectation over Transformation, for randomised
detectors). The step size follows APGD's schedule (Croce & Hein 2020 §3.2, ``apgd.StepSizeSchedule``:
η₀ = 2ε, halved at checkpoints where the loss stalls, restarting from the best point) or is fixed
(``schedule="fixed"``: 2.5·ε/steps). Restart 0 starts at x, later restarts uniformly in the ε-ball.

Per image the attack keeps the best point: one that fools F and evades D, as checked by the **exact** F and
``detector.score`` at ``detector.threshold`` (the BPDA forward value is exact, but only a verified point counts),
else the lowest loss. An image leaves the batch once it has a verified success. Every point lies in the ε-ball
around x and in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..detection.protocol import Detector
from ..errors import InputError
from .adaptive import (
    AdaptiveAttack,
    _bpda_saliency,
    _threshold_logit,
    _uses_saliency,
    classification_margin,
    evaluate_pair,
)
from .apgd import StepSizeSchedule
from .base import NORMS, check_nonnegative, check_norm, check_positive_int, check_seed
from .gradient import _l2_normalise

MODES = ("combined", "selective", "orthogonal")
SCHEDULES = ("apgd", "fixed")
_TINY = 1e-12

#: Surrogate adversarial logits for detectors whose own gradient is useless (``differentiable = False``):
#: type → f(detector, x) with the exact forward value and a useful backward (BPDA).
SURROGATES: dict[type, Callable[[Detector, Tensor], Tensor]] = {}


def register_surrogate(kind: type, logit: Callable[[Detector, Tensor], Tensor]) -> None:
    """Use ``logit(detector, x)`` as the differentiable adversarial logit of detectors of type ``kind``."""
    SURROGATES[kind] = logit


def _squeezing_surrogate(detector, x: Tensor) -> Tensor:
    """Feature squeezing with each squeezer's backward replaced by the identity (BPDA): s(x) + x − x̄."""
    squeezed = [x + (s(x) - x).detach() for s in detector.squeezers().values()]
    probs = F.softmax(detector.classifier(torch.cat([x, *squeezed])).double(), 1).reshape(1 + len(squeezed),
                                                                                          len(x), -1)
    p = (0.5 * (probs[1:] - probs[:1]).abs().sum(2).max(0).values).clamp(1e-12, 1 - 1e-12)
    return (torch.log(p) - torch.log1p(-p)).float()


def _register_builtin() -> None:
    from ..detection.squeezing import FeatureSqueezingDetector

    register_surrogate(FeatureSqueezingDetector, _squeezing_surrogate)


_register_builtin()


# ------------------------------------------------------------------------------------------------ directions
def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(1)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def project_out(g: Tensor, h: Tensor) -> Tensor:
    """g minus its component along h, per example: g − (⟨g, h⟩ / ‖h‖²)·h (g itself where h = 0)."""
    coef = _dot(g, h) / _dot(h, h).clamp_min(_TINY)
    return g - _rows(coef, g) * h


def selective_direction(g_f: Tensor, g_d: Tensor, unmet_f: Tensor, unmet_d: Tensor, lam: float = 1.0) -> Tensor:
    """Selective PGD: the gradient of the objectives not yet met only, 1[unmet_F]·g_F + λ·1[unmet_D]·g_D."""
    return _rows(unmet_f, g_f).to(g_f.dtype) * g_f + lam * _rows(unmet_d, g_d).to(g_d.dtype) * g_d


def orthogonal_direction(g_f: Tensor, g_d: Tensor, unmet_f: Tensor, unmet_d: Tensor) -> Tensor:
    """Orthogonal PGD: while F is not fooled, g_F ⊥ g_D; once it is and D is not evaded, g_D ⊥ g_F; else 0."""
    on_f = _rows(unmet_f, g_f)
    on_d = _rows(~unmet_f & unmet_d, g_d)
    zero = torch.zeros_like(g_f)
    return torch.where(on_f, project_out(g_f, g_d), torch.where(on_d, project_out(g_d, g_f), zero))


# ------------------------------------------------------------------------------------------------ the attack
def detector_logit(model: nn.Module, detector: Detector, x: Tensor, logits: Tensor, beta: float) -> Tensor:
    """D's adversarial logit at x with a useful gradient: BPDA through the saliency (softplus β surrogate), a
    registered surrogate for a non-differentiable detector, else the detector's own ``adversarial_logit``."""
    if _uses_saliency(detector):
        s = _bpda_saliency(detector, x, detector.saliency_target_for(logits), beta)
        return detector.logit_from_features(detector.assemble(x, s))
    if not getattr(detector, "differentiable", True):
        for kind, surrogate in SURROGATES.items():
            if isinstance(detector, kind):
                return surrogate(detector, x)
    return detector.adversarial_logit(x)


class DetectorPGD(AdaptiveAttack):
    """PGD on F and any detector D: Selective / Orthogonal PGD (Bryniarski et al. 2022) or the combined
    margin loss (Carlini & Wagner 2017), L∞ or L2; see the module docstring.

    Parameters:
        eps (float): budget in pixel units (L∞ or L2 by ``norm``).
        norm (str): "linf" (default) or "l2".
        mode (str): "combined" (default), "selective" or "orthogonal".
        steps (int): iterations per restart (default 100).
        restarts (int): starts per image (default 1; restart 0 from x, then uniform in the ball).
        lam (float): weight λ of the detector term (combined, selective; default 1).
        kappa (float): hinge margin κ in logit units (default 2).
        kappa_d (float | None): margin of the detector hinge alone (default ``kappa``): the attack aims at
            ``logit(τ) − kappa_d`` so that a later step on F does not push D back over its threshold.
        beta (float | sequence): softplus sharpness of the saliency surrogate (default 10); a sequence is a
            schedule over restarts (restart r uses ``beta[r % len(beta)]``): different surrogates, different
            gradients.
        warm (bool): restarts after the first start from the best point so far plus uniform noise of half the
            budget, instead of uniformly in the ball (default False).
        normalize (bool): combined / selective direction from per-example unit gradients,
            ĝ_F + λ·ĝ_D, so that neither objective's scale swamps the other's sign (default False).
        eot (int): detector gradient averaged over this many evaluations (randomised detectors; default 1).
        schedule (str): "apgd" (default) or "fixed" step sizes.
        seed (int): seeds the random starts.
    Input: images (N, C, H, W) in [0, 1]; untargeted; D's threshold is ``detector.threshold`` (the attacker
    knows it). Returns an ``AdaptiveResult``.
    """

    name = "detector-pgd"

    def __init__(self, eps: float, norm: str = "linf", mode: str = "combined", steps: int = 100,
                 restarts: int = 1, lam: float = 1.0, kappa: float = 2.0, beta: float | Sequence[float] = 10.0,
                 eot: int = 1, schedule: str = "apgd", seed: int = 0, kappa_d: float | None = None,
                 warm: bool = False, normalize: bool = False, batch_size: int | None = None):
        super().__init__(batch_size)
        self.eps = check_nonnegative("eps", eps)
        check_norm(norm)
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.norm, self.mode, self.schedule = norm, mode, schedule
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.lam = check_nonnegative("lam", lam)
        self.kappa = check_nonnegative("kappa", kappa)
        self.kappa_d = self.kappa if kappa_d is None else check_nonnegative("kappa_d", kappa_d)
        betas = list(beta) if isinstance(beta, (list, tuple)) else [beta]
        if not betas or not all(isinstance(b, (int, float)) and b > 0 for b in betas):
            raise InputError(f"beta (softplus sharpness of the surrogate) must be > 0 or a non-empty list of "
                             f"such values, got {beta!r}")
        self.betas = [float(b) for b in betas]
        self.beta = self._beta_now = self.betas[0]
        self.warm, self.normalize = bool(warm), bool(normalize)
        self.eot = check_positive_int("eot", eot)
        self.seed = check_seed(seed)

    @property
    def label(self) -> str:
        """Short name for tables: mode, λ where it matters, the options that differ from the defaults, norm."""
        lam = f"-lam{self.lam:g}" if self.mode != "orthogonal" else ""
        several = self.restarts > 1  # the β schedule and warm starts act from the second restart on
        betas = self.betas[:self.restarts]
        opts = "".join([f"-kd{self.kappa_d:g}" if self.kappa_d != self.kappa else "",
                        "-beta" + "/".join(f"{b:g}" for b in betas) if len(set(betas)) > 1 else
                        (f"-beta{betas[0]:g}" if betas[0] != 10.0 else ""),
                        "-norm" if self.normalize and self.mode != "orthogonal" else "",
                        "-warm" if self.warm and several else ""])
        return f"{self.mode}{lam}{opts}-{self.norm}"

    # -- geometry --
    def _project(self, x_new: Tensor, x: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.minimum(torch.maximum(x_new, (x - self.eps).clamp_min(0)), (x + self.eps).clamp_max(1))
        delta = x_new - x
        norms = delta.flatten(1).norm(dim=1).clamp_min(_TINY)
        delta = delta * _rows(torch.clamp(self.eps / norms, max=1.0), delta)
        return (x + delta).clamp(0, 1)  # clipping to [0, 1] only shortens δ: it stays in the ball

    def _random_start(self, x: Tensor, gen: torch.Generator, scale: float = 1.0) -> Tensor:
        """A uniform point within ``scale``·ε of x (L∞ box, or L2 ball radius); not yet projected to the ball
        around the clean image (``_run_once`` does that)."""
        radius = scale * self.eps
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1
            return (x + radius * u).clamp(0, 1)
        d = torch.randn(x.shape, generator=gen).to(x.device)
        r = torch.rand(len(x), generator=gen).to(x.device)
        return (x + _rows(radius * r, x) * _l2_normalise(d)).clamp(0, 1)

    def _step(self, x_adv: Tensor, direction: Tensor, step: Tensor) -> Tensor:
        unit = direction.sign() if self.norm == "linf" else _l2_normalise(direction)
        return x_adv - _rows(step, x_adv) * unit

    # -- objective --
    def _objective(self, model, detector, x_adv: Tensor, y: Tensor, thr: float):
        """(h_F, h_D, g_F, g_D, margin_F, margin_D) at x_adv; margins are the exact forward values."""
        g_d = torch.zeros_like(x_adv)
        h_d_sum = torch.zeros(len(x_adv), device=x_adv.device)
        for _ in range(self.eot):
            with torch.enable_grad():
                xr = x_adv.detach().requires_grad_(True)
                logits = model(xr)
                margin_f = classification_margin(logits, y)
                margin_d = detector_logit(model, detector, xr, logits, self._beta_now).to(xr.dtype) - thr
                h_f = (margin_f + self.kappa).clamp_min(0)
                h_d = (margin_d + self.kappa_d).clamp_min(0)
                (g_f,) = torch.autograd.grad(h_f.sum(), xr, retain_graph=True)
                # a detector logit without a graph to x (no gradient at all) contributes no direction
                (gd,) = (torch.autograd.grad(h_d.sum(), xr, allow_unused=True) if h_d.requires_grad else (None,))
            g_d += torch.zeros_like(xr) if gd is None else gd
            h_d_sum += h_d.detach()
        return (h_f.detach(), h_d_sum / self.eot, g_f, g_d / self.eot, margin_f.detach(), margin_d.detach())

    def _direction(self, g_f: Tensor, g_d: Tensor, h_f: Tensor, h_d: Tensor) -> Tensor:
        if self.normalize and self.mode != "orthogonal":
            g_f = g_f / _rows(g_f.flatten(1).norm(dim=1).clamp_min(_TINY), g_f)
            g_d = g_d / _rows(g_d.flatten(1).norm(dim=1).clamp_min(_TINY), g_d)
        if self.mode == "combined":
            return g_f + self.lam * g_d
        if self.mode == "selective":
            return selective_direction(g_f, g_d, h_f > 0, h_d > 0, self.lam)
        return orthogonal_direction(g_f, g_d, h_f > 0, h_d > 0)

    # -- one run over a batch --
    def _run_pair(self, model, detector, x, y):
        best = x.clone()
        if self.eps == 0:
            return best
        thr = _threshold_logit(detector)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), math.inf, device=x.device)
        gen = torch.Generator().manual_seed(self.seed)
        for restart in range(self.restarts):
            idx = (~done).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            xs, ys = x[idx], y[idx]
            if restart == 0:
                start = xs.clone()
            elif self.warm:  # from the best point so far, shaken by noise of half the budget
                start = self._random_start(best[idx], gen, 0.5)
            else:
                start = self._random_start(xs, gen)
            self._beta_now = self.betas[restart % len(self.betas)]
            found, loss = self._run_once(model, detector, xs, ys, start, thr)
            better = found[1] | (~done[idx] & (loss < best_loss[idx]))
            sel = idx[better]
            best[sel] = found[0][better]
            best_loss[sel] = loss[better]
            done[idx] |= found[1]
            if self._reporting:
                self._info(f"restart {restart + 1}/{self.restarts} both {float(done.float().mean()):.2f}")
        return best

    def _verify(self, model, detector, x_c: Tensor, y_c: Tensor) -> Tensor:
        """Exact F and D on candidate points: F misclassifies and D's score is at most its threshold."""
        with torch.no_grad():
            fooled = model(x_c).argmax(1) != y_c
        return fooled & (detector.score(x_c).to(x_c.device) <= detector.threshold)

    def _run_once(self, model, detector, x, y, start, thr):
        """One restart on all of x: ((best points, verified success), their loss)."""
        n = len(x)
        x_adv = self._project(start, x)
        best = x_adv.clone()
        best_loss = torch.full((n,), math.inf, device=x.device)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        step0 = 2 * self.eps if self.schedule == "apgd" else 2.5 * self.eps / self.steps
        active = torch.arange(n, device=x.device)
        schedule: StepSizeSchedule | None = None
        step = torch.full((n,), step0, device=x.device)
        for k in range(self.steps + 1):
            xa, ya, xo = x_adv[active], y[active], x[active]
            h_f, h_d, g_f, g_d, m_f, m_d = self._objective(model, detector, xa, ya, thr)
            loss = h_f + self.lam * h_d if self.mode != "orthogonal" else h_f + h_d
            # bookkeeping: the lowest loss so far; a success only once exact F and D agree
            claim = (m_f < 0) & (m_d <= 0)
            verified = torch.zeros_like(claim)
            if claim.any():
                verified[claim] = self._verify(model, detector, xa[claim], ya[claim])
            better = verified | (loss < best_loss[active])
            sel = active[better]
            best[sel] = xa[better]
            best_loss[sel] = loss[better]
            success[active[verified]] = True
            keep = ~verified
            if k == self.steps or not keep.any():
                break
            if self.schedule == "apgd":
                if schedule is None:
                    schedule = StepSizeSchedule(self.steps, -loss, step[active])
                else:
                    halved = schedule.observe(-loss)
                    if halved is not None and halved.any():  # restart those from their best point
                        xa = torch.where(_rows(halved, xa), best[active], xa)
                step_now = schedule.step
            else:
                step_now = step[active]
            x_new = self._project(self._step(xa, self._direction(g_f, g_d, h_f, h_d), step_now), xo)
            x_adv[active] = x_new
            active = active[keep]
            if schedule is not None:
                schedule.keep(keep.nonzero().squeeze(1))
            if self._reporting:
                self._info(f"step {k + 1}/{self.steps} both {float(success.float().mean()):.2f}")
        return (best, success), best_loss


class DetectorAttackEnsemble(AdaptiveAttack):
    """Several attacks on (F, D), each run on the images the previous ones did not break (like AutoAttack for
    classifiers): per image the first verified point that fools F and evades D, else the last attack's point.

    ``fooled_any`` after a call: per image whether any attack's point fooled F (exactly), whatever D said."""

    name = "detector-ensemble"

    def __init__(self, attacks: Sequence[AdaptiveAttack], batch_size: int | None = None):
        super().__init__(batch_size)
        attacks = list(attacks)
        if not attacks or not all(isinstance(a, AdaptiveAttack) for a in attacks):
            raise InputError("DetectorAttackEnsemble needs a non-empty list of AdaptiveAttack objects "
                             "(e.g. DetectorPGD(...))")
        self.attacks = attacks
        self.fooled_any_: Tensor | None = None
        self.winner_: Tensor | None = None

    def _run_pair(self, model, detector, x, y):
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        fooled = torch.zeros_like(done)
        winner = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        for i, attack in enumerate(self.attacks):
            idx = (~done).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            adv = attack._run_pair(model, detector, x[idx], y[idx]).detach()
            res = evaluate_pair(model, detector, x[idx], adv, y[idx])
            both, f = res.both.to(x.device), res.fooled_f.to(x.device)
            fooled[idx] |= f
            best[idx] = torch.where(_rows(both | f | (i == 0), adv), adv, best[idx])
            winner[idx[both]] = i
            done[idx] |= both
            if self._reporting:
                self._info(f"{i + 1}/{len(self.attacks)} both {float(done.float().mean()):.2f}")
        self.fooled_any_ = torch.cat([self.fooled_any_, fooled.cpu()]) if self._accumulate else fooled.cpu()
        self.winner_ = torch.cat([self.winner_, winner.cpu()]) if self._accumulate else winner.cpu()
        self._accumulate = True
        return best

    _accumulate = False

    def __call__(self, classifier, detector, x, y=None):
        self._accumulate, self.fooled_any_, self.winner_ = False, None, None
        return super().__call__(classifier, detector, x, y)


def strongest_attack(eps: float, norm: str = "linf", steps: int = 100, restarts: int = 2,
                     lams: Sequence[float] = (1.0, 4.0), kappa: float = 2.0, beta: float = 10.0, eot: int = 1,
                     seed: int = 0, modes: Sequence[str] = ("orthogonal", "selective"),
                     warm_modes: Sequence[str] = ("selective", "orthogonal"),
                     warm_betas: Sequence[float] = (10.0, 3.0, 30.0), warm_kappa_d: float = 5.0,
                     batch_size: int | None = None) -> DetectorAttackEnsemble:
    """The library's strongest attack on (F, D) at budget ``eps``: an ensemble, best point per image, each
    member with APGD's step sizes and ``restarts`` starts, run on the images the previous ones did not break:

    1. ``modes``: Orthogonal PGD, Selective PGD over the λ sweep ``lams`` (``"combined"`` adds combined-loss PGD
       per λ; with the hinge losses it steps like Selective PGD, so it is not in the default);
    2. ``warm_modes``: the same step rules once more, each restart from the best point so far (``warm``), the
       surrogate's sharpness varied over restarts (``warm_betas``) — Selective PGD per λ with unit-normalised
       gradients (``normalize``), Orthogonal PGD aiming ``warm_kappa_d`` logits below the threshold;
    3. PGD on F alone (λ = 0; it counts the images F alone can be fooled on).

    Pass ``warm_modes=()`` for the first and last groups only."""
    for mode in (*modes, *warm_modes):
        if mode not in MODES:
            raise InputError(f"modes must be drawn from {', '.join(MODES)}, got {mode!r}")
    common = {"eps": eps, "norm": norm, "steps": steps, "restarts": restarts, "kappa": kappa, "beta": beta,
              "eot": eot, "seed": seed}
    attacks: list[AdaptiveAttack] = []
    for mode in modes:
        if mode == "orthogonal":
            attacks.append(DetectorPGD(mode="orthogonal", **common))
        else:
            attacks += [DetectorPGD(mode=mode, lam=lam, **common) for lam in lams]
    warm = {**common, "beta": tuple(warm_betas), "warm": True, "seed": seed + 1}
    for mode in warm_modes:
        if mode == "orthogonal":
            attacks.append(DetectorPGD(mode="orthogonal", kappa_d=warm_kappa_d, **warm))
        else:
            attacks += [DetectorPGD(mode=mode, lam=lam, normalize=True, **warm) for lam in lams]
    attacks.append(DetectorPGD(mode="combined", lam=0.0, **{**common, "restarts": 1}))
    return DetectorAttackEnsemble(attacks, batch_size=batch_size)


__all__ = ["MODES", "NORMS", "SURROGATES", "DetectorAttackEnsemble", "DetectorPGD", "detector_logit",
           "orthogonal_direction", "project_out", "register_surrogate", "selective_direction",
           "strongest_attack"]
