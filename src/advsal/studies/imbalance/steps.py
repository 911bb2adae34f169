"""The steps of the class-imbalance study: the training sets, the models, the attacks and the ε search, each a
cached stage whose key the store derives from its parameters and inputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ...attacks import BIM, FGSM, minimal_epsilon_per_example, random_targets
from ...data import ImageSet, deplete_class, stratified_split
from ...store import Source, Stage
from ...tensors import predict_logits
from ..engine import Context, ModelConfig, classifier_stage
from .config import AttackConfig, MinEpsConfig


def label_of(depleted: int | None) -> str:
    return "balanced" if depleted is None else f"deplete{depleted}"


def validation_split(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """The stratified validation split for early stopping (none when ``fraction`` is 0), taken before depletion."""
    if fraction == 0:
        return train, None
    return stratified_split(train, fraction, seed, (f"{train.name}-train", f"{train.name}-val"))


def training_set(train: ImageSet, depleted: int | None, removal: int | float, seed: int) -> ImageSet:
    """Seed 002 §5.4: the full training set, or one without ``removal`` of class ``depleted``'s images (a
    share, or a count), removed at random per seed (``advsal.data.deplete_class``)."""
    return train if depleted is None else deplete_class(train, depleted, removal, seed=seed)


def train_model(ctx: Context, cfg: ModelConfig, train: ImageSet, val: ImageSet | None, seed: int,
                name: str) -> tuple[nn.Module, Stage]:
    """One classifier trained on ``train`` (its content fingerprinted, so the depleted sets need no key of their
    own), early-stopped on ``val``, evaluated on the test set."""
    inputs = [Source.of(f"train-{name}", train.x, train.y), ctx.data]
    if val is not None:
        inputs.append(Source.of("val", val.x, val.y))
    return classifier_stage(ctx.store, f"model-{name}", dataclasses.replace(cfg, seed=seed), train, inputs,
                            ctx.device, val=val, test=ctx.test)


def attack_model(ctx: Context, model: nn.Module, trained: Stage, attack_set: ImageSet, cfg: AttackConfig,
                 depleted: int | None, towards: list[int], seed: int, name: str) -> Stage:
    """Seed 002 §3.3–3.5 on one model: FGSM and BIM untargeted ("ascent"); targeted *towards* each class of
    ``towards`` (on the other classes' images); targeted *away* from the depleted class ("descent", on its
    images — all images for the balanced model) towards a seeded random other class. Stores, per image, the
    clean prediction and every adversarial prediction with its softmax confidence (-1 / NaN where not
    attacked), and the descent targets."""
    params = {"attacks": dataclasses.asdict(cfg), "depleted": depleted, "towards": towards, "target_seed": seed}

    def compute() -> dict[str, Tensor]:
        x, y = attack_set.x.to(ctx.device), attack_set.y.to(ctx.device)
        targets = random_targets(y, attack_set.num_classes, seed=seed)
        logits = predict_logits(model, x)
        out = {"clean_pred": logits.argmax(1), "clean_conf": logits.softmax(1).amax(1), "descent.targets": targets}
        everyone = torch.arange(len(y), device=y.device)
        descent = everyone if depleted is None else (y == depleted).nonzero().flatten()
        attacks = {"fgsm": FGSM(eps=cfg.fgsm_eps, batch_size=cfg.batch_size),
                   "bim": BIM(eps=cfg.bim_eps, steps=cfg.bim_steps, batch_size=cfg.batch_size)}
        for a, attack in attacks.items():
            out |= _adversarial(f"{a}.untargeted", attack, model, x, y, everyone, None)
            for c in towards:
                idx = (y != c).nonzero().flatten()
                out |= _adversarial(f"{a}.towards{c}", attack, model, x, y, idx, torch.full_like(idx, c))
            out |= _adversarial(f"{a}.descent", attack, model, x, y, descent, targets[descent])
        return {k: v.cpu() for k, v in out.items()}

    return ctx.stage(f"attacks-{name}", compute, params=params, inputs=[trained, attack_set_source(attack_set)])


def _adversarial(key: str, attack: Any, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor,
                 targets: Tensor | None) -> dict[str, Tensor]:
    """Adversarial prediction and its softmax confidence for the images ``idx`` (the others: -1 and NaN)."""
    pred = torch.full((len(y),), -1, dtype=torch.long, device=y.device)
    conf = torch.full((len(y),), float("nan"), device=y.device)
    if len(idx):
        res = attack(model, x[idx], y[idx], targets=targets)
        probs = predict_logits(model, res.x_adv).softmax(1)
        pred[idx] = res.pred.to(y.device)
        conf[idx] = probs.gather(1, res.pred.view(-1, 1).to(probs.device)).flatten().to(y.device)
    return {f"{key}.pred": pred, f"{key}.conf": conf}


def minimal_epsilon(ctx: Context, model: nn.Module, trained: Stage, attack_set: ImageSet, cfg: MinEpsConfig,
                    batch_size: int, name: str) -> Stage:
    """Per-example minimal L∞ ε of BIM on the first ``cfg.per_class`` images per class of the attack set
    (``advsal.attacks.minimal_epsilon_per_example``: bisection on [0, eps_max] with ``probes`` halvings).
    Stores the images' positions, ``eps`` (+inf where BIM fails even at eps_max) and ``found``."""

    def compute() -> dict[str, Tensor]:
        idx = search_index(attack_set.y, attack_set.num_classes, cfg.per_class)
        x, y = attack_set.x[idx].to(ctx.device), attack_set.y[idx].to(ctx.device)
        res = minimal_epsilon_per_example(lambda e: BIM(e, steps=cfg.steps, batch_size=batch_size), model, x, y,
                                          lo=0.0, hi=cfg.eps_max, steps=cfg.probes)
        return {"index": idx, "eps": res.eps.cpu(), "found": res.found.cpu().to(torch.uint8)}

    return ctx.stage(f"min-eps-{name}", compute, params={"min_eps": dataclasses.asdict(cfg),
                                                         "batch_size": batch_size},
                     inputs=[trained, attack_set_source(attack_set)])


def attack_set_source(attack_set: ImageSet) -> Source:
    """The attack set's node in the stage graph: a fingerprint of its images and labels."""
    return Source.of("attack-set", attack_set.x, attack_set.y)


def search_index(y: Tensor, num_classes: int, per_class: int) -> Tensor:
    """The first ``per_class`` images of every class in the attack set (sorted positions)."""
    picks = [(y == c).nonzero().flatten()[:per_class] for c in range(num_classes)]
    return torch.cat(picks).sort().values
