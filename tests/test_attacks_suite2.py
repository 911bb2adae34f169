"""Tests of the attack suite II: APGD's step-size schedule and DLR loss, Square's proposals, the AutoAttack
ensemble (order, robust accuracy, an analytic linear case) and the ε-ball/box of every new attack. Tiny
hand-built models only, so the file runs in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advsal.attacks import APGD, APGDT, AutoAttack, Square, make_attack
from advsal.attacks.apgd import StepSizeSchedule, checkpoints, dlr_loss, dlr_targeted_loss
from advsal.attacks.base import Attack
from advsal.attacks.fab import FABT
from advsal.attacks.square import linf_square_update, p_schedule, square_mask

TOL = 1e-5


def linear_model(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer).eval()


def tiny_conv(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, classes),
                         ).eval()


# ---------------------------------------------------------------- APGD: schedule and loss

def test_checkpoints_follow_the_paper():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06))
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1000)[:3] == [220, 410, 570]


def test_step_size_halves_exactly_at_checkpoints_when_progress_stalls():
    k = torch.arange(1, 101, dtype=torch.float32)
    rising = k                                     # always improving: never halved
    stalls = k.clamp(max=30)                       # flat after 30: condition 1 at every later checkpoint
    # climbs to 22, drops, then rises slowly but never beats 22: many increasing steps (condition 1 fails) but
    # the best loss is stuck, so condition 2 halves η at every checkpoint after one that did not halve
    stuck = torch.where(k <= 22, k, (k - 23) * 0.01)
    losses = torch.stack([rising, stalls, stuck], 1)
    schedule = StepSizeSchedule(100, torch.zeros(3), torch.full((3,), 0.6))
    halvings = [[], [], []]
    for i in range(100):
        halved = schedule.observe(losses[i])
        assert (halved is None) == (i + 1 not in checkpoints(100))
        for j in range(3):
            if halved is not None and halved[j]:
                halvings[j].append(i + 1)
    assert halvings[0] == []
    assert halvings[1] == [41, 57, 70, 80, 87, 93, 99]
    assert halvings[2] == [41, 70, 87, 99]
    assert torch.allclose(schedule.step, torch.tensor([0.6, 0.6 / 2 ** 7, 0.6 / 2 ** 4]))


def test_dlr_loss_matches_its_formula():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.5], [0.0, 5.0, 1.0, 4.0]])
    y = torch.tensor([0, 3])
    # −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-(3 - 2) / (3 - 1), -(4 - 5) / (5 - 1)]))
    # targeted: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)
    t = torch.tensor([3, 2])
    expected = torch.tensor([-(3 - 0.5) / (3 - (1 + 0.5) / 2), -(4 - 1) / (5 - (1 + 0) / 2)])
    assert torch.allclose(dlr_targeted_loss(logits, y, t), expected)
    # shift and scale invariant
    assert torch.allclose(dlr_loss(2.5 * logits + 7, y), dlr_loss(logits, y))
    with pytest.raises(ValueError, match="3 classes"):
        dlr_loss(logits[:, :2], torch.tensor([0, 1]))


# ---------------------------------------------------------------- Square

def test_p_schedule_halves_at_the_papers_iterations():
    assert [p_schedule(i, 0.8) for i in (0, 10, 11, 50, 51, 201, 8001)] == [0.8, 0.8, 0.4, 0.4, 0.2, 0.1,
                                                                             0.8 / 512]
    assert p_schedule(500, 0.8, n_queries=1000, rescale=True) == p_schedule(5000, 0.8)


def test_square_linf_update_changes_only_the_chosen_square_inside_the_ball():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g)
    eps = torch.tensor([0.1, 0.2, 0.05, 0.3])
    x_best = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps.view(-1, 1, 1, 1)).clamp(0, 1)
    rows, cols = torch.tensor([0, 2, 5, 3]), torch.tensor([1, 0, 5, 4])
    mask = square_mask(4, 8, 8, 3, rows, cols)
    assert mask.sum((1, 2, 3)).tolist() == [9, 9, 9, 9] and mask[2, 0, 5:8, 5:8].all()
    signs = torch.randint(0, 2, (4, 3, 1, 1), generator=g).float() * 2 - 1
    new = linf_square_update(x, x_best, eps, mask, signs)
    m = mask.expand_as(x)
    assert torch.equal(new[~m], x_best[~m])
    inside = (x + signs * eps.view(-1, 1, 1, 1)).clamp(0, 1).expand_as(x)
    assert torch.allclose(new[m], inside[m])
    assert ((new - x).abs().flatten(1).amax(1) <= eps + TOL).all() and new.min() >= 0 and new.max() <= 1


def test_square_finds_the_linear_boundary_without_gradients():
    w = torch.zeros(2, 100)
    w[1] = 1.0
    model = linear_model(w, torch.tensor([2.0, 0.0]))           # class 1 once the pixel sum exceeds 2
    x = torch.full((3, 1, 10, 10), 0.01)
    r = Square(eps=0.05, n_queries=50, seed=0)(model, x, torch.zeros(3, dtype=torch.long))
    assert r.success.all() and (r.linf <= 0.05 + TOL).all() and (r.queries <= 51).all()


# ---------------------------------------------------------------- AutoAttack

class Spy(Attack):
    """Records the images handed to a wrapped attack's ``_run``."""

    def __init__(self, inner: Attack, seen: list):
        super().__init__()
        self.inner, self.seen = inner, seen

    def _run(self, model, x, y, targets):
        self.seen.append(x.clone())
        return self.inner._run(model, x, y, targets)


