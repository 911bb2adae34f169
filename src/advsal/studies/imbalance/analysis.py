"""Analysis of the class-imbalance study: stored stage payloads → per-model summaries, seed 002 Table 5.2,
vulnerability per class, the paired tests with Holm's correction, and the written conclusion (plain data)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...data import ImageSet
from ..stats import holm, nanmean, nanstd, paired_permutation_test
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
        rows.append({"class": d, "accuracy": nanmean(acc), "accuracy_std": nanstd(acc),
                     "loss": nanmean(np.array([m["loss"] for m in dep])),
                     "loss_std": nanstd(np.array([m["loss"] for m in dep])),
                     "class_accuracy": nanmean(cls_acc), "class_accuracy_std": nanstd(cls_acc),
                     "balanced_class_accuracy": nanmean(bal_cls),
                     "class_accuracy_delta": nanmean(bal_cls - cls_acc),
                     "class_accuracy_delta_std": nanstd(bal_cls - cls_acc),
                     "accuracy_delta": nanmean(acc - np.array([m["accuracy"] for m in bal])),
                     "train_count": dep[0]["train_counts"][d]})
    b_acc = np.array([m["accuracy"] for m in bal])
    b_loss = np.array([m["loss"] for m in bal])
    per_class = np.array([m["per_class_accuracy"] for m in bal], dtype=np.float64)
    return {"balanced": {"accuracy": nanmean(b_acc), "accuracy_std": nanstd(b_acc),
                         "loss": nanmean(b_loss), "loss_std": nanstd(b_loss),
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
    return [nanstd(a[:, j]) for j in range(a.shape[1])]


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


def paired_tests(y: np.ndarray, payloads: dict[int, dict[str, dict[str, Any]]],
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
                    "balanced_mean": nanmean(b_means), "balanced_std": nanstd(b_means),
                    "depleted_mean": nanmean(d_means), "depleted_std": nanstd(d_means),
                    "difference": test["estimate"], "difference_std_seeds": nanstd(seed_diffs),
                    "seeds_up": int(np.sum(seed_diffs > 0)), "seeds_down": int(np.sum(seed_diffs < 0)),
                    "n_pairs": test["n"], "n_discordant": test["n_nonzero"], "p_value": test["p"],
                    "exact": test["exact"]})
    adjusted = holm([r["p_value"] for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(p)
        r["significant"] = bool(p < cfg.alpha)
    return rows


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
