"""The detection study's steps, each a stage of the run store: what it computes, from which inputs.

Every function takes the study :class:`~advsal.studies.engine.Context` (store, device, classifier F and its node)
and the nodes its stage reads; the stage key follows from them, so e.g. an adversarial set depends on the ε
stage it was crafted with and a detector on the adversarial sets it is trained and scored on. Computations run
on ``ctx.device``; payloads are stored on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...attacks import AdaptiveSaliencyAttack, MetzenAttack, attack_detector_pair, minimal_epsilon
from ...attacks.specs import AttackSpec
from ...data import ImageSet, subset
from ...detection import metrics as dm
from ...detection.io import fitted_state, load_fitted_state
from ...detection.protocol import Detector
from ...errors import InputError
from ...saliency import grad_cam_layers, gradient
from ...store import Source, Stage, save_tensors
from ...tensors import map_batches, predict_logits
from ..engine import Context
from .registry import MAIN_DETECTOR, DetectorSpec

ATTACK_BATCH = 250  # images per attack chunk (memory only; results do not depend on it)
SALIENCY_BATCH = 500


@dataclass(frozen=True)
class Part:
    """Images the study draws from the data, with the :class:`Source` node that identifies their content."""

    images: ImageSet
    node: Source

    @property
    def x(self) -> Tensor:
        return self.images.x

    @property
    def y(self) -> Tensor:
        return self.images.y

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int, name: str) -> Part:
        """The first ``n`` images (all when ``n`` is None or larger)."""
        if n is None or n >= len(self):
            return self
        return part(name, self.images.subset(range(n)))


def part(name: str, images: ImageSet) -> Part:
    return Part(images, Source.of(name, images.x, images.y))


def draw(name: str, data: ImageSet, n: int, seed: int) -> Part:
    """``n`` images of ``data``, class-stratified, drawn with ``seed`` (all of them when ``n`` ≥ its size)."""
    return part(name, subset(data, n, seed))


# ------------------------------------------------------------------------------------------------ Step 1
def search_epsilon(ctx: Context, spec: AttackSpec, params: dict[str, Any], search: Part,
                   max_accuracy: float) -> Stage:
    """Seed 001 §IV-B: the minimal ε bringing F's accuracy on ``search`` below ``max_accuracy`` (bisection)."""
    lo, hi = spec.eps_bracket

    def compute() -> dict[str, Any]:
        x, y = search.x.to(ctx.device), search.y.to(ctx.device)
        found = minimal_epsilon(lambda eps: spec.build(params, eps), ctx.model, x, y, max_accuracy=max_accuracy,
                                lo=lo, hi=hi)
        return {"eps": float(found.eps), "accuracy": float(found.accuracy),
                "probes": [[float(e), float(a)] for e, a in found.curve]}

    return ctx.stage(f"eps-{spec.name}", compute, inputs=[ctx.classifier, search.node],
                     params={"attack": params, "bracket": [lo, hi], "max_accuracy": max_accuracy})


def craft(ctx: Context, spec: AttackSpec, params: dict[str, Any], eps: Stage | None, images: Part, split: str,
          seed: int, eps_factor: float = 1.0) -> Stage:
    """An adversarial set: ``spec``'s attack with ``params`` at budget ``eps_factor`` × ε (from the ``eps``
    stage; no budget when None) on ``images``; targets by the spec's policy, seeded. Stores x_adv, per-image
    success, prediction and norms, and F's clean prediction."""

    def compute() -> dict[str, Any]:
        model, x, y = ctx.model, images.x.to(ctx.device), images.y.to(ctx.device)
        budget = None if eps is None else float(eps["eps"]) * eps_factor
        attack = spec.build(params, budget, batch_size=ATTACK_BATCH)
        targets = spec.choose_targets(model, x, y, seed)
        start = time.perf_counter()
        res = attack(model, x, y, targets=targets)
        seconds = time.perf_counter() - start
        return {"x_adv": res.x_adv.cpu(), "success": res.success.cpu(), "pred": res.pred.cpu(),
                "linf": res.linf.cpu(), "l2": res.l2.cpu(), "l0": res.l0.float().cpu(),
                "y": images.y, "pred_clean": predict_logits(model, x).argmax(1).cpu(), "eps": budget,
                "seconds": seconds, "images_per_second": len(x) / max(seconds, 1e-9)}

    inputs = [ctx.classifier, images.node] + ([eps] if eps is not None else [])
    stage_params = {"attack": params, "seed": seed, **({"eps_factor": eps_factor} if eps is not None else {})}
    return ctx.stage(f"adv-{spec.name}-{split}", compute, inputs=inputs, params=stage_params)


