"""Report of the attention study (seed 004): the paper's figure grids, metric distributions, PGD vs Pixel
Attack, and one row per claim of the paper with its measured evidence and verdict."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .charts import distributions, line_plot
from .document import Report
from .figures import saliency_grid

NICE = {"pgd": "PGD L∞", "pgd-early": "PGD L∞ stopped at 1st misclassification", "pixel": "Pixel Attack (pooled)"}


def _nice(group: str) -> str:
    if group in NICE:
        return NICE[group]
    if group.startswith("pixel"):
        return f"Pixel Attack {group[5:]} px"
    return group


def _fmt_ci(agg: dict[str, Any] | None) -> str:
    if not agg or agg.get("n", 0) == 0 or agg.get("mean") is None:
        return "–"
    mean, lo, hi = agg["mean"], agg.get("lo"), agg.get("hi")
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _figure_maps(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    stored = run_dir / "figure_maps.safetensors"
    if not stored.is_file():
        return {}
    from safetensors.torch import load_file

    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(stored)).items():
        group, name = key.split("/", 1)
        out.setdefault(group, {})[name] = value.numpy()
    return out


def _six_panel(maps: dict[str, np.ndarray], last: str, path: Path, title_suffix: str = "") -> Path:
    """Seed 004 Figs. 2–7 in one grid: rows = SM and AM w.r.t. predicted, true C and adversarial Ĉ class."""
    rows = {
        "SM predicted (x:C | x̂:Ĉ)": (maps["sm:x_c"], maps["sm:a_d"]),
        "SM true class C": (maps["sm:x_c"], maps["sm:a_c"]),
        "SM adversarial class Ĉ": (maps["sm:x_d"], maps["sm:a_d"]),
        f"AM {last} predicted": (maps[f"cam:{last}:x_c"], maps[f"cam:{last}:a_d"]),
        f"AM {last} true C": (maps[f"cam:{last}:x_c"], maps[f"cam:{last}:a_c"]),
        f"AM {last} adv. Ĉ": (maps[f"cam:{last}:x_d"], maps[f"cam:{last}:a_d"]),
    }
    titles = [f"{int(c)} → {int(d)}{title_suffix}" for c, d in zip(maps["c"], maps["d"], strict=True)]
    return saliency_grid(maps["x"], maps["a"], rows, titles, path)


def _layer_panel(maps: dict[str, np.ndarray], layers: list[str], path: Path) -> Path:
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for lay in layers:
        rows[f"AM {lay} true C"] = (maps[f"cam:{lay}:x_c"], maps[f"cam:{lay}:a_c"])
    for lay in layers:
        rows[f"AM {lay} adv. Ĉ"] = (maps[f"cam:{lay}:x_d"], maps[f"cam:{lay}:a_d"])
    titles = [f"{int(c)} → {int(d)}" for c, d in zip(maps["c"], maps["d"], strict=True)]
    return saliency_grid(maps["x"], maps["a"], rows, titles, path, overlay=True)


#: The statistical test behind each kind of claim test, as the report names it.
TEST_NAMES = {"paired": "Wilcoxon signed-rank (paired)", "matched": "Wilcoxon signed-rank, images both broke",
              "equivalence": "TOST equivalence (paired t)", "correlation": "Spearman ρ",
              "threshold": "bootstrap median", "count": "share of compared metrics",
              "rate": "exact binomial test"}


def _interval(test: dict[str, Any]) -> str:
    lo, hi = _num(test.get("lo")), _num(test.get("hi"))
    level = "90%" if test["kind"] == "equivalence" else "95%"
    return f"{level} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "no interval (n too small)"


def _evidence(test: dict[str, Any]) -> str:
    """One test's measured evidence: estimate, interval, effect, n and the baseline it is compared with."""
    kind = test["kind"]
    n = test.get("n", 0)
    est, eff = _num(test.get("estimate")), _num(test.get("effect"))
    base = f" vs {test['baseline']}" if test.get("baseline") else ""
    if kind in ("paired", "matched"):
        text = f"mean Δ {est:+.3f} {_interval(test)}, dominance {eff:+.2f}, n={n}"
    elif kind == "equivalence":
        text = f"mean Δ {est:+.3f} {_interval(test)} within ±{_num(test.get('margin')):g}?, n={n}"
    elif kind == "correlation":
        text = f"Spearman ρ {eff:+.2f} {_interval(test)}, n={n}"
    elif kind == "rate":
        text = f"share {est:.2f} {_interval(test)} (Clopper-Pearson), n={n}"
    elif kind == "threshold":
        text = f"median {est:.3f} [{_num(test.get('lo')):.3f}, {_num(test.get('hi')):.3f}], n={n}"
    else:
        text = f"share {est:.2f} {_interval(test)} (Clopper-Pearson) of the compared metrics, n ≥ {n} images"
    return f"{TEST_NAMES.get(kind, kind)}: {text}{base}"


