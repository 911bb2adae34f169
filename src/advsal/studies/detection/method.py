"""The main study: saliency-based adversarial detection (seeds 000/001), as the paper's method section.

1. Train the classifier F (seed 001 Table I). For each attack with a budget, choose ε as the minimal ε that
   brings F's accuracy below ``max_accuracy`` (seed 001 §IV-B, after Metzen et al.); craft adversarial training
   and test sets.
2. Gradient saliency S = ∂F_c/∂x (Eq. 5) of every clean and adversarial image — computed inside the detector.
3. Train the detector D on image ⊕ saliency (Table I detector), one per attack; the baselines of the registry
   (image only, saliency only, N+1 class, Metzen, first layer; LID, Mahalanobis, KD+BU, feature squeezing) on
   the same data. Option ``seeds``: the seeded detectors (D and the baselines whose fit takes a seed) again per
   further detector seed, F, the images and the adversarial sets fixed (Table II over seeds).
4. Evaluate in Table II's layout, plus AUROC and TPR at ``fpr``, on all and on "successful adversarial examples
   of correctly classified images".
5. Generalisation: attack × attack (Fig. 2) and ε_fit × ε_test (Table III).
6. Second-round attacks: Metzen's Eq. 10, a fully adaptive attack through the saliency (softplus surrogate), and
   a transfer attack from D′ trained on the other half of the data, evaluated on D trained on the first half.
7. Layer-wise analysis (seed 000 §5, Fig. 7): Grad-CAM at a shallow, a middle and a deep layer, clean vs adv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...attacks.specs import ATTACK_SPECS
from ...data import ImageSet
from ..engine import Context, Log, finish_study, open_study
from . import analysis
from .config import Config
from .registry import DETECTOR_SPECS, MAIN_DETECTOR, study_layers
from .steps import (
    adversarially_trained,
    correct_head,
    craft,
    draw,
    examples,
    hardened_detector,
    layer_analysis,
    repeat_detectors,
    score_matrix,
    search_epsilon,
    second_round,
    security,
    security_results,
    train_detector,
)


def run(cfg: Config, run_dir: str | Path, *, model: nn.Module | None = None,
        data: tuple[ImageSet, ImageSet] | None = None, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the detection study in ``run_dir``; writes results.json and the report."""
    ctx = open_study("detection", cfg, run_dir, model=model, data=data, log=log)
    try:
        ctx.results.update(method(ctx, cfg, Path(run_dir)))
    except BaseException:
        ctx.store.close()
        raise
    return finish_study(ctx, run_dir, render)