# ------------------------------------------------------------------------------------------------ Steps 2-3
@dataclass
class TrainedDetector:
    """A detector stage (its test scores) and, loaded only when a later stage needs it, the detector."""

    stage: Stage
    spec: DetectorSpec
    ctx: Context
    cfg: Any

    @cached_property
    def detector(self) -> Detector:
        payload = self.stage.payload
        det = self.spec.factory(self.ctx.model, self.cfg)
        if not isinstance(det, torch.nn.Module):  # a plain object (LID, …): its fitted state is in the stage
            load_fitted_state(det, {k[2:]: v for k, v in payload.items() if k.startswith("s.")},
                              payload.get("state_meta", {}))
            det.threshold = float(payload["threshold"])
            return det
        if "feature_shape" not in payload:
            raise InputError(f"detector {self.spec.name!r} cannot be restored from its stage (a network detector "
                             "without build_features)")
        build = getattr(det, "build", None)
        if callable(build):
            build(tuple(payload["feature_shape"]))
        det.load_state_dict({k[2:]: v for k, v in payload.items() if k.startswith("d.")})
        return det.eval()


def train_detector(ctx: Context, spec: DetectorSpec, cfg: Any, name: str, train: Part, adv_train: Stage,
                   test: Part, adv_test: Stage, rows: tuple[int, int] | None = None) -> TrainedDetector:
    """Seed 001 Steps 2–3 (or a baseline): fit ``spec``'s detector on ``train`` (rows ``rows`` of it) and its
    adversarial versions, then score ``test`` and its adversarial versions. The saliency S = ∂F_c/∂x is
    computed inside the detector (its input is image ⊕ S)."""
    fit_options = spec.training(cfg)
    det = spec.factory(ctx.model, cfg)

    def compute() -> dict[str, Any]:
        sl = slice(*rows) if rows else slice(None)
        x_clean = train.x[sl].to(ctx.device)
        x_adv = adv_train["x_adv"][sl].to(ctx.device) if spec.adversarial else None
        labels = {"y_clean": train.y[sl].to(ctx.device)} if spec.labels else {}
        start = time.perf_counter()
        det.fit(x_clean, x_adv, **labels, **fit_options)
        out: dict[str, Any] = {"fit_seconds": time.perf_counter() - start, "threshold": float(det.threshold),
                               "scores_clean": det.score(test.x.to(ctx.device)).cpu(),
                               "scores_adv": det.score(adv_test["x_adv"].to(ctx.device)).cpu()}
        if isinstance(det, torch.nn.Module):
            out |= {f"d.{k}": v.cpu() for k, v in det.state_dict().items()}
            if hasattr(det, "build_features"):
                out["feature_shape"] = list(det.build_features(x_clean[:1]).shape[1:])
        else:  # a plain object: its learned attributes (trailing underscore), as detection.io saves them
            tensors, out["state_meta"] = fitted_state(det)
            out |= {f"s.{k}": v for k, v in tensors.items()}
        return out

    inputs = [ctx.classifier, train.node, test.node, adv_test] + ([adv_train] if spec.adversarial else [])
    params = {"detector": det.params(), "fit": fit_options, "rows": list(rows) if rows else None}
    return TrainedDetector(ctx.stage(name, compute, inputs=inputs, params=params), spec, ctx, cfg)


