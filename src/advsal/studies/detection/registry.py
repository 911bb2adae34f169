"""What the detection study compares: the saliency detector of seed 001 and the baselines, one
:class:`DetectorSpec` each. Adding a baseline is one entry::

    register_detector_spec(DetectorSpec("my-detector", "my detector (Someone et al.)",
                                        factory=lambda classifier, cfg: MyDetector(classifier)))

and naming it in the config's ``baselines``. The detector must meet :class:`advsal.detection.protocol.Detector`;
its ``params()`` and the spec's ``training(cfg)`` options enter its stage's key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...detection.detectors import FeatureDetector, NPlusOneDetector, SaliencyDetector
from ...detection.protocol import Detector
from ...errors import ConfigError

#: The study's own detector (Table II); every other registered spec is a baseline.
MAIN_DETECTOR = "image+saliency"


def network_training(cfg: Any) -> dict[str, Any]:
    """Fit options of the trained-network detectors: the config's detector schedule (seed 001 Step 3)."""
    d = cfg.detector
    return {"epochs": d.epochs, "lr": d.lr, "batch_size": d.batch_size, "seed": d.seed}


@dataclass(frozen=True)
class DetectorSpec:
    """A detector the study trains and scores.

    ``factory(classifier, cfg)`` builds it (untrained) for classifier F and the study config. ``adversarial``:
    whether ``fit`` needs adversarial training images (if not, it gets ``x_adv=None`` and its stage does not
    depend on the adversarial training set). ``labels``: whether ``fit`` takes the clean images' true labels
    (``y_clean=``). ``training(cfg)``: the keyword options passed to ``fit``; they and the detector's
    ``params()`` are the stage's parameters.
    """

    name: str
    display: str
    factory: Callable[[nn.Module, Any], Detector]
    adversarial: bool = True
    labels: bool = False
    training: Callable[[Any], dict[str, Any]] = field(default=network_training)


DETECTOR_SPECS: dict[str, DetectorSpec] = {}


def register_detector_spec(spec: DetectorSpec) -> DetectorSpec:
    """Add (or replace) ``spec`` under ``spec.name``; configs may then list it in ``baselines``."""
    if not isinstance(spec, DetectorSpec):
        raise ValueError(f"register_detector_spec takes a DetectorSpec, got {type(spec).__name__}")
    DETECTOR_SPECS[spec.name] = spec
    return spec


def detector_display(name: str) -> str:
    return DETECTOR_SPECS[name].display if name in DETECTOR_SPECS else name


# ------------------------------------------------------------------------------------------------ layers
def default_layers(model: nn.Module) -> list[str]:
    """A shallow, a middle and a deep layer of any classifier: the first, middle and last ``nn.ReLU`` module (or,
    for a model without ReLU modules, ``nn.Conv2d``) in ``named_modules()`` order that comes before the first
    ``nn.Linear`` / ``nn.Flatten`` (their outputs are feature maps, as Grad-CAM and the feature-map detectors
    need). For a zoo model these are the first, middle and last ReLU of ``features``. Set ``layers:`` in the
    config to choose others."""
    candidates: dict[type, list[str]] = {nn.ReLU: [], nn.Conv2d: []}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Flatten)):
            break
        for kind, names in candidates.items():
            if isinstance(module, kind) and name:
                names.append(name)
    found = candidates[nn.ReLU] or candidates[nn.Conv2d]
    if not found:
        raise ConfigError("layers: the classifier has no nn.ReLU or nn.Conv2d module before its first Linear "
                          "layer; name three layers (shallow, middle, deep) with layers: [...] in the config")
    return [found[0], found[len(found) // 2], found[-1]]


def study_layers(model: nn.Module, cfg: Any) -> list[str]:
    """``cfg.layers`` (checked against the model's module names) or :func:`default_layers`."""
    if cfg.layers is None:
        return default_layers(model)
    modules = {name for name, _ in model.named_modules() if name}
    unknown = [layer for layer in cfg.layers if layer not in modules]
    if unknown:
        raise ConfigError(f"layers: {', '.join(map(repr, unknown))} not in the classifier's modules; valid: "
                          f"{', '.join(sorted(modules))}")
    return list(cfg.layers)


# ------------------------------------------------------------------------------------------------ the entries
def _saliency_detector(input_: str) -> Callable[[nn.Module, Any], Detector]:
    def factory(classifier: nn.Module, cfg: Any) -> Detector:
        return SaliencyDetector(classifier, arch=cfg.detector.architecture, input=input_,
                                saliency_score=cfg.saliency_score, saliency_target=cfg.saliency_target)

    return factory


for _spec in (
    DetectorSpec(MAIN_DETECTOR, "image ⊕ saliency (seed 001)", _saliency_detector("image+saliency")),
    DetectorSpec("image", "image only (Gong et al. '1+1')", _saliency_detector("image")),
    DetectorSpec("saliency", "saliency only (ablation)", _saliency_detector("saliency")),
    DetectorSpec("n-plus-one", "N+1-class classifier (Grosse et al.)", lambda f, cfg: NPlusOneDetector(f),
                 labels=True),
    DetectorSpec("metzen", "inner feature maps (Metzen et al.)",
                 lambda f, cfg: FeatureDetector(f, layer=study_layers(f, cfg)[1])),
    DetectorSpec("first-layer", "first-layer feature maps (seed 001)",
                 lambda f, cfg: FeatureDetector(f, layer=study_layers(f, cfg)[0])),
):
    register_detector_spec(_spec)

__all__ = ["DETECTOR_SPECS", "MAIN_DETECTOR", "DetectorSpec", "default_layers", "detector_display",
           "network_training", "register_detector_spec", "study_layers"]