def test_autoattack_never_attacks_a_broken_image_and_beats_each_component():
    model = tiny_conv(1)
    x = torch.rand(24, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10                                      # three images misclassified already
    seen: dict[str, list] = {}

    class SpiedAutoAttack(AutoAttack):
        def components(self, eps, num_classes):
            return [(name, Spy(a, seen.setdefault(name, []))) for name, a in super().components(eps, num_classes)]

    aa = SpiedAutoAttack("linf", eps=0.04, steps=10, n_targets=3, n_queries=30)
    r = aa(model, x, y)
    assert r.broken_by[:3] == ["clean"] * 3 and r.components == ("apgd-ce", "apgd-t", "fab-t", "square")
    index = {tuple(v.flatten().tolist()): i for i, v in enumerate(x)}
    received = {name: {index[tuple(v.flatten().tolist())] for batch in seen[name] for v in batch}
                for name in seen}
    assert received["apgd-ce"] == set(range(3, 24))
    for later, earlier in (("apgd-t", ["apgd-ce"]), ("fab-t", ["apgd-ce", "apgd-t"]),
                           ("square", ["apgd-ce", "apgd-t", "fab-t"])):
        broken_before = {i for i, b in enumerate(r.broken_by) if b in ["clean", *earlier]}
        assert received.get(later, set()).isdisjoint(broken_before)
        assert received.get(later, set()) == set(range(24)) - broken_before
    assert 0 < r.robust_accuracy < 0.9 and r.robust_accuracy == pytest.approx(1 - r.success_rate())
    assert [b != "" for b in r.broken_by] == r.success.tolist()
    for name, attack in AutoAttack("linf", eps=0.04, steps=10, n_targets=3, n_queries=30).components(0.04, 10):
        alone = attack(model, x, y)
        assert r.robust_accuracy <= 1 - alone.success_rate() + 1e-9, name


def test_autoattack_robust_accuracy_is_analytic_on_a_linear_classifier():
    # L∞ distance to the boundary of class j: (z_y − z_j)/‖w_y − w_j‖₁ (pixels far from 0 and 1, so the box
    # never binds); an image is robust at ε iff the smallest of these exceeds ε
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 16, generator=g)
    model = linear_model(w, torch.zeros(4))
    x = 0.3 + 0.4 * torch.rand(400, 1, 4, 4, generator=g)
    z = model(x).detach()
    y = z.argmax(1)
    dist = ((z.gather(1, y.view(-1, 1)) - z) / (w[y][:, None, :] - w[None]).abs().sum(-1)).clone()
    dist[torch.arange(400), y] = torch.inf
    needed = dist.amin(1)
    eps = 0.04
    robust, weak = (needed > 1.4 * eps).nonzero().squeeze(1)[:12], (needed < 0.7 * eps).nonzero().squeeze(1)[:12]
    assert len(robust) == 12 and len(weak) == 12
    pick = torch.cat([robust, weak[:6]])
    r = AutoAttack("linf", eps=eps, steps=50, n_targets=3, n_queries=20)(model, x[pick], y[pick])
    assert r.robust_accuracy == pytest.approx(12 / 18)
    assert r.broken_by[12:] == ["apgd-ce"] * 6 and r.broken_by[:12] == [""] * 12


def test_autoattack_rejects_targets():
    for run in (AutoAttack(), AutoAttack().perturb):  # perturb too: it must not run untargeted without a word
        with pytest.raises(ValueError, match="untargeted"):
            run(tiny_conv(), torch.rand(2, 1, 10, 10), torch.tensor([0, 1]), targets=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="version"):
        AutoAttack(version="plus")


