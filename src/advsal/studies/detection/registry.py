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
#: What each baseline's paper reports on MNIST, per study attack, for the report's "paper (table)" column.
#: ``values``: study attack → the paper's number (a fraction), ``None`` where the paper has one that could not be
#: read here (the report says "not retrieved"); empty when the paper has no MNIST number at all. A number enters
#: only when read in retrieved text, with its source in a comment beside it. ``metric``: the paper's quantity
#: (``quantity``: the row field of ours it compares with, "auroc" unless given; "d_adv" for a detection rate),
#: ``table``: where it is, ``attacks``: study attack → the paper's attack, ``settings``: the paper's MNIST setup as
#: its reference code has it (read there; the report's explanation of gaps quotes it).
#:
#: State (issue #16): no per-attack MNIST table value could be retrieved. The stored pages are page openings only
#: (arXiv abstracts, ar5iv/arxiv-vanity first screens), none of the reference repositories' READMEs quotes its
#: paper's table, and exact-string search found no copy of the tables. Searches done: `search` pages "LID
#: adversarial detection MNIST AUC FGM BIM-a BIM-b JSMA Opt table KD+BU", "A comparison of the discrimination
#: power AUC score of a logistic regression classifier among KD, BU, KD+BU and LID ...", "Table 1 LID detection
#: AUC MNIST CIFAR-10 SVHN ...", "combined logistic regression detector ROC-AUC MNIST ... BIM-A BIM-B JSMA C&W
#: Table", "feature squeezing ... joint detection framework detection rate MNIST", "evademl.org squeezing ...
#: ROC-AUC joint detector"; `search` code/issues/docs for reproductions quoting the tables; `find_string`
#: "BIM-a & BIM-b", "FGM & BIM-a", "KD+BU", "Bit Depth (1-bit)", "characterizing adversarial subspaces";
#: `read_file` README.md of xingjunm/lid_adversarial_subspace_detection, rfeinman/detecting-adversarial-samples,
#: pokaxpoka/deep_Mahalanobis_detector, mzweilin/EvadeML-Zoo (and its Reproduce_FeatureSqueezing.md).
#: The table numbers are the ones the issue cites; with the tables' text out of reach they are unverified too.
PAPER_NUMBERS: dict[str, dict[str, Any]] = {
    "lid": {
        "table": "Ma et al. 2018, Table 1", "metric": "AUC",
        "attacks": {"fgsm": "FGM", "bim": "BIM-b", "jsma": "JSMA", "cw": "Opt (C&W L2)"},
        "values": {"fgsm": None, "bim": None, "jsma": None, "cw": None},  # not retrieved (searches above)
        # github xingjunm/lid_adversarial_subspace_detection craft_adv_examples.py (ATTACK_PARAMS, CLIP_MIN/MAX),
        # util.py (get_lids_random_batch takes X_noisy; block_split: normal + noisy vs adversarial, 80/20)
        "settings": "FGM/BIM ε = 0.40 with pixels in [−0.5, 0.5], BIM step 0.01 (BIM-a stops at the first "
                    "misclassification, BIM-b runs every step); JSMA θ = 1, γ = 0.1; C&W L2 with its binary "
                    "search; noisy copies in the negative class, 80/20 split of the pooled sets",
        "note": "per-attack MNIST AUC (FGM, BIM-a, BIM-b, JSMA, Opt) is in Table 1, with KD, BU and KD+BU rows; "
                "the values could not be retrieved with the search tools here, so none is copied",
    },
    "mahalanobis": {
        "table": "Lee et al. 2018", "metric": "AUROC", "attacks": {}, "values": {},
        # github pokaxpoka/deep_Mahalanobis_detector README.md (pre-trained DenseNet/ResNet on CIFAR-10,
        # CIFAR-100, SVHN only) and ADV_Samples.py (--dataset 'cifar10 | cifar100 | svhn', --adv_type
        # 'FGSM | BIM | DeepFool | CWL2'); papers.nips.cc metadata of the NeurIPS 2018 paper (abstract)
        "settings": "ResNet-34 / DenseNet-100 on CIFAR-10, CIFAR-100 and SVHN; FGSM, BIM, DeepFool, C&W L2",
        "note": "no MNIST number: the paper's adversarial-detection results are on CIFAR-10, CIFAR-100 and SVHN "
                "(its reference code accepts only those three datasets)",
    },
    "kd-bu": {
        "table": "Feinman et al. 2017, Table 3", "metric": "ROC-AUC",
        "attacks": {"fgsm": "FGSM", "bim": "BIM-B", "jsma": "JSMA", "cw": "C&W"},
        "values": {"fgsm": None, "bim": None, "jsma": None, "cw": None},  # not retrieved (searches above)
        # github rfeinman/detecting-adversarial-samples scripts/craft_adv_samples.py (ATTACK_PARAMS['mnist'],
        # JSMA theta/gamma) and README.md ("an equal number of noisy samples ... as part of the 'negative' class");
        # the abstract (ar5iv.labs.arxiv.org/html/1703.00410): "85-93% ROC-AUC ... with a negative class that
        # consists of both normal and noisy samples" — pooled over datasets, so not entered as an MNIST value
        "settings": "FGSM/BIM ε = 0.30 with pixels in [0, 1], BIM step 0.01 (BIM-A stops at the first "
                    "misclassification, BIM-B runs every step); JSMA θ = 1, γ = 0.1; noisy copies of equal L2 "
                    "size in the negative class",
        "note": "per-attack MNIST ROC-AUC of the combined KD+BU logistic regression is in the paper's ROC-AUC "
                "table (also quoted as KD+BU rows of Ma et al. 2018, Table 1); the values could not be retrieved "
                "here — the abstract's 85–93% ROC-AUC is pooled over datasets, with noisy negatives",
    },
    "feature-squeezing": {
        "table": "Xu et al. 2018, Table 5", "metric": "detection rate", "quantity": "d_adv",
        "attacks": {"fgsm": "FGSM", "bim": "BIM", "jsma": "JSMA (next / LL)", "cw": "CW2 (next / LL)"},
        "values": {"fgsm": None, "bim": None, "jsma": None, "cw": None},  # not retrieved (searches above)
        # github mzweilin/EvadeML-Zoo Reproduce_FeatureSqueezing.md (MNIST command: attacks and detectors) and
        # detections/base.py (per attack: "Detection rate on SAEs" at the threshold; one ROC-AUC over all
        # non-FAE examples, i.e. pooled over the attacks)
        "settings": "FGSM ε = 0.3; BIM ε = 0.3, step 0.06; C&W L2/L∞/L0 targeted (next class, least likely), 1000 "
                    "iterations, confidence 10; JSMA targeted; joint detector 1-bit depth + 2×2 median, L1 "
                    "distance, threshold at 5% FPR on clean images",
        "note": "Table 5 gives the joint detector's (1-bit depth, 2×2 median) MNIST detection rate on successful "
                "adversarial examples per attack at its 5%-FPR threshold, and one ROC-AUC pooled over the attacks; "
                "the values could not be retrieved here (the NDSS abstract quotes none)",
    },
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
