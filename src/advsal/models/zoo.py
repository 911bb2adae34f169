"""The model zoo: the papers' architectures, each mapping [0, 1] images to logits.

Every zoo model is a ``ZooModel``: ``normalize`` (mean/std, so epsilons stay in pixel units) → ``features`` →
flatten → ``classifier``. Activations are ``nn.ReLU`` modules (never functional calls) so saliency methods can find
them, and ``cam_layer`` names the layer Grad-CAM uses by default (the last convolutional stage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of a model whose inputs are pixels in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if any(s <= 0 for s in std):
            raise InputError(f"Normalize std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ZooModel(nn.Module):
    """normalize → features → flatten → classifier, with an input-shape check that names the fix."""

    def __init__(self, normalize: Normalize, features: nn.Sequential, classifier: nn.Sequential,
                 in_channels: int, input_size: int | None, cam_layer: str):
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.classifier = classifier
        self.in_channels = in_channels
        self.input_size = input_size
        self.cam_layer = cam_layer
        self.spec: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"model expects NCHW input with {self.in_channels} channels, got {tuple(x.shape)}; "
                             "build the model with in_channels matching the data")
        if self.input_size is not None and tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise InputError(f"model expects {self.input_size}x{self.input_size} images, got "
                             f"{tuple(x.shape[2:])}; build it with input_size={x.shape[2]} or resize the data")
        return self.classifier(torch.flatten(self.features(self.normalize(x)), 1))


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]


def paper_net(num_classes: int, in_channels: int, input_size: int, norm: Normalize) -> ZooModel:
    """Seed 001 Table I, MNIST-NET / CIFAR10-NET (F and D): Conv(3,3,·,32), Conv(32,32), max-pool,
    Conv(32,64), Conv(64,64), Fc(64·(s/2)², 100), Fc(100, classes). Fc(12544,100) for 28×28 and Fc(16384,100) for
    32×32 fix the single 2×2 pooling; D uses the same net with 2× the image channels and 1 or 2 outputs."""
    features = nn.Sequential(*_conv(in_channels, 32), *_conv(32, 32), nn.MaxPool2d(2),
                             *_conv(32, 64), *_conv(64, 64))
    flat = 64 * (input_size // 2) ** 2
    classifier = nn.Sequential(nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, num_classes))
    return ZooModel(norm, features, classifier, in_channels, input_size, "features.8")


def vgg_cifar(num_classes: int, in_channels: int, input_size: int, norm: Normalize) -> ZooModel:
    """Seed 002 Table 5.1: blocks of 2, 3, 3 convs (32, 64, 128 filters), each followed by 2×2 max-pool and
    dropout (0.25), then FC-512 + dropout (0.5) and the class layer (1,525,738 parameters for CIFAR-10)."""
    layers: list[nn.Module] = []
    cin = in_channels
    for cout, n in ((32, 2), (64, 3), (128, 3)):
        for _ in range(n):
            layers += _conv(cin, cout)
            cin = cout
        layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
    features = nn.Sequential(*layers)
    flat = 128 * (input_size // 8) ** 2
    classifier = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, num_classes))
    return ZooModel(norm, features, classifier, in_channels, input_size, "features.19")


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016) with an option-B (1×1 conv) shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def resnet20(num_classes: int, in_channels: int, input_size: int, norm: Normalize) -> ZooModel:
    """CIFAR-style ResNet-20 (He et al. 2016 §4.2): 3 stages × 3 basic blocks, 16/32/64 filters, global
    average pooling. Seed 004 attacks a ResNet on CIFAR-10. Works for any input size ≥ 8."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        blocks = [BasicBlock(cin if i == 0 else cout, cout, 2 if (stage > 0 and i == 0) else 1) for i in range(3)]
        layers.append(nn.Sequential(*blocks))
        cin = cout
    layers.append(nn.AdaptiveAvgPool2d(1))
    return ZooModel(norm, nn.Sequential(*layers), nn.Sequential(nn.Linear(64, num_classes)), in_channels, None,
                    "features.5")


