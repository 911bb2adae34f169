"""Zoo output shapes, save/load round trip, safe loading and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from advsal.models import ModelFileError, Normalize, build_model, list_models, load_model, save_model


@pytest.mark.parametrize("name, channels, size, classes", [
    ("mnist-net", 1, 28, 10), ("mnist-net", 2, 28, 2), ("cifar-net", 3, 32, 10), ("cifar-net", 6, 32, 1),
    ("vgg-cifar", 3, 32, 10), ("resnet20", 3, 32, 10), ("resnet20", 1, 28, 10), ("vgg16", 3, 64, 7),
    ("finding-net", 1, 64, 2), ("finding-net", 3, 28, 10),
])
def test_output_shapes(name, channels, size, classes):
    model = build_model(name, classes, channels, size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, size, size)).shape == (2, classes)
    assert dict(model.named_modules())[model.cam_layer] is not None


def test_paper_architectures_match_tables():
    # seed 001 Table I: Fc(12544, 100) for MNIST and Fc(16384, 100) for CIFAR-10
    assert build_model("mnist-net").classifier[0].in_features == 12544
    assert build_model("cifar-net", in_channels=3).classifier[0].in_features == 16384
    # seed 002 Table 5.1: 1,525,738 parameters
    assert sum(p.numel() for p in build_model("vgg-cifar", in_channels=3).parameters()) == 1_525_738
    assert all(not isinstance(m, torch.nn.ReLU) or not m.inplace for m in build_model("resnet20").modules())


def test_normalize_layer():
    norm = Normalize([0.5], [0.25])
    assert torch.allclose(norm(torch.full((1, 1, 2, 2), 1.0)), torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(ValueError, match="positive"):
        Normalize([0.0], [0.0])


def test_save_load_roundtrip_identical_logits(tmp_path):
    model = build_model("resnet20", 10, 1, 28, mean=[0.13], std=[0.3], seed=3).eval()
    x = torch.rand(4, 1, 28, 28)
    path = save_model(model, tmp_path / "m", classes=list("0123456789"), metrics={"acc": 0.5})
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["architecture"] == "resnet20" and meta["metrics"]["acc"] == 0.5 and meta["mean"] == [0.13]
    assert loaded.classes == list("0123456789")


def test_load_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing")
    path = save_model(build_model("mnist-net"), tmp_path / "m")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)
    path2 = save_model(build_model("mnist-net"), tmp_path / "n")
    meta = json.loads(path2.with_suffix(".json").read_text())
    meta["architecture"] = "cifar-net"
    meta["in_channels"] = 3
    meta["input_size"] = 32
    meta["mean"], meta["std"] = [0.0] * 3, [1.0] * 3
    path2.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path2)


def test_build_errors():
    with pytest.raises(ValueError, match="available: mnist-net"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="3 values"):
        build_model("cifar-net", in_channels=3, mean=[0.5])
    model = build_model("mnist-net")
    with pytest.raises(ValueError, match="1 channels"):
        model(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match="input_size=32"):
        model(torch.rand(1, 1, 32, 32))
    assert {m.name for m in list_models()} >= {"mnist-net", "cifar-net", "vgg-cifar", "resnet20", "vgg16"}


def test_seeded_build_is_deterministic_and_restores_rng():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = build_model("mnist-net", seed=7)
    after = torch.rand(1)
    b = build_model("mnist-net", seed=7)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
