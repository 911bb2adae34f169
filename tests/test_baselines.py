"""The field's baseline detectors (LID, Mahalanobis, KD+BU, feature squeezing): their statistics against direct
computations, separation of a trivial case, chance on identical distributions, and the Detector protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import median_filter
from sklearn.neighbors import KernelDensity
from torch import nn

from advsal.detection import (
    FeatureSqueezingDetector,
    KDBUDetector,
    LIDDetector,
    MahalanobisDetector,
    auroc,
    baselines,
    lid_mle,
    median_smooth,
    reduce_bit_depth,
)
from advsal.detection.protocol import Detector


def tiny_net(seed: int = 0) -> nn.Module:
    """A small conv net on 1×8×8 images with seeded random weights (3 classes)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 3))
        with torch.no_grad():
            net[0].weight.mul_(3.0)
            net[5].weight.mul_(3.0)
            net[-1].weight.mul_(3.0)  # confident predictions, so squeezing can move the softmax
    return net.eval()


def blocks(n: int, noise: float, seed: int) -> torch.Tensor:
    """8×8 images of four random black/white 4×4 blocks plus uniform noise of amplitude ``noise``."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randint(0, 2, (n, 1, 2, 2), generator=g).float(), scale_factor=4)
    return (base + (2 * torch.rand(base.shape, generator=g) - 1) * noise).clamp(0, 1)


def steps(n: int, seed: int) -> torch.Tensor:
    """Binary 8×8 images that are 0 above (or left of) a random row (column) and 1 below (right of) it: fixed
    points of 1-bit reduction and of the 2×2 median, as feature squeezing assumes clean images nearly are."""
    g = torch.Generator().manual_seed(seed)
    cut = torch.randint(0, 9, (n, 1, 1, 1), generator=g)
    rows = (torch.arange(8).view(1, 1, 8, 1) >= cut).float().expand(n, 1, 8, 8)
    return torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.5, rows, rows.transpose(2, 3)).contiguous()


def flat_net(d: int = 4, classes: int = 3) -> nn.Module:
    """Flatten → Linear: layer "0" (and the last Linear's input) is the image itself as a vector."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).eval()


def gaussian_images(n: int, seed: int, d: int = 4, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional Gaussian "images" (N, 1, 1, d) with a shared correlated covariance, inside [0, 1]."""
    rng = np.random.default_rng(seed)
    means = 0.5 + 0.15 * rng.standard_normal((classes, d))
    a = 0.04 * rng.standard_normal((d, d))
    y = rng.integers(0, classes, n)
    x = np.clip(means[y] + rng.standard_normal((n, d)) @ a, 0, 1)
    return torch.tensor(x, dtype=torch.float32).view(n, 1, 1, d), torch.tensor(y)


FAST = {"cv": None}  # a plain logistic regression: LogisticRegressionCV costs seconds per fit on two cores


def make(name: str, model: nn.Module):
    if name == "lid":
        return LIDDetector(model)
    if name == "mahalanobis":
        return MahalanobisDetector(model)
    if name == "kdbu":
        return KDBUDetector(model, bandwidth=0.1, mc_samples=20)  # the tiny net's features are ~0.5 apart
    return FeatureSqueezingDetector(model)


NAMES = ["lid", "mahalanobis", "kdbu", "squeezing"]


# -- the statistics against direct computations --

def test_lid_estimates_the_dimension_of_a_plane_in_20d():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((20, 6)))[0]
    for dim in (2, 6):
        pts = torch.tensor(rng.uniform(-1, 1, (1000, dim)) @ basis[:, :dim].T)
        lid = lid_mle(pts[:200], pts[200:], k=20)
        assert abs(float(lid.median()) - dim) < 0.2 * dim, (dim, float(lid.median()))
    # a query inside the reference leaves itself out (else r_1 = 0 and the estimate collapses to 0)
    own = lid_mle(pts[:300], pts[:300], k=20, exclude=torch.arange(300))
    assert abs(float(own.median()) - 6) < 1.2


def test_mahalanobis_scores_match_numpy():
    x, y = gaussian_images(300, seed=1)
    xt, _ = gaussian_images(50, seed=2)
    f, ft = x.view(300, -1).double().numpy(), xt.view(50, -1).double().numpy()
    yn = y.numpy()
    means = np.stack([f[yn == c].mean(0) for c in range(3)])
    centred = f - means[yn]
    precision = np.linalg.pinv(centred.T @ centred / len(f))

    def score(v):
        diff = v[:, None, :] - means[None]
        return (-np.einsum("ncd,de,nce->nc", diff, precision, diff)).max(1), diff

    det = MahalanobisDetector(flat_net(), layers=["0"]).fit(x, xt, y_clean=y, **FAST)
    expected, diff = score(ft)
    np.testing.assert_allclose(det.statistics(xt)[:, 0].numpy(), expected, rtol=1e-7)

    eps = 0.01  # Eq. 4: step against the gradient of the closest class's distance, 2Σ⁻¹(f − μ_ĉ)
    closest = np.einsum("ncd,de,nce->nc", diff, precision, diff).argmin(1)
    grad = 2 * (ft - means[closest]) @ precision
    moved = np.clip(ft - eps * np.where(grad >= 0, 1.0, -1.0), 0, 1)
    det.noise = eps
    np.testing.assert_allclose(det.statistics(xt)[:, 0].numpy(), score(moved)[0], rtol=1e-5)


def test_squeezers_match_hand_computed_outputs_and_scipy():
    img = torch.tensor([[0.1, 0.6, 0.4], [0.5, 0.9, 0.2], [0.7, 0.3, 0.8]]).view(1, 1, 3, 3)
    assert reduce_bit_depth(img, 1).view(3, 3).tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 1]]  # 0.5 → 0 (even)
    assert torch.allclose(reduce_bit_depth(img, 2), torch.round(img * 3) / 3)
    expected = torch.tensor([[0.1, 0.6, 0.6], [0.5, 0.6, 0.6], [0.7, 0.7, 0.8]])  # upper median of the 2×2
    assert torch.allclose(median_smooth(img, 2).view(3, 3), expected)           # window up-left of each pixel
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    for size in (2, 3):
        ref = median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
        assert np.allclose(median_smooth(x, size).numpy(), ref), size

    model = tiny_net()
    det = FeatureSqueezingDetector(model)
    xb = blocks(5, 0.3, seed=3)
    with torch.no_grad():
        p = [F.softmax(model(v), 1) for v in (xb, reduce_bit_depth(xb, 1), median_smooth(xb, 2))]
    l1 = torch.stack([(p[1] - p[0]).abs().sum(1), (p[2] - p[0]).abs().sum(1)], 1)
    assert torch.allclose(det.score(xb), 0.5 * l1.max(1).values, atol=1e-6)


def test_kde_matches_sklearn_kernel_density():
    x, y = gaussian_images(200, seed=4)
    xt, _ = gaussian_images(40, seed=5)
    h = 0.1
    det = KDBUDetector(flat_net(), bandwidth=h, mc_samples=8).fit(x, xt, y_clean=y, **FAST)
    with torch.no_grad():
        predicted = flat_net()(xt).argmax(1).numpy()
    f, ft = x.view(200, -1).double().numpy(), xt.view(40, -1).double().numpy()
    kdes = [KernelDensity(kernel="gaussian", bandwidth=h).fit(f[y.numpy() == c]) for c in range(3)]
    expected = [kdes[c].score_samples(ft[i:i + 1])[0] for i, c in enumerate(predicted)]
    stats = det.statistics(xt)
    np.testing.assert_allclose(stats[:, 0].numpy(), expected, rtol=1e-7)
    assert (stats[:, 1] >= 0).all() and (stats[:, 1] > 0).any()  # MC-dropout variance via the hook
    assert torch.equal(stats, det.statistics(xt))  # seeded masks: deterministic


# -- behaviour on synthetic detection problems --

@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(1)
    return {"model": tiny_net(), "clean": [blocks(200, 0.1, seed=s) for s in (10, 11, 12, 13)],
            "steps": [steps(200, seed=s) for s in (30, 31, 32, 33)],
            "adv": [torch.rand(200, 1, 8, 8, generator=g) for _ in range(2)]}  # off the clean manifold


@pytest.mark.parametrize("name", NAMES)
def test_detector_separates_a_trivial_case_and_is_at_chance_on_identical_data(problem, name):
    clean, adv = problem["steps" if name == "squeezing" else "clean"], problem["adv"]
    det = make(name, problem["model"]).fit(clean[0], adv[0], **FAST)
    assert det.is_fitted
    s_clean, s_adv = det.score(clean[1]), det.score(adv[1])
    assert ((s_clean >= 0) & (s_clean <= 1)).all() and ((s_adv >= 0) & (s_adv <= 1)).all()
    labels = torch.cat([torch.zeros(200), torch.ones(200)])
    assert auroc(torch.cat([s_clean, s_adv]), labels) > 0.9

    same = make(name, problem["model"]).fit(clean[0], clean[2], **FAST)  # "adversarial" = more clean images
    a = auroc(torch.cat([same.score(clean[1]), same.score(clean[3])]), labels)
    assert 0.35 < a < 0.65, a


@pytest.mark.parametrize("name", NAMES)
def test_detector_meets_the_protocol(problem, name):
    det = make(name, problem["model"])
    assert isinstance(det, Detector)
    assert not det.is_fitted
    json.dumps(det.params())
    x = problem["clean"][0][:120]
    det.fit(x, problem["adv"][0][:120], **({} if name == "lid" else FAST))  # LID: with cross-validation
    t = det.calibrate(problem["clean"][1][:100], fpr=0.1)
    assert det.threshold == t and int(det.predict(problem["clean"][1][:100]).sum()) <= 10
    p = det.score(x[:10]).double()
    z = det.adversarial_logit(x[:10])
    assert torch.allclose(torch.sigmoid(z.detach()).cpu(), p, atol=1e-5)
    if det.differentiable:
        xg = x[:10].clone().requires_grad_(True)
        det.adversarial_logit(xg).sum().backward()
        assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_lid_scores_do_not_depend_on_the_test_batch(problem):
    det = LIDDetector(problem["model"], k=10, minibatch=50).fit(problem["clean"][0], problem["adv"][0], **FAST)
    x = problem["adv"][1][:20]
    assert len(det.reference_[0]) == 49
    assert torch.allclose(det.score(x)[:5], det.score(x[:5]), atol=1e-6)


def test_errors_name_the_fix(problem):
    model = problem["model"]
    with pytest.raises(ValueError, match="unknown layer"):
        LIDDetector(model, layers=["nope"]).fit(problem["clean"][0], problem["adv"][0])
    with pytest.raises(RuntimeError, match="fit"):
        MahalanobisDetector(model).score(problem["clean"][0])
    with pytest.raises(ValueError, match="dropout"):
        KDBUDetector(model, dropout=1.5).fit(problem["clean"][0], problem["adv"][0])
    with pytest.raises(ValueError, match="squeezer"):
        FeatureSqueezingDetector(model, bit_depth=None, median_size=None).score(problem["clean"][0])


def test_kdbu_uses_the_classifier_dropout_and_restores_its_mode(monkeypatch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.train()  # the caller's mode must survive
    x = blocks(60, 0.1, seed=40)
    det = KDBUDetector(model, bandwidth=0.5, mc_samples=10)
    z, logits, probs = det.forward_mc(x[:5])
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        model.eval()
        assert torch.allclose(logits, model(x[:5]))  # the deterministic pass runs in eval mode
    assert probs.shape == (10, 5, 3) and (det.uncertainty(probs) > 0).all()
    monkeypatch.setattr(baselines, "_MC_ROWS", 12)  # two replicas per pass: five passes of 10 images
    assert det.forward_mc(x[:5])[2].shape == (10, 5, 3)
    det.fit(x[:40], blocks(30, 0.45, seed=41), cv=None)  # unpaired sets (different lengths)
    assert torch.equal(det.statistics(x[40:]), det.statistics(x[40:]))


def test_lid_fits_unpaired_sets(problem):
    det = LIDDetector(problem["model"], k=5, minibatch=40).fit(problem["clean"][0][:100], problem["adv"][0][:70],
                                                                cv=None)
    assert det.layers_ == ["1", "3", "6", "logits"]
    assert torch.isfinite(det.statistics(problem["clean"][1][:10])).all()


@pytest.mark.parametrize("name", ["lid", "mahalanobis", "kdbu"])
def test_adversarial_logit_gradient_matches_finite_differences(name):
    x, y = gaussian_images(120, seed=6)
    x, y = x.double(), y
    model = flat_net().double()
    det = {"lid": LIDDetector(model, layers=["0", "logits"], k=10, minibatch=40),
           "mahalanobis": MahalanobisDetector(model, layers=["0"], noise=0.01),
           "kdbu": KDBUDetector(model, bandwidth=0.2, mc_samples=5)}[name]
    det.fit(x[:80], (x[:80] + 0.05).clamp(0, 1), y_clean=y[:80], cv=None)
    xt = x[80:84].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(det.adversarial_logit, (xt,), eps=1e-6, atol=1e-5)
