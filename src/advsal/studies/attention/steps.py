"""The attention study's steps: each a cached stage of the run store (its compute and its batching), plus the
layer choice and the per-image metrics of seed 004's maps."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ...attacks import make_attack
from ...attacks.base import AttackResult, perturbation_norms
from ...attacks.gradient import loss_gradient, random_start
from ...data import ImageSet
from ...errors import ConfigError
from ...progress import Bar
from ...saliency import compare as cmp
from ...saliency import grad_cam, grad_cam_layers, guided_backprop
from ...store import Stage, save_tensors
from ...tensors import batch_slices, frozen, map_batches, predict_logits
from ..engine import Context
from .config import Config

#: The four map combinations of seed 004: (image, class) with x = original, a = adversarial, c = true class C,
#: d = adversarial class Ĉ. Predicted class: C on x, Ĉ on x̂ (Figs. 2 and 5).
COMBOS = {"x_c": ("x", "c"), "x_d": ("x", "d"), "a_c": ("a", "c"), "a_d": ("a", "d")}
PAIRS = {"pred": ("x_c", "a_d"), "true": ("x_c", "a_c"), "adv": ("x_d", "a_d"), "cross_clean": ("x_c", "x_d"),
         "cross_adv": ("a_c", "a_d")}


# ------------------------------------------------------------------------------------------------ layers
def cam_layers(model: nn.Module, sample: torch.Tensor, layers: list[str] | None = None) -> list[str]:
    """The Grad-CAM layers, shallow → deep: ``layers`` checked against ``model``, or by default the last module of
    each resolution stage of the forward pass (a stage ends where the feature maps shrink or grow by 2× or more),
    ending with the model's Grad-CAM layer (``cam_layer`` of zoo models, else the last ``nn.Conv2d``).

    For resnet20 that is ``features.3``, ``.4``, ``.5`` (its three residual stages); for mnist-net ``features.3``
    (before the pooling) and ``features.8``; for a VGG the ReLU before each pooling. Raises ConfigError naming
    ``layers`` when a given name is not a once-run module with (N, K, h, w) output."""
    outputs = _spatial_outputs(model, sample[:1])
    if layers is not None:
        for i, name in enumerate(layers):
            if name not in outputs:
                valid = ", ".join(outputs) or "none"
                raise ConfigError(f"layers[{i}] {name!r} is not a module of the model that runs once with "
                                  f"(N, K, h, w) output; valid names: {valid}")
        return list(layers)
    try:
        last = grad_cam(model, sample[:1], 0, layer=None, upsample=False).layer
    except ValueError as exc:
        raise ConfigError(f"layers: the model has no default Grad-CAM layer ({exc}); name them in `layers:`") \
            from None
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    names = list(outputs)  # in the order the modules finished their forward pass
    first = min((names.index(c) for c in convs if c in outputs), default=0)  # skip input preprocessing
    stages: list[list[str]] = []
    size0 = 0
    for name in names[first:names.index(last) + 1] if last in outputs else []:
        if name.startswith(last + "."):
            continue
        size = max(outputs[name])
        if not stages or 2 * size <= size0 or size >= 2 * size0:
            stages.append([])
            size0 = size
        stages[-1].append(name)
    return [stage[-1] for stage in stages[:-1]] + [last]


def _spatial_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Module name → (h, w) of its output, for every module that runs once with a 4-D output, in the order the
    modules finished their forward pass."""
    seen: dict[str, list[tuple[int, ...]]] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: Any) -> None:
            seen.setdefault(name, []).append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())
        return record

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        predict_logits(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: shapes[0][-2:] for name, shapes in seen.items() if len(shapes) == 1 and len(shapes[0]) == 4}


