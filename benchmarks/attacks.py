"""Attack benchmark: advsal vs torchattacks, ART and foolbox on the same mnist-net and test images (CPU).

    cd /work/main && .venv/bin/python benchmarks/attacks.py            # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/attacks.py --n 100 --quick             # smoke run
    .venv/bin/python benchmarks/attacks.py --only autoattack,cw --rounds 2   # suite II rows, interleaved

For every attack and each peer's equivalent (same hyper-parameters): images/s, success rate, mean L∞/L2/L0
(L0 = changed pixels), and for the gradient attacks the ratio to the raw cost ``steps × (forward+backward)``
of the model on the same batch. Slow peers run on fewer images (column n); throughput is per image, so it
scales. Writes benchmarks/results/attacks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from advsal.attacks import (
    APGD,
    BIM,
    FGSM,
    JSMA,
    PGD,
    AutoAttack,
    CarliniWagnerL2,
    DeepFool,
    PixelAttack,
    random_targets,
)
from advsal.attacks.base import perturbation_norms
from advsal.data import load_dataset
from advsal.models import build_model, load_model, save_model
from advsal.progress import set_quiet
from advsal.training import train_classifier

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent
MODEL = ROOT.parent / "runs" / "bench" / "mnist-net-3ep"


def get_model():
    if MODEL.with_suffix(".safetensors").is_file():
        return load_model(MODEL)
    train, _ = load_dataset("mnist5k")
    model = build_model("mnist-net", seed=0)
    train_classifier(model, train, epochs=3, batch_size=64, seed=0)
    save_model(model, MODEL)
    return model.eval()


def get_resnet20(epochs=2):
    """resnet20 trained briefly (``epochs`` of Adam on mnist5k train), cached under runs/bench."""
    path = MODEL.parent / f"resnet20-{epochs}ep"
    if path.with_suffix(".safetensors").is_file():
        return load_model(path)
    train, _ = load_dataset("mnist5k")
    model = build_model("resnet20", seed=0, in_channels=1, input_size=28)
    train_classifier(model, train, epochs=epochs, batch_size=64, seed=0)
    save_model(model, path)
    return model.eval()


def correct_images(model, n):
    """Freeze ``model`` and return its first ``n`` correctly classified mnist5k test images and their labels."""
    for p in model.parameters():
        p.requires_grad_(False)
    _, test = load_dataset("mnist5k")
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
    return test.x[ok][:n].contiguous(), test.y[ok][:n].contiguous()


def stats(model, x, y, x_adv, targets=None):
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    ok = pred == targets if targets is not None else pred != y
    n = perturbation_norms(x, x_adv.clamp(0, 1))
    return {"success": ok.float().mean().item(), "linf": n["linf"].mean().item(), "l2": n["l2"].mean().item(),
            "l0": n["l0"].float().mean().item()}


#: The stopwatch of every timing: wall clock, or with ``--clock cpu`` this process's CPU time (with one torch
#: thread, the work itself: other users' processes on a shared machine then barely move it).
CLOCK = time.perf_counter


def timed(fn):
    t = CLOCK()
    out = fn()
    return out, CLOCK() - t


def raw_cost(model, x, y, repeats=3):
    """Seconds for one forward+backward (gradient w.r.t. the input) of the model on the batch."""
    times = []
    for _ in range(repeats):
        xx = x.clone().requires_grad_(True)
        t = CLOCK()
        loss = torch.nn.functional.cross_entropy(model(xx), y, reduction="sum")
        torch.autograd.grad(loss, xx)
        times.append(CLOCK() - t)
    return float(np.median(times))


class Bench:
    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.rows: list[dict] = []

    def run(self, attack, lib, n, fn, steps=None, targets=None, keep=True):
        x, y = self.x[:n], self.y[:n]
        t = targets[:n] if targets is not None else None
        try:
            x_adv, sec = timed(lambda: fn(x, y, t))
        except Exception as exc:  # a peer failing must not stop the benchmark
            print(f"  {attack}/{lib} failed: {type(exc).__name__}: {exc}", flush=True)
            return
        row = {"attack": attack, "lib": lib, "n": n, "sec": sec, "ips": n / sec,
               **stats(self.model, x, y, torch.as_tensor(x_adv).float(), t)}
        if steps is not None:
            raw = raw_cost(self.model, x, y) * steps
            row["raw_ratio"] = raw / sec
        if keep:
            self.rows.append(row)
        print(f"  {attack:9s} {lib:12s} n={n:4d} {row['ips']:9.1f} img/s  success {row['success']:.3f}  "
              f"L∞ {row['linf']:.3f} L2 {row['l2']:.3f} L0 {row['l0']:.1f}", flush=True)
        return row


def art_classifier(model):
    from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0))


def art(attack):
    return lambda x, y, t: attack.generate(x.numpy(), y=None if t is None else np.eye(10)[t.numpy()])


def fb_run(model, attack, eps):
    import foolbox as fb
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))

    def go(x, y, t):
        _, adv, _ = attack(fmodel, x, y, epsilons=eps)
        return adv
    return go


def jsma_memory(max_images=4):
    """Peak resident memory of one JSMA iteration on 3×224×224 images with a tiny conv net (fresh process)."""
    code = f"""
