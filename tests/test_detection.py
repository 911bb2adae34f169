"""Detection metrics, detectors (saliency, feature-map, N+1) and adaptive attacks on classifier + detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from advsal.attacks.adaptive import (
    AdaptiveAttack,
    AdaptiveResult,
    AdaptiveSaliencyAttack,
    MetzenAttack,
    attack_detector_pair,
    evaluate_pair,
    saliency_path_gradient,
    softplus_relus,
)
from advsal.attacks.base import Attack
from advsal.attacks.gradient import BIM
from advsal.detection import (
    Detector,
    DetectorHistory,
    FeatureDetector,
    NetworkDetector,
    NPlusOneDetector,
    SaliencyDetector,
    SaliencyInputDetector,
    auroc,
    detection_rates,
    pooled,
    roc_curve,
    threshold_at_fpr,
    tpr_at_fpr,
)
from advsal.models import build_model

# ------------------------------------------------------------------------------------------------- metrics
CLEAN = [0.1, 0.4, 0.4, 0.8]
ADV = [0.4, 0.9, 0.8]


def test_auroc_counts_ties_as_half():
    # pairs (adv > clean) + ½ (adv = clean): 0.4 → 1 + ½ + ½; 0.9 → 4; 0.8 → 3 + ½  → 9.5 of 12
    assert auroc(*pooled(CLEAN, ADV)) == pytest.approx(9.5 / 12)
    assert auroc(*pooled(torch.tensor(ADV), torch.tensor(CLEAN))) == pytest.approx(2.5 / 12)


def test_roc_curve_points_and_area():
    fpr, tpr, thr = roc_curve(*pooled(CLEAN, ADV))
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.4, 0.1, -np.inf])
    np.testing.assert_allclose(fpr, [0, 0, 0.25, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(*pooled(CLEAN, ADV)))


def test_auroc_matches_sklearn_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)
    labels = (rng.random(300) < 0.4 + 0.1 * scores / 5).astype(int)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_threshold_and_tpr_at_fpr():
    clean = np.arange(1, 11) / 10          # 0.1 … 1.0
    adv = [0.95, 0.85, 0.5, 1.0]
    scores, labels = pooled(clean, adv)
    assert threshold_at_fpr(clean, 0.1) == pytest.approx(0.9)   # one false positive allowed: only 1.0 > 0.9
    assert tpr_at_fpr(scores, labels, 0.1) == pytest.approx(0.5)  # 0.95 and 1.0 exceed 0.9
    assert tpr_at_fpr(scores, labels, 0.0) == 0.0                # nothing exceeds the top clean score 1.0
    assert tpr_at_fpr(scores, labels, 0.35) == pytest.approx(0.75)  # threshold 0.7
    # ties among clean scores: the realised false-positive rate never exceeds the requested one
    t = threshold_at_fpr([0.5, 0.5, 0.5, 0.1], 0.5)
    assert t == 0.5 and (np.array([0.5, 0.5, 0.5, 0.1]) > t).mean() <= 0.5


def test_detection_rates_table_ii_quantities():
    r = detection_rates(torch.tensor([0.2, 0.6, 0.5]), np.array([0.7, 0.4]), threshold=0.5)
    assert r.clean_as_clean == pytest.approx(2 / 3)     # 0.5 is not above the threshold → clean
    assert r.adv_as_adv == pytest.approx(0.5)
    assert r.accuracy == pytest.approx(3 / 5)
    assert r.balanced_accuracy == pytest.approx((2 / 3 + 0.5) / 2)
    assert r.false_positive_rate == pytest.approx(1 / 3)
    assert r.to_dict()["n_clean"] == 3


def test_metric_input_errors():
    with pytest.raises(ValueError, match="both clean"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        roc_curve([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="fpr"):
        threshold_at_fpr([0.1], 1.5)


# ------------------------------------------------------------------------------------------- tiny classifiers
def tiny_classifier(seed: int = 0) -> nn.Module:
    """mnist-net layout on 8×8 grey images with 3 classes (ReLU network, random weights)."""
    return build_model("mnist-net", num_classes=3, in_channels=1, input_size=8, seed=seed).eval()


def synthetic(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, 1, 8, 8, generator=g)


@pytest.mark.parametrize("make", [
    lambda f: SaliencyDetector(f, arch="mnist-net"),
    lambda f: FeatureDetector(f, layer="features.1", width=(8, 16)),
])
def test_detector_separates_trivially_separable_sets(make):
    f = tiny_classifier()
    det = make(f)
    det.fit(synthetic(200, 0.0, 0.4, 1), synthetic(200, 0.6, 1.0, 2), epochs=3, lr=1e-3, batch_size=32)
    r = detection_rates(det.score(synthetic(100, 0.0, 0.4, 3)), det.score(synthetic(100, 0.6, 1.0, 4)))
    assert r.accuracy >= 0.95


def test_detector_is_at_chance_when_sets_are_identical():
    f = tiny_classifier()
    det = SaliencyDetector(f, arch="mnist-net")
    det.fit(synthetic(200, 0, 1, 1), synthetic(200, 0, 1, 2), epochs=3, lr=1e-3, batch_size=32)
    a = auroc(*pooled(det.score(synthetic(200, 0, 1, 3)), det.score(synthetic(200, 0, 1, 4))))
    assert abs(a - 0.5) < 0.12   # null std of the AUROC at 200 + 200 is ≈ 0.03


def test_fit_history_validation_and_calibration():
    f = tiny_classifier()
    det = SaliencyDetector(f, arch="mnist-net", input="saliency")
    assert det.history_ is None
    assert det.fit(synthetic(100, 0, 0.4, 1), synthetic(100, 0.6, 1, 2), epochs=2, lr=1e-3, batch_size=32,
                   val_fraction=0.2) is det
    h = det.history_
    assert [row["epoch"] for row in h.epochs] == [1, 2]
    assert h.n_train == (80, 80) and h.n_val == (20, 20)
    assert {"val_loss", "val_accuracy", "val_auroc"} <= set(h.final)
    assert det.features(synthetic(5, 0, 1, 0)).shape == (5, 1, 8, 8)   # saliency only
    clean = synthetic(50, 0, 1, 5)
    t = det.calibrate(clean, fpr=0.1)
    assert det.threshold == pytest.approx(t)
    assert det.predict(clean).float().mean() <= 0.1
    assert det.state_dict()["_threshold"] == pytest.approx(t)       # the threshold is saved with the weights


def test_precomputed_features_give_the_same_scores():
    f = tiny_classifier()
    det = SaliencyDetector(f, arch="mnist-net")
    xc, xa = synthetic(64, 0, 0.4, 1), synthetic(64, 0.6, 1, 2)
    det.fit_features(det.build_features(xc), det.build_features(xa), epochs=1, lr=1e-3, batch_size=32)
    x = synthetic(10, 0, 1, 3)
    feats = det.build_features(x)
    assert feats.shape == (10, 2, 8, 8)
    torch.testing.assert_close(feats[:, :1], x)
    torch.testing.assert_close(det.score(x), det.score_features(feats))
    torch.testing.assert_close(det.score(x), torch.sigmoid(det(x)).detach())


def test_nplusone_score_is_softmax_of_extra_class():
    f = tiny_classifier()
    det = NPlusOneDetector(f)
    x = synthetic(6, 0, 1, 0)
    with torch.no_grad():
        out = det.net(x)
        torch.testing.assert_close(out[:, :3], f(x))                  # starts from F's weights
        torch.testing.assert_close(det.score(x), torch.softmax(out, 1)[:, 3])
    det.fit(synthetic(60, 0, 1, 1), synthetic(60, 0, 1, 2), y_clean=torch.randint(0, 3, (60,)), epochs=1,
            batch_size=32)
    with pytest.raises(ValueError, match="y_clean"):
        det.fit(synthetic(4, 0, 1, 1), synthetic(4, 0, 1, 2), y_clean=torch.tensor([0, 1, 2, 3]), epochs=1)


def test_classifier_untouched_and_hooks_removed():
    f = tiny_classifier()
    f.train()
    f.features[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in f.state_dict().items()}
    flags = [p.requires_grad for p in f.parameters()]
    xc, xa = synthetic(40, 0, 0.4, 1), synthetic(40, 0.6, 1, 2)
    dets = [SaliencyDetector(f, arch="mnist-net"), FeatureDetector(f, width=(4, 8)), NPlusOneDetector(f)]
    for det in dets:
        det.fit(xc, xa, epochs=1, lr=1e-3, batch_size=16)
        det.score(xc)
        assert not any(k.startswith("classifier") for k in det.state_dict())  # F is referenced, not owned
    MetzenAttack(eps=0.1, steps=2, sigma=0.5)(f, dets[1], xc[:4])
    AdaptiveSaliencyAttack(eps=0.1, steps=2)(f, dets[0], xc[:4])
    saliency_path_gradient(f, dets[0], xc[:4])
    assert f.training and all(m.training for m in f.modules())
    assert [p.requires_grad for p in f.parameters()] == flags
    for k, v in f.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(not m._forward_hooks for m in f.modules())
    with pytest.raises(ValueError, match="channels"):
        dets[1].features(torch.rand(2, 3, 8, 8))           # the forward pass raises: the hook must still go
    assert all(not m._forward_hooks for m in f.modules())
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureDetector(f, layer="features.99")


DETECTORS = {
    "saliency": lambda f: SaliencyDetector(f, arch="mnist-net", saliency_target=1),
    "image": lambda f: SaliencyDetector(f, arch="mnist-net", input="image"),
    "feature": lambda f: FeatureDetector(f, width=(4, 8)),
    "nplusone": lambda f: NPlusOneDetector(f, seed=3),
}


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_network_detectors_meet_the_protocol(kind):
    import json

    f = tiny_classifier()
    det = DETECTORS[kind](f)
    assert isinstance(det, NetworkDetector) and isinstance(det, Detector) and det.differentiable
    assert not det.is_fitted and det.history_ is None
    xc, xa = synthetic(32, 0, 0.4, 1), synthetic(32, 0.6, 1, 2)
    assert det.fit(xc, xa, epochs=1, lr=1e-3, batch_size=16) is det
    assert det.is_fitted and isinstance(det.history_, DetectorHistory) and len(det.history_.epochs) == 1
    assert isinstance(det, Detector)
    assert isinstance(det, SaliencyInputDetector) == (kind in ("saliency", "image"))
    params = det.params()
    assert json.loads(json.dumps(params)) == params and "classifier" not in params
    assert type(det)(f, **params).params() == params                  # the parameters rebuild the detector
    x = synthetic(5, 0, 1, 3)
    z = det.adversarial_logit(x)                                     # images in, one logit per image out
    assert z.shape == (5,)
    torch.testing.assert_close(z, det.logit_from_features(det.features(x)))
    torch.testing.assert_close(torch.sigmoid(z).detach(), det.score(x))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(det.adversarial_logit(xg).sum(), xg)  # differentiable w.r.t. the images
    assert grad.abs().sum() > 0
    # a stored detector loaded into a fresh one counts as fitted
    fresh = type(det)(f, **params)
    fresh.build(tuple(det.features(x).shape[1:]))
    assert not fresh.is_fitted
    fresh.load_state_dict(det.state_dict())
    assert fresh.is_fitted
    torch.testing.assert_close(fresh.score(x), det.score(x))


def test_saliency_detector_protocol_members():
    f = tiny_classifier()
    det = SaliencyDetector(f, arch="mnist-net")
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert det.saliency_target_for(logits).tolist() == [1, 0] and det.uses_saliency
    fixed = SaliencyDetector(f, arch="mnist-net", saliency_target=2)
    assert fixed.saliency_target_for(logits).tolist() == [2, 2]
    assert not SaliencyDetector(f, input="image").uses_saliency
    x = synthetic(3, 0, 1, 0)
    torch.testing.assert_close(det.assemble(x, det.saliency(x)), det.features(x))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(det.features(xg)[:, 1:].sum(), xg)
    assert torch.count_nonzero(g) == 0                                # the saliency channels are detached


class ProtocolOnly:
    """A detector that exposes the protocol and nothing else (not an nn.Module, no net/input/features)."""

    differentiable = True

    def __init__(self, inner):
        self._inner = inner
        self.threshold = inner.threshold

    @property
    def is_fitted(self):
        return self._inner.is_fitted

    def params(self):
        return self._inner.params()

    def fit(self, x_clean, x_adv, **options):
        self._inner.fit(x_clean, x_adv, **options)
        return self

    def score(self, x, batch_size=256):
        return self._inner.score(x)

    def adversarial_logit(self, x):
        return self._inner.adversarial_logit(x)

    def predict(self, x, batch_size=256):
        return self._inner.predict(x)

    def calibrate(self, x_clean, fpr=0.05):
        return self._inner.calibrate(x_clean, fpr)


def test_adaptive_attacks_need_only_the_protocol():
    f = tiny_classifier()
    det = FeatureDetector(f, width=(4, 8)).fit(synthetic(32, 0, 0.4, 1), synthetic(32, 0.6, 1, 2), epochs=1,
                                               lr=1e-3, batch_size=16)
    bare = ProtocolOnly(det)
    assert isinstance(bare, Detector) and not isinstance(bare, SaliencyInputDetector)
    x = synthetic(6, 0, 1, 4)
    for attack in (MetzenAttack(eps=0.1, steps=3, sigma=0.5), AdaptiveSaliencyAttack(eps=0.1, steps=3)):
        assert isinstance(attack, AdaptiveAttack) and not isinstance(attack, Attack)
        torch.testing.assert_close(attack(f, bare, x).x_adv, attack(f, det, x).x_adv)
    with pytest.raises(ValueError, match="protocol"):
        MetzenAttack(eps=0.1)(f, object(), x)


def test_untrained_detector_errors():
    det = SaliencyDetector(tiny_classifier())
    with pytest.raises(RuntimeError, match="fit"):
        det.score(synthetic(2, 0, 1, 0))
    with pytest.raises(ValueError, match="not trained"):
        MetzenAttack(eps=0.1)(tiny_classifier(), det, synthetic(2, 0, 1, 0))
    with pytest.raises(ValueError, match="input"):
        SaliencyDetector(tiny_classifier(), input="pixels")


# --------------------------------------------------------------------------------- surrogate and its gradient
def test_softplus_relus_replace_module_and_functional_relus():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.5]]))
        lin.bias.zero_()
    z = torch.tensor([[0.3, 0.8]])                                   # pre-activations -0.5, 0.55
    expected = F.softplus(lin(z), beta=4.0)
    for act in (nn.ReLU(), nn.ReLU(inplace=True)):
        net = nn.Sequential(lin, act)
        with softplus_relus(4.0) as mode:
            torch.testing.assert_close(net(z), expected)
        assert mode.replaced == 1
        assert net(z)[0, 0] == 0                                      # the real ReLU again outside the block
    with softplus_relus(4.0):
        torch.testing.assert_close(torch.relu(lin(z)), expected)


def test_saliency_path_gradient_zero_on_relu_net_nonzero_with_surrogate():
    f = tiny_classifier()
    det = SaliencyDetector(f, arch="mnist-net")
    det.build((2, 8, 8), seed=0)
    x = synthetic(8, 0, 1, 7)
    exact = saliency_path_gradient(f, det, x, beta=None)
    smooth = saliency_path_gradient(f, det, x, beta=10.0)
    assert exact.shape == x.shape and torch.count_nonzero(exact) == 0
    assert smooth.abs().sum() > 0 and torch.isfinite(smooth).all()
    image_only = SaliencyDetector(f, arch="mnist-net", input="image")
    image_only.build((1, 8, 8))
    assert torch.count_nonzero(saliency_path_gradient(f, image_only, x)) == 0


# -------------------------------------------------------------------------------- attacks on mnist fixtures
def test_metzen_sigma_zero_equals_bim(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:20], mnist_batch[1][:20]
    det = SaliencyDetector(mnist_model)
    det.build((2, 28, 28))
    det.load_state_dict(det.state_dict())                            # loaded weights count as fitted
    metzen = MetzenAttack(eps=0.15, alpha=0.03, steps=5, sigma=0.0)(mnist_model, det, x, y)
    bim = BIM(eps=0.15, alpha=0.03, steps=5)(mnist_model, x, y)
    assert isinstance(metzen, AdaptiveResult)
    assert torch.equal(metzen.x_adv, bim.x_adv)
    assert metzen.linf.max() > 0.1 and metzen.fooled_f.float().mean() > 0.3
    mixed = MetzenAttack(eps=0.15, alpha=0.03, steps=5, sigma=0.5)(mnist_model, det, x, y)
    assert not torch.equal(mixed.x_adv, bim.x_adv)


@pytest.fixture(scope="module")
def trained_saliency_detector(mnist5k, mnist_model):
    train, _ = mnist5k
    x, y = train.x[:256], train.y[:256]
    x_adv = BIM(eps=0.2, steps=5)(mnist_model, x, y).x_adv
    det = SaliencyDetector(mnist_model)
    det.fit(x, x_adv, epochs=2, lr=1e-3, batch_size=32, seed=0)
    return det


def test_adaptive_attack_beats_plain_attack_on_saliency_detector(mnist_model, mnist_batch,
                                                                 trained_saliency_detector):
    det = trained_saliency_detector
    x, y = mnist_batch[0][:30], mnist_batch[1][:30]
    plain = attack_detector_pair(BIM(eps=0.2, steps=5), mnist_model, det, x, y)
    assert plain.fooled_f.float().mean() > 0.5
    assert plain.evaded_d.float().mean() < 0.3                        # the detector works on the plain attack
    assert auroc(*pooled(det.score(x), plain.detector_score)) > 0.9
    adaptive = AdaptiveSaliencyAttack(eps=0.2, alpha=0.02, steps=15)(mnist_model, det, x, y)
    assert adaptive.both.float().mean() > plain.both.float().mean() + 0.1
    assert torch.equal(adaptive.both, adaptive.fooled_f & adaptive.evaded_d)
    assert torch.equal(adaptive.success, adaptive.both)
    assert adaptive.linf.max() <= 0.2 + 1e-6 and adaptive.x_adv.min() >= 0 and adaptive.x_adv.max() <= 1
    again = evaluate_pair(mnist_model, det, x, adaptive.x_adv, y)      # the reported flags are the real ones
    assert torch.equal(again.both, adaptive.both)