# ------------------------------------------------------------------------------------------------ stages
def select_images(ctx: Context, n: int, seed: int) -> Stage:
    """``n`` correctly classified test images in a seeded random order (their test-set indices)."""
    model, test = ctx.model, ctx.test

    def compute() -> dict[str, Any]:
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
        correct = (predict_logits(model, test.x[order]).argmax(1).cpu() == test.y[order]).nonzero().flatten()
        if len(correct) < n:
            raise ConfigError(f"n_images: only {len(correct)} test images are classified correctly, n_images "
                              f"asks for {n}; lower n_images or use a larger test set")
        return {"index": order[correct[:n]]}

    return ctx.stage("images", compute, params={"n": n, "seed": seed}, inputs=[ctx.data, ctx.classifier])


def attack_specs(cfg: Config) -> dict[str, dict[str, Any]]:
    """Every attack of the study by stage name: PGD, PGD stopped at the first misclassification (``pgd-early``,
    when ``pgd.early_stop``), and Pixel Attack per pixel count."""
    specs: dict[str, dict[str, Any]] = {"pgd": {"kind": "pgd", "eps": cfg.pgd.eps, "steps": cfg.pgd.steps,
                                                "alpha": cfg.pgd.alpha}}
    if cfg.pgd.early_stop:
        specs["pgd-early"] = {**specs["pgd"], "kind": "pgd-early"}
    for k in cfg.pixel.pixels:
        specs[f"pixel{k}"] = {"kind": "pixel", "pixels": int(k), "population": cfg.pixel.population,
                              "generations": cfg.pixel.generations}
    return specs


def images_of(test: ImageSet, images: Stage) -> tuple[torch.Tensor, torch.Tensor]:
    index = images["index"]
    return test.x[index], test.y[index]


def attack(ctx: Context, images: Stage, name: str, spec: dict[str, Any], seed: int) -> Stage:
    """Adversarial examples of the selected images under one attack (PGD: white-box L∞; Pixel Attack: black-box
    L0 by differential evolution), with per-example success, prediction and norms."""
    x, y = images_of(ctx.test, images)
    model = ctx.model

    def compute() -> dict[str, Any]:
        params = {k: v for k, v in spec.items() if k != "kind"}
        if spec["kind"] == "pixel":
            params["eval_batch"] = 500  # ~2x cheaper per image than huge batches on CPU
        start, cpu = time.perf_counter(), time.process_time()
        if spec["kind"] == "pgd-early":
            res, steps = early_stopped_pgd(model, x.to(ctx.device), y.to(ctx.device), seed=seed, **params)
        else:
            res, steps = make_attack(spec["kind"], seed=seed, **params)(model, x.to(ctx.device),
                                                                          y.to(ctx.device)), None
        out = {"x_adv": res.x_adv.cpu(), "success": res.success.cpu(), "pred": res.pred.cpu(),
               "linf": res.linf.cpu(), "l0": res.l0.float().cpu(), "seconds": time.perf_counter() - start,
               "cpu_seconds": time.process_time() - cpu}
        if res.queries is not None:
            out["queries"] = res.queries.float().cpu()
        if steps is not None:
            out["steps"] = steps.float().cpu()
        return out

    return ctx.stage(f"attack-{name}", compute, params={**spec, "seed": seed}, inputs=[images, ctx.classifier])


def early_stopped_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                      alpha: float | None, seed: int) -> tuple[Any, torch.Tensor]:
    """PGD L∞ run step by step from the same seeded random start as ``PGD(eps, alpha, steps, seed=seed)`` on
    the whole batch, each image frozen at its first misclassification (the random start included): the
    attack's trajectory up to the point where Pixel Attack, which stops at its first success, would stop.
    Returns the ``AttackResult`` and the steps each image took."""
    a = 2.5 * eps / steps if alpha is None else alpha
    with frozen(model):
        x_adv = random_start(x, eps, "linf", torch.Generator(device=x.device).manual_seed(seed))
        lo, hi = (x - eps).clamp_min(0), (x + eps).clamp_max(1)
        with torch.no_grad():
            done = model(x_adv).argmax(1) != y
        taken = torch.zeros(len(x), dtype=torch.long, device=x.device)
        for _ in range(steps):
            active = (~done).nonzero().flatten()
            if not len(active):
                break
            grad, _ = loss_gradient(model, x_adv[active], y[active], False)
            with torch.no_grad():
                step = torch.minimum(torch.maximum(x_adv[active] + a * grad.sign(), lo[active]), hi[active])
                x_adv[active] = step
                taken[active] += 1
                done[active] = model(step).argmax(1) != y[active]
        with torch.no_grad():
            pred = model(x_adv).argmax(1)
    norms = perturbation_norms(x, x_adv)
    return AttackResult(x_adv=x_adv, success=pred != y, pred=pred, **norms), taken


