"""Stored stage payloads → the study's results: Table 1 rows (APE_D terms and localisation per method and
setting), the contrast rows, the paired comparisons and their verdicts beside seed 003's, and the figure
examples. Plain data; the statistics come from :mod:`advsal.studies.stats`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...explanation import localization_scores
from ...store import Stage
from ..stats import bootstrap_interval, finite_pairs, holm, mean_ci, nanmean, paired_test, proportion_interval
from .config import Config
from .protocol import PAPER_TABLE1, meaningful_rows, regularized_rows, threshold_grid
from .steps import Explained

CONTRAST_MAPS = (("gradient", "gradient"), ("gradcam", "Grad-CAM"))
PER_IMAGE_KEYS = ("ape", "ape_s", "cc_hit_rate", "cc_hit_all", "classification", "area")
SATURATED = 1e-4  # clean 1 − p at or below this: Eq. 13's probability term has (almost) no gradient


def tabulate(cfg: Config, chosen: Explained, ours: dict[str, Stage], scans: dict[str, Stage],
             masks: dict[str, Stage], maps: Stage | None, contrast: dict[str, Stage]) -> dict[str, Any]:
    """The results of the study (everything but the header and timings the engine adds)."""
    gt, conn = chosen.gt, cfg.connectivity
    clean = chosen.stage["probability"].double().numpy()
    per_image: dict[str, dict[str, np.ndarray]] = {}
    table: list[dict[str, Any]] = []
    for row in meaningful_rows(cfg):
        scan, mp = scans[row["id"]], masks[row["id"]]
        per_image[row["id"]] = per_image_scores(scan, scan["mask"], scan["saliency"], gt, conn, clean)
        table.append({**row, **summarize(per_image[row["id"]]), "seconds": float(mp["seconds"] + scan["seconds"]),
                      "threshold": float(scan["threshold"]), "library_tv_coeff": float(mp["library_tv_coeff"])})
    for row in regularized_rows(cfg):  # Table 1 order: the MP rows, then ours
        pay = ours[row["id"]]
        per_image[row["id"]] = per_image_scores(pay, pay["mask"], pay["saliency"], gt, conn, clean)
        phase1 = summarize(per_image_scores(pay, pay["mask"], pay["saliency"], gt, conn, clean, "phase1_"))
        steps_run = float(pay["steps_run"].double().mean()) if "steps_run" in pay else math.nan
        table.append({**row, **summarize(per_image[row["id"]]), "seconds": float(pay["seconds"]), "phase1": phase1,
                      "steps_run": steps_run})

    contrast_rows: list[dict[str, Any]] = []
    for row in (r for r in regularized_rows(cfg) if r["id"] in contrast):
        pay = contrast[row["id"]]
        for name, label in CONTRAST_MAPS:
            sub = {k.split("/", 1)[1]: v for k, v in pay.payload.items() if k.startswith(f"{name}/")}
            crow = {"id": f"{name}@{row['id']}", "family": "contrast", "method": f"{label} top-k",
                    "area_of": row["id"], "loss": row["loss"], "l0_coeff": row["l0_coeff"],
                    "tv_coeff": row["tv_coeff"], "tv_gamma": None}
            per_image[crow["id"]] = per_image_scores(sub, sub["mask"], maps[name], gt, conn, clean)
            contrast_rows.append({**crow, **summarize(per_image[crow["id"]]), "seconds": float(pay["seconds"]) / 2})

    probability = chosen.stage["probability"]
    return {
        "selection": {"positive_class": chosen.class_name, "n_explained": len(chosen.x),
                      "n_requested": cfg.n_images, "n_candidates": chosen.stage["n_candidates"],
                      "mean_probability": float(probability.mean()),
                      "mean_object_area": float(gt.flatten(1).float().mean()),
                      "mean_object_components": float(localization_scores(gt, gt).components.float().mean())},
        "threshold_scans": {rid: {"grid": s["grid"].tolist(), "mean_ape": s["mean_ape"].tolist()}
                            for rid, s in scans.items()},
        "table1": table,
        "contrast": contrast_rows,
        "paper_table1": PAPER_TABLE1,
        "per_image": {rid: {k: v.tolist() for k, v in vals.items() if k in PER_IMAGE_KEYS}
                      for rid, vals in per_image.items()},
        "comparisons": compare_rows(table, per_image, cfg.alpha),
        "contrast_comparisons": compare_contrast(contrast_rows, per_image, cfg.alpha),
        "emptiness": emptiness(table, per_image, clean),
        "tuned": tuned(cfg, chosen, table, per_image, scans, masks),
        "figure_rows": [r["id"] for r in table] + [r["id"] for r in contrast_rows],
    }


def figure_maps(cfg: Config, chosen: Explained, ours: dict[str, Stage], scans: dict[str, Stage],
                maps: Stage | None, contrast: dict[str, Stage]) -> dict[str, torch.Tensor]:
    """The first ``figure_images`` examples' images, masks, perturbed images and maps, for the report."""
    k = min(cfg.figure_images, len(chosen.x))
    out = {"x": chosen.x[:k], "gt": chosen.gt[:k]}
    for rid, pay in {**scans, **ours}.items():
        out[f"{rid}/mask"], out[f"{rid}/x_hat"] = pay["mask"][:k], pay["x_hat"][:k]
    if maps is not None:
        out["gradient"], out["gradcam"] = maps["gradient"][:k], maps["gradcam"][:k]
    for rid, pay in contrast.items():
        for name, _ in CONTRAST_MAPS:
            out[f"{name}@{rid}/mask"] = pay[f"{name}/mask"][:k]
    return out


