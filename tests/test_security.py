"""Attacks on detector-guarded classifiers (Selective / Orthogonal PGD, combined loss, ensemble) and the security
evaluation: geometry of the steps, an analytically solvable linear case, threshold calibration, the ε-ball, and
the exact best-point bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advsal.attacks.detector_attacks import (
    DetectorAttackEnsemble,
    DetectorPGD,
    orthogonal_direction,
    selective_direction,
    strongest_attack,
)
from advsal.detection import SaliencyDetector
from advsal.detection.metrics import threshold_at_fpr
from advsal.detection.security import robust_detection

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# ------------------------------------------------------------------ hand-built linear F and D on 2-pixel images
class LinearF(nn.Module):
    """Two classes on images (N, 1, 1, 2): Z_0 = 0, Z_1 = 10·(x₁ − 0.6): class 1 iff x₁ > 0.6."""

    def forward(self, x):
        z1 = 10 * (x.flatten(1)[:, 0] - 0.6)
        return torch.stack([torch.zeros_like(z1), z1], 1)


class LinearD:
    """logit = 10·(x₂ − 0.4) + 2·(x₁ − 0.5) (+ ``lie`` in the logit the attack differentiates): evaded iff
    10·x₂ + 2·x₁ ≤ 5 at the 0.5 threshold."""

    differentiable = True

    def __init__(self, lie: float = 0.0):
        self.threshold = 0.5
        self.lie = lie

    @property
    def is_fitted(self):
        return True

    def params(self):
        return {}

    def fit(self, x_clean, x_adv, **options):
        return self

    def _logit(self, x):
        f = x.flatten(1)
        return 10 * (f[:, 1] - 0.4) + 2 * (f[:, 0] - 0.5)

    def adversarial_logit(self, x):
        return self._logit(x) + self.lie

    def score(self, x, batch_size=256):
        with torch.no_grad():
            return torch.sigmoid(self._logit(x))

    def predict(self, x, batch_size=256):
        return self.score(x) > self.threshold

    def calibrate(self, x_clean, fpr=0.05):
        self.threshold = threshold_at_fpr(self.score(x_clean), fpr)
        return self.threshold


def _pixel(a, b, n=1):
    return torch.tensor([[a, b]]).view(1, 1, 1, 2).repeat(n, 1, 1, 1)


@pytest.mark.parametrize("mode", ["combined", "selective", "orthogonal"])
def test_linear_case_reaches_the_feasible_point_and_fails_where_none_exists(mode):
    F, D = LinearF(), LinearD()
    x, y = _pixel(0.5, 0.5, 3), torch.zeros(3, dtype=torch.long)
    # ε = 0.15: feasible set x₁ ∈ (0.6, 0.65], x₂ ≤ (5 − 2x₁)/10 (≥ 0.37), x₂ ≥ 0.35 — non-empty
    res = DetectorPGD(eps=0.15, mode=mode, steps=30, kappa=0.1)(F, D, x, y)
    assert bool(res.both.all())
    f = res.x_adv.flatten(1)
    assert bool((f[:, 0] > 0.6).all()) and bool((10 * f[:, 1] + 2 * f[:, 0] <= 5 + 1e-5).all())
    assert float((res.x_adv - x).abs().max()) <= 0.15 + 1e-6
    # ε = 0.05: x₁ ≤ 0.55 < 0.6, F cannot be fooled: failure reported
    res = DetectorPGD(eps=0.05, mode=mode, steps=30, restarts=2)(F, D, x, y)
    assert not bool(res.both.any()) and not bool(res.fooled_f.any())


def test_bookkeeping_never_returns_a_point_the_exact_detector_rejects():
    """The attack's differentiable logit lies (says clean by 100 logits); only the exact score decides."""
    F, D = LinearF(), LinearD(lie=-100.0)
    x, y = _pixel(0.5, 0.5, 2), torch.zeros(2, dtype=torch.long)
    res = DetectorPGD(eps=0.05 + 0.06, mode="combined", lam=0.0, steps=10)(F, D, x, y)  # fools F, x₂ untouched
    assert bool(res.fooled_f.any())
    assert not bool(res.both.any())  # D (exact) flags every point: x₂ stays at 0.5 > 0.4
    ens = strongest_attack(0.11, steps=10, restarts=1)
    out = ens(F, D, x, y)
    exact = (F(out.x_adv).argmax(1) != y) & (D.score(out.x_adv) <= D.threshold)
    assert torch.equal(out.both, exact)


# ------------------------------------------------------------------ step geometry
def test_orthogonal_step_is_orthogonal_to_the_other_gradient():
    g = torch.Generator().manual_seed(0)
    g_f, g_d = torch.randn(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g)
    unmet_f = torch.tensor([True, True, False, False])
    unmet_d = torch.tensor([True, False, True, False])
    d = orthogonal_direction(g_f, g_d, unmet_f, unmet_d)
    dot = (d.flatten(1) * g_d.flatten(1)).sum(1)
    dot_f = (d.flatten(1) * g_f.flatten(1)).sum(1)
    assert dot[:2].abs().max() < 1e-4          # F step ⊥ g_D
    assert dot_f[2].abs() < 1e-4               # D step ⊥ g_F
    assert float(d[3].abs().max()) == 0.0      # both met: no step
    assert float(d[0].flatten().norm()) > 0.1  # not trivially zero


