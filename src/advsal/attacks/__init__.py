"""Adversarial attacks: one module per family on a shared base (``Attack`` → ``AttackResult``).

    from advsal.attacks import PGD, make_attack
    result = PGD(eps=0.3, steps=40)(model, x, y)
    result.success_rate(), result.x_adv, result.l2

Second-round attacks on a classifier guarded by a detector (``MetzenAttack``, ``AdaptiveSaliencyAttack``) take
the detector as well: ``attack_detector_pair(attack, classifier, detector, x, y)``.
"""

from .adaptive import AdaptiveResult, AdaptiveSaliencyAttack, MetzenAttack, attack_detector_pair
from .apgd import APGD, APGDT
from .autoattack import AutoAttack, AutoAttackResult
from .base import L0_TOLERANCE, Attack, AttackResult, perturbation_norms
from .carlini_wagner import CarliniWagnerL2
from .deepfool import DeepFool
from .detector_attacks import DetectorAttackEnsemble, DetectorPGD, strongest_attack
from .epsilon import (
    MinimalEpsilon,
    PerExampleEpsilon,
    attacked_accuracy,
    minimal_epsilon,
    minimal_epsilon_per_example,
)
from .fab import FABT
from .gradient import BIM, FGSM, PGD
from .jsma import JSMA
from .pixel import PixelAttack
from .registry import ATTACKS, PRESETS, attack_parameters, make_attack
from .sharding import craft_sharded
from .specs import ATTACK_SPECS, AttackSpec, attack_spec, display_name, register_attack_spec  # noqa: F401
from .square import Square
from .targets import least_likely_targets, random_targets

__all__ = ["APGD", "APGDT", "ATTACKS", "AutoAttack", "AutoAttackResult", "BIM", "FABT", "FGSM", "JSMA", "L0_TOLERANCE",
           "PGD", "PRESETS", "AdaptiveResult", "AdaptiveSaliencyAttack", "Attack", "AttackResult", "CarliniWagnerL2",
           "DeepFool", "MetzenAttack", "MinimalEpsilon", "PerExampleEpsilon", "PixelAttack", "Square",
           "attack_detector_pair", "attack_parameters", "attacked_accuracy", "craft_sharded", "least_likely_targets",
           "make_attack",
           "minimal_epsilon", "minimal_epsilon_per_example", "perturbation_norms", "random_targets"]
__all__ += ["DetectorAttackEnsemble", "DetectorPGD", "strongest_attack"]
