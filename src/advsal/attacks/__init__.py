"""Adversarial attacks: one module per family on a shared base (``Attack`` → ``AttackResult``).

    from advsal.attacks import PGD, make_attack
    result = PGD(eps=0.3, steps=40)(model, x, y)
    result.success_rate(), result.x_adv, result.l2
"""

from .base import L0_TOLERANCE, Attack, AttackResult, perturbation_norms
from .carlini_wagner import CarliniWagnerL2
from .deepfool import DeepFool
from .epsilon import MinimalEpsilon, attacked_accuracy, minimal_epsilon
from .gradient import BIM, FGSM, PGD
from .jsma import JSMA
from .pixel import PixelAttack
from .registry import ATTACKS, PRESETS, attack_parameters, make_attack
from .targets import least_likely_targets, random_targets

__all__ = ["ATTACKS", "BIM", "FGSM", "JSMA", "L0_TOLERANCE", "PGD", "PRESETS", "Attack", "AttackResult",
           "CarliniWagnerL2", "DeepFool", "MinimalEpsilon", "PixelAttack", "attack_parameters",
           "attacked_accuracy", "least_likely_targets", "make_attack", "minimal_epsilon",
           "perturbation_norms", "random_targets"]