def test_selective_step_touches_only_unmet_objectives():
    g_f, g_d = torch.ones(3, 1, 2, 2), 2 * torch.ones(3, 1, 2, 2)
    d = selective_direction(g_f, g_d, torch.tensor([True, False, False]), torch.tensor([False, True, False]),
                            lam=3.0)
    assert torch.equal(d[0], g_f[0]) and torch.equal(d[1], 3.0 * g_d[1]) and float(d[2].abs().max()) == 0.0


# ------------------------------------------------------------------ a small network F and saliency D
@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(0)
    F = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        y = F(x).argmax(1)
    D = SaliencyDetector(F).fit(x[:12], (x[:12] + 0.2 * torch.randn_like(x[:12])).clamp(0, 1),
                                           epochs=1, batch_size=12)
    return F, D, x[12:], y[12:]


@pytest.mark.parametrize("norm,mode", [("linf", "orthogonal"), ("l2", "selective"), ("l2", "combined")])
def test_outputs_stay_in_the_ball_and_in_the_unit_box(small_pair, norm, mode):
    F, D, x, y = small_pair
    eps = 0.1 if norm == "linf" else 0.8
    res = DetectorPGD(eps=eps, norm=norm, mode=mode, steps=6, restarts=2)(F, D, x, y)
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    exact = (F(res.x_adv).argmax(1) != y) & (D.score(res.x_adv) <= D.threshold)
    assert torch.equal(res.both, exact)


def test_calibrated_threshold_has_the_requested_clean_fpr():
    F, D = LinearF(), LinearD()
    g = torch.Generator().manual_seed(1)
    x_cal = torch.rand(400, 1, 1, 2, generator=g)
    x = _pixel(0.5, 0.5, 2)
    res = robust_detection(F, D, x, torch.zeros(2, dtype=torch.long), [0.0, 0.15], fpr=0.1, x_calibration=x_cal,
                           steps=10, restarts=1)
    assert abs(res.clean_fpr - 0.1) <= 0.01
    assert D.threshold == 0.5  # restored
    held_out = torch.rand(400, 1, 1, 2, generator=g)
    assert abs(float((D.score(held_out) > res.threshold).float().mean()) - 0.1) <= 0.05
    assert res.both[0] == 0.0 and res.robust_accuracy[0] == 1.0 and math.isnan(res.robust_tpr[0])
    assert res.to_dict()["eps"] == [0.0, 0.15]


def test_ensemble_validates_its_attacks():
    with pytest.raises(ValueError, match="AdaptiveAttack"):
        DetectorAttackEnsemble([])
    with pytest.raises(ValueError, match="mode"):
        DetectorPGD(eps=0.1, mode="sideways")


# ------------------------------------------------------------------ hardening and adversarial training
def test_hardening_trains_a_copy_sharing_the_classifier(small_pair):
    from advsal.detection.hardening import harden_detector

    F, D, x, y = small_pair
    before = {k: v.clone() for k, v in D.state_dict().items()}
    hard = harden_detector(F, D, x, y, eps=0.1, rounds=2, steps=2, epochs=1, batch_size=12)
    assert hard.detector is not D and hard.detector.classifier is F
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in before.items())  # the given D is untouched
    assert any(not torch.equal(v, hard.detector.state_dict()[k]) for k, v in before.items())
    assert [r["mode"] for r in hard.rounds] == ["orthogonal", "combined"] and hard.rounds[1]["pool"] == 2 * len(x)


def test_pgd_adversarial_training_gives_a_robust_toy_classifier():
    from advsal.data import ImageSet
    from advsal.training import _pgd_linf, adversarial_train_classifier

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    # pixel 1: wide margin (0.2 vs 0.8); pixel 2: narrow (0.47 vs 0.53) — ε = 0.2 destroys only the second
    x = torch.stack([0.2 + 0.6 * y, 0.47 + 0.06 * y], 1).float().view(-1, 1, 1, 2)
    x = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    hist = adversarial_train_classifier(model, ImageSet(x, y, ["a", "b"]), eps=0.2, steps=5, lr=0.05,
                                        epochs=15, batch_size=50)
    assert len(hist.epochs) == 15 and not model.training
    assert all(p.requires_grad for p in model.parameters())
    xa = _pgd_linf(model, x, y, 0.2, 10, 0.05, g)
    assert float((model(xa).argmax(1) == y).float().mean()) >= 0.95


def test_a_detector_without_gradient_is_attacked_through_the_classifier_alone():
    class Constant(LinearD):
        def adversarial_logit(self, x):
            return torch.full((len(x),), -5.0)  # no graph to x

        def score(self, x, batch_size=256):
            return torch.full((len(x),), 0.1)

    x, y = _pixel(0.5, 0.5, 2), torch.zeros(2, dtype=torch.long)
    res = DetectorPGD(eps=0.15, mode="orthogonal", steps=10)(LinearF(), Constant(), x, y)
    assert bool(res.both.all())