def is_seeded(spec: DetectorSpec, cfg: Any) -> bool:
    """Whether ``spec``'s detector depends on the detector seed (its fit options carry one: the networks'
    initialisation and batch order, the statistic detectors' cross-validation folds)."""
    return "seed" in spec.training(cfg)


def repeat_detectors(ctx: Context, cfg: Any, specs: dict[str, DetectorSpec], attacks: dict[str, list[str]],
                     train_for: dict[str, Part], adv_train: dict[str, Stage], test: Part,
                     adv_test: dict[str, Stage]) -> dict[str, dict[str, TrainedDetector]]:
    """The seeded detectors again with ``cfg.detector.seed`` (option ``seeds``): for each kind of ``specs``
    that :func:`is_seeded`, trained on each of its ``attacks[kind]`` exactly as the first seed's (same F,
    images and adversarial sets), as stage ``detector-[KIND-]ATTACK-seedS``; ``{kind: {attack: detector}}``."""
    s = cfg.detector.seed
    out: dict[str, dict[str, TrainedDetector]] = {}
    for kind, spec in specs.items():
        if not is_seeded(spec, cfg):
            continue
        prefix = "detector" if kind == MAIN_DETECTOR else f"detector-{kind}"
        out[kind] = {a: train_detector(ctx, spec, cfg, f"{prefix}-{a}-seed{s}", train_for[a], adv_train[a], test,
                                       adv_test[a]) for a in attacks[kind]}
    return out


# ------------------------------------------------------------------------------------------------ Step 6
def accuracy_matrix(ctx: Context, detectors: list[TrainedDetector], tests: list[Stage]) -> list[list[float]]:
    """Detection accuracy (balanced) of detector i on adversarial set j, with detector i's stored clean scores.

    Network detectors sharing one feature setting (``params()``) get each test set's detector input (one forward
    + backward of F) built once and fed to all of them; any other detector (LID, feature squeezing, …: plain
    objects) scores each test set itself."""
    dets = [d.detector for d in detectors]
    shared = bool(dets) and all(hasattr(det, "build_features") and hasattr(det, "score_features") for det in dets) \
        and all(det.params() == dets[0].params() for det in dets[1:])
    matrix = [[0.0] * len(tests) for _ in dets]
    for j, test in enumerate(tests):
        x_adv = test["x_adv"].to(ctx.device)
        feats = dets[0].build_features(x_adv) if shared else None
        for i, (trained, det) in enumerate(zip(detectors, dets, strict=True)):
            s_adv = (det.score_features(feats) if shared else det.score(x_adv)).cpu().numpy()
            clean = trained.stage["scores_clean"].numpy()
            matrix[i][j] = dm.detection_rates(clean, s_adv, det.threshold).accuracy
    return matrix


def score_matrix(ctx: Context, name: str, detectors: list[TrainedDetector], tests: list[Stage],
                 baselines: dict[str, list[TrainedDetector]] | None = None) -> Stage:
    """:func:`accuracy_matrix` of ``detectors`` × ``tests`` (``matrix``) and, for each baseline kind of
    ``baselines``, of its detectors (trained on the baseline attacks) × the same ``tests`` (``baselines``)."""
    baselines = baselines or {}

    def compute() -> dict[str, Any]:
        out: dict[str, Any] = {"matrix": accuracy_matrix(ctx, detectors, tests)}
        if baselines:
            out["baselines"] = {kind: accuracy_matrix(ctx, dets, tests) for kind, dets in baselines.items()}
        return out

    extra = [d.stage for dets in baselines.values() for d in dets]
    return ctx.stage(name, compute, inputs=[*(d.stage for d in detectors), *extra, *tests],
                     params={"baselines": list(baselines)} if baselines else None)


