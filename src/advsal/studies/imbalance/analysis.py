"""Analysis of the class-imbalance study: stored stage payloads → per-model summaries, seed 002 Table 5.2,
vulnerability per class, the paired tests with Holm's correction, and the written conclusion (plain data)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...data import ImageSet
from ...errors import InputError
from ..stats import (
    bootstrap_interval,
    holm,
    intervals_overlap,
    km_median,
    logrank_test,
    nanmean,
    nanstd,
    paired_permutation_test,
    proportion_interval,
    seed_level_test,
)
from .config import Config

ATTACKS = ("fgsm", "bim")
NICE = {"fgsm": "FGSM", "bim": "BIM", "min_eps": "minimal ε (BIM bisection)"}


@dataclass
class ModelRun:
    """What the study stored for one trained model: its training-set class counts, the training stage's
    metrics, and the payloads of its attack and minimal-ε stages."""

    train_counts: list[int]
    metrics: dict[str, Any]
    attacks: dict[str, Any]
    min_eps: dict[str, Any]


def analyse(runs: dict[tuple[int, int | None], ModelRun], y: np.ndarray, classes: list[int],
            cfg: Config) -> dict[str, Any]:
    """The results' tables: ``models`` (per seed and model), ``table52``, ``vulnerability`` and ``tests``;
    ``y`` are the attack set's labels."""
    num_classes = len(runs[cfg.seeds[0], None].train_counts)
    payloads: dict[int, dict[str, dict[str, Any]]] = {}
    models: dict[str, dict[str, Any]] = {}
    for (seed, d), run in runs.items():
        label = "balanced" if d is None else f"deplete{d}"
        payload = _merged(run, cfg.min_eps.eps_max)
        payloads.setdefault(seed, {})[label] = payload
        models.setdefault(str(seed), {})[label] = _model_summary(run, payload, y, num_classes, cfg)
    descent_targets = {s: np.asarray(p["balanced"]["descent.targets"]) for s, p in payloads.items()}
    return {"models": models, "table52": _table52(models, classes, cfg.seeds),
            "vulnerability": _vulnerability(models, classes, cfg.seeds, num_classes),
            "tests": paired_tests(y, payloads, descent_targets, classes, cfg)}


def describe_data(data: dict[str, Any], train: ImageSet, val: ImageSet | None, attack_set: ImageSet,
                  classes: list[int], cfg: Config) -> dict[str, Any]:
    """The results' ``classes``, ``depleted_classes`` and ``data`` (the engine's entry plus the training set
    after the validation split, the attack set and its class counts)."""
    counts = attack_set.class_counts()
    data = {**data, "train": train.describe(), "val": val.describe() if val is not None else None,
            "attack_set": attack_set.describe(), "attack_set_counts": counts.tolist(),
            "min_eps_per_class": int(min(cfg.min_eps.per_class, int(counts.min()))),
            "train_counts": train.class_counts().tolist()}
    return {"classes": list(train.classes), "depleted_classes": classes, "data": data}


def _merged(run: ModelRun, eps_max: float) -> dict[str, Any]:
    """One flat payload per model; an image BIM never fooled up to ``eps_max`` gets ε = eps_max ("at least
    that much": censored)."""
    found = np.asarray(run.min_eps["found"]).astype(bool)
    eps = np.minimum(np.asarray(run.min_eps["eps"], dtype=np.float64), eps_max)
    return {**run.attacks, "min_eps.index": np.asarray(run.min_eps["index"]), "min_eps.eps": eps,
            "min_eps.censored": ~found}


