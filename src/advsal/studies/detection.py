"""The main study: saliency-based adversarial detection (seeds 000/001), end to end.

Pipeline (DESIGN.md "Data flow of the main study"), every step a cached stage of the run store:

1. Step 1 — train the classifier F (seed 001 Table I); choose each attack's ε as the minimal ε bringing F's
   accuracy below 30% (seed 001 §IV-B, after Metzen et al.); craft adversarial train and test sets.
2. Step 2 — gradient saliency S = ∂F_c/∂x (seed 001 Eq. 5) for every clean and adversarial image.
3. Step 3 — train the detector D on image ⊕ saliency (Table I detector, Adam lr 1e-4), one per attack.
4. Baselines on the same data: D on the image only (Gong et al., "1+1"), D on the saliency only, the N+1-class
   classifier (Grosse et al.), Metzen et al.'s detector on inner feature maps, and seed 001's first-layer variant.
5. Evaluation in seed 001 Table II's layout, plus AUROC and TPR at 5% FPR, on all and on "successful
   adversarial examples of correctly classified images".
6. Generalisation: ε_fit × ε_test (Table III) and attack × attack (Fig. 2).
7. Second-round attacks: Metzen's Eq. 10 (saliency as given), a fully adaptive attack through the saliency with
   a softplus surrogate, and a transfer attack from a detector D′ trained on a disjoint half of the data.
8. Layer-wise analysis (seed 000 §5, Fig. 7): Grad-CAM-weighted feature maps at a shallow, a middle and a deep
   layer, clean vs adversarial, with a similarity number per layer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks import AdaptiveSaliencyAttack, MetzenAttack, make_attack, minimal_epsilon, random_targets
from ..data import ImageSet, subset
from ..detection import metrics as dm
from ..detection.detectors import FeatureDetector, NPlusOneDetector, SaliencyDetector
from ..saliency import grad_cam, gradient
from ..store import RunStore
from .common import DataConfig, Log, ModelConfig, StageLog, as_plain, config_from_yaml, finish_study, start_study

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs"

#: Attacks whose budget ε is chosen by the minimal-ε protocol, with the bisection bracket.
EPS_BRACKETS = {"fgsm": (0.0, 1.0), "bim": (0.0, 1.0), "pgd": (0.0, 1.0), "bim-l2": (0.0, 10.0),
                "pgd-l2": (0.0, 10.0)}
NICE_NAMES = {"fgsm": "FGSM", "bim": "Iterative L∞", "bim-l2": "Iterative L2", "pgd": "PGD L∞",
              "pgd-l2": "PGD L2", "cw": "C&W L2", "jsma": "JSMA", "deepfool": "DeepFool"}


@dataclass
class DetectorConfig:
    """Seed 001 Step 3: the Table I detector architecture, Adam lr 1e-4 (10 epochs on full MNIST)."""

    architecture: str = "mnist-net"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0


@dataclass
class GeneralisationConfig:
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "bim", "bim-l2"])
    eps_factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # × the minimal ε
    n_train: int = 400
    n_test: int = 200


@dataclass
class SecondRoundConfig:
    attack: str = "bim"  # the detector under attack is the one trained on this attack
    n_images: int = 100
    eps_factor: float = 1.0  # L∞ budget = factor × that attack's minimal ε
    steps: int = 40
    sigmas: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # Metzen's Eq. 10 trade-off
    surrogate_beta: float = 10.0
    kappa: float = 0.0


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
    saliency_score: str = "logit"
    saliency_target: str = "predicted"
    # The paper's D schedule (DetectorConfig()) needs ~35 s per detector here and the study trains ~35 of them;
    # lr 1e-3 for 4 epochs at batch 64 fits the 15-minute budget and detects C&W better on this data.
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(epochs=4, lr=1e-3, batch_size=64))
    baselines: list[str] = field(default_factory=lambda: ["image", "saliency", "n-plus-one", "metzen",
                                                            "first-layer"])
    baseline_attacks: list[str] = field(default_factory=lambda: ["bim", "cw"])
    generalisation: GeneralisationConfig = field(default_factory=GeneralisationConfig)
    second_round: SecondRoundConfig = field(default_factory=SecondRoundConfig)
    layers: list[str] | None = None  # shallow, middle, deep; default for the classifier architecture
    layer_images: int = 100
    fpr: float = 0.05
    seed: int = 0


def load_config(path: str | Path | None) -> Config:
    return config_from_yaml(Config, path, CONFIGS_DIR)


# ----------------------------------------------------------------------------------------------------------------
# Stage helpers


def _attack_params(cfg: Config, name: str, eps: float | None) -> dict[str, Any]:
    params = dict(cfg.attacks.get(name, {}))
    if eps is not None:
        params["eps"] = float(eps)
        if name in ("bim", "pgd", "bim-l2", "pgd-l2") and "alpha" not in params:
            params["alpha"] = 2.5 * float(eps) / params.get("steps", 10)
    return params


def _craft(store: RunStore, key: dict, name: str, params: dict, x: torch.Tensor, y: torch.Tensor,
           model: torch.nn.Module, seed: int) -> dict[str, Any]:
    """Cached adversarial set: x_adv and per-example success/pred/norms."""

    def compute() -> dict[str, Any]:
        attack = make_attack(name, batch_size=250, **params)
        targets = None
        if name == "jsma":  # JSMA is targeted in its paper form: a random other class, seeded
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[1])
            targets = random_targets(y, num_classes, seed=seed)
        start = time.perf_counter()
        res = attack(model, x, y, targets=targets)
        seconds = time.perf_counter() - start
        return {"x_adv": res.x_adv, "success": res.success, "pred": res.pred, "linf": res.linf, "l2": res.l2,
                "l0": res.l0.float(), "seconds": seconds, "images_per_second": len(x) / max(seconds, 1e-9)}

    return store.cached(f"adv-{name}", {**key, "attack": name, "params": params, "seed": seed}, compute)


def _attack_summary(adv: dict[str, Any], y: torch.Tensor, pred_clean: torch.Tensor) -> dict[str, Any]:
    correct = pred_clean == y
    succ = adv["success"].bool()
    return {"n": len(y), "success_rate": float(succ.float().mean()),
            "success_rate_on_correct": float(succ[correct].float().mean()) if correct.any() else float("nan"),
            "accuracy_under_attack": float((adv["pred"] == y).float().mean()),
            "mean_linf": float(adv["linf"].mean()), "mean_l2": float(adv["l2"].mean()),
            "mean_l0": float(adv["l0"].mean()), "seconds": float(adv["seconds"]),
            "images_per_second": float(adv["images_per_second"])}


def _saliency(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Config) -> torch.Tensor:
    out = [gradient(model, x[i:i + 500], target=cfg.saliency_target, labels=y[i:i + 500],
                    score=cfg.saliency_score) for i in range(0, len(x), 500)]
    return torch.cat(out)


def _table_row(scores_clean: np.ndarray, scores_adv: np.ndarray, threshold: float, f_clean: float,
               f_adv: float, restrict_clean: np.ndarray, restrict_adv: np.ndarray, fpr: float) -> dict[str, Any]:
    """Seed 001 Table II quantities plus AUROC / TPR at ``fpr``; 'restricted' = successful adversarial examples
    of correctly classified images vs those same clean images."""
    rates = dm.detection_rates(scores_clean, scores_adv, threshold)
    labels = np.r_[np.zeros(len(scores_clean)), np.ones(len(scores_adv))]
    scores = np.r_[scores_clean, scores_adv]
    row = {"f_clean": f_clean, "f_adv": f_adv, "d_clean": rates.clean_as_clean, "d_adv": rates.adv_as_adv,
           "accuracy": rates.accuracy, "auroc": dm.auroc(scores, labels),
           "tpr_at_fpr": dm.tpr_at_fpr(scores, labels, fpr),
           "n_clean": len(scores_clean), "n_adv": len(scores_adv)}
    rc, ra = scores_clean[restrict_clean], scores_adv[restrict_adv]
    if len(rc) and len(ra):
        r_rates = dm.detection_rates(rc, ra, threshold)
        rl = np.r_[np.zeros(len(rc)), np.ones(len(ra))]
        row["restricted"] = {"d_clean": r_rates.clean_as_clean, "d_adv": r_rates.adv_as_adv,
                             "auroc": dm.auroc(np.r_[rc, ra], rl), "tpr_at_fpr": dm.tpr_at_fpr(np.r_[rc, ra], rl, fpr),
                             "n_clean": len(rc), "n_adv": len(ra)}
    return row


def _detector_payload(detector: torch.nn.Module, feature_shape: tuple[int, ...]) -> dict[str, Any]:
    """A trained detector's own weights (never the classifier's) and its input shape."""
    return {f"d.{k}": v for k, v in detector.state_dict().items()} | {"feature_shape": list(feature_shape)}


def _load_detector(detector: torch.nn.Module, payload: dict[str, Any]) -> torch.nn.Module:
    detector.build(tuple(payload["feature_shape"]))
    detector.load_state_dict({k[2:]: v for k, v in payload.items() if k.startswith("d.")})
    return detector


# ----------------------------------------------------------------------------------------------------------------
# The study


def default_layers(model: torch.nn.Module) -> list[str]:
    """A shallow (first ReLU), a middle and the deepest convolutional ReLU of a zoo model's ``features``."""
    relus = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU) and n.startswith("features")]
    if len(relus) < 3:
        raise ValueError("layer analysis needs a model with at least three ReLU layers in `features`; "
                         "set `layers:` in the config")
    return [relus[0], relus[len(relus) // 2], relus[-1]]


def run(cfg: Config, run_dir: str | Path, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the detection study in ``run_dir``; writes results.json and the report."""
    run_dir = Path(run_dir)
    # Step 1: data and classifier F ----------------------------------------------------------------------
    start = start_study("detection", cfg, run_dir, log)
    store, stages, train, test, model = start.store, start.stages, start.train, start.test, start.model
    results, clf_key = start.results, start.key

    train_sub = subset(train, cfg.n_train, cfg.seed)
    test_sub = subset(test, cfg.n_test, cfg.seed)
    with torch.no_grad():
        pred_train = model(train_sub.x).argmax(1)
        pred_test = model(test_sub.x).argmax(1)

    # ε by the minimal-ε protocol, on the first `search_images` test images
    search = subset(test, cfg.search_images, cfg.seed + 1)
    epsilons: dict[str, Any] = {}
    for name in cfg.attacks:
        if name not in EPS_BRACKETS:
            continue
        lo, hi = EPS_BRACKETS[name]

        def compute(name=name, lo=lo, hi=hi) -> dict[str, Any]:
            base = {k: v for k, v in cfg.attacks[name].items() if k != "eps"}

            def factory(eps: float):
                return make_attack(name, **_attack_params(cfg, name, eps) | base | {"eps": eps})

            found = minimal_epsilon(factory, model, search.x, search.y, max_accuracy=cfg.max_accuracy, lo=lo, hi=hi)
            return {"eps": float(found.eps), "accuracy": float(found.accuracy),
                    "probes": [[float(e), float(a)] for e, a in found.curve]}

        epsilons[name] = store.cached(f"eps-{name}", {**clf_key, "attack": name, "params": cfg.attacks[name],
                                                       "n": cfg.search_images, "max_acc": cfg.max_accuracy,
                                                       "seed": cfg.seed}, compute)
        stages.flush()
    results["epsilons"] = epsilons

    # adversarial train/test sets per attack
    adv: dict[str, dict[str, dict[str, Any]]] = {}
    attack_rows: dict[str, Any] = {}
    for name in cfg.attacks:
        eps = epsilons[name]["eps"] if name in epsilons else None
        params = _attack_params(cfg, name, eps)
        limit = cfg.attack_limits.get(name)
        tr = train_sub if not limit or limit >= len(train_sub) else train_sub.subset(range(limit))
        adv[name] = {
            "train": _craft(store, {**clf_key, "split": "train", "n": len(tr)}, name, params, tr.x, tr.y, model,
                            cfg.seed),
            "test": _craft(store, {**clf_key, "split": "test", "n": len(test_sub)}, name, params, test_sub.x,
                           test_sub.y, model, cfg.seed + 1),
        }
        stages.flush()
        attack_rows[name] = {"params": params, "train": _attack_summary(adv[name]["train"], tr.y, pred_train[:len(tr)]),
                             "test": _attack_summary(adv[name]["test"], test_sub.y, pred_test)}
    results["attacks"] = attack_rows
    _store_examples(run_dir, model, cfg, test_sub, adv)

    # Steps 2-3: saliency and detectors, plus baselines ---------------------------------------------------------
    f_clean = float((pred_test == test_sub.y).float().mean())
    correct_test = (pred_test == test_sub.y).numpy()
    table: dict[str, Any] = {}
    baselines: dict[str, dict[str, Any]] = {b: {} for b in cfg.baselines}
    detectors: dict[str, torch.nn.Module] = {}
    main_scores: dict[str, dict[str, np.ndarray]] = {}
    main_keys: dict[str, dict] = {}
    kinds = ["image+saliency"] + list(cfg.baselines)
    for name in cfg.attacks:
        n_tr = len(adv[name]["train"]["x_adv"])
        for kind in kinds:
            if kind != "image+saliency" and name not in cfg.baseline_attacks:
                continue
            det, scores, key = _detector_stage(store, cfg, clf_key, kind, name, model,
                                               train_sub.subset(range(n_tr)), adv[name]["train"]["x_adv"],
                                               test_sub, adv[name]["test"]["x_adv"])
            stages.flush()
            restrict_adv = correct_test & adv[name]["test"]["success"].numpy().astype(bool)
            f_adv = float((adv[name]["test"]["pred"] == test_sub.y).float().mean())
            row = _table_row(scores["clean"], scores["adv"], det.threshold, f_clean, f_adv, correct_test,
                             restrict_adv, cfg.fpr)
            if kind == "image+saliency":
                table[name] = row
                detectors[name], main_scores[name], main_keys[name] = det, scores, key
            else:
                baselines[kind][name] = row
    results["table2"] = table
    results["baselines"] = baselines
    results["roc"] = _roc_curves(main_scores)

    # Step 6: generalisation -------------------------------------------------------------------------------------
    results["cross_attack"] = _cross_attack(store, main_keys, detectors, main_scores, adv)
    results["generalisation_eps"] = _eps_generalisation(store, cfg, clf_key, model, train, test, epsilons, stages)

    # Step 7: second-round attacks -------------------------------------------------------------------------------
    results["second_round"] = _second_round(store, cfg, clf_key, model, train_sub, test_sub, adv, epsilons,
                                            detectors, stages)

    # Step 8: layer-wise analysis ------------------------------------------------------------------------------
    results["layers"] = _layer_analysis(store, cfg, clf_key, model, test_sub, adv, epsilons)
    stages.flush()

    return finish_study(run_dir, results, store, stages, render, store=store)


def _store_examples(run_dir: Path, model: torch.nn.Module, cfg: Config, test_sub: ImageSet, adv: dict) -> None:
    """One successful adversarial example per attack with both saliency maps (seed 001 Fig. 1), kept as
    tensors in the run directory so the report draws the figure from stored data."""
    from safetensors.torch import save

    from ..store import atomic_write_bytes

    tensors: dict[str, torch.Tensor] = {}
    for name in adv:
        ok = adv[name]["test"]["success"].bool().nonzero().flatten()
        if not len(ok):
            continue
        i = ok[:1]
        x, xa, y = test_sub.x[i], adv[name]["test"]["x_adv"][i], test_sub.y[i]
        tensors |= {f"{name}.x": x, f"{name}.x_adv": xa, f"{name}.s": _saliency(model, x, y, cfg),
                    f"{name}.s_adv": _saliency(model, xa, y, cfg), f"{name}.y": y,
                    f"{name}.pred_adv": adv[name]["test"]["pred"][i]}
    if tensors:
        atomic_write_bytes(run_dir / "examples.safetensors", save({k: v.contiguous() for k, v in tensors.items()}))


def _detector_stage(store: RunStore, cfg: Config, clf_key: dict, kind: str, attack: str, model: torch.nn.Module,
                    clean_train: ImageSet, adv_train: torch.Tensor, test_sub: ImageSet,
                    adv_test: torch.Tensor) -> tuple[torch.nn.Module, dict[str, np.ndarray], dict]:
    """Train one detector on (clean_train, adv_train) and score the test sets; cached. Returns the detector, its
    scores and the stage key (the identity of both, for stages derived from them)."""
    det = _make_detector(kind, model, cfg)
    key = {**clf_key, "kind": kind, "attack": attack, "n": len(adv_train), "detector": as_plain(cfg.detector),
           "attack_cfg": cfg.attacks[attack], "saliency": [cfg.saliency_score, cfg.saliency_target],
           "n_test": len(test_sub)}

    def compute() -> dict[str, Any]:
        det.fit(clean_train.x, adv_train, y_clean=clean_train.y, epochs=cfg.detector.epochs, lr=cfg.detector.lr,
                batch_size=cfg.detector.batch_size, seed=cfg.detector.seed)
        shape = tuple(det.features(clean_train.x[:1]).shape[1:])
        return {**_detector_payload(det, shape), "scores_clean": det.score(test_sub.x),
                "scores_adv": det.score(adv_test)}

    payload = store.cached(f"detector-{kind}-{attack}", key, compute)
    _load_detector(det, payload)
    return det, {"clean": payload["scores_clean"].numpy(), "adv": payload["scores_adv"].numpy()}, key


def _make_detector(kind: str, model: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    d = cfg.detector
    if kind in ("image+saliency", "image", "saliency"):
        return SaliencyDetector(model, arch=d.architecture, input=kind, saliency_score=cfg.saliency_score,
                                saliency_target=cfg.saliency_target)
    if kind == "n-plus-one":
        return NPlusOneDetector(model)
    if kind == "metzen":
        return FeatureDetector(model, layer=default_layers(model)[1])
    if kind == "first-layer":
        return FeatureDetector(model, layer=default_layers(model)[0])
    raise ValueError(f"unknown baseline {kind!r}; choose from image, saliency, n-plus-one, metzen, first-layer")


def _roc_curves(scores: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """ROC curve (at most 200 points) and AUROC per attack, from the main detectors' stored test scores."""
    out = {}
    for name, sc in scores.items():
        clean, advs = sc["clean"], sc["adv"]
        labels = np.r_[np.zeros(len(clean)), np.ones(len(advs))]
        fpr, tpr, _ = dm.roc_curve(np.r_[clean, advs], labels)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
        out[name] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(),
                     "auroc": dm.auroc(np.r_[clean, advs], labels)}
    return out


def _score_matrix(detectors: list[torch.nn.Module], clean: list[np.ndarray],
                  tests: list[torch.Tensor]) -> list[list[float]]:
    """Detection accuracy (balanced) of detector i on adversarial set j, with detector i's clean scores.

    All detectors are image ⊕ saliency detectors of one classifier and saliency setting, so each test set's
    detector input (one forward + backward of F) is built once and fed to every detector."""
    first = detectors[0]
    for det in detectors[1:]:
        if (det.classifier, det.input, det.saliency_score, det.saliency_target) != \
                (first.classifier, first.input, first.saliency_score, first.saliency_target):
            raise ValueError("_score_matrix needs detectors with one classifier and one input/saliency setting")
    matrix = [[0.0] * len(tests) for _ in detectors]
    for j, x_adv in enumerate(tests):
        feats = first.build_features(x_adv)
        for i, det in enumerate(detectors):
            s_adv = det.score_features(feats).cpu().numpy()
            matrix[i][j] = dm.detection_rates(clean[i], s_adv, det.threshold).accuracy
    return matrix


def _cross_attack(store: RunStore, keys: dict[str, dict], detectors: dict[str, torch.nn.Module],
                  scores: dict[str, dict[str, np.ndarray]], adv: dict) -> dict[str, Any]:
    """Seed 001 Fig. 2: detection accuracy of the detector trained on attack i on attack j's test set
    (balanced: the clean test images and their adversarial versions); cached."""
    names = list(detectors)

    def compute() -> dict[str, Any]:
        matrix = _score_matrix([detectors[n] for n in names], [scores[n]["clean"] for n in names],
                               [adv[n]["test"]["x_adv"] for n in names])
        return {"attacks": names, "matrix": matrix}

    return store.cached("cross-attack", {"detectors": keys}, compute)


def _eps_generalisation(store: RunStore, cfg: Config, clf_key: dict, model: torch.nn.Module, train: ImageSet,
                        test: ImageSet, epsilons: dict, stages: StageLog) -> dict[str, Any]:
    """Seed 001 Table III: a detector fit at ε_fit, tested at ε_test (detection accuracy, balanced)."""
    g = cfg.generalisation
    tr = subset(train, g.n_train, cfg.seed + 10)
    te = subset(test, g.n_test, cfg.seed + 11)
    out: dict[str, Any] = {}
    for name in g.attacks:
        if name not in epsilons:
            continue
        levels = [float(epsilons[name]["eps"]) * f for f in g.eps_factors]
        sets = []
        for eps in levels:
            params = _attack_params(cfg, name, eps)
            a_tr = _craft(store, {**clf_key, "split": "gen-train", "n": len(tr)}, name, params, tr.x, tr.y, model,
                          cfg.seed)
            a_te = _craft(store, {**clf_key, "split": "gen-test", "n": len(te)}, name, params, te.x, te.y, model,
                          cfg.seed + 1)
            sets.append((params, a_tr, a_te))
        stages.flush()
        dets, cleans, keys = [], [], []
        for params, a_tr, _ in sets:
            gen_cfg = dataclasses.replace(cfg, attacks={**cfg.attacks, name: params})
            det, scores, key = _detector_stage(store, gen_cfg, clf_key, "image+saliency", name, model, tr,
                                               a_tr["x_adv"], te, sets[0][2]["x_adv"])
            dets.append(det)
            cleans.append(scores["clean"])
            keys.append(key)
        tests = [a_te["x_adv"] for _, _, a_te in sets]
        matrix = store.cached(f"eps-matrix-{name}", {"detectors": keys, "tests": [p for p, _, _ in sets]},
                              lambda d=dets, c=cleans, t=tests: {"matrix": _score_matrix(d, c, t)})
        stages.flush()
        out[name] = {"eps_factors": list(g.eps_factors), "eps": levels, "matrix": matrix["matrix"]}
    return out


def _second_round(store: RunStore, cfg: Config, clf_key: dict, model: torch.nn.Module, train_sub: ImageSet,
                  test_sub: ImageSet, adv: dict, epsilons: dict, detectors: dict,
                  stages: StageLog) -> dict[str, Any]:
    """Second-round attacks on F and D jointly (seed 001 claims they are "not applicable"; we test it)."""
    s = cfg.second_round
    if s.attack not in detectors or s.attack not in epsilons:
        return {}
    eps = float(epsilons[s.attack]["eps"]) * s.eps_factor
    alpha = 2.5 * eps / s.steps
    det = detectors[s.attack]
    correct = (model(test_sub.x).argmax(1) == test_sub.y).nonzero().flatten()[: s.n_images]
    x, y = test_sub.x[correct], test_sub.y[correct]
    key = {**clf_key, "detector_attack": s.attack, "second": as_plain(s), "detector": as_plain(cfg.detector),
           "eps": eps, "n_test": len(test_sub)}

    # D′ for the transfer attack: trained on the other half of the training data
    half = len(train_sub) // 2
    other = train_sub.subset(range(half, len(train_sub)))
    other_adv = adv[s.attack]["train"]["x_adv"][half:]
    det_prime, _, _ = _detector_stage(store, cfg, {**clf_key, "half": "second"}, "image+saliency", s.attack, model,
                                   other, other_adv, test_sub, adv[s.attack]["test"]["x_adv"])
    # the main D was trained on all of train_sub; for a clean transfer experiment train D on the first half only
    first = train_sub.subset(range(half))
    det_first, _, _ = _detector_stage(store, cfg, {**clf_key, "half": "first"}, "image+saliency", s.attack, model,
                                   first, adv[s.attack]["train"]["x_adv"][:half], test_sub,
                                   adv[s.attack]["test"]["x_adv"])
    stages.flush()

    def evaluate_attack(x_adv: torch.Tensor, detector: torch.nn.Module) -> dict[str, Any]:
        with torch.no_grad():
            fooled = (model(x_adv).argmax(1) != y)
        evaded = ~detector.predict(x_adv)
        delta = (x_adv - x).flatten(1)
        return {"f_fooled": float(fooled.float().mean()), "d_says_clean": float(evaded.float().mean()),
                "both": float((fooled & evaded).float().mean()), "mean_linf": float(delta.abs().amax(1).mean()),
                "mean_l2": float(delta.norm(dim=1).mean()), "n": len(x)}

    def attack_stage(label: str, attack, detector, target_detector) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            res = attack(model, detector, x, y)
            return {"x_adv": res.x_adv}

        payload = store.cached(f"second-{label}", {**key, "label": label}, compute)
        stages.flush()
        return {"attack": label, **evaluate_attack(payload["x_adv"], target_detector)}

    rows = []
    first_round = adv[s.attack]["test"]["x_adv"][correct]
    rows.append({"attack": f"first-round {s.attack} (no knowledge of D)", **evaluate_attack(first_round, det)})
    for sigma in s.sigmas:
        rows.append(attack_stage(f"metzen-sigma{sigma}", MetzenAttack(eps=eps, alpha=alpha, steps=s.steps, sigma=sigma),
                                 det, det))
    adaptive = AdaptiveSaliencyAttack(eps=eps, alpha=alpha, steps=s.steps, kappa=s.kappa, beta=s.surrogate_beta)
    rows.append(attack_stage("adaptive-surrogate", adaptive, det, det))
    transfer = attack_stage("transfer-from-D'", adaptive, det_prime, det_first)
    rows.append(transfer)
    return {"eps": eps, "attack_detector": s.attack, "rows": rows}


def _layer_analysis(store: RunStore, cfg: Config, clf_key: dict, model: torch.nn.Module, test_sub: ImageSet,
                    adv: dict, epsilons: dict) -> dict[str, Any]:
    """Seed 000 §5: Grad-CAM-weighted feature maps (w.r.t. the true class) at a shallow, a middle and a deep
    layer for clean vs adversarial inputs; per layer the mean Pearson correlation of the two maps and their
    normalised L2 change ‖a − c‖ / (‖a‖ + ‖c‖) — the paper's claim is "shallow layers robust, middle layers go
    wrong"."""
    layers = cfg.layers or default_layers(model)
    n = cfg.layer_images

    def compute() -> dict[str, Any]:
        out: dict[str, Any] = {}
        x, y = test_sub.x[:n], test_sub.y[:n]
        for name in adv:
            xa = adv[name]["test"]["x_adv"][:n]
            succ = adv[name]["test"]["success"][:n].bool()
            cams_c = grad_cam(model, x, target=y, layer=layers, upsample=False)
            cams_a = grad_cam(model, xa, target=y, layer=layers, upsample=False)
            rows = {}
            for layer in layers:
                c = cams_c[layer].cam.flatten(1)
                a = cams_a[layer].cam.flatten(1)
                corr = _rowwise_corr(c, a)
                # bounded in [0, 1] (0: identical, 1: disjoint supports); ‖a − c‖ / ‖c‖ explodes where the
                # clean map is (nearly) zero, which Grad-CAM's ReLU makes common at middle layers
                change = (a - c).norm(dim=1) / (a.norm(dim=1) + c.norm(dim=1)).clamp_min(1e-12)
                rows[layer] = {"correlation": float(np.nanmean(corr[succ.numpy()])) if succ.any() else float("nan"),
                               "change": float(change[succ].mean()) if succ.any() else float("nan"),
                               "n": int(succ.sum())}
            out[name] = rows
        return {"layers": layers, "by_attack": out}

    return store.cached("layers", {**clf_key, "layers": layers, "n": n, "attacks": cfg.attacks,
                                   "eps": epsilons, "change": "normalised"}, compute)


def _rowwise_corr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    corr = (a * b).sum(1) / denom.clamp_min(1e-12)
    corr[denom < 1e-12] = float("nan")
    return corr.numpy()


# ----------------------------------------------------------------------------------------------------------------
# Report


def render(run_dir: str | Path, results: dict[str, Any], store: RunStore | None = None) -> tuple[Path, Path]:
    from ..report.detection import render_detection_report

    return render_detection_report(Path(run_dir), results)


def summary(results: dict[str, Any]) -> list[str]:
    lines = [f"classifier test accuracy {results['classifier']['test']['accuracy']:.4f}"]
    for name, row in results.get("table2", {}).items():
        lines.append(f"{NICE_NAMES.get(name, name):<14} f(x_adv) {row['f_adv']:.2f}  D(x_test) {row['d_clean']:.3f}  "
                     f"D(x_adv) {row['d_adv']:.3f}  AUROC {row['auroc']:.4f}")
    return lines