# ------------------------------------------------------------------ the stronger attack's options
def test_kappa_d_aims_below_the_threshold_by_its_margin():
    """F cannot be fooled inside the ball (x₁ ≤ 0.5 < 0.6); D's logit 50·(x₂ − 0.4) can be pushed down to −5
    along x₂: the best point's detector logit lies κ_D below the threshold's logit (0 at τ = 0.5), not at it."""

    class SteepD(LinearD):
        def _logit(self, x):
            return 50 * (x.flatten(1)[:, 1] - 0.4)

    F, D = LinearF(), SteepD()
    x, y = _pixel(0.3, 0.5, 2), torch.zeros(2, dtype=torch.long)
    for kappa_d in (0.0, 1.0, 3.0):
        res = DetectorPGD(eps=0.2, mode="selective", steps=40, kappa=0.5, kappa_d=kappa_d, schedule="fixed")(F, D, x, y)
        logit = D._logit(res.x_adv)
        assert float(logit.max()) <= -kappa_d + 1e-4
        assert float((res.x_adv - x).abs().max()) <= 0.2 + 1e-6
        if kappa_d == 0.0:
            assert float(logit.max()) > -1.0  # without the margin it stops at the threshold
    with pytest.raises(ValueError, match="kappa_d"):
        DetectorPGD(eps=0.1, kappa_d=-1.0)


def test_normalized_direction_balances_the_two_gradients():
    g_f = torch.tensor([1000.0, 0.0]).view(1, 1, 1, 2)
    g_d = torch.tensor([0.0, -1.0]).view(1, 1, 1, 2)
    h = torch.ones(1)
    plain = DetectorPGD(eps=0.1, mode="selective")._direction(g_f, g_d, h, h)
    unit = DetectorPGD(eps=0.1, mode="selective", normalize=True, lam=2.0)._direction(g_f, g_d, h, h)
    assert torch.allclose(plain.flatten(), torch.tensor([1000.0, -1.0]))
    assert torch.allclose(unit.flatten(), torch.tensor([1.0, -2.0]))


def test_warm_restarts_start_near_the_best_point_and_cycle_the_surrogate(monkeypatch):
    F, D = LinearF(), LinearD()
    x, y = _pixel(0.5, 0.5, 2), torch.zeros(2, dtype=torch.long)  # ε = 0.05: never a success, 3 restarts run
    seen = []
    original = DetectorPGD._run_once

    def spy(self, model, detector, xs, ys, start, thr):
        out = original(self, model, detector, xs, ys, start, thr)
        seen.append((start.clone(), self._beta_now, out[0][0].clone()))
        return out

    monkeypatch.setattr(DetectorPGD, "_run_once", spy)
    attack = DetectorPGD(eps=0.05, mode="selective", steps=5, restarts=3, warm=True, beta=(10.0, 3.0))
    attack(F, D, x, y)
    assert [b for _, b, _ in seen] == [10.0, 3.0, 10.0]
    assert torch.equal(seen[0][0], x)
    best_after_first = seen[0][2]
    # restart 1 starts within ε/2 of restart 0's best point (a cold restart is anywhere in the ε-ball)
    assert float((seen[1][0] - best_after_first).abs().max()) <= 0.025 + 1e-6
    assert "warm" in attack.label and "beta10/3" in attack.label


def test_strongest_attack_members_are_distinct_and_verified(small_pair):
    F, D, x, y = small_pair
    ens = strongest_attack(0.1, steps=4, restarts=2, lams=[1.0])
    labels = [a.label for a in ens.attacks]
    assert len(set(labels)) == len(labels) == 5
    out = ens(F, D, x, y)
    exact = (F(out.x_adv).argmax(1) != y) & (D.score(out.x_adv) <= D.threshold)
    assert torch.equal(out.both, exact)
    assert float((out.x_adv - x).abs().max()) <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="modes"):
        strongest_attack(0.1, warm_modes=["sideways"])


def test_tramer_comparison_pairs_eps_with_half_eps_and_flags_claims_beyond_the_classifier():
    from advsal.report.detection import tramer_comparison

    sec = {"detectors": {"image+saliency-hardened": {"linf": {"eps": [0.1, 0.2], "robust_accuracy": [0.9, 0.95]}}},
           "hardening": {"pgd_trained": {"eps": [0.0, 0.05, 0.1, 0.2], "robust_accuracy": [0.99, 0.93, 0.6, 0.1]}}}
    text = tramer_comparison(sec)
    assert "ε 0.1: hardened D 0.90 vs PGD-trained F at ε/2 0.93" in text
    assert "ε 0.2: hardened D 0.95 vs PGD-trained F at ε/2 0.60" in text and "gradient masking" in text
    sec["detectors"]["image+saliency-hardened"]["linf"]["robust_accuracy"] = [0.9, 0.5]
    assert "consistent with Tramèr" in tramer_comparison(sec)
    del sec["hardening"]
    assert tramer_comparison(sec) == ""
