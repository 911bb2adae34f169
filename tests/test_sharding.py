"""Sharded crafting: any number of shards gives the single-process result for deterministic attacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advsal.attacks import BIM, FGSM, PGD, craft_sharded
from advsal.attacks.sharding import shard_slices
from advsal.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(11, 1, 6, 6)
    y = torch.randint(0, 3, (11,))
    return model, x, y


def assert_same(a, b):
    for field in ("x_adv", "success", "pred", "linf", "l2", "l0"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_shard_slices_cover_the_batch_in_order():
    assert shard_slices(11, 3) == [slice(0, 4), slice(4, 7), slice(7, 11)]
    assert shard_slices(2, 5) == [slice(0, 1), slice(1, 2)]


def test_two_shards_equal_one_for_deterministic_attacks(setup):
    model, x, y = setup
    eps = torch.linspace(0.05, 0.3, len(x))  # a per-example parameter is cut to each shard
    for attack in (FGSM(eps=0.1), BIM(eps=eps, steps=3), PGD(eps=0.2, steps=3, random_start=False)):
        single = attack(model, x, y)
        assert_same(craft_sharded(attack, model, x, y, shards=2), single)
        assert_same(craft_sharded(attack, model, x, y, shards=1), single)
    targets = (y + 1) % 3
    attack = BIM(eps=0.2, steps=3)
    assert_same(craft_sharded(attack, model, x, y, shards=3, targets=targets), attack(model, x, y, targets=targets))


def test_random_attacks_are_seeded_per_shard(setup):
    model, x, y = setup
    attack = PGD(eps=0.2, steps=2, random_start=True, seed=5)
    a = craft_sharded(attack, model, x, y, shards=2)
    assert_same(a, craft_sharded(attack, model, x, y, shards=2))  # a re-run reproduces
    second = PGD(eps=0.2, steps=2, random_start=True, seed=6)(model, x[6:], y[6:])  # shard 1 runs seed 5 + 1
    assert torch.equal(a.x_adv[6:], second.x_adv) and attack.seed == 5
    with pytest.raises(ConfigError, match="executor"):
        craft_sharded(attack, model, x, y, shards=2, executor="dask")


def test_ray_shards_equal_local(setup):
    ray = pytest.importorskip("ray")
    from advsal.executor import init_ray

    model, x, y = setup
    init_ray(num_cpus=2)
    attack = BIM(eps=0.15, steps=3)
    assert_same(craft_sharded(attack, model, x, y, shards=2, executor="ray"), attack(model, x, y))
    assert ray.is_initialized()