# ------------------------------------------------------------------------------------------------ Step 7
def correct_head(test: Part, adv_test: Stage, n: int) -> Part:
    """The first ``n`` test images F classifies correctly (the second round attacks only those)."""
    correct = (adv_test["pred_clean"] == test.y).nonzero().flatten()[:n]
    return part("second-round-images", test.images.subset(correct))


def second_round(ctx: Context, s: Any, spec: AttackSpec, params: dict[str, Any], eps: Stage,
                 detector: TrainedDetector, d_prime: TrainedDetector, d_first: TrainedDetector, test: Part,
                 adv_test: Stage) -> list[Stage]:
    """Second-round attacks on F and D jointly (seed 001 calls them "not applicable"; we test it), on the first
    ``s.n_images`` correctly classified test images, L∞ budget ``s.eps_factor`` × ε: the first-round attack
    (no knowledge of D), Metzen's Eq. 10 per σ, the adaptive attack through the saliency (softplus surrogate),
    and the transfer attack crafted on D′ and evaluated on D trained on the other half of the data."""
    images = correct_head(test, adv_test, s.n_images)
    budget = float(eps["eps"]) * s.eps_factor
    adaptive = {"eps_factor": s.eps_factor, "steps": s.steps, "kappa": s.kappa, "beta": s.surrogate_beta}

    def build_adaptive() -> AdaptiveSaliencyAttack:
        return AdaptiveSaliencyAttack(eps=budget, steps=s.steps, kappa=s.kappa, beta=s.surrogate_beta)

    def row(stage: str, label: str, build: Any, stage_params: dict[str, Any], attacked: TrainedDetector,
            judge: TrainedDetector | None = None) -> Stage:
        def compute() -> dict[str, Any]:
            x, y = images.x.to(ctx.device), images.y.to(ctx.device)
            res = attack_detector_pair(build(), ctx.model, attacked.detector, x, y,
                                       evaluate_on=(judge or attacked).detector)
            return {"attack": label, "f_fooled": float(res.fooled_f.float().mean()),
                    "d_says_clean": float(res.evaded_d.float().mean()), "both": float(res.both.float().mean()),
                    "mean_linf": float(res.linf.mean()), "mean_l2": float(res.l2.mean()), "n": len(x)}

        nodes = [ctx.classifier, images.node, eps, attacked.stage] + ([judge.stage] if judge else [])
        return ctx.stage(f"second-{stage}", compute, inputs=nodes, params=stage_params)

    return [
        row("first-round", f"first-round {spec.name} (no knowledge of D)",
            lambda: spec.build(params, eps["eps"]), {"attack": params}, detector),
        *[row(f"metzen-sigma{sigma:g}", f"metzen-sigma{sigma:g}",
              lambda sigma=sigma: MetzenAttack(eps=budget, steps=s.steps, sigma=sigma),
              {"eps_factor": s.eps_factor, "steps": s.steps, "sigma": sigma}, detector) for sigma in s.sigmas],
        row("adaptive-surrogate", "adaptive-surrogate", build_adaptive, adaptive, detector),
        row("transfer-from-D'", "transfer-from-D′", build_adaptive, adaptive, d_prime, judge=d_first),
    ]


