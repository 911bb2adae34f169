"""Shared plumbing of the feature-statistic detectors (LID, Mahalanobis, KD+BU, feature squeezing).

Each of these detectors computes a few statistics per input from the classifier's activations and, except for
feature squeezing, combines them with a logistic regression fitted on clean (0) vs adversarial (1) statistics.
This module holds what they share: reading activations of named layers (``layer_activations``), the default
layers (``activation_layers``), and ``StatisticDetector``, the base that stores the classifier by reference,
keeps the threshold, fits the standardised logistic regression (scikit-learn) and evaluates it in torch so
that ``adversarial_logit`` stays differentiable w.r.t. the input.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..tensors import check_images, frozen, model_device
from .protocol import ThresholdedScores

#: The name under which ``layer_activations`` returns the classifier's output (the logits).
LOGITS = "logits"

#: Modules whose outputs are an "activation" layer for the default layer choice.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
               nn.Softplus, nn.PReLU)


def activation_layers(model: nn.Module, logits: bool = False) -> list[str]:
    """Names (``model.named_modules()``) of the model's activation modules in definition order, plus
    ``"logits"`` when ``logits``; raises when the model has none (then pass layer names explicitly)."""
    names = [k for k, m in model.named_modules() if k and isinstance(m, ACTIVATIONS)]
    if not names and not logits:
        raise InputError("the classifier has no activation modules (nn.ReLU, …) to read features from; pass "
                         "layers=[...] with names from classifier.named_modules()")
    return names + ([LOGITS] if logits else [])


def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Validate layer names against ``model.named_modules()`` (``"logits"`` = the model's output)."""
    if isinstance(layers, str) or not len(layers):
        raise InputError(f"layers must be a non-empty list of layer names, got {layers!r}")
    modules = dict(model.named_modules())
    for name in layers:
        if name != LOGITS and (name not in modules or name == ""):
            valid = ", ".join([k for k in modules if k] + [LOGITS])
            raise InputError(f"unknown layer {name!r}; valid layer names (classifier.named_modules(), or "
                             f"'{LOGITS}' for the output): {valid}")
    return list(layers)


