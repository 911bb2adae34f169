"""Training throughput of the seed 001 networks on this CPU, and the raw cost of one forward+backward pass.

The forward+backward time per batch is the baseline every attack and saliency method is compared with.
Run: `.venv/bin/python benchmarks/train.py` (writes benchmarks/results/train.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from advsal.data import ImageSet
from advsal.models import build_model
from advsal.progress import set_quiet
from advsal.training import train_classifier


def best_time(fn, repeat: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_backward_seconds(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(forward only, forward + backward to the input) seconds for one batch, eval mode."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.zeros(len(x), dtype=torch.long)

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="sum"), xi)

    return best_time(fwd), best_time(fwd_bwd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000, help="training images per measurement")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    set_quiet(True)
    torch.manual_seed(0)
    rows = []
    for name, shape in (("mnist-net", (1, 28, 28)), ("cifar-net", (3, 32, 32))):
        x = torch.rand(args.n, *shape)
        data = ImageSet(x, torch.randint(0, 10, (args.n,)), [str(i) for i in range(10)], "random")
        model = build_model(name, 10, shape[0], shape[1], seed=0)
        hist = train_classifier(model, data, epochs=1, batch_size=args.batch, seed=0)
        fwd, fwd_bwd = forward_backward_seconds(model, x[: args.batch])
        rows.append((name, hist.images_per_second, fwd * 1e3, fwd_bwd * 1e3, args.batch / fwd_bwd))
    lines = [f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; batch {args.batch}.", "",
             "| model | training images/s | forward ms/batch | forward+backward ms/batch | fwd+bwd images/s |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {t:.0f} | {f:.1f} | {fb:.1f} | {ips:.0f} |" for n, t, f, fb, ips in rows]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "train.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
