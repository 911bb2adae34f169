"""What a study, the command line and the report need to know about an attack, by name: one :class:`AttackSpec`.

    spec = attack_spec("bim")
    spec.display                       # "Iterative L∞" (tables and figures)
    spec.eps_bracket                   # (0.0, 1.0): ε is chosen by the minimal-ε search in this bracket
    attack = spec.build({"steps": 10}, eps=0.12)
    targets = spec.choose_targets(model, x, y, seed=0)   # None for untargeted attacks

Adding an attack to the studies is one entry: ``register_attack_spec(AttackSpec("my-attack", "Mine",
factory=lambda params, eps: MyAttack(eps=eps, **params)))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from ..errors import InputError
from ..tensors import predict_logits
from .base import Attack
from .registry import make_attack
from .targets import random_targets

AttackFactory = Callable[[dict[str, Any], "float | None"], Attack]


@dataclass(frozen=True)
class AttackSpec:
    """An attack as the studies compare it.

    ``name``: its key in configs and results. ``display``: its name in tables and figures. ``eps_bracket``:
    (lo, hi) of the minimal-ε search (seed 001 §IV-B) for attacks with a budget ε, None for attacks that are not
    budget-searched (C&W, JSMA, DeepFool). ``targets``: "none" (untargeted) or "random" (a seeded random other
    class per image, as JSMA is run in its paper). ``factory(params, eps)`` builds the attack (default:
    ``make_attack(name, **params, eps=eps)`` from :mod:`advsal.attacks.registry`; ``eps`` is None when the attack
    has no budget).
    """

    name: str
    display: str
    eps_bracket: tuple[float, float] | None = None
    targets: Literal["none", "random"] = "none"
    factory: AttackFactory | None = None

    @property
    def budgeted(self) -> bool:
        """Whether ε is chosen by the minimal-ε search."""
        return self.eps_bracket is not None

    def build(self, params: Mapping[str, Any], eps: float | None = None, *, batch_size: int | None = None) -> Attack:
        """The attack with ``params`` (and budget ``eps``); ``batch_size`` chunks its work (results unchanged)."""
        if self.factory is not None:
            attack = self.factory(dict(params), None if eps is None else float(eps))
        else:
            attack = make_attack(self.name, **dict(params), **({} if eps is None else {"eps": float(eps)}))
        if not isinstance(attack, Attack):
            raise InputError(f"the factory of attack {self.name!r} returned a {type(attack).__name__}, not an "
                             "advsal Attack")
        if batch_size is not None:
            attack.batch_size = batch_size
        return attack

    def choose_targets(self, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor | None:
        """The target class per image under this attack's target policy (None: untargeted)."""
        if self.targets == "none":
            return None
        num_classes = int(predict_logits(model, x[:1]).shape[1])
        return random_targets(y, num_classes, seed=seed)


ATTACK_SPECS: dict[str, AttackSpec] = {}


def register_attack_spec(spec: AttackSpec) -> AttackSpec:
    """Add (or replace) ``spec`` under ``spec.name``; studies, the CLI and the report then know the attack."""
    if not isinstance(spec, AttackSpec):
        raise InputError(f"register_attack_spec takes an AttackSpec, got {type(spec).__name__}")
    if spec.eps_bracket is not None and not 0 <= spec.eps_bracket[0] < spec.eps_bracket[1]:
        raise InputError(f"attack {spec.name!r}: eps_bracket must be (lo, hi) with 0 ≤ lo < hi, got "
                         f"{spec.eps_bracket}")
    if spec.targets not in ("none", "random"):
        raise InputError(f"attack {spec.name!r}: targets must be 'none' or 'random', got {spec.targets!r}")
    ATTACK_SPECS[spec.name] = spec
    return spec


def attack_spec(name: str) -> AttackSpec:
    """The registered spec of attack ``name`` (ValueError listing the known ones)."""
    if name not in ATTACK_SPECS:
        raise InputError(f"unknown attack {name!r}; registered: {', '.join(ATTACK_SPECS)}")
    return ATTACK_SPECS[name]


def display_name(name: str) -> str:
    """An attack's display name, or ``name`` itself for one that is not registered."""
    return ATTACK_SPECS[name].display if name in ATTACK_SPECS else name


for _spec in (AttackSpec("fgsm", "FGSM", (0.0, 1.0)),
              AttackSpec("bim", "Iterative L∞", (0.0, 1.0)),
              AttackSpec("bim-l2", "Iterative L2", (0.0, 10.0)),
              AttackSpec("pgd", "PGD L∞", (0.0, 1.0)),
              AttackSpec("pgd-l2", "PGD L2", (0.0, 10.0)),
              AttackSpec("cw", "C&W L2"),
              AttackSpec("jsma", "JSMA", targets="random"),
              AttackSpec("deepfool", "DeepFool"),
              AttackSpec("fab-t", "FAB-T"),
              AttackSpec("pixel", "Pixel attack")):
    register_attack_spec(_spec)

__all__ = ["ATTACK_SPECS", "AttackSpec", "attack_spec", "display_name", "register_attack_spec"]