import resource, torch
from torch import nn
from advsal.attacks import JSMA
from advsal.progress import set_quiet
set_quiet(True)
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                    nn.Linear(128, 10)).eval()
x = torch.rand({max_images}, 3, 224, 224)
y = net(x).argmax(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
JSMA(gamma=2.5 / x[0].numel())(net, x, y)          # ⌊D·γ/2⌋ = 1 pair iteration
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def markdown(rows, raw_step, jsma_mb, n_images):
    lines = ["| attack | library | n | images/s | success | mean L∞ | mean L2 | mean L0 (px) | vs raw f+b | "
             "advsal speed-up |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ours = {r["attack"]: r for r in rows if r["lib"] == "advsal"}
    for r in rows:
        raw = f"{r['raw_ratio']:.2f}" if "raw_ratio" in r else ""
        peer = r["lib"] != "advsal" and r["attack"] in ours
        speed = f"{ours[r['attack']]['ips'] / r['ips']:.1f}×" if peer else ""
        speed = r.get("speedup", speed)
        lines.append(f"| {r['attack']} | {r['lib']} | {r['n']} | {r['ips']:.1f} | {r['success']:.3f} | "
                     f"{r['linf']:.3f} | {r['l2']:.3f} | {r['l0']:.1f} | {raw} | {speed} |")
    lines += ["", f"Raw forward+backward of mnist-net on the {n_images}-image batch: {raw_step * 1000:.1f} "
              f"ms (torch threads: {torch.get_num_threads()}, clock: "
              f"{'process CPU time' if CLOCK is time.process_time else 'wall'}). 'vs raw f+b' = (steps × raw "
              "f+b time) / attack time (1.0 = no overhead). 'advsal speed-up' = advsal images/s ÷ peer images/s."]
    if any("speedup" in r for r in rows):
        lines.append(GRADIENT_NOTE)
    if any(r["attack"].endswith("(linear model)") for r in rows):
        lines.append(OVERHEAD_NOTE)
    if jsma_mb is not None:
        lines.append(f"JSMA, one pair iteration on 4 × 3×224×224 images (tiny conv net): peak RSS growth "
                     f"{jsma_mb:.0f} MiB (a D×D pair matrix would need "
                     f"{4 * (3 * 224 * 224) ** 2 * 4 / 2**30:.0f} "
                     "GiB).")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="test images for the fast attacks")
    ap.add_argument("--quick", action="store_true", help="fewer images for the slow attacks")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--only", default="all",
                    help="comma-separated sections: gradient, overhead, cw, deepfool, jsma, pixel, autoattack (default "
                    "all)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved advsal/peer rounds for the gradient, autoattack and cw sections (busy "
                    "machines; the gradient section keeps the best round of each row)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for every library (0: torch's default); pins the count for the whole run")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time this process's CPU seconds instead of wall time (use with --threads 1 on a "
                    "shared machine; images/s are then per CPU-second)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.process_time
    only = set(args.only.split(",")) if args.only != "all" else None

    def want(section: str) -> bool:
        return only is None or section in only
    set_quiet(True)
    torch.manual_seed(0)
    model = get_model()
    x, y = correct_images(model, args.n)
    n = len(x)
    slow = 0.2 if args.quick else 1.0
    n_cw, n_df, n_jsma, n_pix, n_aa = (min(n, max(4, int(k * slow))) for k in (100, 200, 100, 40, 200))
    targets = random_targets(y, 10, seed=0)
    b = Bench(model, x, y)
    for _ in range(2):  # warm-up (thread pools, allocator): the library that runs first is not penalised
        raw_cost(model, x, y, repeats=1)
    peers = not args.no_peers
    clf = art_classifier(model) if peers else None

    if want("gradient"):
        gradient_rows(b, model, n, peers, clf if peers else None, args.rounds)
    if want("overhead"):
        overhead_rows(b, peers, args.rounds)
    if want("autoattack"):
        autoattack_rows(b, model, n_aa, peers, args.rounds)
    if want("cw"):
        cw_rows(b, model, n_cw, peers, clf if peers else None, args.rounds)
    if want("deepfool"):
        deepfool_rows(b, model, n_df, peers, clf if peers else None)
    if want("jsma"):
        jsma_rows(b, model, n_jsma, peers, clf if peers else None, targets)
    if want("pixel"):
        pixel_rows(b, model, n_pix, peers, clf if peers else None)
    jsma_mb = None
    if want("jsma"):
        print("JSMA memory on 3x224x224", flush=True)
        try:
            jsma_mb = jsma_memory()
        except Exception as exc:
            print(f"  failed: {exc}")
    table = markdown(b.rows, raw_cost(model, x, y), jsma_mb, n)
    out = ROOT / "results" / ("attacks.md" if only is None else f"attacks-{'-'.join(sorted(only))}.md")
    out.parent.mkdir(exist_ok=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    header = (f"# Attack benchmark\n\n`cd /work/main && .venv/bin/python benchmarks/attacks.py "
              f"{' '.join(sys.argv[1:])}`\n\nmnist-net (3 epochs on mnist5k), {n} correctly classified test "
              f"images, CPU ({os.cpu_count()} cores, peak RSS {rss} MiB).\n\n")
    out.write_text(header + table)
    print(table)


OVERHEAD_NOTE = (
    "Rows '(linear model)': the same calls on one linear layer (784 → 10, random weights), whose passes cost "
    "next to nothing, so a call's time is the library's own work around them (input checks, projection, "
    "bookkeeping); 'vs raw f+b' is then the share of the call spent in the passes, and the speed-up compares "
    "the libraries' overhead directly, free of the pass-to-pass noise that hides it on mnist-net.")
GRADIENT_NOTE = (
    "FGSM/BIM/PGD rows: best of the interleaved rounds (each round times every row once, rotating the order). "
    "'advsal' is the full call (x_adv plus prediction, success and norms: one forward on x_adv after the "
    "steps); 'advsal perturb' is `attack.perturb(...)`, x_adv alone, which is what every peer returns. "
    "Raw limit of an s-step attack: s forward+backward passes (gradient to the input) on the same batch timed "
    "back to back as one block, best of the same rounds; the full call's limit adds the one forward that "
    "produces the returned success. Peer speed-up cells read 'x_adv only · with success': perturb vs the peer "
    "as shipped, and the full call vs the peer plus that same forward (what a peer's user runs to learn "
    "which images were broken).")


def raw_loop(model, x, y, steps):
    """Seconds for ``steps`` forward+backward passes (gradient w.r.t. the input) on the batch, back to back:
    the floor of an s-step gradient attack, timed as one block like the attacks (so noise hits both alike)."""
    t = CLOCK()
    for _ in range(steps):
        xx = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xx), y, reduction="sum")
        torch.autograd.grad(loss, xx)
    return CLOCK() - t


