"""Configuration of the attention study (seed 004): typed, validated before the first stage runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import require
from ..engine import DataConfig, ExecutorConfig, ModelConfig, check_device


@dataclass
class PGDConfig:
    """PGD L∞ (Madry et al. 2018); the attack's default step size 2.5·ε/steps unless ``alpha`` is given."""

    eps: float = 0.1
    steps: int = 20
    alpha: float | None = None
    top_pixels: int = 5  # the "perturbed pixels" of PGD for the attraction metric: the k most changed
    # also run PGD stopped per image at its first misclassification (same start, same steps): the strength
    # Pixel Attack has (it stops at its first success), for the paired PGD-vs-Pixel comparisons
    early_stop: bool = True

    def validate(self) -> None:
        require(0 < self.eps <= 1, "eps", f"must be in (0, 1] (pixel units), got {self.eps}")
        require(self.steps >= 1, "steps", f"must be ≥ 1, got {self.steps}")
        require(self.alpha is None or self.alpha > 0, "alpha", f"must be > 0 or null (2.5·eps/steps), got "
                f"{self.alpha}")
        require(self.top_pixels >= 1, "top_pixels", f"must be ≥ 1, got {self.top_pixels}")
        require(isinstance(self.early_stop, bool), "early_stop", f"must be true or false, got {self.early_stop!r}")


@dataclass
class PixelConfig:
    """Pixel Attack (Su et al. 2019) by differential evolution. Su et al. use population 400 × 100
    generations; the default 100 × 20 (at most 2,100 model evaluations per image, an image stops at its first
    success) keeps the default study near 10 minutes on 2 CPU cores. The report gives the success rate per
    pixel count."""

    pixels: list[int] = field(default_factory=lambda: [1, 3, 5])
    population: int = 100
    generations: int = 20

    def validate(self) -> None:
        require(len(self.pixels) >= 1, "pixels", "must list at least one pixel count, e.g. [1, 3, 5]")
        require(all(k >= 1 for k in self.pixels), "pixels", f"must all be ≥ 1, got {self.pixels}")
        require(len(set(self.pixels)) == len(self.pixels), "pixels", f"must be distinct, got {self.pixels}")
        require(self.population >= 4, "population", f"must be ≥ 4 (DE/rand/1 draws 3 others), got "
                f"{self.population}")
        require(self.generations >= 0, "generations", f"must be ≥ 0, got {self.generations}")


@dataclass
class Config:
    name: str = "attention-mnist5k"
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ModelConfig = field(default_factory=lambda: ModelConfig(architecture="resnet20", epochs=4,
                                                                          batch_size=64))
    n_images: int = 200  # correctly classified test images, attacked by every attack
    pgd: PGDConfig = field(default_factory=PGDConfig)
    pixel: PixelConfig = field(default_factory=PixelConfig)
    # Grad-CAM layers by module name (model.named_modules()), shallow → deep; the last is "the last conv
    # layer". null: the last layer of each resolution stage, ending with the model's Grad-CAM layer.
    layers: list[str] | None = None
    top_fraction: float = 0.1  # region of interest = top 10% of pixels
    radius: float = 2.0  # "near a perturbed pixel" = within this many pixels
    alpha: float = 0.05
    min_effect: float = 0.147
    destroy_ratio: float = 0.5  # reported only: median retained true-class CAM energy below this
    # "keeps the region" = the mean paired difference of IoU / rank correlation with the clean map, adversarial
    # minus same-budget random control, lies within ±this (TOST equivalence test)
    equivalence_margin: float = 0.1
    min_examples: int = 10
    bootstrap: int = 2000
    figure_images: int = 4
    batch_size: int = 100  # saliency batch size: speed only, no stage depends on it
    seed: int = 0
    device: str = "auto"
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # task resources under --executor ray

    def validate(self) -> None:
        require(self.n_images >= 1, "n_images", f"must be ≥ 1, got {self.n_images}")
        require(self.layers is None or len(self.layers) >= 1, "layers", "must name at least one layer, or be "
                "null for the default layers")
        require(self.layers is None or len(set(self.layers)) == len(self.layers), "layers",
                f"must be distinct, got {self.layers}")
        require(0 < self.top_fraction <= 1, "top_fraction", f"must be in (0, 1], got {self.top_fraction}")
        require(self.radius >= 0, "radius", f"must be ≥ 0, got {self.radius}")
        require(0 < self.alpha < 1, "alpha", f"must be in (0, 1), got {self.alpha}")
        require(0 <= self.min_effect <= 1, "min_effect", f"must be in [0, 1], got {self.min_effect}")
        require(0 < self.equivalence_margin < 1, "equivalence_margin", f"must be in (0, 1), got "
                f"{self.equivalence_margin}")
        require(self.destroy_ratio > 0, "destroy_ratio", f"must be > 0, got {self.destroy_ratio}")
        require(self.min_examples >= 2, "min_examples", f"must be ≥ 2, got {self.min_examples}")
        require(self.bootstrap >= 100, "bootstrap", f"must be ≥ 100 resamples, got {self.bootstrap}")
        require(self.figure_images >= 0, "figure_images", f"must be ≥ 0, got {self.figure_images}")
        require(self.batch_size >= 1, "batch_size", f"must be ≥ 1, got {self.batch_size}")
        check_device(self.device)