def saliency_and_cams(ctx: Context, images: Stage, adv: Stage, name: str, spec: dict[str, Any],
                      layers: list[str], seed: int, batch_size: int) -> Stage:
    """For the successful examples of one attack: guided-backprop SM and Grad-CAM AM of every layer for the four
    (image, class) combinations, and for a random perturbation of the same budget w.r.t. C (the control)."""
    x, y = images_of(ctx.test, images)
    model, device = ctx.model, ctx.device
    eps = spec.get("eps", 0.0)

    def compute() -> dict[str, Any]:
        start, cpu = time.perf_counter(), time.process_time()
        idx = adv["success"].bool().nonzero().flatten()
        if not len(idx):
            return {"index": idx, "n": 0, "control_flips": float("nan"), "seconds": 0.0, "cpu_seconds": 0.0}
        xs, xa, c, d = x[idx], adv["x_adv"][idx], y[idx], adv["pred"][idx]
        ctrl = control_images(xs, xa, spec, seed)
        out: dict[str, Any] = {"index": idx}
        images_, classes = {"x": xs, "a": xa}, {"c": c, "d": d}
        runs = {combo: (images_[i], classes[t]) for combo, (i, t) in COMBOS.items()} | {"ctrl": (ctrl, c)}
        with Bar(f"maps {name}", len(runs)) as bar:
            for combo, (xi, ti) in runs.items():
                out[f"sm:{combo}"] = saliency_maps(model, xi, ti, batch_size, device)
                for lay, (raw, up) in cam_maps(model, xi, ti, layers, batch_size, device).items():
                    out[f"cam:{lay}:{combo}"], out[f"up:{lay}:{combo}"] = raw, up
                bar.update(1)
        ctrl_pred = predict_logits(model, ctrl).argmax(1).cpu()
        out.update(control_flips=float((ctrl_pred != c).float().mean()), n=len(idx),
                   seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)
        return out

    params = {"layers": layers, "seed": seed} | ({"eps": eps} if spec["kind"] == "pgd" else {})
    return ctx.stage(f"maps-{name}", compute, params=params, inputs=[images, adv, ctx.classifier])


def control_images(x: torch.Tensor, x_adv: torch.Tensor, spec: dict[str, Any], seed: int) -> torch.Tensor:
    """The random control of one attack's successful examples (:func:`control_perturbation`): ±ε signs for
    PGD, ±(each image's own L∞) for early-stopped PGD, as many random pixels as changed for Pixel Attack."""
    if spec["kind"] == "pgd":
        return control_perturbation(x, x_adv, "linf", spec["eps"], seed + 7)
    if spec["kind"] == "pgd-early":
        linf = (x_adv - x).flatten(1).abs().amax(1).view(-1, 1, 1, 1)
        return control_perturbation(x, x_adv, "linf", linf, seed + 7)
    return control_perturbation(x, x_adv, "l0", 0.0, seed + 7)


