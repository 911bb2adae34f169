"""Tests of advsal.attacks: budgets, success rates on the trained MNIST net, exact checks on hand-built
models,
state restoration and bad-input errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advsal.attacks import (
    ATTACKS,
    BIM,
    FGSM,
    JSMA,
    PGD,
    CarliniWagnerL2,
    DeepFool,
    PixelAttack,
    least_likely_targets,
    make_attack,
    minimal_epsilon,
    minimal_epsilon_per_example,
    perturbation_norms,
    random_targets,
)
from advsal.attacks.epsilon import attacked_accuracy
from advsal.attacks.jsma import best_pairs
from advsal.tensors import predict_logits

TOL = 1e-5  # float round-off of x + δ − x


@pytest.fixture(scope="module")
def batch100(mnist_batch):
    x, y = mnist_batch
    return x[:100], y[:100]


def linear_model(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """Logits = W·flatten(x) + b with hand-set weights."""
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer).eval()


# ---------------------------------------------------------------- budgets, box, inputs untouched

@pytest.mark.parametrize("name,params,norm,eps", [
    ("fgsm", {"eps": 0.2}, "linf", 0.2),
    ("bim", {"eps": 0.1, "steps": 5}, "linf", 0.1),
    ("pgd", {"eps": 0.1, "steps": 5}, "linf", 0.1),
    ("bim-l2", {"eps": 1.0, "steps": 5}, "l2", 1.0),
    ("pgd-l2", {"eps": 1.0, "steps": 5, "restarts": 2}, "l2", 1.0),
])
def test_results_in_box_and_budget_inputs_unchanged(mnist_model, mnist_batch, name, params, norm, eps):
    x, y = mnist_batch[0][:40], mnist_batch[1][:40]
    x0, y0 = x.clone(), y.clone()
    r = make_attack(name, **params)(mnist_model, x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert r.x_adv.shape == x.shape and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert (getattr(r, norm) <= eps + TOL).all()
    assert (getattr(r, norm) > 0.5 * eps).any()  # the budget is actually used
    norms = perturbation_norms(x, r.x_adv)
    assert torch.allclose(norms["l2"], r.l2) and torch.equal(r.pred, predict_logits(mnist_model, r.x_adv).argmax(1))
    assert torch.equal(r.success, r.pred != y)


def test_norms_count_pixels_and_features():
    x = torch.zeros(2, 3, 4, 4)
    x_adv = x.clone()
    x_adv[0, :, 1, 1] = 0.5          # one pixel, three channels
    x_adv[0, 0, 2, 3] = 0.25         # another pixel, one channel
    x_adv[1, 1, 0, 0] = 1e-7         # below the tolerance: not a change
    n = perturbation_norms(x, x_adv)
    assert n["l0"].tolist() == [2, 0] and n["l0_features"].tolist() == [4, 0]
    assert n["linf"][0].item() == pytest.approx(0.5)
    assert n["l2"][0].item() == pytest.approx((3 * 0.25 + 0.0625) ** 0.5)


def test_eps_zero_returns_input(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:10], mnist_batch[1][:10]
    for attack in (FGSM(0.0), BIM(0.0), PGD(0.0), PGD(0.0, norm="l2")):
        r = attack(mnist_model, x, y)
        assert torch.equal(r.x_adv, x) and not r.success.any()


# ---------------------------------------------------------------- exact checks on hand-built models

def test_fgsm_and_deepfool_exact_on_linear_model():
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 3.0]])
    model = linear_model(w, torch.tensor([0.0, -0.1]))
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])  # logits 0.5·(−0.5) vs 0.5·3 − 0.1 → predicted 1; attack "true" class 0 anyway
    # FGSM with the true label: ascend CE(0) = step along sign(∇(z1 − z0)) = sign(w1 − w0) = (−,+,−,+)
    r = FGSM(0.1, use_true_labels=True)(model, x, y)
    assert torch.allclose((r.x_adv - x).flatten(), torch.tensor([-0.1, 0.1, -0.1, 0.1]))
    # DeepFool on a 2-class linear model: one step to the boundary, L2 = (|f| + 1e-4)/‖w'‖ · (1 + overshoot)
    y1 = torch.tensor([1])
    r = DeepFool(overshoot=0.02)(model, x, y1)
    wd = (w[0] - w[1])
    f = (w[0] - w[1]) @ x.flatten() + (0.0 - -0.1)
    expected = (f.abs() + 1e-4) / wd.norm() * 1.02
    assert r.success.item() and r.l2.item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.allclose((r.x_adv - x).flatten() / r.l2, wd / wd.norm() * torch.sign(-f), atol=1e-5)


def test_best_pairs_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        d = 30
        u, v = torch.randn(4, d, generator=g), torch.randn(4, d, generator=g)
        if trial % 2:
            v = -u + 0.2 * v  # anti-correlated: long Pareto fronts
        mask = torch.rand(4, d, generator=g) < 0.3
        u, v = u.masked_fill(mask, -torch.inf), v.masked_fill(mask, -torch.inf)
        p, q, score = best_pairs(u, v, chunk=4)
        su, sv = u[:, :, None] + u[:, None, :], v[:, :, None] + v[:, None, :]
        ok = (su > 0) & (sv > 0) & ~torch.eye(d, dtype=torch.bool)
        brute = torch.where(ok, su * sv, torch.tensor(-torch.inf)).flatten(1).amax(1)
        assert torch.equal(torch.isinf(brute), torch.isinf(score))
        fin = torch.isfinite(score)
        assert torch.allclose(brute[fin], score[fin]) and (p[fin] != q[fin]).all()
        rows = torch.arange(4)
        got = (u[rows, p] + u[rows, q]) * (v[rows, p] + v[rows, q])
        assert torch.allclose(got[fin], score[fin])


def test_jsma_changes_the_most_salient_pair_first():
    # class 1 logit rises with pixels 2 and 5 only; class 0 falls with them: the first pair must be {2, 5}
    w = torch.zeros(2, 9)
    w[1, 2], w[1, 5], w[1, 7] = 1.0, 0.9, 0.2
    w[0, 2], w[0, 5], w[0, 7] = -1.0, -0.8, 0.5
    model = linear_model(w, torch.tensor([2.0, 0.0]))
    x = torch.zeros(1, 1, 3, 3)
    r = JSMA(theta=1.0, gamma=0.3)(model, x, torch.tensor([0]), torch.tensor([1]))
    changed = (r.x_adv - x).flatten().nonzero().flatten().tolist()
    assert changed == [2, 5] and r.success.item() and r.l0.item() == 2


def test_jsma_target_map_ignores_the_other_classes():
    # pixel 7 raises the target logit almost as much as pixel 2 but raises class 0 even more: the pairwise map
    # avoids it ({2, 5}), ART's target-gradient map takes the two largest target gradients ({2, 7})
    w = torch.zeros(2, 9)
    w[1, 2], w[1, 5], w[1, 7] = 1.0, 0.9, 0.95
    w[0, 2], w[0, 5], w[0, 7] = -1.0, -0.8, 2.0
    model = linear_model(w, torch.tensor([2.0, 0.0]))
    x = torch.zeros(1, 1, 3, 3)
    for saliency_map, expected in (("pairwise", [2, 5]), ("target", [2, 7])):
        r = JSMA(theta=1.0, gamma=0.3, saliency_map=saliency_map)(model, x, torch.tensor([0]), torch.tensor([1]))
        assert (r.x_adv - x).flatten().nonzero().flatten().tolist() == expected
    with pytest.raises(ValueError, match="saliency_map"):
        JSMA(saliency_map="single")


def test_pixel_attack_beats_random_pixels_at_equal_queries():
    # class 1 needs bright pixels near the centre of a 12×12 image (a smooth bump of weights): DE can climb it
    coords = torch.stack(torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij"), -1)
    bump = 1.3 * torch.exp(-((coords - 5.5) ** 2).sum(-1) / 2.0).flatten()
    model = linear_model(torch.stack([torch.zeros(144), bump]), torch.tensor([2.3, 0.0]))
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(0)) * 0.1
    y = torch.zeros(16, dtype=torch.long)
    r = PixelAttack(pixels=3, population=40, generations=40, seed=0)(model, x, y)
    assert (r.l0 <= 3).all() and r.queries is not None and (r.queries <= 40 * 41).all()
    # random search with the same total budget: every query a fresh random 3-pixel candidate
    budget = int(r.queries.max())
    baseline = PixelAttack(pixels=3, population=budget, generations=0, seed=1)(model, x, y)
    assert r.success_rate() >= 0.75 and baseline.success_rate() <= 0.25  # measured 0.875 vs 0.0625
    assert (r.queries[r.success] < budget).any()  # early stopping per example


# ---------------------------------------------------------------- success rates on the trained MNIST net

def test_fgsm_success(mnist_model, batch100):
    assert FGSM(0.3)(mnist_model, *batch100).success_rate() >= 0.70


@pytest.mark.parametrize("cls", [BIM, PGD])
def test_linf_iterative_success(mnist_model, batch100, cls):
    assert cls(0.3, steps=10)(mnist_model, *batch100).success_rate() >= 0.99


@pytest.mark.parametrize("cls", [BIM, PGD])
def test_l2_iterative_success(mnist_model, batch100, cls):
    # measured 0.71 (BIM) on this 3-epoch mnist-net: its digits need L2 ≈ 2.2 on average even for C&W, and
    # clipping to [0, 1] wastes much of each normalised step on the black background, so 95% is out of reach
    x, y = batch100
    assert cls(3.0, steps=20, norm="l2")(mnist_model, x[:50], y[:50]).success_rate() >= 0.6


def test_success_monotone_in_eps(mnist_model, batch100):
    x, y = batch100
    rates = [BIM(e, steps=5)(mnist_model, x[:50], y[:50]).success_rate() for e in (0.02, 0.08, 0.15, 0.3)]
    assert rates == sorted(rates) and rates[0] < 0.5 < rates[-1]


def test_cw_beats_bim_l2_norm(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:12], mnist_batch[1][:12]
    cw = CarliniWagnerL2(steps=80, binary_search_steps=3)(mnist_model, x, y)
    bim = BIM(3.0, steps=20, norm="l2")(mnist_model, x, y)
    assert cw.success_rate() >= 0.99
    both = cw.success & bim.success
    assert both.sum() >= 5 and cw.l2[both].mean() < bim.l2[both].mean()


def test_cw_adaptive_step_size_needs_no_lucky_learning_rate(mnist_model, mnist_batch):
    # ART's lr=0.01: a fixed Adam step cannot move saturated pixels (w ≈ ±7.3) in 100 steps; per-image step
    # sizes grow while the loss falls
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    settings = {"c": 1.0, "steps": 100, "binary_search_steps": 3, "lr": 0.01}
    fixed = CarliniWagnerL2(adaptive=False, **settings)(mnist_model, x, y)
    adaptive = CarliniWagnerL2(**settings)(mnist_model, x, y)
    assert fixed.success_rate() <= 0.5 and adaptive.success_rate() >= 0.9
    assert (adaptive.l2[adaptive.success] < 5.0).all()
    with pytest.raises(ValueError, match="growth"):
        CarliniWagnerL2(growth=0.5)


def test_deepfool_success(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:40], mnist_batch[1][:40]
    r = DeepFool()(mnist_model, x, y)
    assert r.success_rate() >= 0.95 and r.l2.median() < 4.0


def test_jsma_targeted_success_and_l0(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:20], mnist_batch[1][:20]
    t = random_targets(y, 10, seed=0)
    r = JSMA(gamma=0.145)(mnist_model, x, y, t)
    assert torch.equal(r.targets, t) and torch.equal(r.success, r.pred == t)
    assert (r.l0 <= 0.15 * 28 * 28).all()
    # measured 56% on 50 digits (ART's target-gradient JSMA: 66%); Papernot et al.'s 97% is on their own LeNet
    assert r.success_rate() >= 0.4


@pytest.mark.parametrize("attack", [PGD(0.3, steps=10), DeepFool(), FGSM(0.3)])
def test_targeted_attacks_hit_targets(mnist_model, mnist_batch, attack):
    x, y = mnist_batch[0][:30], mnist_batch[1][:30]
    t = least_likely_targets(mnist_model, x, y) if isinstance(attack, FGSM) else random_targets(y, 10, seed=3)
    r = attack(mnist_model, x, y, targets=t)
    assert attack.targeted and torch.equal(r.success, r.pred == t)
    if isinstance(attack, FGSM):  # one step towards the least likely class is weaker than untargeted FGSM
        assert r.success_rate() < FGSM(0.3)(mnist_model, x, y).success_rate()
        assert ((r.x_adv - x).abs() > 0.29).float().mean() > 0.5  # but it does take the full ε step
    else:  # measured: PGD 0.83, DeepFool 1.0 on random targets
        assert r.success_rate() >= 0.75


def test_batch_equals_per_example_for_deterministic_attacks(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:3], mnist_batch[1][:3]
    t = random_targets(y, 10, seed=0)
    for attack, targets in ((FGSM(0.2), None), (BIM(0.1, steps=5), None), (DeepFool(steps=10), None),
                            (JSMA(gamma=0.03), t)):
        whole = attack(mnist_model, x, y, targets).x_adv
        singles = torch.cat([attack(mnist_model, x[i:i + 1], y[i:i + 1],
                                    None if targets is None else targets[i:i + 1]).x_adv for i in range(3)])
        # DeepFool steps by f/‖∇f‖² until the label flips, so a conv's batch-size-dependent rounding (seen with
        # one CPU thread: 2e-3 on one pixel, L2 2.0659 vs 2.0667) moves its last step; a batching bug moves far more
        tol = 5e-3 if isinstance(attack, DeepFool) else 1e-4
        assert torch.allclose(whole, singles, atol=tol), type(attack).__name__
    chunked = BIM(0.1, steps=5, batch_size=3)(mnist_model, x, y).x_adv
    assert torch.allclose(chunked, BIM(0.1, steps=5)(mnist_model, x, y).x_adv, atol=1e-4)


def test_minimal_epsilon(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:50], mnist_batch[1][:50]
    x = torch.cat([x, 1 - x[:5]])  # a few inverted digits the model may get wrong
    y = torch.cat([y, y[:5]])
    factory = lambda e: BIM(e, steps=5)  # noqa: E731
    res = minimal_epsilon(factory, mnist_model, x, y, max_accuracy=0.30, hi=0.5, tol=0.02)
    assert attacked_accuracy(factory(res.eps), mnist_model, x, y) < 0.30
    assert attacked_accuracy(factory(0.9 * res.eps), mnist_model, x, y) >= 0.30
    assert res.curve == sorted(res.curve) and res.accuracy < 0.30 <= dict(res.curve)[res.lower]
    assert 0 < res.eps < 0.5 and res.clean_accuracy <= 1.0
    with pytest.raises(ValueError, match="raise hi"):
        minimal_epsilon(factory, mnist_model, x, y, hi=0.01)


# ---------------------------------------------------------------- per-example budgets

@pytest.mark.parametrize("make", [
    lambda e: FGSM(e),
    lambda e: BIM(e, steps=4),
    lambda e: BIM(e * 10, steps=4, norm="l2"),
    lambda e: PGD(e, steps=3, seed=1),
    lambda e: PGD(e * 10, steps=3, norm="l2", restarts=2),
])
def test_per_example_eps_equals_each_example_alone(mnist_model, mnist_batch, make):
    x, y = mnist_batch[0][:5], mnist_batch[1][:5]
    eps = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.3])
    r = make(eps)(mnist_model, x, y)
    scale = 10 if make(1.0).norm == "l2" else 1
    norms = r.l2 if scale == 10 else r.linf
    assert (norms <= eps * scale + TOL).all() and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert torch.equal(r.x_adv[0], x[0]) and (norms[1:] > 0.5 * eps[1:] * scale).all()
    if type(make(1.0)) is not PGD:  # deterministic attacks: equal to each example alone
        singles = torch.cat([make(float(e))(mnist_model, x[i:i + 1], y[i:i + 1]).x_adv
                             for i, e in enumerate(eps)])
        assert torch.allclose(r.x_adv, singles, atol=1e-5)
    # chunking slices the budgets with the images
    attack = make(eps)
    attack.batch_size = 2
    chunked = attack(mnist_model, x, y)
    assert (getattr(chunked, "l2" if scale == 10 else "linf") <= eps * scale + TOL).all()
    if type(attack) is not PGD:
        assert torch.allclose(chunked.x_adv, r.x_adv, atol=1e-5)


def test_per_example_pgd_random_start_matches_scalar_runs(mnist_model, mnist_batch):
    # the random start is drawn for the whole batch, so compare against the same batch at each scalar eps
    x, y = mnist_batch[0][:4], mnist_batch[1][:4]
    eps = torch.tensor([0.05, 0.1, 0.2, 0.3])
    r = PGD(eps, steps=3, seed=2)(mnist_model, x, y)
    for i, e in enumerate(eps.tolist()):
        alone = PGD(e, steps=3, seed=2)(mnist_model, x, y)
        assert torch.allclose(r.x_adv[i], alone.x_adv[i], atol=1e-5)
        assert r.linf[i] <= e + TOL


def test_per_example_eps_errors(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:3], mnist_batch[1][:3]
    with pytest.raises(ValueError, match="index 1 holds -0.1.*clamp"):
        PGD(torch.tensor([0.1, -0.1, 0.2]))
    with pytest.raises(ValueError, match="index 2 holds nan"):
        BIM(torch.tensor([0.1, 0.1, float("nan")]))
    with pytest.raises(ValueError, match="1-D"):
        FGSM(torch.ones(3, 1))
    with pytest.raises(ValueError, match="4 values but the batch has 3"):
        PGD(torch.full((4,), 0.1))(mnist_model, x, y)


def test_minimal_epsilon_per_example_is_analytic_on_linear_model():
    # two classes, logits W·x + b; FGSM with the true label moves every pixel by ε along sign(w1 − w0), which
    # on a linear model is the optimal L∞ step: the margin m = z0 − z1 falls by ε·‖w1 − w0‖₁, so ε* = m/‖·‖₁
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 16, generator=g) * 0.5
    model = linear_model(w, torch.tensor([0.0, 0.0]))
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 4, generator=g)
    logits = model(x).detach()
    y = logits.argmax(1)
    margin = (logits.gather(1, y.view(-1, 1)).squeeze(1) - logits.gather(1, (1 - y).view(-1, 1)).squeeze(1))
    expected = margin / (w[0] - w[1]).abs().sum()
    assert (expected < 0.3).sum() >= 2  # some images breakable within the pixel box
    res = minimal_epsilon_per_example(lambda e: FGSM(e, use_true_labels=True), model, x, y,
                                      hi=0.3, steps=16)
    reachable = expected < 0.3
    assert torch.equal(res.found, reachable)
    assert torch.allclose(res.eps[reachable], expected[reachable], atol=1e-4)
    assert (res.lower[reachable] <= expected[reachable] + 1e-6).all()
    assert torch.isinf(res.eps[~reachable]).all()
    # an image the model already gets wrong needs no budget
    res = minimal_epsilon_per_example(lambda e: FGSM(e, use_true_labels=True), model, x, 1 - y, hi=0.3)
    assert (res.eps == 0).all()


# ---------------------------------------------------------------- state, targets, registry, bad input

def test_model_mode_and_requires_grad_restored():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[1].weight.requires_grad_(False)
    x = torch.rand(5, 1, 4, 4)
    y = torch.zeros(5, dtype=torch.long)
    for attack in (PGD(0.1, steps=2), DeepFool(steps=2), CarliniWagnerL2(steps=2, binary_search_steps=1),
                   JSMA(gamma=0.2), PixelAttack(population=4, generations=1)):
        attack(model, x, y)
        assert model.training and model[2].training
        assert not model[1].weight.requires_grad
        assert model[1].bias.requires_grad and model[3].weight.requires_grad
        assert model[1].weight.grad is None and model[3].weight.grad is None
    # a failing call restores the state too
    with pytest.raises(ValueError):
        PGD(0.1)(model, x, torch.full((5,), 7))
    assert model.training and model[1].bias.requires_grad
    model.eval()
    model[2].train()  # a mixed state comes back as it was
    PGD(0.1, steps=2)(model, x, y)
    assert not model.training and model[2].training and not model[1].training


def test_target_helpers(mnist_model, mnist_batch):
    y = torch.arange(10).repeat(20)
    t = random_targets(y, 10, seed=0)
    assert (t != y).all() and set(t.tolist()) == set(range(10))
    assert torch.equal(t, random_targets(y, 10, seed=0))
    x = mnist_batch[0][:20]
    ll = least_likely_targets(mnist_model, x)
    assert torch.equal(ll, predict_logits(mnist_model, x).argmin(1))
    with pytest.raises(ValueError, match="num_classes"):
        random_targets(y, 1)


def test_registry():
    assert set(ATTACKS) == {"fgsm", "bim", "bim-l2", "pgd", "pgd-l2", "jsma", "cw", "deepfool", "pixel",
                            "apgd-ce", "apgd-ce-l2", "apgd-dlr", "apgd-dlr-l2", "apgd-t", "apgd-t-l2", "square",
                            "square-l2", "autoattack", "autoattack-l2", "fab-t", "fab-t-l2"}
    assert make_attack("bim-l2", eps=2.0).norm == "l2" and make_attack("pgd", eps=0.1).norm == "linf"
    for name in ("jsma", "cw", "deepfool", "pixel"):
        assert isinstance(make_attack(name), ATTACKS[name])
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        make_attack("nope")
    with pytest.raises(ValueError, match="no parameter epsilon"):
        make_attack("pgd", epsilon=0.1)
    with pytest.raises(ValueError, match="fixed by the name"):
        make_attack("bim-l2", eps=1.0, norm="linf")
    with pytest.raises(ValueError, match="needs eps"):
        make_attack("fgsm")


def test_bad_input_errors(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:4], mnist_batch[1][:4]
    with pytest.raises(ValueError, match="eps"):
        PGD(-0.1)
    with pytest.raises(ValueError, match="steps"):
        BIM(0.1, steps=0)
    with pytest.raises(ValueError, match="norm"):
        PGD(0.1, norm="l1")
    with pytest.raises(ValueError, match="theta"):
        JSMA(theta=2.0)
    with pytest.raises(ValueError, match="outside"):
        FGSM(0.1)(mnist_model, x * 2, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        FGSM(0.1)(mnist_model, bad, y)
    with pytest.raises(ValueError, match="class index 10"):
        FGSM(0.1)(mnist_model, x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        FGSM(0.1)(mnist_model, x, y[:3])
    with pytest.raises(ValueError, match="targets"):
        FGSM(0.1)(mnist_model, x, y, targets=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets equal the true labels"):
        PGD(0.1)(mnist_model, x, y, targets=y.clone())
    with pytest.raises(ValueError, match="targeted attack: pass targets"):
        JSMA(target_selection="required")(mnist_model, x, y)
    with pytest.raises(ValueError, match="4-D"):
        FGSM(0.1)(mnist_model, x[0], y)


def test_float64_images_into_a_float32_model_are_refused_with_the_fix(mnist_model, mnist_batch):
    from advsal.errors import InputError
    from advsal.saliency import gradient
    from advsal.tensors import predict_logits

    x, y = mnist_batch
    x64 = x[:2].double()
    for call in (lambda: FGSM(eps=0.1)(mnist_model, x64, y[:2]), lambda: gradient(mnist_model, x64),
                 lambda: predict_logits(mnist_model, x64)):
        with pytest.raises(InputError, match=r"x is float64 but the model's parameters are float32; pass x.to"):
            call()


# ---------------------------------------------------------------- perturb (x_adv alone) and the fused L2 step

def _counting(model: nn.Module) -> tuple[nn.Module, list[int]]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return model, calls


@pytest.mark.parametrize("make", [
    lambda e: FGSM(e), lambda e: BIM(e, steps=3), lambda e: PGD(e, steps=3, restarts=2),
    lambda e: PGD(e * 6, steps=3, norm="l2", batch_size=3)])
@pytest.mark.parametrize("per_example", [False, True])
def test_perturb_is_call_x_adv_without_the_prediction_forward(make, per_example):
    torch.manual_seed(0)
    model, calls = _counting(linear_model(torch.randn(4, 16) * 3, torch.zeros(4)))
    x = torch.rand(7, 1, 4, 4)
    y = model(x).argmax(1)
    eps = torch.linspace(0.05, 0.3, 7) if per_example else 0.2
    for targets in (None, (y + 1) % 4):
        calls[0] = 0
        result = make(eps)(model, x, y, targets)
        full = calls[0]
        calls[0] = 0
        x_adv = make(eps).perturb(model, x, y, targets)
        chunks = 3 if make(eps).batch_size == 3 else 1
        assert torch.equal(x_adv, result.x_adv)
        assert full - calls[0] == chunks  # exactly the one prediction forward per chunk is skipped


@pytest.mark.parametrize("alpha,eps", [(0.3, 0.1), (0.05, 0.1)])
def test_l2_step_projects_onto_the_ball_exactly(alpha, eps):
    """Two classes, logits linear: the CE gradient points along w1 − w0, so one normalised L2 step moves x by
    min(α, ε) along that unit vector (projected when α > ε, untouched when α < ε)."""
    torch.manual_seed(1)
    w = torch.randn(2, 9)
    model = linear_model(w, torch.zeros(2))
    x = torch.full((3, 1, 3, 3), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    unit = (w[1] - w[0]) / (w[1] - w[0]).norm()
    x_adv = BIM(eps, alpha=alpha, steps=1, norm="l2").perturb(model, x, y)
    expected = x + min(alpha, eps) * unit.view(1, 1, 3, 3)
    assert torch.allclose(x_adv, expected, atol=1e-6)
