"""Detection metrics: ROC curve, AUROC, TPR at a fixed clean false-positive rate, and seed 001 Table II rates.

Convention used throughout advsal.detection: a higher score means "more likely adversarial", adversarial is
the positive class (label 1), and an input is *called adversarial when its score is strictly greater than the
threshold*. Inputs may be torch tensors, numpy arrays or sequences; results are Python floats / numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import InputError

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:  # (N, 1) scores from a single-output network
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D vector of per-example values, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise InputError(f"{name} contains NaN; score every example before computing metrics")
    return arr


def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _vector(scores, "scores")
    y = _vector(labels, "labels")
    if s.shape != y.shape:
        raise InputError(f"scores and labels must have the same length, got {s.shape[0]} and {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise InputError("labels must be 0 (clean) or 1 (adversarial)")
    if not (y == 0).any() or not (y == 1).any():
        raise InputError("labels must contain both clean (0) and adversarial (1) examples for a ROC/AUROC")
    return s, y.astype(bool)


def split_by_label(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(clean scores, adversarial scores) from pooled scores and 0/1 labels."""
    s, y = _scores_labels(scores, labels)
    return s[~y], s[y]


def pooled(scores_clean: ArrayLike, scores_adv: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (scores, labels) from clean and adversarial scores (label 1 = adversarial)."""
    c = _vector(scores_clean, "scores_clean")
    a = _vector(scores_adv, "scores_adv")
    return np.concatenate([c, a]), np.concatenate([np.zeros(len(c)), np.ones(len(a))])


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve as ``(fpr, tpr, thresholds)``, one point per threshold, from (0, 0) to (1, 1).

    ``thresholds[k]`` is the threshold at which "score > threshold" gives the point ``(fpr[k], tpr[k])``: the
    distinct scores in decreasing order (the first, the maximum, flags nothing) followed by ``-inf`` (flags
    everything). Tied scores move the curve diagonally, which is what makes the trapezoidal area equal to
    ``auroc``.
    """
    s, y = _scores_labels(scores, labels)
    distinct = np.unique(s)[::-1]
    thresholds = np.concatenate([distinct, [-np.inf]])
    flagged = s[None, :] > thresholds[:, None] if len(s) * len(thresholds) <= 4_000_000 else None
    if flagged is not None:
        tp = (flagged & y).sum(1)
        fp = (flagged & ~y).sum(1)
    else:  # large inputs: counts from sorted scores instead of a threshold × example matrix
        pos, neg = np.sort(s[y]), np.sort(s[~y])
        tp = len(pos) - np.searchsorted(pos, thresholds, side="right")
        fp = len(neg) - np.searchsorted(neg, thresholds, side="right")
    return fp / (~y).sum(), tp / y.sum(), thresholds


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve = P(score_adv > score_clean) + ½ P(score_adv = score_clean).

    Computed from mid-ranks (Mann–Whitney U / (n_clean · n_adv)), so ties count one half; 0.5 is chance.
    """
    s, y = _scores_labels(scores, labels)
    ranks = rankdata(s)  # average ranks for ties
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def threshold_at_fpr(scores_clean: ArrayLike, fpr: float = 0.05) -> float:
    """The threshold with the highest detection rate whose clean false-positive rate is at most ``fpr``.

    With the rule "adversarial iff score > threshold", that is the (k+1)-th largest clean score for
    k = floor(fpr · n_clean) allowed false positives; ties among clean scores can make the realised rate
    lower.
    """
    c = _vector(scores_clean, "scores_clean")
    if not 0.0 <= fpr <= 1.0:
        raise InputError(f"fpr must be a rate in [0, 1], got {fpr}")
    if len(c) == 0:
        raise InputError("scores_clean is empty; a threshold needs clean scores to calibrate on")
    k = int(np.floor(fpr * len(c) + 1e-9))
    if k >= len(c):
        return float("-inf")
    return float(np.sort(c)[::-1][k])


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.05) -> float:
    """Share of adversarial examples detected at the threshold ``threshold_at_fpr(clean scores, fpr)``."""
    clean, adv = split_by_label(scores, labels)
    t = threshold_at_fpr(clean, fpr)
    return float((adv > t).mean())


@dataclass(frozen=True)
class DetectionRates:
    """Seed 001 Table II quantities at one threshold.

    ``clean_as_clean`` is the column D(x_test) (share of clean inputs called clean, the true-negative rate);
    ``adv_as_adv`` is D(x_test^adv) (share of adversarial inputs called adversarial, the true-positive rate);
    ``accuracy`` is the share of all inputs classified correctly, ``balanced_accuracy`` the mean of the two
    rates.
    """

    clean_as_clean: float
    adv_as_adv: float
    accuracy: float
    balanced_accuracy: float
    false_positive_rate: float
    threshold: float
    n_clean: int
    n_adv: int

    def to_dict(self) -> dict:
        return asdict(self)


def detection_rates(scores_clean: ArrayLike, scores_adv: ArrayLike, threshold: float = 0.5) -> DetectionRates:
    """Table II rates of a detector whose scores are ``scores_clean`` / ``scores_adv`` at ``threshold``."""
    c = _vector(scores_clean, "scores_clean")
    a = _vector(scores_adv, "scores_adv")
    if len(c) == 0 or len(a) == 0:
        raise InputError(f"detection_rates needs clean and adversarial scores, got {len(c)} and {len(a)}")
    tn = int((c <= threshold).sum())
    tp = int((a > threshold).sum())
    tnr, tpr = tn / len(c), tp / len(a)
    return DetectionRates(clean_as_clean=tnr, adv_as_adv=tpr, accuracy=(tn + tp) / (len(c) + len(a)),
                          balanced_accuracy=(tnr + tpr) / 2, false_positive_rate=1.0 - tnr,
                          threshold=float(threshold), n_clean=len(c), n_adv=len(a))
