"""Training reaches the required accuracy; evaluation metrics are exact; early stopping stops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advsal.data import ImageSet
from advsal.models import build_model
from advsal.training import (
    EarlyStopping,
    augment,
    confusion_matrix,
    evaluate,
    per_class_accuracy,
    train_classifier,
)


def test_mnist_net_reaches_95_percent(mnist5k, mnist_model):
    _, test = mnist5k
    ev = evaluate(mnist_model, test)
    assert ev.accuracy >= 0.95
    assert ev.confusion.sum() == 1000 and np.all(ev.per_class_accuracy > 0.8)


def test_confusion_and_per_class_accuracy_by_hand():
    cm = confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert per_class_accuracy(cm).tolist() == [0.5, 1.0, 0.0]


class Fixed(torch.nn.Module):
    """Predicts class (first pixel > 0.5) from a 2-class logit; known answers."""

    def forward(self, x):
        p = x[:, 0, 0, 0]
        return torch.stack([1 - p, p], 1) * 10


def test_evaluate_known_predictions():
    x = torch.zeros(4, 1, 2, 2)
    x[1, 0, 0, 0] = 1
    x[3, 0, 0, 0] = 1
    data = ImageSet(x, torch.tensor([0, 1, 1, 0]), ["a", "b"])
    ev = evaluate(Fixed(), data)
    assert ev.accuracy == 0.5
    assert ev.confusion.tolist() == [[1, 1], [1, 1]]


def test_early_stopping_and_mode_restored():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    data = ImageSet(x, torch.randint(0, 2, (64,)), ["a", "b"])  # random labels: validation loss cannot improve
    model = build_model("resnet20", 2, 1, 8, seed=0)
    hist = train_classifier(model, data, data.subset(range(16)), epochs=50, lr=1e-5,
                            early_stopping=EarlyStopping(min_delta=0.5, patience=2))
    assert hist.stopped_early and len(hist.epochs) == 3
    assert not model.training


def test_training_is_seeded():
    x = torch.rand(64, 1, 8, 8)
    data = ImageSet(x, (x.mean((1, 2, 3)) > 0.5).long(), ["a", "b"])
    runs = []
    for _ in range(2):
        model = build_model("resnet20", 2, 1, 8, seed=1)
        train_classifier(model, data, epochs=1, batch_size=16, seed=5)
        runs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_bad_arguments():
    data = ImageSet(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="unknown optimizer"):
        train_classifier(build_model("resnet20", 2, 1, 8), data, optimizer="lbfgs", epochs=1)
    with pytest.raises(ValueError, match="positive"):
        train_classifier(build_model("resnet20", 2, 1, 8), data, epochs=0)


def test_augment_translates_and_flips_each_example():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 3:6, 3:6] = torch.arange(9.0).view(3, 3)  # an asymmetric patch well inside the border
    gen = torch.Generator().manual_seed(0)
    out = augment(x, shift=2, generator=gen)
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # content moved, not lost
    moved = set()
    for img in out[:, 0]:
        r, c = (img == 8).nonzero()[0].tolist()
        moved.add((r - 5, c - 5))
        assert torch.equal(img[r - 2:r + 1, c - 2:c + 1], x[0, 0, 3:6, 3:6])  # the patch is intact
    assert moved <= {(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)} and len(moved) > 10
    flipped = augment(x, flip=True, generator=torch.Generator().manual_seed(1))
    n_flipped = sum(torch.equal(f, x[0].flip(2)) for f in flipped)
    assert 16 < n_flipped < 48 and all(torch.equal(f, x[0]) or torch.equal(f, x[0].flip(2)) for f in flipped)


def test_diverging_training_stops_with_an_error(mnist5k):
    from advsal.training import TrainingError

    train, _ = mnist5k
    small = train.subset(range(64))
    model = build_model("mnist-net", seed=0)
    with pytest.raises(TrainingError, match="lower --lr"):
        train_classifier(model, small, epochs=1, batch_size=32, lr=1e30, optimizer="sgd")
    with pytest.raises(TrainingError, match="finite"):
        train_classifier(model, small, epochs=1, lr=float("inf"))
