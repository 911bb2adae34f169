"""Security evaluation of a detector-guarded classifier under adaptive attacks (Carlini & Wagner 2017;
Bryniarski et al. 2022; Tramèr 2022): robust-detection curves over the budget ε.

    res = robust_detection(F, D, x, y, eps=[0.0, 0.1, 0.2], fpr=0.05, x_calibration=x_heldout)
    res.both          # per ε: share of images whose worst-case point fools F and evades D
    res.to_dict()     # JSON-able

The threshold is D's own (``fpr=None``) or calibrated on the held-out clean images ``x_calibration`` to the
clean false-positive rate ``fpr`` (restored afterwards); the attacker knows it. Per ε and image the strongest
attack counts: by default :func:`advsal.attacks.detector_attacks.strongest_attack` (an ensemble, best point per
image). Per ε the result reports

* ``fooled_f``: F misclassifies the returned point; ``evaded_d``: D calls it clean; ``both``: the two at once
  (the attack's success rate);
* ``fooled_any``: some attack of the ensemble fooled F (whatever D said) — what F alone would concede;
* ``robust_tpr``: of the images on which F can be fooled, the share on which no point fools F *and* passes D,
  1 − both / fooled_any (the detection rate of worst-case adversarial examples at this FPR; NaN when F cannot
  be fooled);
* ``robust_accuracy``: the guarded system's accuracy under attack — the image is classified correctly or
  flagged, 1 − both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..tensors import check_images, check_labels
from .protocol import Detector


@dataclass
class RobustDetectionResult:
    """Robust-detection curve of one (classifier, detector) pair; lists run over ``eps``."""

    norm: str
    eps: list[float]
    fpr: float | None
    threshold: float
    clean_fpr: float | None
    n: int
    fooled_f: list[float] = field(default_factory=list)
    evaded_d: list[float] = field(default_factory=list)
    both: list[float] = field(default_factory=list)
    fooled_any: list[float] = field(default_factory=list)
    robust_tpr: list[float] = field(default_factory=list)
    robust_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    winners: list[dict[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (NaN kept as float('nan'))."""
        return asdict(self)

    def at(self, eps: float) -> dict[str, float]:
        """The row for budget ``eps``."""
        i = min(range(len(self.eps)), key=lambda j: abs(self.eps[j] - eps))
        return {k: getattr(self, k)[i] for k in ("fooled_f", "evaded_d", "both", "fooled_any", "robust_tpr",
                                                   "robust_accuracy")}


def _default_attacks(norm: str, steps: int, restarts: int, seed: int) -> Callable[[float], Any]:
    from ..attacks.detector_attacks import strongest_attack

    return lambda eps: strongest_attack(eps, norm=norm, steps=steps, restarts=restarts, seed=seed)


def robust_detection(classifier: nn.Module, detector: Detector, x: Tensor, y: Tensor, eps: Sequence[float],
                     fpr: float | None = 0.05, attacks: Callable[[float], Any] | None = None,
                     x_calibration: Tensor | None = None, norm: str = "linf", steps: int = 100,
                     restarts: int = 2, seed: int = 0) -> RobustDetectionResult:
    """Robust-detection curve of ``detector`` guarding ``classifier`` on images ``x`` (labels ``y``; pass
    correctly classified images) over the budgets ``eps``; see the module docstring.

    ``attacks(eps)`` builds the attack for one budget: an ``AdaptiveAttack`` (e.g. a ``DetectorAttackEnsemble``),
    default the library's strongest ensemble with ``norm``, ``steps`` and ``restarts``. With ``fpr`` set,
    ``x_calibration`` (held-out clean images) is required and D's threshold is calibrated on it for the
    evaluation (then restored); ``fpr=None`` evaluates at D's own threshold.
    """
    from ..attacks.adaptive import AdaptiveAttack, evaluate_pair

    check_images(x)
    check_labels(y, len(x), name="y")
    eps = [float(e) for e in eps]
    if not eps or any(not math.isfinite(e) or e < 0 for e in eps):
        raise InputError(f"eps must be a non-empty list of budgets ≥ 0, got {eps}")
    if fpr is not None and (x_calibration is None or not 0 < fpr < 1):
        raise InputError("a calibrated threshold needs held-out clean images x_calibration and a rate fpr in "
                         f"(0, 1) (got fpr={fpr}); pass fpr=None to use the detector's own threshold")
    build = attacks or _default_attacks(norm, steps, restarts, seed)
    original = detector.threshold
    clean_fpr = None
    try:
        if fpr is not None:
            check_images(x_calibration, "x_calibration")
            detector.calibrate(x_calibration, fpr)
            clean_fpr = float((detector.score(x_calibration) > detector.threshold).float().mean())
        res = RobustDetectionResult(norm=norm, eps=eps, fpr=fpr, threshold=float(detector.threshold),
                                    clean_fpr=clean_fpr, n=len(x))
        import time

        for e in eps:
            start = time.perf_counter()
            if e == 0:
                out = evaluate_pair(classifier, detector, x, x, y)
                fooled_any = out.fooled_f
                winners: dict[str, int] = {}
            else:
                attack = build(e)
                if not isinstance(attack, AdaptiveAttack):
                    raise InputError(f"attacks(eps) must return an AdaptiveAttack, got {type(attack).__name__}")
                out = attack(classifier, detector, x, y)
                fooled_any = getattr(attack, "fooled_any_", None)
                fooled_any = out.fooled_f if fooled_any is None else (fooled_any.to(out.fooled_f.device)
                                                                      | out.fooled_f)
                winners = {}
                if getattr(attack, "winner_", None) is not None:
                    for i, a in enumerate(attack.attacks):
                        label = getattr(a, "label", type(a).__name__)
                        count = int((attack.winner_ == i).sum())
                        if count:
                            winners[label] = winners.get(label, 0) + count
            both = float(out.both.float().mean())
            f_any = float(fooled_any.float().mean())
            res.fooled_f.append(float(out.fooled_f.float().mean()))
            res.evaded_d.append(float(out.evaded_d.float().mean()))
            res.both.append(both)
            res.fooled_any.append(f_any)
            res.robust_tpr.append(1 - both / f_any if f_any > 0 else float("nan"))
            res.robust_accuracy.append(1 - both)
            res.seconds.append(time.perf_counter() - start)
            res.winners.append(winners)
    finally:
        detector.threshold = original
    return res


def correctly_classified(classifier: nn.Module, x: Tensor, y: Tensor, n: int | None = None) -> Tensor:
    """Indices of the first ``n`` (all when None) images the classifier gets right."""
    from ..tensors import predict_logits

    with torch.no_grad():
        ok = (predict_logits(classifier, x).argmax(1).cpu() == y.cpu()).nonzero().squeeze(1)
    return ok if n is None else ok[:n]


__all__ = ["RobustDetectionResult", "correctly_classified", "robust_detection"]