def forward_time(model, x):
    """Seconds for the forward that turns adversarial images into predictions (success bookkeeping)."""
    t = CLOCK()
    with torch.no_grad():
        model(x).argmax(1)
    return CLOCK() - t


def gradient_rows(b, model, n, peers, clf, rounds=1, tag=""):
    """FGSM, BIM and PGD (L∞, L2) vs the peers: ``rounds`` interleaved rounds, best round of each row (``tag``
    appended to each attack's name in the table)."""
    groups = gradient_cases(model, n, peers, clf)
    print(f"FGSM eps=0.3 / BIM, PGD L-inf eps=0.3 alpha=0.075 steps=10 / L2 eps=3 alpha=0.375 steps=20; "
          f"{rounds} round(s)", flush=True)
    x, y = b.x[:n], b.y[:n]
    best, raw, fwd = {}, {}, float("inf")
    for r in range(rounds):
        print(f" round {r + 1}/{rounds}", flush=True)
        for steps, cases in groups:
            raw[steps] = min(raw.get(steps, float("inf")), raw_loop(model, x, y, steps))
            fwd = min(fwd, forward_time(model, x))
            k = r % len(cases)
            for attack, lib, fn in cases[k:] + cases[:k]:  # rotate: no library always runs first
                row = b.run(attack, lib, n, fn, keep=False)
                if row is not None and ((attack, lib) not in best or row["sec"] < best[attack, lib]["sec"]):
                    best[attack, lib] = row
    for steps, cases in groups:
        for attack, lib, _ in cases:
            row = best.get((attack, lib))
            if row is None:
                continue
            limit = raw[steps] + (fwd if lib == "advsal" else 0.0)
            row["raw_ratio"] = limit / row["sec"]
            full, bare = best.get((attack, "advsal")), best.get((attack, "advsal perturb"))
            if lib == "advsal perturb":
                row["speedup"] = ""
            elif lib != "advsal" and full and bare:
                row["speedup"] = f"{row['sec'] / bare['sec']:.2f}× · {(row['sec'] + fwd) / full['sec']:.2f}×"
            b.rows.append({**row, "attack": attack + tag})
    print(f"  raw f+b ms/step: {raw[1] * 1000:.1f} (1), {raw[10] * 100:.1f} (10), {raw[20] * 50:.1f} (20); "
          f"success forward {fwd * 1000:.1f} ms", flush=True)