# ------------------------------------------------------------------------------------------------ per row
def per_image_scores(payload: Any, mask: torch.Tensor, saliency: torch.Tensor, gt: torch.Tensor,
                     connectivity: int, clean: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    """APE_D terms (stored by the stage), APE_S of the same Î and localisation scores of one row, per image.

    APE_S (seed 003 Eq. 9, unit weights) needs no model call: the kept elements are the complement of the
    changed ones, so L0(1 − B)/N = 1 − L0(B)/N, TV(1 − B) = TV(B), and its classification term is
    |M(Î)_i − M(I)_i| with M(I)_i the clean probability ``clean`` stored by the selection stage.
    ``cc_hit_all`` is the CC hit rate with an empty mask counted as a miss (0), so comparisons keep every image
    instead of selecting the images where a method produced a mask."""
    loc = localization_scores(mask, gt, saliency, connectivity)
    out = {k: payload[f"{prefix}{k}"].double().numpy() for k in ("l0", "tv", "classification", "ape")}
    cc = loc.cc_hit_rate.double().numpy()
    out.update(cc_hit_rate=cc, cc_hit_all=np.where(np.isfinite(cc), cc, 0.0), pointing=loc.pointing.double().numpy(),
               area=loc.area.double().numpy(), components=loc.components.double().numpy())
    out["ape_s_l0"] = 1.0 - out["l0"]
    out["ape_s_classification"] = np.abs(out["classification"] - clean)
    out["ape_s"] = out["ape_s_l0"] + out["tv"] + out["ape_s_classification"]
    return out


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, Any]:
    """Table 1 columns (set means), APE_S and the localisation companions of one row; the CC hit rate as the
    mean over images with a non-empty mask (Table 1's reading), over all images with an empty mask counted as a
    miss (``cc_hit_all``), and pooled over all components."""
    comps, cc = per_image["components"], per_image["cc_hit_rate"]
    defined = np.isfinite(cc)
    pooled = float((cc[defined] * comps[defined]).sum() / comps[defined].sum()) if comps[defined].sum() else math.nan
    return {"n": len(cc), "l0": float(per_image["l0"].mean()), "tv": float(per_image["tv"].mean()),
            "classification": float(per_image["classification"].mean()), "ape": float(per_image["ape"].mean()),
            "cc_hit_rate": nanmean(cc), "cc_hit_pooled": pooled, "pointing": nanmean(per_image["pointing"]),
            "area": float(per_image["area"].mean()), "components": float(comps.mean()),
            "empty_masks": int((~defined).sum()), "cc_hit_all": float(per_image["cc_hit_all"].mean()),
            "ape_s": float(per_image["ape_s"].mean()), "ape_s_l0": float(per_image["ape_s_l0"].mean()),
            "ape_s_classification": float(per_image["ape_s_classification"].mean()),
            "ci": row_intervals(per_image)}


