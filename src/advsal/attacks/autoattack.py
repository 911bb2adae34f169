"""AutoAttack (Croce & Hein, ICML 2020, §5): a parameter-free ensemble of diverse attacks for robustness
evaluation.

``version="standard"``: APGD-CE, then APGD-T (targeted DLR, 9 targets), then FAB-T (9 targets), then Square
(5,000 queries) — each attack only on the images every earlier one left correctly classified.
``version="rand"`` (for randomised defences): APGD-CE and APGD-DLR, each averaging the gradient over 20 passes
(EOT).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn

from ..errors import InputError
from .apgd import APGD, APGDT
from .base import Attack, AttackResult, check_norm, check_positive_int, check_seed, default_budget
from .fab import FABT
from .square import Square

VERSIONS = ("standard", "rand")


@dataclass
class AutoAttackResult(AttackResult):
    """``AttackResult`` plus ``robust_accuracy`` (fraction of all images still correctly classified after
    the ensemble; images misclassified already count as broken), ``components`` (the attacks in order) and
    ``broken_by`` (per image: "clean" if misclassified before any attack, the name of the first component
    that broke it, or "" if it stayed robust)."""

    robust_accuracy: float = 0.0
    components: tuple[str, ...] = ()
    broken_by: list[str] = field(default_factory=list)


class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020): the standard or the "rand" ensemble, each image attacked by the next
    method only while it is still correctly classified.

    Arguments:
        norm (str): "linf" or "l2" (default "linf").
        eps (float or Tensor): budget, one number or one per example (shape (N,)); default 8/255 under L∞,
            none under L2.
        version (str): "standard" (APGD-CE, APGD-T, FAB-T, Square) or "rand" (APGD-CE, APGD-DLR with EOT 20).
        steps (int): APGD and FAB iterations (default 100). n_targets (int): APGD-T and FAB-T target classes
            (default 9).
        n_queries (int): Square's queries (default 5000). seed (int): default 0.
        batch_size (int, optional): examples per chunk.

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64 (untargeted only). Returns an ``AutoAttackResult``.

    Examples::
        >>> result = AutoAttack("linf", eps=8 / 255)(model, x, y)
        >>> result.robust_accuracy, result.broken_by[:5]
    """

    name = "autoattack"
    per_example = ("eps",)

    def __init__(self, norm: str = "linf", eps: float | Tensor | None = None, version: str = "standard",
                 steps: int = 100, n_targets: int = 9, n_queries: int = 5000, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(batch_size)
        self.norm = check_norm(norm)
        self.eps = default_budget(eps, norm)
        if version not in VERSIONS:
            raise InputError(f"version must be one of {VERSIONS}, got {version!r}")
        self.version = version
        self.steps = check_positive_int("steps", steps)
        self.n_targets = check_positive_int("n_targets", n_targets)
        self.n_queries = check_positive_int("n_queries", n_queries)
        self.seed = check_seed(seed)
        self._codes: list[Tensor] = []

    def component_names(self) -> tuple[str, ...]:
        return ("apgd-ce", "apgd-t", "fab-t", "square") if self.version == "standard" else ("apgd-ce", "apgd-dlr")

    def components(self, eps: float | Tensor, num_classes: int) -> list[tuple[str, Attack]]:
        """The ensemble's attacks, in order, for budget ``eps`` and a ``num_classes``-way model (the DLR
        losses need ≥ 3 resp. ≥ 4 classes; fewer fall back to cross-entropy)."""
        common = {"eps": eps, "norm": self.norm, "steps": self.steps, "seed": self.seed}
        if self.version == "standard":
            n_targets = min(self.n_targets, num_classes - 1)
            return [("apgd-ce", APGD(loss="ce", **common)),
                    ("apgd-t", APGDT(n_targets=n_targets, loss="dlr" if num_classes >= 4 else "ce", **common)),
                    ("fab-t", FABT(n_targets=n_targets, **common)),
                    ("square", Square(eps, self.norm, n_queries=self.n_queries, seed=self.seed))]
        return [("apgd-ce", APGD(loss="ce", eot=20, **common)),
                ("apgd-dlr", APGD(loss="dlr" if num_classes >= 3 else "ce", eot=20, **common))]

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        eps = self._per_example(self.eps, x)
        with torch.no_grad():
            logits = model(x)
        broken = logits.argmax(1) != y
        code = torch.where(broken, 0, -1)
        out = x.clone()
        for j, name in enumerate(self.component_names(), 1):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            _, attack = self.components(eps[idx] if isinstance(eps, Tensor) else eps, logits.shape[1])[j - 1]
            crafted = attack._run(model, x[idx], y[idx], None)
            adv = (crafted[0] if isinstance(crafted, tuple) else crafted).detach().clamp(0, 1)
            with torch.no_grad():
                hit = model(adv).argmax(1) != y[idx]
            out[idx[hit]] = adv[hit]
            broken[idx[hit]] = True
            code[idx[hit]] = j
            if self._reporting:
                self._info(f"{name}: {int((~broken).sum())} robust")
        self._codes.append(code)
        return out

    def _validate(self, model: nn.Module, x: Tensor, y: Tensor | None,
                  targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if targets is not None:  # for perturb() too, which would otherwise run untargeted without a word
            raise InputError("AutoAttack evaluates untargeted robustness; drop targets= (APGDT runs targeted "
                             "APGD towards given targets)")
        self._codes = []  # which member broke each image, chunk by chunk, for this call
        return super()._validate(model, x, y, targets)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor | None = None,
                 targets: Tensor | None = None) -> AutoAttackResult:
        try:
            result = super().__call__(model, x, y, targets)
            codes = torch.cat(self._codes).tolist()
        finally:
            self._codes = []
        names = ("clean", *self.component_names())
        return AutoAttackResult(**{f.name: getattr(result, f.name) for f in fields(AttackResult)},
                                robust_accuracy=1.0 - result.success_rate(), components=names[1:],
                                broken_by=[names[c] if c >= 0 else "" for c in codes])


__all__ = ["VERSIONS", "AutoAttack", "AutoAttackResult"]
