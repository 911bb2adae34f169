"""Sharded crafting: one attack over a dataset cut into contiguous shards, crafted in parallel, merged in order.

    result = craft_sharded(PGD(eps=0.3, steps=40), model, x, y, shards=8, executor="ray")

Shard ``i`` is attacked by a copy of the attack with its per-example parameters (``Attack.per_example``) cut to
the shard and, for an attack with a ``seed`` (PGD's random start, Square, APGD restarts, JSMA's random targets),
the seed ``seed + i``: a deterministic attack gives exactly the single-process result, a random one a result that
a re-run with the same shard count reproduces (one shard is the single-process result). ``executor="ray"`` runs
the shards as Ray tasks (``pip install 'advsal[ray]'``), each given one GPU when ``model`` is on CUDA and one CPU
otherwise; the model and the inputs travel through Ray's object store, so no shared filesystem is needed.
"""

from __future__ import annotations

import copy
from itertools import pairwise

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..executor import import_ray, init_ray
from ..tensors import model_device
from .base import Attack, AttackResult

EXECUTORS = ("local", "ray")


def shard_slices(n: int, shards: int) -> list[slice]:
    """``shards`` contiguous, near-equal slices covering ``range(n)`` (fewer when ``n < shards``)."""
    shards = max(1, min(shards, n))
    bounds = [round(i * n / shards) for i in range(shards + 1)]
    return [slice(a, b) for a, b in pairwise(bounds) if b > a]


def shard_attack(attack: Attack, index: int, part: slice) -> Attack:
    """The attack for shard ``index`` covering ``part``: per-example parameters cut to it, seed ``seed + index``."""
    copied = copy.copy(attack)
    for name in getattr(attack, "per_example", ()):
        value = getattr(attack, name, None)
        if isinstance(value, Tensor):
            setattr(copied, name, value[part])
    if isinstance(getattr(attack, "seed", None), int):
        copied.seed = attack.seed + index
    return copied


def merge_results(parts: list[AttackResult]) -> AttackResult:
    """Concatenate shard results in order (``queries``/``targets`` kept when every shard has them)."""
    def cat(field: str) -> Tensor | None:
        values = [getattr(p, field) for p in parts]
        return torch.cat(values) if all(v is not None for v in values) else None

    return AttackResult(x_adv=cat("x_adv"), success=cat("success"), pred=cat("pred"), linf=cat("linf"),
                        l2=cat("l2"), l0=cat("l0"), l0_features=cat("l0_features"), queries=cat("queries"),
                        targets=cat("targets"))


def craft_sharded(attack: Attack, model: nn.Module, x: Tensor, y: Tensor | None = None, *, shards: int,
                  executor: str = "local", targets: Tensor | None = None, address: str | None = None,
                  num_cpus: float = 1, num_gpus: float | None = None) -> AttackResult:
    """Run ``attack`` on ``x`` in ``shards`` contiguous shards and merge the results in order.

    ``executor``: "local" (the shards one after another in this process) or "ray" (Ray tasks on the cluster at
    ``address`` — None starts or joins a local instance, "auto" an existing one, "ray://HOST:PORT" a remote
    one). Each Ray task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (default: 1 when ``model`` is on CUDA,
    else 0); results come back on ``x``'s device."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be an integer ≥ 1, got {shards!r}")
    if x.shape[0] == 0:
        raise InputError("x is an empty batch; pass at least one image")
    parts = shard_slices(x.shape[0], shards)

    def pieces(part: slice) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return x[part], None if y is None else y[part], None if targets is None else targets[part]

    if executor == "local":
        results = [shard_attack(attack, i, part)(model, *pieces(part)) for i, part in enumerate(parts)]
        return merge_results(results)

    ray = import_ray()
    init_ray(address)
    device = model_device(model)
    gpus = num_gpus if num_gpus is not None else (1 if device.type == "cuda" else 0)
    model_ref = ray.put(copy.deepcopy(model).cpu())
    task = ray.remote(_craft_shard).options(num_cpus=num_cpus, num_gpus=gpus)
    futures = [task.remote(shard_attack(attack, i, part), model_ref, *(t.cpu() if t is not None else None
                                                                        for t in pieces(part)), gpus > 0)
               for i, part in enumerate(parts)]
    results = ray.get(futures)
    merged = merge_results(results)
    return AttackResult(**{k: (v.to(x.device) if isinstance(v, Tensor) else v) for k, v in vars(merged).items()})


def _craft_shard(attack: Attack, model: nn.Module, x: Tensor, y: Tensor | None, targets: Tensor | None,
                 cuda: bool) -> AttackResult:
    """On a Ray worker: attack one shard on the worker's GPU (the one Ray assigned) or CPU; CPU results."""
    model = model.to("cuda" if cuda else "cpu")
    return attack(model, x, y, targets=targets)


__all__ = ["EXECUTORS", "craft_sharded", "merge_results", "shard_attack", "shard_slices"]
