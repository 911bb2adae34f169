"""Feature squeezing (Xu, Evans and Qi, "Feature squeezing: detecting adversarial examples in deep neural
networks", NDSS 2018): compare the classifier's softmax on an input with its softmax on squeezed copies.

The squeezers are bit-depth reduction (§IV) and median smoothing (§V-A); non-local means (§V-B, used for
CIFAR-10 and ImageNet only) is not implemented. ``FeatureSqueezingDetector`` is on the ``Detector`` protocol.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..tensors import check_images, frozen, model_device
from ._statistic import check_positive
from .metrics import threshold_at_fpr
from .protocol import ThresholdedScores


def reduce_bit_depth(x: Tensor, bits: int) -> Tensor:
    """Xu et al. §IV-A: round each pixel to ``bits`` bits, x' = round(x·(2^bits − 1)) / (2^bits − 1) (ties to
    even, as numpy's ``rint`` in the paper's code); ``bits = 1`` binarises at 0.5."""
    check_positive(bits, "bits", integer=True)
    levels = 2 ** int(bits) - 1
    return torch.round(x * levels) / levels


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a length-n axis padded by symmetric reflection (… b a | a b … y z | z y …)."""
    i = torch.arange(-before, n + after, device=device)
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - i - 1, i).clamp(0, n - 1)


def median_smooth(x: Tensor, size: int = 2) -> Tensor:
    """Xu et al. §V-A median smoothing with a size×size window per channel, as ``scipy.ndimage.median_filter(x,
    size=(1, 1, size, size), mode="reflect")`` in the paper's code: the window covers rows i − size//2 …
    i + size − 1 − size//2 (for 2×2: the pixel and its upper-left neighbours), edges are padded by symmetric
    reflection, and for an even window the upper of the two middle values is taken."""
    check_positive(size, "size", integer=True)
    size = int(size)
    if x.dim() != 4:
        raise InputError(f"median_smooth needs an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    before, after = size // 2, size - 1 - size // 2
    if max(before, after) > min(h, w):
        raise InputError(f"median window {size} is larger than the {h}x{w} image")
    xp = x.index_select(2, _reflect_index(h, before, after, x.device))
    xp = xp.index_select(3, _reflect_index(w, before, after, x.device))
    patches = xp.unfold(2, size, 1).unfold(3, size, 1).reshape(*x.shape, size * size)
    return patches.sort(-1).values[..., (size * size) // 2]


class FeatureSqueezingDetector(ThresholdedScores):
    """Xu et al., NDSS 2018 §III, Fig. 2: the L1 distance between the classifier's softmax on x and on each
    squeezed x, the maximum over squeezers (the "joint" detector, Eq. in §III-B):

        d(x) = max_s ‖softmax(F(x)) − softmax(F(s(x)))‖₁  ∈ [0, 2].

    ``score(x)`` is d(x) / 2 — the total-variation distance between the two predictions, a monotone map of d
    into [0, 1] — so ``threshold`` is on that scale (threshold = paper's threshold / 2). ``fit`` needs clean
    images only (``x_adv`` is optional and ignored): it sets the threshold at the false-positive rate ``fpr`` on
    them, as the paper selects the threshold at 5% FPR on legitimate examples (§VI-A).

    Parameters (the paper's best MNIST joint detector, Table 3): ``bit_depth`` = 1 bit, ``median_size`` = 2
    (2×2 median); ``None`` drops that squeezer. ``fpr`` — the clean false-positive rate ``fit`` calibrates to.

    ``differentiable = False``: bit-depth reduction has zero gradient almost everywhere and the median filter
    only passes gradient to one pixel per window, so ``adversarial_logit`` is computed without a useful
    gradient; adaptive attacks should use BPDA (identity for the squeezers).
    """

    differentiable = False
    _param_names = ("bit_depth", "median_size", "fpr")

    def __init__(self, classifier: nn.Module, bit_depth: int | None = 1, median_size: int | None = 2,
                 fpr: float = 0.05):
        if not isinstance(classifier, nn.Module):
            raise InputError(f"classifier must be an nn.Module mapping images to logits, got "
                             f"{type(classifier).__name__}")
        self.classifier = classifier
        self.bit_depth = bit_depth
        self.median_size = median_size
        self.fpr = fpr
        self.threshold = 0.5

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "clean_fpr_")

    def params(self) -> dict[str, Any]:
        """The constructor parameters (without the classifier), JSON-able."""
        return {k: getattr(self, k) for k in self._param_names}

    def __repr__(self) -> str:
        return f"FeatureSqueezingDetector({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    @property
    def device(self) -> torch.device:
        return model_device(self.classifier)

    def squeezers(self) -> dict[str, Any]:
        """The configured squeezers by name, each a function of an image batch."""
        out = {}
        if self.bit_depth is not None:
            out[f"bit_depth_{self.bit_depth}"] = lambda x: reduce_bit_depth(x, self.bit_depth)
        if self.median_size is not None:
            out[f"median_{self.median_size}x{self.median_size}"] = lambda x: median_smooth(x, self.median_size)
        if not out:
            raise InputError("FeatureSqueezingDetector needs at least one squeezer: set bit_depth or median_size")
        return out

    def distances(self, x: Tensor) -> Tensor:
        """L1 distance between softmax(F(x)) and softmax(F(s(x))) for each squeezer s, (N, squeezers), on the
        classifier's device."""
        check_images(x)
        x = x.to(self.device)
        squeezed = [s(x) for s in self.squeezers().values()]
        with frozen(self.classifier):
            probs = F.softmax(self.classifier(torch.cat([x, *squeezed])).double(), 1)
        probs = probs.reshape(1 + len(squeezed), len(x), -1)
        return (probs[1:] - probs[:1]).abs().sum(2).T

    def adversarial_logit(self, x: Tensor) -> Tensor:
        """log(p / (1 − p)) of the score p = d(x) / 2, clamped to p ∈ [1e-12, 1 − 1e-12], float64 (N,)."""
        p = (0.5 * self.distances(x).max(1).values).clamp(1e-12, 1 - 1e-12)
        return torch.log(p) - torch.log1p(-p)

    def score(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Total-variation distance d(x) / 2 ∈ [0, 1] (higher = more likely adversarial), (N,), float32 on x's
        device, no gradient."""
        check_images(x)
        with torch.no_grad():
            parts = [0.5 * self.distances(x[i:i + batch_size]).max(1).values for i in range(0, len(x), batch_size)]
        return torch.cat(parts).float().to(x.device) if parts else x.new_zeros(0)

    def fit(self, x_clean: Tensor, x_adv: Tensor | None = None, *, batch_size: int = 256,
            **_ignored: Any) -> FeatureSqueezingDetector:
        """Threshold at ``self.fpr`` false positives on ``x_clean`` (§VI-A); ``x_adv`` is not used. Returns
        self."""
        if not isinstance(self.fpr, (int, float)) or math.isnan(self.fpr) or not 0.0 <= self.fpr <= 1.0:
            raise InputError(f"fpr must be a rate in [0, 1], got {self.fpr!r}")
        check_images(x_clean, "x_clean")
        if len(x_clean) == 0:
            raise InputError("fit needs clean images to set the threshold on")
        scores = self.score(x_clean, batch_size)
        self.threshold = threshold_at_fpr(scores, self.fpr)
        self.clean_fpr_ = float((scores > self.threshold).float().mean())
        return self


__all__ = ["FeatureSqueezingDetector", "median_smooth", "reduce_bit_depth"]
