"""The explanation study's steps: each a stage of the run store, computed batch by batch on the study's device,
with exactly the settings it reads as its parameters and the stages it reads as its inputs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...data import ImageSet
from ...errors import AdvsalError, ConfigError
from ...explanation import (
    MeaningfulExplanation,
    meaningful_perturbation,
    minimize_in_mask,
    regularized_explanation,
    scan_threshold,
)
from ...explanation.ape import APEResult, ape_d
from ...saliency import grad_cam, gradient
from ...store import Source, Stage, save_tensors
from ...tensors import batch_slices, predict_logits
from ..engine import Context, finish_study
from .config import MeaningfulConfig, RegularizedConfig
from .protocol import mp_tv_coeff

FIGURE_FILE = "figure_maps.safetensors"


@dataclass
class Explained:
    """The explained images (seed 003 §5.1: every method explains the same images and class): the selection
    ``stage`` (an input of every later stage), the images ``x``, their ground-truth masks ``gt`` and the class
    ``target`` per image, all on the CPU, and the class's name."""

    stage: Stage
    x: torch.Tensor
    gt: torch.Tensor
    target: torch.Tensor
    class_name: str


def explained_class(test: ImageSet, positive: str | int) -> int:
    """The index of ``positive_class`` in the data, checked (with the ground-truth masks) before any stage."""
    if getattr(test, "masks", None) is None:
        raise ConfigError(f"data.name {test.name} has no ground-truth masks; use cluttered-mnist or masked-folder "
                          "data")
    if isinstance(positive, int):
        if not 0 <= positive < len(test.classes):
            raise ConfigError(f"positive_class {positive} is not a class index (0..{len(test.classes) - 1})")
        return positive
    if positive not in test.classes:
        raise ConfigError(f"positive_class {positive!r} is not a class of the data ({', '.join(test.classes)}); "
                          "name the class whose evidence the masks mark")
    return test.classes.index(positive)


def select_images(ctx: Context, positive: int, n_images: int, seed: int) -> Explained:
    """Up to ``n_images`` test images labelled and classified ``positive`` with a non-empty mask, in a seeded
    random order (stage "select"; also stores how many qualified and F's probability on each)."""
    test, model = ctx.test, ctx.model

    def compute() -> dict[str, Any]:
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
        pred = predict_logits(model, test.x[order]).argmax(1)
        ok = (test.y[order] == positive) & (pred == positive) & test.masks[order].flatten(1).any(1)
        chosen = order[ok][:n_images]
        if len(chosen) == 0:
            raise AdvsalError(f"no test image is labelled and classified {test.classes[positive]!r} with a "
                              "non-empty mask; train the classifier longer (classifier.epochs) or check "
                              "positive_class")
        probability = torch.softmax(predict_logits(model, test.x[chosen]), 1)[:, positive]
        return {"images": chosen, "probability": probability, "n_candidates": int(ok.sum())}

    stage = ctx.stage("select", compute, params={"positive": positive, "n_images": n_images, "seed": seed},
                      inputs=[ctx.data, Source.of("test-masks", test.masks), ctx.classifier])
    idx = stage["images"]
    return Explained(stage, test.x[idx], test.masks[idx], torch.full((len(idx),), positive, dtype=torch.int64),
                     test.classes[positive])


def calibrate(ctx: Context, chosen: Explained) -> Stage:
    """Temperature scaling (Guo et al. 2017) for the ``calibrated-probability`` loss: the T > 0 minimising the
    mean negative log-likelihood of the test labels under softmax(z/T), fitted on the test images *not*
    explained (a bounded search over log T in [−3, 6]); also the NLL before and after and the explained
    images' mean calibrated probability."""
    from scipy.optimize import minimize_scalar

    def compute() -> dict[str, Any]:
        test = ctx.test
        rest = torch.ones(len(test), dtype=torch.bool)
        rest[chosen.stage["images"]] = False
        if not rest.any():
            raise AdvsalError("temperature calibration needs test images that are not explained; lower n_images "
                              "or drop 'calibrated-probability' from regularized.losses")
        logits, labels = predict_logits(ctx.model, test.x[rest]).double().cpu(), test.y[rest]

        def nll(log_t: float) -> float:
            return float(torch.nn.functional.cross_entropy(logits / math.exp(log_t), labels))

        fit = minimize_scalar(nll, bounds=(-3.0, 6.0), method="bounded")
        t = float(math.exp(fit.x))
        z = predict_logits(ctx.model, chosen.x).double().cpu() / t
        return {"temperature": t, "nll_before": nll(0.0), "nll_after": nll(float(fit.x)), "n": int(rest.sum()),
                "calibrated_probability": torch.softmax(z, 1)[torch.arange(len(z)), chosen.target]}

    return ctx.stage("calibrate", compute, params={"method": "temperature-nll"},
                     inputs=[ctx.data, ctx.classifier, chosen.stage])


