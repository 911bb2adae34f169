"""Security of the detection study's saliency detector under the library's adaptive attacks (issue #15).

Trains F and the BIM-trained D exactly like the default study (``make demo``: preset detection-mnist5k), through
the study's own stages (cached in ``runs/bench-security``), then on the first ``--images`` correctly classified
test images measures with :func:`advsal.detection.security.robust_detection` and the strongest attack ensemble:

* at D's own threshold (0.5) and with the threshold calibrated to 5% clean FPR on held-out clean test images
  (the attacker knows it), L∞ ε ∈ {ε*, 0.2, 0.3} (ε* = the study's BIM budget);
* with ``--hardened`` (Tramèr's comparison): the plain D and D hardened by dynamic adversary training
  (:func:`advsal.detection.hardening.harden_detector`) at ``--hard-eps``, the plain D's points transferred to the
  hardened D (a gradient-masking check), and a PGD-trained classifier (Madry et al.) at those budgets and their
  halves.

Run: `.venv/bin/python benchmarks/security.py [--images 100] [--steps 100] [--restarts 2] [--eps ...] [--hardened]`
(writes benchmarks/results/``--out`` after each setting; ``--run-name`` for a second process on a copy of the cached
run, whose lock admits one process).
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
    parser.add_argument("--harden-steps", type=int, default=20)
    parser.add_argument("--harden-eps", type=float, default=0.1)
    parser.add_argument("--adv-epochs", type=int, default=10, help="PGD training epochs of the robust classifier")
    parser.add_argument("--hard-eps", type=float, nargs="*", default=[0.1, 0.2],
                        help="budgets of the Tramèr comparison (the PGD-trained F also at their halves)")
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
            hardened(ctx, D, train, adv_train, x, y, x_cal, args, out)
        path = ROOT / "benchmarks" / "results" / args.out
        path.write_text(json.dumps(out, indent=1))
        print(f"wrote {path}")
    finally:
        ctx.store.close()


def hardened(ctx, D, train, adv_train, x, y, x_cal, args, record: dict) -> dict:
    """Tramèr's comparison on the same images: D hardened by dynamic adversary training (L∞ ``--harden-eps``, the
    first ``--harden-images`` training images), the plain D and a PGD-trained classifier (Madry et al.,
    ``--adv-epochs`` epochs at ``--harden-eps``, no detector). Per ε of ``--hard-eps`` at 5% clean FPR: the plain
    and the hardened D's robust curves under the strongest attack ensemble, and the plain D's adversarial points
    transferred to the hardened D (a check for gradient masking: a transfer attack must not beat the white-box
    one); the PGD-trained F's robust accuracy under APGD-CE at ε and ε/2 (Tramèr 2022: a detector robust at ε
    gives a classifier robust at ε/2)."""
    import copy

    from advsal.attacks import APGD
    from advsal.attacks.adaptive import evaluate_pair
    from advsal.attacks.detector_attacks import DetectorAttackEnsemble
    from advsal.detection.hardening import harden_detector
    from advsal.tensors import predict_logits
    from advsal.training import adversarial_train_classifier

    F, budgets = ctx.model, args.hard_eps
    out = record["tramer"] = {"hard_eps": args.hard_eps, "steps": args.steps, "restarts": args.restarts}
    points: dict[float, torch.Tensor] = {}

    def attacks(e, record=False):
        ens = strongest_attack(e, steps=args.steps, restarts=args.restarts, lams=args.lams, modes=args.modes,
                               warm_modes=args.warm_modes)
        if not record:
            return ens

        class Recording(DetectorAttackEnsemble):  # keeps the points for the transfer check
            def __call__(self, *a, **k):
                res = super().__call__(*a, **k)
                points[e] = res.x_adv
                return res

        rec = Recording(ens.attacks)
        return rec

    # the PGD-trained classifier (cheap to evaluate: first, so its numbers come early)
    start = time.perf_counter()
    robust_f = copy.deepcopy(F)
    hist = adversarial_train_classifier(robust_f, ctx.train, eps=args.harden_eps, epochs=args.adv_epochs, seed=0)
    f_eps = sorted({*budgets, *(e / 2 for e in budgets)})
    acc = [float((predict_logits(robust_f, x).argmax(1) == y).float().mean())]
    for e in f_eps:
        res = APGD(eps=e, steps=100, restarts=2, loss="ce")(robust_f, x, y)
        acc.append(float((res.pred.to(y.device) == y).float().mean()))
    out["pgd_trained"] = {"eps": [0.0, *f_eps], "robust_accuracy": acc, "train_eps": args.harden_eps,
                          "epochs": args.adv_epochs, "seconds": time.perf_counter() - start,
                          "history": hist.epochs}
    print(f"PGD-trained F: eps {[0.0, *f_eps]} robust accuracy {acc} ({time.perf_counter() - start:.0f} s)",
          flush=True)
    save(record, args)

    start = time.perf_counter()
    n = args.harden_images
    hard = harden_detector(F, D, train.x[:n].to(ctx.device), train.y[:n].to(ctx.device), eps=args.harden_eps,
                           rounds=args.harden_rounds, steps=args.harden_steps,
                           x_adv_static=adv_train["x_adv"][:n].to(ctx.device), epochs=2, lr=1e-3, batch_size=64)
    out["hardening"] = {"seconds": time.perf_counter() - start, "rounds": hard.rounds, "images": n,
                        "eps": args.harden_eps, "steps": args.harden_steps}
    print(f"hardened D: rounds {hard.rounds}", flush=True)
    save(record, args)

    for name, det, record in (("plain", D, True), ("hardened", hard.detector, False)):
        res = robust_detection(F, det, x, y, budgets, fpr=0.05, x_calibration=x_cal,
                               attacks=lambda e, record=record: attacks(e, record))
        out[name] = res.to_dict()
        print(f"{name} D: robust TPR {res.robust_tpr} both {res.both} fooled_any {res.fooled_any} "
              f"winners {res.winners}", flush=True)
        save(record, args)
    # transfer: the plain D's points against the hardened D at its own 5% FPR threshold
    original = hard.detector.threshold
    hard.detector.calibrate(x_cal, 0.05)
    transfer = {}
    for e in budgets:
        r = evaluate_pair(F, hard.detector, x, points[e], y)
        transfer[str(e)] = r.rates()
    hard.detector.threshold = original
    out["transfer_plain_to_hardened"] = transfer
    print(f"transfer plain → hardened: {transfer}", flush=True)
    return out


def save(out: dict, args) -> None:
    (ROOT / "benchmarks" / "results" / args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