def overhead_rows(b, peers, rounds):
    """The gradient section again on a model that costs next to nothing (one linear layer, 784 → 10): each
    call's time is then the library's own work around the passes (validation, projection, bookkeeping), which
    on mnist-net is hidden in the run-to-run noise of the forward+backward passes."""
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    for p in linear.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # its own predictions as labels: every library then pushes away from the same class
        bench = Bench(linear, b.x, linear(b.x).argmax(1))
    gradient_rows(bench, linear, len(b.x), peers, art_classifier(linear) if peers else None, rounds,
                  tag=" (linear model)")
    b.rows += bench.rows


def gradient_cases(model, n, peers, clf):
    """[(steps, [(attack, library, fn), ...]), ...]: every row of the gradient section, grouped by steps."""
    ours = [("fgsm", FGSM(0.3)), ("bim", BIM(0.3, 0.075, 10)), ("pgd", PGD(0.3, 0.075, 10)),
            ("bim-l2", BIM(3.0, 0.375, 20, "l2")), ("pgd-l2", PGD(3.0, 0.375, 20, "l2"))]
    rows = {name: [(name, "advsal", lambda x, y, t, a=a: a(model, x, y).x_adv),
                   (name, "advsal perturb", lambda x, y, t, a=a: a.perturb(model, x, y))] for name, a in ours}
    if peers:
        import foolbox as fb
        import torchattacks as ta
        from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent

        def peer(attack):  # built once, like advsal's attacks above: a call times the attack, not its set-up
            return lambda x, y, t: attack(x, y)
        rows["fgsm"] += [
            ("fgsm", "torchattacks", peer(ta.FGSM(model, eps=0.3))),
            ("fgsm", "art", art(FastGradientMethod(clf, eps=0.3, batch_size=n))),
            ("fgsm", "foolbox", fb_run(model, fb.attacks.LinfFastGradientAttack(), 0.3))]
        rows["bim"] += [
            ("bim", "torchattacks", peer(ta.BIM(model, eps=0.3, alpha=0.075, steps=10))),
            ("bim", "art", art(BasicIterativeMethod(clf, eps=0.3, eps_step=0.075, max_iter=10, batch_size=n,
                                                    verbose=False))),
            ("bim", "foolbox", fb_run(model, fb.attacks.LinfBasicIterativeAttack(abs_stepsize=0.075, steps=10),
                                      0.3))]
        rows["pgd"] += [
            ("pgd", "torchattacks", peer(ta.PGD(model, eps=0.3, alpha=0.075, steps=10))),
            ("pgd", "art", art(ProjectedGradientDescent(clf, eps=0.3, eps_step=0.075, max_iter=10,
                                                        num_random_init=1, batch_size=n, verbose=False))),
            ("pgd", "foolbox", fb_run(model, fb.attacks.LinfPGD(abs_stepsize=0.075, steps=10), 0.3))]
        rows["bim-l2"] += [
            ("bim-l2", "art", art(ProjectedGradientDescent(clf, norm=2, eps=3.0, eps_step=0.375, max_iter=20,
                                                           batch_size=n, verbose=False))),
            ("bim-l2", "foolbox", fb_run(model, fb.attacks.L2BasicIterativeAttack(abs_stepsize=0.375, steps=20),
                                         3.0))]
        rows["pgd-l2"] += [
            ("pgd-l2", "torchattacks", peer(ta.PGDL2(model, eps=3.0, alpha=0.375, steps=20))),
            ("pgd-l2", "foolbox", fb_run(model, fb.attacks.L2PGD(abs_stepsize=0.375, steps=20), 3.0))]
    return [(1, rows["fgsm"]), (10, rows["bim"] + rows["pgd"]), (20, rows["bim-l2"] + rows["pgd-l2"])]