def map_metrics(ctx: Context, images: Stage, adv: Stage, maps: Stage, name: str, spec: dict[str, Any],
                layers: list[str], top_fraction: float, radius: float, top_pixels: int, seed: int) -> Stage:
    """Every per-image metric of one attack's maps (:func:`image_metrics`); the perturbed pixels are the changed
    pixels (Pixel Attack) or the ``top_pixels`` most changed ones, ties broken at random (PGD)."""
    x, _ = images_of(ctx.test, images)
    linf = spec["kind"] in ("pgd", "pgd-early")

    def compute() -> dict[str, Any]:
        idx = maps["index"]
        if len(idx) == 0:
            return {"index": idx}
        k = top_pixels if linf else None
        perturbed = cmp.perturbed_pixels(x[idx], adv["x_adv"][idx], top_k=k, seed=seed)
        # the control's own perturbed pixels, chosen the same way: the baseline of the toward/away tests
        ctrl_x = control_images(x[idx], adv["x_adv"][idx], spec, seed)
        perturbed_ctrl = cmp.perturbed_pixels(x[idx], ctrl_x, top_k=k, seed=seed + 1)
        sm = {combo: maps[f"sm:{combo}"] for combo in COMBOS}
        cams = {combo: {lay: (maps[f"cam:{lay}:{combo}"], maps[f"up:{lay}:{combo}"]) for lay in layers}
                for combo in COMBOS}
        ctrl = {lay: (maps[f"cam:{lay}:ctrl"], maps[f"up:{lay}:ctrl"]) for lay in layers}
        metrics = image_metrics(sm, maps["sm:ctrl"], cams, ctrl, perturbed, top_fraction, radius, perturbed_ctrl)
        return {"index": idx, **{f"m:{k}": v for k, v in metrics.items()}}

    params = {"top_fraction": top_fraction, "radius": radius} | ({"top_pixels": top_pixels, "seed": seed}
                                                                 if linf else {})
    return ctx.stage(f"metrics-{name}", compute, params=params, inputs=[images, adv, maps], version=3)


def store_figure_maps(run_dir: Any, maps: dict[str, Stage], adv: dict[str, Stage], images: Stage, test: ImageSet,
                      layers: list[str], k: int) -> None:
    """The first ``k`` examples of every attack with their maps, in ``figure_maps.safetensors`` of the run
    directory, so the report draws from stored data."""
    from pathlib import Path

    x, y = images_of(test, images)
    tensors: dict[str, torch.Tensor] = {}
    for name, m in maps.items():
        idx = m["index"][:k]
        if not len(idx):
            continue
        tensors |= {f"{name}/x": x[idx], f"{name}/a": adv[name]["x_adv"][idx], f"{name}/c": y[idx],
                    f"{name}/d": adv[name]["pred"][idx]}
        for combo in COMBOS:
            tensors[f"{name}/sm:{combo}"] = m[f"sm:{combo}"][:len(idx)]
            for lay in layers:
                tensors[f"{name}/cam:{lay}:{combo}"] = m[f"up:{lay}:{combo}"][:len(idx)]
    save_tensors(Path(run_dir) / "figure_maps.safetensors", tensors, {"layers": layers, "images": k})


# ------------------------------------------------------------------------------------------------ maps
def saliency_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Guided-backprop saliency (seed 004 Eq. 5–7), |·| max over channels, shape (N, H, W), on the CPU."""
    return map_batches(lambda s: guided_backprop(model, x[s].to(device), target[s].to(device),
                                                 reduce="max")[:, 0].cpu(), len(x), batch_size)


def cam_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layers: list[str], batch_size: int,
             device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Grad-CAM (seed 004 Eq. 8–11) per layer, all layers from one pass per batch: (maps at the layer's
    resolution, maps upsampled to H×W), on the CPU."""
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {lay: [] for lay in layers}
    for s in batch_slices(len(x), batch_size):
        cams = grad_cam_layers(model, x[s].to(device), target[s].to(device), layers=layers)
        for lay in layers:
            parts[lay].append((cams[lay].cam.cpu(), cams[lay].upsampled.cpu()))
    return {lay: (torch.cat([r for r, _ in p]), torch.cat([u for _, u in p])) for lay, p in parts.items()}


