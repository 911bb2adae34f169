"""What the detection study compares: the saliency detector of seed 001 and the baselines, one
:class:`DetectorSpec` each. Adding a baseline is one entry::

    register_detector_spec(DetectorSpec("my-detector", "my detector (Someone et al.)",
                                        factory=lambda classifier, cfg: MyDetector(classifier)))

and naming it in the config's ``baselines``. The detector must meet :class:`advsal.detection.protocol.Detector`;
its ``params()`` and the spec's ``training(cfg)`` options enter its stage's key. Constructor parameters named in
the spec's ``options`` may be set per detector in the config's ``baseline_params`` (e.g. ``{lid: {k: 10}}``).

``PAPER_NUMBERS`` holds, for the field's baselines, what their papers report on MNIST (with the table), for the
report's "paper (table)" column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...detection.baselines import FeatureSqueezingDetector, KDBUDetector, LIDDetector, MahalanobisDetector
from ...detection.detectors import FeatureDetector, NPlusOneDetector, SaliencyDetector
from ...detection.protocol import Detector
from ...errors import ConfigError, InputError

#: The study's own detector (Table II); every other registered spec is a baseline.
MAIN_DETECTOR = "image+saliency"


def network_training(cfg: Any) -> dict[str, Any]:
    """Fit options of the trained-network detectors: the config's detector schedule (seed 001 Step 3)."""
    d = cfg.detector
    return {"epochs": d.epochs, "lr": d.lr, "batch_size": d.batch_size, "seed": d.seed}


def statistic_training(cfg: Any) -> dict[str, Any]:
    """Fit options of the feature-statistic detectors (LID, Mahalanobis, KD+BU): 5-fold ``LogisticRegressionCV``
    as in the papers' code, seeded with the detector seed; the batch size only bounds memory."""
    return {"batch_size": 256, "cv": 5, "seed": cfg.detector.seed}


def baseline_options(cfg: Any, name: str) -> dict[str, Any]:
    """The constructor parameters the config sets for baseline ``name`` (``baseline_params``; none by default)."""
    return dict((getattr(cfg, "baseline_params", None) or {}).get(name, {}))


@dataclass(frozen=True)
class DetectorSpec:
    """A detector the study trains and scores.

    ``factory(classifier, cfg)`` builds it (untrained) for classifier F and the study config. ``adversarial``:
    whether ``fit`` needs adversarial training images (if not, it gets ``x_adv=None`` and its stage does not
    depend on the adversarial training set). ``labels``: whether ``fit`` takes the clean images' true labels
    (``y_clean=``). ``training(cfg)``: the keyword options passed to ``fit``; they and the detector's
    ``params()`` are the stage's parameters. ``options``: the constructor parameters a config may set for it in
    ``baseline_params`` (the factory reads them with :func:`baseline_options`).
    """

    name: str
    display: str
    factory: Callable[[nn.Module, Any], Detector]
    adversarial: bool = True
    labels: bool = False
    training: Callable[[Any], dict[str, Any]] = field(default=network_training)
    options: tuple[str, ...] = ()


DETECTOR_SPECS: dict[str, DetectorSpec] = {}