#: The claims the report opens with, in this order (the paper's headline claims and the PGD-vs-Pixel contrast).
HEADLINE = ("pgd-distorts-true-cam", "pgd-keeps-roi", "pgd-diffuses", "pixel-shifts-roi", "attacks-differ",
            "pixel-cam-toward-or-away")


def _rate_text(iv: dict[str, Any] | None, value: Any) -> str:
    """``0.990 [95% CI 0.964, 0.999]`` (the bare value without a stored interval)."""
    lo, hi = (_num(iv.get("lo")), _num(iv.get("hi"))) if iv else (math.nan, math.nan)
    v = _num(iv["estimate"]) if iv else _num(value)
    return f"{v:.3f} [95% CI {lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{v:.3f}"


def attacks_finding(results: dict[str, Any]) -> dict[str, str] | None:
    """How often each attack fooled the classifier, with the exact binomial interval of each success rate."""
    attacks = results.get("attacks") or {}
    if not attacks:
        return None
    parts = [f"{_nice(name)} {a['n_success']} of {a['n_attacked']} "
             f"({_rate_text((a.get('ci') or {}).get('success_rate'), a['success_rate'])})"
             for name, a in attacks.items()]
    return {"text": "Attack success on the correctly classified test images (exact binomial 95% intervals): "
                    + "; ".join(parts) + ". Every saliency result below is measured on the successful examples.",
            "section": "attacks"}


def attention_findings(results: dict[str, Any]) -> list[dict[str, str]]:
    """The verdicts the report opens with (``{"text", "section"}``): the attacks' success rates with their
    intervals, then five claims of seed 004 (``HEADLINE`` first), each with its verdict and the first test's
    measured evidence, baseline and interval."""
    out = []
    attacks = attacks_finding(results)
    if attacks:
        out.append(attacks)
    claims = results.get("claims", [])
    rank = {cid: i for i, cid in enumerate(HEADLINE)}
    for c in sorted(claims, key=lambda c: rank.get(c["id"], len(rank)))[:6 - len(out)]:
        tests = c.get("tests", [])
        evidence = f" — {tests[0]['label']}: {_evidence(tests[0])} → {tests[0]['outcome']}" if tests else ""
        n_conf = sum(t["outcome"] == "confirmed" for t in tests)
        claim = c["claim"].rstrip(".")
        out.append({"text": f"{claim} ({c['source']}): {c['verdict']}, {n_conf} of {len(tests)} tests "
                            f"confirmed{evidence}.", "section": "claims"})
    return out


