"""The class-imbalance study (seed 002): does depleting a class change how easily it is attacked?

Seed 002 (chapters 3–5) trains one balanced network and ten networks on imbalanced training sets, each missing
4,000 of the 5,000 training images (80%) of one class (§5.4, Table 5.2), and asks how FGSM and the iterative
gradient sign method behave on them, untargeted ("ascent", §3.5: up the loss of the true class) and targeted
("descent", §3.5: down the loss of a chosen class). Its results chapter is empty; this study produces the
numbers. Pipeline, every model and every attack a cached stage of the run store:

1. Per seed, train a balanced baseline and one model per depleted class (``advsal.data.deplete_class``).
2. Per model: overall accuracy, test-set ("validation") loss, per-class accuracy and its delta against the
   balanced model of the same seed (Table 5.2 layout), confusion matrix (``advsal.training.evaluate``).
3. Per model, on a fixed class-stratified attack set of test images: FGSM and BIM (iterative FGSM) at fixed
   L∞ budgets, untargeted; targeted *towards* the depleted class (images of the other classes); targeted
   *away* from it (images of the depleted class, towards a seeded random other class); the confidence of the
   adversarial predictions and where untargeted adversarial examples land; and the minimal L∞ ε per example,
   found by per-example bisection over BIM's budget (``minimal_linf_epsilon``).
4. Analysis: depleted model vs balanced model of the same seed, on the same images (those both classify
   correctly), with a paired sign-flip permutation test over seeds × images and Holm's correction over every
   test of the run; the conclusion is assembled from the measured values and test outcomes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..attacks.gradient import BIM, FGSM, loss_gradient
from ..attacks.targets import random_targets
from ..data import ImageSet, deplete_class, stratified_split, subset
from ..progress import Bar
from ..store import RunStore
from ..tensors import check_images, check_labels, frozen, model_device, predict_logits
from .common import DataConfig, Log, ModelConfig, StageLog, config_from_yaml, finish_study, load_data, train_stage
from .stats import holm, nanmean

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs"
ATTACKS = ("fgsm", "bim")
NICE = {"fgsm": "FGSM", "bim": "BIM", "min_eps": "minimal ε (BIM bisection)"}


@dataclass
class AttackConfig:
    """Fixed-budget attacks (L∞, pixel units) on ``per_class`` correctly stratified test images per class."""

    fgsm_eps: float = 0.15  # balanced mnist-net on mnist5k: FGSM fools ~31%, BIM ~47% of correct test images
    bim_eps: float = 0.15
    bim_steps: int = 10  # step size 2.5·ε/steps (advsal.attacks.BIM's default)
    per_class: int = 50
    batch_size: int = 250


@dataclass
class MinEpsConfig:
    """Per-example minimal L∞ ε of BIM by bisection on [0, eps_max] (``probes`` halvings)."""

    per_class: int = 20  # the first images per class of the attack set
    eps_max: float = 0.3
    probes: int = 6
    steps: int = 10


@dataclass
class Config:
    name: str = "imbalance-mnist5k"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(epochs=3))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    classes: list[int] | None = None  # classes to deplete (all when None)
    removal: int | float = 0.8  # share of the class's training images removed (an int: a count, e.g. 4000)
    val_fraction: float = 0.0  # stratified validation split for early stopping (taken before depletion)
    attacks: AttackConfig = field(default_factory=AttackConfig)
    min_eps: MinEpsConfig = field(default_factory=MinEpsConfig)
    alpha: float = 0.05  # family-wise error rate (Holm)
    permutations: int = 10000
    seed: int = 0  # attack-set selection and the permutation test


def load_config(path: str | Path | None) -> Config:
    return validate_config(config_from_yaml(Config, path, CONFIGS_DIR))


def validate_config(cfg: Config) -> Config:
    """Raise ValueError naming the bad option and what would be valid."""
    if not cfg.seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds: [0, 1, 2]")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds {cfg.seeds} repeat a value; each seed must be distinct")
    r = cfg.removal
    if isinstance(r, bool) or not isinstance(r, (int, float)) or (isinstance(r, float) and not 0 < r <= 1) \
            or (isinstance(r, int) and r < 1):
        raise ValueError(f"removal must be a fraction in (0, 1] (e.g. 0.8) or a positive count (e.g. 4000), "
                         f"got {r!r}")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    for name in ("fgsm_eps", "bim_eps"):
        if not getattr(cfg.attacks, name) > 0:
            raise ValueError(f"attacks.{name} must be > 0 (pixel units, images in [0, 1])")
    for name, v in (("attacks.per_class", cfg.attacks.per_class),
                    ("attacks.bim_steps", cfg.attacks.bim_steps),
                    ("min_eps.per_class", cfg.min_eps.per_class), ("min_eps.probes", cfg.min_eps.probes),
                    ("min_eps.steps", cfg.min_eps.steps), ("permutations", cfg.permutations)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if cfg.min_eps.per_class > cfg.attacks.per_class:
        raise ValueError(f"min_eps.per_class ({cfg.min_eps.per_class}) cannot exceed attacks.per_class "
                         f"({cfg.attacks.per_class}): the ε search runs on a part of the attack set")
    if not cfg.min_eps.eps_max > 0:
        raise ValueError("min_eps.eps_max must be > 0")
    if not 0 < cfg.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {cfg.alpha}")
    return cfg


# ------------------------------------------------------------------------------------------------------------
# Library-level pieces (pure functions, unit-tested)


def minimal_linf_epsilon(model: nn.Module, x: Tensor, y: Tensor, eps_max: float = 0.3, probes: int = 6,
                         steps: int = 10, batch_size: int = 250) -> tuple[Tensor, Tensor]:
    """Per-example smallest L∞ budget at which BIM (iterative FGSM, seed 002 §3.4; step 2.5·ε/steps) fools the
    model, by bisection on [0, eps_max] with ``probes`` halvings, all examples in one batch.

    Returns ``(eps, censored)``: ``eps`` is the upper end of the final bracket (resolution
    eps_max / 2^probes), 0 for an example that is misclassified already; ``censored`` marks examples never
    fooled (their ``eps`` is ``eps_max``, meaning "at least that much"). BIM success is not strictly monotone
    in ε, so this is the bisection's answer, not a certified minimum.
    """
    check_images(x)
    check_labels(y, x.shape[0])
    if not eps_max > 0 or probes < 1 or steps < 1:
        raise ValueError("eps_max must be > 0 and probes, steps ≥ 1")
    device = model_device(model)
    n = x.shape[0]
    eps = torch.zeros(n)
    censored = torch.zeros(n, dtype=torch.bool)
    with frozen(model), Bar("minimal ε", n * probes) as bar:
        for start in range(0, n, batch_size):
            xc, yc = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            with torch.no_grad():
                correct = model(xc).argmax(1) == yc
            lo = torch.zeros(len(xc), device=device)
            hi = torch.full((len(xc),), float(eps_max), device=device)
            fooled_once = torch.zeros(len(xc), dtype=torch.bool, device=device)
            active = correct.nonzero().flatten()
            for _ in range(probes):
                if len(active):
                    mid = (lo[active] + hi[active]) / 2
                    fooled = _bim_fools(model, xc[active], yc[active], mid, steps)
                    hi[active] = torch.where(fooled, mid, hi[active])
                    lo[active] = torch.where(fooled, lo[active], mid)
                    fooled_once[active] |= fooled
                bar.update(len(xc))
            eps[start:start + len(xc)] = torch.where(correct, hi, torch.zeros_like(hi)).cpu()
            censored[start:start + len(xc)] = (correct & ~fooled_once).cpu()
    return eps, censored


def _bim_fools(model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, steps: int) -> Tensor:
    """Untargeted BIM with a per-example L∞ budget ``eps`` (same update and step size as ``attacks.BIM``)."""
    e = eps.view(-1, 1, 1, 1)
    alpha = 2.5 * e / steps
    x_adv = x
    for _ in range(steps):
        grad, _ = loss_gradient(model, x_adv, y, targeted=False)
        x_adv = (x + (x_adv + alpha * grad.sign() - x).clamp(-e, e)).clamp(0, 1)
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def per_class_attack_metrics(y: Tensor | np.ndarray, clean_pred: Tensor | np.ndarray,
                             adv_pred: Tensor | np.ndarray, adv_conf: Tensor | np.ndarray,
                             num_classes: int) -> dict[str, np.ndarray]:
    """Per true class ``c``, over the images of ``c`` the model classifies correctly (clean):

    - ``n_correct[c]``: how many there are;
    - ``success_rate[c]``: share whose adversarial prediction differs from ``c`` (untargeted success);
    - ``mean_confidence[c]``: mean softmax probability of the adversarial prediction over the successful ones;
    - ``landing[c, k]``: successful adversarial examples of ``c`` predicted as ``k`` (rows: true class);
    - ``landing_share[k]``: share of the *other* classes' successful adversarial examples that land in ``k``.

    Classes without (successful) examples get NaN.
    """
    y, clean_pred, adv_pred = (np.asarray(a, dtype=np.int64) for a in (y, clean_pred, adv_pred))
    adv_conf = np.asarray(adv_conf, dtype=np.float64)
    if not (len(y) == len(clean_pred) == len(adv_pred) == len(adv_conf)):
        raise ValueError("y, clean_pred, adv_pred and adv_conf must have the same length")
    correct = clean_pred == y
    success = correct & (adv_pred != y)
    n_correct = np.bincount(y[correct], minlength=num_classes)
    n_success = np.bincount(y[success], minlength=num_classes)
    conf_sum = np.bincount(y[success], weights=adv_conf[success], minlength=num_classes)
    landing = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(landing, (y[success], adv_pred[success]), 1)
    from_others = landing.sum() - landing.sum(1)  # successful examples whose true class is not k
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"n_correct": n_correct,
                "success_rate": np.where(n_correct > 0, n_success / np.maximum(n_correct, 1), np.nan),
                "mean_confidence": np.where(n_success > 0, conf_sum / np.maximum(n_success, 1), np.nan),
                "landing": landing,
                "landing_share": np.where(from_others > 0, landing.sum(0) / np.maximum(from_others, 1),
                                          np.nan)}


@dataclass
class PairedTest:
    """A paired comparison: mean difference, two-sided p-value, number of pairs (and of non-zero ones)."""

    mean_difference: float
    p_value: float
    n: int
    n_nonzero: int
    exact: bool


def paired_permutation_test(differences: np.ndarray | Tensor, n_resamples: int = 10000,
                            seed: int = 0) -> PairedTest:
    """Two-sided sign-flip permutation test of H0 "the paired differences are symmetric about 0".

    Statistic: the mean difference. Under H0 each difference's sign is exchangeable, so the null distribution
    is the mean over random sign flips; zero differences do not change under a flip and are kept in the mean.
    Exact enumeration for ≤ 16 non-zero differences, else ``n_resamples`` Monte-Carlo flips with the
    (1 + hits) / (1 + resamples) estimate (Phipson & Smyth 2010). For 0/1 outcomes this is an exact
    McNemar-type test on the discordant pairs.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    n = len(d)
    nz = d[d != 0]
    if n == 0 or len(nz) == 0:
        return PairedTest(0.0 if n else float("nan"), 1.0, n, 0, True)
    observed = abs(nz.sum())
    tol = 1e-9 * max(1.0, float(np.abs(nz).sum()))
    if len(nz) <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(nz))))
        hits = int(np.sum(np.abs(signs @ nz) >= observed - tol))
        p = hits / len(signs)
        exact = True
    else:
        rng = np.random.default_rng(seed)
        hits, done = 0, 0
        while done < n_resamples:
            b = min(2000, n_resamples - done)
            signs = rng.integers(0, 2, size=(b, len(nz)), dtype=np.int8) * 2 - 1
            hits += int(np.sum(np.abs(signs @ nz) >= observed - tol))
            done += b
        p = (1 + hits) / (1 + n_resamples)
        exact = False
    return PairedTest(float(d.mean()), float(min(1.0, p)), n, len(nz), exact)