def mean_interval(values: np.ndarray, rate: bool = False) -> dict[str, float]:
    """Mean of the finite per-image values with its 95% percentile-bootstrap interval over the images
    (``stats.bootstrap_interval``, seeded). For a ``rate`` (per-image shares in [0, 1]) whose values are all 0
    or all 1, where no resample varies, the Wilson interval of that count (``stats.proportion_interval``)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if rate and len(v) and np.ptp(v) == 0 and v[0] in (0.0, 1.0):
        return proportion_interval(int(v.sum()), len(v))
    return bootstrap_interval((v,), np.mean)


def _ratio(hits: np.ndarray, components: np.ndarray, axis: int = -1) -> np.ndarray:
    return hits.sum(axis=axis) / components.sum(axis=axis)


def row_intervals(per_image: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """95% bootstrap intervals over the explained images of a row's APE_D, its rates (CC hit rate over the
    non-empty masks, over all images with empty = miss, pooled over components; pointing game) and its mask
    area: the same estimates as :func:`summarize`'s."""
    cc, comps = per_image["cc_hit_rate"], per_image["components"]
    defined = np.isfinite(cc)
    out = {k: mean_interval(per_image[k], rate=k != "ape" and k != "area")
           for k in ("ape", "cc_hit_rate", "cc_hit_all", "area", "pointing")}
    out["cc_hit_pooled"] = (bootstrap_interval((cc[defined] * comps[defined], comps[defined]), _ratio, paired=True)
                            if comps[defined].sum() else mean_interval(np.array([])))
    return out


# ------------------------------------------------------------------------------------------------ comparisons
def paired_comparison(a: np.ndarray, b: np.ndarray, lower_is_better: bool, alpha: float) -> dict[str, Any]:
    """Row a vs row b on the same images (``stats.paired_test``, Wilcoxon signed-rank two-sided, over the images
    where both are defined): means of both, mean difference a − b with its 95% Student-t interval (``lo``,
    ``hi``), p and the verdict for a: better / worse (p < alpha, in the direction of the mean difference), no
    significant difference, or not testable. :func:`holm_family` later adds ``p_holm`` and re-reads the verdict
    from it."""
    fa, fb = finite_pairs(a, b)
    test = paired_test(fa, fb)
    ci = mean_ci(fa - fb)
    out: dict[str, Any] = {"n": test["n"], "a": nanmean(fa), "b": nanmean(fb), "diff": test["estimate"],
                           "lo": ci["lo"], "hi": ci["hi"], "p": test["p"], "p_holm": test["p"],
                           "lower_is_better": lower_is_better, "verdict": "not testable"}
    out["verdict"] = _verdict(out, "p", alpha)
    return out


def _verdict(c: dict[str, Any], p_key: str, alpha: float) -> str:
    if not c["n"] or not np.isfinite(c[p_key]):
        return "not testable"
    sign = -1.0 if c["lower_is_better"] else 1.0
    if c[p_key] < alpha and sign * c["diff"] > 0:
        return "better"
    if c[p_key] < alpha and sign * c["diff"] < 0:
        return "worse"
    return "no significant difference"


