"""Findings: the 3–6 verdicts a report opens with, computed from a study's stored results only.

Each finding is ``{"text": one sentence with its number, "section": the anchor of the report section that
holds the evidence}``. A verdict that compares two estimates takes their 95% intervals into account: when the
intervals overlap, the two are said to tie. The renderers pass the list to ``Report.set_findings``; tests
plant numbers in a results dict and check the sentences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..attacks.specs import display_name

Finding = dict[str, str]

#: Anchors of the detection report's sections that findings link to.
DETECTION_SECTIONS = {"table2": "table2", "baselines": "baselines", "cross": "cross-attack",
                      "eps": "generalisation-eps", "second": "second-round", "layers": "layers",
                      "security": "security", "table2-seeds": "table2-seeds"}
#: A detection accuracy (balanced clean/adversarial) at most this is "at chance" (0.5 is coin flipping).
CHANCE_ACCURACY = 0.6
#: Point estimates closer than this tie when no interval is stored (results from before intervals).
TIE_MARGIN = 0.01


def _num(v: Any) -> float:
    if isinstance(v, dict):
        v = v.get("estimate")
    return math.nan if v is None else float(v)


def _interval(row: dict[str, Any], key: str) -> dict[str, float]:
    """``row[key]`` with its stored interval (``row["ci"][key]``), or a point interval."""
    ci = (row.get("ci") or {}).get(key)
    if ci:
        return {"estimate": _num(ci["estimate"]), "lo": _num(ci["lo"]), "hi": _num(ci["hi"])}
    v = _num(row.get(key))
    return {"estimate": v, "lo": math.nan, "hi": math.nan}


def interval_text(iv: dict[str, float], digits: int = 3) -> str:
    """``0.950 [0.930, 0.970]`` (just the estimate when the interval is missing)."""
    est = f"{iv['estimate']:.{digits}f}"
    if math.isfinite(iv.get("lo", math.nan)) and math.isfinite(iv.get("hi", math.nan)):
        return f"{est} [95% CI {iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"
    return est


def compare(a: dict[str, float], b: dict[str, float]) -> str:
    """"higher", "lower" or "ties": ``a`` vs ``b`` by their intervals (overlap = tie), or by ``TIE_MARGIN``
    between the estimates when either interval is missing."""
    bounds = (a["lo"], a["hi"], b["lo"], b["hi"])
    if all(math.isfinite(x) for x in bounds):
        if a["lo"] > b["hi"]:
            return "higher"
        if a["hi"] < b["lo"]:
            return "lower"
        return "ties"
    d = a["estimate"] - b["estimate"]
    return "ties" if abs(d) < TIE_MARGIN else ("higher" if d > 0 else "lower")


def detection_findings(results: dict[str, Any]) -> list[Finding]:
    """Verdicts of a detection run: the main detector, the image-only baseline, transfer across attacks,
    the second-round attacks, generalisation across ε, the layer analysis (those the results hold)."""
    names = results.get("names", {})
    attack_names, detector_names = names.get("attacks", {}), names.get("detectors", {})

    def nice(a: str) -> str:
        return attack_names.get(a) or display_name(a)

    out: list[Finding] = []
    table2 = results.get("table2", {})
    if table2:
        out.append(main_detector_finding(table2, nice))

    image = (results.get("baselines") or {}).get("image") or {}
    shared = [a for a in image if a in table2]
    if shared:
        label = detector_names.get("image", "image-only")
        ties, worse, better = [], [], []
        for a in shared:
            c = compare_rows(image[a], table2[a], "auroc")
            {"ties": ties, "lower": worse, "higher": better}[c].append(a)
        parts = []
        for group, word in ((ties, "ties with"), (better, "beats"), (worse, "falls behind")):
            if group:
                a = group[0]
                parts.append(f"{word} the saliency detector on {', '.join(nice(x) for x in group)} (AUROC "
                             f"{_num(image[a]['auroc']):.3f} vs {_num(table2[a]['auroc']):.3f} on {nice(a)})")
        head = ("so saliency adds nothing measurable there" if ties and not worse else
                "so saliency helps" if worse and not ties and not better else "")
        out.append({"text": f"The {label} baseline " + "; ".join(parts) + (f", {head}" if head else "") + ".",
                    "section": DETECTION_SECTIONS["baselines"]})

    cross = results.get("cross_attack") or {}
    if cross.get("attacks") and len(cross["attacks"]) > 1:
        m = np.asarray(cross["matrix"], dtype=float)
        off = [(m[i, j], i, j) for i in range(len(m)) for j in range(len(m)) if i != j and np.isfinite(m[i, j])]
        if off:
            v, i, j = min(off)
            at_chance = sum(x <= CHANCE_ACCURACY for x, _, _ in off)
            a, b = cross["attacks"][i], cross["attacks"][j]
            verdict = (f"{at_chance} of {len(off)} train/test attack pairs are at chance (accuracy ≤ "
                       f"{CHANCE_ACCURACY})" if at_chance else "every detector transfers to every other attack "
                       f"(accuracy > {CHANCE_ACCURACY})")
            out.append({"text": f"Across attacks, {verdict}; the worst: trained on {nice(a)}, tested on {nice(b)}: "
                                f"accuracy {v:.3f} (0.5 = chance).", "section": DETECTION_SECTIONS["cross"]})

    second = (results.get("second_round") or {}).get("rows") or []
    if second:
        top = max(second, key=lambda r: _num(r["both"]))
        both = _interval(top, "both")
        low = both["lo"] if math.isfinite(both["lo"]) else both["estimate"]
        high = both["hi"] if math.isfinite(both["hi"]) else both["estimate"]
        verdict = ("defeats" if low >= 0.5 else "does not get past" if high <= 0.05 else
                   "evades (rate uncertain)" if high - low > 0.5 else "partly evades")
        out.append({"text": f"The strongest second-round attack ({top['attack']}) {verdict} F and D together: it "
                            f"fools F while D says clean on {interval_text(both)} of {top['n']} images — the "
                            "paper calls such attacks 'not applicable'.", "section": DETECTION_SECTIONS["second"]})

    security = results.get("security") or {}
    curve = ((security.get("detectors") or {}).get("image+saliency") or {}).get("linf")
    if curve and curve.get("eps"):
        i = min(range(len(curve["eps"])), key=lambda j: abs(curve["eps"][j] - security.get("eps_star", 0.0)))
        k = len(curve["eps"]) - 1
        verdict = ("fails" if curve["both"][i] >= 0.5 else "is partly evaded" if curve["both"][i] > 0.05
                   else "holds")
        text = (f"Against an adaptive attacker the saliency detector {verdict}: with its threshold at "
                f"{curve['fpr']:.0%} clean FPR and known to the attacker, {curve['both'][i]:.2f} of {curve['n']} "
                f"correctly classified images fool F and pass D at ε* = {curve['eps'][i]:.3g} (robust TPR "
                f"{curve['robust_tpr'][i]:.2f})")
        first = _num((table2.get(security.get("attack")) or {}).get("d_adv"))
        if math.isfinite(first):
            text += f", where the first round (an attacker ignoring D) reports D(x_adv) = {first:.3f}"
        if k != i:
            text += f"; at ε = {curve['eps'][k]:.3g}: {curve['both'][k]:.2f}"
        out.append({"text": text + ".", "section": DETECTION_SECTIONS["security"]})

    for a, g in (results.get("generalisation_eps") or {}).items():
        v = eps_generalisation_verdict(np.asarray(g["matrix"], dtype=float))
        if v is not None:
            out.append({"text": f"Generalisation across ε ({nice(a)}): fitting on a small ε and testing on larger "
                                f"ones gives {v['above']:.3f}, the reverse {v['below']:.3f}; the paper's claim "
                                f"is {v['verdict']}.", "section": DETECTION_SECTIONS["eps"]})
            break  # one ε finding; the section has every attack
    return out[:6]


# -- the main verdict, over test images or over detector seeds (option seeds) ------------------------------------
#: The AUROC from which the saliency detector "detects an attack well": the lower bound of its 95% interval (over
#: detector seeds when there are several, else the bootstrap over test images) must clear it.
DETECTS_WELL = 0.9


def _seed_interval(row: dict[str, Any], key: str) -> dict[str, float] | None:
    """``row[key]``'s mean and 95% interval over detector seeds (``row["over_seeds"][key]``), or None."""
    iv = (row.get("over_seeds") or {}).get(key)
    if not iv:
        return None
    return {"estimate": _num(iv["estimate"]), "lo": _num(iv["lo"]), "hi": _num(iv["hi"]), "n": int(iv["n"])}


