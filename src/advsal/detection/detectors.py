"""Adversarial-example detectors: the saliency detector of seed 001 and the baselines it is compared with.

Every detector here is a ``NetworkDetector``: an ``nn.Module`` D with a trained network that maps an input x to
a probability that x is adversarial, and that meets the :class:`advsal.detection.protocol.Detector` protocol:

    D = SaliencyDetector(F).fit(x_clean, x_adv, epochs=10)   # seed 001 Step 3: D on concat(x, ∂F_c/∂x)
    D.history_                                   # per-epoch record of the training; D.is_fitted is True
    D.calibrate(x_clean_val, fpr=0.05)            # optional: threshold at a clean false-positive rate
    p = D.score(x_test); flagged = D.predict(x_test)
    z = D.adversarial_logit(x)                    # images → log(p / (1 − p)), differentiable

``features(x)`` is the input D's network sees (image and/or saliency, feature maps, the image itself);
``fit_features`` / ``score_features`` / ``logit_from_features`` work on such inputs directly so a study can
cache them. ``params()`` are the constructor parameters (JSON-able, the classifier excluded). The trained
network is ``D.net`` (not ``net_``: the name is the prefix of every ``state_dict`` key, which stored detectors
are loaded by). The classifier F
is only referenced (it is not part of ``D.parameters()`` or ``D.state_dict()``); it is used in eval mode with
its flags restored, never trained and never modified.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..models import Normalize, build_model
from ..progress import Bar
from ..saliency import gradient
from ..tensors import check_images, check_labels, frozen, model_device
from .metrics import auroc
from .protocol import ThresholdedScores

INPUTS = ("image+saliency", "image", "saliency")


@dataclass
class DetectorHistory:
    """Per-epoch record of ``NetworkDetector.fit`` (loss, accuracy; val_* when a validation split is used)."""

    epochs: list[dict] = field(default_factory=list)
    n_train: tuple[int, int] = (0, 0)
    n_val: tuple[int, int] = (0, 0)
    seconds: float = 0.0

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def to_dict(self) -> dict:
        return asdict(self)


def _check_features(f: Tensor, name: str) -> None:
    if not isinstance(f, Tensor) or f.dim() != 4 or not f.is_floating_point():
        raise InputError(f"{name} must be a float (N, C, H, W) tensor of detector inputs, got "
                         f"{type(f).__name__ if not isinstance(f, Tensor) else tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise InputError(f"{name} contains NaN or infinite values; recompute the detector inputs")


def _mark_fitted(module: nn.Module, incompatible_keys) -> None:
    """load_state_dict post-hook: a detector whose trained weights were loaded counts as fitted."""
    module._fitted = True


def _channel_stats(f: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of training inputs, for the detector's Normalize layer (a constant channel
    gets std 1 so it passes through unscaled)."""
    flat = f.transpose(0, 1).reshape(f.shape[1], -1).double()
    std = flat.std(1, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return flat.mean(1).tolist(), std.tolist()


class NetworkDetector(ThresholdedScores, nn.Module):
    """Common base of the trained-network detectors: training, batched scoring, thresholding; meets the
    :class:`~advsal.detection.protocol.Detector` protocol. Label 1 = adversarial.

    Subclasses define ``features(x)`` (the network's input, built from images), ``_make_net`` (the network
    for a given input shape) and ``_param_names`` (the constructor parameters ``params()`` reports); binary
    detectors output two logits (clean, adversarial). ``is_fitted`` turns True after ``fit``/``fit_features``
    or after ``load_state_dict`` (a stored trained detector).
    """

    #: ``adversarial_logit`` is differentiable w.r.t. the images (through ``features``; see the subclasses for
    #: which parts of the features carry gradient).
    differentiable = True
    _param_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.net: nn.Module | None = None
        self.history_: DetectorHistory | None = None
        #: (C, H, W) of the network's input, set when the network is built (``build``/``fit``); saved detectors
        #: are rebuilt from it (``advsal.detection.io``).
        self.feature_shape_: tuple[int, ...] | None = None
        self._fitted = False
        self.register_buffer("_threshold", torch.tensor(0.5))
        self.register_load_state_dict_post_hook(_mark_fitted)

    # -- the classifier is referenced, not owned (kept out of parameters() and state_dict()) --
    def _set_classifier(self, classifier: nn.Module) -> None:
        if not isinstance(classifier, nn.Module):
            raise InputError(f"classifier must be an nn.Module mapping images to logits, got "
                             f"{type(classifier).__name__}")
        object.__setattr__(self, "classifier", classifier)

    @property
    def threshold(self) -> float:
        """Scores strictly above the threshold are called adversarial (default 0.5)."""
        return float(self._threshold)

    @threshold.setter
    def threshold(self, value: float) -> None:
        v = float(value)
        if math.isnan(v):
            raise InputError("threshold must be a number, got NaN")
        self._threshold.fill_(v)

    @property
    def device(self) -> torch.device:
        return model_device(self.classifier)

    @property
    def is_fitted(self) -> bool:
        """True once the network is trained (``fit``, ``fit_features``) or loaded (``load_state_dict``)."""
        return self._fitted and self.net is not None

    def params(self) -> dict[str, Any]:
        """The constructor parameters that define the detector (JSON-able; the classifier excluded)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                ((name, getattr(self, name)) for name in self._param_names)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params().items())

    # -- to be defined by subclasses --
    def features(self, x: Tensor) -> Tensor:
        """The input this detector feeds its network, built from images ``x`` (N, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def _make_net(self, shape: tuple[int, ...], mean: list[float] | None, std: list[float] | None,
                  seed: int) -> nn.Module:
        raise NotImplementedError

    def _train_labels(self, n_clean: int, n_adv: int, y_clean: Tensor | None, f_clean: Tensor) -> Tensor:
        return torch.cat([torch.zeros(n_clean, dtype=torch.long), torch.ones(n_adv, dtype=torch.long)])

    def logit_from_features(self, features: Tensor) -> Tensor:
        """log(p / (1 − p)) of "adversarial" for each row of ``features`` (the network's input, see
        ``features``); differentiable (for attacks)."""
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} is not trained yet: call fit(x_clean, x_adv) first "
                               "(or build(feature_shape) before load_state_dict)")
        return self._logit_from_output(self.net(features))

    def adversarial_logit(self, x: Tensor) -> Tensor:
        """log(p / (1 − p)) of "adversarial" for images ``x`` (sigmoid of it is ``score(x)``), shape (N,);
        differentiable w.r.t. x where ``features`` is."""
        return self.logit_from_features(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        """``adversarial_logit(x)``."""
        return self.adversarial_logit(x)

    # -- building --
    def build(self, feature_shape: tuple[int, ...], seed: int = 0) -> None:
        """Create the (untrained) network for inputs of shape (C, H, W), e.g. before ``load_state_dict``."""
        self.feature_shape_ = tuple(int(s) for s in feature_shape)
        self.net = self._make_net(self.feature_shape_, None, None, seed).to(self.device)
        self.net.eval()

    def build_features(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """``features(x)`` in batches, detached, on the classifier's device."""
        check_images(x)
        with torch.no_grad():
            parts = [self.features(x[i:i + batch_size]).detach() for i in range(0, len(x), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0)

    # -- training --
    def fit(self, x_clean: Tensor, x_adv: Tensor, *, y_clean: Tensor | None = None, epochs: int = 10,
            lr: float = 1e-4, batch_size: int = 128, val_fraction: float = 0.0,
            seed: int = 0) -> NetworkDetector:
        """Train on clean (label 0) and adversarial (label 1) images (seed 001: Adam, lr 1e-4, 10 epochs);
        returns self, with the training record in ``history_``.

        ``y_clean`` (true labels of ``x_clean``) is used by ``NPlusOneDetector`` only. See ``fit_features``.
        """
        check_images(x_clean, "x_clean")
        check_images(x_adv, "x_adv")
        if x_clean.shape[1:] != x_adv.shape[1:]:
            raise InputError("x_clean and x_adv must have the same image shape, got "
                             f"{tuple(x_clean.shape[1:])} and {tuple(x_adv.shape[1:])}")
        return self.fit_features(self.build_features(x_clean), self.build_features(x_adv), y_clean=y_clean,
                                 epochs=epochs, lr=lr, batch_size=batch_size, val_fraction=val_fraction,
                                 seed=seed)

    def fit_features(self, f_clean: Tensor, f_adv: Tensor, *, y_clean: Tensor | None = None, epochs: int = 10,
                     lr: float = 1e-4, batch_size: int = 128, val_fraction: float = 0.0,
                     seed: int = 0) -> NetworkDetector:
        """Train on precomputed detector inputs (``features`` of clean and adversarial images); returns self,
        with the per-epoch record (a :class:`DetectorHistory`) in ``history_``.

        The two classes are balanced by weighting each example with n / (2 · n_class) in the cross-entropy, so
        unequal set sizes do not bias the detector. With ``val_fraction`` > 0 that share of each set is held
        out (the same indices of both when they have equal size, so an image and its adversarial stay on one
        side) and val_loss / val_accuracy / val_auroc are recorded each epoch. The first call builds the
        network (its input normalisation is set from the training inputs' per-channel mean and std); a second
        call continues training it. The network is left in eval mode.
        """
        _check_features(f_clean, "f_clean")
        _check_features(f_adv, "f_adv")
        if f_clean.shape[1:] != f_adv.shape[1:]:
            raise InputError(f"clean and adversarial inputs differ in shape: {tuple(f_clean.shape[1:])} vs "
                             f"{tuple(f_adv.shape[1:])}")
        if len(f_clean) == 0 or len(f_adv) == 0:
            raise InputError(f"fit needs clean and adversarial examples, got {len(f_clean)} and {len(f_adv)}")
        if epochs < 1 or batch_size < 1 or not lr > 0:
            raise InputError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}")
        if not 0.0 <= val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if y_clean is not None:
            check_labels(y_clean, len(f_clean), name="y_clean")
        device = self.device
        labels = self._train_labels(len(f_clean), len(f_adv), y_clean, f_clean)

        gen = torch.Generator().manual_seed(seed)
        perm_c = torch.randperm(len(f_clean), generator=gen)
        perm_a = perm_c.clone() if len(f_adv) == len(f_clean) else torch.randperm(len(f_adv), generator=gen)
        nv_c, nv_a = int(round(val_fraction * len(f_clean))), int(round(val_fraction * len(f_adv)))
        if val_fraction > 0 and (nv_c == len(f_clean) or nv_a == len(f_adv)):
            raise InputError("val_fraction leaves no training examples; lower it or pass more data")
        idx_c_val, idx_c_tr = perm_c[:nv_c], perm_c[nv_c:]
        idx_a_val, idx_a_tr = perm_a[:nv_a] + len(f_clean), perm_a[nv_a:] + len(f_clean)
        feats = torch.cat([f_clean.to(device), f_adv.to(device)])
        labels = labels.to(device)
        is_adv = torch.arange(len(f_clean) + len(f_adv)) >= len(f_clean)
        tr = torch.cat([idx_c_tr, idx_a_tr])
        val = torch.cat([idx_c_val, idx_a_val])
        n_tr_c, n_tr_a = len(idx_c_tr), len(idx_a_tr)
        weight = torch.where(is_adv, len(tr) / (2.0 * n_tr_a), len(tr) / (2.0 * n_tr_c)).to(device)

        if self.net is None:
            mean, std = self._stats(feats[tr])
            self.net = self._make_net(tuple(feats.shape[1:]), mean, std, seed).to(device)
            self.feature_shape_ = tuple(int(s) for s in feats.shape[1:])  # what build() needs to restore it
        net = self.net
        torch.manual_seed(seed)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
        history = DetectorHistory(n_train=(n_tr_c, n_tr_a), n_val=(len(idx_c_val), len(idx_a_val)))
        n_batches = (len(tr) + batch_size - 1) // batch_size
        start = time.perf_counter()
        with Bar(f"fit {type(self).__name__}", epochs * n_batches) as bar:
            for epoch in range(1, epochs + 1):
                net.train()
                order = tr[torch.randperm(len(tr), generator=gen)]
                total, correct = 0.0, 0
                for i in range(n_batches):
                    idx = order[i * batch_size:(i + 1) * batch_size].to(device)
                    out = net(feats[idx])
                    loss = (F.cross_entropy(out, labels[idx], reduction="none") * weight[idx]).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    called = self._logit_from_output(out.detach()) > 0
                    correct += int((called == is_adv[idx.cpu()].to(device)).sum())
                    bar.update(info=f"epoch {epoch} loss {loss.item():.4f}")
                net.eval()
                row = {"epoch": epoch, "loss": total / len(tr), "accuracy": correct / len(tr)}
                if len(val):
                    row.update(self._validation(feats[val.to(device)], labels[val.to(device)],
                                                is_adv[val], weight[val.to(device)]))
                history.epochs.append(row)
        net.eval()
        history.seconds = time.perf_counter() - start
        self.history_ = history
        self._fitted = True
        return self

    def _stats(self, f: Tensor) -> tuple[list[float] | None, list[float] | None]:
        return _channel_stats(f)

    def _logit_from_output(self, out: Tensor) -> Tensor:
        return out[:, 1] - out[:, 0]

    @torch.no_grad()
    def _validation(self, f: Tensor, labels: Tensor, is_adv: Tensor, weight: Tensor) -> dict:
        out = torch.cat([self.net(f[i:i + 512]) for i in range(0, len(f), 512)])
        logit = self._logit_from_output(out).cpu()
        loss = float((F.cross_entropy(out, labels, reduction="none") * weight).mean())
        row = {"val_loss": loss, "val_accuracy": float(((logit > 0) == is_adv).float().mean())}
        if is_adv.any() and (~is_adv).any():
            row["val_auroc"] = auroc(logit, is_adv.long())
        return row

    # -- scoring --
    def score_features(self, features: Tensor, batch_size: int = 512) -> Tensor:
        """Probability adversarial for precomputed detector inputs (no gradient), on the inputs' device."""
        _check_features(features, "features")
        if self.net is None:
            self.logit_from_features(features)  # raises the not-trained error
        with frozen(self.net), torch.no_grad():
            parts = [torch.sigmoid(self.logit_from_features(features[i:i + batch_size].to(self.device)))
                     for i in range(0, len(features), batch_size)]
        return torch.cat(parts).to(features.device) if parts else features.new_zeros(0)

    def score(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Probability that each image is adversarial, shape (N,), on x's device (no gradient)."""
        check_images(x)
        if len(x) == 0:
            return x.new_zeros(0)
        parts = [self.score_features(self.build_features(x[i:i + batch_size], batch_size), batch_size)
                 for i in range(0, len(x), batch_size)]
        return torch.cat(parts).to(x.device)


def _square_size(shape: tuple[int, ...], what: str) -> int:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise InputError(f"{what} inputs must be square (C, H, H) for a zoo detector network, got {shape}; "
                         "use arch=None (the size-agnostic conv detector) for other shapes")
    return shape[1]


class SaliencyDetector(NetworkDetector):
    """Seed 001 §III Steps 2–3: a binary classifier D on the image concatenated (channel axis) with its
    gradient saliency S = ∂F_c(x)/∂x (Eq. 5) of the classifier F, c = F's predicted class.

    ``arch`` is the zoo architecture of D (Table I MNIST-NET-D / CIFAR10-NET-D: ``"mnist-net"`` /
    ``"cifar-net"``), built with 2 outputs and 2·C (or C) input channels. ``input="image"`` is the "1+1"
    baseline of Gong et al. 2017 (same D on the image alone), ``input="saliency"`` the saliency-only ablation.
    ``saliency_score`` is the explained score ("logit", "log_softmax", "softmax"); ``saliency_target`` the
    class explained ("predicted" or a fixed class index).

    Meets :class:`~advsal.detection.protocol.SaliencyInputDetector`. ``adversarial_logit(x)`` is
    differentiable w.r.t. x through the image channels only: ``features`` detaches the saliency channels
    (Eq. 10's assumption); an attack that differentiates through the saliency builds the input itself with
    ``saliency(x, create_graph=True)``, ``assemble`` and ``logit_from_features``.
    """

    _param_names = ("arch", "input", "saliency_score", "saliency_target")

    def __init__(self, classifier: nn.Module, arch: str = "mnist-net", input: str = "image+saliency",
                 saliency_score: str = "logit", saliency_target: str | int = "predicted"):
        super().__init__()
        self._set_classifier(classifier)
        if input not in INPUTS:
            raise InputError(f"unknown input {input!r}; choose one of {', '.join(INPUTS)}")
        if saliency_score not in ("logit", "log_softmax", "softmax"):
            raise InputError(f"unknown saliency_score {saliency_score!r}; choose logit, log_softmax or "
                             "softmax")
        if not (saliency_target == "predicted" or (isinstance(saliency_target, int)
                                                   and not isinstance(saliency_target, bool))):
            raise InputError(f"saliency_target must be 'predicted' or a class index, got {saliency_target!r} "
                             "(true labels are unknown when a detector runs)")
        self.arch = arch
        self.input = input
        self.saliency_score = saliency_score
        self.saliency_target = saliency_target

    @property
    def uses_saliency(self) -> bool:
        """False for the image-only ("1+1") variant, whose network never sees the saliency."""
        return self.input != "image"

    def saliency_target_for(self, logits: Tensor) -> Tensor:
        """The class whose saliency D reads, per example, given the classifier's logits at x."""
        if isinstance(self.saliency_target, int):
            return torch.full((logits.shape[0],), self.saliency_target, dtype=torch.long, device=logits.device)
        return logits.detach().argmax(1)

    def saliency(self, x: Tensor, target: Tensor | int | str | None = None, *,
                 create_graph: bool = False) -> Tensor:
        """S = ∂F_c/∂x (signed, same shape as x) on the classifier's device; ``target`` overrides the
        detector's ``saliency_target`` (e.g. the classes an attack fixed)."""
        t = self.saliency_target if target is None else target
        return gradient(self.classifier, x.to(self.device), t, score=self.saliency_score,
                        create_graph=create_graph)

    def assemble(self, x: Tensor, s: Tensor | None) -> Tensor:
        """D's input from an image batch and its saliency, according to ``input``."""
        if self.input == "image":
            return x
        if self.input == "saliency":
            return s
        return torch.cat([x, s], 1)

    def features(self, x: Tensor) -> Tensor:
        """concat(x, S) / x / S. The saliency channels are constants (detached): gradients w.r.t. x flow only
        through the image channels, as assumed by the second-round attack of Eq. 10."""
        check_images(x)
        xd = x.to(self.device)
        s = None if self.input == "image" else self.saliency(x).detach()
        return self.assemble(xd, s)

    def _make_net(self, shape, mean, std, seed):
        size = _square_size(shape, "SaliencyDetector")
        return build_model(self.arch, num_classes=2, in_channels=shape[0], input_size=size, mean=mean,
                           std=std, seed=seed)


class _StopForward(Exception):
    """Raised by the feature hook to skip the classifier layers after the detector's layer."""


def metzen_detector_net(in_channels: int, width: tuple[int, int] = (96, 192), mean: list[float] | None = None,
                        std: list[float] | None = None) -> nn.Sequential:
    """Metzen et al. 2017 §4.1 detector subnetwork: conv 3×3 (96), max-pool, conv 3×3 (192), max-pool,
    conv 3×3 (192), conv 1×1 (2), global average pooling → 2 logits (clean, adversarial); any input size."""
    w1, w2 = width
    norm = Normalize(mean if mean is not None else [0.0] * in_channels,
                     std if std is not None else [1.0] * in_channels)
    return nn.Sequential(norm,
                         nn.Conv2d(in_channels, w1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                         nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                         nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(), nn.Conv2d(w2, 2, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class FeatureDetector(NetworkDetector):
    """Metzen et al. 2017: a detector subnetwork on the classifier's feature maps at ``layer``.

    The default ``"features.1"`` (the first ReLU of a zoo model) is seed 001's simplification ("training
    detector with first layer feature maps"). The feature maps are read with a forward hook that is always
    removed, and the classifier's forward pass stops right after ``layer``. ``arch=None`` uses Metzen's
    conv detector (channel widths ``width``); a zoo name (e.g. "mnist-net") builds that net instead.
    ``features(x)`` is differentiable w.r.t. x, so second-round attacks can use the exact gradient.
    """

    _param_names = ("layer", "arch", "width")

    def __init__(self, classifier: nn.Module, layer: str = "features.1", arch: str | None = None,
                 width: tuple[int, int] = (96, 192)):
        super().__init__()
        self._set_classifier(classifier)
        modules = dict(classifier.named_modules())
        if layer not in modules or layer == "":
            valid = ", ".join(k for k in modules if k)
            raise InputError(f"unknown layer {layer!r}; valid layer names (classifier.named_modules()): "
                             f"{valid}")
        self.layer = layer
        self.arch = arch
        self.width = tuple(width)

    def features(self, x: Tensor) -> Tensor:
        """The classifier's activation at ``layer`` for images x, (N, K, h, w)."""
        check_images(x)
        module = dict(self.classifier.named_modules())[self.layer]
        captured: list[Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            with frozen(self.classifier):
                self.classifier(x.to(self.device))
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise InputError(f"layer {self.layer!r} was not called in the classifier's forward pass")
        out = captured[0]
        if out.dim() != 4:
            raise InputError(f"layer {self.layer!r} outputs shape {tuple(out.shape)}; pick a convolutional "
                             "layer with (N, K, h, w) feature maps")
        return out

    def _make_net(self, shape, mean, std, seed):
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            if self.arch is None:
                return metzen_detector_net(shape[0], self.width, mean, std)
        finally:
            torch.random.set_rng_state(state)
        size = _square_size(shape, "FeatureDetector")
        return build_model(self.arch, num_classes=2, in_channels=shape[0], input_size=size, mean=mean,
                           std=std, seed=seed)


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(k, m) for k, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError("NPlusOneDetector needs a classifier whose last layer is an nn.Linear (to add the "
                         "adversarial class)")
    return linears[-1]


class NPlusOneDetector(NetworkDetector):
    """Grosse et al. 2017: a copy of the classifier with an (N+1)-th "adversarial" output, trained on clean
    images with their labels and adversarial images with label N; score = softmax probability of class N.

    The copy starts from the classifier's weights (the new output row is freshly initialised) unless
    ``from_scratch``; the classifier itself is not modified. The network exists from construction, but
    ``is_fitted`` is False until ``fit`` (or ``load_state_dict``).
    """

    _param_names = ("from_scratch", "seed")

    def __init__(self, classifier: nn.Module, from_scratch: bool = False, seed: int = 0):
        super().__init__()
        self._set_classifier(classifier)
        self.from_scratch = bool(from_scratch)
        self.seed = int(seed)
        name, last = _last_linear(classifier)
        self.num_classes = last.out_features
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            net = copy.deepcopy(classifier)
            head = nn.Linear(last.in_features, self.num_classes + 1, bias=last.bias is not None)
            head.to(device=last.weight.device, dtype=last.weight.dtype)
            if from_scratch:
                for m in net.modules():
                    if hasattr(m, "reset_parameters") and m is not net:
                        m.reset_parameters()
            else:
                with torch.no_grad():
                    head.weight[:-1].copy_(last.weight)
                    if last.bias is not None:
                        head.bias[:-1].copy_(last.bias)
        finally:
            torch.random.set_rng_state(state)
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, head)
        for p in net.parameters():
            p.requires_grad_(True)
        if isinstance(getattr(net, "spec", None), dict):
            net.spec = {**net.spec, "num_classes": self.num_classes + 1}
        self.net = net.eval()

    def features(self, x: Tensor) -> Tensor:
        """The image itself (the detector is a classifier on pixels)."""
        check_images(x)
        return x.to(self.device)

    def build(self, feature_shape: tuple[int, ...], seed: int = 0) -> None:
        """The network exists from construction; nothing to build."""

    def _make_net(self, shape, mean, std, seed):
        return self.net

    def _stats(self, f):
        return None, None

    def _train_labels(self, n_clean, n_adv, y_clean, f_clean):
        if y_clean is None:  # Grosse et al. use the true labels; fall back to the classifier's predictions
            with frozen(self.classifier), torch.no_grad():
                y_clean = torch.cat([self.classifier(f_clean[i:i + 512].to(self.device)).argmax(1).cpu()
                                     for i in range(0, len(f_clean), 512)])
        check_labels(y_clean, n_clean, self.num_classes, name="y_clean")
        return torch.cat([y_clean.long().cpu(), torch.full((n_adv,), self.num_classes, dtype=torch.long)])

    def _logit_from_output(self, out: Tensor) -> Tensor:
        # log p_N − log(1 − p_N) = z_N − logsumexp(z_0..z_{N−1}), so sigmoid(logit) = softmax(out)[:, N]
        return out[:, -1] - torch.logsumexp(out[:, :-1], 1)

    def classify(self, x: Tensor) -> Tensor:
        """The detector-network's class among the N original classes (argmax of the first N logits)."""
        check_images(x)
        with frozen(self.net), torch.no_grad():
            return self.net(x.to(self.device))[:, :-1].argmax(1).to(x.device)


__all__ = ["INPUTS", "DetectorHistory", "FeatureDetector", "NPlusOneDetector", "NetworkDetector",
           "SaliencyDetector", "metzen_detector_net"]
