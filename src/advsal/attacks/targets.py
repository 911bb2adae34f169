"""Choosing target classes for targeted attacks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..tensors import check_labels, predict_logits


def random_targets(y: Tensor, num_classes: int, seed: int = 0) -> Tensor:
    """One target per example drawn uniformly from the classes other than its label ``y`` (seeded)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an integer ≥ 2 to pick a target other than y, got "
                         f"{num_classes!r}")
    check_labels(y, y.shape[0] if isinstance(y, Tensor) and y.dim() == 1 else -1, num_classes)
    generator = torch.Generator().manual_seed(int(seed))
    shift = torch.randint(1, num_classes, (y.shape[0],), generator=generator).to(y.device)
    return (y.long() + shift) % num_classes


def least_likely_targets(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """The class with the lowest logit per example (Kurakin et al. 2016's "least likely class"); with labels
    ``y`` the true class is never chosen."""
    logits = predict_logits(model, x)
    if y is not None:
        check_labels(y, x.shape[0], logits.shape[1])
        logits = logits.scatter(1, y.view(-1, 1).to(logits.device), float("inf"))
    return logits.argmin(1)