def control_perturbation(x: torch.Tensor, x_adv: torch.Tensor, kind: str, eps: float | torch.Tensor,
                         seed: int) -> torch.Tensor:
    """A random perturbation with the adversarial one's budget: ±ε uniform signs (L∞; ``eps`` a number or
    (N, 1, 1, 1) per image) for ``kind="linf"``;
    for ``kind="l0"`` as many random pixels as x_adv changed, set to uniform random values."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "linf":
        signs = (torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1).to(x.device)
        return (x + eps * signs).clamp(0, 1)
    n, c, h, w = x.shape
    counts = cmp.perturbed_pixels(x, x_adv).flatten(1).sum(1)
    out = x.clone().flatten(2)
    for i in range(n):  # one permutation per image: the changed-pixel count differs between images
        where = torch.randperm(h * w, generator=gen)[: int(counts[i])]
        out[i][:, where.to(x.device)] = torch.rand(c, len(where), generator=gen).to(x.device)
    return out.view_as(x)


# ------------------------------------------------------------------------------------------------ metrics
def image_metrics(sm: dict[str, torch.Tensor], sm_ctrl: torch.Tensor,
                  cams: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]],
                  cams_ctrl: dict[str, tuple[torch.Tensor, torch.Tensor]], perturbed: torch.Tensor,
                  top_fraction: float, radius: float,
                  perturbed_ctrl: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every per-image metric from the maps, named ``family:metric:which``: diffusion (entropy, spread), shift
    (top-k IoU, Spearman rank correlation, centre-of-mass displacement), attraction to the perturbed pixels,
    and per layer CAM energy, its retained share and peak displacement.

    ``sm[combo]`` (N, H, W) and ``cams[combo][layer] = (raw, upsampled)`` for combo in ``COMBOS``; the control
    maps are w.r.t. the true class; ``perturbed`` (N, H, W) marks the perturbed pixels, ``perturbed_ctrl``
    those of the random control (the toward/away baseline: ``near:ctrl`` and ``abs_d_near:ctrl``, the control
    map's change of mass near its own pixels, beside ``abs_d_near:c``, the adversarial one's w.r.t. C).
    Spatial tests against the control: ``iou``/``rank`` of ``true`` (x:C vs x̂:C) and ``pred`` (x:C vs x̂:Ĉ)
    beside ``true_ctrl`` (x:C vs control:C).
    """
    n = sm["x_c"].shape[0]
    out: dict[str, torch.Tensor] = {}
    shuffled = torch.roll(torch.arange(n), 1)  # another image's map, for the "same region by chance" baseline

    def shift_metrics(prefix: str, maps: dict[str, torch.Tensor], ctrl: torch.Tensor, spatial: bool) -> None:
        for name, (first, second) in PAIRS.items():
            out[f"{prefix}:iou:{name}"] = cmp.topk_iou(maps[first], maps[second], top_fraction)
            if spatial:
                out[f"{prefix}:rank:{name}"] = cmp.rank_correlation(maps[first], maps[second])
                out[f"{prefix}:com:{name}"] = cmp.com_displacement(maps[first], maps[second])
        out[f"{prefix}:iou:pred_shuffled"] = cmp.topk_iou(maps["x_c"], maps["a_d"][shuffled], top_fraction)
        out[f"{prefix}:iou:true_ctrl"] = cmp.topk_iou(maps["x_c"], ctrl, top_fraction)
        if spatial:
            out[f"{prefix}:rank:true_ctrl"] = cmp.rank_correlation(maps["x_c"], ctrl)
        near = {combo: cmp.attraction(maps[combo], perturbed, radius) for combo in COMBOS}
        for combo, att in near.items():
            out[f"{prefix}:near:{combo}"] = att.share
        out[f"{prefix}:near:chance"] = near["x_c"].chance
        out[f"{prefix}:d_near:pred"] = near["a_d"].share - near["x_c"].share
        out[f"{prefix}:abs_d_near:pred"] = out[f"{prefix}:d_near:pred"].abs()
        out[f"{prefix}:d_near:c"] = near["a_c"].share - near["x_c"].share
        out[f"{prefix}:abs_d_near:c"] = out[f"{prefix}:d_near:c"].abs()
        out[f"{prefix}:d_near:d"] = near["a_d"].share - near["x_d"].share
        if perturbed_ctrl is not None:
            base = cmp.attraction(maps["x_c"], perturbed_ctrl, radius).share
            out[f"{prefix}:near:ctrl"] = cmp.attraction(ctrl, perturbed_ctrl, radius).share
            out[f"{prefix}:abs_d_near:ctrl"] = (out[f"{prefix}:near:ctrl"] - base).abs()
            out[f"{prefix}:excess_near:c"] = out[f"{prefix}:abs_d_near:c"] - out[f"{prefix}:abs_d_near:ctrl"]

    for combo in COMBOS:
        out[f"sm:entropy:{combo}"] = cmp.saliency_entropy(sm[combo])
        out[f"sm:spread:{combo}"] = cmp.spatial_spread(sm[combo])
    out["sm:entropy:ctrl"] = cmp.saliency_entropy(sm_ctrl)
    # diffusion "around the region of interest": mass in the ring of width ``radius`` around x:C's top region
    ring = _ring(sm["x_c"], top_fraction, radius)
    for combo, maps_ in {"x_c": sm["x_c"], "a_d": sm["a_d"], "a_c": sm["a_c"], "ctrl": sm_ctrl}.items():
        out[f"sm:ring:{combo}"] = cmp.attraction(maps_, ring, 0).share
    for kind in ("entropy", "spread"):
        out[f"sm:d_{kind}:pred"] = out[f"sm:{kind}:a_d"] - out[f"sm:{kind}:x_c"]
    shift_metrics("sm", sm, sm_ctrl, spatial=True)
    layers = list(cams["x_c"])
    for lay in layers:
        up = {combo: cams[combo][lay][1] for combo in COMBOS}
        shift_metrics(f"cam:{lay}", up, cams_ctrl[lay][1], spatial=lay == layers[-1])
        energy = {combo: cmp.cam_energy(cams[combo][lay][0]) for combo in COMBOS}
        for combo, e in energy.items():
            out[f"cam:{lay}:energy:{combo}"] = e
        out[f"cam:{lay}:energy:ctrl_c"] = cmp.cam_energy(cams_ctrl[lay][0])
        out[f"cam:{lay}:retained:c"] = _ratio(energy["a_c"], energy["x_c"])
        out[f"cam:{lay}:retained:d"] = _ratio(energy["a_d"], energy["x_d"])
        out[f"cam:{lay}:retained:ctrl_c"] = _ratio(out[f"cam:{lay}:energy:ctrl_c"], energy["x_c"])
        out[f"cam:{lay}:peak:true"] = cmp.peak_displacement(up["x_c"], up["a_c"])
        out[f"cam:{lay}:peak:pred"] = cmp.peak_displacement(up["x_c"], up["a_d"])
        # distortion of the true class's map beyond the random control's (per layer: does it intensify?)
        out[f"cam:{lay}:distortion:true"] = out[f"cam:{lay}:iou:true_ctrl"] - out[f"cam:{lay}:iou:true"]
    # within-image retract/focus: the C and Ĉ maps' mass near the perturbed pixels move in opposite directions
    d_c, d_d = out[f"cam:{layers[-1]}:d_near:c"], out[f"cam:{layers[-1]}:d_near:d"]
    opposite = (torch.sign(d_c) * torch.sign(d_d) < 0).float()
    opposite[(d_c == 0) | (d_d == 0) | d_c.isnan() | d_d.isnan()] = float("nan")
    out[f"cam:{layers[-1]}:opposite"] = opposite
    return {k: v.float() for k, v in out.items()}


def _ring(maps: torch.Tensor, fraction: float, radius: float) -> torch.Tensor:
    """(N, H, W) bool: pixels within ``radius`` of each map's top-``fraction`` region but outside it."""
    flat = maps.abs().flatten(1)
    k = max(1, int(round(fraction * flat.shape[1])))
    top = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True).view_as(maps)
    return cmp.dilate(top, max(radius, 1.0)) & ~top


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = a / b.clamp_min(1e-12)
    r[b <= 0] = float("nan")
    return r


__all__ = ["COMBOS", "PAIRS", "attack", "attack_specs", "cam_layers", "cam_maps", "control_perturbation",
           "image_metrics", "map_metrics", "saliency_and_cams", "saliency_maps", "select_images", "store_figure_maps"]