def per_class_attack_metrics(y: np.ndarray, clean_pred: np.ndarray,
                             adv_pred: np.ndarray, adv_conf: np.ndarray,
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
        raise InputError("y, clean_pred, adv_pred and adv_conf must have the same length")
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


def _model_summary(run: ModelRun, payload: dict[str, Any], y: np.ndarray, num_classes: int,
                   cfg: Config) -> dict[str, Any]:
    metrics = run.metrics
    test = metrics["test"]
    out: dict[str, Any] = {
        "train_counts": list(run.train_counts), "epochs_run": metrics["epochs_run"],
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
    cens = np.asarray(payload["min_eps.censored"]).astype(bool)
    km = [km_median(eps[ok & (ys == c)], cens[ok & (ys == c)]) for c in range(num_classes)]
    out["min_eps"] = {
        # Kaplan–Meier median per class: never-fooled images are right-censored at eps_max (+inf: more than
        # half of the class was never fooled up to eps_max)
        "median": [k["median"] for k in km],
        "values": [eps[ok & (ys == c)].round(5).tolist() for c in range(num_classes)],
        "censored_flags": [cens[ok & (ys == c)].astype(int).tolist() for c in range(num_classes)],
        "censored": float(cens[ok].mean()) if ok.any() else float("nan"),
        "eps_max": cfg.min_eps.eps_max}
    return out


def _table52(models: dict[str, dict[str, Any]], classes: list[int], seeds: list[int]) -> dict[str, Any]:
    """Seed 002 Table 5.2 per depleted class, mean ± std over seeds; delta = balanced − depleted accuracy of
    the depleted class (the thesis' sign: a positive delta is a drop). ``ci``: the accuracies' 95% Wilson
    intervals of the counts pooled over seeds × test images (:func:`pooled_accuracy`)."""
    bal = [models[str(s)]["balanced"] for s in seeds]
    rows = []
    for d in classes:
        dep = [models[str(s)][f"deplete{d}"] for s in seeds]
        acc = np.array([m["accuracy"] for m in dep])
        cls_acc = np.array([m["per_class_accuracy"][d] for m in dep], dtype=np.float64)
        bal_cls = np.array([m["per_class_accuracy"][d] for m in bal], dtype=np.float64)
        rows.append({"class": d, "accuracy": nanmean(acc), "accuracy_std": nanstd(acc),
                     "loss": nanmean(np.array([m["loss"] for m in dep])),
                     "loss_std": nanstd(np.array([m["loss"] for m in dep])),
                     "class_accuracy": nanmean(cls_acc), "class_accuracy_std": nanstd(cls_acc),
                     "balanced_class_accuracy": nanmean(bal_cls),
                     "class_accuracy_delta": nanmean(bal_cls - cls_acc),
                     "class_accuracy_delta_std": nanstd(bal_cls - cls_acc),
                     "accuracy_delta": nanmean(acc - np.array([m["accuracy"] for m in bal])),
                     "train_count": dep[0]["train_counts"][d],
                     "ci": {"accuracy": pooled_accuracy(dep), "class_accuracy": pooled_accuracy(dep, d),
                            "balanced_class_accuracy": pooled_accuracy(bal, d),
                            "balanced_accuracy": pooled_accuracy(bal)}})
    b_acc = np.array([m["accuracy"] for m in bal])
    b_loss = np.array([m["loss"] for m in bal])
    per_class = np.array([m["per_class_accuracy"] for m in bal], dtype=np.float64)
    return {"balanced": {"accuracy": nanmean(b_acc), "accuracy_std": nanstd(b_acc),
                         "loss": nanmean(b_loss), "loss_std": nanstd(b_loss),
                         "per_class_accuracy": _colmean(per_class), "ci": {"accuracy": pooled_accuracy(bal)}},
            "rows": rows}


def pooled_accuracy(models: list[dict[str, Any]], cls: int | None = None) -> dict[str, float]:
    """Test accuracy (of class ``cls``, or overall) of the seeds' models from their confusion matrices: the
    correct count over the trials pooled over seeds × test images, with its 95% Wilson interval
    (``stats.proportion_interval``). Every seed sees the same test images, so the estimate is the mean over seeds
    of the accuracies; the interval reflects the test-image sample (it treats the trials as independent, and the
    seeds share the images: the spread over seeds is the table's ± std)."""
    cms = [np.asarray(m["confusion"], dtype=np.int64) for m in models]
    if cls is None:
        k, n = sum(int(np.trace(c)) for c in cms), sum(int(c.sum()) for c in cms)
    else:
        k, n = sum(int(c[cls, cls]) for c in cms), sum(int(c[cls].sum()) for c in cms)
    return proportion_interval(k, n, "wilson")


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
            landing = np.sum([m[attack]["landing"] for m in ms], 0)
            entry[f"{attack}.landing"] = landing.tolist()
            entry[f"{attack}.landing_share.pooled"] = landing_share_intervals(landing)
        # Kaplan–Meier median of the minimal ε per class, the seeds' images pooled (censored at eps_max)
        pooled = [km_median(np.concatenate([m["min_eps"]["values"][c] for m in ms]),
                            np.concatenate([m["min_eps"]["censored_flags"][c] for m in ms]).astype(bool))
                  for c in range(num_classes)]
        entry["min_eps.median"] = [k["median"] for k in pooled]
        entry["min_eps.median.lo"] = [k["lo"] for k in pooled]
        entry["min_eps.median.hi"] = [k["hi"] for k in pooled]
        accs = np.array([m["per_class_accuracy"] for m in ms], dtype=np.float64)
        entry["per_class_accuracy"] = _colmean(accs)
        entry["confusion"] = np.sum([m["confusion"] for m in ms], 0).tolist()
        out[label] = entry
    return out


def landing_share_intervals(landing: np.ndarray) -> list[dict[str, float]]:
    """Per class k, the share of the other classes' successful adversarial examples predicted as k, from a
    landing matrix (rows: true class, columns: adversarial prediction) summed over seeds, with its 95% Wilson
    interval (``stats.proportion_interval``; the examples pooled over seeds)."""
    landing = np.asarray(landing, dtype=np.int64)
    from_others = landing.sum() - landing.sum(1)
    into = landing.sum(0) - np.diag(landing)  # a successful example never lands in its own class
    return [proportion_interval(int(into[k]), int(from_others[k]), "wilson") for k in range(len(landing))]


def _colmean(a: np.ndarray) -> list[float]:
    return [nanmean(a[:, j]) for j in range(a.shape[1])]


def _colstd(a: np.ndarray) -> list[float]:
    return [nanstd(a[:, j]) for j in range(a.shape[1])]


def _comparisons(y: np.ndarray, bal: dict[str, Any], dep: dict[str, Any], d: int, attack: str,
                 descent_targets: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Paired per-image outcomes (balanced, depleted) for each question about depleted class ``d``.

    Except for ``own_accuracy_under_attack`` (all images of ``d``), only images both models classify correctly
    enter, so those comparisons measure robustness, not clean accuracy.
    """
    return {q: (b[m], dd[m]) for q, (b, dd, m) in
            _aligned_comparisons(y, bal, dep, d, attack, descent_targets).items()}


def _aligned_comparisons(y: np.ndarray, bal: dict[str, Any], dep: dict[str, Any], d: int, attack: str,
                         descent_targets: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`_comparisons` before selecting images: per question (balanced outcome, depleted outcome, mask of
    the images that enter), each over the whole attack set, so seeds line up image by image."""
    ok = (np.asarray(bal["clean_pred"]) == y) & (np.asarray(dep["clean_pred"]) == y)
    own, other = ok & (y == d), ok & (y != d)
    b_un, d_un = np.asarray(bal[f"{attack}.untargeted.pred"]), np.asarray(dep[f"{attack}.untargeted.pred"])
    b_to, d_to = np.asarray(bal[f"{attack}.towards{d}.pred"]), np.asarray(dep[f"{attack}.towards{d}.pred"])
    b_de, d_de = np.asarray(bal[f"{attack}.descent.pred"]), np.asarray(dep[f"{attack}.descent.pred"])
    f = np.float64
    mine = y == d
    return {
        "own_accuracy_under_attack": ((b_un == y).astype(f), (d_un == y).astype(f), mine),
        "own_success": ((b_un != y).astype(f), (d_un != y).astype(f), own),
        "others_success": ((b_un != y).astype(f), (d_un != y).astype(f), other),
        "towards_success": ((b_to == d).astype(f), (d_to == d).astype(f), other),
        "landing_in_depleted": ((b_un == d).astype(f), (d_un == d).astype(f), other),
        "descent_success": ((b_de == descent_targets).astype(f), (d_de == descent_targets).astype(f), own),
    }


def _nan_mean(a: np.ndarray, axis: Any) -> np.ndarray:
    """Mean of the finite entries along ``axis`` (NaN, without a warning, where there are none)."""
    finite = np.isfinite(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, a, 0.0).sum(axis=axis) / finite.sum(axis=axis)


def _mean_of_seed_means(*per_seed: np.ndarray, axis: int = -1) -> np.ndarray:
    """A rate row's ``balanced_mean`` / ``depleted_mean``: the mean over seeds of each seed's mean over its
    images (NaN entries = images that do not enter for that seed)."""
    return _nan_mean(np.stack([_nan_mean(s, axis) for s in per_seed]), 0)


def _pooled_mean(*per_seed: np.ndarray, axis: int = -1) -> np.ndarray:
    """A rate row's ``difference``: the mean of the paired differences pooled over seeds × images."""
    return _nan_mean(np.stack(per_seed), (0, axis))


def rate_intervals(aligned: list[tuple[np.ndarray, np.ndarray, np.ndarray]], seed: int = 0) -> dict[str, Any]:
    """95% percentile-bootstrap intervals over the attack images (``stats.bootstrap_interval``; the same images
    resampled for every seed and both models) of a rate row's balanced and depleted rates (means over seeds of
    the per-seed rates) and of its difference (pooled over seeds × images). A rate whose outcomes are all 0 (or
    all 1) gets the Wilson interval of that count over the pooled seeds × images instead, since no resample
    varies. ``aligned``: per seed, (balanced outcome, depleted outcome, mask of the images that enter), over the
    whole attack set."""
    masks = np.array([m for _, _, m in aligned], dtype=bool)
    keep = masks.any(0)
    b = tuple(np.where(m, v, np.nan)[keep] for v, _, m in aligned)
    dd = tuple(np.where(m, v, np.nan)[keep] for _, v, m in aligned)
    diffs = tuple(x - y for x, y in zip(dd, b, strict=True))
    out = {}
    for name, samples, statistic in (("balanced", b, _mean_of_seed_means), ("depleted", dd, _mean_of_seed_means),
                                     ("difference", diffs, _pooled_mean)):
        finite = np.concatenate(samples)[np.isfinite(np.concatenate(samples))] if keep.any() else np.array([])
        if len(finite) and np.ptp(finite) == 0:  # one value everywhere: every resample gives the estimate
            est = float(statistic(*samples))
            out[name] = {"estimate": est, "lo": est, "hi": est, "n": int(keep.sum())}
            if name != "difference" and finite[0] in (0.0, 1.0):  # all 0 or all 1: the bootstrap has no spread,
                wilson = proportion_interval(int(finite.sum()), len(finite))  # the binomial interval does
                out[name].update(lo=wilson["lo"], hi=wilson["hi"])
        else:
            out[name] = {**bootstrap_interval(samples, statistic, paired=True, seed=seed), "n": int(keep.sum())}
    return out


def _min_eps_comparisons(y: np.ndarray, bal: dict[str, Any], dep: dict[str, Any],
                         d: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Per question: (balanced ε, depleted ε, balanced censored, depleted censored) on the images both models
    classify correctly; ε is capped at eps_max, so a mean of it is the restricted mean min(ε, eps_max)."""
    idx = np.asarray(bal["min_eps.index"])
    ys = y[idx]
    ok = ((np.asarray(bal["clean_pred"]) == y) & (np.asarray(dep["clean_pred"]) == y))[idx]
    b, dd = np.asarray(bal["min_eps.eps"], dtype=np.float64), np.asarray(dep["min_eps.eps"], dtype=np.float64)
    bc, dc = np.asarray(bal["min_eps.censored"]).astype(bool), np.asarray(dep["min_eps.censored"]).astype(bool)
    own, other = ok & (ys == d), ok & (ys != d)
    return {"own_min_eps": (b[own], dd[own], bc[own], dc[own]),
            "others_min_eps": (b[other], dd[other], bc[other], dc[other])}


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


#: Test named in every row of the tests table (the row's p-value and its Holm adjustment).
IMAGE_TEST = "paired sign-flip permutation over seeds × images"
CENSORED_TEST = "log-rank (Kaplan–Meier, never-fooled images right-censored at ε_max), seeds' images pooled"
SEED_TEST = "one-sample t over per-seed mean differences"
MARGIN_TEST = "margin-stratified permutation (model labels shuffled within seed × clean-margin stratum)"
#: Clean-margin strata (quantiles of the clean log-odds of the true class) for the margin-conditional test.
MARGIN_STRATA = 4


def paired_tests(y: np.ndarray, payloads: dict[int, dict[str, dict[str, Any]]],
                 descent_targets: dict[int, np.ndarray], classes: list[int], cfg: Config) -> list[dict[str, Any]]:
    """One row per (depleted class, attack, question), each naming its test, its baseline (the balanced model
    of the same seed on the same images) and its interval:

    - image level (``p_value``, ``p_holm``, ``significant``): the pooled paired difference over seeds × images
      with the sign-flip permutation test — for the minimal-ε questions the log-rank test instead, with the
      Kaplan–Meier medians (``km_balanced`` / ``km_depleted``, intervals included), since images never fooled
      up to ε_max are censored, not exact;
    - seed level (``seed_p``, ``seed_p_holm``, ``seed_lo``/``seed_hi``, ``seed_consistent``): the per-seed mean
      differences (for ε: restricted means of min(ε, ε_max)) tested across seeds, so a verdict speaks for
      depletion over training randomness, not for these trained models;
    - ``direction``: "up"/"down" only when both levels are significant after Holm and every seed agrees in
      sign, else "none";
    - for the success questions, ``margin``: the depleted − balanced success difference conditional on the
      clean margin (each model's own correctly classified images, stratified), see :func:`margin_adjusted`.
    """
    rows: list[dict[str, Any]] = []
    for d in classes:
        for attack in (*ATTACKS, "min_eps"):
            per_q: dict[str, list[tuple[np.ndarray, ...]]] = {}
            aligned: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
            for seed, models in payloads.items():
                bal, dep = models["balanced"], models[f"deplete{d}"]
                if attack == "min_eps":
                    comps = _min_eps_comparisons(y, bal, dep, d)
                else:
                    full = _aligned_comparisons(y, bal, dep, d, attack, descent_targets[seed])
                    comps = {q: (b[m], v[m]) for q, (b, v, m) in full.items()}
                    for q, triple in full.items():
                        aligned.setdefault(q, []).append(triple)
                for q, pair in comps.items():
                    per_q.setdefault(q, []).append(pair)
            for q, pairs in per_q.items():
                b_means = np.array([p[0].mean() if len(p[0]) else np.nan for p in pairs])
                d_means = np.array([p[1].mean() if len(p[1]) else np.nan for p in pairs])
                diffs = np.concatenate([p[1] - p[0] for p in pairs])
                test = paired_permutation_test(diffs, cfg.permutations, seed=cfg.seed + 1000 * d + len(rows))
                seed_diffs = d_means - b_means
                st = seed_level_test(seed_diffs)
                row = {
                    "class": d, "attack": attack, "question": q, "baseline": "balanced model, same seed, same images",
                    "test": IMAGE_TEST, "seed_test": SEED_TEST,
                    "balanced_mean": nanmean(b_means), "balanced_std": nanstd(b_means),
                    "depleted_mean": nanmean(d_means), "depleted_std": nanstd(d_means),
                    "difference": test["estimate"], "difference_std_seeds": nanstd(seed_diffs),
                    "seed_differences": seed_diffs.tolist(),
                    "seeds_up": st["up"], "seeds_down": st["down"], "seed_consistent": st["consistent"],
                    "seed_p": st["p"], "seed_p_sign": st["p_sign"], "seed_lo": st["lo"], "seed_hi": st["hi"],
                    "n_pairs": test["n"], "n_discordant": test["n_nonzero"], "p_value": test["p"],
                    "exact": test["exact"]}
                if attack == "min_eps":
                    b_all, d_all = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
                    bc, dc = np.concatenate([p[2] for p in pairs]), np.concatenate([p[3] for p in pairs])
                    lr = logrank_test(d_all, dc, b_all, bc)
                    if len(b_all) and not lr["events"]:  # never fooled by either model: identical curves
                        lr["p"] = 1.0
                    kb, kd = km_median(b_all, bc), km_median(d_all, dc)
                    row.update(test=CENSORED_TEST, p_value=lr["p"], p_permutation_restricted=test["p"],
                               logrank_z=lr["statistic"], km_balanced=kb, km_depleted=kd,
                               censored_balanced=float(bc.mean()) if len(bc) else float("nan"),
                               censored_depleted=float(dc.mean()) if len(dc) else float("nan"),
                               km_difference=kd["median"] - kb["median"]
                               if np.isfinite(kd["median"]) and np.isfinite(kb["median"]) else float("nan"))
                if q in aligned:  # a rate: bootstrap intervals over the attack images
                    row["ci"] = rate_intervals(aligned[q], seed=cfg.seed + 1000 * d + len(rows))
                if q in ("own_success", "others_success"):
                    row["margin"] = margin_adjusted(y, payloads, d, attack, own=q == "own_success",
                                                    resamples=min(cfg.permutations, 2000),
                                                    seed=cfg.seed + 7 + 1000 * d + len(rows))
                rows.append(row)
    for key, out in (("p_value", "p_holm"), ("seed_p", "seed_p_holm")):
        for r, p in zip(rows, holm([r[key] for r in rows]), strict=True):
            r[out] = float(p)
    margin_rows = [r for r in rows if "margin" in r]
    for r, p in zip(margin_rows, holm([r["margin"]["p"] for r in margin_rows]), strict=True):
        r["margin"]["p_holm"] = float(p)
        r["margin"]["significant"] = bool(p < cfg.alpha)
    for r in rows:
        r["significant"] = bool(r["p_holm"] < cfg.alpha)
        r["seed_significant"] = bool(r["seed_p_holm"] < cfg.alpha)
        sign = _f(r["seed_lo"]) > 0 or (r["seeds_up"] > 0 and r["seeds_down"] == 0)
        r["direction"] = ("up" if sign else "down") if (r["significant"] and r["seed_significant"]
                                                        and r["seed_consistent"]) else "none"
    return rows


def margin_adjusted(y: np.ndarray, payloads: dict[int, dict[str, dict[str, Any]]], d: int, attack: str, *,
                    own: bool, resamples: int, seed: int) -> dict[str, Any]:
    """Untargeted success, depleted − balanced, *conditional on the clean margin*.

    The paired tests compare images both models classify correctly; a depleted model misclassifies more of its
    class, so that subset is selected and has smaller margins. Here each model keeps its *own* correctly
    classified images (of class ``d`` when ``own``, else of the other classes), which are put into
    ``MARGIN_STRATA`` strata by the clean log-odds of the true class (``clean_conf``, a monotone stand-in for
    the logit margin; quantiles pooled over models and seeds). The estimate is the Mantel–Haenszel-weighted
    (w = n_b·n_d/(n_b + n_d)) mean over seed × stratum cells of the success-rate difference; its two-sided
    p-value comes from shuffling the model labels within the cells (``resamples`` times, seeded), and the
    per-seed estimates give a Student-t interval over seeds. Also returned: the clean log-odds' median per model
    (the selection the stratification removes)."""
    cells: list[tuple[np.ndarray, int]] = []  # (successes with the depleted model's first, n depleted)
    margins: dict[str, list[np.ndarray]] = {"balanced": [], "depleted": []}
    per_seed_cells: list[list[tuple[np.ndarray, int]]] = []
    obs = []
    for _seed, models in payloads.items():
        per = {}
        for label, key in (("balanced", "balanced"), ("depleted", f"deplete{d}")):
            m = models[key]
            clean = np.asarray(m["clean_pred"])
            keep = (clean == y) & ((y == d) if own else (y != d))
            conf = np.clip(np.asarray(m["clean_conf"], dtype=np.float64)[keep], 1e-12, 1 - 1e-12)
            margin = np.log(conf) - np.log1p(-conf)
            success = (np.asarray(m[f"{attack}.untargeted.pred"]) != y)[keep].astype(np.float64)
            per[label] = (margin, success)
            margins[label].append(margin)
        obs.append(per)
    everything = np.concatenate(margins["balanced"] + margins["depleted"])
    out: dict[str, Any] = {"test": MARGIN_TEST, "strata": MARGIN_STRATA, "estimate": float("nan"),
                           "p": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(len(everything)),
                           "margin_balanced": _median(np.concatenate(margins["balanced"])),
                           "margin_depleted": _median(np.concatenate(margins["depleted"]))}
    if not len(everything):
        return out
    edges = np.unique(np.quantile(everything, np.linspace(0, 1, MARGIN_STRATA + 1)[1:-1]))
    for per in obs:
        seed_cells = []
        (mb, sb), (md, sd) = per["balanced"], per["depleted"]
        kb, kd = np.searchsorted(edges, mb, side="right"), np.searchsorted(edges, md, side="right")
        for k in range(len(edges) + 1):
            bk, dk = sb[kb == k], sd[kd == k]
            if len(bk) and len(dk):
                seed_cells.append((np.concatenate([dk, bk]), len(dk)))
        per_seed_cells.append(seed_cells)
        cells += seed_cells
    if not cells:
        return out
    out["estimate"] = _mh_difference(cells)
    seed_estimates = [_mh_difference(c) if c else float("nan") for c in per_seed_cells]
    st = seed_level_test(np.array(seed_estimates))
    out.update(lo=st["lo"], hi=st["hi"], seed_estimates=seed_estimates)
    rng = np.random.default_rng(seed)
    weights = np.array([n_d * (len(v) - n_d) / len(v) for v, n_d in cells])
    null = np.zeros(resamples)
    for (v, n_d), w in zip(cells, weights, strict=True):
        n_b = len(v) - n_d
        picks = np.argsort(rng.random((resamples, len(v))), axis=1)[:, :n_d]
        sum_d = v[picks].sum(1)
        null += w * (sum_d / n_d - (v.sum() - sum_d) / n_b)
    null /= weights.sum()
    observed = abs(out["estimate"])
    out["p"] = float((1 + np.sum(np.abs(null) >= observed - 1e-12)) / (1 + resamples))
    return out


def _mh_difference(cells: list[tuple[np.ndarray, int]]) -> float:
    """Mantel–Haenszel-weighted mean of the per-cell differences (first ``n_d`` values − the rest)."""
    num = den = 0.0
    for v, n_d in cells:
        n_b = len(v) - n_d
        w = n_d * n_b / len(v)
        num += w * (v[:n_d].mean() - v[n_d:].mean())
        den += w
    return float(num / den)


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if len(a) else float("nan")


def conclusions(tests: list[dict[str, Any]], class_names: list[str], accuracy_rows: list[dict[str, Any]],
                alpha: float) -> list[str]:
    """Sentences assembled from the measured differences and the test outcomes (only the frame is fixed)."""
    out: list[str] = []
    sentence = accuracy_conclusion(accuracy_rows, class_names)
    if sentence:
        out.append(sentence)
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
        test = "log-rank" if is_eps else "sign-flip permutation"
        if not up and not down:
            text += f"no class changed significantly at the image level ({test}, Holm, α = {alpha:g})"
        else:
            text += (f"image level ({test}, Holm, α = {alpha:g}): significant increase for "
                     f"{_name_list(up, class_names)}, significant decrease for {_name_list(down, class_names)}")
        stated = [r for r in rows if r.get("direction", "none") != "none"]
        text += (f"; a direction (seed level significant too, all seeds agreeing) for "
                 f"{_name_list(stated, class_names)}.")
        out.append(text)
    return out


def _pct_interval(iv: dict[str, Any] | None, value: Any) -> str:
    """``97.3% [95% CI 96.1%, 98.2%]`` (just the value without a stored interval)."""
    if not iv or not (np.isfinite(_f(iv.get("lo"))) and np.isfinite(_f(iv.get("hi")))):
        return f"{_f(value):.1%}"
    return f"{_f(iv['estimate']):.1%} [95% CI {_f(iv['lo']):.1%}, {_f(iv['hi']):.1%}]"


def _side(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """"lower" / "higher" when the intervals of ``a`` and ``b`` do not overlap, else "overlap"."""
    if not a or not b or intervals_overlap(a, b):
        return "overlap"
    return "lower" if _f(a["estimate"]) < _f(b["estimate"]) else "higher"


def accuracy_conclusion(rows: list[dict[str, Any]], class_names: list[str]) -> str | None:
    """The Table 5.2 sentence: how depletion changed the depleted class's own test accuracy and the overall
    accuracy, with a direction only for the classes whose 95% Wilson intervals (``row["ci"]``, counts pooled
    over seeds × test images) of the depleted and balanced model do not overlap."""
    drops = np.array([_f(r["class_accuracy_delta"]) for r in rows])
    if not np.isfinite(drops).any():
        return None
    ci = [r.get("ci") or {} for r in rows]
    own = [_side(c.get("class_accuracy"), c.get("balanced_class_accuracy")) for c in ci]
    overall = [_side(c.get("accuracy"), c.get("balanced_accuracy")) for c in ci]
    lower, higher, n = own.count("lower"), own.count("higher"), len(rows)
    worst_i = int(np.nanargmax(drops))
    worst, wci = rows[worst_i], ci[worst_i]
    if lower and not higher:
        head = f"Depletion lowered the depleted class's own test accuracy for {lower} of {n} classes"
    elif higher and not lower:
        head = f"Depletion raised the depleted class's own test accuracy for {higher} of {n} classes"
    elif lower:
        head = f"Depletion changed the depleted class's own test accuracy: lower for {lower}, higher for {higher} " \
               f"of {n} classes"
    else:
        head = f"Depletion did not measurably change the depleted class's own test accuracy in any of {n} classes"
    over = np.array([_f(r["accuracy_delta"]) for r in rows])
    moved = [f"{w} for {overall.count(w)}" for w in ("lower", "higher") if overall.count(w)]
    return (f"{head} (95% Wilson intervals of the balanced and depleted model apart; counts pooled over seeds × "
            f"test images): balanced − depleted {np.nanmean(drops):+.1%} on average (range {np.nanmin(drops):+.1%} "
            f"to {np.nanmax(drops):+.1%}; largest for '{class_names[worst['class']]}', "
            f"{_pct_interval(wci.get('balanced_class_accuracy'), worst['balanced_class_accuracy'])} → "
            f"{_pct_interval(wci.get('class_accuracy'), worst['class_accuracy'])}); overall accuracy changed by "
            f"{np.nanmean(over):+.1%} on average, "
            + (f"outside the intervals {' and '.join(moved)} of {n} models." if moved else
               "within the intervals for every model."))


#: The headline's questions: (key, what is measured, unit scale, digits, word when up, word when down).
HEADLINE = [
    (("bim", "own_success"), "BIM untargeted success on a depleted class's own correctly classified images",
     100.0, 1, "easier to fool", "harder to fool"),
    (("min_eps", "own_min_eps"), "restricted mean minimal ε, min(ε, ε_max), of its images", 1.0, 4,
     "larger minimal ε (harder)", "smaller minimal ε (easier)"),
    (("bim", "towards_success"), "BIM success towards the depleted class on the other classes' images", 100.0, 1,
     "pulled towards the depleted class", "pushed away from it"),
    (("bim", "landing_in_depleted"), "share of the other classes' untargeted BIM examples landing in it", 100.0,
     1, "pulled towards the depleted class", "pushed away from it"),
]


def headline_tests(by_key: dict[tuple[str, str], list[dict[str, Any]]], alpha: float) -> list[dict[str, Any]]:
    """The headline questions tested at the seed level: per seed, the depleted − balanced difference averaged
    over the depleted classes; a one-sample t-test over seeds (Holm over the headline questions) with its
    interval. ``direction`` is "up"/"down" only when that test is significant *and* every seed moved the same
    way; the image-level counts (classes significant up/down, Holm over all rows) stand beside it."""
    out = []
    for key, what, scale, digits, up_word, down_word in HEADLINE:
        rows = by_key.get(key, [])
        if not rows:
            continue
        per_seed = np.array([r["seed_differences"] for r in rows], dtype=np.float64)
        finite = np.isfinite(per_seed)
        seed_means = np.where(finite.any(0), np.nansum(per_seed, 0) / np.maximum(finite.sum(0), 1), np.nan)
        st = seed_level_test(seed_means)
        out.append({"attack": key[0], "question": key[1], "what": what, "scale": scale, "digits": digits,
                    "words": (up_word, down_word), "seed_means": seed_means.tolist(), **st,
                    "test": SEED_TEST + ", Holm over the headline questions",
                    "baseline": "balanced model, same seed, same images",
                    "image_up": sum(1 for r in rows if r["significant"] and _f(r["difference"]) > 0),
                    "image_down": sum(1 for r in rows if r["significant"] and _f(r["difference"]) < 0),
                    "n_classes": len(rows)})
    for h, p in zip(out, holm([h["p"] for h in out]), strict=True):
        h["p_holm"] = float(p)
        h["direction"] = ("up" if h["estimate"] > 0 else "down") if p < alpha and h["consistent"] else "none"
    return out


def _headline(by_key: dict[tuple[str, str], list[dict[str, Any]]], class_names: list[str],
              alpha: float) -> list[str]:
    """The short answer, a direction only where the seed-level test is significant and the seeds agree."""
    heads = {(h["attack"], h["question"]): h for h in headline_tests(by_key, alpha)}

    def sentence(h: dict[str, Any]) -> str:
        sc, dg = h["scale"], h["digits"]
        unit = " points" if sc == 100 else ""
        seeds = ", ".join("–" if not np.isfinite(v) else f"{v * sc:+.{dg}f}" for v in h["seed_means"])
        if h["direction"] != "none":
            verdict = f"direction established: {h['words'][0] if h['direction'] == 'up' else h['words'][1]}"
        elif h["n"] < 2:
            verdict = ("no direction stated: fewer than two seeds with a comparison cannot speak for depletion "
                       "over training randomness")
        elif not h["consistent"]:
            verdict = "no direction stated: the seeds disagree in sign"
        else:
            verdict = f"no direction stated: not significant at the seed level (Holm, α = {alpha:g})"
        if not np.isfinite(_f(h["estimate"])):
            return f"{h['what']}: no images that both models classify correctly in any seed, so no comparison."
        ci = "–" if not np.isfinite(_f(h["lo"])) else f"[{h['lo'] * sc:+.{dg}f}, {h['hi'] * sc:+.{dg}f}]"
        p = "–" if not np.isfinite(_f(h["p_holm"])) else f"{h['p_holm']:.3g}"
        return (f"{h['what']}: depleted − balanced {h['estimate'] * sc:+.{dg}f}{unit} (mean over "
                f"{h['n_classes']} depleted class(es) and {h['n']} seed(s); per seed {seeds}; {h['test']}: "
                f"Holm p = {p}, 95% CI {ci}) — {verdict}. Image level (pooled over seeds, per class, Holm over "
                f"all rows): significant increase for {h['image_up']}, decrease for {h['image_down']} of "
                f"{h['n_classes']}.")

    out = []
    own = heads.get(("bim", "own_success"))
    if own is not None:
        text = "Answer: " + sentence(own)
        eps = heads.get(("min_eps", "own_min_eps"))
        if eps is not None:
            text += " " + sentence(eps)[0].upper() + sentence(eps)[1:]
        margin = [r["margin"] for r in by_key.get(("bim", "own_success"), []) if "margin" in r]
        est = np.array([_f(m["estimate"]) for m in margin])
        if np.isfinite(est).any():
            up = sum(1 for m in margin if m.get("significant") and m["estimate"] > 0)
            down = sum(1 for m in margin if m.get("significant") and m["estimate"] < 0)
            text += (f" Conditional on the clean margin (each model's own correct images, {MARGIN_STRATA} "
                     f"margin strata): {np.nanmean(est) * 100:+.1f} points on average; significantly more "
                     f"often fooled for {up}, less often for {down} of {len(margin)} classes (Holm).")
        out.append(text)
    towards, landing = heads.get(("bim", "towards_success")), heads.get(("bim", "landing_in_depleted"))
    if towards is not None and landing is not None:
        out.append("Adversarial examples of the other classes — " + sentence(towards) + " " + sentence(landing))
    return out


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _name_list(rows: list[dict[str, Any]], class_names: list[str]) -> str:
    if not rows:
        return "none"
    return f"{len(rows)} ({', '.join(class_names[r['class']] for r in rows)})"


def summary(results: dict[str, Any]) -> list[str]:
    t = results["table52"]
    names = results["classes"]
    b = t["balanced"]
    lines = [f"balanced test accuracy {b['accuracy']:.4f} ± {_fmt_std(b['accuracy_std'])}"]
    for r in t["rows"]:
        lines.append(f"deplete {names[r['class']]:<12} accuracy {r['accuracy']:.4f}  class accuracy "
                     f"{r['class_accuracy']:.3f} (balanced − depleted {r['class_accuracy_delta']:+.3f})")
    n_sig = sum(1 for r in results["tests"] if r["significant"])
    n_dir = sum(1 for r in results["tests"] if r.get("direction", "none") != "none")
    lines.append(f"{n_sig} of {len(results['tests'])} paired comparisons significant at the image level (Holm, "
                 f"α = {results['config']['alpha']:g}), {n_dir} with a direction (seed level too); see report.md")
    return lines


def _fmt_std(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
