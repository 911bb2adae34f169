"""The ImageSet container and the operations on it: subsets, stratified splits, class depletion."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import AdvsalError


class DataError(AdvsalError, ValueError):
    """Raised for missing, corrupt or inconsistent data; the message names the problem and the fix."""


class DataWarning(UserWarning):
    """Data was read, but some of it was skipped (non-image files, empty or extra class folders)."""


@dataclass
class ImageSet:
    """A labelled image set: ``x`` float32 NCHW in [0, 1], ``y`` int64 class indices, ``classes`` names."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    name: str = "images"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_arrays(self.x, self.y, len(self.classes), self.name)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x.shape[2]), int(self.x.shape[3])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y.cpu().numpy(), minlength=self.num_classes)

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None) -> ImageSet:
        """The examples at ``index`` (order kept), as a new ImageSet."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return ImageSet(self.x[idx], self.y[idx], list(self.classes), name or self.name, dict(self.meta))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]

    def describe(self) -> str:
        c, h, w = self.x.shape[1:]
        return f"{self.name}: {len(self)} images {c}x{h}x{w}, {self.num_classes} classes"


def validate_arrays(x: torch.Tensor, y: torch.Tensor, num_classes: int, name: str) -> None:
    """Raise DataError unless x/y form a valid image set (see ImageSet)."""
    if x.dim() != 4:
        raise DataError(f"{name}: images must be NCHW, got shape {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise DataError(f"{name}: images must be float32 in [0, 1], got {x.dtype}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{name}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
    if y.dtype != torch.int64:
        raise DataError(f"{name}: labels must be int64, got {y.dtype}")
    if x.numel() and torch.isnan(x).any():
        raise DataError(f"{name}: {int(torch.isnan(x).flatten(1).any(1).sum())} images contain NaN pixels; "
                        "remove or repair them")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{name}: pixels must lie in [0, 1] (found {x.min().item():.3g}..{x.max().item():.3g}); "
                        "scale 8-bit images by 1/255")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{name}: labels must be in 0..{num_classes - 1} ({num_classes} classes), found "
                        f"{y.min().item()}..{y.max().item()}")


def stratified_split(data: ImageSet, test_size: int | float, seed: int = 0,
                     names: tuple[str, str] | None = None) -> tuple[ImageSet, ImageSet]:
    """Split into two sets with the same class proportions, deterministically for a seed.

    ``test_size`` is a count or a fraction of the set.
    """
    n = len(data)
    n_test = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < n:
        raise DataError(f"{data.name}: cannot split {n} images into {n - n_test} + {n_test}")
    rng = np.random.default_rng(seed)
    y = data.y.cpu().numpy()
    test_idx: list[np.ndarray] = []
    # Per-class quotas by largest remainder, so the total is exactly n_test.
    counts = np.bincount(y, minlength=data.num_classes)
    quota = counts * n_test / n
    take = np.floor(quota).astype(int)
    for c in np.argsort(-(quota - take), kind="stable")[: n_test - take.sum()]:
        take[c] += 1
    for c in range(data.num_classes):
        members = np.flatnonzero(y == c)
        test_idx.append(rng.permutation(members)[: take[c]])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(n), test)
    a, b = names or (f"{data.name}-train", f"{data.name}-test")
    return data.subset(rng.permutation(train), a), data.subset(test, b)


def subset(data: ImageSet, n: int, seed: int = 0, stratified: bool = True) -> ImageSet:
    """``n`` examples drawn without replacement (class-stratified by default)."""
    if n >= len(data):
        return data
    if stratified:
        return stratified_split(data, n, seed, (data.name, data.name))[1]
    idx = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    return data.subset(idx)


def deplete_class(data: ImageSet, cls: int, n_remove: int | float, seed: int = 0) -> ImageSet:
    """Remove ``n_remove`` examples (a count, or a fraction of that class) of class ``cls``; keep all others.

    Seed 002 §5.4 removes 4,000 of the 5,000 CIFAR-10 training images of one class (80%).
    """
    if not 0 <= cls < data.num_classes:
        raise DataError(f"class {cls} does not exist (valid: 0..{data.num_classes - 1})")
    members = np.flatnonzero(data.y.cpu().numpy() == cls)
    k = int(round(n_remove * len(members))) if isinstance(n_remove, float) else int(n_remove)
    if not 0 <= k <= len(members):
        raise DataError(f"cannot remove {k} images of class {cls}: it has {len(members)}")
    removed = np.random.default_rng(seed).choice(members, k, replace=False)
    keep = np.setdiff1d(np.arange(len(data)), removed)
    out = data.subset(keep, f"{data.name}-deplete{cls}")
    out.meta.update(depleted_class=cls, removed=k)
    return out
