"""Explanation (seed 003): APE metrics, the regularized two-phase method, the meaningful-perturbation
baseline and ground-truth localisation scores."""

from .ape import (
    APEResult,
    ape_d,
    ape_s,
    binarize,
    class_probability,
    l0_fraction,
    smooth_support,
    total_variation,
)
from .localization import (
    LocalizationScores,
    cc_hit_rate,
    connected_components,
    localization_scores,
    mask_area,
    pointing_game,
)
from .meaningful import (
    DELETIONS,
    MeaningfulExplanation,
    ThresholdScan,
    apply_region,
    deletion_image,
    gaussian_blur,
    meaningful_perturbation,
    scan_threshold,
    threshold_region,
)
from .regularized import (
    CLASSIFICATION_LOSSES,
    RegularizedExplanation,
    classification_term,
    minimize_in_mask,
    regularized_explanation,
)

__all__ = ["APEResult", "CLASSIFICATION_LOSSES", "DELETIONS", "LocalizationScores", "MeaningfulExplanation",
           "RegularizedExplanation", "ThresholdScan", "ape_d", "ape_s", "apply_region", "binarize", "cc_hit_rate",
           "class_probability", "classification_term", "connected_components", "deletion_image", "gaussian_blur",
           "l0_fraction", "localization_scores", "mask_area", "meaningful_perturbation", "minimize_in_mask",
           "pointing_game", "regularized_explanation", "scan_threshold", "smooth_support", "threshold_region",
           "total_variation"]
