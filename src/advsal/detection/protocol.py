"""The contract every adversarial-example detector meets, and that attacks, studies and the report depend on.

A detector flags inputs of a classifier F as adversarial. Whatever it is built from — a trained network on
image ⊕ saliency, feature statistics with a logistic regression, prediction differences under squeezing — it
exposes the same few members, so an adaptive attack or a study never reads a detector's internals:

    det = SomeDetector(classifier, ...)          # the constructor only stores parameters
    det.fit(x_clean, x_adv)                      # returns det; det.is_fitted is then True
    det.calibrate(x_clean_heldout, fpr=0.05)     # optional: threshold at a clean false-positive rate
    p = det.score(x)                             # probability adversarial, (N,), no gradient
    z = det.adversarial_logit(x)                 # log(p / (1 − p)), differentiable w.r.t. x where D is
    flagged = det.predict(x)                     # score > threshold

``params()`` returns the constructor parameters that define the detector (JSON-able), which doubles as its
cache key in studies. Detectors whose decision is not differentiable (or whose gradient vanishes) say so with
``differentiable = False``; adaptive attacks then use a surrogate (BPDA) instead of the exact gradient.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from .metrics import threshold_at_fpr


@runtime_checkable
class Detector(Protocol):
    """What attacks, studies and the report may rely on; see the module docstring."""

    #: Scores strictly above the threshold are called adversarial.
    threshold: float
    #: False when ``adversarial_logit`` has no useful gradient w.r.t. the input (adaptive attacks then use BPDA).
    differentiable: bool

    @property
    def is_fitted(self) -> bool: ...

    def params(self) -> dict[str, Any]: ...

    def fit(self, x_clean: Tensor, x_adv: Tensor, **options: Any) -> Detector: ...

    def score(self, x: Tensor) -> Tensor: ...

    def adversarial_logit(self, x: Tensor) -> Tensor: ...

    def predict(self, x: Tensor) -> Tensor: ...

    def calibrate(self, x_clean: Tensor, fpr: float = 0.05) -> float: ...


@runtime_checkable
class SaliencyInputDetector(Detector, Protocol):
    """A detector whose network reads the classifier's saliency: adaptive attacks differentiate through it,
    building the network's input themselves: ``logit_from_features(assemble(x, saliency(x, t, create_graph=True)))``
    with ``t = saliency_target_for(classifier(x))``."""

    #: False when the network ignores the saliency (an image-only variant): attack it through ``adversarial_logit``.
    uses_saliency: bool

    def saliency_target_for(self, logits: Tensor) -> Tensor: ...

    def saliency(self, x: Tensor, target: Tensor | None = None, *, create_graph: bool = False) -> Tensor: ...

    def assemble(self, x: Tensor, s: Tensor | None) -> Tensor: ...

    def logit_from_features(self, features: Tensor) -> Tensor: ...


class ThresholdedScores:
    """``predict`` and ``calibrate`` for any detector with ``score(x, batch_size)`` and a settable ``threshold``
    (every advsal detector inherits these two instead of writing them again)."""

    def predict(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """True where ``score(x) > threshold`` (called adversarial)."""
        return self.score(x, batch_size) > self.threshold

    def calibrate(self, x_clean: Tensor, fpr: float = 0.05, batch_size: int = 256) -> float:
        """Set ``threshold`` so that at most a share ``fpr`` of ``x_clean`` is flagged (use held-out clean
        images); returns the new threshold."""
        self.threshold = threshold_at_fpr(self.score(x_clean, batch_size), fpr)
        return self.threshold


__all__ = ["Detector", "SaliencyInputDetector", "ThresholdedScores"]
