"""Report of the detection study: seed 001's tables beside the paper's numbers, heatmaps, ROC, examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..attacks.specs import display_name
from .charts import matrix_heatmap, roc_plot
from .document import Report
from .figures import saliency_grid
from .findings import DETECTION_SECTIONS, detection_findings, eps_generalisation_verdict

#: Seed 001 Table II, MNIST and CIFAR-10 rows (FGSM / Iterative L∞ / Iterative L2 / C&W).
PAPER_TABLE2 = {
    "MNIST": {"fgsm": (0.99, 0.12, 1.00, 0.99), "bim": (0.99, 0.05, 1.00, 1.00), "bim-l2": (0.99, 0.04, 0.99, 1.00),
              "cw": (0.99, 0.03, 0.99, 1.00)},
    "CIFAR10": {"fgsm": (0.81, 0.13, 0.98, 0.98), "bim": (0.81, 0.07, 0.98, 0.98),
                "bim-l2": (0.81, 0.07, 0.91, 0.91), "cw": (0.81, 0.06, 0.94, 0.95)},
}
#: Seed 001 Table III, MNIST (ε_fit rows 1..4 × ε_test columns 1..4).
PAPER_TABLE3_MNIST = {
    "fgsm": [[0.95, 0.88, 0.71, 0.65], [0.95, 1.00, 0.90, 0.89], [0.96, 1.00, 0.99, 1.00], [0.92, 0.99, 0.99, 1.00]],
    "bim": [[0.91, 0.87, 0.81, 0.65], [0.96, 0.96, 0.96, 0.92], [0.97, 0.98, 0.99, 0.98], [0.97, 0.99, 0.99, 1.00]],
    "bim-l2": [[0.86, 0.80, 0.76, 0.70], [0.88, 0.91, 0.92, 0.88], [0.90, 0.93, 0.95, 0.95],
               [0.90, 0.95, 0.97, 1.00]],
}


def _examples_figure(run_dir: Path, path: Path, _nice) -> Path | None:
    stored = run_dir / "examples.safetensors"
    if not stored.is_file():
        return None
    from safetensors.torch import load_file

    t = load_file(str(stored))
    names = [k[:-2] for k in t if k.endswith(".x")]
    if not names:
        return None
    clean = np.concatenate([t[f"{n}.x"].numpy() for n in names])
    adv = np.concatenate([t[f"{n}.x_adv"].numpy() for n in names])
    s_clean = np.concatenate([np.abs(t[f"{n}.s"].numpy()).max(1) for n in names])
    s_adv = np.concatenate([np.abs(t[f"{n}.s_adv"].numpy()).max(1) for n in names])
    titles = [f"{_nice(n)}: {int(t[f'{n}.y'][0])}→{int(t[f'{n}.pred_adv'][0])}" for n in names]
    return saliency_grid(clean, adv, {"saliency |∂F/∂x|": (s_clean, s_adv)}, titles, path)


# ------------------------------------------------------------------------------------------------ security (#15)
def _first_round(results: dict[str, Any], detector: str, attack: str) -> dict[str, Any]:
    base = detector.removesuffix("-hardened")
    row = results["table2"].get(attack) if base == "image+saliency" else results["baselines"].get(base, {}).get(attack)
    return row or {}


def security_headline(results: dict[str, Any]) -> str:
    """The key security finding in one paragraph (the main detector at ε* under the strongest attack)."""
    sec = results["security"]
    curve = sec["detectors"].get("image+saliency", {}).get("linf")
    if not curve:
        return "Security: the main detector was not attacked."
    i = min(range(len(curve["eps"])), key=lambda j: abs(curve["eps"][j] - sec["eps_star"]))
    first = _first_round(results, "image+saliency", sec["attack"])
    d_adv = first.get("d_adv")
    text = (f"**Security finding.** The first round reports D(x_adv) = "
            f"{'–' if not isinstance(d_adv, (int, float)) else format(d_adv, '.3f')} for "
            f"{sec['attack']} at ε* = {sec['eps_star']:.3g} — against an attacker who ignores D. Against the "
            f"library's strongest adaptive attack ({ensemble_words(sec)}, through D's saliency, best point per "
            f"image), with D's threshold calibrated to "
            f"{curve['fpr']:.0%} clean FPR and known to the attacker, {curve['both'][i]:.2f} of {curve['n']} "
            f"correctly classified test images fool F and pass D at ε* (F alone: {curve['fooled_any'][i]:.2f}); "
            f"robust TPR {curve['robust_tpr'][i]:.2f}, robust accuracy of F guarded by D "
            f"{curve['robust_accuracy'][i]:.2f}.")
    hard = sec["detectors"].get("image+saliency-hardened", {}).get("linf")
    if hard:
        j = min(range(len(hard["eps"])), key=lambda k: abs(hard["eps"][k] - sec["eps_star"]))
        text += (f" D hardened by dynamic adversary training: robust TPR {hard['robust_tpr'][j]:.2f}, robust "
                 f"accuracy {hard['robust_accuracy'][j]:.2f} at ε*.")
        tramer = tramer_comparison(sec)
        if tramer:
            text += " " + tramer
    return text


def ensemble_words(sec: dict[str, Any]) -> str:
    """The security section's attack ensemble in words, from its recorded member labels (``steps.ensemble_labels``;
    runs from before they were recorded: the ensemble of that time)."""
    members = sec.get("ensemble")
    if not members:
        return "an ensemble of Orthogonal PGD, Selective PGD and combined-loss PGD"
    options = (("-warm", "restarts from the best point so far"), ("-beta", "a softplus-β schedule over restarts"),
               ("-norm", "unit-normalised gradients"), ("-kd", "a logit margin κ_D below the threshold"))
    extras = [words for key, words in options if any(key in m for m in members)]
    return (f"an ensemble of {len(members)} attacks run in turn on the images not yet broken — "
            + ", ".join(f"`{m}`" for m in members)
            + (" (variants with " + ", ".join(extras) + ")" if extras else ""))


def tramer_comparison(sec: dict[str, Any]) -> str:
    """Tramèr (2022, "Detecting adversarial examples is (nearly) as hard as classifying them"): a detector robust
    at ε yields a (inefficient) classifier robust at ε/2, so the guarded system's robust accuracy at ε should not
    beat the best robust classifier's at ε/2. Compares the hardened D (robust accuracy = correct or flagged) at each
    ε with the PGD-trained F at ε/2, where both were measured; '' when not."""
    hard = sec["detectors"].get("image+saliency-hardened", {}).get("linf")
    pgd = (sec.get("hardening") or {}).get("pgd_trained")
    if not hard or not pgd:
        return ""
    pairs = []
    for k, e in enumerate(hard["eps"]):
        half = [j for j, f in enumerate(pgd["eps"]) if e > 0 and abs(f - e / 2) <= 1e-6 * max(e, 1)]
        if half:
            pairs.append((e, hard["robust_accuracy"][k], pgd["robust_accuracy"][half[0]]))
    if not pairs:
        return ""
    above = [p for p in pairs if p[1] > p[2] + 0.05]
    listing = "; ".join(f"ε {e:.3g}: hardened D {d:.2f} vs PGD-trained F at ε/2 {f:.2f}" for e, d, f in pairs)
    if above:
        verdict = ("the hardened D claims more than the robust classifier reaches at half the budget — by Tramèr's "
                   "reduction a sign that the attack on D is too weak (gradient masking), not of a robust detector")
    else:
        verdict = "consistent with Tramèr's claim (no detector claim beyond the robust classifier's at ε/2)"
    return (f"Tramèr (2022) comparison, robust accuracy (correct or flagged) at ε vs the PGD-trained classifier's "
            f"at ε/2: {listing} — {verdict}.")


def security_section(rep: Any, results: dict[str, Any], nice, detector_names: dict[str, str], fig_dir: Path) -> None:
    """Robust-detection curves over ε per detector, beside the first-round numbers (issue #15)."""
    from .charts import line_plot

    sec = results["security"]
    rep.heading("Security under adaptive attacks (robust detection over ε)", anchor=DETECTION_SECTIONS["security"])
    rep.paragraph(
        f"Each detector trained on {nice(sec['attack'])} guards F against the strongest attack of the library, "
        f"{ensemble_words(sec)}: Orthogonal and Selective PGD over the λ sweep, their variants, then PGD on F "
        "alone (λ = 0); each with APGD step sizes and BPDA through the saliency; per image the first "
        "point that fools F and "
        "passes D at its threshold counts (checked with the exact F and D). The threshold is calibrated to the "
        "clean FPR on held-out clean test images, and the attacker knows it. 'F fooled' = some attack fooled F; "
        "'both' = F fooled and D passed; robust TPR = 1 − both / F fooled; robust accuracy = correct or flagged. "
        f"The main detector gets {sec['steps']} steps × {sec['restarts']} restart(s) per attack; baselines "
        f"{sec['baseline_steps']} steps on fewer images (the study's time budget) — their numbers are upper "
        "bounds on robustness. The first-round columns repeat Table II (an attacker ignoring D, threshold 0.5).")
    rows, series = [], {}
    for name, curves in sec["detectors"].items():
        display = detector_names.get(name, name.replace("-hardened", " (hardened)"))
        first = _first_round(results, name, sec["attack"])
        for norm, c in curves.items():
            for k, e in enumerate(c["eps"]):
                rows.append([display, norm, e, c["n"], c["threshold"], c["fooled_any"][k], c["both"][k],
                             c["robust_tpr"][k], c["robust_accuracy"][k], first.get("d_adv"),
                             first.get("tpr_at_fpr")])
            if norm == "linf":
                series[display] = ([0.0, *c["eps"]], [1.0, *c["robust_accuracy"]])
    rep.table(["detector", "norm", "ε", "n", "threshold", "F fooled", "both", "robust TPR", "robust acc.",
               "first-round D(x_adv)", "first-round TPR@FPR"], rows)
    hard = sec.get("hardening")
    if not hard:
        rep.paragraph("The hardened detector (dynamic adversary training) and the PGD-trained classifier are off in "
                      "this run (security.harden: false, the default, for the time budget); the preset "
                      "detection-security turns them on.")
    if hard:
        pgd = hard["pgd_trained"]
        series["PGD-trained F (no detector)"] = (pgd["eps"], pgd["robust_accuracy"])
        rep.paragraph("Hardened D (dynamic adversary training, Metzen et al. 2017): adaptive attack success on the "
                      "training images per round before its update: "
                      + ", ".join(f"round {r['round']} ({r['mode']}) {r['both']:.2f}" for r in hard["rounds"])
                      + ". PGD-trained F (Madry et al. 2018, no detector), robust accuracy under APGD-CE: "
                      + ", ".join(f"ε {e:.3g}: {a:.2f}" for e, a in zip(pgd["eps"], pgd["robust_accuracy"],
                                                                         strict=True))
                      + ". " + (tramer_comparison(sec) or "Tramèr (2022) links robust detection to robust "
                                                         "classification; compare the curves.")
                      + " A detector trained against the attack can mask gradients: its numbers are upper bounds "
                        "until a transfer attack (the plain D's points) or a stronger attack fails too "
                        "(benchmarks/security.py --hardened measures both).")
    if series:
        rep.figure(line_plot(series, fig_dir / "security.png", "robust accuracy of the guarded system (L∞)", "ε",
                             "correct or flagged"),
                   "Robust accuracy (correct or flagged) under the strongest adaptive attack vs L∞ ε.")


# ------------------------------------------------------------------------------------------------ option seeds (#17)
def seeds_section(rep: Any, results: dict[str, Any], nice, detector_names: dict[str, str], fpr: float) -> None:
    """Table II and the seeded baselines over detector seeds (option ``seeds``): mean [95% t interval over
    seeds] of each rate and AUROC, and each seed's AUROC; nothing when the run used one seed."""
    seeds = (results.get("seeds") or {}).get("detector_seeds") or []
    rows_by_kind = {"image+saliency": results.get("table2", {}), **results.get("baselines", {})}
    rows = []
    for kind, per in rows_by_kind.items():
        for attack, r in per.items():
            o = r.get("over_seeds")
            if o:
                rows.append([detector_names.get(kind, kind), nice(attack),
                             *[o[k] for k in ("d_clean", "d_adv", "auroc", "tpr_at_fpr")], *o["auroc"]["values"]])
    if len(seeds) < 2 or not rows:
        return
    rep.heading("Table II over detector seeds", level=3, anchor="table2-seeds")
    not_repeated = [detector_names.get(k, k) for k in results.get("baselines", {})
                    if k not in results["seeds"].get("repeated", {})]
    rep.paragraph(f"Each seeded detector is trained once per detector seed ({', '.join(map(str, seeds))}: network "
                  "initialisation and batch order, the statistic detectors' cross-validation folds); fixed across "
                  f"seeds: {results['seeds'].get('fixed', '')}. Cells: mean over "
                  "seeds [95% Student-t interval over seeds]; the tables above show the first seed with bootstrap "
                  "intervals over test images. The seed interval measures training randomness only, the bootstrap "
                  "interval the test sample only."
                  + (f" Not seeded, hence not repeated: {', '.join(not_repeated)}." if not_repeated else ""))
    rep.table(["detector", "attack", "D(x_test)", "D(x_adv)", "AUROC", f"TPR@{fpr:.0%}FPR",
               *[f"AUROC seed {s}" for s in seeds]], rows)


def render_detection_report(run_dir: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """report.md / report.html of a detection run, from its results only (display names: the attack and
    detector registries, as recorded in the results at run time)."""
    fig_dir = run_dir / "figures"
    cfg = results["config"]
    names = results.get("names", {})
    attack_names, detector_names = names.get("attacks", {}), names.get("detectors", {})

    def _nice(name: str) -> str:
        return attack_names.get(name) or display_name(name)

    rep = Report("Saliency-based adversarial detection — study report")
    rep.set_provenance(results.get("provenance"))
    rep.set_findings(detection_findings(results))
    rep.heading("Setup", anchor="setup")
    clf = results["classifier"]
    trained = (f"given as is ({clf['architecture']})" if clf.get("given") else
               f"{clf['architecture']} trained {clf['epochs_run']} epochs (train accuracy "
               f"{clf['train_accuracy']:.4f})")
    rep.paragraph(f"Reproduces and extends seed 001 (Detecting adversarial perturbations with saliency) on "
                  f"{cfg['data']['name']}: {results['data']['train']}; {results['data']['test']}. "
                  f"Classifier F = {trained}, test accuracy {clf['test']['accuracy']:.4f}. "
                  f"Detector D = {cfg['detector']['architecture']} on image ⊕ gradient saliency "
                  f"(score '{cfg['saliency_score']}', class '{cfg['saliency_target']}'), Adam lr "
                  f"{cfg['detector']['lr']}, {cfg['detector']['epochs']} epochs, trained on {cfg['n_train']} clean "
                  f"training images and their adversarial versions; evaluated on {cfg['n_test']} test images.")
    if results.get("security"):
        rep.paragraph(security_headline(results))

    rep.heading(f"Attack budgets (minimal ε with F's accuracy below {cfg['max_accuracy']:.0%}, seed 001 §IV-B)")
    rows = []
    for name, a in results["attacks"].items():
        eps = results["epsilons"].get(name, {})
        norm = _budget_norm(name, a.get("params", {}))
        rows.append([_nice(name), eps.get("eps") if norm == "L∞" else None, eps.get("eps") if norm == "L2" else None,
                     eps.get("accuracy"), a["test"]["success_rate_on_correct"],
                     a["test"]["accuracy_under_attack"], a["test"]["mean_linf"], a["test"]["mean_l2"],
                     a["test"]["mean_l0"], a["train"]["images_per_second"]])
    rep.table(["attack", "ε (L∞)", "ε (L2)", "F acc. at ε (search set)", "success on correct", "F acc. under attack",
               "mean L∞", "mean L2", "mean L0 (pixels)", "craft images/s"], rows,
              caption="ε chosen by bisection on the search set; attacks without ε (e.g. C&W, JSMA) are not "
                      "budget-searched.")

    rep.heading("Table II — detection per attack (paper layout)", anchor=DETECTION_SECTIONS["table2"])
    rep.paragraph("f(x_test): F's accuracy on clean test images; f(x_adv): F's accuracy on their adversarial "
                  "versions; D(x_test): share of clean test images D calls clean; D(x_adv): share of adversarial "
                  "test images D calls adversarial (threshold 0.5). All rows count every test image; the "
                  "'restricted' columns count only successful adversarial examples of correctly classified images "
                  "(and those clean images). Brackets: 95% bootstrap intervals over test images.")
    rows, paper_rows = [], []
    for name, r in results["table2"].items():
        paper = PAPER_TABLE2["MNIST"].get(name)
        rr = r.get("restricted", {})
        ci = r.get("ci", {})
        rows.append([_nice(name), r["f_clean"], r["f_adv"], ci.get("d_clean", r["d_clean"]),
                     ci.get("d_adv", r["d_adv"]), ci.get("auroc", r["auroc"]), r["tpr_at_fpr"],
                     rr.get("d_adv"), rr.get("auroc"), rr.get("n_adv")])
        paper_rows.append([_nice(name), r["f_clean"], paper[0] if paper else None, r["f_adv"],
                           paper[1] if paper else None, r["d_clean"], paper[2] if paper else None, r["d_adv"],
                           paper[3] if paper else None])
    rep.table(["attack", "f(x_test)", "f(x_adv)", "D(x_test)", "D(x_adv)", "AUROC", f"TPR@{cfg['fpr']:.0%}FPR",
               "restricted D(x_adv)", "restricted AUROC", "restricted n"], rows)
    rep.table(["attack", "f(x_test) ours", "paper", "f(x_adv) ours", "paper", "D(x_test) ours", "paper",
               "D(x_adv) ours", "paper"], paper_rows, caption="Ours beside seed 001 Table II (MNIST row).")
    if results.get("roc"):
        curves = {_nice(n): (np.array(c["fpr"]), np.array(c["tpr"]), c["auroc"]) for n, c in results["roc"].items()}
        rep.figure(roc_plot(curves, fig_dir / "roc.png", "ROC of the saliency detector per attack"),
                   "ROC curves of D (image ⊕ saliency), clean test vs adversarial test.")
    seeds_section(rep, results, _nice, detector_names, cfg["fpr"])

    if any(results["baselines"].values()):
        rep.heading("Baselines and ablations (same data and protocol)", anchor=DETECTION_SECTIONS["baselines"])
        rows = []
        main = detector_names.get("image+saliency", "image ⊕ saliency (seed 001)")
        for name, r in results["table2"].items():
            ci = r.get("ci", {})
            rows.append([main, _nice(name), ci.get("d_clean", r["d_clean"]), ci.get("d_adv", r["d_adv"]),
                         ci.get("auroc", r["auroc"]), r["tpr_at_fpr"]])
        rows = [[*row, "–"] for row in rows]
        papers = results.get("paper_baselines", {})
        for kind, per_attack in results["baselines"].items():
            for name, r in per_attack.items():
                ci = r.get("ci", {})
                rows.append([detector_names.get(kind, kind), _nice(name), ci.get("d_clean", r["d_clean"]),
                             ci.get("d_adv", r["d_adv"]), ci.get("auroc", r["auroc"]), r["tpr_at_fpr"],
                             papers.get(kind, {}).get("cells", {}).get(name, "–")])
        rep.table(["detector", "attack", "D(x_test)", "D(x_adv)", "AUROC", f"TPR@{cfg['fpr']:.0%}FPR",
                   "paper (table)"], rows,
                  caption="paper (table): the baseline's own paper on MNIST, with its own network, attacks and "
                          "budgets — see the notes below.")
        for sentence in standing_sentences(results, _nice, detector_names):
            rep.paragraph(sentence)
        if papers:
            rep.paragraph(paper_comparison(results, _nice, detector_names))

    cross = results.get("cross_attack")
    if cross and cross["attacks"]:
        rep.heading("Generalisation across attacks (seed 001 Fig. 2)", anchor=DETECTION_SECTIONS["cross"])
        names = [_nice(n) for n in cross["attacks"]]
        rep.figure(matrix_heatmap(np.array(cross["matrix"]), names, names, fig_dir / "cross_attack.png",
                                  "detection accuracy: fit (rows) → test (columns)", "tested on", "trained on",
                                  vmin=0.5, vmax=1.0),
                   "Detection accuracy (balanced clean/adversarial test set) of the detector trained on the row "
                   "attack, tested on the column attack.")
        rep.table(["trained on \\ tested on", *names], [[n, *row] for n, row in zip(names, cross["matrix"],
                                                                                      strict=True)])
        cross_baselines = results.get("cross_attack_baselines", {})
        if cross_baselines:
            main = detector_names.get("image+saliency", "image ⊕ saliency (seed 001)")
            index = {a: i for i, a in enumerate(cross["attacks"])}
            rows = []
            for kind, m in cross_baselines.items():
                for a, row in zip(m["trained_on"], m["matrix"], strict=True):
                    if a in index and not any(r[0] == main and r[1] == _nice(a) for r in rows):
                        rows.append([main, _nice(a), *cross["matrix"][index[a]]])
                    rows.append([detector_names.get(kind, kind), _nice(a), *row])
            tested = next(iter(cross_baselines.values()))["tested_on"]
            rep.table(["detector", "trained on \\ tested on", *[_nice(t) for t in tested]],
                      sorted(rows, key=lambda r: r[1]),
                      caption="The baselines across attacks: detection accuracy (balanced) of each detector trained "
                              "on the row attack, tested on the column attack, beside the saliency detector's Fig. 2 "
                              "rows. Detectors fitted on clean images only (feature squeezing) differ across rows "
                              "only through their training subset.")

    gen = results.get("generalisation_eps", {})
    if gen:
        rep.heading("Generalisation across ε (seed 001 Table III)", anchor=DETECTION_SECTIONS["eps"])
        for name, g in gen.items():
            labels = [f"{f:g}×ε* ({e:.3g})" for f, e in zip(g["eps_factors"], g["eps"], strict=True)]
            m = np.array(g["matrix"])
            rep.figure(matrix_heatmap(m, labels, labels, fig_dir / f"eps_{name}.png",
                                      f"{_nice(name)}: ε_fit (rows) → ε_test (columns)", "ε_test", "ε_fit",
                                      vmin=0.5, vmax=1.0), f"{_nice(name)}: detection accuracy by ε_fit × ε_test.")
            rows = [[lab, *row] for lab, row in zip(labels, g["matrix"], strict=True)]
            rep.table(["ε_fit \\ ε_test", *labels], rows, caption=f"{_nice(name)} (ours)")
            if name in PAPER_TABLE3_MNIST:
                rep.table(["paper ε_fit \\ ε_test", "1", "2", "3", "4"],
                          [[str(i + 1), *row] for i, row in enumerate(PAPER_TABLE3_MNIST[name])],
                          caption=f"{_nice(name)}, seed 001 Table III (MNIST; the paper's ε levels are unnamed)")
            v = eps_generalisation_verdict(m) or {"below": float("nan"), "above": float("nan"),
                                                  "verdict": "not testable with one ε"}
            below, above, verdict = v["below"], v["above"], v["verdict"]
            rep.paragraph(f"{_nice(name)}: mean accuracy testing on a smaller ε than fitted {below:.3f}; on a "
                          f"larger ε {above:.3f}. The paper's claim — a detector fit on a small ε generalises to "
                          f"larger ones but not the reverse — is {verdict} here.")

    second = results.get("second_round", {})
    if second:
        rep.heading("Second-round attacks on F and D jointly", anchor=DETECTION_SECTIONS["second"])
        rep.paragraph(f"Attacking the detector trained on {_nice(second['attack_detector'])}, L∞ budget ε = "
                      f"{second['eps']:.3g}, on correctly classified test images. 'both' = F fooled AND D says "
                      "clean — the rate seed 001 says such attacks cannot reach ('not applicable'). The transfer "
                      "row attacks D′ (trained on the other half of the training data) and is evaluated on a D "
                      "trained on the first half.")
        rows = [[r["attack"], *[r.get("ci", {}).get(k, r[k]) for k in ("f_fooled", "d_says_clean", "both")],
                 r["mean_linf"], r["mean_l2"], r["n"]] for r in second["rows"]]
        rep.table(["attack", "F fooled", "D says clean", "both", "mean L∞", "mean L2", "n"], rows)

    if results.get("security"):
        security_section(rep, results, _nice, detector_names, fig_dir)

    layers = results.get("layers", {})
    if layers and layers.get("by_attack"):
        rep.heading("Layer-wise analysis (seed 000 §5, Fig. 7)", anchor=DETECTION_SECTIONS["layers"])
        rep.paragraph("Grad-CAM-weighted feature maps w.r.t. the true class at a shallow, a middle and a deep "
                      "layer; per layer the mean Pearson correlation between the clean and the adversarial map "
                      "and the normalised change ‖adv − clean‖ / (‖adv‖ + ‖clean‖) (0 identical, 1 disjoint), over "
                      "successful adversarial examples. The paper's claim: "
                      "shallow layers are robust, middle layers start to go wrong, deep layers fail.")
        names = list(layers["by_attack"])
        rows = []
        for name in names:
            per = layers["by_attack"][name]
            rows.append([_nice(name), *[per[layer]["correlation"] for layer in layers["layers"]],
                         *[per[layer]["change"] for layer in layers["layers"]]])
        rep.table(["attack", *[f"corr {lay}" for lay in layers["layers"]],
                   *[f"change {lay}" for lay in layers["layers"]]], rows)
        # an attack without a successful example among the analysed images has no correlation (null in JSON)
        corr = np.array([[np.nan if (v := layers["by_attack"][n][lay]["correlation"]) is None else v
                          for lay in layers["layers"]] for n in names], dtype=float)
        measured = ~np.isnan(corr)
        if not measured.any(axis=0).all():
            rep.paragraph("No attack produced a successful adversarial example among the analysed images for every "
                          "layer, so the depth trend is not measured; raise `layer_images`.")
        else:
            mean = np.nanmean(corr, 0)
            monotone = bool(np.all(mean[:-1] >= mean[1:]))
            verdict = ("falls monotonically with depth, as the paper claims" if monotone
                       else "does not fall monotonically with depth")
            rep.paragraph(f"Mean correlation per layer (shallow → deep): "
                          f"{', '.join(f'{v:.3f}' for v in mean)}. Similarity {verdict}.")

    examples = _examples_figure(run_dir, fig_dir / "examples.png", _nice)
    if examples is not None:
        rep.heading("Examples (seed 001 Fig. 1 layout)")
        rep.figure(examples, "One successful adversarial example per attack: clean and adversarial image with "
                             "the gradient saliency of F (absolute value, max over channels).")

    rep.timings(results.get("timings", []))
    return rep.write(run_dir)


def _budget_norm(name: str, params: dict[str, Any]) -> str:
    """The norm an attack's ε is measured in: its ``norm`` parameter, else L2 for ``*-l2`` attacks, else L∞."""
    norm = str(params.get("norm", "")).lower()
    if norm in ("l2", "linf"):
        return "L2" if norm == "l2" else "L∞"
    return "L2" if "l2" in name.lower().split("-") else "L∞"


def standing_sentences(results: dict[str, Any], nice, detector_names: dict[str, str]) -> list[str]:
    """One generated sentence per attack: the saliency detector's AUROC against each baseline's on the same data
    (ties: closer than the recorded margin)."""
    out = []
    for attack, st in results.get("standing", {}).items():
        def names(pairs):
            return ", ".join(f"{detector_names.get(k, k)} at {v:.2f}" for k, v in pairs)

        parts = [f"{verb} {names(st[key])}" for verb, key in (("beats", "beats"), ("ties", "ties"),
                                                              ("trails", "trails")) if st[key]]
        text = "; ".join(parts)
        out.append(f"On {nice(attack)} the saliency detector (AUROC {st['auroc']:.2f}) {text} (AUROC, ties closer "
                   f"than {st['margin']:g}).")
    return out


#: |ours − paper| from which the report calls a gap to a paper's MNIST number large and explains it.
LARGE_PAPER_GAP = 0.05


def _our_attack_setting(attack: str, results: dict[str, Any], nice) -> str:
    """How this run crafted ``attack``: its parameters (ε as budget-searched), for the comparison with a paper."""
    params = dict(results.get("attacks", {}).get(attack, {}).get("params", {}))
    if attack in results.get("epsilons", {}):
        params["eps"] = results["epsilons"][attack]["eps"]
    shown = ", ".join(f"{'ε' if k == 'eps' else k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                      for k, v in params.items())
    return f"{nice(attack)} {shown}" if shown else nice(attack)


def _comparable(row: dict[str, Any], quantity: str) -> float:
    """Our ``quantity`` ("auroc", or "d_adv" for a paper's detection rate) to set beside a paper's: on the successful
    adversarial examples of images F classifies correctly (the row's "restricted" value, the pairs the papers' code
    scores), else over all adversarial test images."""
    restricted = row.get("restricted", {}).get(quantity)
    return float(restricted) if restricted is not None and np.isfinite(restricted) else float(row[quantity])


def paper_comparison(results: dict[str, Any], nice, detector_names: dict[str, str]) -> str:
    """The "paper (table)" column in words: per baseline, its paper's MNIST number beside ours for each attack
    (the paper's attack named), the gaps of at least ``LARGE_PAPER_GAP`` explained by the settings that differ (the
    paper's, as its reference code has them, against this run's), or why the paper gives no number."""
    parts = []
    for kind, paper in results.get("paper_baselines", {}).items():
        name = detector_names.get(kind, kind)
        ours = results["baselines"].get(kind, {})
        values, their = paper.get("values", {}), paper.get("attacks", {})
        head = f"{name} — {paper['table']}"
        if not values:
            parts.append(f"{head}: {paper['note']}.")
            continue
        compared, large, missing = [], [], []
        for attack, r in ours.items():
            label = f"{nice(attack)} (paper: {their[attack]})" if attack in their else nice(attack)
            v = values.get(attack)
            if v is None:
                missing.append(label)
                continue
            ours_value = _comparable(r, paper.get("quantity", "auroc"))
            gap = ours_value - v
            compared.append(f"{label} {ours_value:.2f} here vs {v:.2f} ({gap:+.2f})")
            if abs(gap) >= LARGE_PAPER_GAP:
                large.append(f"{'below' if gap < 0 else 'above'} the paper on {nice(attack)} "
                             f"({_our_attack_setting(attack, results, nice)})")
        if values.get("overall") is not None and ours:
            mean_rate = float(np.mean([r["d_adv"] for r in ours.values()]))
            compared.append(f"mean D(x_adv) over {', '.join(nice(a) for a in ours)} {mean_rate:.2f} here vs "
                            f"{values['overall']:.2f} ({paper['metric']}, all its attacks)")
        text = f"{head} ({paper['metric']}): " + ("; ".join(compared) if compared else paper["note"])
        if compared and missing:
            text += f"; not retrieved for {', '.join(missing)}"
        if large:
            text += (f". Large gaps (≥ {LARGE_PAPER_GAP:g}): {'; '.join(large)} — the paper's MNIST setting: "
                     f"{paper.get('settings', 'see its code')}")
        parts.append(text + ".")
    attacked = [a for a in dict.fromkeys(a for per in results["baselines"].values() for a in per)]
    clf = results.get("classifier", {})
    cfg = results.get("config", {})
    here = (f"here F is {clf.get('architecture', 'the study classifier')} (test accuracy "
            f"{clf['test']['accuracy']:.3f})" if clf.get("test") else "here F is the study classifier")
    ours_setting = "; ".join(_our_attack_setting(a, results, nice) for a in attacked) or "no attack"
    return ("Against the papers' MNIST numbers (ours: on the successful adversarial examples of images F classifies "
            "correctly, the pairs Lee et al.'s and Xu et al.'s code score — the AUROC, or D(x_adv) at the calibrated "
            "threshold beside a detection rate): " + " ".join(parts) + " Where they differ, the settings do: "
            "Feinman et al.'s code attacks MNIST with FGSM/BIM ε = 0.30 (pixels in [0, 1]), Ma et al.'s with ε = "
            "0.40 (pixels in [−0.5, 0.5]) and Xu et al.'s with ε = 0.3 and C&W at 1000 iterations, confidence 10; "
            f"here ε is the smallest budget that brings F below {cfg.get('max_accuracy', 0.3):.0%} accuracy and "
            f"each attack is as run ({ours_setting}; BIM runs every step, as BIM-b), so the perturbations are "
            "smaller than the papers' and, as a rule, harder to detect; the papers' negatives include noisy "
            "copies of the clean images (Feinman et al., Ma et al.), here they are clean only; each paper uses its "
            "own network, "
            f"{here}, which has no dropout, so KD+BU's uncertainty comes from dropout hooked in at the last "
            f"hidden layer; and the detectors are fit on the configured {cfg.get('n_train', 'n_train')} training "
            "images per attack, where Feinman et al.'s and Ma et al.'s code attack the whole MNIST test set "
            "(10,000 images) and split it 80/20.")
