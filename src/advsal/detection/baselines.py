"""The detectors the field compares against, each on the ``Detector`` protocol (``protocol.py``):

- ``LIDDetector`` — Ma et al., ICLR 2018: local intrinsic dimensionality of each layer's activations;
- ``MahalanobisDetector`` — Lee et al., NeurIPS 2018: class-conditional Gaussians with a tied covariance;
- ``KDBUDetector`` — Feinman et al., 2017: kernel density on the last hidden layer + MC-dropout uncertainty;
- ``FeatureSqueezingDetector`` (``squeezing.py``) — Xu et al., NDSS 2018.

The first three combine their per-layer statistics with a standardised logistic regression
(``_statistic.StatisticDetector``); their statistics are computed in torch, so ``adversarial_logit`` is
differentiable w.r.t. the input and adaptive attacks can use the exact gradient::

    det = LIDDetector(model).fit(x_clean, x_adv)     # x_adv[i] crafted from x_clean[i]
    det.calibrate(x_clean_heldout, fpr=0.05)
    p = det.score(x_test)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..progress import Bar
from ..tensors import check_labels, frozen
from ._statistic import (
    StatisticDetector,
    activation_layers,
    check_layers,
    check_positive,
)
from .squeezing import FeatureSqueezingDetector, median_smooth, reduce_bit_depth

_TINY = 1e-24


def squared_distances(q: Tensor, r: Tensor) -> Tensor:
    """Squared Euclidean distances (N, M) between the rows of ``q`` (N, D) and ``r`` (M, D), float64,
    differentiable (no square root, so no infinite gradient at zero distance)."""
    q, r = q.double(), r.double()
    d2 = (q * q).sum(1, keepdim=True) + (r * r).sum(1) - 2.0 * q @ r.T
    return d2.clamp(min=0.0)


def _exclusion_mask(n: int, m: int, exclude: Tensor | None, device: torch.device) -> Tensor | None:
    if exclude is None:
        return None
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)
    ok = exclude >= 0
    mask[rows[ok], exclude.to(device)[ok]] = True
    return mask


def lid_mle(queries: Tensor, reference: Tensor, k: int = 20, exclude: Tensor | None = None) -> Tensor:
    """Maximum-likelihood LID estimate of each query against a reference batch (Ma et al. 2018, Eq. 4):

        LID(x) = −( (1/k) Σ_{i=1..k} log(r_i(x) / r_k(x)) )⁻¹,

    r_i(x) the distance (L2 on flattened rows) from x to its i-th nearest neighbour in ``reference``.
    ``exclude[n]`` (an index into ``reference``, −1 for none) removes one reference point from query n's
    neighbours — the query itself when it belongs to the reference, as in the paper's minibatch estimate.
    ``k`` is capped at the number of candidates (the paper's ``min(k, len(batch) − 1)``). Returns (N,) float64;
    differentiable w.r.t. both inputs.
    """
    check_positive(k, "k", integer=True)
    q, r = queries.flatten(1), reference.flatten(1)
    if q.shape[1] != r.shape[1]:
        raise InputError(f"queries and reference have different feature sizes: {q.shape[1]} and {r.shape[1]}")
    d2 = squared_distances(q, r)
    mask = _exclusion_mask(len(q), len(r), exclude, d2.device)
    candidates = len(r) - (1 if exclude is not None and bool((exclude >= 0).any()) else 0)
    kk = min(int(k), candidates)
    if kk < 2:
        raise InputError(f"LID needs at least 2 neighbours per point, the reference has {len(r)}; use a bigger "
                         "reference batch")
    if mask is not None:
        d2 = d2.masked_fill(mask, math.inf)
    nearest = d2.topk(kk, dim=1, largest=False).values  # ascending: r_1² … r_k²
    log_r = 0.5 * torch.log(nearest.clamp(min=_TINY))
    total = (log_r - log_r[:, -1:]).sum(1)  # Σ log(r_i / r_k) ≤ 0
    return -kk / total.clamp(max=-1e-12)


def _flat(act: Tensor) -> Tensor:
    return act.flatten(1)


def _pooled(act: Tensor) -> Tensor:
    """Global average pooling of (N, K, h, w) feature maps (Lee et al. §2.2); other shapes are flattened."""
    return act.mean(dim=(2, 3)) if act.dim() == 4 else act.flatten(1)


class LIDDetector(StatisticDetector):
    """Ma et al., "Characterizing adversarial subspaces using local intrinsic dimensionality", ICLR 2018.

    Per layer ℓ, the LID of an input's activations (flattened) is the MLE of Eq. 4 (``lid_mle``) over its k
    nearest neighbours in a minibatch of clean activations (§4, Algorithm 1: k = 20 and minibatch 100 for
    MNIST); a logistic regression on the per-layer LIDs (standardised) gives the adversarial probability.

    Fitting follows Algorithm 1: ``x_clean`` is cut into minibatches of ``minibatch`` images (in a seeded random
    order); each clean image's LID is estimated against the other clean images of its minibatch, and each
    adversarial image's against the same clean minibatch — without its own clean source image when x_clean and
    x_adv are paired (same length), so the training statistic matches the test-time one. At test time every
    input's LID is estimated against a fixed reference minibatch of ``minibatch − 1`` clean training activations
    (``reference_``), as the paper's code does with a batch of clean images, so scores do not depend on the
    test batch.

    Parameters: ``layers`` — names from ``classifier.named_modules()`` (``"logits"`` = the output); default
    every activation module (nn.ReLU, …) and the logits, as the paper uses every layer's output. ``k`` — the
    number of neighbours. ``minibatch`` — the minibatch size of Algorithm 1.
    """

    _param_names = ("layers", "k", "minibatch")

    def __init__(self, classifier: nn.Module, layers: Sequence[str] | None = None, k: int = 20,
                 minibatch: int = 100):
        super().__init__(classifier)
        self.layers = None if layers is None else list(layers)
        self.k = k
        self.minibatch = minibatch

    def _layer_names(self) -> list[str]:
        if self.layers is None:
            return activation_layers(self.classifier, logits=True)
        return check_layers(self.classifier, self.layers)

    def _flat_activations(self, x: Tensor, layers: list[str]) -> list[Tensor]:
        acts = self._activations(x, layers)
        return [_flat(acts[n]) for n in layers]

    def _fit_statistics(self, x_clean, x_adv, y_clean, batch_size, seed):
        check_positive(self.k, "k", integer=True)
        check_positive(self.minibatch, "minibatch", integer=True)
        if self.minibatch < 3:
            raise InputError(f"minibatch must be at least 3 (LID needs 2 neighbours), got {self.minibatch}")
        layers = self._layer_names()
        paired = len(x_clean) == len(x_adv)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(x_clean), generator=gen)
        batches = [perm[i:i + self.minibatch] for i in range(0, len(perm), self.minibatch)]
        if len(batches) > 1 and len(batches[-1]) < 3:  # too small for an estimate: join the previous one
            batches[-2] = torch.cat([batches[-2], batches.pop()])
        if paired:
            adv_batches = batches
        else:
            adv_perm = torch.randperm(len(x_adv), generator=gen)
            adv_batches = [adv_perm[i:i + self.minibatch] for i in range(0, len(adv_perm), self.minibatch)]
        s_clean = torch.empty(len(x_clean), len(layers), dtype=torch.float64, device=self.device)
        s_adv = torch.empty(len(x_adv), len(layers), dtype=torch.float64, device=self.device)
        rounds = max(len(batches), len(adv_batches))
        with Bar("fit LIDDetector", rounds) as bar:
            for j in range(rounds):
                idx_c = batches[j % len(batches)]
                clean = self._flat_activations(x_clean[idx_c], layers)
                own = torch.arange(len(idx_c))
                for li, c in enumerate(clean):
                    if j < len(batches):
                        s_clean[idx_c.to(self.device), li] = lid_mle(c, c, self.k, exclude=own)
                if j < len(adv_batches):
                    idx_a = adv_batches[j]
                    adv = self._flat_activations(x_adv[idx_a], layers)
                    for li, (c, a) in enumerate(zip(clean, adv, strict=True)):
                        s_adv[idx_a.to(self.device), li] = lid_mle(a, c, self.k, exclude=own if paired else None)
                bar.update()
        ref = perm[: self.minibatch - 1]
        self.layers_ = layers
        self.reference_ = [a.detach() for a in self._flat_activations(x_clean[ref], layers)]
        return s_clean, s_adv

    def statistics(self, x: Tensor) -> Tensor:
        """Per-layer LID of each input against the clean reference minibatch, (N, layers), float64."""
        if not hasattr(self, "reference_"):
            raise RuntimeError("LIDDetector is not fitted yet: call fit(x_clean, x_adv) first")
        acts = self._flat_activations(x, self.layers_)
        return torch.stack([lid_mle(a, r.to(a.device), self.k) for a, r in zip(acts, self.reference_,
                                                                                 strict=True)], 1)


class MahalanobisDetector(StatisticDetector):
    """Lee et al., "A simple unified framework for detecting out-of-distribution samples and adversarial
    attacks", NeurIPS 2018.

    Per layer ℓ, the (global-average-pooled) features f_ℓ(x) get class-conditional Gaussians with class means
    μ_c and one tied covariance Σ estimated from clean training images and their labels (Eq. 1); the
    confidence score is M_ℓ(x) = max_c −(f_ℓ(x) − μ_c)ᵀ Σ⁻¹ (f_ℓ(x) − μ_c) (Eq. 2). With ``noise`` ε > 0 the
    input is first pre-processed per layer as in Eq. 4, x̂ = x + ε·sign(∇ₓ M_ℓ(x)) = x − ε·sign(∇ₓ of the
    distance to the closest class) (clipped to [0, 1]; a zero gradient counts as +, as in the paper's code),
    and M_ℓ(x̂) is the layer's statistic. A logistic regression over the layers' scores ("feature ensemble",
    §2.2, Algorithm 1) gives the adversarial probability.

    Parameters: ``layers`` — names from ``classifier.named_modules()``; default every activation module (for
    mnist-net: the four conv ReLUs and the hidden dense ReLU), the analogue of the paper's end-of-block
    features. ``noise`` — ε in pixel units; the paper tunes it over {0, 0.0005, 0.001, 0.0014, 0.002, 0.005,
    0.01} on validation data (default 0: no pre-processing).

    ``fit`` options: ``y_clean`` — true labels of ``x_clean`` for the class means (default: the classifier's
    predictions). The Gaussians and the logistic regression are both fitted on ``x_clean`` (the paper uses the
    training set for the former and a validation split for the latter). Σ⁻¹ is the pseudo-inverse (as
    scikit-learn's ``EmpiricalCovariance`` in the paper's code). Differentiable: sign(∇) is piecewise constant,
    so the exact gradient of x̂ w.r.t. x is the identity (inside [0, 1]).
    """

    _param_names = ("layers", "noise")

    def __init__(self, classifier: nn.Module, layers: Sequence[str] | None = None, noise: float = 0.0):
        super().__init__(classifier)
        self.layers = None if layers is None else list(layers)
        self.noise = noise

    def _layer_names(self) -> list[str]:
        if self.layers is None:
            return activation_layers(self.classifier)
        return check_layers(self.classifier, self.layers)

    def _fit_statistics(self, x_clean, x_adv, y_clean, batch_size, seed):
        if not isinstance(self.noise, (int, float)) or isinstance(self.noise, bool) or not self.noise >= 0:
            raise InputError(f"noise must be a non-negative number (pixel units), got {self.noise!r}")
        layers = self._layer_names()
        device = self.device
        if y_clean is None:
            y = self._predicted(x_clean, batch_size)
        else:
            check_labels(y_clean, len(x_clean), name="y_clean")
            y = y_clean.to(device).long()
        feats: list[list[Tensor]] = [[] for _ in layers]
        for i in range(0, len(x_clean), batch_size):
            acts = self._activations(x_clean[i:i + batch_size], layers)
            for li, n in enumerate(layers):
                feats[li].append(_pooled(acts[n]).double())
        classes = torch.unique(y)
        self.layers_ = layers
        self.classes_ = classes
        self.class_means_, self.precisions_ = [], []
        for f in (torch.cat(parts) for parts in feats):
            means = torch.stack([f[y == c].mean(0) for c in classes])
            centred = f - means[torch.searchsorted(classes, y)]
            cov = centred.T @ centred / len(f)
            self.class_means_.append(means)
            self.precisions_.append(torch.linalg.pinv(cov, hermitian=True))
        return self._batched(x_clean, batch_size), self._batched(x_adv, batch_size)

    def _batched(self, x: Tensor, batch_size: int) -> Tensor:
        return torch.cat([self.statistics(x[i:i + batch_size]).detach() for i in range(0, len(x), batch_size)])

    def confidences(self, features: Tensor, layer: int) -> Tensor:
        """−(f − μ_c)ᵀ Σ⁻¹ (f − μ_c) for every class c (N, classes), float64, for pooled features of the
        ``layer``-th fitted layer (Eq. 2 before the max)."""
        mu = self.class_means_[layer].to(features.device)
        prec = self.precisions_[layer].to(features.device)
        diff = features.double()[:, None, :] - mu[None]
        return -torch.einsum("ncd,de,nce->nc", diff, prec, diff)

    def _layer_score(self, x: Tensor, li: int) -> Tensor:
        name = self.layers_[li]
        if self.noise > 0:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                f = _pooled(self._activations(xg, [name])[name])
                distance = -self.confidences(f, li).max(1).values
                (grad,) = torch.autograd.grad(distance.sum(), xg)
            step = torch.where(grad >= 0, 1.0, -1.0).to(x.dtype)
            x = (x - self.noise * step).clamp(0.0, 1.0)
        f = _pooled(self._activations(x, [name])[name])
        return self.confidences(f, li).max(1).values

    def statistics(self, x: Tensor) -> Tensor:
        """Per-layer Mahalanobis confidence score M_ℓ (after the input pre-processing when ``noise`` > 0),
        (N, layers), float64."""
        if not hasattr(self, "precisions_"):
            raise RuntimeError("MahalanobisDetector is not fitted yet: call fit(x_clean, x_adv) first")
        x = x.to(self.device)
        if self.noise == 0:
            acts = self._activations(x, self.layers_)
            return torch.stack([self.confidences(_pooled(acts[n]), li).max(1).values
                                for li, n in enumerate(self.layers_)], 1)
        return torch.stack([self._layer_score(x, li) for li in range(len(self.layers_))], 1)


_MC_ROWS = 4096  # images per forward pass when the classifier's own dropout layers are sampled
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _last_linear(model: nn.Module) -> tuple[str, nn.Module]:
    linears = [(k, m) for k, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError("the classifier has no nn.Linear layer whose input is the last hidden layer; pass "
                         "layer=<name> (from classifier.named_modules()) for KDBUDetector's features")
    return linears[-1]


class KDBUDetector(StatisticDetector):
    """Feinman et al., "Detecting adversarial samples from artifacts", arXiv:1703.00410 (2017): kernel density
    (KD) and Bayesian uncertainty (BU) features combined by a logistic regression (§4.3 "combined").

    KD (§3.1, Eq. 1): a Gaussian kernel density of the last hidden layer's features z(x) over the clean
    training images of x's *predicted* class c, reported as its log-density exactly as the paper's code does
    (scikit-learn ``KernelDensity(kernel="gaussian", bandwidth=h).score_samples``):
    log KD(x) = logsumexp_i(−‖z(x) − z(x_i)‖² / 2h²) − log |X_c| − (D/2)·log(2πh²). The bandwidth h = 1.20 is
    the paper's MNIST value (0.26 CIFAR-10, 1.00 SVHN).

    BU (§3.2, Eq. 4): the variance of T stochastic (MC-dropout) predictions,
    U(x) = (1/T) Σ_t ŷ_tᵀŷ_t − (1/T Σ_t ŷ_t)ᵀ(1/T Σ_t ŷ_t), the sum over classes of the softmax variance (the
    paper's code takes the mean over classes, a constant factor). When the classifier has dropout layers they
    are switched on for the T passes; when it has none (e.g. mnist-net), dropout with p = ``dropout`` is applied
    at the last hidden layer through a forward hook — an approximation of a network trained with dropout there
    (the paper's MNIST model has dropout 0.5 before its last layer). The masks are drawn from a generator
    seeded with ``seed`` on every call, so a score is deterministic for a given batch.

    Parameters: ``bandwidth`` h; ``layer`` — the features' layer, by ``named_modules()`` name (its output);
    default the input of the classifier's last nn.Linear (the last hidden layer). ``mc_samples`` T (the paper's
    code uses 50); ``dropout`` p; ``seed``. ``fit`` option ``y_clean``: labels grouping the KDE's training
    images (the paper uses the true labels; default the classifier's predictions). The KDE is built on
    ``x_clean``; each fitting image leaves itself (and, when x_clean and x_adv are paired, each adversarial
    image its clean source) out of its own density, so the training statistics match test-time ones.
    Differentiable w.r.t. x (for a fixed dropout mask).
    """

    _param_names = ("bandwidth", "layer", "mc_samples", "dropout", "seed")

    def __init__(self, classifier: nn.Module, bandwidth: float = 1.20, layer: str | None = None,
                 mc_samples: int = 50, dropout: float = 0.5, seed: int = 0):
        super().__init__(classifier)
        self.bandwidth = bandwidth
        self.layer = layer
        self.mc_samples = mc_samples
        self.dropout = dropout
        self.seed = seed

    def _check_params(self) -> None:
        check_positive(self.bandwidth, "bandwidth")
        check_positive(self.mc_samples, "mc_samples", integer=True)
        if not isinstance(self.dropout, (int, float)) or not 0.0 < self.dropout < 1.0:
            raise InputError(f"dropout must be a probability in (0, 1), got {self.dropout!r}")
        if self.layer is not None:
            check_layers(self.classifier, [self.layer])

    def _site(self) -> tuple[nn.Module, bool]:
        """(module, pre): the features are the input of ``module`` (pre) or its output."""
        if self.layer is None:
            return _last_linear(self.classifier)[1], True
        return dict(self.classifier.named_modules())[self.layer], False

    def _rng(self):
        device = self.device
        if device.type == "cpu":
            return torch.random.fork_rng(devices=[])
        return torch.random.fork_rng(devices=[device], device_type=device.type)

    def forward_mc(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(features z (N, D), deterministic logits (N, C), MC-dropout softmax outputs (T, N, C)) for x on the
        classifier's device, with gradients w.r.t. x where autograd is on."""
        self._check_params()
        module, pre = self._site()
        model, n, t = self.classifier, len(x), int(self.mc_samples)
        own_dropout = [m for m in model.modules() if isinstance(m, _DROPOUTS)]
        x = x.to(self.device)
        captured: list[Tensor] = []

        def widen(h: Tensor) -> Tensor:  # one pass: the clean rows, then T dropped-out copies
            captured.append(h)
            if own_dropout:
                return h
            return torch.cat([h, F.dropout(h.repeat(t, *[1] * (h.dim() - 1)), self.dropout, training=True)])

        if pre:
            handle = module.register_forward_pre_hook(lambda _m, args: (widen(args[0]), *args[1:]))
        else:
            handle = module.register_forward_hook(lambda _m, _a, out: widen(out))
        try:
            with frozen(model), self._rng():
                torch.manual_seed(self.seed)
                out = model(x)
                if own_dropout:
                    handle.remove()
                    for m in own_dropout:
                        m.train()
                    per_pass = max(1, _MC_ROWS // max(n, 1))  # replicas per forward pass, bounding memory
                    mc = torch.cat([model(x.repeat(min(per_pass, t - i), *[1] * (x.dim() - 1)))
                                    for i in range(0, t, per_pass)])
                else:
                    out, mc = out[:n], out[n:]
        finally:
            handle.remove()
        if len(captured) == 0:
            raise InputError("the feature layer did not run in the classifier's forward pass; pass another layer")
        if out.shape[0] != n or mc.shape[0] != t * n:
            raise InputError("the classifier's output does not keep one row per input after the feature layer; "
                             "pass layer=<name> of a layer whose successors work row by row")
        z = captured[0][:n].flatten(1)
        probs = F.softmax(mc.double(), 1).reshape(t, n, -1)
        return z, out, probs

    def log_density(self, z: Tensor, predicted: Tensor, exclude: Tensor | None = None) -> Tensor:
        """log KD(x) of features ``z`` (N, D) under the KDE of the ``predicted`` classes (N,), float64; rows
        whose class has no KDE image get ``density_floor_``. ``exclude[n]`` leaves KDE image n out."""
        ref = self.kde_features_.to(z.device)
        cls = self.kde_classes_.to(z.device)
        h2 = float(self.bandwidth) ** 2
        logk = -squared_distances(z, ref) / (2.0 * h2)
        outside = cls[None, :] != predicted[:, None]
        mask = _exclusion_mask(len(z), len(ref), exclude, z.device)
        if mask is not None:
            outside = outside | mask
        count = (~outside).sum(1)
        empty = count == 0
        logk = torch.where(empty[:, None], torch.zeros_like(logk), logk.masked_fill(outside, -math.inf))
        dens = (torch.logsumexp(logk, 1) - torch.log(count.clamp(min=1).double())
                - 0.5 * z.shape[1] * math.log(2 * math.pi * h2))
        floor = getattr(self, "density_floor_", -math.inf)
        return torch.where(empty, torch.full_like(dens, floor), dens)

    @staticmethod
    def uncertainty(probs: Tensor) -> Tensor:
        """Eq. 4: (1/T) Σ_t ŷ_tᵀŷ_t − ȳᵀȳ for MC softmax outputs (T, N, C), i.e. Σ_c Var_t ŷ_tc, (N,)."""
        return probs.var(0, unbiased=False).sum(1)

    def _kdbu(self, x: Tensor, exclude: Tensor | None = None) -> Tensor:
        z, logits, probs = self.forward_mc(x)
        kd = self.log_density(z.double(), logits.argmax(1), exclude)
        return torch.stack([kd, self.uncertainty(probs)], 1)

    def _fit_statistics(self, x_clean, x_adv, y_clean, batch_size, seed):
        self._check_params()
        self.__dict__.pop("density_floor_", None)  # a refit starts without the previous floor
        device = self.device
        with frozen(self.classifier):
            feats = []
            for i in range(0, len(x_clean), batch_size):
                z, logits, _ = self.forward_mc(x_clean[i:i + batch_size])
                feats.append((z.double(), logits.argmax(1)))
        self.kde_features_ = torch.cat([f for f, _ in feats])
        if y_clean is None:
            self.kde_classes_ = torch.cat([p for _, p in feats])
        else:
            check_labels(y_clean, len(x_clean), name="y_clean")
            self.kde_classes_ = y_clean.to(device).long()
        paired = len(x_clean) == len(x_adv)

        def batched(x: Tensor, leave_out: bool) -> Tensor:
            return torch.cat([self._kdbu(x[i:i + batch_size],
                                         torch.arange(i, min(i + batch_size, len(x))) if leave_out else None)
                              for i in range(0, len(x), batch_size)])

        s_clean = batched(x_clean, True)
        s_adv = batched(x_adv, paired)
        finite = torch.isfinite(s_clean[:, 0])
        self.density_floor_ = float(s_clean[finite, 0].min()) - 10.0 if finite.any() else -1e4
        for s in (s_clean, s_adv):
            s[:, 0] = torch.where(torch.isfinite(s[:, 0]), s[:, 0], torch.full_like(s[:, 0], self.density_floor_))
        return s_clean, s_adv

    def statistics(self, x: Tensor) -> Tensor:
        """(log KD, BU) of each input, (N, 2), float64."""
        if not hasattr(self, "kde_features_"):
            raise RuntimeError("KDBUDetector is not fitted yet: call fit(x_clean, x_adv) first")
        return self._kdbu(x)


__all__ = ["FeatureSqueezingDetector", "KDBUDetector", "LIDDetector", "MahalanobisDetector", "lid_mle",
           "median_smooth", "reduce_bit_depth", "squared_distances"]
