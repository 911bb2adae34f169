"""From the detection study's stored stages to its results: Table II rows, baselines, ROC curves, the matrices,
the second-round rows and the layer table (plain data for results.json and the report)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...attacks.specs import display_name
from ...detection import metrics as dm
from ...store import Stage
from .. import stats
from .registry import MAIN_DETECTOR, PAPER_NUMBERS, detector_display, paper_number
from .steps import Part, TrainedDetector


def attack_summary(adv: Stage) -> dict[str, Any]:
    y = adv["y"]
    correct = adv["pred_clean"] == y
    succ = adv["success"].bool()
    return {"n": len(y), "success_rate": float(succ.float().mean()),
            "success_rate_on_correct": float(succ[correct].float().mean()) if correct.any() else float("nan"),
            "accuracy_under_attack": float((adv["pred"] == y).float().mean()),
            "mean_linf": float(adv["linf"].mean()), "mean_l2": float(adv["l2"].mean()),
            "mean_l0": float(adv["l0"].mean()), "seconds": float(adv["seconds"]),
            "images_per_second": float(adv["images_per_second"])}


def table_row(scores_clean: np.ndarray, scores_adv: np.ndarray, threshold: float, f_clean: float, f_adv: float,
              restrict_clean: np.ndarray, restrict_adv: np.ndarray, fpr: float) -> dict[str, Any]:
    """Seed 001 Table II quantities plus AUROC / TPR at ``fpr``; 'restricted' = successful adversarial examples
    of correctly classified images vs those same clean images."""
    row = {"f_clean": f_clean, "f_adv": f_adv, **detection_numbers(scores_clean, scores_adv, threshold, fpr),
           "n_clean": len(scores_clean), "n_adv": len(scores_adv),
           "ci": rate_intervals(scores_clean, scores_adv, threshold)}
    rc, ra = scores_clean[restrict_clean], scores_adv[restrict_adv]
    if len(rc) and len(ra):
        r_rates = dm.detection_rates(rc, ra, threshold)
        rl = np.r_[np.zeros(len(rc)), np.ones(len(ra))]
        row["restricted"] = {"d_clean": r_rates.clean_as_clean, "d_adv": r_rates.adv_as_adv,
                             "auroc": dm.auroc(np.r_[rc, ra], rl), "tpr_at_fpr": dm.tpr_at_fpr(np.r_[rc, ra], rl, fpr),
                             "n_clean": len(rc), "n_adv": len(ra)}
    return row


def detection_numbers(scores_clean: np.ndarray, scores_adv: np.ndarray, threshold: float,
                      fpr: float) -> dict[str, float]:
    """Table II's detection quantities of one detector: D(x_test), D(x_adv), accuracy, AUROC, TPR at ``fpr``."""
    rates = dm.detection_rates(scores_clean, scores_adv, threshold)
    labels = np.r_[np.zeros(len(scores_clean)), np.ones(len(scores_adv))]
    scores = np.r_[scores_clean, scores_adv]
    return {"d_clean": rates.clean_as_clean, "d_adv": rates.adv_as_adv, "accuracy": rates.accuracy,
            "auroc": dm.auroc(scores, labels), "tpr_at_fpr": dm.tpr_at_fpr(scores, labels, fpr)}


def rate_intervals(scores_clean: np.ndarray, scores_adv: np.ndarray, threshold: float) -> dict[str, Any]:
    """95% percentile-bootstrap intervals over test images of D(x_test), D(x_adv) and the AUROC:
    ``{name: {"estimate", "lo", "hi", "n"}}`` (seeded, so a re-run gives the same bounds)."""
    clean, adv = np.asarray(scores_clean, dtype=float), np.asarray(scores_adv, dtype=float)
    return {"d_clean": stats.rate_interval(clean <= threshold), "d_adv": stats.rate_interval(adv > threshold),
            "auroc": stats.auroc_interval(clean, adv)}