def holm_family(tests: list[dict[str, Any]], alpha: float) -> None:
    """Holm-correct one family of paired comparisons in place (``stats.holm``): ``p_holm`` per test and the
    verdict read from it."""
    for t, p in zip(tests, holm([t["p"] for t in tests]), strict=True):
        t["p_holm"] = p
        t["verdict"] = _verdict(t, "p_holm", alpha)


def compare_rows(rows: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]],
                 alpha: float) -> list[dict[str, Any]]:
    """Every regularized row against the MP rows with the same (L0, TV) coefficients (the rows seed 003
    Table 1 sets side by side), paired over all images: APE_D, APE_S and the CC hit rate with an empty mask
    counted as a miss. One Holm family over all the tests of the table."""
    out = []
    for ours in (r for r in rows if r["family"] == "ours"):
        for mp in (r for r in rows if r["family"] == "mp"):
            if not (math.isclose(ours["l0_coeff"], mp["l0_coeff"]) and math.isclose(ours["tv_coeff"], mp["tv_coeff"])):
                continue
            if not (ours.get("transfer", True) and mp.get("transfer", True)):  # tuning candidates: see tuned()
                continue
            a, b = per_image[ours["id"]], per_image[mp["id"]]
            out.append({"ours": ours["id"], "mp": mp["id"], "ours_method": ours["method"], "mp_method": mp["method"],
                        "l0_coeff": ours["l0_coeff"], "tv_coeff": ours["tv_coeff"], "tv_gamma": mp["tv_gamma"],
                        **_tests(a, b, alpha), "paper": paper_verdicts(ours, mp)})
    holm_family([c[m] for c in out for m in TESTED], alpha)
    return out


METRICS = ("ape", "ape_s", "cc_hit_rate", "area")
TESTED = ("ape", "ape_s", "cc_hit_rate")  # the verdicts (one Holm family); the area is reported beside them


def _tests(a: dict[str, np.ndarray], b: dict[str, np.ndarray], alpha: float) -> dict[str, dict[str, Any]]:
    """APE_D, APE_S (lower is better), CC hit rate over all images (empty = miss; higher is better) and, for
    reading them, the mask area (lower = smaller explanation)."""
    return {"ape": paired_comparison(a["ape"], b["ape"], True, alpha),
            "ape_s": paired_comparison(a["ape_s"], b["ape_s"], True, alpha),
            "cc_hit_rate": paired_comparison(a["cc_hit_all"], b["cc_hit_all"], False, alpha),
            "area": paired_comparison(a["area"], b["area"], True, alpha)}


def compare_contrast(contrast: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]],
                     alpha: float) -> list[dict[str, Any]]:
    """Every regularized row against the gradient / Grad-CAM masks of the same area (same phase 2); one Holm
    family."""
    out = []
    for c in contrast:
        a, b = per_image[c["area_of"]], per_image[c["id"]]
        out.append({"ours": c["area_of"], "contrast": c["id"], "contrast_method": c["method"],
                    "ape": paired_comparison(a["ape"], b["ape"], True, alpha),
                    "cc_hit_rate": paired_comparison(a["cc_hit_all"], b["cc_hit_all"], False, alpha)})
    holm_family([c[m] for c in out for m in ("ape", "cc_hit_rate")], alpha)
    return out