# ------------------------------------------------------------------------------------------------------------
# Stages


def _asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _removal(cfg: Config) -> int | float:
    return float(cfg.removal) if isinstance(cfg.removal, float) else int(cfg.removal)


def _attack_model(store: RunStore, stage: str, key: dict, model: nn.Module, eval_set: ImageSet,
                  descent_targets: Tensor, towards: list[int], depleted: int | None, n_min_eps: int,
                  cfg: Config) -> dict[str, Any]:
    """All attacks on one model (cached): predictions and confidences of every adversarial set, per image.

    ``towards`` lists the classes to attack *towards* (every class for the balanced model, the depleted one
    for a depleted model); descent (away from a class towards ``descent_targets``) runs on the images of the
    depleted class only, or on all images for the balanced model.
    """
    a = cfg.attacks
    x, y = eval_set.x, eval_set.y

    def adv_outputs(attack, idx: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        pred = torch.full((len(y),), -1, dtype=torch.long)
        conf = torch.full((len(y),), float("nan"))
        if len(idx):
            res = attack(model, x[idx], y[idx], targets=targets)
            probs = predict_logits(model, res.x_adv).softmax(1)
            pred[idx] = res.pred
            conf[idx] = probs.gather(1, res.pred.view(-1, 1)).flatten()
        return pred, conf

    def compute() -> dict[str, Any]:
        logits = predict_logits(model, x)
        out: dict[str, Any] = {"clean_pred": logits.argmax(1), "clean_conf": logits.softmax(1).amax(1)}
        attacks = {"fgsm": FGSM(eps=a.fgsm_eps, batch_size=a.batch_size),
                   "bim": BIM(eps=a.bim_eps, steps=a.bim_steps, batch_size=a.batch_size)}
        everyone = torch.arange(len(y))
        descent_idx = everyone if depleted is None else (y == depleted).nonzero().flatten()
        for name, attack in attacks.items():
            pred, conf = adv_outputs(attack, everyone, None)
            out[f"{name}.untargeted.pred"], out[f"{name}.untargeted.conf"] = pred, conf
            for c in towards:
                idx = (y != c).nonzero().flatten()
                target = torch.full((len(idx),), c, dtype=torch.long)
                pred, conf = adv_outputs(attack, idx, target)
                out[f"{name}.towards{c}.pred"], out[f"{name}.towards{c}.conf"] = pred, conf
            out[f"{name}.descent.pred"], out[f"{name}.descent.conf"] = adv_outputs(
                attack, descent_idx, descent_targets[descent_idx])
        search = _min_eps_index(y, eval_set.num_classes, n_min_eps)
        eps, censored = minimal_linf_epsilon(model, x[search], y[search], cfg.min_eps.eps_max,
                                             cfg.min_eps.probes, cfg.min_eps.steps, a.batch_size)
        out["min_eps.index"], out["min_eps.eps"] = search, eps
        out["min_eps.censored"] = censored.to(torch.uint8)
        return out

    return store.cached(stage, key, compute)


def _min_eps_index(y: Tensor, num_classes: int, per_class: int) -> Tensor:
    """The first ``per_class`` images of every class in the attack set (sorted positions)."""
    picks = [(y == c).nonzero().flatten()[:per_class] for c in range(num_classes)]
    return torch.cat(picks).sort().values


# ------------------------------------------------------------------------------------------------------------
# Analysis


def _comparisons(y: np.ndarray, bal: dict[str, Any], dep: dict[str, Any], d: int, attack: str,
                 descent_targets: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Paired per-image outcomes (balanced, depleted) for each question about depleted class ``d``.

    Except for ``own_accuracy_under_attack`` (all images of ``d``), only images both models classify correctly
    enter, so those comparisons measure robustness, not clean accuracy.
    """
    ok = (np.asarray(bal["clean_pred"]) == y) & (np.asarray(dep["clean_pred"]) == y)
    own, other = ok & (y == d), ok & (y != d)
    b_un, d_un = np.asarray(bal[f"{attack}.untargeted.pred"]), np.asarray(dep[f"{attack}.untargeted.pred"])
    b_to, d_to = np.asarray(bal[f"{attack}.towards{d}.pred"]), np.asarray(dep[f"{attack}.towards{d}.pred"])
    b_de, d_de = np.asarray(bal[f"{attack}.descent.pred"]), np.asarray(dep[f"{attack}.descent.pred"])
    f = np.float64
    mine = y == d
    return {
        "own_accuracy_under_attack": ((b_un == y)[mine].astype(f), (d_un == y)[mine].astype(f)),
        "own_success": ((b_un != y)[own].astype(f), (d_un != y)[own].astype(f)),
        "others_success": ((b_un != y)[other].astype(f), (d_un != y)[other].astype(f)),
        "towards_success": ((b_to == d)[other].astype(f), (d_to == d)[other].astype(f)),
        "landing_in_depleted": ((b_un == d)[other].astype(f), (d_un == d)[other].astype(f)),
        "descent_success": ((b_de == descent_targets)[own].astype(f),
                            (d_de == descent_targets)[own].astype(f)),
    }


def _min_eps_comparisons(y: np.ndarray, bal: dict[str, Any], dep: dict[str, Any],
                         d: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    idx = np.asarray(bal["min_eps.index"])
    ys = y[idx]
    ok = ((np.asarray(bal["clean_pred"]) == y) & (np.asarray(dep["clean_pred"]) == y))[idx]
    b, dd = np.asarray(bal["min_eps.eps"], dtype=np.float64), np.asarray(dep["min_eps.eps"], dtype=np.float64)
    return {"own_min_eps": (b[ok & (ys == d)], dd[ok & (ys == d)]),
            "others_min_eps": (b[ok & (ys != d)], dd[ok & (ys != d)])}


#: Question → (attack-specific, plain-language description).
QUESTIONS = {
    "own_accuracy_under_attack": "accuracy under untargeted attack on all of the depleted class's images "
                                 "(clean errors count as fooled)",
    "own_success": "untargeted (ascent) success on the depleted class's images",
    "others_success": "untargeted (ascent) success on the other classes' images",
    "towards_success": "targeted success towards the depleted class (descent, other classes' images)",
    "landing_in_depleted": "share of the other classes' images whose untargeted adversarial example is "
                           "predicted as the depleted class",
    "descent_success": "targeted success away from the depleted class (descent to a random other class)",
    "own_min_eps": "minimal L∞ ε of the depleted class's images",
    "others_min_eps": "minimal L∞ ε of the other classes' images",
}


def analyse(y: np.ndarray, payloads: dict[int, dict[str, dict[str, Any]]],
            descent_targets: dict[int, np.ndarray], classes: list[int], cfg: Config) -> list[dict[str, Any]]:
    """One row per (depleted class, attack, question): balanced and depleted means ± std over seeds, the
    pooled paired difference, the sign-flip permutation p-value and Holm's adjusted p-value."""
    rows: list[dict[str, Any]] = []
    for d in classes:
        for attack in (*ATTACKS, "min_eps"):
            per_q: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
            for seed, models in payloads.items():
                bal, dep = models["balanced"], models[f"deplete{d}"]
                comps = _min_eps_comparisons(y, bal, dep, d) if attack == "min_eps" else \
                    _comparisons(y, bal, dep, d, attack, descent_targets[seed])
                for q, pair in comps.items():
                    per_q.setdefault(q, []).append(pair)
            for q, pairs in per_q.items():
                b_means = np.array([p[0].mean() if len(p[0]) else np.nan for p in pairs])
                d_means = np.array([p[1].mean() if len(p[1]) else np.nan for p in pairs])
                diffs = np.concatenate([p[1] - p[0] for p in pairs])
                test = paired_permutation_test(diffs, cfg.permutations, seed=cfg.seed + 1000 * d + len(rows))
                seed_diffs = d_means - b_means
                rows.append({
                    "class": d, "attack": attack, "question": q,
                    "balanced_mean": nanmean(b_means), "balanced_std": _nanstd(b_means),
                    "depleted_mean": nanmean(d_means), "depleted_std": _nanstd(d_means),
                    "difference": test.mean_difference, "difference_std_seeds": _nanstd(seed_diffs),
                    "seeds_up": int(np.sum(seed_diffs > 0)), "seeds_down": int(np.sum(seed_diffs < 0)),
                    "n_pairs": test.n, "n_discordant": test.n_nonzero, "p_value": test.p_value,
                    "exact": test.exact})
    adjusted = holm([r["p_value"] for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(p)
        r["significant"] = bool(p < cfg.alpha)
    return rows


def _nanstd(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.std(a, ddof=1)) if len(a) > 1 else float("nan")


def conclusions(tests: list[dict[str, Any]], class_names: list[str], accuracy_rows: list[dict[str, Any]],
                alpha: float) -> list[str]:
    """Sentences assembled from the measured differences and the test outcomes (only the frame is fixed)."""
    out: list[str] = []
    drops = np.array([_f(r["class_accuracy_delta"]) for r in accuracy_rows])
    if np.isfinite(drops).any():
        worst = accuracy_rows[int(np.nanargmax(drops))]
        overall = np.array([_f(r["accuracy_delta"]) for r in accuracy_rows])
        out.append(f"Depletion lowered the depleted class's own test accuracy by {np.nanmean(drops):.1%} on "
                   f"average (range {np.nanmin(drops):.1%} to {np.nanmax(drops):.1%}; largest for "
                   f"'{class_names[worst['class']]}', {_f(worst['balanced_class_accuracy']):.1%} → "
                   f"{_f(worst['class_accuracy']):.1%}); overall accuracy changed by "
                   f"{np.nanmean(overall):+.1%}.")
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in tests:
        by_key.setdefault((t["attack"], t["question"]), []).append(t)
    out += _headline(by_key, class_names, alpha)
    for (attack, q), rows in by_key.items():
        diffs = np.array([_f(r["difference"]) for r in rows])
        head = f"{NICE.get(attack, attack)}, {QUESTIONS[q]}"
        if not np.isfinite(diffs).any():
            out.append(f"{head}: no images that both models classify correctly, so no comparison.")
            continue
        is_eps = q.endswith("min_eps")
        scale, unit, digits = (1.0, "", 4) if is_eps else (100.0, " percentage points", 1)

        def fmt(v: float, scale: float = scale, digits: int = digits) -> str:
            return f"{v * scale:+.{digits}f}"

        up = [r for r in rows if r["significant"] and _f(r["difference"]) > 0]
        down = [r for r in rows if r["significant"] and _f(r["difference"]) < 0]
        text = (f"{head}: depleted − balanced = {fmt(np.nanmean(diffs))}{unit} on average over {len(rows)} "
                f"depleted class(es) (range {fmt(np.nanmin(diffs))} to {fmt(np.nanmax(diffs))}); ")
        if not up and not down:
            text += f"no class changed significantly (Holm, α = {alpha:g})."
        else:
            text += (f"significant increase (Holm, α = {alpha:g}) for {_name_list(up, class_names)}, "
                     f"significant decrease for {_name_list(down, class_names)}.")
        out.append(text)
    return out


def _headline(by_key: dict[tuple[str, str], list[dict[str, Any]]], class_names: list[str],
              alpha: float) -> list[str]:
    """The short answer: own vulnerability (BIM success, minimal ε) and pull towards / away from d."""
    def tally(key: tuple[str, str]) -> tuple[float, int, int, int] | None:
        rows = by_key.get(key, [])
        diffs = np.array([_f(r["difference"]) for r in rows])
        if not np.isfinite(diffs).any():
            return None
        up = sum(1 for r in rows if r["significant"] and _f(r["difference"]) > 0)
        down = sum(1 for r in rows if r["significant"] and _f(r["difference"]) < 0)
        return float(np.nanmean(diffs)), up, down, len(rows)

    out = []
    own, eps = tally(("bim", "own_success")), tally(("min_eps", "own_min_eps"))
    if own is not None:
        mean, up, down, n = own
        text = (f"Answer: a depleted class's own (correctly classified) images became "
                f"{'easier' if mean > 0 else 'harder'} to fool — BIM success {mean * 100:+.1f} percentage "
                f"points on average; significantly more often fooled for {up} and less often for {down} of "
                f"{n} depleted classes (Holm, α = {alpha:g})")
        if eps is not None:
            text += (f"; their minimal ε changed by {eps[0]:+.4f} on average (significantly smaller for "
                     f"{eps[2]}, larger for {eps[1]} of {eps[3]})")
        out.append(text + ".")
    towards, landing = tally(("bim", "towards_success")), tally(("bim", "landing_in_depleted"))
    if towards is not None and landing is not None:
        direction = "pulled towards" if towards[0] + landing[0] > 0 else "pushed away from"
        out.append(f"Adversarial examples of the other classes were on balance {direction} the depleted "
                   f"class: BIM success towards it {towards[0] * 100:+.1f} points (significant up/down for "
                   f"{towards[1]}/{towards[2]} of {towards[3]} classes), share of untargeted adversarial "
                   f"examples landing in it {landing[0] * 100:+.1f} points (significant up/down for "
                   f"{landing[1]}/{landing[2]}).")
    return out


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _name_list(rows: list[dict[str, Any]], class_names: list[str]) -> str:
    if not rows:
        return "none"
    return f"{len(rows)} ({', '.join(class_names[r['class']] for r in rows)})"


# ------------------------------------------------------------------------------------------------------------
# The study


def run(cfg: Config, run_dir: str | Path, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the imbalance study in ``run_dir``; writes results.json and the report."""
    cfg = validate_config(cfg)
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    stages = StageLog(store, log)
    train_full, test = load_data(cfg.data)
    val = None
    if cfg.val_fraction > 0:
        train_full, val = stratified_split(train_full, cfg.val_fraction, cfg.data.seed,
                                           (f"{train_full.name}-train", f"{train_full.name}-val"))
    num_classes = train_full.num_classes
    classes = list(range(num_classes)) if cfg.classes is None else [int(c) for c in cfg.classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} do not exist in {cfg.data.name} (valid: 0..{num_classes - 1})")
    eval_set = subset(test, cfg.attacks.per_class * num_classes, cfg.seed)
    counts = np.bincount(eval_set.y.numpy(), minlength=num_classes)
    n_min = min(cfg.min_eps.per_class, int(counts.min()))
    y = eval_set.y.numpy()
    results: dict[str, Any] = {
        "study": "imbalance", "config": _asdict(cfg), "classes": list(train_full.classes),
        "depleted_classes": classes,
        "data": {"train": train_full.describe(), "test": test.describe(),
                 "val": val.describe() if val is not None else None, "attack_set": eval_set.describe(),
                 "attack_set_counts": counts.tolist(), "min_eps_per_class": n_min,
                 "train_counts": train_full.class_counts().tolist()}}

    models: dict[str, dict[str, Any]] = {}
    payloads: dict[int, dict[str, dict[str, Any]]] = {}
    descent_targets: dict[int, np.ndarray] = {}
    for seed in cfg.seeds:
        model_cfg = dataclasses.replace(cfg.model, seed=seed)
        targets = random_targets(eval_set.y, num_classes, seed=seed)
        descent_targets[seed] = targets.numpy()
        payloads[seed] = {}
        models[str(seed)] = {}
        for d in [None, *classes]:
            label = "balanced" if d is None else f"deplete{d}"
            train = train_full if d is None else deplete_class(train_full, d, _removal(cfg), seed=seed)
            extra = {"depleted_class": d, "removal": cfg.removal if d is not None else None,
                     "depletion_seed": seed if d is not None else None, "val_fraction": cfg.val_fraction}
            model, metrics = train_stage(store, f"model-s{seed}-{label}", cfg.data, model_cfg, train, test,
                                         val, extra=extra)
            stages.flush()
            attack_key = {"data": _asdict(cfg.data), "model": _asdict(model_cfg), "extra": extra,
                          "attacks": _asdict(cfg.attacks), "min_eps": _asdict(cfg.min_eps), "n_min": n_min,
                          "seed": cfg.seed, "towards": classes if d is None else [d]}
            payloads[seed][label] = _attack_model(store, f"attacks-s{seed}-{label}", attack_key, model,
                                                  eval_set, targets, classes if d is None else [d], d, n_min,
                                                  cfg)
            stages.flush()
            models[str(seed)][label] = _model_summary(metrics, train, payloads[seed][label], y, num_classes,
                                                      cfg)

    results["models"] = models
    results["table52"] = _table52(models, classes, cfg.seeds)
    results["vulnerability"] = _vulnerability(models, classes, cfg.seeds, num_classes)
    results["tests"] = analyse(y, payloads, descent_targets, classes, cfg)
    results["conclusions"] = conclusions(results["tests"], results["classes"], results["table52"]["rows"],
                                         cfg.alpha)
    return finish_study(run_dir, results, store, stages, render)


def _model_summary(metrics: dict[str, Any], train: ImageSet, payload: dict[str, Any], y: np.ndarray,
                   num_classes: int, cfg: Config) -> dict[str, Any]:
    test = metrics["test"]
    out: dict[str, Any] = {
        "train_counts": train.class_counts().tolist(), "epochs_run": metrics["epochs_run"],
        "train_seconds": metrics["train_seconds"], "stopped_early": metrics["stopped_early"],
        "accuracy": test["accuracy"], "loss": test["loss"], "per_class_accuracy": test["per_class_accuracy"],
        "confusion": test["confusion"], "val_loss": metrics.get("val", {}).get("loss")}
    clean = np.asarray(payload["clean_pred"])
    for attack in ATTACKS:
        m = per_class_attack_metrics(y, clean, payload[f"{attack}.untargeted.pred"],
                                     payload[f"{attack}.untargeted.conf"], num_classes)
        out[attack] = {k: v.tolist() for k, v in m.items()}
    idx = np.asarray(payload["min_eps.index"])
    eps = np.asarray(payload["min_eps.eps"], dtype=np.float64)
    ok = (clean == y)[idx]
    ys = y[idx]
    out["min_eps"] = {
        "median": [float(np.median(eps[ok & (ys == c)])) if (ok & (ys == c)).any() else float("nan")
                   for c in range(num_classes)],
        "values": [eps[ok & (ys == c)].round(5).tolist() for c in range(num_classes)],
        "censored": float(np.asarray(payload["min_eps.censored"])[ok].mean()) if ok.any() else float("nan"),
        "eps_max": cfg.min_eps.eps_max}
    return out


def _table52(models: dict[str, dict[str, Any]], classes: list[int], seeds: list[int]) -> dict[str, Any]:
    """Seed 002 Table 5.2 per depleted class, mean ± std over seeds; delta = balanced − depleted accuracy of
    the depleted class (the thesis' sign: a positive delta is a drop)."""
    bal = [models[str(s)]["balanced"] for s in seeds]
    rows = []
    for d in classes:
        dep = [models[str(s)][f"deplete{d}"] for s in seeds]
        acc = np.array([m["accuracy"] for m in dep])
        cls_acc = np.array([m["per_class_accuracy"][d] for m in dep], dtype=np.float64)
        bal_cls = np.array([m["per_class_accuracy"][d] for m in bal], dtype=np.float64)
        rows.append({"class": d, "accuracy": nanmean(acc), "accuracy_std": _nanstd(acc),
                     "loss": nanmean(np.array([m["loss"] for m in dep])),
                     "loss_std": _nanstd(np.array([m["loss"] for m in dep])),
                     "class_accuracy": nanmean(cls_acc), "class_accuracy_std": _nanstd(cls_acc),
                     "balanced_class_accuracy": nanmean(bal_cls),
                     "class_accuracy_delta": nanmean(bal_cls - cls_acc),
                     "class_accuracy_delta_std": _nanstd(bal_cls - cls_acc),
                     "accuracy_delta": nanmean(acc - np.array([m["accuracy"] for m in bal])),
                     "train_count": dep[0]["train_counts"][d]})
    b_acc = np.array([m["accuracy"] for m in bal])
    b_loss = np.array([m["loss"] for m in bal])
    per_class = np.array([m["per_class_accuracy"] for m in bal], dtype=np.float64)
    return {"balanced": {"accuracy": nanmean(b_acc), "accuracy_std": _nanstd(b_acc),
                         "loss": nanmean(b_loss), "loss_std": _nanstd(b_loss),
                         "per_class_accuracy": _colmean(per_class)},
            "rows": rows}


def _vulnerability(models: dict[str, dict[str, Any]], classes: list[int], seeds: list[int],
                   num_classes: int) -> dict[str, Any]:
    """Per model (balanced, deplete<d>) and class, means over seeds of the per-class attack metrics."""
    out: dict[str, Any] = {}
    for label in ["balanced", *[f"deplete{d}" for d in classes]]:
        ms = [models[str(s)][label] for s in seeds]
        entry: dict[str, Any] = {}
        for attack in ATTACKS:
            for key in ("success_rate", "mean_confidence", "landing_share"):
                arr = np.array([m[attack][key] for m in ms], dtype=np.float64)
                entry[f"{attack}.{key}"] = _colmean(arr)
                entry[f"{attack}.{key}.std"] = _colstd(arr)
            entry[f"{attack}.landing"] = np.sum([m[attack]["landing"] for m in ms], 0).tolist()
        arr = np.array([m["min_eps"]["median"] for m in ms], dtype=np.float64)
        entry["min_eps.median"], entry["min_eps.median.std"] = _colmean(arr), _colstd(arr)
        accs = np.array([m["per_class_accuracy"] for m in ms], dtype=np.float64)
        entry["per_class_accuracy"] = _colmean(accs)
        entry["confusion"] = np.sum([m["confusion"] for m in ms], 0).tolist()
        out[label] = entry
    return out


def _colmean(a: np.ndarray) -> list[float]:
    return [nanmean(a[:, j]) for j in range(a.shape[1])]


def _colstd(a: np.ndarray) -> list[float]:
    return [_nanstd(a[:, j]) for j in range(a.shape[1])]


# ------------------------------------------------------------------------------------------------------------
# Report


def render(run_dir: str | Path, results: dict[str, Any], store: RunStore | None = None) -> tuple[Path, Path]:
    from ..report.imbalance import render_imbalance_report

    return render_imbalance_report(Path(run_dir), results)


def summary(results: dict[str, Any]) -> list[str]:
    t = results["table52"]
    names = results["classes"]
    b = t["balanced"]
    lines = [f"balanced test accuracy {b['accuracy']:.4f} ± {_fmt_std(b['accuracy_std'])}"]
    for r in t["rows"]:
        lines.append(f"deplete {names[r['class']]:<12} accuracy {r['accuracy']:.4f}  class accuracy "
                     f"{r['class_accuracy']:.3f} (balanced − depleted {r['class_accuracy_delta']:+.3f})")
    n_sig = sum(1 for r in results["tests"] if r["significant"])
    lines.append(f"{n_sig} of {len(results['tests'])} paired comparisons significant (Holm, "
                 f"α = {results['config']['alpha']:g}); see report.md")
    return lines


def _fmt_std(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