def detector_row(trained: TrainedDetector, test: Part, adv_test: Stage, fpr: float) -> dict[str, Any]:
    correct = (adv_test["pred_clean"] == test.y).numpy()
    f_clean = float(correct.mean())
    f_adv = float((adv_test["pred"] == test.y).float().mean())
    restrict_adv = correct & adv_test["success"].numpy().astype(bool)
    st = trained.stage
    return table_row(st["scores_clean"].numpy(), st["scores_adv"].numpy(), st["threshold"], f_clean, f_adv,
                     correct, restrict_adv, fpr)


def roc_curve(trained: TrainedDetector, points: int = 200) -> dict[str, Any]:
    """ROC curve (at most ``points`` points) and AUROC from a detector stage's stored test scores."""
    clean, adv = trained.stage["scores_clean"].numpy(), trained.stage["scores_adv"].numpy()
    labels = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    fpr, tpr, _ = dm.roc_curve(np.r_[clean, adv], labels)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), points)).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "auroc": dm.auroc(np.r_[clean, adv], labels)}


def second_round_intervals(st: Stage) -> dict[str, Any]:
    """95% bootstrap intervals over the attacked images of a second-round row's rates (F fooled, D says clean,
    both), from the stored rates and image count (each rate is a share of ``n`` 0/1 outcomes)."""
    n = int(st["n"])
    out = {}
    for key in ("f_fooled", "d_says_clean", "both"):
        hits = int(round(float(st[key]) * n))
        out[key] = stats.rate_interval(np.r_[np.ones(hits), np.zeros(n - hits)])
    return out


def results(cfg: Any, test: Part, eps: dict[str, Stage], adv_train: dict[str, Stage], adv_test: dict[str, Stage],
            detectors: dict[str, TrainedDetector], baselines: dict[str, dict[str, TrainedDetector]], cross: Stage,
            eps_matrices: dict[str, Stage], second: list[Stage], layers: Stage) -> dict[str, Any]:
    """The study's results (everything but the classifier, data and provenance, which the engine adds)."""
    attacks = {}
    for a in adv_test:
        attacks[a] = {"params": {**cfg.attacks[a], **({"eps": eps[a]["eps"]} if a in eps else {})},
                      "train": attack_summary(adv_train[a]), "test": attack_summary(adv_test[a])}
    g = cfg.generalisation
    table2 = {a: detector_row(d, test, adv_test[a], cfg.fpr) for a, d in detectors.items()}
    baseline_rows = {kind: {a: detector_row(d, test, adv_test[a], cfg.fpr) for a, d in per.items()}
                     for kind, per in baselines.items()}
    return {
        "names": {"attacks": {a: display_name(a) for a in adv_test},
                  "detectors": {k: detector_display(k) for k in [MAIN_DETECTOR, *baselines]}},
        "epsilons": {a: {k: st[k] for k in ("eps", "accuracy", "probes")} for a, st in eps.items()},
        "attacks": attacks,
        "table2": table2,
        "baselines": baseline_rows,
        "standing": standing(table2, baseline_rows),
        "roc": {a: roc_curve(d) for a, d in detectors.items()},
        "cross_attack": {"attacks": list(detectors), "matrix": cross["matrix"]},
        "cross_attack_baselines": {kind: {"trained_on": list(per), "tested_on": list(adv_test),
                                          "matrix": cross["baselines"][kind]} for kind, per in baselines.items()},
        "paper_baselines": {kind: {**PAPER_NUMBERS[kind], "cells": {a: paper_number(kind, a) for a in per}}
                            for kind, per in baselines.items() if kind in PAPER_NUMBERS},
        "generalisation_eps": {a: {"eps_factors": list(g.eps_factors),
                                   "eps": [float(eps[a]["eps"]) * f for f in g.eps_factors],
                                   "matrix": m["matrix"]} for a, m in eps_matrices.items()},
        "second_round": {"eps": float(eps[cfg.second_round.attack]["eps"]) * cfg.second_round.eps_factor,
                         "attack_detector": cfg.second_round.attack,
                         "rows": [{**{k: st[k] for k in ("attack", "f_fooled", "d_says_clean", "both", "mean_linf",
                                                         "mean_l2", "n")}, "ci": second_round_intervals(st)}
                                  for st in second]},
        "layers": {"layers": layers["layers"], "by_attack": layers["by_attack"]},
    }


