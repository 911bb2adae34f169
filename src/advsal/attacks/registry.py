"""Attacks by name, for the command line and configuration files."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InputError
from .apgd import APGD, APGDT
from .autoattack import AutoAttack
from .base import Attack
from .carlini_wagner import CarliniWagnerL2
from .deepfool import DeepFool
from .fab import FABT
from .gradient import BIM, FGSM, PGD
from .jsma import JSMA
from .pixel import PixelAttack
from .square import Square

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM, "bim": BIM, "bim-l2": BIM, "pgd": PGD, "pgd-l2": PGD,
    "jsma": JSMA, "cw": CarliniWagnerL2, "deepfool": DeepFool, "pixel": PixelAttack,
    "apgd-ce": APGD, "apgd-ce-l2": APGD, "apgd-dlr": APGD, "apgd-dlr-l2": APGD, "apgd-t": APGDT,
    "apgd-t-l2": APGDT, "fab-t": FABT, "fab-t-l2": FABT, "square": Square, "square-l2": Square,
    "autoattack": AutoAttack, "autoattack-l2": AutoAttack,
}
#: Parameters fixed by a registry name (e.g. "bim-l2" is BIM with norm="l2").
PRESETS: dict[str, dict[str, Any]] = {"bim": {"norm": "linf"}, "bim-l2": {"norm": "l2"},
                                      "pgd": {"norm": "linf"}, "pgd-l2": {"norm": "l2"},
                                      "apgd-ce": {"norm": "linf", "loss": "ce"},
                                      "apgd-ce-l2": {"norm": "l2", "loss": "ce"},
                                      "apgd-dlr": {"norm": "linf", "loss": "dlr"},
                                      "apgd-dlr-l2": {"norm": "l2", "loss": "dlr"},
                                      "apgd-t": {"norm": "linf"}, "apgd-t-l2": {"norm": "l2"},
                                      "fab-t": {"norm": "linf"}, "fab-t-l2": {"norm": "l2"},
                                      "square": {"norm": "linf"}, "square-l2": {"norm": "l2"},
                                      "autoattack": {"norm": "linf"}, "autoattack-l2": {"norm": "l2"}}


def attack_parameters(name: str) -> dict[str, Any]:
    """The parameters ``make_attack(name, ...)`` accepts, with defaults (``inspect.Parameter.empty`` if
    required)."""
    cls = _lookup(name)
    fixed = PRESETS.get(name, {})
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.name not in fixed}


def _lookup(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; available: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def make_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered as ``name`` with ``params`` (e.g. ``make_attack("pgd-l2", eps=2.0)``)."""
    cls = _lookup(name)
    accepted = attack_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        fixed = [p for p in unknown if p in PRESETS.get(name, {})]
        hint = f" ({', '.join(fixed)} is fixed by the name {name!r})" if fixed else ""
        raise InputError(f"attack {name!r} has no parameter {', '.join(unknown)}{hint}; accepted: "
                         f"{', '.join(accepted)}")
    missing = [p for p, d in accepted.items() if d is inspect.Parameter.empty and p not in params]
    if missing:
        raise InputError(f"attack {name!r} needs {', '.join(missing)} (e.g. make_attack({name!r}, "
                         f"{missing[0]}=...))")
    return cls(**PRESETS.get(name, {}), **params)
