"""Report of the class-imbalance study: seed 002 Table 5.2 beside the thesis' numbers, vulnerability per
class (balanced vs depleted), the headline verdicts at the seed level, the paired tests (image and seed level,
Holm's correction; minimal ε as censored data: Kaplan–Meier medians and log-rank), success conditional on the
clean margin, confusion matrices, and the written conclusion.

Everything is drawn from the stored results (``results.json``); nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .charts import distributions, grouped_bars, matrix_heatmap
from .document import Report

#: Seed 002 Table 5.2 (CIFAR-10, one VGG-style network per dataset missing 4,000 of a class's 5,000 training
#: images): overall accuracy, validation loss, class-specific accuracy, delta (balanced − depleted class).
THESIS_TABLE52 = {
    "airplane": (0.8026, 0.5731, 0.69, 0.15), "automobile": (0.8185, 0.5424, 0.77, 0.11),
    "bird": (0.8075, 0.5797, 0.48, 0.32), "cat": (0.7931, 0.5966, 0.26, 0.43),
    "deer": (0.8136, 0.5497, 0.70, 0.15), "dog": (0.8196, 0.5525, 0.58, 0.17),
    "frog": (0.8338, 0.5071, 0.83, 0.05), "horse": (0.8239, 0.531, 0.69, 0.14),
    "ship": (0.8333, 0.5133, 0.80, 0.10), "truck": (0.8348, 0.5215, 0.80, 0.13),
}
#: Seed 002 §5.3: the balanced network on the full CIFAR-10 training set (Figure 5.2).
THESIS_BALANCED = (0.8345, 0.5033)

QUESTION_LABELS = {
    "own_accuracy_under_attack": "own acc. under attack",
    "own_success": "own success",
    "others_success": "others' success",
    "towards_success": "towards-d success",
    "landing_in_depleted": "landing in d",
    "descent_success": "away-from-d success",
    "own_min_eps": "own min ε",
    "others_min_eps": "others' min ε",
}
ATTACK_LABELS = {"fgsm": "FGSM", "bim": "BIM", "min_eps": "min-ε search"}
RATE_QUESTIONS = ("own_accuracy_under_attack", "own_success", "others_success", "towards_success",
                  "landing_in_depleted", "descent_success")


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _pm(mean: Any, std: Any, digits: int = 3, ci: dict[str, Any] | None = None) -> str:
    """"mean ± std" over seeds, followed by the 95% interval ``ci`` ("[lo, hi]") when one is stored."""
    m, s = _f(mean), _f(std)
    if np.isnan(m):
        return "–"
    text = f"{m:.{digits}f}" if np.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"
    lo, hi = (_f(ci.get("lo")), _f(ci.get("hi"))) if ci else (np.nan, np.nan)
    shown = np.isfinite(lo) and np.isfinite(hi) and lo < hi  # a constant statistic has no interval to show
    return text + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if shown else "")


def _signed(v: Any, digits: int, scale: float = 1.0, star: bool = False) -> str:
    x = _f(v)
    return "–" if np.isnan(x) else f"{x * scale:+.{digits}f}{'*' if star else ''}"


def _arr(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _nanmean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else float("nan")


def _method_paragraphs(rep: Report, results: dict[str, Any]) -> None:
    cfg = results["config"]
    m, att, me = cfg["classifier"], cfg["attacks"], cfg["min_eps"]
    removal = cfg["removal"]
    removed = f"{removal:.0%} of" if isinstance(removal, float) else f"{removal} of the"
    training = f"optimiser {m['optimizer']} lr {m['lr']:g}"
    if m["lr_decay"]:
        training += f" decay {m['lr_decay']:g}"
    training += f", batch {m['batch_size']}, at most {m['epochs']} epochs"
    if m["patience"]:
        monitored = (f"the loss on a {cfg['val_fraction']:.0%} validation split" if cfg["val_fraction"]
                     else "the training loss")
        training += f", early stopping δ = {m['min_delta']:g} patience {m['patience']} on {monitored}"
    data = results["data"]
    rep.paragraph(
        f"Seed 002 (Possas 2017) on {cfg['data']['name']}: {data['train']}; {data['test']}. Per seed "
        f"({', '.join(map(str, cfg['seeds']))}) one balanced {m['architecture']} and one per depleted class, "
        f"each trained without {removed} that class's training images (advsal.data.deplete_class; the "
        f"removed images differ per seed); {training}.")
    rep.paragraph(
        f"Attacks (L∞, pixel units) on {data['attack_set']}, the same images for every model and seed: FGSM "
        f"ε = {att['fgsm_eps']:g} and BIM (iterative FGSM) ε = {att['bim_eps']:g} with {att['bim_steps']} "
        "steps of 2.5·ε/steps — untargeted (seed 002 §3.5 'ascent'), targeted towards the depleted class d "
        "on the other classes' images and, on d's images, targeted away from d towards a seeded random other "
        "class (§3.5 'descent'). Minimal ε per example (advsal.attacks.minimal_epsilon_per_example): BIM at "
        f"ε = {me['eps_max']:g}, then bisection of [0, {me['eps_max']:g}] with {me['probes']} halvings (resolution "
        f"{me['eps_max'] / 2 ** me['probes']:.4f}, BIM with {me['steps']} steps), on "
        f"{data['min_eps_per_class']} images per class; images never fooled up to ε_max are right-censored there "
        "(at least ε_max): medians are Kaplan–Meier medians ('> ε_max' where more than half were never fooled), "
        "the image-level test is the log-rank test, and means are restricted means of min(ε, ε_max).")


def imbalance_findings(results: dict[str, Any]) -> list[dict[str, str]]:
    """The verdicts the report opens with (``{"text", "section"}``): accuracy (Table 5.2, a direction only outside
    the 95% intervals), the generated conclusions on vulnerability (the paired tests, seed-level intervals), and
    how many comparisons are significant."""
    from ..studies.imbalance.analysis import accuracy_conclusion

    out = []
    rows = (results.get("table52") or {}).get("rows")
    accuracy = accuracy_conclusion(rows, results["classes"]) if rows and results.get("classes") else None
    if accuracy:  # computed from Table 5.2's stored numbers and intervals
        out.append({"text": accuracy, "section": "table-5-2"})
    for line in results.get("conclusions", []):
        if line.startswith("Depletion ") and not accuracy:
            out.append({"text": line, "section": "table-5-2"})
        elif line.startswith(("Answer:", "Adversarial examples of the other classes")):
            out.append({"text": line, "section": "vulnerability"})
    tests = results.get("tests", [])
    if tests:
        n_sig = sum(1 for t in tests if t["significant"])
        alpha = results.get("config", {}).get("alpha")
        out.append({"text": f"{n_sig} of {len(tests)} paired comparisons (depleted vs balanced model, same images) "
                            f"are significant after Holm's correction (α = {alpha:g}) at the image level (these "
                            f"trained models); {sum(1 for t in tests if t.get('direction', 'none') != 'none')} "
                            "also at the seed level with every seed agreeing (a stated direction).",
                    "section": "tests"})
    return out[:6]


def render_imbalance_report(run_dir: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    fig_dir = run_dir / "figures"
    cfg = results["config"]
    names: list[str] = results["classes"]
    depleted: list[int] = results["depleted_classes"]
    seeds = cfg["seeds"]
    vul = results["vulnerability"]
    tests = results["tests"]

    rep = Report("Class imbalance and adversarial vulnerability — study report")
    rep.set_provenance(results.get("provenance"))
    rep.set_findings(imbalance_findings(results))
    rep.heading("Setup", anchor="setup")
    _method_paragraphs(rep, results)

    rep.heading("Conclusion (generated from the measured numbers)")
    rep.bullets(results["conclusions"])
    rep.paragraph(
        "Tests: for every depleted class d, attack and question, the baseline is the balanced model of the same "
        "seed on the same images — those both classify correctly, so clean errors do not count as attack "
        "success (except 'own acc. under attack', which uses all of d's images). Image level: the paired "
        "per-image differences of all seeds pooled, two-sided sign-flip permutation test "
        f"({cfg['permutations']} resamples, exact below 17 non-zero differences); for the minimal ε the log-rank "
        "test on the censored values instead. It speaks for these trained models. Seed level: the per-seed mean "
        "differences, one-sample t-test over seeds with its 95% interval — it speaks for depletion over "
        f"training randomness. Each family of {len(tests)} p-values is Holm-corrected at α = {cfg['alpha']:g}. "
        "A direction is stated only where both levels are significant and every seed moved the same way.")
    _headline_table(rep, results)

    _table52(rep, results)

    labels = ["balanced", *[f"deplete{d}" for d in depleted]]
    row_names = ["balanced", *[f"−{names[d]}" for d in depleted]]
    acc = np.array([_arr(vul[lab]["per_class_accuracy"]) for lab in labels])
    rep.figure(matrix_heatmap(acc, row_names, names, fig_dir / "per_class_accuracy.png",
                              "test accuracy per class (mean over seeds)", "class", "model", vmin=0, vmax=1),
               "Per-class test accuracy of the balanced model and of each depleted model (rows; '−c' = "
               "trained without most of class c).")

    _vulnerability_section(rep, results, fig_dir)

    rep.heading("Vulnerability per model and class")
    att = cfg["attacks"]
    for a in ("fgsm", "bim"):
        mat = np.array([_arr(vul[lab][f"{a}.success_rate"]) for lab in labels])
        rep.figure(matrix_heatmap(mat, row_names, names, fig_dir / f"success_{a}.png",
                                  f"{ATTACK_LABELS[a]} untargeted success rate", "true class", "model",
                                  vmin=0, vmax=1),
                   f"{ATTACK_LABELS[a]} (ε = {att[f'{a}_eps']:g}) untargeted success rate per true class, "
                   "over each model's correctly classified attack images (mean over seeds).")
    mat = np.array([_arr(vul[lab]["bim.landing_share"]) for lab in labels])
    rep.figure(matrix_heatmap(mat, row_names, names, fig_dir / "landing_bim.png",
                              "where BIM adversarial examples land", "adversarial prediction", "model",
                              vmin=0),
               "Share of the other classes' successful untargeted BIM adversarial examples that are "
               "predicted as the column class (mean over seeds). A depleted model's entry in its own class's "
               "column, against the balanced row, says whether d pulls adversarial examples in or pushes "
               "them away.")
    rows = []
    for lab, rn in zip(labels, row_names, strict=True):
        v = vul[lab]
        rows.append([rn, *[_f(x) for x in v["bim.success_rate"]], _nanmean(_arr(v["bim.mean_confidence"])),
                     _eps(_median_over_classes(v["min_eps.median"]), cfg["min_eps"]["eps_max"])])
    rep.table(["model", *[f"BIM succ. {n}" for n in names], "mean adv. confidence", "median min ε"], rows,
              caption="BIM untargeted success per class; mean softmax confidence of the successful "
                      "adversarial predictions (averaged over classes; means over seeds); median over classes "
                      "of the per-class Kaplan–Meier median minimal ε (seeds pooled; '> ε_max' where more "
                      "than half of the images were never fooled).")

    rep.heading("All paired tests", anchor="tests")
    rows = []
    for t in tests:
        digits = 4 if t["question"].endswith("min_eps") else 3
        ci = t.get("ci") or {}
        diff = ci.get("difference")
        rows.append([names[t["class"]], ATTACK_LABELS[t["attack"]], QUESTION_LABELS[t["question"]],
                     _pm(t["balanced_mean"], t["balanced_std"], digits, ci.get("balanced")),
                     _pm(t["depleted_mean"], t["depleted_std"], digits, ci.get("depleted")),
                     _signed(t["difference"], digits)
                     + (" " + _interval(diff["lo"], diff["hi"], digits)
                        if diff and np.isfinite(_f(diff["lo"])) and np.isfinite(_f(diff["hi"]))
                        and _f(diff["lo"]) < _f(diff["hi"]) else ""),
                     "log-rank" if t["attack"] == "min_eps" else "sign-flip", t["n_pairs"],
                     _f(t["p_value"]), _f(t["p_holm"]), f"{t['seeds_up']}↑ {t['seeds_down']}↓",
                     _interval(t.get("seed_lo"), t.get("seed_hi"), digits), _f(t.get("seed_p_holm")),
                     t.get("direction", "–")])
    rep.table(["depleted class", "attack", "question", "balanced", "depleted", "difference", "image test",
               "pairs", "p", "p (Holm)", "seeds", "seed 95% CI", "seed p (Holm)", "direction"], rows, digits=4,
              caption="Baseline of every row: the balanced model of the same seed on the same images. Rates: "
                      "mean ± std over seeds [95% percentile-bootstrap interval over the attack images, the same "
                      "images resampled for every seed and both models; the Wilson interval where every "
                      "outcome is 0 or every one is 1]; the difference is pooled over seeds × images, with its "
                      "bootstrap interval. Image "
                      "test: sign-flip permutation over seeds × images, or for min ε the log-rank test "
                      "(never-fooled images censored at ε_max; means there are restricted means). Seed level: "
                      "one-sample t over the per-seed mean differences (interval: Student t). Direction: "
                      "stated only when both Holm-adjusted p-values are below α and all seeds agree.")
    _km_table(rep, results)
    _margin_table(rep, results)

    rep.heading("Confusion matrices (test set, summed over seeds)")
    for lab, rn in zip(labels, row_names, strict=True):
        cm = np.array(vul[lab]["confusion"], dtype=float)
        total = cm.sum(1, keepdims=True)
        norm = np.divide(cm, total, out=np.zeros_like(cm), where=total > 0)
        rep.figure(matrix_heatmap(norm, names, names, fig_dir / f"confusion_{lab}.png", f"confusion: {rn}",
                                  "predicted", "true", vmin=0, vmax=1),
                   f"Row-normalised test confusion matrix of the {rn} model ({len(seeds)} seed(s) summed).")

    rep.timings(results.get("timings", []))
    return rep.write(run_dir)


def _table52(rep: Report, results: dict[str, Any]) -> None:
    cfg, names, t52 = results["config"], results["classes"], results["table52"]
    rep.heading("Table 5.2 — per-dataset performance (thesis layout)", anchor="table-5-2")
    cifar = str(cfg["data"]["name"]).startswith("cifar10")
    headers = ["depleted class", "train images of class", "overall accuracy", "test loss",
               "class-specific accuracy", "delta (balanced − depleted)"]
    if cifar:
        headers += ["thesis accuracy", "thesis val. loss", "thesis class acc.", "thesis delta"]
    b = t52["balanced"]
    counts = results["data"]["train_counts"]
    rows: list[list[Any]] = [["(balanced)", f"{min(counts)}–{max(counts)}",
                              _pm(b["accuracy"], b["accuracy_std"], 4, (b.get("ci") or {}).get("accuracy")),
                              _pm(b["loss"], b["loss_std"], 4), "–", "–"]]
    if cifar:
        rows[0] += [THESIS_BALANCED[0], THESIS_BALANCED[1], None, None]
    for r in t52["rows"]:
        ci = r.get("ci") or {}
        row = [names[r["class"]], r["train_count"], _pm(r["accuracy"], r["accuracy_std"], 4, ci.get("accuracy")),
               _pm(r["loss"], r["loss_std"], 4),
               _pm(r["class_accuracy"], r["class_accuracy_std"], 3, ci.get("class_accuracy")),
               _pm(r["class_accuracy_delta"], r["class_accuracy_delta_std"])]
        if cifar:
            row += list(THESIS_TABLE52.get(names[r["class"]], (None,) * 4))
        rows.append(row)
    caption = ("Mean ± std over seeds [95% Wilson binomial interval of the correct count pooled over seeds × test "
               "images: it reflects the test-image sample, the ± std the spread over seeds]; loss = mean "
               "cross-entropy on the test set (the thesis' 'validation loss' is measured on its test set too).")
    if not cifar:
        caption += (" The thesis' numbers are for CIFAR-10 (preset configs/imbalance-cifar10.yaml) and are "
                    "listed below the table, not beside it: this dataset is not comparable with them.")
    rep.table(headers, rows, caption=caption, digits=4)
    if not cifar:
        rep.paragraph("Thesis Table 5.2 (CIFAR-10; accuracy / validation loss / class accuracy / delta): "
                      + "; ".join(f"{k} {v[0]:.2%} / {v[1]:.4f} / {v[2]:.0%} / {v[3]:.0%}"
                                  for k, v in THESIS_TABLE52.items())
                      + f"; balanced {THESIS_BALANCED[0]:.2%} / {THESIS_BALANCED[1]:.4f}.")


def _vulnerability_section(rep: Report, results: dict[str, Any], fig_dir: Path) -> None:
    names, depleted, tests = results["classes"], results["depleted_classes"], results["tests"]
    seeds = results["config"]["seeds"]
    rep.heading("Does depleting a class change its vulnerability? (depleted − balanced, paired)",
                anchor="vulnerability")
    by = {(t["class"], t["attack"], t["question"]): t for t in tests}
    cols = [(a, q) for a in ("fgsm", "bim") for q in RATE_QUESTIONS]
    delta = np.array([[_f(by[(d, a, q)]["difference"]) if (d, a, q) in by else np.nan for a, q in cols]
                      for d in depleted]) * 100
    col_names = [f"{ATTACK_LABELS[a]} {QUESTION_LABELS[q]}" for a, q in cols]
    lim = float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 1.0
    rep.figure(matrix_heatmap(delta, [names[d] for d in depleted], col_names, fig_dir / "delta_heatmap.png",
                              "depleted − balanced (percentage points)", "metric", "depleted class",
                              fmt="{:+.1f}", vmin=-lim, vmax=lim or 1.0, cmap="RdBu_r"),
               "Class × metric: paired mean difference, depleted − balanced, in percentage points. 'own' = "
               "images of the depleted class d, 'others' = images of the other classes, 'landing in d' = "
               "other classes' untargeted adversarial predictions that are d.")
    rows = []
    for d in depleted:
        row: list[Any] = [names[d]]
        for a, q in [*cols, ("min_eps", "own_min_eps"), ("min_eps", "others_min_eps")]:
            t = by.get((d, a, q))
            if t is None:
                row.append("–")
            elif q.endswith("min_eps"):
                row.append(_signed(t["difference"], 4, star=t["significant"]))
            else:
                row.append(_signed(t["difference"], 1, 100, star=t["significant"]))
        rows.append(row)
    rep.table(["depleted class", *col_names, "own min ε", "others' min ε"], rows,
              caption="Paired mean differences (depleted − balanced): rates in percentage points, ε in pixel "
                      "units; * = significant after Holm. Their 95% bootstrap intervals over the attack images "
                      "are in the tests table below.")

    bars = [("bim", "own_success", "BIM success rate"), ("fgsm", "own_success", "FGSM success rate"),
            ("bim", "own_accuracy_under_attack", "accuracy under BIM"),
            ("min_eps", "own_min_eps", "minimal ε"), ("bim", "towards_success", "success towards d"),
            ("bim", "landing_in_depleted", "share landing in d")]
    for a, q, ylabel in bars:
        rs = [by.get((d, a, q)) for d in depleted]
        if not all(rs):
            continue
        cats = [names[d] + ("*" if r["significant"] else "") for d, r in zip(depleted, rs, strict=True)]
        vals = {"balanced": [_f(r["balanced_mean"]) for r in rs],
                "depleted": [_f(r["depleted_mean"]) for r in rs]}
        errs = {k: [0.0 if np.isnan(_f(r[f"{k}_std"])) else _f(r[f"{k}_std"]) for r in rs]
                for k in ("balanced", "depleted")}
        path = grouped_bars(vals, cats, fig_dir / f"bars_{a}_{q}.png", errs,
                            f"{ATTACK_LABELS[a]}: {QUESTION_LABELS[q]}", ylabel)
        rep.figure(path, f"{ATTACK_LABELS[a]}, {QUESTION_LABELS[q]}: balanced vs depleted model for each "
                         f"depleted class d (x axis), mean ± std over {len(seeds)} seed(s); * = significant "
                         "after Holm.")

    vul = results["vulnerability"]
    rows = []
    for d in depleted:
        row: list[Any] = [names[d]]
        bal, dep = vul["balanced"], vul[f"deplete{d}"]
        for a in ("fgsm", "bim"):
            conf, land = f"{a}.mean_confidence", f"{a}.landing_share"
            pooled = f"{land}.pooled"  # pooled over seeds, with its Wilson interval
            row += [_f(bal[conf][d]), _f(dep[conf][d]), bal[pooled][d] if pooled in bal else _f(bal[land][d]),
                    dep[pooled][d] if pooled in dep else _f(dep[land][d])]
        rows.append(row)
    rep.table(["depleted class d", *[f"{ATTACK_LABELS[a]} {what}" for a in ("fgsm", "bim")
                                     for what in ("conf. balanced", "conf. depleted", "lands in d balanced",
                                                  "lands in d depleted")]], rows,
              caption="Mean softmax confidence of the successful untargeted adversarial predictions on d's "
                      "images (mean over seeds), and the share of the other classes' successful adversarial "
                      "examples that land in d (pooled over seeds, with its 95% Wilson binomial interval); each "
                      "model on its own correctly classified images (descriptive).")

    samples: dict[str, np.ndarray] = {}
    for d in depleted:
        for lab, short in (("balanced", "bal"), (f"deplete{d}", "dep")):
            vals = [v for s in seeds for v in results["models"][str(s)][lab]["min_eps"]["values"][d]]
            samples[f"{names[d]} {short}"] = np.array(vals, dtype=float)
    rep.figure(distributions(samples, fig_dir / "min_eps_distributions.png",
                             "minimal ε of the depleted class's images", "minimal L∞ ε"),
               "Per-example minimal ε (BIM bisection) of each depleted class's images that the model "
               "classifies correctly, balanced ('bal') vs depleted ('dep') model, pooled over seeds; images "
               "never fooled are drawn at ε_max, where they are censored (the true ε is larger).")


def _interval(lo: Any, hi: Any, digits: int, scale: float = 1.0) -> str:
    a, b = _f(lo), _f(hi)
    return "–" if not (np.isfinite(a) and np.isfinite(b)) else f"[{a * scale:+.{digits}f}, {b * scale:+.{digits}f}]"


def _eps(v: Any, eps_max: float) -> str:
    x = _f(v)
    return "–" if np.isnan(x) else (f"> {eps_max:g}" if x > eps_max else f"{x:.4f}")


def _headline_table(rep: Report, results: dict[str, Any]) -> None:
    """The headline questions at the seed level (the verdicts of the report's answer sentence)."""
    from ..studies.imbalance.analysis import headline_tests

    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in results["tests"]:
        by_key.setdefault((t["attack"], t["question"]), []).append(t)
    heads = headline_tests(by_key, results["config"]["alpha"])
    rows = []
    for h in heads:
        sc, dg = h["scale"], h["digits"]
        rows.append([h["what"], h["test"], h["baseline"], _signed(h["estimate"], dg, sc),
                     _interval(h["lo"], h["hi"], dg, sc), ", ".join(_signed(v, dg, sc) for v in h["seed_means"]),
                     _f(h["p_holm"]), f"{h['image_up']}↑ {h['image_down']}↓ of {h['n_classes']}",
                     h["direction"]])
    rep.table(["question", "test", "baseline", "depleted − balanced", "95% CI (seeds)", "per seed", "p (Holm)",
               "classes significant (image level)", "direction"], rows, digits=4,
              caption="Headline verdicts: per seed, the difference averaged over the depleted classes; rates in "
                      "percentage points, ε in pixel units. A direction needs a significant seed-level test "
                      "and agreement of every seed.")


def _km_table(rep: Report, results: dict[str, Any]) -> None:
    names, eps_max = results["classes"], results["config"]["min_eps"]["eps_max"]
    rows = []
    for t in results["tests"]:
        if t["attack"] != "min_eps" or "km_balanced" not in t:
            continue
        kb, kd = t["km_balanced"], t["km_depleted"]
        rows.append([names[t["class"]], QUESTION_LABELS[t["question"]],
                     f"{_eps(kb['median'], eps_max)} [{_eps(kb['lo'], eps_max)}, {_eps(kb['hi'], eps_max)}]",
                     f"{_eps(kd['median'], eps_max)} [{_eps(kd['lo'], eps_max)}, {_eps(kd['hi'], eps_max)}]",
                     _f(t.get("censored_balanced")), _f(t.get("censored_depleted")), _f(t.get("logrank_z")),
                     _f(t["p_value"]), _f(t["p_holm"])])
    if rows:
        rep.table(["depleted class", "question", "KM median ε balanced [95% CI]", "KM median ε depleted [95% CI]",
                   "censored balanced", "censored depleted", "log-rank z", "p", "p (Holm)"], rows, digits=4,
                  caption="Minimal ε as right-censored data (never fooled up to ε_max = at least ε_max): "
                          "Kaplan–Meier medians with their log-log intervals, seeds' images pooled; log-rank "
                          "test depleted vs balanced (z > 0: the depleted model's images are fooled at smaller "
                          "ε); baseline: the balanced model of the same seed on the same images.")


def _margin_table(rep: Report, results: dict[str, Any]) -> None:
    names = results["classes"]
    rows = []
    for t in results["tests"]:
        m = t.get("margin")
        if not m:
            continue
        rows.append([names[t["class"]], ATTACK_LABELS[t["attack"]], QUESTION_LABELS[t["question"]],
                     _signed(t["difference"], 1, 100), _signed(m["estimate"], 1, 100),
                     _interval(m.get("lo"), m.get("hi"), 1, 100), _f(m["p"]), _f(m.get("p_holm")),
                     _f(m["margin_balanced"]), _f(m["margin_depleted"])])
    if rows:
        rep.heading("Vulnerability conditional on the clean margin", anchor="margin")
        rep.table(["depleted class", "attack", "question", "both-correct difference", "margin-adjusted",
                   "95% CI (seeds)", "p", "p (Holm)", "median clean log-odds balanced",
                   "median clean log-odds depleted"], rows, digits=4,
                  caption="Depleted − balanced untargeted success in percentage points, each model on its own "
                          "correctly classified images, stratified by the clean log-odds of the true class "
                          "(quartiles pooled over models and seeds), Mantel–Haenszel-weighted; test: model "
                          "labels permuted within seed × stratum; baseline: the balanced model of the same "
                          "seed; interval: Student t over the per-seed adjusted differences. The last two "
                          "columns show the margin shift that the both-correct comparison does not control.")


def _median_over_classes(values: list[Any]) -> float:
    a = _arr(values)
    a = a[~np.isnan(a)]  # +inf (stored as 1e308) stays: a median beyond ε_max
    return float(np.median(a)) if len(a) else float("nan")
