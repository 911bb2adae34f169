"""A classifier with its detector as one deployable guard: calibrate on clean data, then accept or reject inputs.

    guard = Guard(model, detector, fpr=0.05)
    guard.calibrate(x_clean_heldout)          # threshold at 5% false positives on clean images the user gives
    r = guard(x)                              # GuardResult: predictions, scores, flagged (accepted = ~flagged)
    guard.report()                            # the calibration: FPR reached, images used, robust numbers if attached
    guard.save("guard/"); Guard.load("guard/", model)   # refuses a model other than the one it was made for

For a saliency detector whose saliency explains the predicted class, one forward and one backward pass of F give
both the prediction and the saliency (the detector then adds its own forward), so guarded inference costs about
F's forward + backward + D — with exactly the scores ``detector.score`` gives.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import AdvsalError
from ..saliency.gradients import input_gradients
from ..store import to_jsonable, write_json
from ..tensors import check_images, frozen, model_device
from .detectors import SaliencyDetector
from .io import DetectorFileError, load_detector, read_detector_info, save_detector
from .metrics import threshold_at_fpr

DETECTOR_FILE = "detector"      # guard/detector.safetensors + guard/detector.json
CLASSIFIER_FILE = "classifier"  # guard/classifier.safetensors + .json when the guard carries its zoo classifier
GUARD_FILE = "guard.json"


class GuardError(AdvsalError, ValueError):
    """A guard is used before calibration, with bad arguments, or loaded from an unusable directory."""


@dataclass
class GuardResult:
    """One guarded batch: the classifier's ``predictions`` (N,), the detector's ``scores`` (N, probability
    adversarial) and ``flagged`` (N, score > threshold: rejected)."""

    predictions: Tensor
    scores: Tensor
    flagged: Tensor
    threshold: float

    @property
    def accepted(self) -> Tensor:
        return ~self.flagged

    def __len__(self) -> int:
        return len(self.predictions)


@dataclass
class Calibration:
    """How the threshold was chosen: the requested clean false-positive rate, the one reached on the
    ``n_images`` clean calibration images, and robust-detection numbers when measured and attached."""

    fpr_target: float
    threshold: float
    fpr_achieved: float
    n_images: int
    robust: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


class Guard:
    """Classifier ``model`` guarded by ``detector`` (anything meeting the ``Detector`` protocol, made for
    ``model``), rejecting inputs whose score exceeds a threshold chosen for a clean false-positive budget ``fpr``.

    Runs on the model's device; inputs are moved there and results come back on the input's device."""

    def __init__(self, model: nn.Module, detector: Any, fpr: float = 0.05, batch_size: int = 256):
        if not isinstance(model, nn.Module):
            raise GuardError(f"model must be an nn.Module mapping images to logits, got {type(model).__name__}")
        if not isinstance(fpr, (int, float)) or not 0.0 <= float(fpr) <= 1.0:
            raise GuardError(f"fpr must be a rate in [0, 1], got {fpr!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise GuardError(f"batch_size must be a positive integer, got {batch_size!r}")
        if getattr(detector, "classifier", model) is not model:
            raise GuardError("the detector was built for another classifier object: build it (or load it) with "
                             "this model, e.g. load_detector(path, model)")
        self.model = model
        self.detector = detector
        self.fpr = float(fpr)
        self.batch_size = batch_size
        self.calibration_: Calibration | None = None

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold)

    @property
    def is_calibrated(self) -> bool:
        return self.calibration_ is not None

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    # -- scoring --
    def _fast_path(self) -> bool:
        d = self.detector
        return isinstance(d, SaliencyDetector) and d.uses_saliency and d.saliency_target == "predicted"

    def _batch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(predictions, scores) for one batch on the model's device."""
        d = self.detector
        if self._fast_path():
            # the saliency's own forward pass gives the prediction (target "predicted"): F runs once
            grad, pred = input_gradients(self.model, x, "predicted", score=d.saliency_score)
            features = d.assemble(x, grad.detach())
            with frozen(d.net), torch.no_grad():
                scores = torch.sigmoid(d.logit_from_features(features))
            return pred, scores
        with frozen(self.model), torch.no_grad():
            pred = self.model(x).argmax(1)
        return pred, d.score(x, self.batch_size).to(x.device)

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(predictions, scores) for images ``x`` in batches, on x's device."""
        check_images(x)
        if len(x) == 0:
            return torch.zeros(0, dtype=torch.long, device=x.device), x.new_zeros(0)
        preds, scores = [], []
        for i in range(0, len(x), self.batch_size):
            p, s = self._batch(x[i:i + self.batch_size].to(self.device))
            preds.append(p)
            scores.append(s.float())
        return torch.cat(preds).to(x.device), torch.cat(scores).to(x.device)

    def __call__(self, x: Tensor) -> GuardResult:
        """Predictions, detector scores and the reject flag for images ``x`` (N, C, H, W) in [0, 1]."""
        pred, s = self.scores(x)
        t = self.threshold
        return GuardResult(pred, s, ~(s <= t), t)  # a NaN score is flagged: the guard fails closed

    # -- calibration --
    def calibrate(self, x_clean: Tensor, fpr: float | None = None) -> Calibration:
        """Set the threshold so that at most a share ``fpr`` (default the guard's) of the clean images
        ``x_clean`` is flagged; use clean images the guard was not trained on. Returns the calibration."""
        if fpr is not None:
            if not 0.0 <= float(fpr) <= 1.0:
                raise GuardError(f"fpr must be a rate in [0, 1], got {fpr!r}")
            self.fpr = float(fpr)
        check_images(x_clean, "x_clean")
        if len(x_clean) == 0:
            raise GuardError("calibrate needs clean images; pass a few hundred held-out clean images")
        _, s = self.scores(x_clean)
        t = threshold_at_fpr(s, self.fpr)
        self.detector.threshold = t
        # robustness numbers attached earlier were measured at the old threshold: they do not carry over
        self.calibration_ = Calibration(self.fpr, float(t), int((s > t).sum()) / len(s), len(x_clean))
        return self.calibration_

    def attach_robustness(self, result: Any = None, *, name: str | None = None, **numbers: Any) -> None:
        """Record robust-detection numbers measured elsewhere with the calibration, so ``report()`` and the saved
        guard carry them: a result object with ``to_dict()`` (e.g. ``detection.security.robust_detection``'s
        curve; stored under ``name``, default ``"<norm>"``) and/or plain numbers (``tpr_bim=0.93``)."""
        if self.calibration_ is None:
            raise GuardError("calibrate the guard before attaching robustness numbers")
        if result is not None:
            if not callable(getattr(result, "to_dict", None)):
                raise GuardError(f"attach_robustness takes a result with to_dict() (e.g. a RobustDetectionResult), "
                                 f"got {type(result).__name__}; pass plain numbers as keywords")
            numbers = {name or str(getattr(result, "norm", "robust")): result.to_dict(), **numbers}
        self.calibration_.robust.update(to_jsonable(numbers))

    def report(self) -> dict[str, Any]:
        """The detector, the threshold and the calibration (None until ``calibrate``)."""
        return {"detector": type(self.detector).__name__, "params": self.detector.params(),
                "threshold": self.threshold, "fpr": self.fpr,
                "calibration": self.calibration_.to_dict() if self.calibration_ is not None else None}

    # -- files --
    def save(self, directory: str | Path, classifier_meta: dict[str, Any] | None = None) -> Path:
        """Write the detector (``detector.safetensors`` + ``detector.json``, with the classifier's hash and the
        calibration), ``guard.json`` and, with ``classifier_meta`` (recorded beside it), the classifier into
        ``directory``; returns the directory. All files are written into a sibling folder first, which then
        replaces ``directory`` whole: a crash leaves the old guard or the new one, never a mix."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise GuardError(f"{directory} is a file; the guard needs a directory")
        if self.calibration_ is not None and self.calibration_.threshold != self.threshold:
            raise GuardError(f"the threshold was changed to {self.threshold:g} after calibration (calibrated: "
                             f"{self.calibration_.threshold:g}); calibrate again, or drop the calibration "
                             "(guard.calibration_ = None) to save an uncalibrated threshold")
        partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            save_detector(self.detector, partial / DETECTOR_FILE, self.model,
                          calibration=self.calibration_.to_dict() if self.calibration_ is not None else None)
            write_json(partial / GUARD_FILE, {"fpr": self.fpr, "batch_size": self.batch_size})
            if classifier_meta is not None:
                from ..models.io import save_model

                save_model(self.model, partial / CLASSIFIER_FILE, **classifier_meta)
            old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
            if directory.exists():
                for f in directory.iterdir():  # what this save does not write (e.g. the classifier) stays
                    if f.is_file() and not (partial / f.name).exists():
                        shutil.copy2(f, partial / f.name)
                directory.rename(old)
            try:
                partial.rename(directory)
            except OSError:
                if old.exists():
                    old.rename(directory)  # the old guard back in place
                raise
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module | None = None) -> Guard:
        """The guard saved in ``directory``, for ``model`` (default: the classifier saved with it, if any).
        Refuses a model other than the one the detector was made for, naming both hashes."""
        directory = Path(directory)
        if not directory.is_dir():
            raise GuardError(f"{directory} is not a guard directory; write one with Guard.save or `advsal export`")
        if model is None:
            from ..models.io import load_model

            if not (directory / f"{CLASSIFIER_FILE}.safetensors").is_file():
                raise GuardError(f"{directory} holds no classifier; pass the model the guard was made for "
                                 "(--model FILE.safetensors)")
            model = load_model(directory / CLASSIFIER_FILE)
        info = read_detector_info(directory / DETECTOR_FILE)
        detector = load_detector(directory / DETECTOR_FILE, model)
        calibration = _calibration(info, directory / DETECTOR_FILE)
        settings = _settings(directory / GUARD_FILE, calibration)
        guard = cls(model, detector, fpr=settings.get("fpr", calibration.fpr_target if calibration else 0.05),
                    batch_size=settings.get("batch_size", 256))
        guard.calibration_ = calibration
        return guard


def _calibration(info: dict[str, Any], where: Path) -> Calibration | None:
    """The sidecar's calibration, checked to be one and to hold the sidecar's own threshold (the checksum covers
    only the tensors: an edited threshold must not pass as calibrated)."""
    cal = info.get("calibration")
    if cal is None:
        return None
    try:
        calibration = Calibration(**cal)
        consistent = float(calibration.threshold) == float(info["threshold"])
    except (TypeError, ValueError) as exc:
        raise DetectorFileError(f"{where}: malformed calibration ({exc}); export and calibrate the guard "
                                "again") from None
    if not consistent:
        raise DetectorFileError(f"{where}: the threshold {info['threshold']} differs from the calibrated "
                                f"{calibration.threshold} (edited?); calibrate the guard again")
    return calibration


def _settings(path: Path, calibration: Calibration | None) -> dict[str, Any]:
    """``guard.json`` (fpr, batch_size), checked; {} when absent."""
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectorFileError(f"{path}: corrupt ({exc}); save the guard again") from None
    fpr, batch = (settings.get("fpr"), settings.get("batch_size")) if isinstance(settings, dict) else (None, None)
    if not isinstance(settings, dict) or not isinstance(batch, int) or batch < 1 or \
            not isinstance(fpr, (int, float)) or not 0 <= fpr <= 1:
        raise DetectorFileError(f"{path}: not guard settings (an fpr in [0, 1] and a positive batch_size); save "
                                "the guard again")
    if calibration is not None and not math.isclose(fpr, calibration.fpr_target):
        raise DetectorFileError(f"{path}: fpr {fpr} differs from the calibration's {calibration.fpr_target} "
                                "(edited?); calibrate the guard again")
    return settings


__all__ = ["CLASSIFIER_FILE", "Calibration", "DETECTOR_FILE", "Guard", "GuardError", "GuardResult"]