def render_attention_report(run_dir: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    fig_dir = run_dir / "figures"
    cfg = results["config"]
    layers: list[str] = results["layers"]
    last = layers[-1]
    clf = results["classifier"]
    trained = "as given" if clf.get("given") else f"trained {clf['epochs_run']} epochs"
    rep = Report("Attention under attack — study report (seed 004)")
    rep.set_provenance(results.get("provenance"))
    rep.set_findings(attention_findings(results))
    rep.heading("Setup", anchor="setup")
    rep.paragraph(
        f"Reproduces seed 004 (Kotyan & Vargas, \"Deep neural network loses attention to adversarial "
        f"images\") on {cfg['data']['name']}: {results['data']['train']}; {results['data']['test']}. "
        f"Classifier {clf['architecture']} {trained} (test accuracy "
        f"{clf['test']['accuracy']:.4f}). {cfg['n_images']} correctly classified test images are attacked by "
        f"every attack; the analysis uses the successful adversarial examples. Saliency maps SM: guided "
        f"backpropagation (|·|, max over channels); activation maps AM: Grad-CAM of {', '.join(layers)} (the "
        f"last one is the last convolutional stage). x = original, x̂ = adversarial, C = true class, Ĉ = "
        f"adversarial class; the predicted class is C on x and Ĉ on x̂.")

    rep.heading("Attacks", anchor="attacks")
    rows = []
    for name, a in results["attacks"].items():
        spec = a["spec"]
        params = (f"ε={spec['eps']:g}, {spec['steps']} steps" if spec["kind"] == "pgd" else
                  f"ε={spec['eps']:g}, ≤ {spec['steps']} steps (mean {_num(a.get('mean_steps')):.1f})"
                  if spec["kind"] == "pgd-early" else
                  f"{spec['pixels']} px, population {spec['population']} × {spec['generations']} generations")
        ci = a.get("ci") or {}
        rows.append([_nice(name), params, a["n_attacked"], a["n_success"], ci.get("success_rate", a["success_rate"]),
                     a.get("mean_linf"), a.get("mean_l0"), a.get("mean_queries"),
                     ci.get("control_flips", a.get("control_flips")), a["cpu_seconds"]])
    rep.table(["attack", "settings", "attacked", "successful", "success rate", "mean L∞ (succ.)",
               "mean L0 px (succ.)", "mean queries", "random control flips", "attack CPU s"], rows,
              caption="Pixel Attack runs with a reduced differential-evolution budget (Su et al.: population "
                      "400 × "
                      "100 generations); 'random control flips' = share of the random same-budget "
                      "perturbations that change the prediction. Brackets: exact (Clopper–Pearson) 95% binomial "
                      "intervals (success: of the attacked images; control flips: of the successful examples).")
    pool = results.get("pixel_pool", {})
    rep.paragraph("The pooled Pixel Attack group has one example per image — its successful run with the "
                  f"fewest "
                  f"pixels: {pool.get('n', 0)} images ("
                  + ", ".join(f"{k} px: {v}" for k, v in pool.get("pixels", {}).items()) + ").")

    maps = _figure_maps(run_dir)
    if maps:
        rep.heading("Saliency and activation maps (seed 004 Figs. 2–7 layout)")
        for group, m in maps.items():
            if "sm:x_c" not in m:
                continue
            rep.figure(_six_panel(m, last, fig_dir / f"maps_{group}.png"),
                       f"{_nice(group)}: original (left) vs adversarial (right) per example; rows: SM w.r.t. "
                       f"the predicted class (Fig. 2), the true class C (Fig. 3), the adversarial class Ĉ "
                       f"(Fig. 4); Grad-CAM of {last} w.r.t. predicted (Fig. 5), C (Fig. 6), Ĉ (Fig. 7). "
                       f"Each pair shares one colour scale.")
        if len(layers) > 1:
            for group in ("pgd", *(g for g in maps if g.startswith("pixel"))):
                if group in maps and "sm:x_c" in maps[group]:
                    rep.figure(_layer_panel(maps[group], layers, fig_dir / f"layers_{group}.png"),
                               f"{_nice(group)}: Grad-CAM per layer (shallow → deep) w.r.t. C and Ĉ, "
                               f"overlaid.")
                    break

    rep.heading("Attention metrics per attack (mean [95% CI])")
    agg = results["aggregates"]
    groups = [g for g in agg if agg[g]]
    metric_rows = [
        ("sm:entropy:x_c", "SM entropy x:C (0–1)"), ("sm:entropy:a_d", "SM entropy x̂:Ĉ"),
        ("sm:entropy:a_c", "SM entropy x̂:C"), ("sm:spread:x_c", "SM spread x:C (px)"),
        ("sm:spread:a_d", "SM spread x̂:Ĉ (px)"), ("sm:iou:pred", "SM top-k IoU x:C vs x̂:Ĉ"),
        ("sm:iou:pred_shuffled", "… vs another image's x̂:Ĉ"), ("sm:iou:true", "SM top-k IoU w.r.t. C"),
        ("sm:iou:adv", "SM top-k IoU w.r.t. Ĉ"), ("sm:rank:pred", "SM rank corr. x:C vs x̂:Ĉ"),
        ("sm:rank:true", "SM rank corr. w.r.t. C"),
        ("sm:rank:true_ctrl", "SM rank corr. w.r.t. C, random ctrl"),
        ("sm:com:pred", "SM centre-of-mass shift (px)"), ("sm:near:x_c", "SM mass near perturbed px, x:C"),
        ("sm:near:a_d", "SM mass near perturbed px, x̂:Ĉ"), ("sm:near:chance", "area share (chance)"),
        (f"cam:{last}:iou:pred", f"AM {last} IoU x:C vs x̂:Ĉ"),
        (f"cam:{last}:iou:pred_shuffled", "… vs another image's x̂:Ĉ"),
        (f"cam:{last}:near:x_c", f"AM {last} mass near perturbed px, x:C"),
        (f"cam:{last}:near:a_d", f"AM {last} mass near perturbed px, x̂:Ĉ"),
    ]
    for lay in layers:
        metric_rows += [(f"cam:{lay}:retained:c", f"AM {lay} energy retained w.r.t. C (x̂/x)"),
                        (f"cam:{lay}:retained:ctrl_c", "… under the random control"),
                        (f"cam:{lay}:retained:d", f"AM {lay} energy ratio w.r.t. Ĉ (x̂/x)"),
                        (f"cam:{lay}:peak:true", f"AM {lay} peak shift w.r.t. C (px)")]
    rows = [[label, *[_fmt_ci(agg[g].get(key)) for g in groups]] for key, label in metric_rows]
    rep.table(["metric", *[_nice(g) for g in groups]], rows,
              caption=f"Top-k = top {cfg['top_fraction']:.0%} of pixels "
                      f"(chance IoU ≈ {results['chance_iou']:.3f}); "
                      f"'near' = within {cfg['radius']:g} px of a perturbed pixel (PGD: its "
                      f"{cfg['pgd']['top_pixels']} most changed pixels).")

    dist = results.get("distributions", {})
    if dist:
        rep.heading("Metric distributions")
        per_k = sorted(g for g in dist if g.startswith("pixel") and g != "pixel")
        shown = [g for g in ("pgd", "pgd-early", "pixel", *per_k) if g in dist]
        for key, label in [("sm:d_entropy:pred", "Δ SM entropy (x:C → x̂:Ĉ)"),
                           ("sm:iou:pred", "SM top-k IoU (x:C, x̂:Ĉ)"),
                           ("sm:near:a_d", "SM mass near perturbed px (x̂:Ĉ)"),
                           (f"cam:{last}:retained:c", f"AM {last} energy retained w.r.t. C")]:
            samples = {_nice(g): np.array([_num(v) for v in dist[g].get(key, [])]) for g in shown}
            if not any(len(v) for v in samples.values()):
                continue
            safe = key.replace(":", "_").replace(".", "_")
            rep.figure(distributions(samples, fig_dir / f"dist_{safe}.png", label, label), label)
        series_c = {}
        series_d = {}
        for g in ("pgd", "pgd-early", "pixel"):
            if g in agg and agg[g]:
                xs = list(range(len(layers)))
                series_c[_nice(g)] = (xs, [_num(agg[g].get(f"cam:{lay}:retained:c", {}).get("median"))
                                           for lay in layers])
                series_d[_nice(g)] = (xs, [_num(agg[g].get(f"cam:{lay}:retained:d", {}).get("median"))
                                           for lay in layers])
        if series_c:
            rep.figure(line_plot(series_c, fig_dir / "layers_true.png", "median retained AM energy w.r.t. C",
                                 "layer (0 = " + layers[0] + ", last = " + last + ")", "x̂ / x"),
                       "Median ratio of the true class's Grad-CAM energy, adversarial / original, per layer.")
            rep.figure(line_plot(series_d, fig_dir / "layers_adv.png", "median AM energy ratio w.r.t. Ĉ",
                                 "layer (0 = " + layers[0] + ", last = " + last + ")", "x̂ / x"),
                       "Median ratio of the adversarial class's Grad-CAM energy, adversarial / original, per "
                       "layer.")

    comp = results.get("comparison", {}).get("rows", [])
    if comp:
        rep.heading("PGD vs Pixel Attack")
        paired = results.get("paired_images", {})
        rep.paragraph("Paired on the images both attacks broke ("
                      + ", ".join(f"{_nice(v)}: {k} images" for v, k in paired.items())
                      + "). Early-stopped PGD runs the full attack's trajectory (same random start, same "
                        "steps) and stops each image at its first misclassification, as Pixel Attack stops at "
                        "its first success; full-strength PGD runs every step and overshoots. (Both start at "
                        "a random point of the ε-ball, so their L∞ is ≈ ε: the early stop matches Pixel Attack's "
                        "stopping rule, not its norm.) The random control: ±ε signs for PGD (±the image's own "
                        "L∞ for early-stopped PGD), as many random pixels set to random values for Pixel Attack.")
        rows = [[_nice(r.get("variant", "pgd")), r["label"], _fmt_ci(r["pgd"]), _fmt_ci(r["pixel"]),
                 f"{_num(r.get('estimate')):+.3f} [{_num(r.get('lo')):+.3f}, {_num(r.get('hi')):+.3f}]",
                 r["effect"], r["n"], r.get("p_holm"), r["outcome"]] for r in comp]
        rep.table(["PGD variant", "metric", "PGD", "Pixel (pooled)", "mean Δ PGD − Pixel [95% CI]",
                   "paired dominance", "n", "p (Wilcoxon, Holm)", "outcome"], rows,
                  caption=f"'differs' = Holm-corrected p < {cfg['alpha']} and |dominance| ≥ "
                          f"{cfg['min_effect']}.")

    rep.heading("Claims of seed 004: measured evidence and verdicts", anchor="claims")
    rep.paragraph(
        f"Decision rules: paired tests (same images) use the Wilcoxon signed-rank test with the paired "
        f"dominance P(Δ>0) − P(Δ<0) and the 95% t-interval of the mean difference; PGD-vs-Pixel tests are the "
        f"same paired test on the images both attacks broke (against early-stopped and full-strength PGD); "
        f"'keeps' / 'changes minimally' claims are TOST equivalence tests against the same-budget random "
        f"control (confirmed when the 90% interval of the mean difference lies within "
        f"±{cfg.get('equivalence_margin', 0.1)}, contradicted when it lies wholly outside); correlations use "
        f"Spearman's ρ with a Fisher-z interval; p-values are Holm-corrected over the whole table. Spatial "
        f"claims are decided by IoU / rank correlation with the clean map, not by CAM energy (for a global-"
        f"average-pool → linear head the mean Grad-CAM is the class logit minus its bias over h·w). "
        f"A test is confirmed when p < "
        f"{cfg['alpha']} and the effect points the claimed way with |effect| ≥ {cfg['min_effect']} (|ρ| ≥ "
        f"0.1), contradicted when it points the other way, inconclusive otherwise, untestable with fewer "
        f"than {cfg['min_examples']} examples. Threshold tests use the 95% bootstrap interval of the median. "
        f"A claim is supported when every testable test is confirmed, not supported when none is, mixed "
        f"otherwise.")
    rows = []
    for c in results["claims"]:
        evidence = "; ".join(f"{t['label']}: {_evidence(t)} → {t['outcome']}" for t in c["tests"])
        rows.append([c["claim"], c["source"], evidence, c["verdict"]])
    rep.table(["claim", "paper", "measured evidence", "verdict"], rows)
    rows = []
    for c in results["claims"]:
        for t in c["tests"]:
            group = _nice(t["group"]) + (f" vs {_nice(t['group_b'])}" if t.get("group_b") else "")
            rows.append([c["id"], t["label"], group, TEST_NAMES.get(t["kind"], t["kind"]), t.get("baseline", ""),
                         t.get("n"), _num(t.get("estimate")), _interval(t), _num(t.get("effect")), t.get("p"),
                         t.get("p_holm"), t["outcome"]])
    rep.table(["claim", "test", "group", "statistical test", "baseline", "n", "estimate", "interval", "effect",
               "p", "p (Holm)", "outcome"], rows, caption="Every test behind the verdicts.")

    rep.timings(results.get("timings", []))
    return rep.write(run_dir)