def regularized(ctx: Context, chosen: Explained, row: dict[str, Any], rc: RegularizedConfig,
                batch_size: int, calibration: Stage | None = None) -> Stage:
    """Seed 003 §4 for one "ours" row: phase 1 (Eq. 13) → mask S ≥ 0 (Eq. 14) → phase 2 inside it; APE_D of
    both phases (always with the model as is). The ``calibrated-probability`` loss is Eq. 13's probability on
    the model with its logits divided by the ``calibration`` stage's temperature."""
    lr = row.get("lr", rc.lr)
    params = {"loss": row["loss"], "alpha": row["l0_coeff"], "beta": row["tv_coeff"], "gamma": rc.gamma,
              "eps": rc.eps, "steps": rc.steps, "lr": lr, "phase2_steps": rc.phase2_steps,
              "phase2_lr": rc.phase2_lr or lr, "batch_size": batch_size}
    if rc.patience:  # only then, so that the stored stages of fixed-step runs stay valid
        params.update(patience=rc.patience, tol=rc.tol)
    inputs = [ctx.classifier, chosen.stage]
    temperature = 1.0
    if row["loss"] == "calibrated-probability":
        if calibration is None:
            raise AdvsalError("the calibrated-probability loss needs the calibrate stage")
        temperature = float(calibration["temperature"])
        inputs.append(calibration)
    loss = "probability" if row["loss"] == "calibrated-probability" else row["loss"]

    def one(x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        r = regularized_explanation(ctx.model, x, target, alpha=params["alpha"], beta=params["beta"],
                                    gamma=rc.gamma, eps=rc.eps, steps=rc.steps, lr=lr,
                                    phase2_steps=rc.phase2_steps, phase2_lr=params["phase2_lr"],
                                    classification_loss=loss, temperature=temperature,
                                    patience=rc.patience, tol=rc.tol)
        return {"mask": r.pixel_mask, "x_hat": r.x_adv, "x_phase1": r.x_phase1, "saliency": r.saliency,
                "steps_run": torch.full((len(x),), r.steps_run, dtype=torch.int64),
                **ape_payload("", r.ape), **ape_payload("phase1_", r.ape_phase1)}

    return ctx.stage(f"regularized-{row['id'][5:]}", lambda: _batched(ctx, chosen, one, batch_size),
                     params=params, inputs=inputs)


def meaningful(ctx: Context, chosen: Explained, row: dict[str, Any], mc: MeaningfulConfig,
               batch_size: int) -> Stage:
    """Fong & Vedaldi's deletion mask for one MP row (λ2 turned into the library's convention by
    :func:`mp_tv_coeff`)."""
    params = {"deletion": row["deletion"], "l1_coeff": row["l0_coeff"], "tv_coeff": row["tv_coeff"],
              "tv_beta": row["tv_gamma"], "steps": mc.steps, "lr": mc.lr, "mask_scale": mc.mask_scale,
              "blur_sigma": mc.blur_sigma, "batch_size": batch_size}
    library_tv = mp_tv_coeff(row["tv_coeff"], chosen.x.shape[2], chosen.x.shape[3], mc.mask_scale)

    def one(x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        e = meaningful_perturbation(ctx.model, x, target, deletion=row["deletion"], steps=mc.steps, lr=mc.lr,
                                    l1_coeff=row["l0_coeff"], tv_coeff=library_tv, tv_beta=row["tv_gamma"],
                                    mask_scale=mc.mask_scale, blur_sigma=mc.blur_sigma)
        return {"mask": e.mask, "deletion_image": e.deletion_image, "x_blend": e.x_blend,
                "probability": e.probability}

    return ctx.stage(row["id"], lambda: {**_batched(ctx, chosen, one, batch_size), "library_tv_coeff": library_tv},
                     params=params, inputs=[ctx.classifier, chosen.stage])


def threshold_scan(ctx: Context, chosen: Explained, row: dict[str, Any], mask: Stage, grid: list[float]) -> Stage:
    """Seed 003 §5.1 for one MP row: the one threshold T with the best mean APE_D over the set; region
    {1 − m > T}, Î = the deletion image inside it."""

    def compute() -> dict[str, Any]:
        start = time.perf_counter()
        dev = ctx.device
        e = MeaningfulExplanation(chosen.x.to(dev), mask["mask"].to(dev), mask["deletion_image"].to(dev),
                                  mask["x_blend"].to(dev), mask["probability"].to(dev), chosen.target.to(dev))
        s = scan_threshold(ctx.model, e, grid)
        picked = min(grid, key=lambda g: abs(g - float(s.threshold[0])))  # the grid value (the scan uses float32)
        return {"threshold": picked, "mask": s.region.cpu(), "x_hat": s.x_hat.cpu(), "saliency": e.saliency.cpu(),
                **ape_payload("", s.ape), "grid": s.thresholds.cpu(), "mean_ape": s.mean_ape.cpu(),
                "ape_table": s.ape_table.cpu(), "seconds": time.perf_counter() - start}

    return ctx.stage(f"scan-{row['id'][3:]}", compute, params={"grid": grid, "ape_table": True},
                     inputs=[ctx.classifier, chosen.stage, mask])


def saliency_maps(ctx: Context, chosen: Explained, cam_layer: str | None, batch_size: int) -> Stage:
    """The contrast's maps of the explained class: |∂logit/∂x| (max over channels) and upsampled Grad-CAM."""

    def one(x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gradient": gradient(ctx.model, x, target, reduce="max")[:, 0],
                "gradcam": grad_cam(ctx.model, x, target, layer=cam_layer).upsampled}

    return ctx.stage("saliency", lambda: _batched(ctx, chosen, one, batch_size),
                     params={"cam_layer": cam_layer, "batch_size": batch_size}, inputs=[ctx.classifier, chosen.stage])


def contrast(ctx: Context, chosen: Explained, row: dict[str, Any], ours: Stage, maps: Stage,
             rc: RegularizedConfig, batch_size: int, calibration: Stage | None = None) -> Stage:
    """Gradient and Grad-CAM cut to the per-image area of one regularized row's mask, then that row's phase 2
    inside: same area, same perturbation procedure, only *where* the mask lies differs."""
    params = {"loss": row["loss"], "phase2_steps": rc.phase2_steps, "phase2_lr": rc.phase2_lr or rc.lr,
              "batch_size": batch_size}
    calibrated = row["loss"] == "calibrated-probability" and calibration is not None
    temperature = float(calibration["temperature"]) if calibrated else 1.0
    loss = "probability" if row["loss"] == "calibrated-probability" else row["loss"]

    def compute() -> dict[str, Any]:
        start = time.perf_counter()
        counts = ours["mask"].flatten(1).sum(1)
        out: dict[str, Any] = {}
        for name in ("gradient", "gradcam"):
            mask = top_k_masks(maps[name], counts)

            def one(x: torch.Tensor, target: torch.Tensor, sl: slice, mask: torch.Tensor = mask,
                    name: str = name) -> dict[str, torch.Tensor]:
                x_hat = minimize_in_mask(ctx.model, x, mask[sl].to(x.device), target, steps=rc.phase2_steps,
                                         lr=params["phase2_lr"], description=f"phase 2 in {name} mask",
                                         classification_loss=loss, temperature=temperature)
                return {"x_hat": x_hat, **ape_payload("", ape_d(ctx.model, x, x_hat, target))}

            part = _batched(ctx, chosen, one, batch_size, with_slice=True)
            out.update({f"{name}/mask": mask, **{f"{name}/{k}": v for k, v in part.items() if "seconds" not in k}})
        return {**out, "seconds": time.perf_counter() - start}

    return ctx.stage(f"contrast-{row['id'][5:]}", compute, params=params,
                     inputs=[ctx.classifier, chosen.stage, ours, maps, *([calibration] if calibrated else [])])


def finish(ctx: Context, run_dir: str | Path, figure: dict[str, torch.Tensor],
           render: Callable[..., Any]) -> dict[str, Any]:
    """Keep the figure examples' tensors (the report draws from stored data), write results.json, render."""
    save_tensors(Path(run_dir) / FIGURE_FILE, figure)
    return finish_study(ctx, run_dir, render)


# ------------------------------------------------------------------------------------------------ helpers
def top_k_masks(maps: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: the ``counts[i]`` highest pixels of ``maps[i]`` (ties by position, stable)."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return (rank < counts.to(flat.device).view(-1, 1)).view_as(maps)


def ape_payload(prefix: str, ape: APEResult) -> dict[str, torch.Tensor]:
    return {f"{prefix}l0": ape.l0, f"{prefix}tv": ape.tv, f"{prefix}classification": ape.classification,
            f"{prefix}ape": ape.total}


def _batched(ctx: Context, chosen: Explained, one: Callable[..., dict[str, torch.Tensor]], batch_size: int,
             with_slice: bool = False) -> dict[str, Any]:
    """``one(x, target)`` over the explained images in batches on ``ctx.device``; the outputs concatenated on
    the CPU, with the wall and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    parts = []
    for sl in batch_slices(len(chosen.x), batch_size):
        x, target = chosen.x[sl].to(ctx.device), chosen.target[sl].to(ctx.device)
        parts.append({k: v.detach().cpu() for k, v in (one(x, target, sl) if with_slice else one(x, target)).items()})
    out: dict[str, Any] = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return {**out, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}
