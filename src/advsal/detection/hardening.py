"""A detector hardened against adaptive attacks: Metzen, Genewein, Fischer & Bischoff (ICLR 2017, "On detecting
adversarial perturbations") §3.3 / §4.2, dynamic adversary training — alternately craft adaptive adversarial
examples against the *current* (classifier, detector) pair and continue training the detector on them.

    hard = harden_detector(F, D, x_train, y_train, eps=0.1, rounds=3)
    hard.detector          # a copy of D (F shared, not copied), trained against the adaptive attack
    hard.rounds            # per round: the attack's success rate on the training images before the update

Each round crafts, on the training images, adversarial examples with the library's Orthogonal and combined-loss
PGD against the current D (``advsal.attacks.detector_attacks``; one image's attacks alternate by round, so the
detector sees both step rules), adds them to the adversarial training pool (with the static examples it was
trained on, if given), and fits D further on clean vs pool. The adversarially trained *classifier* it is
compared with (Madry et al. 2018; Tramèr 2022 links the two) is :func:`advsal.training.adversarial_train_classifier`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..tensors import check_images, check_labels
from .protocol import Detector


@dataclass
class HardenedDetector:
    """The hardened detector and, per round, the adaptive attack's rates on the training images before the
    round's update (``both``: fooled F and evaded D), the pool size and the seconds it took."""

    detector: Detector
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.detector.params(), "rounds": self.rounds}


def harden_detector(classifier: nn.Module, detector: Detector, x: Tensor, y: Tensor, eps: float,
                    norm: str = "linf", rounds: int = 3, steps: int = 20, x_adv_static: Tensor | None = None,
                    epochs: int = 2, lr: float = 1e-3, batch_size: int = 64, kappa: float = 2.0,
                    seed: int = 0) -> HardenedDetector:
    """Dynamic adversary training of a fitted ``detector`` guarding ``classifier`` (see the module docstring).

    ``x``, ``y``: clean training images and labels (the attack's starting points and D's clean class).
    ``eps``/``norm``: the budget the adversary uses; ``rounds`` × (craft with ``steps`` PGD steps, fit
    ``epochs`` more epochs at ``lr``). ``x_adv_static``: first-round adversarial examples kept in the pool (so
    the detector does not forget them). The given detector is not modified: a copy is trained (sharing F).
    """
    import time

    from ..attacks.detector_attacks import DetectorPGD

    check_images(x)
    check_labels(y, len(x), name="y")
    if not detector.is_fitted:
        raise InputError("harden_detector starts from a trained detector: call detector.fit(x_clean, x_adv) first")
    if rounds < 1 or steps < 1 or epochs < 1:
        raise InputError(f"rounds, steps and epochs must be ≥ 1, got {rounds}, {steps}, {epochs}")
    memo = {id(classifier): classifier}
    det = copy.deepcopy(detector, memo)
    pool = [x_adv_static] if x_adv_static is not None else []
    out = HardenedDetector(det)
    device = x.device
    for r in range(rounds):
        start = time.perf_counter()
        mode = ("orthogonal", "combined")[r % 2]
        attack = DetectorPGD(eps=eps, norm=norm, mode=mode, steps=steps, kappa=kappa, seed=seed + r)
        res = attack(classifier, det, x, y)
        pool.append(res.x_adv.to(device))
        x_adv = torch.cat(pool)
        x_clean = x.repeat(len(pool), 1, 1, 1) if len(pool) > 1 else x
        det.fit(x_clean, x_adv, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + r)
        out.rounds.append({"round": r + 1, "mode": mode, **res.rates(), "pool": len(x_adv),
                           "seconds": time.perf_counter() - start})
    return out


__all__ = ["HardenedDetector", "harden_detector"]