@pytest.mark.parametrize("build, message", [
    (lambda: AutoAttack("l2"), "no default budget"),          # an L∞ default would flatter an L2 evaluation
    (lambda: make_attack("square-l2"), "no default budget"),
    (lambda: APGD(8), "did you mean 8/255"),                  # 0–255 units under L∞
    (lambda: Square(torch.tensor([0.1, 3.0])), "did you mean 3/255"),
    (lambda: APGD(seed=1.7), "seed must be an integer"),      # not silently seed 1
    (lambda: Square(seed="1e3"), "seed must be an integer"),  # what a YAML/CLI value can arrive as
    (lambda: Square(p_init=True), "p_init"),
    (lambda: Square(rescale_schedule="no"), "rescale_schedule"),
    (lambda: APGD([0.1, 0.2]), "torch.tensor"),
])
def test_suite_two_settings_are_refused_with_the_fix(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unusable_models_are_refused_before_any_work():
    x, y = torch.rand(3, 1, 10, 10), torch.tensor([0, 0, 0])
    with pytest.raises(ValueError, match="≥ 2 classes"):
        APGD(steps=2)(tiny_conv(classes=1), x, y)
    with pytest.raises(ValueError, match="nn.Module"):
        APGD(steps=2)(lambda z: tiny_conv()(z), x, y)

    class Detached(nn.Module):  # no gradient path from the logits back to x
        def __init__(self):
            super().__init__()
            self.net = tiny_conv()

        def forward(self, z):
            return self.net(z).detach()
    for attack in (APGD(steps=2), FABT(steps=2)):
        with pytest.raises(ValueError, match="Square needs none"):
            attack(Detached(), x, Detached()(x).argmax(1))
    assert APGD(steps=np.int64(3)).steps == 3  # numpy integers count as integers


# ---------------------------------------------------------------- every new attack: ball and box

@pytest.mark.parametrize("attack,norm,eps", [
    (APGD(0.05, steps=8), "linf", 0.05),
    (APGD(0.05, steps=8, loss="dlr", restarts=2), "linf", 0.05),
    (APGD(torch.linspace(0.0, 0.1, 8), steps=8), "linf", torch.linspace(0.0, 0.1, 8)),
    (APGD(0.5, norm="l2", steps=8), "l2", 0.5),
    (APGD(0.5, norm="l2", steps=4, eot=2, loss="dlr"), "l2", 0.5),
    (APGDT(0.05, steps=8, n_targets=2), "linf", 0.05),
    (APGDT(0.5, norm="l2", steps=8, n_targets=2), "l2", 0.5),
    (Square(0.05, n_queries=20), "linf", 0.05),
    (Square(0.5, norm="l2", n_queries=20, p_init=0.3), "l2", 0.5),
    (AutoAttack("linf", 0.05, steps=5, n_targets=2, n_queries=10), "linf", 0.05),
    (AutoAttack("l2", 0.5, version="rand", steps=3), "l2", 0.5),
])
def test_outputs_stay_in_the_ball_and_the_box(attack, norm, eps):
    model = tiny_conv(3)
    x = torch.rand(8, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    x[:, :, :3] = 0.0                                             # saturated pixels: the box binds
    x0 = x.clone()
    r = attack(model, x, model(x).argmax(1))
    assert torch.equal(x, x0) and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert (getattr(r, norm) <= eps + TOL).all()
    assert r.success.any()                                        # the budget is large for this random net


def test_targeted_apgd_hits_targets():
    model = tiny_conv(5)
    x = torch.rand(6, 1, 10, 10, generator=torch.Generator().manual_seed(6))
    y = model(x).argmax(1)
    t = (y + 1) % 10
    r = APGD(0.3, steps=20)(model, x, y, targets=t)
    assert torch.equal(r.success, r.pred == t) and r.success_rate() >= 0.8


def test_registry_names_build_the_new_attacks():
    assert make_attack("apgd-dlr-l2", eps=1.0).loss == "dlr" and make_attack("apgd-dlr-l2", eps=1.0).norm == "l2"
    assert isinstance(make_attack("apgd-t"), APGDT) and make_attack("square-l2", eps=1.0).norm == "l2"
    assert make_attack("autoattack-l2", eps=0.5).norm == "l2"
    with pytest.raises(ValueError, match="fixed by the name"):
        make_attack("apgd-ce", loss="dlr")