# ------------------------------------------------------------------------------------------------ security
def security(ctx: Context, s: Any, eps: Stage, detectors: dict[str, TrainedDetector], test: Part, adv_test: Stage,
             fpr: float, main: set[str]) -> dict[str, Stage]:
    """Issue #15: robust-detection curves (``advsal.detection.security.robust_detection``, the strongest attack
    ensemble) of each detector in ``detectors`` (name → trained on ``s.attack``) on the first correctly classified
    test images, the threshold calibrated to ``fpr`` on the other test images. L∞ budgets ``s.linf_factors`` × ε*
    and ``s.linf_eps``; L2 ``s.l2_eps`` for the ``main`` detectors only; baselines with fewer images and steps.
    One stage per detector."""
    from ...attacks.detector_attacks import strongest_attack
    from ...detection.security import robust_detection

    correct = (adv_test["pred_clean"] == test.y).nonzero().flatten()
    rest = torch.ones(len(test), dtype=torch.bool)
    warm_modes = security_warm_modes(s)
    ensemble = ensemble_labels(s)
    out = {}
    for name, trained in detectors.items():
        is_main = name in main
        n = s.n_images if is_main else min(s.n_images, s.baseline_images)
        steps = s.steps if is_main else s.baseline_steps
        picked = correct[:n]
        images = part(f"security-images-{n}", test.images.subset(picked))
        calibration = rest.clone()
        calibration[picked] = False
        linf = sorted({*(float(eps["eps"]) * f for f in s.linf_factors), *map(float, s.linf_eps)})
        l2 = [float(e) for e in s.l2_eps] if is_main else []

        def compute(trained=trained, images=images, calibration=calibration, linf=linf, l2=l2, steps=steps,
                    name=name):
            x, y = images.x.to(ctx.device), images.y.to(ctx.device)
            x_cal = test.x[calibration].to(ctx.device)
            det = trained.detector
            curves = {}
            for norm, budgets in (("linf", linf), ("l2", l2)):
                if budgets:
                    def attacks(budget, norm=norm):
                        return strongest_attack(budget, norm=norm, steps=steps, restarts=s.restarts, lams=s.lams,
                                                warm_modes=warm_modes)

                    curves[norm] = robust_detection(ctx.model, det, x, y, budgets, fpr=fpr, x_calibration=x_cal,
                                                    norm=norm, attacks=attacks).to_dict()
            return {"detector": name, "curves": curves}

        params = {"linf_factors": list(s.linf_factors), "linf_eps": list(s.linf_eps), "l2": l2, "steps": steps,
                  "restarts": s.restarts, "lams": list(s.lams), "fpr": fpr, "ensemble": ensemble}
        out[name] = ctx.stage(f"security-{name}", compute, params=params,
                              inputs=[ctx.classifier, images.node, test.node, eps, trained.stage])
    return out


def security_warm_modes(s: Any) -> tuple[str, ...]:
    """The ensemble's warm-restart group (``strongest_attack(warm_modes=...)``): with one start per attack warm
    restarts do nothing, so a one-start budget (the default's) runs its Selective member only — as many members as
    the ensemble had before it, at the same cost; with restarts, Selective and Orthogonal."""
    return ("selective", "orthogonal") if s.restarts > 1 else ("selective",)


def ensemble_labels(s: Any) -> list[str]:
    """The members of the security section's attack ensemble (part of its stages' keys: a change recomputes)."""
    from ...attacks.detector_attacks import strongest_attack

    return [a.label for a in strongest_attack(0.1, restarts=s.restarts, lams=s.lams,
                                              warm_modes=security_warm_modes(s)).attacks]


def hardened_detector(ctx: Context, s: Any, trained: TrainedDetector, train: Part, adv_train: Stage) -> TrainedDetector:
    """D hardened by dynamic adversary training (``advsal.detection.hardening.harden_detector``, Metzen et al.
    2017): ``s.harden_rounds`` rounds of adaptive examples at L∞ ``s.harden_eps`` against the current D on the
    training images, the first-round adversarial set kept in the pool."""
    from ...detection.hardening import harden_detector

    fit = trained.spec.training(trained.cfg)

    def compute() -> dict[str, Any]:
        x, y = train.x.to(ctx.device), train.y.to(ctx.device)
        hard = harden_detector(ctx.model, trained.detector, x, y, eps=s.harden_eps, rounds=s.harden_rounds,
                               steps=s.harden_steps, x_adv_static=adv_train["x_adv"].to(ctx.device),
                               epochs=fit.get("epochs", 2), lr=fit.get("lr", 1e-3),
                               batch_size=fit.get("batch_size", 64))
        det = hard.detector
        return {"rounds": hard.rounds, "feature_shape": list(trained.stage["feature_shape"]),
                **{f"d.{k}": v.cpu() for k, v in det.state_dict().items()}}

    params = {"eps": s.harden_eps, "rounds": s.harden_rounds, "steps": s.harden_steps, "fit": fit}
    stage = ctx.stage(f"{trained.stage.name}-hardened", compute, params=params,
                      inputs=[ctx.classifier, train.node, adv_train, trained.stage])
    return TrainedDetector(stage, trained.spec, ctx, trained.cfg)