def method(ctx: Context, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The study's steps on F = ``ctx.model``; returns the results' tables."""
    seeds = cfg.detector_seeds()  # option seeds: the first is every section's detector seed
    cfg = cfg.for_detector_seed(seeds[0])
    layers = study_layers(ctx.model, cfg)
    attacks = {name: ATTACK_SPECS[name] for name in cfg.attacks}
    train = draw("train-subset", ctx.train, cfg.n_train, cfg.seed)
    test = draw("test-subset", ctx.test, cfg.n_test, cfg.seed)
    search = draw("search-subset", ctx.test, cfg.search_images, cfg.seed + 1)
    train_for = {a: train.head(cfg.attack_limits.get(a), f"train-subset-{a}") for a in attacks}

    # Step 1: budgets ε and adversarial sets (train, test) per attack
    eps = {a: search_epsilon(ctx, spec, cfg.attacks[a], search, cfg.max_accuracy)
           for a, spec in attacks.items() if spec.budgeted}
    adv_train = {a: craft(ctx, spec, cfg.attacks[a], eps.get(a), train_for[a], "train", cfg.seed)
                 for a, spec in attacks.items()}
    adv_test = {a: craft(ctx, spec, cfg.attacks[a], eps.get(a), test, "test", cfg.seed + 1)
                for a, spec in attacks.items()}

    # Steps 2-3: D on image ⊕ saliency per attack, and the baselines
    main = DETECTOR_SPECS[MAIN_DETECTOR]
    detectors = {a: train_detector(ctx, main, cfg, f"detector-{a}", train_for[a], adv_train[a], test, adv_test[a])
                 for a in attacks}
    baselines = {kind: {a: train_detector(ctx, DETECTOR_SPECS[kind], cfg, f"detector-{kind}-{a}", train_for[a],
                                          adv_train[a], test, adv_test[a]) for a in cfg.baseline_attacks}
                 for kind in cfg.baselines}
    # Step 3b (option seeds): the seeded detectors again per further detector seed, F and adversarial sets fixed
    specs = {MAIN_DETECTOR: main, **{kind: DETECTOR_SPECS[kind] for kind in cfg.baselines}}
    trained_on = {MAIN_DETECTOR: list(attacks), **{kind: list(cfg.baseline_attacks) for kind in cfg.baselines}}
    repeats = {s: repeat_detectors(ctx, cfg.for_detector_seed(s), specs, trained_on, train_for, adv_train, test,
                                   adv_test) for s in seeds[1:]}

    # Step 5: generalisation across attacks (Fig. 2) and across ε (Table III)
    # (and each baseline, trained on each of baseline_attacks, on every attack's test set)
    cross = score_matrix(ctx, "cross-attack", list(detectors.values()), list(adv_test.values()),
                         baselines={kind: list(per.values()) for kind, per in baselines.items()})
    g = cfg.generalisation
    gen_train, gen_test = draw("gen-train", ctx.train, g.n_train, cfg.seed + 10), draw("gen-test", ctx.test,
                                                                                     g.n_test, cfg.seed + 11)
    eps_matrices = {}
    for a in g.attacks:
        levels = [(f, craft(ctx, attacks[a], cfg.attacks[a], eps[a], gen_train, f"gen{f:g}-train", cfg.seed, f),
                   craft(ctx, attacks[a], cfg.attacks[a], eps[a], gen_test, f"gen{f:g}-test", cfg.seed + 1, f))
                  for f in g.eps_factors]
        fitted = [train_detector(ctx, main, cfg, f"detector-{a}-gen{f:g}", gen_train, tr, gen_test, te)
                  for f, tr, te in levels]
        eps_matrices[a] = score_matrix(ctx, f"eps-matrix-{a}", fitted, [te for _, _, te in levels])

    # Step 6: second-round attacks on F and D jointly, and a transfer attack from D′ to D (disjoint halves)
    a, n = cfg.second_round.attack, len(train_for[cfg.second_round.attack])
    d_first = train_detector(ctx, main, cfg, f"detector-{a}-half1", train_for[a], adv_train[a], test, adv_test[a],
                             rows=(0, n // 2))
    d_prime = train_detector(ctx, main, cfg, f"detector-{a}-half2", train_for[a], adv_train[a], test, adv_test[a],
                             rows=(n // 2, n))
    second = second_round(ctx, cfg.second_round, attacks[a], cfg.attacks[a], eps[a], detectors[a], d_prime, d_first,
                          test, adv_test[a])

    # Step 6b (issue #15): security of every detector under the strongest adaptive attacks, robust curves over ε;
    # optionally D hardened by dynamic adversary training and a PGD-trained F beside it
    sec, hardening, security_stages = cfg.security, {}, {}
    if sec.enabled:
        a = sec.attack or cfg.second_round.attack
        guarded = {MAIN_DETECTOR: detectors[a], **{kind: per[a] for kind, per in baselines.items() if a in per}}
        if sec.harden:
            hard = hardened_detector(ctx, sec, detectors[a], train_for[a], adv_train[a])
            guarded[f"{MAIN_DETECTOR}-hardened"] = hard
            hardening = {"detector": hard.stage,
                         "classifier": adversarially_trained(ctx, sec, eps[a], correct_head(test, adv_test[a],
                                                                                             sec.n_images))}
        security_stages = security(ctx, sec, eps[a], guarded, test, adv_test[a], sec.fpr,
                                   {MAIN_DETECTOR, f"{MAIN_DETECTOR}-hardened"})

    # Step 7: layer-wise analysis, and the examples figure's data
    layer_stage = layer_analysis(ctx, layers, test, adv_test, cfg.layer_images)
    examples(ctx, run_dir, test, adv_test, cfg)

    out = analysis.results(cfg, test, eps, adv_train, adv_test, detectors, baselines, cross, eps_matrices, second,
                            layer_stage)
    analysis.add_seed_intervals(out, cfg, seeds, repeats, {MAIN_DETECTOR: detectors, **baselines})
    ctx.results["provenance"]["detector_seeds"] = seeds
    if security_stages:
        out["security"] = security_results(sec, a, eps[a], security_stages, hardening)
    return out


def render(run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    from ...report.detection import render_detection_report

    return render_detection_report(Path(run_dir), results)