def vgg16(num_classes: int, in_channels: int, input_size: int, norm: Normalize) -> ZooModel:
    """VGG16 (Simonyan & Zisserman 2014, config D) for 224×224 inputs, laid out like torchvision's so its
    ImageNet weights load with ``load_vgg16_weights``; ``classifier[6]`` is the replaceable head."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    cin = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += _conv(cin, int(v))
            cin = int(v)
    layers.append(nn.AdaptiveAvgPool2d(7))
    classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
                               nn.ReLU(), nn.Dropout(), nn.Linear(4096, num_classes))
    return ZooModel(norm, nn.Sequential(*layers), classifier, in_channels, None, "features.29")


def finding_net(num_classes: int, in_channels: int, input_size: int, norm: Normalize) -> ZooModel:
    """A weakly supervised finding detector (the explanation study, seed 003 §5.1 on cluttered-mnist): three 3×3
    conv stages (16, 32, 64 filters; 2×2 max-pool after the first two), global max pooling — an image is positive
    when some location holds the finding, so image labels suffice (Oquab et al. 2015) — then seed 003's head,
    FC-256 and the class layer. Any input size ≥ 4; Grad-CAM uses the last conv stage (features.7)."""
    features = nn.Sequential(*_conv(in_channels, 16), nn.MaxPool2d(2), *_conv(16, 32), nn.MaxPool2d(2),
                             *_conv(32, 64), nn.AdaptiveMaxPool2d(1))
    classifier = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, num_classes))
    return ZooModel(norm, features, classifier, in_channels, None, "features.7")


@dataclass(frozen=True)
class ArchInfo:
    name: str
    description: str
    factory: Callable[[int, int, int, Normalize], ZooModel]
    default_input_size: int
    min_input_size: int


ZOO: dict[str, ArchInfo] = {
    "mnist-net": ArchInfo("mnist-net", "seed 001 Table I MNIST-NET (F/D), 28x28", paper_net, 28, 2),
    "cifar-net": ArchInfo("cifar-net", "seed 001 Table I CIFAR10-NET (F/D), 32x32", paper_net, 32, 2),
    "vgg-cifar": ArchInfo("vgg-cifar", "seed 002 Table 5.1 VGG-style CIFAR net (3 blocks, FC-512)", vgg_cifar, 32, 8),
    "resnet20": ArchInfo("resnet20", "CIFAR-style ResNet-20 (seed 004)", resnet20, 32, 8),
    "finding-net": ArchInfo("finding-net", "seed 003 stand-in: 3 conv stages, global max pool, FC-256 (any size)",
                            finding_net, 64, 4),
    "vgg16": ArchInfo("vgg16", "VGG16 for 224x224 (seed 001 ImageNet subset), replaceable head", vgg16, 224, 32),
}


def list_models() -> list[ArchInfo]:
    return list(ZOO.values())


def build_model(name: str, num_classes: int = 10, in_channels: int = 1, input_size: int | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                seed: int | None = None) -> ZooModel:
    """Build a zoo model with random weights (seeded when ``seed`` is given).

    ``mean``/``std`` (one value per channel, default 0/1) become the model's first layer.
    """
    if name not in ZOO:
        raise InputError(f"unknown model {name!r}; available: {', '.join(ZOO)}")
    info = ZOO[name]
    size = int(input_size or info.default_input_size)
    if num_classes < 1 or in_channels < 1:
        raise InputError(f"num_classes and in_channels must be ≥ 1, got {num_classes} and {in_channels}")
    if size < info.min_input_size:
        raise InputError(f"{name} needs inputs of at least {info.min_input_size}x{info.min_input_size}, got {size}")
    mean = list(mean) if mean is not None else [0.0] * in_channels
    std = list(std) if std is not None else [1.0] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise InputError(f"mean/std need {in_channels} values (one per channel), got {len(mean)} and {len(std)}")
    if seed is not None:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        model = info.factory(num_classes, in_channels, size, Normalize(mean, std))
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    model.spec = {"architecture": name, "num_classes": num_classes, "in_channels": in_channels,
                  "input_size": size, "mean": mean, "std": std}
    return model
