"""Security of the detection study's saliency detector under the library's adaptive attacks (issue #15).

Trains F and the BIM-trained D exactly like the default study (``make demo``: preset detection-mnist5k), through
the study's own stages (cached in ``runs/bench-security``), then on the first ``--images`` correctly classified
test images measures with :func:`advsal.detection.security.robust_detection` and the strongest attack ensemble:

* at D's own threshold (0.5) and with the threshold calibrated to 5% clean FPR on held-out clean test images
  (the attacker knows it), L∞ ε ∈ {ε*, 0.2, 0.3} (ε* = the study's BIM budget);
* with ``--hardened``: the same curve for D hardened by dynamic adversary training
  (:func:`advsal.detection.hardening.harden_detector`) and for a PGD-trained classifier (Madry et al.).

Run: `.venv/bin/python benchmarks/security.py [--images 100] [--steps 100] [--restarts 2] [--eps ...] [--hardened]`
(writes benchmarks/results/security.json after each setting).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from advsal.attacks.detector_attacks import strongest_attack
from advsal.attacks.specs import ATTACK_SPECS
from advsal.detection.security import correctly_classified, robust_detection
from advsal.progress import set_quiet
from advsal.studies.detection.config import Config
from advsal.studies.detection.registry import DETECTOR_SPECS, MAIN_DETECTOR
from advsal.studies.detection.steps import craft, draw, search_epsilon, train_detector
from advsal.studies.engine import open_study

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--eps", type=float, nargs="*", default=None)
    parser.add_argument("--hardened", action="store_true")
    parser.add_argument("--harden-images", type=int, default=1000)
    parser.add_argument("--harden-rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--run-name", default="bench-security",
                        help="run directory under --runs holding the cached F and D (one process per directory)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--thresholds", nargs="*", default=["0.5", "fpr"], choices=["0.5", "fpr"])
    parser.add_argument("--out", default="security.json", help="file name under benchmarks/results/")
    parser.add_argument("--modes", nargs="*", default=["orthogonal", "selective"])
    parser.add_argument("--warm-modes", nargs="*", default=["selective", "orthogonal"],
                        help="the ensemble's warm-restart group (none: the first group and PGD on F only)")
    parser.add_argument("--lams", nargs="*", type=float, default=[1.0, 4.0])
    args = parser.parse_args()
    set_quiet(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Config(device=args.device)
    ctx = open_study("detection", cfg, Path(args.runs) / args.run_name)
    try:
        spec = ATTACK_SPECS["bim"]
        train = draw("train-subset", ctx.train, cfg.n_train, cfg.seed)
        test = draw("test-subset", ctx.test, cfg.n_test, cfg.seed)
        search = draw("search-subset", ctx.test, cfg.search_images, cfg.seed + 1)
        eps = search_epsilon(ctx, spec, cfg.attacks["bim"], search, cfg.max_accuracy)
        adv_train = craft(ctx, spec, cfg.attacks["bim"], eps, train, "train", cfg.seed)
        adv_test = craft(ctx, spec, cfg.attacks["bim"], eps, test, "test", cfg.seed + 1)
        trained = train_detector(ctx, DETECTOR_SPECS[MAIN_DETECTOR], cfg, "detector-bim", train, adv_train, test,
                                 adv_test)
        F, D = ctx.model, trained.detector
        eps_star = float(eps["eps"])
        # attacked: first correctly classified test-subset images; calibration: the other test images
        idx = correctly_classified(F, test.x.to(ctx.device), test.y.to(ctx.device), args.images)
        x, y = test.x[idx].to(ctx.device), test.y[idx].to(ctx.device)
        rest = torch.ones(len(test), dtype=torch.bool)
        rest[idx] = False
        x_cal = test.x[rest].to(ctx.device)
        budgets = args.eps or [eps_star, 0.2, 0.3]
        out = {"eps_star": eps_star, "images": len(x), "steps": args.steps, "restarts": args.restarts,
               "modes": args.modes, "lams": args.lams, "warm_modes": args.warm_modes,
               "ensemble": [a.label for a in strongest_attack(
                   eps_star, lams=args.lams, modes=args.modes, warm_modes=args.warm_modes).attacks],
               "calibration_images": len(x_cal), "device": str(ctx.device), "threads": torch.get_num_threads()}
        settings = {"0.5": ("threshold-0.5", None), "fpr": ("fpr-5%", 0.05)}
        for name, fpr in (settings[t] for t in args.thresholds):
            start = time.perf_counter()
            def attacks(e):
                return strongest_attack(e, steps=args.steps, restarts=args.restarts, lams=args.lams, modes=args.modes,
                                        warm_modes=args.warm_modes)

            res = robust_detection(F, D, x, y, budgets, fpr=fpr, x_calibration=x_cal, attacks=attacks)
            out[name] = res.to_dict()
            (ROOT / "benchmarks" / "results" / args.out).write_text(json.dumps(out, indent=1))
            print(f"{name}: threshold {res.threshold:.3g} (clean FPR {res.clean_fpr}) both {res.both} fooled_any "
                  f"{res.fooled_any} robust TPR {res.robust_tpr} ({time.perf_counter() - start:.0f} s) "
                  f"winners {res.winners}", flush=True)
        if args.hardened:
            out["hardening"] = hardened(ctx, D, train, adv_train, x, y, x_cal, args)
        path = ROOT / "benchmarks" / "results" / args.out
        path.write_text(json.dumps(out, indent=1))
        print(f"wrote {path}")
    finally:
        ctx.store.close()


def hardened(ctx, D, train, adv_train, x, y, x_cal, args) -> dict:
    """D hardened by dynamic adversary training (L∞ ε = 0.1) on the first ``--harden-images`` training images;
    its robust TPR at 5% FPR at ε ∈ {0.1, 0.2} under the same attack ensemble."""
    from advsal.detection.hardening import harden_detector

    n = args.harden_images
    start = time.perf_counter()
    hard = harden_detector(ctx.model, D, train.x[:n].to(ctx.device), train.y[:n].to(ctx.device), eps=0.1,
                           rounds=args.harden_rounds, steps=20, x_adv_static=adv_train["x_adv"][:n].to(ctx.device),
                           epochs=2, lr=1e-3, batch_size=64)
    out = {"harden_seconds": time.perf_counter() - start, "rounds": hard.rounds, "images": n}

    def attacks(e):
        return strongest_attack(e, steps=args.steps, restarts=args.restarts, lams=args.lams, modes=args.modes,
                                warm_modes=args.warm_modes)

    res = robust_detection(ctx.model, hard.detector, x, y, [0.1, 0.2], fpr=0.05, x_calibration=x_cal,
                           attacks=attacks)
    out["hardened"] = res.to_dict()
    print(f"hardened D: rounds {hard.rounds}; robust TPR {res.robust_tpr} both {res.both} "
          f"fooled_any {res.fooled_any}", flush=True)
    return out


if __name__ == "__main__":
    main()
