"""The shared attack base: ``Attack`` (validation, frozen model, chunking, norms) and ``AttackResult``.

An attack is a configured object called on a model (DESIGN.md):

    result = PGD(eps=0.3, alpha=0.01, steps=40)(model, x, y)            # untargeted
    result = PGD(eps=0.3, alpha=0.01, steps=40)(model, x, y, targets=t)  # targeted

Subclasses implement ``_run(model, x, y, targets) -> x_adv`` (or ``(x_adv, queries)`` for black-box
attacks) on one chunk of already validated inputs; the base class validates, freezes the model (eval mode, no
parameter gradients, both restored afterwards), splits big inputs into ``batch_size`` chunks with a progress
bar, clips to [0, 1], and measures success and perturbation norms. ``attack.perturb(model, x, y)`` returns
the same adversarial images alone, skipping that bookkeeping (one forward pass on them and the norms).

Per-example parameters: an attack lists in ``per_example`` the attributes that may hold one value per example
(a 1-D tensor of shape (N,), e.g. ``eps``). The base checks their length against the batch and ``_run`` reads
the running chunk's values with ``self._per_example(value, x)``, so chunking never misaligns them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..progress import Bar, is_quiet
from ..tensors import check_images, check_labels, check_model_dtype, frozen, model_device

#: A pixel/feature counts as changed when it moved by more than this (float round-off is not a change).
L0_TOLERANCE = 1e-6


@dataclass
class AttackResult:
    """Adversarial examples and per-example statistics, all on the device of the attacked ``x``.

    ``success`` is ``pred != y`` for untargeted attacks and ``pred == targets`` for targeted ones.
    ``linf``/``l2`` are norms of ``x_adv - x`` over all features; ``l0`` counts changed *pixels* (spatial
    positions where any channel changed by more than ``L0_TOLERANCE``), ``l0_features`` counts changed
    features (pixel × channel; equal to ``l0`` for grey-scale images). ``queries`` (model evaluations per
    example) is set by black-box attacks.
    """

    x_adv: Tensor
    success: Tensor
    pred: Tensor
    linf: Tensor
    l2: Tensor
    l0: Tensor
    l0_features: Tensor
    queries: Tensor | None = None
    targets: Tensor | None = None

    def success_rate(self) -> float:
        """Fraction of examples on which the attack succeeded (0.0 for an empty batch)."""
        return float(self.success.float().mean()) if self.success.numel() else 0.0

    def __len__(self) -> int:
        return self.x_adv.shape[0]


def perturbation_norms(x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """Per-example L∞, L2, L0 (changed pixels) and L0 (changed features) of ``x_adv - x``."""
    delta = (x_adv - x).flatten(2) if x.dim() == 4 else (x_adv - x).unsqueeze(1).flatten(2)
    size = delta.abs()                                                     # (N, C, H*W), once for L∞ and L0
    changed = size > L0_TOLERANCE
    return {
        "linf": size.flatten(1).amax(1) if size.shape[1] * size.shape[2] else size.new_zeros(size.shape[0]),
        "l2": delta.flatten(1).norm(dim=1),
        "l0": changed.any(1).sum(1),
        "l0_features": changed.flatten(1).sum(1),
    }


def check_nonnegative(name: str, value: float) -> float:
    """Raise ValueError unless ``value`` is a finite number ≥ 0 (used for eps, step sizes, ...)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not v >= 0 or v == float("inf"):
        raise InputError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return v


#: The threat models of the gradient and score-based attacks.
NORMS = ("linf", "l2")
#: The L∞ budget of AutoAttack's and RobustBench's CIFAR-10 evaluations: the default where an attack has one.
LINF_DEFAULT_EPS = 8 / 255


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise InputError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def default_budget(eps: float | Tensor | None, norm: str) -> float | Tensor:
    """ε of an attack with a default budget: 8/255 under L∞ when not given; under L2 there is no common scale
    (an L∞ default there would make a model look far more robust than it is), so ε must be given."""
    if eps is not None:
        return check_budget("eps", eps, norm)
    if norm == "linf":
        return LINF_DEFAULT_EPS
    raise InputError("norm='l2' has no default budget; pass eps= (RobustBench's CIFAR-10 L2 budget is 0.5)")


def check_budget(name: str, value: float | Tensor, norm: str | None = None) -> float | Tensor:
    """A budget (ε, a step size) as a float ≥ 0, or as a per-example 1-D tensor of finite values ≥ 0.

    A 0-d tensor counts as a number. With ``norm="linf"`` a budget above 1 (the whole pixel range: almost always
    ε in 0–255 units, 8 meant as 8/255) is refused. Raises ValueError naming the offending example and the fix.
    """
    if isinstance(value, (list, tuple)) or (hasattr(value, "__array__") and not isinstance(value, Tensor)
                                            and getattr(value, "ndim", 0) > 0):
        raise InputError(f"{name} must be a number or a 1-D torch tensor of shape (N,) (one budget per image), got "
                         f"{type(value).__name__}; wrap per-example values with torch.tensor(...)")
    value = _check_budget_values(name, value)
    largest = value if not isinstance(value, Tensor) else float(value.max()) if value.numel() else 0.0
    if norm == "linf" and largest > 1:
        raise InputError(f"{name}={largest:g} exceeds the [0, 1] pixel range under L∞; budgets are in pixel "
                         f"units (did you mean {largest:g}/255 ≈ {largest / 255:.4f}?)")
    return value