def adversarially_trained(ctx: Context, s: Any, eps: Stage, images: Part) -> Stage:
    """F fine-tuned by PGD adversarial training (Madry et al. 2018; ``advsal.training.adversarial_train_classifier``)
    at L∞ ``s.harden_eps`` for ``s.adv_train_epochs`` epochs on the training data, and its robust accuracy under
    APGD-CE (L∞, the security section's budgets and their halves, for Tramèr's comparison) on ``images`` — the
    undefended alternative to a hardened D."""
    import copy

    from ...attacks import APGD
    from ...training import adversarial_train_classifier

    def compute() -> dict[str, Any]:
        model = copy.deepcopy(ctx.model)
        history = adversarial_train_classifier(model, ctx.train, eps=s.harden_eps, epochs=s.adv_train_epochs,
                                               seed=0)
        x, y = images.x.to(ctx.device), images.y.to(ctx.device)
        budgets = sorted({*(float(eps["eps"]) * f for f in s.linf_factors), *map(float, s.linf_eps)})
        budgets = sorted({*budgets, *(e / 2 for e in budgets if e > 0)})  # ε/2 too: Tramèr's comparison
        acc = [float((predict_logits(model, x).argmax(1) == y).float().mean())]
        for e in budgets:
            res = APGD(eps=e, steps=s.steps, restarts=s.restarts)(model, x, y)
            acc.append(float((res.pred == y).float().mean()))
        return {"eps": [0.0, *budgets], "robust_accuracy": acc, "history": history.epochs,
                "seconds": history.seconds}

    params = {"eps": s.harden_eps, "epochs": s.adv_train_epochs, "linf_factors": list(s.linf_factors),
              "linf_eps": list(s.linf_eps), "steps": s.steps, "restarts": s.restarts, "halves": True}
    return ctx.stage("classifier-pgd-trained", compute, params=params,
                     inputs=[ctx.classifier, ctx.data, images.node, eps])


def security_results(s: Any, attack: str, eps: Stage, stages: dict[str, Stage],
                     hardening: dict[str, Stage]) -> dict[str, Any]:
    """The security section's results: per detector its robust-detection curves; the hardening record."""
    out: dict[str, Any] = {"attack": attack, "eps_star": float(eps["eps"]), "steps": s.steps,
                           "restarts": s.restarts, "baseline_steps": s.baseline_steps,
                           "ensemble": ensemble_labels(s),
                           "detectors": {name: st["curves"] for name, st in stages.items()}}
    if hardening:
        out["hardening"] = {"rounds": hardening["detector"]["rounds"],
                            "pgd_trained": {k: hardening["classifier"][k] for k in ("eps", "robust_accuracy",
                                                                                    "seconds")}}
    return out


