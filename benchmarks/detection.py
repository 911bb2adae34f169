"""Deployment cost of the saliency detector: ``SaliencyDetector.score`` (F forward + backward for the saliency,
then D forward on image ⊕ saliency) as a ratio to F's forward pass alone (issue target ≤ 4×).

F is mnist-net trained 1 epoch on mnist5k (the cached model of benchmarks/saliency.py); D is Table I's
MNIST-NET-D (2 input channels) fitted 1 epoch on 512 clean vs FGSM images — timing does not depend on how well D
is trained. Timings are the best of ``--repeat`` interleaved rounds.

Run: `.venv/bin/python benchmarks/detection.py` (writes benchmarks/results/detection.md).
"""

from __future__ import annotations

import argparse
import platform

import torch
from saliency import ROOT, measure, raw_forward_backward, trained_mnist_net

from advsal.attacks import FGSM
from advsal.data import load_dataset
from advsal.detection import SaliencyDetector
from advsal.progress import set_quiet
from advsal.store import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    set_quiet(True)
    train, test = load_dataset("mnist5k")
    model = trained_mnist_net(train)
    x_fit = train.x[:512]
    x_adv = FGSM(eps=0.2)(model, x_fit, train.y[:512]).x_adv
    detector = SaliencyDetector(model).fit(x_fit, x_adv, epochs=1, batch_size=64)
    x = test.x[: args.batch]
    with torch.no_grad():
        t = model(x).argmax(1)

    def forward():
        with torch.no_grad():
            model(x)

    best = measure({"forward": forward, "raw": raw_forward_backward(model, x, t),
                    "score": lambda: detector.score(x, batch_size=args.batch)}, args.repeat)
    for k, v in best.items():
        print(f"{k:10s} {1000 * v:8.1f} ms")
    rate = {k: args.batch / v for k, v in best.items()}
    table = (f"Batch of {args.batch} mnist5k test images, best of {args.repeat} interleaved rounds; torch "
             f"{torch.__version__} on {platform.machine()} with {torch.get_num_threads()} threads.\n\n"
             "| step | img/s | cost / F forward |\n|---|---|---|\n"
             f"| F forward (no grad) | {rate['forward']:.0f} | 1.00 |\n"
             f"| F forward + backward to the input | {rate['raw']:.0f} | {best['raw'] / best['forward']:.2f} |\n"
             f"| `SaliencyDetector.score` | {rate['score']:.0f} | {best['score'] / best['forward']:.2f} |\n")
    print(table)
    out = ROOT / "benchmarks" / "results" / "detection.md"
    atomic_write_text(out, "# Detector deployment cost\n\nCommand: `.venv/bin/python benchmarks/detection.py`\n\n"
                      + table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