def register_detector_spec(spec: DetectorSpec) -> DetectorSpec:
    """Add (or replace) ``spec`` under ``spec.name``; configs may then list it in ``baselines``."""
    if not isinstance(spec, DetectorSpec):
        raise InputError(f"register_detector_spec takes a DetectorSpec, got {type(spec).__name__}")
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
    # the field's detectors (advsal.detection.baselines), at their papers' MNIST settings unless baseline_params
    # says otherwise; LID reads no labels, Mahalanobis and KD+BU group the clean images by their true labels
    DetectorSpec("lid", "LID (Ma et al. 2018)",
                 lambda f, cfg: LIDDetector(f, **baseline_options(cfg, "lid")),
                 training=statistic_training, options=("layers", "k", "minibatch")),
    DetectorSpec("mahalanobis", "Mahalanobis (Lee et al. 2018)",
                 lambda f, cfg: MahalanobisDetector(f, **baseline_options(cfg, "mahalanobis")),
                 labels=True, training=statistic_training, options=("layers", "noise")),
    DetectorSpec("kd-bu", "KD + BU (Feinman et al. 2017)",
                 lambda f, cfg: KDBUDetector(f, **baseline_options(cfg, "kd-bu")),
                 labels=True, training=statistic_training,
                 options=("bandwidth", "layer", "mc_samples", "dropout", "seed")),
    # no adversarial training data: the threshold is set at the config's fpr on the clean training images
    DetectorSpec("feature-squeezing", "feature squeezing (Xu et al. 2018)",
                 lambda f, cfg: FeatureSqueezingDetector(f, fpr=cfg.fpr, **baseline_options(cfg, "feature-squeezing")),
                 adversarial=False, training=lambda cfg: {"batch_size": 256}, options=("bit_depth", "median_size")),
):
    register_detector_spec(_spec)


# ------------------------------------------------------------------------------------------------ papers' numbers
#: What each baseline's paper reports on MNIST, per study attack (None: the paper has no such number, or it could
#: not be read here — ``note`` says which), for the report's "paper (table)" column. ``metric`` names the
#: paper's quantity (ROC-AUC unless stated), ``table`` where it is.
PAPER_NUMBERS: dict[str, dict[str, Any]] = {
    "lid": {"table": "Ma et al. 2018, Table 1", "metric": "AUC",
            "values": {"fgsm": None, "bim": None, "jsma": None, "cw": None},
            "note": "MNIST AUC per attack (FGM, BIM-a/b, JSMA, Opt = C&W L2) is in Table 1; its values could not be "
                    "retrieved with the search tools available here, so none is copied"},
    "mahalanobis": {"table": "Lee et al. 2018, Table 2", "metric": "AUROC", "values": {},
                    "note": "no MNIST: the paper reports CIFAR-10/100 and SVHN (ResNet, DenseNet) only"},
    "kd-bu": {"table": "Feinman et al. 2017, Table 3", "metric": "ROC-AUC",
              "values": {"fgsm": None, "bim": None, "jsma": None, "cw": None},
              "note": "per-attack MNIST ROC-AUC (FGSM, BIM-A/B, JSMA, C&W) is in Table 3; the abstract gives 85–93% "
                      "ROC-AUC across datasets with noisy negatives; the per-attack values could not be retrieved "
                      "here"},
    "feature-squeezing": {"table": "Xu et al. 2018, Table 5", "metric": "detection rate",
                          "values": {"overall": 0.98},
                          "note": "1-bit + 2×2 median joint detector: about 98% of successful MNIST adversarial "
                                  "examples detected at ~5% FPR, pooled over its attacks (FGSM, BIM, C&W, JSMA); "
                                  "per-attack rates and ROC-AUC are in Table 5 and could not be retrieved here"},
}


def paper_number(kind: str, attack: str) -> str:
    """The report's "paper (table)" cell for baseline ``kind`` on ``attack``: the paper's MNIST number and its
    table, or why there is none ("–" for detectors outside PAPER_NUMBERS)."""
    entry = PAPER_NUMBERS.get(kind)
    if entry is None:
        return "–"
    values = entry["values"]
    if values.get(attack) is not None:
        return f"{values[attack]:.2f} {entry['metric']} ({entry['table']})"
    if values.get("overall") is not None:
        return f"{values['overall']:.2f} {entry['metric']}, all attacks ({entry['table']})"
    if not values:
        return f"none ({entry['note'].split(':')[0]}; {entry['table']})"
    return f"not retrieved ({entry['table']})"


__all__ = ["DETECTOR_SPECS", "MAIN_DETECTOR", "PAPER_NUMBERS", "DetectorSpec", "baseline_options",
           "default_layers", "detector_display", "network_training", "paper_number", "register_detector_spec",
           "statistic_training", "study_layers"]