def autoattack_rows(b, model, n, peers, rounds):
    """APGD-CE and the standard AutoAttack vs torchattacks' ports of the reference code, L∞: mnist-net at ε=0.3
    (every image falls) and resnet20 (2 epochs on mnist5k, its own correctly classified images) at ε=0.1 and
    0.07, where images survive. AutoAttack with the paper's 100 steps per gradient attack (torchattacks: its
    components at 100 steps in a MultiAttack) and, rows "(10 steps)", with 10 (torchattacks' AutoAttack as
    shipped: its APGD, APGD-T and FAB default to 10 steps). ``rounds`` interleaved rounds, alternating which
    library goes first; the best (fastest) round of each row is kept. APGD rows have no 'vs raw f+b': advsal
    drops each image as soon as it is broken, so its number of passes varies (torchattacks runs all 100 steps
    on every image)."""
    if peers:
        import torchattacks as ta
    r20 = get_resnet20()
    b20 = Bench(r20, *correct_images(r20, n))

    def ours(net, eps, steps):
        def fn(x, y, t):
            r = AutoAttack("linf", eps, steps=steps, seed=0)(net, x, y)
            print(f"    advsal robust accuracy {r.robust_accuracy:.3f}, broken by "
                  f"{dict(Counter(b for b in r.broken_by if b))}", flush=True)
            return r.x_adv
        return fn

    def peer(net, eps, steps):
        if steps == 10:  # torchattacks' AutoAttack as shipped: its APGD, APGD-T and FAB default to 10 steps
            return lambda x, y, t: ta.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=10,
                                                 seed=0)(x, y)
        common = {"eps": eps, "norm": "Linf", "seed": 0, "n_restarts": 1}
        return lambda x, y, t: ta.MultiAttack([  # the same ensemble with the paper's 100 steps
            ta.APGD(net, loss="ce", steps=steps, **common), ta.APGDT(net, n_classes=10, steps=steps, **common),
            ta.FAB(net, multi_targeted=True, n_classes=10, steps=steps, **common),
            ta.Square(net, n_queries=5000, **common)])(x, y)

    cases = [(b, "apgd-ce", "advsal", lambda x, y, t: APGD(0.3, steps=100, loss="ce")(model, x, y).x_adv)]
    if peers:
        cases.append((b, "apgd-ce", "torchattacks",
                      lambda x, y, t: ta.APGD(model, eps=0.3, steps=100, loss="ce", seed=0)(x, y)))
    for bench, net, name, eps in ((b, model, "autoattack", 0.3), (b20, r20, "autoattack resnet20 eps=0.1", 0.1),
                                  (b20, r20, "autoattack resnet20 eps=0.07", 0.07)):
        for steps, tail in ((100, ""), (10, " (10 steps)")):
            cases.append((bench, name + tail, "advsal", ours(net, eps, steps)))
            if peers:
                cases.append((bench, name + tail, "torchattacks", peer(net, eps, steps)))
    print("APGD-CE / AutoAttack standard L-inf: mnist-net eps=0.3, resnet20 eps=0.1 and 0.07", flush=True)
    best = {}
    for r in range(rounds):  # interleaved, so machine drift hits both libraries alike
        print(f" round {r + 1}/{rounds}", flush=True)
        for i in range(0, len(cases), 2 if peers else 1):
            pair = cases[i:i + 2] if peers else cases[i:i + 1]
            for bench, attack, lib, fn in (pair if r % 2 == 0 else pair[::-1]):
                row = bench.run(attack, lib, n, fn, keep=False)
                if row is not None:
                    print(f"    {row['sec']:.1f} s", flush=True)
                if row is not None and ((attack, lib) not in best or row["sec"] < best[attack, lib]["sec"]):
                    best[attack, lib] = row
    b.rows += [best[attack, lib] for _, attack, lib, _ in cases if (attack, lib) in best]


