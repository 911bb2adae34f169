"""Throughput of the saliency methods vs captum and vs the raw forward+backward cost.

Models: mnist-net (seed 001 Table I) trained 1 epoch on mnist5k (cached under runs/bench/), and a ResNet-20
on 28×28 grey images (seeded random weights — timing does not depend on the weights) for Grad-CAM on a deeper
net. Every method explains the same batch of test images for given target classes. Timings are the best of
``--repeat`` interleaved rounds (robust to other processes sharing the CPU). pytorch-grad-cam, the other
common Grad-CAM library, cannot be installed here (it requires torchvision), so captum is the only peer.

Run: `.venv/bin/python benchmarks/saliency.py` (writes benchmarks/results/saliency.md).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from advsal.data import load_dataset
from advsal.models import build_model
from advsal.progress import set_quiet
from advsal.saliency import grad_cam, gradient, guided_backprop
from advsal.store import RunStore, atomic_write_text
from advsal.training import train_classifier

ROOT = Path(__file__).resolve().parent.parent


def trained_mnist_net(train) -> torch.nn.Module:
    config = {"arch": "mnist-net", "epochs": 1, "batch_size": 64, "seed": 0}

    def compute():
        model = build_model("mnist-net", seed=0)
        train_classifier(model, train, epochs=1, batch_size=64, seed=0)
        return dict(model.state_dict())

    state = RunStore(ROOT / "runs" / "bench").cached("saliency-mnist-net", config, compute)
    model = build_model("mnist-net", seed=0)
    model.load_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    return model.eval()


def raw_forward_backward(model, x, t) -> Callable[[], None]:
    """The floor: one forward and one backward to the input, no bookkeeping."""
    for p in model.parameters():
        p.requires_grad_(False)

    def run():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xi).gather(1, t.view(-1, 1)).sum(), xi)

    return run


def measure(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time per function over ``repeat`` interleaved rounds (after one warm-up round)."""
    best = {k: float("inf") for k in fns}
    for r in range(repeat + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def cases(model, layer_name: str, x, t, classes: int) -> dict[str, Callable[[], object]]:
    from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam, Saliency

    layer = dict(model.named_modules())[layer_name]
    size = tuple(x.shape[-2:])

    def captum_cam(target):
        cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")

    return {
        "raw": raw_forward_backward(model, x, t),
        "gradient": lambda: gradient(model, x, t),
        "captum gradient": lambda: Saliency(model).attribute(x, target=t, abs=False),
        "guided": lambda: guided_backprop(model, x, t),
        "captum guided": lambda: GuidedBackprop(model).attribute(x, target=t),
        "grad_cam": lambda: grad_cam(model, x, t, layer=layer_name),
        "captum grad_cam": lambda: captum_cam(t),
        "grad_cam all": lambda: grad_cam(model, x, layer=layer_name, all_classes=True),
        "grad_cam loop": lambda: [grad_cam(model, x, c, layer=layer_name) for c in range(classes)],
        "captum grad_cam loop": lambda: [captum_cam(c) for c in range(classes)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    set_quiet(True)
    warnings.filterwarnings("ignore", module="captum")
    train, test = load_dataset("mnist5k")
    x = test.x[: args.batch]
    resnet = build_model("resnet20", input_size=28, seed=0).eval()
    nets = [("mnist-net (trained 1 epoch)", trained_mnist_net(train), "features.8"),
            ("resnet20 28×28 (random weights)", resnet, "features.5")]
    lines = [f"Batch of {args.batch} mnist5k test images, targets = predicted classes, best of {args.repeat} "
             f"interleaved rounds; torch {torch.__version__} on {platform.machine()} with "
             f"{torch.get_num_threads()} threads. images/s per method; `raw` = one forward + one backward to "
             "the input (the limit for input-gradient methods).", "",
             "| model | method | advsal img/s | captum img/s | advsal / captum | advsal / raw |",
             "|---|---|---|---|---|---|"]
    all_rows = ["", "All-class Grad-CAM (maps for all 10 classes of the batch):", "",
                "| model | advsal all_classes ms | advsal 10 calls ms | captum 10 calls ms "
                "| speed-up vs 10 calls |",
                "|---|---|---|---|---|"]
    for label, model, layer in nets:
        with torch.no_grad():
            t = model(x).argmax(1)
        best = measure(cases(model, layer, x, t, 10), args.repeat)
        for k, v in best.items():
            print(f"{label:32s} {k:22s} {1000 * v:9.1f} ms")
        raw = args.batch / best["raw"]
        for method in ("gradient", "guided", "grad_cam"):
            ours, peer = args.batch / best[method], args.batch / best[f"captum {method}"]
            lines.append(f"| {label} | {method} | {ours:.0f} | {peer:.0f} | {ours / peer:.2f}× | "
                         f"{ours / raw:.2f} |")
        lines.append(f"| {label} | raw forward+backward | {raw:.0f} | | | 1.00 |")
        all_rows.append(f"| {label} | {1000 * best['grad_cam all']:.1f} | "
                        f"{1000 * best['grad_cam loop']:.1f} | {1000 * best['captum grad_cam loop']:.1f} | "
                        f"{best['grad_cam loop'] / best['grad_cam all']:.1f}× |")
    table = "\n".join(lines + all_rows) + "\n"
    print(table)
    out = ROOT / "benchmarks" / "results" / "saliency.md"
    header = "# Saliency throughput\n\nCommand: `.venv/bin/python benchmarks/saliency.py`\n\n"
    atomic_write_text(out, header + table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