def layer_activations(model: nn.Module, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Outputs of the named layers (and ``"logits"``, the model's output) for inputs ``x`` from one forward
    pass, with gradients w.r.t. ``x`` where autograd is on. Hooks are removed also on error; the caller sets the
    model's mode (e.g. with ``tensors.frozen``)."""
    modules = dict(model.named_modules())
    acts: dict[str, Tensor] = {}

    def capture(name: str):
        def hook(_module, _inputs, output):
            if name in acts:
                raise InputError(f"layer {name!r} runs more than once in one forward pass (a shared module), "
                                 "so its activation is ambiguous; pass layers that are called once")
            if not isinstance(output, Tensor):
                raise InputError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another")
            acts[name] = output
        return hook

    handles = [modules[n].register_forward_hook(capture(n)) for n in layers if n != LOGITS]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    if LOGITS in layers:
        acts[LOGITS] = out
    missing = [n for n in layers if n not in acts]
    if missing:
        raise InputError(f"layer(s) {missing} did not run in the classifier's forward pass; pick layers it calls")
    return {n: acts[n] for n in layers}


def _tensor(a: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


class StatisticDetector(ThresholdedScores):
    """Base of the statistic detectors: per-input statistics ``statistics(x)`` (N, S) → standardised logistic
    regression → adversarial logit. Label 1 = adversarial.

    Subclasses define ``_fit_statistics(x_clean, x_adv, y_clean, batch_size)`` (learn their own state, return
    the clean and adversarial training statistics) and ``statistics(x)`` (differentiable where they can be).
    The logistic regression is scikit-learn's ``LogisticRegressionCV`` (5-fold, log-loss, balanced classes), as in the
    three papers' code, on features standardised with the training statistics' mean and std; its weights are
    then evaluated in torch (float64). The classifier is referenced, never modified; it runs in eval mode with
    its flags restored. Fitted state carries a trailing underscore.
    """

    differentiable = True
    _param_names: tuple[str, ...] = ()

    def __init__(self, classifier: nn.Module) -> None:
        if not isinstance(classifier, nn.Module):
            raise InputError(f"classifier must be an nn.Module mapping images to logits, got "
                             f"{type(classifier).__name__}")
        self.classifier = classifier
        self.threshold = 0.5

    # -- protocol members --
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "coef_")

    def params(self) -> dict[str, Any]:
        """The constructor parameters (without the classifier), JSON-able."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                ((name, getattr(self, name)) for name in self._param_names)}

    @property
    def device(self) -> torch.device:
        return model_device(self.classifier)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, x_clean: Tensor, x_adv: Tensor, *, y_clean: Tensor | None = None, batch_size: int = 256,
            cv: int | None = 5, seed: int = 0) -> StatisticDetector:
        """Learn the detector's statistics from clean images (and their labels ``y_clean``, where used; default
        the classifier's predictions), then the logistic regression on clean (0) vs adversarial (1) statistics.
        When ``x_clean`` and ``x_adv`` have the same length they are taken as pairs (x_adv[i] crafted from
        x_clean[i]). ``cv``: folds of ``LogisticRegressionCV`` choosing the regularisation (the papers' code);
        ``None`` fits a plain ``LogisticRegression`` (C = 1), much faster on small sets. Returns self."""
        check_images(x_clean, "x_clean")
        check_images(x_adv, "x_adv")
        if x_clean.shape[1:] != x_adv.shape[1:]:
            raise InputError("x_clean and x_adv must have the same image shape, got "
                             f"{tuple(x_clean.shape[1:])} and {tuple(x_adv.shape[1:])}")
        if len(x_clean) < 2 or len(x_adv) < 1:
            raise InputError(f"fit needs at least 2 clean and 1 adversarial images, got {len(x_clean)} and "
                             f"{len(x_adv)}")
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        if cv is not None and (isinstance(cv, bool) or not isinstance(cv, int) or cv < 2):
            raise InputError(f"cv must be a number of folds ≥ 2, or None for no cross-validation; got {cv!r}")
        with torch.no_grad():
            s_clean, s_adv = self._fit_statistics(x_clean, x_adv, y_clean, batch_size, seed)
        self._fit_logistic(s_clean, s_adv, cv, seed)
        return self

    def _fit_logistic(self, s_clean: Tensor, s_adv: Tensor, cv: int | None, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

        s = torch.cat([s_clean, s_adv]).detach().double().cpu().numpy()
        if not np.isfinite(s).all():
            raise InputError(f"{type(self).__name__}: the training statistics contain NaN or infinite values "
                             "(duplicate images or a degenerate layer?); check the inputs or choose other layers")
        y = np.concatenate([np.zeros(len(s_clean)), np.ones(len(s_adv))])
        mean, std = s.mean(0), s.std(0)
        std = np.where(std > 1e-12, std, 1.0)
        z = (s - mean) / std
        folds = int(min(cv or 0, len(s_clean), len(s_adv)))
        if folds >= 2:
            lr = LogisticRegressionCV(cv=folds, scoring="neg_log_loss", max_iter=1000, class_weight="balanced",
                                      random_state=seed)
        else:
            lr = LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)
        with warnings.catch_warnings():  # scikit-learn ≥ 1.8 announces changes of LogisticRegressionCV defaults
            warnings.simplefilter("ignore", FutureWarning)
            lr.fit(z, y)
        self.scaler_mean_ = _tensor(mean)
        self.scaler_scale_ = _tensor(std)
        self.intercept_ = _tensor(lr.intercept_).reshape(())
        self.coef_ = _tensor(lr.coef_).reshape(-1)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(x_clean, x_adv) first")

    # -- to be defined by subclasses --
    def _fit_statistics(self, x_clean: Tensor, x_adv: Tensor, y_clean: Tensor | None, batch_size: int,
                        seed: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def statistics(self, x: Tensor) -> Tensor:
        """The detector's per-input statistics (N, S), float64, on the classifier's device."""
        raise NotImplementedError

    # -- scoring --
    def logit_from_statistics(self, s: Tensor) -> Tensor:
        """The logistic regression's logit w · standardise(s) + b (differentiable)."""
        self._check_fitted()
        d = s.device
        z = (s.double() - self.scaler_mean_.to(d)) / self.scaler_scale_.to(d)
        return z @ self.coef_.to(d) + self.intercept_.to(d)

    def adversarial_logit(self, x: Tensor) -> Tensor:
        """log(p / (1 − p)) of "adversarial" for images ``x``, (N,), float64 on the classifier's device;
        differentiable w.r.t. ``x`` when ``differentiable``."""
        self._check_fitted()
        check_images(x)
        return self.logit_from_statistics(self.statistics(x.to(self.device)))

    def score(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Probability that each image is adversarial, (N,), float32 on x's device (no gradient)."""
        self._check_fitted()
        check_images(x)
        with torch.no_grad():
            parts = [torch.sigmoid(self.adversarial_logit(x[i:i + batch_size])).float()
                     for i in range(0, len(x), batch_size)]
        return torch.cat(parts).to(x.device) if parts else x.new_zeros(0)

    # -- helpers for subclasses --
    def _activations(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        with frozen(self.classifier):
            return layer_activations(self.classifier, x.to(self.device), layers)

    def _predicted(self, x: Tensor, batch_size: int) -> Tensor:
        with frozen(self.classifier), torch.no_grad():
            return torch.cat([self.classifier(x[i:i + batch_size].to(self.device)).argmax(1)
                              for i in range(0, len(x), batch_size)])


def check_positive(value: float, name: str, integer: bool = False) -> None:
    bad = (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or value <= 0
           or (integer and int(value) != value))
    if bad:
        raise InputError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


__all__ = ["ACTIVATIONS", "LOGITS", "StatisticDetector", "activation_layers", "check_layers", "check_positive",
           "layer_activations"]
