"""The field's baseline detectors on mnist5k: AUROC against BIM and C&W, and scoring cost per image.

F is mnist-net (seed 001 Table I) trained ``--epochs`` epochs on mnist5k train (seeded). Adversarial sets: BIM
(L∞, ε = ``--bim-eps`` = 0.15, 10 steps) and C&W L2 (``--cw-steps`` Adam steps × ``--cw-search`` binary-search
rounds), on the first ``--n-fit`` correctly classified training images (to fit the detectors) and the first
``--n-test`` correctly classified test images (to score them). As in Ma et al. §5.1, only successful adversarial
examples and their clean sources are kept, so clean and adversarial sets are paired. Each detector is fitted per
attack on (clean, adversarial) training pairs (feature squeezing on the clean images only) and its AUROC measured
on the test pairs. Cost: ``det.score`` on a batch of ``--batch`` test images as a ratio to F's forward pass on the
same batch (no grad), best of ``--repeat`` interleaved rounds.

Run: `.venv/bin/python benchmarks/detectors_baselines.py` (writes benchmarks/results/detectors_baselines.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from saliency import measure  # best of interleaved rounds, shared by the benchmarks

from advsal.attacks import BIM, CarliniWagnerL2
from advsal.data import load_dataset
from advsal.detection import (
    FeatureSqueezingDetector,
    KDBUDetector,
    LIDDetector,
    MahalanobisDetector,
    auroc,
    pooled,
)
from advsal.models import build_model
from advsal.progress import set_quiet
from advsal.studies.detection.registry import PAPER_NUMBERS
from advsal.training import train_classifier

ROOT = Path(__file__).resolve().parent.parent

#: The registry's kind of each benchmarked detector: its papers' citations and MNIST numbers (PAPER_NUMBERS).
KINDS = {"LID": "lid", "Mahalanobis": "mahalanobis", "KD+BU": "kd-bu", "Feature squeezing": "feature-squeezing"}


def correctly_classified(model, x, y, n):
    with torch.no_grad():
        ok = torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)]) == y
    return x[ok][:n], y[ok][:n]


def adversarial_pairs(attack, model, x, y):
    result = attack(model, x, y)
    ok = result.success
    return x[ok], result.x_adv[ok]


def detectors(model, noise: list[float]):
    out = {"LID": lambda: LIDDetector(model)}
    for eps in noise:
        out[f"Mahalanobis (ε={eps:g})"] = (lambda e=eps: MahalanobisDetector(model, noise=e))
    out["KD+BU"] = lambda: KDBUDetector(model)
    out["Feature squeezing"] = lambda: FeatureSqueezingDetector(model)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-fit", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--bim-eps", type=float, default=0.15)
    parser.add_argument("--cw-steps", type=int, default=50)
    parser.add_argument("--cw-search", type=int, default=4)
    parser.add_argument("--noise", type=float, nargs="*", default=[0.0, 0.002])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    set_quiet(True)
    torch.manual_seed(0)
    start = time.perf_counter()
    train, test = load_dataset("mnist5k")
    model = build_model("mnist-net", seed=0)
    train_classifier(model, train, epochs=args.epochs, batch_size=64, seed=0)
    model.eval()
    with torch.no_grad():
        accuracy = float((torch.cat([model(test.x[i:i + 512]).argmax(1) for i in range(0, len(test.x), 512)])
                          == test.y).float().mean())
    print(f"mnist-net: {accuracy:.4f} test accuracy ({time.perf_counter() - start:.0f} s)")
    x_fit, y_fit = correctly_classified(model, train.x, train.y, args.n_fit)
    x_test, y_test = correctly_classified(model, test.x, test.y, max(args.n_test, args.batch))
    attacks = {f"BIM (ε={args.bim_eps:g}, 10 steps)": BIM(eps=args.bim_eps, steps=10),
               f"C&W L2 ({args.cw_steps} steps × {args.cw_search})":
                   CarliniWagnerL2(steps=args.cw_steps, binary_search_steps=args.cw_search)}
    sets = {}
    for name, attack in attacks.items():
        t0 = time.perf_counter()
        fit = adversarial_pairs(attack, model, x_fit, y_fit)
        held = adversarial_pairs(attack, model, x_test[:args.n_test], y_test[:args.n_test])
        sets[name] = (fit, held)
        print(f"{name}: {len(fit[0])}/{len(x_fit)} fit and {len(held[0])}/{args.n_test} test pairs "
              f"({time.perf_counter() - t0:.0f} s)")

    rows, fitted = [], {}
    for det_name, make in detectors(model, args.noise).items():
        row = [det_name]
        for attack_name, ((c_fit, a_fit), (c_test, a_test)) in sets.items():
            t0 = time.perf_counter()
            det = make().fit(c_fit, a_fit)
            seconds = time.perf_counter() - t0
            scores, labels = pooled(det.score(c_test), det.score(a_test))
            row.append(auroc(scores, labels))
            print(f"{det_name:28s} {attack_name:28s} AUROC {row[-1]:.4f} (fit {seconds:.0f} s)")
            fitted.setdefault(det_name, det)
        rows.append(row)

    x = x_test[:args.batch]

    def forward():
        with torch.no_grad():
            model(x)

    fns = {"F forward": forward}
    fns.update({name: (lambda d=det: d.score(x, batch_size=args.batch)) for name, det in fitted.items()})
    best = measure(fns, args.repeat)
    cost = {k: v / best["F forward"] for k, v in best.items()}
    for k, v in best.items():
        print(f"{k:28s} {1000 * v:8.1f} ms/batch  {cost[k]:7.2f}× F forward")

    names = list(sets)
    table = (f"mnist-net trained {args.epochs} epochs ({accuracy:.2%} test accuracy); pairs (fit / test): "
             + "; ".join(f"{n}: {len(f[0])} / {len(h[0])}" for n, (f, h) in sets.items())
             + f". Torch {torch.__version__} on {platform.machine()}, {torch.get_num_threads()} threads.\n\n"
             "| detector | " + " | ".join(f"AUROC {n}" for n in names) + " | score ms / batch of "
             f"{args.batch} | cost / F forward |\n|---|" + "---:|" * (len(names) + 2) + "\n")
    for row in rows:
        name = row[0]
        table += (f"| {name} | " + " | ".join(f"{v:.4f}" for v in row[1:])
                  + f" | {1000 * best[name]:.1f} | {cost[name]:.2f} |\n")
    table += f"| F forward (no grad) | | | {1000 * best['F forward']:.1f} | 1.00 |\n\nPapers' MNIST numbers:\n\n"
    table += "".join(f"- {name}: {PAPER_NUMBERS[kind]['table']} — {PAPER_NUMBERS[kind]['note']}\n"
                     for name, kind in KINDS.items())
    print(table)
    out = ROOT / "benchmarks" / "results" / "detectors_baselines.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Baseline detectors on mnist5k\n\nCommand: `.venv/bin/python benchmarks/detectors_baselines.py`"
                   "\n\n" + table)
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