def seeds_text(iv: dict[str, float], digits: int = 3) -> str:
    """``0.950 [95% CI over 3 seeds 0.930, 0.970]``."""
    return (f"{iv['estimate']:.{digits}f} [95% CI over {iv['n']} seeds {iv['lo']:.{digits}f}, "
            f"{iv['hi']:.{digits}f}]")


def compare_rows(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    """:func:`compare` of two results rows on ``key`` by their bootstrap intervals over images (the first seed)
    and, when both rows have them, their intervals over detector seeds: "higher"/"lower" only when both agree."""
    first = compare(_interval(a, key), _interval(b, key))
    sa, sb = _seed_interval(a, key), _seed_interval(b, key)
    if sa is None or sb is None:
        return first
    return first if compare(sa, sb) == first else "ties"


def main_detector_finding(table2: dict[str, dict[str, Any]], nice: Any) -> Finding:
    """The saliency detector's verdict over Table II, read from the AUROC's 95% interval over detector seeds
    when every row has one (option ``seeds``), else from its bootstrap interval over test images: "detects every
    attack well" only when on every attack the lower bound is at least ``DETECTS_WELL``; "well on average" when
    every estimate is but some lower bound is not; "not distinguishable from chance" when an estimate is at most
    ``CHANCE_ACCURACY`` or a lower bound at most 0.5 (a missing bound reads as its estimate)."""
    over_seeds = all(_seed_interval(r, "auroc") for r in table2.values())
    get, show = (_seed_interval, seeds_text) if over_seeds else (_interval, interval_text)
    aurocs = {a: get(r, "auroc") for a, r in table2.items()}

    def bound(a: str) -> float:
        return aurocs[a]["lo"] if math.isfinite(aurocs[a]["lo"]) else aurocs[a]["estimate"]

    worst = min(aurocs, key=lambda a: aurocs[a]["estimate"])
    best = max(aurocs, key=lambda a: aurocs[a]["estimate"])
    shakiest = min(aurocs, key=bound)
    low = bound(shakiest)
    over = f" over {aurocs[worst]['n']} detector seeds" if over_seeds else ""
    if aurocs[worst]["estimate"] <= CHANCE_ACCURACY or low <= 0.5:
        verdict = f"is not distinguishable from chance on at least one attack{over}"
    elif low >= DETECTS_WELL:
        verdict = f"detects every attack well{over}" + (
            f" (the lower 95% bound of every attack's AUROC clears {DETECTS_WELL:g})" if over_seeds else "")
    elif aurocs[worst]["estimate"] >= DETECTS_WELL:
        verdict = (f"detects every attack well{' on average' if over_seeds else ''}{over}, but not reliably: on "
                   f"{nice(shakiest)} the lower "
                   f"95% bound is {low:.3f}, below {DETECTS_WELL:g}")
    else:
        verdict = f"detects some attacks only partly{over}"
    text = (f"The saliency detector {verdict}: {'mean ' if over_seeds else ''}AUROC from {show(aurocs[worst])} "
            f"({nice(worst)}) to {show(aurocs[best])} ({nice(best)}) over {len(aurocs)} attacks")
    d_adv = get(table2[worst], "d_adv")
    if d_adv and math.isfinite(d_adv["estimate"]):
        text += (f"; on {nice(worst)} it flags {d_adv['estimate']:.1%} of adversarial test images"
                 + (" on average" if over_seeds else ""))
    return {"text": text + ".", "section": DETECTION_SECTIONS["table2-seeds" if over_seeds else "table2"]}


#: Below/above-diagonal mean accuracies closer than this are not read as a difference (each cell is a detection
#: accuracy on a few hundred images, so its standard error is about 0.02).
GENERALISATION_MARGIN = 0.05


def eps_generalisation_verdict(m: np.ndarray) -> dict[str, Any] | None:
    """Seed 001 Table III's claim (fit small ε → generalises to larger, not the reverse) from an ε_fit × ε_test
    accuracy matrix: mean accuracy above the diagonal (test ε larger), below it, and the verdict."""
    if len(m) < 2:
        return None
    below = float(np.mean(m[np.tril_indices(len(m), -1)]))
    above = float(np.mean(m[np.triu_indices(len(m), 1)]))
    verdict = ("supported" if above - below >= GENERALISATION_MARGIN else
               "contradicted" if below - above >= GENERALISATION_MARGIN else
               f"not distinguishable (difference below {GENERALISATION_MARGIN})")
    return {"below": below, "above": above, "verdict": verdict}
