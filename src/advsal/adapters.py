"""advsal detectors in other libraries' shapes; each peer library is imported only when its adapter is used.

- :class:`GuardedModel` — a plain ``nn.Module``: the classifier's logits plus a rejection logit as an extra class
  (index ``num_classes``), the construction of Carlini & Wagner 2017 §5 ("the detector as an extra class"), so
  torchattacks, AutoAttack or RobustBench-style evaluations attack classifier and detector together::

      guarded = GuardedModel(model, detector)          # (N, classes + 1); argmax == classes ⇔ rejected
      adv = torchattacks.PGD(guarded, eps=0.3)(x, y)

- :func:`art_detector` — an ART ``EvasionDetector`` (``art.defences.detector.evasion``): ``fit(x, y)`` with y the
  0 (clean) / 1 (adversarial) labels, ``detect(x)`` returning ART's ``(report, is_adversarial)`` pair::

      det = art_detector(guard)                        # or a bare detector
      report, is_adversarial = det.detect(x_numpy)     # report: predictions (N, 2), scores, threshold
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import AdvsalError


class AdapterError(AdvsalError, ValueError):
    """An adapter got inputs it cannot pass on (wrong shapes, labels, a missing peer library)."""


def _detector_of(guard_or_detector: Any) -> tuple[nn.Module, Any]:
    from .detection.guard import Guard

    if isinstance(guard_or_detector, Guard):
        return guard_or_detector.model, guard_or_detector.detector
    det = guard_or_detector
    if not hasattr(det, "adversarial_logit") or not hasattr(det, "classifier"):
        raise AdapterError(f"expected a Guard or an advsal detector, got {type(det).__name__}")
    return det.classifier, det


class GuardedModel(nn.Module):
    """Logits of ``model`` with one more column, the rejection logit

        z_reject(x) = max_j z_j(x) + (D_logit(x) − logit(threshold)),

    so the extra class wins the argmax exactly when the detector flags x (score > threshold), and it is
    differentiable wherever the detector's ``adversarial_logit`` is. ``detector`` may be a ``Guard``."""

    def __init__(self, model: nn.Module | None = None, detector: Any = None):
        super().__init__()
        if detector is None:
            raise AdapterError("GuardedModel needs a detector (or a Guard)")
        inner, det = _detector_of(detector)
        model = inner if model is None else model
        if not isinstance(model, nn.Module):
            raise AdapterError(f"model must be an nn.Module, got {type(model).__name__}")
        if model is not inner:  # the detector reads its own classifier's saliency; Guard refuses this too
            raise AdapterError("the detector was built for another classifier; pass the model it was built for, "
                               "or no model (GuardedModel(detector=...) takes the detector's own)")
        self.model = model
        object.__setattr__(self, "detector", det)  # referenced, so its parameters are not this module's

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        t = min(max(float(self.detector.threshold), 1e-12), 1 - 1e-12)
        z = self.detector.adversarial_logit(x).to(device=logits.device, dtype=logits.dtype)
        reject = logits.amax(1) + z - math.log(t / (1 - t))
        return torch.cat([logits, reject[:, None]], 1)


def _to_tensor(x: np.ndarray | Tensor, channels_first: bool) -> Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, Tensor) else x.float()
    if t.dim() != 4:
        raise AdapterError(f"x must be a batch of images (N, C, H, W), got shape {tuple(t.shape)}")
    return t if channels_first else t.permute(0, 3, 1, 2).contiguous()


@lru_cache(maxsize=1)
def _art_class() -> type:
    try:
        from art.defences.detector.evasion import EvasionDetector
    except ImportError as exc:
        raise AdapterError("the ART adapter needs adversarial-robustness-toolbox: pip install "
                           "'advsal[bench]' (or adversarial-robustness-toolbox)") from exc

    class ARTDetector(EvasionDetector):
        """An advsal detector (or Guard) as an ART ``EvasionDetector``.

        ``fit(x, y, batch_size, nb_epochs)``: y holds 0 (clean) / 1 (adversarial) per image, or one-hot (N, 2)
        as for ART's ``BinaryInputDetector``; the detector is trained on the two groups. ``detect(x, batch_size)``
        returns ``(report, is_adversarial)``: report has ``predictions`` (N, 2: clean, adversarial
        probabilities, as ``BinaryInputDetector`` reports its detector's output), ``scores`` and ``threshold``."""

        defence_params = ["channels_first"]

        def __init__(self, guard_or_detector: Any, channels_first: bool = True):
            super().__init__()
            self.model, self.detector = _detector_of(guard_or_detector)
            self._guard = guard_or_detector if hasattr(guard_or_detector, "calibration_") else None
            self.channels_first = channels_first
            self._check_params()

        def _check_params(self) -> None:
            if not isinstance(self.channels_first, bool):
                raise AdapterError(f"channels_first must be a bool, got {self.channels_first!r}")

        def fit(self, x: np.ndarray, y: np.ndarray, batch_size: int = 128, nb_epochs: int = 20,
                **kwargs: Any) -> None:
            xt = _to_tensor(x, self.channels_first)
            yy = np.asarray(y)
            if yy.ndim == 2:
                yy = yy.argmax(1) if yy.shape[1] == 2 else yy.ravel()  # one-hot (N, 2), or a column (N, 1)
            if yy.shape != (len(xt),) or not np.isin(yy, (0, 1)).all():
                raise AdapterError("y must hold one label per image: 0 (clean) or 1 (adversarial), or one-hot (N, 2)")
            mask = torch.as_tensor(yy == 1)
            options = dict(kwargs)
            if "epochs" in _fit_parameters(self.detector):
                options.setdefault("epochs", nb_epochs)
            if "batch_size" in _fit_parameters(self.detector):
                options.setdefault("batch_size", batch_size)
            self.detector.fit(xt[~mask], xt[mask], **options)
            if self._guard is not None:  # its threshold was calibrated for the detector before this fit
                self._guard.calibration_ = None

        def detect(self, x: np.ndarray, batch_size: int = 128, **kwargs: Any) -> tuple[dict, np.ndarray]:
            xt = _to_tensor(x, self.channels_first)
            scores = self.detector.score(xt, batch_size=batch_size).detach().cpu().double().numpy()
            threshold = float(self.detector.threshold)
            report = {"predictions": np.stack([1.0 - scores, scores], 1), "scores": scores, "threshold": threshold}
            return report, scores > threshold

    return ARTDetector


def _fit_parameters(detector: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(detector.fit).parameters)
    except (TypeError, ValueError):
        return set()


def art_detector(guard_or_detector: Any, channels_first: bool = True) -> Any:
    """``guard_or_detector`` as an ART ``EvasionDetector`` (needs adversarial-robustness-toolbox)."""
    return _art_class()(guard_or_detector, channels_first=channels_first)


def __getattr__(name: str) -> Any:
    if name == "ARTDetector":  # the class itself, built on first use (importing ART)
        return _art_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AdapterError", "GuardedModel", "art_detector"]
