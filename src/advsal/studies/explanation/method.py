"""The explanation study (seed 003, Shoshan & Ratner): regularized adversarial examples as explanations against
Fong & Vedaldi's "meaningful perturbation" (MP), scored with APE_D and the CC hit rate — Table 1 of seed 003 on
``cluttered-mnist``, where the ground-truth object is the "finding" digit (DDSM is not available offline).

1. Train the classifier on image labels only (seed 003 §5.1: the model never sees a location). Default
   ``finding-net``: three conv stages, global max pooling, FC-256.
2. Select ``n_images`` positive test images (label = ``positive_class``, non-empty ground-truth mask) that the
   classifier classifies positive, in a seeded random order. Every method explains that class on them.
3. Regularized method (seed 003 §4): per (α, β) of Table 1's "ours" rows and per classification loss —
   ``probability`` is Eq. 13 as written; ``log-complement`` (−log(1 − M(Î)_i)) is this study's option: Eq. 13's
   gradient M_i(1 − M_i)·∂(log-odds) vanishes on images the classifier is sure of, which are then not explained
   at all. Mask = S ≥ 0 (Eq. 14); APE_D of the phase-2 image Ĩ (always with the probability itself).
4. Meaningful perturbation: per deletion image ("min", "blur") and (λ1, λ2, TV β) of Table 1's MP rows, then
   seed 003 §5.1's threshold scan: one threshold T for the whole set, the one with the best mean APE_D, region
   {1 − m > T}, Î = the deletion image inside the region.
5. Contrast (not in seed 003): gradient |∂logit/∂x| and Grad-CAM of the explained class, each cut to its top-k
   pixels with k = the pixel count of a regularized row's mask (per image), then that row's phase 2 inside.
6. Metrics per row: APE_D terms (α_sp = α_sm = α_cl = 1), CC hit rate (§5.2), pointing game, mask area; paired
   comparisons on the same images (Wilcoxon signed-rank, two-sided): every regularized row against the MP rows
   with the same (L0, TV) coefficients, and against its own gradient / Grad-CAM contrast rows.

Coefficients multiply per-element means for both methods (``protocol.mp_tv_coeff``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...data import ImageSet
from ..config import check
from ..engine import Log, load_data, open_study
from . import analysis
from .config import Config
from .protocol import meaningful_rows, regularized_rows, threshold_grid
from .steps import (
    calibrate,
    contrast,
    explained_class,
    finish,
    meaningful,
    regularized,
    saliency_maps,
    select_images,
    threshold_scan,
)


def run(cfg: Config, run_dir: str | Path, *, model: nn.Module | None = None,
        data: tuple[ImageSet, ImageSet] | None = None, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the explanation study in ``run_dir``; writes results.json and the report."""
    check(cfg, "explanation")  # the whole config, and below the explained class, before any stage
    train, test = data if data is not None else load_data(cfg.data)
    positive = explained_class(test, cfg.positive_class)

    # 1. F trained on image labels only, never on a mask (stage "classifier"), or the user's model as given
    ctx = open_study("explanation", cfg, run_dir, model=model, data=(train, test), log=log)
    with ctx.store:  # released also when a step fails
        # 2. the positive test images F classifies positive: every method explains the same images and class
        chosen = select_images(ctx, positive, cfg.n_images, cfg.seed)

        # 3. the regularized method, one stage per Table 1 "ours" row (and tuning candidate); the calibrated
        #    loss first fits a temperature on the test images not explained
        calib = calibrate(ctx, chosen) if "calibrated-probability" in cfg.regularized.losses else None
        ours = {row["id"]: regularized(ctx, chosen, row, cfg.regularized, cfg.batch_size, calib)
                for row in regularized_rows(cfg)}

        # 4. meaningful perturbation per MP row, then the set's APE_D-optimal threshold on its mask
        masks = {row["id"]: meaningful(ctx, chosen, row, cfg.meaningful, cfg.batch_size)
                 for row in meaningful_rows(cfg)}
        grid = threshold_grid(cfg.meaningful.thresholds, cfg.meaningful.fine_thresholds)
        scans = {row["id"]: threshold_scan(ctx, chosen, row, masks[row["id"]], grid) for row in meaningful_rows(cfg)}

        # 5. contrast: gradient and Grad-CAM masks of each regularized mask's area, phase 2 inside
        maps = saliency_maps(ctx, chosen, cfg.cam_layer, cfg.batch_size) if cfg.contrast and ours else None
        contrasts = {row["id"]: contrast(ctx, chosen, row, ours[row["id"]], maps, cfg.regularized, cfg.batch_size,
                                         calib)
                     for row in regularized_rows(cfg, candidates=False)} if maps is not None else {}
        if calib is not None:
            ctx.results["calibration"] = {k: float(calib[k]) for k in ("temperature", "nll_before", "nll_after", "n")}
            ctx.results["calibration"]["mean_calibrated_probability"] = float(calib["calibrated_probability"].mean())

        # 6. Table 1, localisation and the paired comparisons, beside seed 003's numbers
        ctx.results.update(analysis.tabulate(cfg, chosen, ours, scans, masks, maps, contrasts))
        figure = analysis.figure_maps(cfg, chosen, ours, scans, maps, contrasts)
        return finish(ctx, run_dir, figure, analysis.render)
