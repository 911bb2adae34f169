"""Guarded inference cost, and an exported detector's scores in a fresh process.

1. Throughput: ``Guard(F, D)(x)`` — F's forward + the saliency ∂F_c/∂x (F's backward) + D on image ⊕ saliency —
   as a ratio to F's forward alone (no grad) on the same batch, at batch 1 and batch 256, for mnist-net (28×28×1,
   D = MNIST-NET-D) and resnet20 (32×32×3, D = CIFAR10-NET-D); best of ``--repeat`` interleaved rounds, random
   weights (the cost does not depend on them). The guard shares F's pass between the prediction and the saliency.
2. Export round trip: a tiny detection run (mnist5k), ``advsal export runs/… --detector image+saliency-fgsm``, then
   ``advsal detect`` on the run's stored adversarial test images in a fresh process: its scores must equal the
   scores the study stored, bit for bit.

Run: `.venv/bin/python benchmarks/guard.py [--device cuda]` (writes benchmarks/results/guard.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from advsal.detection import Guard, SaliencyDetector
from advsal.models import build_model
from advsal.progress import set_quiet

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {"mnist-net": (1, 28, "mnist-net"), "resnet20": (3, 32, "cifar-net")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(arch: str, batch: int, repeat: int, device: torch.device) -> dict:
    channels, size, det_arch = SETUPS[arch]
    model = build_model(arch, 10, channels, size, seed=0).to(device).eval()
    det = SaliencyDetector(model, arch=det_arch)
    det.build((2 * channels, size, size))
    guard = Guard(model, det, batch_size=max(batch, 1))
    x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)

    def forward():
        with torch.no_grad():
            model(x)

    def guarded():
        guard(x)

    best = {"forward": float("inf"), "guard": float("inf")}
    inner = max(1, 64 // batch)  # several calls per timing at batch 1
    for fn in (forward, guarded):  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in (("forward", forward), ("guard", guarded)):
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            best[name] = min(best[name], (time.perf_counter() - start) / inner)
    return {"arch": arch, "batch": batch, "forward_ms": best["forward"] * 1e3, "guard_ms": best["guard"] * 1e3,
            "ratio": best["guard"] / best["forward"], "guard_images_per_s": batch / best["guard"]}


TINY_RUN = {"name": "tiny", "data": {"name": "mnist5k", "train_limit": 200, "test_limit": 40},
            "classifier": {"epochs": 1, "lr": 0.003}, "n_train": 16, "n_test": 12, "search_images": 8,
            "attacks": {"fgsm": {}}, "attack_limits": {}, "detector": {"epochs": 1, "batch_size": 32},
            "baselines": [], "baseline_attacks": ["fgsm"],
            "generalisation": {"attacks": ["fgsm"], "eps_factors": [1.0], "n_train": 8, "n_test": 8},
            "second_round": {"attack": "fgsm", "n_images": 2, "steps": 1, "sigmas": [0.5]}, "layer_images": 4,
            "device": "cpu"}


def export_round_trip() -> dict:
    from safetensors.torch import load_file

    from advsal.studies.config import from_mapping
    from advsal.studies.detection import Config, run

    cli = "import sys; from advsal.cli import main; sys.argv[0] = 'advsal'; main()"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "runs" / "tiny"
        has_security = "security" in {f.name for f in fields(Config)}  # an optional, costly section: off
        off = {"security": {"enabled": False, "attack": "fgsm"}} if has_security else {}
        run(from_mapping(Config, {**TINY_RUN, **off}), run_dir)
        subprocess.run([sys.executable, "-c", cli, "export", str(run_dir), "--detector", "image+saliency-fgsm",
                        "--out", str(tmp / "guard"), "-q"], check=True, capture_output=True)
        stages = run_dir / "stages"
        x_adv = load_file(str(next(stages.glob("adv-fgsm-test-*")) / "tensors.safetensors"))["x_adv"]
        stored = load_file(str(next(stages.glob("detector-fgsm-????????????????")) / "tensors.safetensors"))
        np.savez(tmp / "adv.npz", x=x_adv.numpy())
        subprocess.run([sys.executable, "-c", cli, "detect", "--guard", str(tmp / "guard"), "--images",
                        str(tmp / "adv.npz"), "--out", str(tmp / "r.json"), "--device", "cpu", "-q"], check=True,
                       capture_output=True)
        rows = json.loads((tmp / "r.json").read_text())["rows"]
        scores = [r["score"] for r in rows]
        expected = stored["scores_adv"].tolist()
        return {"n": len(scores), "identical": scores == expected,
                "max_abs_diff": max(abs(a - b) for a, b in zip(scores, expected, strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard.md")
    args = parser.parse_args()
    set_quiet(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [throughput(arch, batch, args.repeat, device) for arch in SETUPS for batch in (1, 256)]
    lines = [f"# Guarded inference (`benchmarks/guard.py`, device {device}, {torch.get_num_threads()} threads, "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__})", "",
             "| classifier | batch | F forward (ms) | guard (ms) | ratio | guarded images/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['batch']} | {r['forward_ms']:.2f} | {r['guard_ms']:.2f} | "
                     f"{r['ratio']:.2f}× | {r['guard_images_per_s']:.0f} |")
    if not args.skip_export:
        rt = export_round_trip()
        lines += ["", f"Export round trip (tiny detection run → `advsal export` → `advsal detect` in a fresh process): "
                      f"{rt['n']} scores, bit-identical to the study's stored scores: {rt['identical']} "
                      f"(max |Δ| {rt['max_abs_diff']:.3g})."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