def _check_budget_values(name: str, value: float | Tensor) -> float | Tensor:
    if not isinstance(value, Tensor) or value.dim() == 0:
        return check_nonnegative(name, value.item() if isinstance(value, Tensor) else value)
    if value.dim() != 1:
        raise InputError(f"a per-example {name} must be a 1-D tensor of shape (N,) (one budget per image), got "
                         f"shape {tuple(value.shape)}; flatten it or pass one number")
    if value.dtype == torch.bool or value.is_complex():
        raise InputError(f"{name} must hold real numbers, got dtype {value.dtype}")
    value = value.detach().float()
    bad = ~torch.isfinite(value) | (value < 0)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise InputError(f"{name} must be finite and ≥ 0 for every example; index {i} holds "
                         f"{float(value[i])!r} ({int(bad.sum())} bad in all) — drop those images or clamp "
                         f"with {name}.nan_to_num(0).clamp(0, max_budget)")
    return value.clone()


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Raise ValueError unless ``value`` is an integer ≥ ``minimum`` (used for steps, restarts, ...); numpy
    integers count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def check_seed(value: int) -> int:
    """A random seed: an integer in torch's 64-bit range (a float or a string is refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not -2**63 <= value < 2**64:
        raise InputError(f"seed must be an integer, e.g. 0; got {value!r}")
    return int(value)


def check_model(model: nn.Module) -> None:
    """Raise ValueError unless ``model`` is an ``nn.Module`` (a plain function has no modes or parameters to
    freeze)."""
    if not isinstance(model, nn.Module):
        raise InputError("model must be a torch nn.Module mapping images to logits, got "
                         f"{type(model).__name__}; wrap a function in an nn.Module whose forward calls it")


def check_differentiable(logits: Tensor, attack: str) -> None:
    """Raise ValueError when the logits carry no gradient to x (``torch.no_grad`` or ``.detach()`` inside
    the model's forward): a gradient attack cannot run on such a model."""
    if not logits.requires_grad:
        raise InputError(f"the model's logits do not depend differentiably on x (torch.no_grad or .detach() in its "
                         f"forward?); {attack} needs gradients — Square needs none")


class Reporting:
    """What every attack class shares: the optional ``batch_size`` (chunks of that many examples), a repr of
    the public settings, and progress text for the running bar. ``_reporting`` says whether a bar is showing;
    loops build their ``_info`` text only then (a count in it would sync the device on every step)."""

    _bar: Bar | None = None

    def __init__(self, batch_size: int | None = None):
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        self.batch_size = batch_size

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    @property
    def _reporting(self) -> bool:
        return self._bar is not None

    def _info(self, text: str) -> None:
        """Show ``text`` (e.g. "step 40/100") in the running progress bar."""
        if self._bar is not None:
            self._bar.update(0, info=text)


class Attack(Reporting):
    """Base class of every attack: ``attack(model, x, y, targets=None) -> AttackResult``.

    ``x``: float NCHW images in [0, 1]; ``y``: int64 true labels (``None`` uses the model's predictions);
    ``targets``: int64 target classes for a targeted attack (must differ from ``y``). ``batch_size``
    (optional) processes the examples in chunks of that size with a progress bar. The computation runs on the
    model's device; results come back on x's device. Inputs are never modified.
    """

    #: Registry name (set by subclasses); used in progress bars and error messages.
    name: str = "attack"
    #: Whether the attack needs ``targets`` (JSMA in its paper form); the base raises if they are missing.
    requires_targets: bool = False
    #: Attributes that may hold a per-example tensor of shape (N,); read them in ``_run`` via ``_per_example``.
    per_example: tuple[str, ...] = ()

    def __init__(self, batch_size: int | None = None):
        super().__init__(batch_size)
        self._targeted = False
        self._chunk = slice(None)

    @property
    def targeted(self) -> bool:
        """True while (and after) the attack is called with ``targets``."""
        return self._targeted

    def _run(self, model: nn.Module, x: Tensor, y: Tensor,
             targets: Tensor | None) -> Tensor | tuple[Tensor, Tensor]:
        """Craft adversarial examples for one validated chunk; ``model`` is frozen and on x's device."""
        raise NotImplementedError

    def _per_example(self, value: float | Tensor, x: Tensor) -> float | Tensor:
        """A per-example parameter for the running chunk: a float stays a float (the fast path); a tensor of
        shape (N,) is cut to the chunk being attacked and returned as shape (n,) on x's device."""
        if isinstance(value, Tensor):
            return value[self._chunk].to(device=x.device, dtype=x.dtype)
        return value

    def _check_per_example(self, n: int) -> None:
        for name in self.per_example:
            value = getattr(self, name, None)
            if isinstance(value, Tensor) and value.shape[0] != n:
                raise InputError(f"per-example {name} has {value.shape[0]} values but the batch has {n} images; "
                                 f"pass one {name} per image (shape ({n},)) or a single number")

    def _default_targets(self, model: nn.Module, x: Tensor, y: Tensor, num_classes: int) -> Tensor | None:
        """Targets to use when the caller passes none (None: run untargeted); e.g. JSMA's random targets."""
        return None

    def _validate(self, model: nn.Module, x: Tensor, y: Tensor | None,
                  targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
        check_images(x)
        check_model_dtype(x, model)
        if x.shape[0] == 0:
            raise InputError("x is an empty batch; pass at least one image")
        self._check_per_example(x.shape[0])
        device = model_device(model)
        with torch.no_grad():
            probe = model(x[:1].to(device))
        if probe.dim() != 2:
            raise InputError(f"model must return logits of shape (N, classes), got {tuple(probe.shape)}")
        num_classes = probe.shape[1]
        if num_classes < 2:
            raise InputError(f"model returns {num_classes} logit per image; attacks need ≥ 2 classes — wrap a "
                             "single-logit binary model to return torch.cat([-z, z], 1)")
        if y is None:
            with torch.no_grad():
                y = torch.cat([model(x[i:i + 512].to(device)).argmax(1).to(x.device)
                               for i in range(0, len(x), 512)])
        check_labels(y, x.shape[0], num_classes, name="y")
        if targets is None:
            targets = self._default_targets(model, x, y, num_classes)
        if targets is None:
            if self.requires_targets:
                raise InputError(f"{type(self).__name__} is a targeted attack: pass targets= (e.g. advsal."
                                 "attacks.random_targets(y, num_classes, seed) or least_likely_targets)")
            return y.long(), None
        check_labels(targets, x.shape[0], num_classes, name="targets")
        same = (targets.to(y.device) == y)
        if same.any():
            i = int(same.nonzero()[0])
            raise InputError(f"targets equal the true labels for {int(same.sum())} example(s) (first: "
                             f"index {i}, class {int(y[i])}); a targeted attack needs a target unlike "
                             "y — use random_targets(y, ...), which never picks y")
        return y.long(), targets.long()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor | None = None,
                 targets: Tensor | None = None) -> AttackResult:
        x_adv, pred, queries, y, targets = self._craft(model, x, y, targets, evaluate=True)
        success = pred == targets if targets is not None else pred != y
        return AttackResult(x_adv=x_adv, success=success, pred=pred, **perturbation_norms(x, x_adv),
                            queries=queries, targets=targets)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor | None = None,
                targets: Tensor | None = None) -> Tensor:
        """The adversarial images alone, exactly ``self(model, x, y, targets).x_adv``, without the bookkeeping:
        no forward pass on them for the prediction and success, no norms. For callers that only need the
        images (adversarial training, a peer library's ``attack(x, y)`` contract); FGSM then costs one
        forward+backward instead of that plus a forward."""
        return self._craft(model, x, y, targets, evaluate=False)[0]

    def _craft(self, model: nn.Module, x: Tensor, y: Tensor | None, targets: Tensor | None, evaluate: bool
               ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor | None]:
        """Validate, freeze, attack chunk by chunk; returns (x_adv, pred or None, queries, y, targets) on x's
        device. ``evaluate`` runs the model on each chunk's result for its prediction (``__call__``)."""
        check_model(model)
        with frozen(model):
            y, targets = self._validate(model, x, y, targets)
            self._targeted = targets is not None
            device = model_device(model)
            n = x.shape[0]
            size = self.batch_size or n
            advs, queries, preds = [], [], []
            with Bar(f"{self.name}", n) as bar:
                self._bar = None if is_quiet() else bar
                try:
                    for start in range(0, n, size):
                        self._chunk = slice(start, start + size)
                        # the attack's own copy, made by the move itself when the model is on another device
                        xc = x[start:start + size].detach().to(device, copy=True)
                        yc = y[start:start + size].to(device)
                        tc = targets[start:start + size].to(device) if targets is not None else None
                        out = self._run(model, xc, yc, tc)
                        adv, q = out if isinstance(out, tuple) else (out, None)
                        adv = adv.detach().clamp(0, 1)
                        if evaluate:
                            with torch.no_grad():
                                preds.append(model(adv).argmax(1).to(x.device))
                        advs.append(adv.to(x.device))
                        if q is not None:
                            queries.append(q.to(x.device))
                        bar.update(xc.shape[0])
                finally:
                    self._bar = None
                    self._chunk = slice(None)
        x_adv = advs[0] if len(advs) == 1 else torch.cat(advs)
        pred = (preds[0] if len(preds) == 1 else torch.cat(preds)) if evaluate else None
        return (x_adv, pred, torch.cat(queries) if queries else None, y.to(x.device),
                targets.to(x.device) if targets is not None else None)