def cw_rows(b, model, n_cw, peers, clf, rounds):
    if peers:
        import foolbox as fb
        import torchattacks as ta
        from art.attacks.evasion import CarliniL2Method
    print("C&W L2 c=1 kappa=0 lr=0.1 steps=100 binary search 5", flush=True)
    cw = CarliniWagnerL2(c=1.0, kappa=0.0, steps=100, binary_search_steps=5, lr=0.1)
    b.run("cw", "advsal", n_cw, lambda x, y, t: cw(model, x, y).x_adv)
    if peers:
        b.run("cw", "art", max(2, n_cw // 10), art(CarliniL2Method(
            clf, learning_rate=0.1, binary_search_steps=5, max_iter=100, initial_const=1.0, batch_size=n_cw,
            verbose=False)))
        b.run("cw", "torchattacks", n_cw,
              lambda x, y, t: ta.CW(model, c=1.0, kappa=0, steps=100, lr=0.1)(x, y))
        b.run("cw", "foolbox", n_cw, fb_run(model, fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=5, steps=100, stepsize=0.1, initial_const=1.0), None))
    print("C&W L2 at ART's settings: c=1 lr=0.01 steps=100 binary search 5", flush=True)
    for _ in range(rounds):
        b.run("cw-lr0.01", "advsal", n_cw, lambda x, y, t: CarliniWagnerL2(
            c=1.0, steps=100, binary_search_steps=5, lr=0.01)(model, x, y).x_adv)
        b.run("cw-lr0.01", "advsal-fixed-lr", n_cw, lambda x, y, t: CarliniWagnerL2(
            c=1.0, steps=100, binary_search_steps=5, lr=0.01, adaptive=False)(model, x, y).x_adv)
        if peers:
            b.run("cw-lr0.01", "art", max(2, n_cw // 10), art(CarliniL2Method(
                clf, learning_rate=0.01, binary_search_steps=5, max_iter=100, initial_const=1.0,
                batch_size=n_cw, verbose=False)))


def deepfool_rows(b, model, n_df, peers, clf):
    if peers:
        import foolbox as fb
        import torchattacks as ta
        from art.attacks.evasion import DeepFool as ArtDeepFool
    print("DeepFool steps=50 overshoot=0.02 candidates=10", flush=True)
    b.run("deepfool", "advsal", n_df, lambda x, y, t: DeepFool(50, 0.02, 10)(model, x, y).x_adv)
    if peers:
        b.run("deepfool", "torchattacks", max(2, n_df // 10),
              lambda x, y, t: ta.DeepFool(model, steps=50, overshoot=0.02)(x, y))
        b.run("deepfool", "art", n_df, art(ArtDeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=10,
                                                       batch_size=n_df, verbose=False)))
        b.run("deepfool", "foolbox", n_df, fb_run(model, fb.attacks.L2DeepFoolAttack(steps=50, candidates=10,
                                                                                     overshoot=0.02), None))


def jsma_rows(b, model, n_jsma, peers, clf, targets):
    if peers:
        from art.attacks.evasion import SaliencyMapMethod
    print("JSMA theta=1 gamma=0.1, random targets", flush=True)
    b.run("jsma", "advsal", n_jsma, lambda x, y, t: JSMA(1.0, 0.1)(model, x, y, t).x_adv, targets=targets)
    b.run("jsma-target", "advsal", n_jsma,
          lambda x, y, t: JSMA(1.0, 0.1, saliency_map="target")(model, x, y, t).x_adv, targets=targets)
    if peers:
        b.run("jsma", "art", n_jsma, art(SaliencyMapMethod(clf, theta=1.0, gamma=0.1, batch_size=n_jsma,
                                                           verbose=False)), targets=targets)


def pixel_rows(b, model, n_pix, peers, clf):
    if peers:
        from art.attacks.evasion import PixelAttack as ArtPixel
    print("Pixel attack 3 pixels, population 400, 10 generations", flush=True)
    b.run("pixel", "advsal", n_pix, lambda x, y, t: PixelAttack(3, 400, 10)(model, x, y).x_adv)
    if peers:
        b.run("pixel", "art", max(2, n_pix // 10),
              lambda x, y, t: ArtPixel(clf, th=3, es=1, max_iter=10).generate(x.numpy()))


if __name__ == "__main__":
    main()