def split_images(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The tuning and evaluation image indices: a seeded permutation of 0..n−1 cut at round(fraction·n), with
    at least one image on each side (both empty when n < 2)."""
    if n < 2:
        return np.array([], dtype=int), np.array([], dtype=int)
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, round(fraction * n)), n - 1)
    return np.sort(order[:k]), np.sort(order[k:])


def tuned(cfg: Config, chosen: Explained, rows: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]],
          scans: dict[str, Stage], masks: dict[str, Stage]) -> dict[str, Any] | None:
    """The tuned comparison (``TuningConfig``): per variant (ours per loss, MP per deletion image) the candidate
    with the best mean APE_D on the tuning images — for MP jointly with its threshold T, scanned on the tuning
    images only — scored on the held-out images; then every tuned "ours" against every tuned MP, paired over the
    held-out images (APE_D, CC hit rate with empty = miss; Wilcoxon signed-rank, one Holm family; the mask areas
    beside). None when off or with fewer than 2 images."""
    if cfg.tuning.fraction <= 0:
        return None
    tune, held = split_images(len(chosen.x), cfg.tuning.fraction, cfg.seed + 1)
    if not len(held):
        return None
    picked: list[dict[str, Any]] = []
    scores: dict[str, dict[str, np.ndarray]] = {}
    for loss in dict.fromkeys(r["loss"] for r in rows if r["family"] == "ours"):
        cands = [r for r in rows if r["family"] == "ours" and r["loss"] == loss]
        best = min(cands, key=lambda r: float(per_image[r["id"]]["ape"][tune].mean()))
        vid = f"tuned-{best['id']}"
        scores[vid] = {k: per_image[best["id"]][k][held] for k in ("ape", "cc_hit_all", "area")}
        picked.append({"id": vid, "family": "ours", "method": best["method"], "row": best["id"], "threshold": None,
                       "candidates": len(cands), "tune_ape": float(per_image[best["id"]]["ape"][tune].mean())})
    for deletion in dict.fromkeys(r["deletion"] for r in rows if r["family"] == "mp"):
        cands = [r for r in rows if r["family"] == "mp" and r["deletion"] == deletion]
        options = [(float(scans[r["id"]]["ape_table"][i, tune].double().mean()), j, i)
                   for j, r in enumerate(cands) for i in range(len(scans[r["id"]]["grid"]))]
        tune_ape, j, i = min(options)
        best, scan = cands[j], scans[cands[j]["id"]]
        region = (1.0 - masks[best["id"]]["mask"][:, 0]) > scan["grid"][i]  # as the scan applied it (float32)
        grid = threshold_grid(cfg.meaningful.thresholds, cfg.meaningful.fine_thresholds)
        threshold = min(grid, key=lambda g: abs(g - float(scan["grid"][i])))
        loc = localization_scores(region, chosen.gt, None, cfg.connectivity)
        cc = loc.cc_hit_rate.double().numpy()
        vid = f"tuned-{best['id']}"
        scores[vid] = {"ape": scan["ape_table"][i].double().numpy()[held],
                       "cc_hit_all": np.where(np.isfinite(cc), cc, 0.0)[held], "area": loc.area.double().numpy()[held]}
        picked.append({"id": vid, "family": "mp", "method": best["method"], "row": best["id"],
                       "threshold": threshold, "candidates": len(cands), "tune_ape": tune_ape})
    for p in picked:
        v = scores[p["id"]]
        p.update(ape=float(v["ape"].mean()), cc_hit_all=float(v["cc_hit_all"].mean()), area=float(v["area"].mean()),
                 ci={k: mean_interval(v[k], rate=k == "cc_hit_all") for k in ("ape", "cc_hit_all", "area")})
    comps = []
    for o in (p for p in picked if p["family"] == "ours"):
        for m in (p for p in picked if p["family"] == "mp"):
            a, b = scores[o["id"]], scores[m["id"]]
            comps.append({"ours": o["id"], "mp": m["id"],
                          "ape": paired_comparison(a["ape"], b["ape"], True, cfg.alpha),
                          "cc_hit_rate": paired_comparison(a["cc_hit_all"], b["cc_hit_all"], False, cfg.alpha),
                          "area": paired_comparison(a["area"], b["area"], True, cfg.alpha)})
    holm_family([c[m] for c in comps for m in ("ape", "cc_hit_rate")], cfg.alpha)
    return {"fraction": cfg.tuning.fraction, "n_tune": len(tune), "n_eval": len(held),
            "tune_images": tune.tolist(), "picked": picked, "comparisons": comps}


def emptiness(rows: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]],
              clean: np.ndarray) -> list[dict[str, Any]]:
    """Empty regularized masks against the clean confidence: per "ours" row, the count of empty masks among the
    saturated images (clean 1 − p ≤ ``SATURATED``, where Eq. 13's probability has almost no gradient) and among
    the others (``ci``: each share with its exact Clopper–Pearson 95% interval), and the median clean 1 − p of
    the images with and without an empty mask."""
    slack = 1.0 - clean
    sat = slack <= SATURATED
    out = []
    for r in (r for r in rows if r["family"] == "ours"):
        empty = ~np.isfinite(per_image[r["id"]]["cc_hit_rate"])
        out.append({"row": r["id"], "n_saturated": int(sat.sum()), "empty_saturated": int((empty & sat).sum()),
                    "n_unsaturated": int((~sat).sum()), "empty_unsaturated": int((empty & ~sat).sum()),
                    "median_slack_empty": float(np.median(slack[empty])) if empty.any() else math.nan,
                    "median_slack_nonempty": float(np.median(slack[~empty])) if (~empty).any() else math.nan,
                    "ci": {"saturated": proportion_interval(int((empty & sat).sum()), int(sat.sum()), "exact"),
                           "unsaturated": proportion_interval(int((empty & ~sat).sum()), int((~sat).sum()),
                                                              "exact")}})
    return out


def paper_verdicts(ours: dict[str, Any], mp: dict[str, Any]) -> dict[str, Any] | None:
    """Seed 003 Table 1's own comparison of an "ours" row with an MP row of the same coefficients (None when
    the paper has no such pair)."""
    def find(method: str, row: dict[str, Any]) -> dict[str, Any] | None:
        for p in PAPER_TABLE1:
            if p["method"] == method and math.isclose(p["l0_coeff"], row["l0_coeff"]) \
                    and math.isclose(p["tv_coeff"], row["tv_coeff"]) \
                    and (method == "ours" or math.isclose(p["tv_gamma"], row["tv_gamma"])):
                return p
        return None

    p_ours, p_mp = find("ours", ours), find(mp["method"], mp)
    if p_ours is None or p_mp is None:
        return None
    return {"ape": "better" if p_ours["ape"] < p_mp["ape"] else "worse",
            "cc_hit_rate": "better" if p_ours["cc_hit_rate"] > p_mp["cc_hit_rate"] else "worse",
            "ours_ape": p_ours["ape"], "mp_ape": p_mp["ape"], "ours_cc": p_ours["cc_hit_rate"],
            "mp_cc": p_mp["cc_hit_rate"]}


# ------------------------------------------------------------------------------------------------ presentation
def render(run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    from ...report.explanation import render_explanation_report

    return render_explanation_report(Path(run_dir), results)


def summary(results: dict[str, Any]) -> list[str]:
    """The CLI's closing lines: accuracy, Table 1 rows and the count of verdicts."""
    from ...report.explanation import pct_text, setting_label

    sel = results["selection"]
    lines = [f"classifier test accuracy {results['classifier']['test']['accuracy']:.4f}; explained "
             f"{sel['n_explained']} positive test images"]
    for r in results["table1"]:
        lines.append(f"{r['method']:<24} {setting_label(r):<22} APE_D {r['ape']:.4f}  CC hit "
                     f"{pct_text(r['cc_hit_rate'])}  area {r['area']:.4f}")
    counts: dict[str, int] = {}
    for c in results["comparisons"]:
        for metric in ("ape", "cc_hit_rate"):
            counts[f"{metric}:{c[metric]['verdict']}"] = counts.get(f"{metric}:{c[metric]['verdict']}", 0) + 1
    if counts:
        lines.append("regularized vs MP (matched settings, transferred coefficients): "
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    from ...report.explanation import tuned_lines

    return lines + tuned_lines(results)
