"""The explanation study's configuration: typed, validated completely before the first stage runs.

Coefficients are read in one convention for both methods (seed 003 Table 1 shares its columns): they multiply
per-element *means* — see :func:`~advsal.studies.explanation.protocol.mp_tv_coeff`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...explanation import CLASSIFICATION_LOSSES, DELETIONS
from ..config import require
from ..engine import DataConfig, ExecutorConfig, ModelConfig, check_device

#: the study's classification losses: the library's, plus Eq. 13's probability on the temperature-calibrated model
STUDY_LOSSES = (*CLASSIFICATION_LOSSES, "calibrated-probability")


@dataclass
class RegularizedConfig:
    """The regularized method (seed 003 §4). ``settings``: (α, β) pairs, Table 1's "ours" rows; γ, ε: §5.1.
    Steps and step sizes are not given in the paper: the library defaults (Adam, lr 0.01 ≈ ε per step,
    300 + 100 iterations). ``losses``: Eq. 13's ``probability``, this study's ``log-complement`` option and
    ``calibrated-probability`` (Eq. 13 on the model with its logits divided by a temperature fitted on the
    test images not explained, stage "calibrate"). ``patience`` > 0: phase 1 stops once E has not improved by
    ``tol`` (relative) for that many steps (``steps`` is then the cap); 0 runs exactly ``steps``."""

    settings: list[list[float]] = field(default_factory=lambda: [[0.01, 0.2], [6.0, 120.0], [40.0, 120.0]])
    losses: list[str] = field(default_factory=lambda: ["probability", "log-complement"])
    gamma: float = 30.0
    eps: float = 0.01
    steps: int = 300
    lr: float = 0.01
    phase2_steps: int = 100
    phase2_lr: float | None = None  # None: lr
    patience: int = 0
    tol: float = 1e-4

    def validate(self) -> None:
        for s in self.settings:
            require(len(s) == 2 and all(v >= 0 for v in s), "settings",
                    f"entries must be [alpha, beta] with both ≥ 0, got {s}")
        require(not self.settings or bool(self.losses), "losses",
                f"is empty; use some of {', '.join(STUDY_LOSSES)}")
        for loss in self.losses:
            require(loss in STUDY_LOSSES, "losses", f"entry {loss!r} is unknown; use {', '.join(STUDY_LOSSES)}")
        require(self.patience >= 0, "patience", f"must be ≥ 0 (0: exactly `steps`), got {self.patience}")
        require(self.tol >= 0, "tol", f"must be ≥ 0, got {self.tol}")
        require(len(set(self.losses)) == len(self.losses), "losses", f"has duplicates: {self.losses}")
        require(self.gamma > 0, "gamma", f"must be > 0, got {self.gamma}")
        require(self.eps >= 0, "eps", f"must be ≥ 0, got {self.eps}")
        require(self.steps >= 0, "steps", f"must be ≥ 0, got {self.steps}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.phase2_steps >= 0, "phase2_steps", f"must be ≥ 0, got {self.phase2_steps}")
        require(self.phase2_lr is None or self.phase2_lr > 0, "phase2_lr",
                f"must be > 0 (or null for lr), got {self.phase2_lr}")


@dataclass
class MeaningfulConfig:
    """Meaningful perturbation (Fong & Vedaldi 2017). ``settings``: (λ1, λ2, TV β) triples, Table 1's MP rows,
    in the per-element-mean convention; F&V's optimiser: Adam, lr 0.1, 300 iterations, mask 8× coarser than the
    image. Threshold grid (seed 003 §5.1): ``thresholds`` evenly spaced values in [0, 1) plus
    ``fine_thresholds`` log-spaced values in [1e-6, 1e-2]."""

    settings: list[list[float]] = field(default_factory=lambda: [[0.01, 0.2, 1.0], [0.01, 0.2, 3.0],
                                                                 [6.0, 120.0, 1.0], [40.0, 120.0, 1.0]])
    deletions: list[str] = field(default_factory=lambda: ["min", "blur"])
    steps: int = 300
    lr: float = 0.1
    mask_scale: int = 8
    blur_sigma: float | None = None  # None: F&V's σ = 10 at 224 px, scaled to the image height
    thresholds: int = 100
    fine_thresholds: int = 13

    def validate(self) -> None:
        for s in self.settings:
            require(len(s) == 3 and s[0] >= 0 and s[1] >= 0 and s[2] > 0, "settings",
                    f"entries must be [l1_coeff, tv_coeff, tv_beta] with the coefficients ≥ 0 and tv_beta > 0, "
                    f"got {s}")
        require(not self.settings or bool(self.deletions), "deletions",
                f"is empty; use some of {', '.join(DELETIONS)}")
        for d in self.deletions:
            require(d in DELETIONS, "deletions", f"entry {d!r} is unknown; use {', '.join(DELETIONS)}")
        require(len(set(self.deletions)) == len(self.deletions), "deletions", f"has duplicates: {self.deletions}")
        require(self.steps >= 0, "steps", f"must be ≥ 0, got {self.steps}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.mask_scale >= 1, "mask_scale", f"must be ≥ 1, got {self.mask_scale}")
        require(self.blur_sigma is None or self.blur_sigma > 0, "blur_sigma",
                f"must be > 0 (or null for F&V's σ), got {self.blur_sigma}")
        require(self.thresholds >= 1, "thresholds", f"must be ≥ 1, got {self.thresholds}")
        require(self.fine_thresholds >= 0, "fine_thresholds", f"must be ≥ 0, got {self.fine_thresholds}")


@dataclass
class TuningConfig:
    """The tuned comparison (issue 18): the explained images are split (seeded) into a tuning share
    ``fraction`` and held-out evaluation images. Each method variant (ours per loss, MP per deletion image)
    picks its best setting by mean APE_D on the tuning images from the *same number* of optimised settings —
    ours: Table 1's (α, β) at ``regularized.lr`` plus the ``regularized`` (α, β, lr) candidates; MP: Table 1's
    (λ1, λ2, TV β) plus the ``meaningful`` candidates, each with its threshold T chosen on the tuning images
    (seed 003 §5.1's binarisation, a scan without re-optimisation) — and the verdict is tested on the
    evaluation images only. ``fraction`` 0 turns it off."""

    fraction: float = 0.5
    regularized: list[list[float]] = field(default_factory=lambda: [[2.0, 40.0, 0.05]])  # (α, β, lr): lr > ε
    meaningful: list[list[float]] = field(default_factory=list)  # (λ1, λ2, TV β)

    def validate(self) -> None:
        require(0 <= self.fraction < 1, "fraction", f"must be in [0, 1) (0: no tuned comparison), got {self.fraction}")
        for s in self.regularized:
            require(len(s) == 3 and s[0] >= 0 and s[1] >= 0 and s[2] > 0, "regularized",
                    f"entries must be [alpha, beta, lr] with alpha, beta ≥ 0 and lr > 0, got {s}")
        for s in self.meaningful:
            require(len(s) == 3 and s[0] >= 0 and s[1] >= 0 and s[2] > 0, "meaningful",
                    f"entries must be [l1_coeff, tv_coeff, tv_beta] with the coefficients ≥ 0 and tv_beta > 0, "
                    f"got {s}")


@dataclass
class Config:
    """Seed 003 Table 1 on cluttered-mnist (the default; ``advsal run explanation``)."""

    name: str = "explanation-mnist5k"
    data: DataConfig = field(default_factory=lambda: DataConfig(name="cluttered-mnist"))
    classifier: ModelConfig = field(default_factory=lambda: ModelConfig(architecture="finding-net", epochs=8,
                                                                          batch_size=64))
    positive_class: str | int = "positive"  # the class explained ("finding present"); a name or an index
    n_images: int = 100
    regularized: RegularizedConfig = field(default_factory=RegularizedConfig)
    meaningful: MeaningfulConfig = field(default_factory=MeaningfulConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    contrast: bool = True  # gradient and Grad-CAM cut to the regularized masks' areas
    cam_layer: str | None = None  # None: the model's cam_layer
    connectivity: int = 8
    alpha: float = 0.05  # significance level of the paired comparisons
    figure_images: int = 4
    batch_size: int = 100  # images optimised together
    seed: int = 0  # the order in which test images are drawn
    device: str = "auto"
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # task resources under --executor ray

    def validate(self) -> None:
        require(self.n_images >= 1, "n_images", f"must be ≥ 1, got {self.n_images}")
        require(self.batch_size >= 1, "batch_size", f"must be ≥ 1, got {self.batch_size}")
        require(self.figure_images >= 0, "figure_images", f"must be ≥ 0, got {self.figure_images}")
        require(self.connectivity in (4, 8), "connectivity", f"must be 4 or 8, got {self.connectivity}")
        require(0 < self.alpha < 1, "alpha", f"must be in (0, 1), got {self.alpha}")
        require(not isinstance(self.positive_class, int) or self.positive_class >= 0, "positive_class",
                f"must be a class name or an index ≥ 0, got {self.positive_class}")
        require(bool(self.regularized.settings or self.meaningful.settings), "regularized.settings",
                "and meaningful.settings are both empty: nothing to explain with")
        if self.tuning.fraction > 0:
            n_ours = len(self.regularized.settings) + len(self.tuning.regularized)
            n_mp = len(self.meaningful.settings) + len(self.tuning.meaningful)
            require(n_ours == n_mp, "tuning.regularized",
                    f"gives the regularized method {n_ours} candidate settings (regularized.settings + "
                    f"tuning.regularized) but meaningful perturbation {n_mp} (meaningful.settings + "
                    "tuning.meaningful); the tuned comparison needs the same budget: add candidates to the smaller "
                    "list, or set tuning.fraction to 0")
        check_device(self.device)
