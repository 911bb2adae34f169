"""Adversarial-example detection: the saliency detector of seed 001, the baselines it is compared with
(Gong et al.'s "1+1" image detector, Metzen et al.'s feature-map detector, Grosse et al.'s N+1 classifier),
and detection metrics (ROC, AUROC, TPR at a clean false-positive rate, seed 001 Table II rates).

Adaptive (second-round) attacks on classifier + detector live in :mod:`advsal.attacks.adaptive`.
"""

from .baselines import (
    FeatureSqueezingDetector,
    KDBUDetector,
    LIDDetector,
    MahalanobisDetector,
    lid_mle,
    median_smooth,
    reduce_bit_depth,
)
from .detectors import (
    INPUTS,
    DetectorHistory,
    FeatureDetector,
    NetworkDetector,
    NPlusOneDetector,
    SaliencyDetector,
    metzen_detector_net,
)
from .guard import Calibration, Guard, GuardError, GuardResult
from .io import DetectorFileError, load_detector, read_detector_info, register_detector_kind, save_detector
from .metrics import (
    DetectionRates,
    auroc,
    detection_rates,
    pooled,
    roc_curve,
    split_by_label,
    threshold_at_fpr,
    tpr_at_fpr,
)
from .protocol import Detector, SaliencyInputDetector
from .security import RobustDetectionResult, correctly_classified, robust_detection

__all__ = ["INPUTS", "DetectionRates", "Detector", "DetectorHistory", "FeatureDetector", "NPlusOneDetector",
           "NetworkDetector", "SaliencyDetector", "SaliencyInputDetector", "auroc", "detection_rates",
           "metzen_detector_net", "pooled", "roc_curve", "split_by_label", "threshold_at_fpr", "tpr_at_fpr"]
__all__ += ["FeatureSqueezingDetector", "KDBUDetector", "LIDDetector", "MahalanobisDetector", "lid_mle",
            "median_smooth", "reduce_bit_depth"]
__all__ += ["Calibration", "DetectorFileError", "Guard", "GuardError", "GuardResult", "load_detector",
            "read_detector_info", "register_detector_kind", "save_detector"]
__all__ += ["RobustDetectionResult", "correctly_classified", "robust_detection"]