#: AUROCs closer than this count as a tie in :func:`standing` (the AUROC's standard error on a few hundred clean
#: and adversarial test images is about 0.01 near 0.95).
TIE_MARGIN = 0.01


def standing(table2: dict[str, dict[str, Any]], baselines: dict[str, dict[str, dict[str, Any]]],
             margin: float = TIE_MARGIN) -> dict[str, dict[str, Any]]:
    """Where the saliency detector stands per attack among the baselines scored on it: its AUROC and the
    baselines it beats, ties (|ΔAUROC| < ``margin``) and trails, each as [name, AUROC], best first."""
    out: dict[str, dict[str, Any]] = {}
    for attack, row in table2.items():
        others = sorted(((kind, per[attack]["auroc"]) for kind, per in baselines.items() if attack in per),
                        key=lambda kv: -kv[1])
        if not others:
            continue
        main = row["auroc"]
        out[attack] = {"auroc": main, "margin": margin,
                       "beats": [[k, v] for k, v in others if main - v >= margin],
                       "ties": [[k, v] for k, v in others if abs(main - v) < margin],
                       "trails": [[k, v] for k, v in others if v - main >= margin]}
    return out


# ------------------------------------------------------------------------------------------------ option seeds
#: The quantities repeated over detector seeds (all bounded in [0, 1]).
SEED_KEYS = ("d_clean", "d_adv", "accuracy", "auroc", "tpr_at_fpr")


def over_seeds(per_seed: list[dict[str, float]], seeds: list[int]) -> dict[str, Any]:
    """Mean and 95% Student-t interval over seeds (:func:`advsal.studies.stats.seeds_interval`) of each of
    :data:`SEED_KEYS` from one row per seed: ``{"seeds", key: {"estimate", "lo", "hi", "n", "values"}}``. The
    quantities are shares or AUROCs, so the bounds are clipped to [0, 1]."""
    out: dict[str, Any] = {"seeds": list(seeds)}
    for key in SEED_KEYS:
        values = [float(row[key]) for row in per_seed]
        iv = stats.seeds_interval(values)
        out[key] = {**iv, "lo": float(np.clip(iv["lo"], 0, 1)), "hi": float(np.clip(iv["hi"], 0, 1)),
                    "values": values}
    return out


def seed_numbers(trained: TrainedDetector, fpr: float) -> dict[str, float]:
    st = trained.stage
    return detection_numbers(st["scores_clean"].numpy(), st["scores_adv"].numpy(), st["threshold"], fpr)


def add_seed_intervals(out: dict[str, Any], cfg: Any, seeds: list[int],
                       repeats: dict[int, dict[str, dict[str, TrainedDetector]]],
                       first: dict[str, dict[str, TrainedDetector]]) -> None:
    """Option ``seeds``: ``out["seeds"]`` (the detector seeds, and per detector kind the attacks repeated over
    them) and, with more than one seed, ``over_seeds`` (:func:`over_seeds`) in every Table II and baseline row
    of a seeded detector. ``first``: the first seed's detectors ``{kind: {attack: detector}}``; ``repeats``: the
    further seeds' (``steps.repeat_detectors``). The bootstrap intervals (``ci``) stay the first seed's."""
    repeated = next(iter(repeats.values()), {}) if repeats else {}
    out["seeds"] = {"detector_seeds": list(seeds), "repeated": {k: list(per) for k, per in repeated.items()},
                    "fixed": "F, the image subsets and the adversarial sets (attacks and their random draws)"}
    for kind, per in repeated.items():
        rows = out["table2"] if kind == MAIN_DETECTOR else out["baselines"][kind]
        for attack in per:
            numbers = [seed_numbers(first[kind][attack], cfg.fpr),
                       *(seed_numbers(repeats[s][kind][attack], cfg.fpr) for s in seeds[1:])]
            rows[attack]["over_seeds"] = over_seeds(numbers, seeds)
