"""Tests of FAB-T: the box-constrained projection onto a hyperplane (analytic and against a linear program),
the minimal distance FAB finds on a linear classifier with a margin (L∞ and L2), its budget, ball and box, and
its place in AutoAttack. Tiny hand-built models only."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from advsal.attacks import FABT, AutoAttack, make_attack
from advsal.attacks.fab import boundary_projection

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


def linear_model(weight: torch.Tensor) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.zero_()
    return nn.Sequential(nn.Flatten(), layer).eval()


# ---------------------------------------------------------------- the projection step

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_of_a_linear_binary_classifier_lands_on_its_hyperplane(norm):
    # f(z) = ⟨w, z⟩ − b; pixels in [0.3, 0.7] and a small |f|: the box does not bind, so the step is the
    # textbook one, δ = −f·sign(w)/‖w‖₁ (L∞) or −f·w/‖w‖₂² (L2)
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(6, 30, generator=g, dtype=torch.float64)
    p = 0.3 + 0.4 * torch.rand(6, 30, generator=g, dtype=torch.float64)
    f = 0.05 * torch.randn(6, generator=g, dtype=torch.float64)
    b = (w * p).sum(1) - f
    d = boundary_projection(p, w, -f, norm)
    assert torch.allclose((w * (p + d)).sum(1), b, atol=1e-12)
    if norm == "linf":
        expected = -f[:, None] * w.sign() / w.abs().sum(1, keepdim=True)
    else:
        expected = -f[:, None] * w / (w * w).sum(1, keepdim=True)
    assert torch.allclose(d, expected, atol=1e-12)


def test_projection_is_the_box_constrained_optimum():
    # points near the box's edges and a hyperplane far away: many coordinates saturate
    g = torch.Generator(device="cpu").manual_seed(1)
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    w[:, 0] = 0.0                                          # a coordinate the hyperplane ignores stays put
    p = torch.rand(5, 12, generator=g, dtype=torch.float64) ** 3
    c = torch.tensor([1.5, -1.0, 0.8, -2.0, 0.0], dtype=torch.float64)
    for norm in ("linf", "l2"):
        d = boundary_projection(p, w, c, norm)
        assert torch.allclose((w * d).sum(1), c, atol=1e-10)
        assert (p + d).min() >= -1e-12 and (p + d).max() <= 1 + 1e-12 and (d[:, 0] == 0).all() and (d[4] == 0).all()
    d = boundary_projection(p, w, c, "linf")
    for i in range(4):                                     # min t s.t. |δ_j| ≤ t, 0 ≤ p + δ ≤ 1, ⟨w, δ⟩ = c
        n = w.shape[1]
        lp = linprog(c=[0] * n + [1], A_ub=torch.cat([torch.cat([torch.eye(n), -torch.ones(n, 1)], 1),
                                                      torch.cat([-torch.eye(n), -torch.ones(n, 1)], 1)]).numpy(),
                     b_ub=[0] * (2 * n), A_eq=[w[i].tolist() + [0]], b_eq=[float(c[i])],
                     bounds=[(-float(p[i, j]), 1 - float(p[i, j])) for j in range(n)] + [(0, None)])
        assert lp.status == 0 and float(d[i].abs().max()) == pytest.approx(lp.fun, abs=1e-9)
    # L2: the KKT form δ = clip(λw, −p, 1 − p) for one λ per row
    d = boundary_projection(p, w, c, "l2")
    for i in range(4):
        free = (d[i] != 0) & (d[i] != -p[i]) & (d[i] != 1 - p[i])
        lam = (d[i][free] / w[i][free])
        assert lam.numel() and torch.allclose(lam, lam[0].expand_as(lam))
        assert torch.allclose(d[i], torch.minimum(torch.maximum(lam[0] * w[i], -p[i]), 1 - p[i]), atol=1e-12)
    # out of reach: every coordinate moves to the edge the hyperplane lies towards
    far = boundary_projection(p[:1], w[:1], torch.tensor([100.0], dtype=torch.float64), "linf")
    assert torch.equal(far, torch.where(w[:1] > 0, 1 - p[:1], torch.where(w[:1] < 0, -p[:1], 0 * p[:1])))


# ---------------------------------------------------------------- FAB on a linear classifier with a margin

@pytest.fixture(scope="module")
def margin_case():
    # four classes, pixels in [0.3, 0.7]; the exact distance to class j's boundary is (z_y − z_j)/‖w_y − w_j‖_q
    # (q = 1 for L∞, 2 for L2) while it is below 0.3 in every pixel (the box never binds)
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(4, 16, generator=g)
    model = linear_model(w)
    x = 0.3 + 0.4 * torch.rand(60, 1, 4, 4, generator=g)
    z = model(x).detach()
    y = z.argmax(1)
    needed = {}
    for norm, q in (("linf", 1), ("l2", 2)):
        dist = (z.gather(1, y[:, None]) - z) / (w[y][:, None, :] - w[None]).norm(p=q, dim=-1)
        dist[torch.arange(60), y] = torch.inf
        needed[norm] = dist.amin(1)
    keep = (needed["linf"] < 0.2) & (needed["l2"] < 0.3)
    keep = keep.nonzero().squeeze(1)[:10]
    assert len(keep) == 10
    return model, x[keep], y[keep], {k: v[keep] for k, v in needed.items()}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_analytic_minimal_distance(margin_case, norm):
    model, x, y, needed = margin_case
    r = FABT(norm=norm, n_targets=3, steps=30)(model, x, y)
    found = getattr(r, norm)
    assert r.success.all()
    assert (found >= needed[norm] * (1 - 1e-4)).all()     # nothing beats the exact minimum …
    assert (found <= needed[norm] * 1.005).all()           # … and FAB gets within 0.5 % of it
    raw = getattr(FABT(norm=norm, n_targets=3, steps=30, final_search=0)(model, x, y), norm)
    assert (found <= raw + 1e-7).all() and (found < raw).any()   # the final search only shrinks


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_succeeds_exactly_when_the_budget_covers_the_distance(margin_case, norm):
    model, x, y, needed = margin_case
    below = FABT(needed[norm] * 0.98, norm=norm, n_targets=3, steps=30)(model, x, y)
    assert not below.success.any() and torch.equal(below.x_adv, x)    # nothing within ε: x unchanged
    above = FABT(needed[norm] * 1.02, norm=norm, n_targets=3, steps=30)(model, x, y)
    assert above.success.all() and (getattr(above, norm) <= needed[norm] * 1.02 + TOL).all()


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5), ("linf", torch.linspace(0.0, 0.1, 8))])
def test_fab_outputs_stay_in_the_ball_and_the_box(norm, eps):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(400, 10)).eval()
    x = torch.rand(8, 1, 10, 10, generator=torch.Generator(device="cpu").manual_seed(4))
    x[:, :, :3] = 0.0                                       # saturated pixels: the box binds
    x0 = x.clone()
    r = FABT(eps, norm=norm, steps=10, n_targets=3, restarts=2)(model, x, model(x).argmax(1))
    assert torch.equal(x, x0) and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert (getattr(r, norm) <= eps + TOL).all() and r.success.any()
    assert torch.equal(r.x_adv[~r.success], x[~r.success])


def test_fab_reaches_given_targets_and_is_registered():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 10)).eval()
    x = torch.rand(6, 1, 10, 10, generator=torch.Generator(device="cpu").manual_seed(6))
    y = model(x).argmax(1)
    t = (y + 1) % 10
    r = FABT(steps=20)(model, x, y, targets=t)
    assert torch.equal(r.success, r.pred == t) and r.success.all()
    assert make_attack("fab-t-l2", eps=1.0).norm == "l2" and isinstance(make_attack("fab-t"), FABT)
    with pytest.raises(ValueError, match="beta"):
        FABT(beta=1.5)


def test_autoattack_standard_runs_fab_t_third():
    aa = AutoAttack("linf", eps=0.1)
    assert aa.component_names() == ("apgd-ce", "apgd-t", "fab-t", "square")
    fab = aa.components(0.1, 10)[2][1]
    assert isinstance(fab, FABT) and fab.n_targets == 9 and fab.steps == 100 and fab.restarts == 1
    assert (fab.alpha_max, fab.eta, fab.beta) == (0.1, 1.05, 0.9)