# ------------------------------------------------------------------------------------------------ Step 8
def layer_analysis(ctx: Context, layers: list[str], test: Part, adv_tests: dict[str, Stage], n: int) -> Stage:
    """Seed 000 §5: Grad-CAM-weighted feature maps (w.r.t. the true class) at a shallow, a middle and a deep
    layer for clean vs adversarial inputs; per layer the mean Pearson correlation of the two maps and their
    normalised change ‖a − c‖ / (‖a‖ + ‖c‖), over successful adversarial examples."""

    def compute() -> dict[str, Any]:
        model, distinct = ctx.model, list(dict.fromkeys(layers))
        x, y = test.x[:n].to(ctx.device), test.y[:n].to(ctx.device)
        cams_c = grad_cam_layers(model, x, y, layers=distinct, upsample=False)
        out: dict[str, Any] = {}
        for name, adv in adv_tests.items():
            succ = adv["success"][:n].bool()
            cams_a = grad_cam_layers(model, adv["x_adv"][:n].to(ctx.device), y, layers=distinct, upsample=False)
            rows = {}
            for layer in distinct:
                c, a = cams_c[layer].cam.flatten(1).cpu(), cams_a[layer].cam.flatten(1).cpu()
                corr = _rowwise_corr(c, a)
                # bounded in [0, 1] (0: identical, 1: disjoint supports); ‖a − c‖ / ‖c‖ explodes where the
                # clean map is (nearly) zero, which Grad-CAM's ReLU makes common at middle layers
                change = (a - c).norm(dim=1) / (a.norm(dim=1) + c.norm(dim=1)).clamp_min(1e-12)
                defined = corr[succ.numpy()]
                defined = defined[~np.isnan(defined)]  # a constant map has no correlation
                rows[layer] = {"correlation": float(defined.mean()) if len(defined) else float("nan"),
                               "change": float(change[succ].mean()) if succ.any() else float("nan"),
                               "n": int(succ.sum())}
            out[name] = rows
        return {"layers": layers, "by_attack": out}

    return ctx.stage("layers", compute, inputs=[ctx.classifier, test.node, *adv_tests.values()],
                     params={"layers": layers, "n": n, "attacks": list(adv_tests)})


def _rowwise_corr(a: Tensor, b: Tensor) -> np.ndarray:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    corr = (a * b).sum(1) / denom.clamp_min(1e-12)
    corr[denom < 1e-12] = float("nan")
    return corr.numpy()


# ------------------------------------------------------------------------------------------------ figures
def saliency(ctx: Context, x: Tensor, y: Tensor, cfg: Any) -> Tensor:
    """Seed 001 Eq. 5: S = ∂F_c/∂x (c = ``cfg.saliency_target``), batched, on the CPU."""
    return map_batches(lambda s: gradient(ctx.model, x[s].to(ctx.device), cfg.saliency_target,
                                          labels=y[s].to(ctx.device), score=cfg.saliency_score).cpu(),
                       len(x), SALIENCY_BATCH)


def examples(ctx: Context, run_dir: Path, test: Part, adv_tests: dict[str, Stage], cfg: Any) -> Stage:
    """One successful adversarial example per attack with both saliency maps (seed 001 Fig. 1), stored and
    written to ``examples.safetensors`` for the report."""

    def compute() -> dict[str, Any]:
        tensors: dict[str, Tensor] = {}
        for name, adv in adv_tests.items():
            ok = adv["success"].bool().nonzero().flatten()
            if not len(ok):
                continue
            i = ok[:1]
            x, xa, y = test.x[i], adv["x_adv"][i], test.y[i]
            tensors |= {f"{name}.x": x, f"{name}.x_adv": xa, f"{name}.s": saliency(ctx, x, y, cfg),
                        f"{name}.s_adv": saliency(ctx, xa, y, cfg), f"{name}.y": y, f"{name}.pred_adv": adv["pred"][i]}
        return tensors

    stage = ctx.stage("examples", compute, inputs=[ctx.classifier, test.node, *adv_tests.values()],
                      params={"score": cfg.saliency_score, "target": cfg.saliency_target})
    tensors = {k: v for k, v in stage.payload.items() if isinstance(v, Tensor)}
    if tensors:
        save_tensors(Path(run_dir) / "examples.safetensors", tensors)
    return stage
