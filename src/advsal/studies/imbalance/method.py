"""The class-imbalance study (seed 002, Possas 2017): does depleting a class change how easily it is attacked?

Seed 002 (chapters 3–5) trains one balanced network and ten on imbalanced training sets, each missing 4,000 of
the 5,000 training images (80%) of one class (§5.4, Table 5.2), and asks how FGSM and the iterative gradient
sign method behave on them, untargeted ("ascent", §3.5: up the loss of the true class) and targeted ("descent":
down the loss of a chosen class). Its results chapter is empty; this study produces the numbers:

1. Per seed, train a balanced model and one per depleted class (80% of that class's images removed, §5.4);
   each reports overall accuracy, test loss, per-class accuracy and its confusion matrix (Table 5.2).
2. Per model, on one fixed class-stratified attack set of test images: FGSM and BIM at fixed L∞ budgets,
   untargeted; targeted towards the depleted class; targeted away from it towards a random other class.
3. Per model, the minimal L∞ ε of BIM per image (bisection), on the first images per class of the attack set.
4. Analysis: each depleted model against the balanced model of the same seed on the same images, paired
   sign-flip permutation tests over seeds × images with Holm's correction; a conclusion from the numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...data import ImageSet, subset
from ...errors import ConfigError
from ..engine import Log, finish_study, open_study
from .analysis import ModelRun, analyse, conclusions, describe_data
from .config import Config, depleted_classes
from .steps import attack_model, label_of, minimal_epsilon, train_model, training_set, validation_split


def run(cfg: Config, run_dir: str | Path, *, model: nn.Module | None = None,
        data: tuple[ImageSet, ImageSet] | None = None, log: Log = None) -> dict[str, Any]:
    """Run (or resume) the imbalance study in ``run_dir``; writes results.json and the report."""
    if model is not None:
        raise ConfigError("the imbalance study trains its own models (one per seed and depleted class): give "
                          "a factory as classifier.architecture (--model module:function), not a trained model")
    ctx = open_study("imbalance", cfg, run_dir, data=data, log=log, classifier=False)
    with ctx.store:
        train, val = validation_split(ctx.train, cfg.val_fraction, cfg.data.seed)
        classes = depleted_classes(cfg, train)
        attack_set = subset(ctx.test, cfg.attacks.per_class * train.num_classes, cfg.seed)

        # Every model, attack and ε stage is created before any payload is read, so a parallel executor
        # (advsal run --executor ray) trains and attacks independent models at the same time.
        models = [(seed, d) for seed in cfg.seeds for d in [None, *classes]]
        sets, trained = {}, {}
        for seed, d in models:
            # 1. The training set (balanced, or without cfg.removal of class d) and its model.
            sets[seed, d] = training_set(train, d, cfg.removal, seed)
            trained[seed, d] = train_model(ctx, cfg.classifier, sets[seed, d], val, seed, f"s{seed}-{label_of(d)}")
        stages = {}
        for seed, d in models:
            name, (model_d, trained_d) = f"s{seed}-{label_of(d)}", trained[seed, d]
            # 2. FGSM and BIM: untargeted, towards d (towards every class for the balanced model), away from d.
            attacked = attack_model(ctx, model_d, trained_d, attack_set, cfg.attacks, d,
                                    classes if d is None else [d], seed, name)
            # 3. Minimal BIM ε per image.
            eps = minimal_epsilon(ctx, model_d, trained_d, attack_set, cfg.min_eps, cfg.attacks.batch_size, name)
            stages[seed, d] = attacked, eps
        runs: dict[tuple[int, int | None], ModelRun] = {
            key: ModelRun(sets[key].class_counts().tolist(), trained[key][1]["metrics"], attacked.payload,
                          eps.payload) for key, (attacked, eps) in stages.items()}

        # 4. Depleted vs balanced per seed, paired tests with Holm's correction, the conclusion.
        ctx.results.update(describe_data(ctx.results["data"], train, val, attack_set, classes, cfg))
        ctx.results.update(analyse(runs, attack_set.y.numpy(), classes, cfg))
        ctx.results["conclusions"] = conclusions(ctx.results["tests"], ctx.results["classes"],
                                                 ctx.results["table52"]["rows"], cfg.alpha)
        return finish_study(ctx, run_dir, render)


def render(run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    from ...report.imbalance import render_imbalance_report

    return render_imbalance_report(Path(run_dir), results)
