"""The attention-under-attack study (seed 004, Kotyan & Vargas): how PGD and Pixel Attack change what a
classifier attends to, with every qualitative claim of the paper turned into a measured number and a verdict
(decision rules in :mod:`.analysis`).

1. Train the classifier F (default ``resnet20``; seed 004 §4 uses a ResNet on CIFAR-10).
2. Pick ``n_images`` correctly classified test images (seeded).
3. Attack every one of them with PGD (L∞, white-box, Madry et al. 2018) and Pixel Attack with 1, 3 and 5 pixels
   (L0, black-box differential evolution, Su et al. 2019), and (``pgd.early_stop``) PGD stopped per image at its
   first misclassification, as Pixel Attack stops at its first success. Only the successful adversarial
   examples enter the analysis; the "pixel" group pools the Pixel Attack runs, per image the successful run
   with the fewest pixels.
4. Per successful example: guided-backprop saliency maps SM (Eq. 5–7; |·|, max over channels) and Grad-CAM maps
   AM (Eq. 8–11) of the Grad-CAM layers (the last convolutional stage and the intermediate stages), for the
   original x and the adversarial x̂, w.r.t. the true class C and the adversarial class Ĉ — the six panels of
   Figs. 2–7. A random perturbation of the same budget (±ε signs for PGD, as many random pixels for Pixel
   Attack) is the control.
5. Metrics per example (``advsal.saliency.compare``): diffusion, shift, attraction to the perturbed pixels (Pixel
   Attack: the changed pixels; PGD: the ``top_pixels`` most changed), CAM energy and peak displacement per layer.
6. Aggregates per attack, PGD vs Pixel Attack paired on the images both broke (Wilcoxon, Holm), and one row
   per claim, spatial claims tested against the same-budget random control (IoU / rank correlation; TOST
   equivalence for "keeps" and "changes minimally").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...data import ImageSet
from ..config import check
from ..engine import Log, build_classifier, finish_study, load_data, open_study
from .analysis import analyse
from .config import Config
from .steps import attack, attack_specs, cam_layers, map_metrics, saliency_and_cams, select_images, store_figure_maps


def run(cfg: Config, run_dir: str | Path, *, model: nn.Module | None = None,
        data: tuple[ImageSet, ImageSet] | None = None, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the attention study in ``run_dir``; writes results.json and the report."""
    from . import render

    check(cfg)
    train, test = data if data is not None else load_data(cfg.data)
    layers = cam_layers(model if model is not None else build_classifier(cfg.classifier, train), train.x[:1],
                        cfg.layers)  # checked before the first stage runs

    # 1. the classifier F
    ctx = open_study("attention", cfg, run_dir, model=model, data=(train, test), log=log)
    try:
        # 2. correctly classified test images
        images = select_images(ctx, cfg.n_images, cfg.seed)
        specs = attack_specs(cfg)
        adv, maps, metrics = {}, {}, {}
        for name, spec in specs.items():
            # 3. adversarial examples
            adv[name] = attack(ctx, images, name, spec, cfg.seed)
            # 4. SM and AM of x and x̂ w.r.t. C and Ĉ, and of the random control
            maps[name] = saliency_and_cams(ctx, images, adv[name], name, spec, layers, cfg.seed, cfg.batch_size)
            # 5. per-image attention metrics
            metrics[name] = map_metrics(ctx, images, adv[name], maps[name], name, spec, layers, cfg.top_fraction,
                                        cfg.radius, cfg.pgd.top_pixels, cfg.seed)
        # 6. tables, PGD vs Pixel Attack, claims and verdicts
        ctx.results |= analyse(cfg, layers, specs, adv, maps, metrics)
        store_figure_maps(run_dir, maps, adv, images, ctx.test, layers, cfg.figure_images)
    except BaseException:
        ctx.store.close()
        raise
    return finish_study(ctx, run_dir, render)
