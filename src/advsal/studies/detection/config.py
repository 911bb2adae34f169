"""The detection study's configuration (defaults = preset ``detection-mnist5k``, the ``make demo`` study).

Every field is type-checked from its annotation and range-checked by ``validate()`` before the first stage runs;
attack names are those of :data:`advsal.attacks.specs.ATTACK_SPECS`, detector names those of
:data:`advsal.studies.detection.registry.DETECTOR_SPECS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ...attacks.specs import ATTACK_SPECS
from ...models.zoo import ZOO
from ..config import require
from ..engine import DataConfig, ExecutorConfig, ModelConfig, check_device


@dataclass
class DetectorConfig:
    """Seed 001 Step 3: the Table I detector architecture, Adam lr 1e-4 (10 epochs on full MNIST)."""

    architecture: str = "mnist-net"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0

    def validate(self) -> None:
        require(self.architecture in ZOO, "architecture", f"must be a zoo model ({', '.join(ZOO)}), got "
                                                         f"{self.architecture!r}")
        require(self.epochs >= 1, "epochs", f"must be ≥ 1, got {self.epochs}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.batch_size >= 1, "batch_size", f"must be ≥ 1, got {self.batch_size}")


@dataclass
class GeneralisationConfig:
    """Seed 001 Table III: detectors fit at ε_fit = factor × ε*, tested at every ε_test."""

    attacks: list[str] = field(default_factory=lambda: ["fgsm", "bim", "bim-l2"])
    eps_factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # × the minimal ε
    n_train: int = 400
    n_test: int = 200

    def validate(self) -> None:
        require(len(self.eps_factors) >= 1 and all(f > 0 for f in self.eps_factors), "eps_factors",
                f"must be a non-empty list of numbers > 0, got {self.eps_factors}")
        require(self.n_train >= 1, "n_train", f"must be ≥ 1, got {self.n_train}")
        require(self.n_test >= 1, "n_test", f"must be ≥ 1, got {self.n_test}")


@dataclass
class SecondRoundConfig:
    """Second-round attacks on F and D jointly (Metzen's Eq. 10, an adaptive attack, a transfer attack)."""

    attack: str = "bim"  # the detector under attack is the one trained on this attack
    n_images: int = 100
    eps_factor: float = 1.0  # L∞ budget = factor × that attack's minimal ε
    steps: int = 40
    sigmas: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # Metzen's Eq. 10 trade-off
    surrogate_beta: float = 10.0
    kappa: float = 0.0

    def validate(self) -> None:
        require(self.n_images >= 1, "n_images", f"must be ≥ 1, got {self.n_images}")
        require(self.eps_factor > 0, "eps_factor", f"must be > 0, got {self.eps_factor}")
        require(self.steps >= 1, "steps", f"must be ≥ 1, got {self.steps}")
        require(all(0 <= s <= 1 for s in self.sigmas), "sigmas", f"must lie in [0, 1], got {self.sigmas}")
        require(self.surrogate_beta > 0, "surrogate_beta", f"must be > 0, got {self.surrogate_beta}")
        require(self.kappa >= 0, "kappa", f"must be ≥ 0, got {self.kappa}")


@dataclass
class SecurityConfig:
    """Security of the detectors under the library's strongest adaptive attacks (issue #15): robust-detection
    curves over ε (``advsal.detection.security.robust_detection``) for D trained on ``attack`` (default: the
    second round's) and each baseline trained on it, the threshold calibrated to ``fpr`` (clean false-positive
    rate) on held-out clean test images (the attacker knows it). Budgets: ``linf_factors`` × that attack's
    minimal ε plus the absolute ``linf_eps``, and ``l2_eps`` (main detector only). Baselines get
    ``baseline_images`` images and ``baseline_steps`` steps (the time budget). ``harden``: also D hardened by
    dynamic adversary training (``harden_rounds`` rounds of ``harden_steps`` steps at ``harden_eps``) and a
    PGD-trained classifier (``adv_train_epochs``), off by default (preset detection-security turns them on)."""

    enabled: bool = True
    attack: str | None = None  # null: the second round's attack
    fpr: float = 0.05  # clean false-positive rate the threshold is calibrated to
    # defaults sized for ≤ 4 min on 2 CPU cores; preset detection-security: 100 images, 100 steps, 2 restarts
    n_images: int = 50
    linf_factors: list[float] = field(default_factory=lambda: [1.0])
    linf_eps: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])
    l2_eps: list[float] = field(default_factory=lambda: [2.0])
    steps: int = 30
    restarts: int = 1
    lams: list[float] = field(default_factory=lambda: [1.0])  # λ sweep of the combined and selective attacks
    baseline_images: int = 50
    baseline_steps: int = 20
    harden: bool = False
    harden_eps: float = 0.1
    harden_rounds: int = 3
    harden_steps: int = 20
    adv_train_epochs: int = 10

    def validate(self) -> None:
        require(self.n_images >= 1, "n_images", f"must be ≥ 1, got {self.n_images}")
        require(self.baseline_images >= 1, "baseline_images", f"must be ≥ 1, got {self.baseline_images}")
        for name in ("linf_factors", "linf_eps", "l2_eps"):
            values = getattr(self, name)
            require(all(isinstance(v, (int, float)) and v >= 0 for v in values), f"{name}",
                    f"must be a list of budgets ≥ 0, got {values}")
        for name in ("steps", "restarts", "baseline_steps", "harden_rounds", "harden_steps", "adv_train_epochs"):
            require(getattr(self, name) >= 1, f"{name}", f"must be ≥ 1, got {getattr(self, name)}")
        require(self.harden_eps > 0, "harden_eps", f"must be > 0, got {self.harden_eps}")
        require(0 < self.fpr < 1, "fpr", f"must be in (0, 1), got {self.fpr}")
        require(len(self.lams) >= 1 and all(v >= 0 for v in self.lams), "lams",
                f"must be a non-empty list of weights ≥ 0, got {self.lams}")


@dataclass
class Config:
    name: str = "detection-mnist5k"
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ModelConfig = field(default_factory=lambda: ModelConfig(lr_decay=0.005, epochs=25, shift=2))
    n_train: int = 1000  # clean training images whose adversarial versions train D (balanced with them)
    n_test: int = 500
    attacks: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "fgsm": {},
        "bim": {"steps": 10},
        "bim-l2": {"steps": 10},
        "pgd": {"steps": 10},
        "cw": {"steps": 60, "binary_search_steps": 2, "c": 1.0, "lr": 0.05},
        "jsma": {"theta": 1.0, "gamma": 0.15},
    })
    attack_limits: dict[str, int] = field(default_factory=lambda: {"jsma": 500, "cw": 500})  # fewer train images
    search_images: int = 150
    max_accuracy: float = 0.30
    saliency_score: Literal["logit", "log_softmax", "softmax"] = "logit"
    saliency_target: str | int = "predicted"
    # The paper's D schedule (DetectorConfig()) needs ~35 s per detector here and the study trains ~35 of them;
    # lr 1e-3 for 4 epochs at batch 64 fits the 15-minute budget and detects C&W better on this data.
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(epochs=4, lr=1e-3, batch_size=64))
    baselines: list[str] = field(default_factory=lambda: ["image", "saliency", "n-plus-one", "metzen",
                                                            "first-layer"])
    baseline_attacks: list[str] = field(default_factory=lambda: ["bim", "cw"])
    # constructor parameters per baseline, e.g. {lid: {k: 10}, mahalanobis: {noise: 0.002}} (names: the spec's options)
    baseline_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    generalisation: GeneralisationConfig = field(default_factory=GeneralisationConfig)
    second_round: SecondRoundConfig = field(default_factory=SecondRoundConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # shallow, middle, deep module names (named_modules()) for the layer analysis and the feature-map baselines
    # (first-layer: the shallow one, metzen: the middle one); null: first, middle and last ReLU of F
    layers: list[str] | None = None
    layer_images: int = 100
    fpr: float = 0.05
    seed: int = 0
    # detector seeds to repeat the seeded detectors over (Table II's D and the seeded baselines), F, the subsets
    # and the adversarial sets fixed; the first one is every section's; null: [detector.seed], as one run
    seeds: list[int] | None = None
    device: str = "auto"
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # task resources under --executor ray

    def validate(self) -> None:
        from .registry import DETECTOR_SPECS, MAIN_DETECTOR

        known = ", ".join(ATTACK_SPECS)
        require(len(self.attacks) >= 1, "attacks", f"must name at least one attack ({known})")
        for name, params in self.attacks.items():
            require(name in ATTACK_SPECS, "attacks", f"has unknown attack {name!r}; registered: {known}")
            spec = ATTACK_SPECS[name]
            require(spec.eps_bracket is None or "eps" not in params, f"attacks.{name}.eps",
                    f"is chosen by the minimal-ε search (max_accuracy); remove it, or register a fixed-budget "
                    f"attack spec for {name!r}")
            try:  # building the attack checks its parameter names and values
                spec.build(params, None if spec.eps_bracket is None else spec.eps_bracket[1])
            except (ValueError, TypeError) as exc:
                require(False, f"attacks.{name}", f"is not valid for {name!r}: {str(exc).splitlines()[0]}")
        for name, limit in self.attack_limits.items():
            require(name in self.attacks, "attack_limits", f"names {name!r}, which is not in attacks "
                                                           f"({', '.join(self.attacks)})")
            require(limit >= 1, f"attack_limits.{name}", f"must be ≥ 1, got {limit}")
        require(self.n_train >= 2, "n_train", f"must be ≥ 2 (D′ and D are trained on its halves), got {self.n_train}")
        require(self.n_test >= 1, "n_test", f"must be ≥ 1, got {self.n_test}")
        require(self.search_images >= 1, "search_images", f"must be ≥ 1, got {self.search_images}")
        require(0 < self.max_accuracy <= 1, "max_accuracy", f"must be in (0, 1], got {self.max_accuracy}")
        require(self.saliency_target == "predicted" or (isinstance(self.saliency_target, int)
                                                        and self.saliency_target >= 0), "saliency_target",
                f"must be 'predicted' or a class index ≥ 0 (true labels are unknown to a detector), got "
                f"{self.saliency_target!r}")
        baselines = ", ".join(k for k in DETECTOR_SPECS if k != MAIN_DETECTOR)
        for kind in self.baselines:
            require(kind in DETECTOR_SPECS and kind != MAIN_DETECTOR, "baselines",
                    f"has unknown detector {kind!r}; registered: {baselines}")
        for kind, params in self.baseline_params.items():
            require(kind in DETECTOR_SPECS and kind != MAIN_DETECTOR, "baseline_params",
                    f"has unknown detector {kind!r}; registered: {baselines}")
            accepted = DETECTOR_SPECS[kind].options
            for key in params:
                require(key in accepted, f"baseline_params.{kind}",
                        f"has unknown parameter {key!r}; {kind} accepts: {', '.join(accepted) or 'none'}")
        for name in self.baseline_attacks:
            require(name in self.attacks, "baseline_attacks", f"names {name!r}, which is not in attacks "
                                                              f"({', '.join(self.attacks)})")
        budgeted = [n for n in self.attacks if ATTACK_SPECS[n].budgeted]
        for name in self.generalisation.attacks:
            require(name in budgeted, "generalisation.attacks",
                    f"names {name!r}; it must be an attack in attacks with a budget ε ({', '.join(budgeted)})")
        require(self.second_round.attack in budgeted, "second_round.attack",
                f"must be an attack in attacks with a budget ε ({', '.join(budgeted)}), got "
                f"{self.second_round.attack!r}")
        require(self.security.attack is None or self.security.attack in budgeted, "security.attack",
                f"must be an attack in attacks with a budget ε ({', '.join(budgeted)}), got {self.security.attack!r}")
        require(self.layers is None or len(self.layers) == 3, "layers",
                f"must be null or three module names (shallow, middle, deep), got {self.layers}")
        require(self.layer_images >= 1, "layer_images", f"must be ≥ 1, got {self.layer_images}")
        require(0 < self.fpr < 1, "fpr", f"must be in (0, 1), got {self.fpr}")
        require(self.seeds is None or (len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds)
                                       and all(0 <= s < 2**32 for s in self.seeds)), "seeds",
                f"must be null or a non-empty list of distinct seeds in [0, 2^32), e.g. [0, 1, 2], got {self.seeds}")
        check_device(self.device)

    def detector_seeds(self) -> list[int]:
        """The detector seeds the seeded detectors are trained with, one repetition each (``seeds``, else
        ``[detector.seed]``: a single run, whose stages are those of a config without ``seeds``)."""
        return list(self.seeds) if self.seeds else [self.detector.seed]

    def for_detector_seed(self, seed: int) -> Config:
        """This config with ``detector.seed`` = ``seed`` (equal to it when ``seed`` is already the detector's)."""
        return replace(self, detector=replace(self.detector, seed=seed))
