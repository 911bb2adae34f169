"""Image sets with ground-truth object masks, for localisation scores of explanations (seed 003 §5.2).

Seed 003 evaluates on DDSM mammograms with delineated lesions, which cannot be had offline.
``cluttered-mnist`` is the stand-in: canvases holding several MNIST digits at random, non-overlapping places,
labelled positive iff one of them is of the "finding" class, whose pixels form the ground-truth mask — like a
malignant lesion among benign structure, the model is trained on image labels only and never sees the masks.

``LocalizationSet`` is an ``ImageSet`` with a ``masks`` tensor (N, H, W) bool that follows every subset and
split, so it can be used wherever an ImageSet is expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .imageset import DataError, ImageSet, stratified_split
from .loaders import IMAGE_SUFFIXES, load_mnist5k, register_dataset

LOCALIZATION_CLASSES = ["negative", "positive"]


@dataclass
class LocalizationSet(ImageSet):
    """An ImageSet with one ground-truth object mask per image: ``masks`` (N, H, W) bool (all False when the
    image holds no object)."""

    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        n, _, h, w = self.x.shape
        if self.masks is None:
            raise DataError(f"{self.name}: a LocalizationSet needs masks of shape ({n}, {h}, {w})")
        if tuple(self.masks.shape) != (n, h, w):
            raise DataError(f"{self.name}: masks must have shape ({n}, {h}, {w}) to match the images, got "
                            f"{tuple(self.masks.shape)}")
        if self.masks.dtype != torch.bool:
            self.masks = self.masks != 0

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor,
               name: str | None = None) -> LocalizationSet:
        """The examples (and their masks) at ``index``, order kept."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return LocalizationSet(self.x[idx], self.y[idx], list(self.classes), name or self.name,
                               dict(self.meta), self.masks[idx])


def _ink_boxes(x: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Tight bounding box (top, left, bottom, right; exclusive) of the non-zero pixels of each CHW image."""
    boxes = []
    for img in x:
        ink = (img > 0).any(0)
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        if rows.size == 0:
            boxes.append((0, 0, 0, 0))
        else:
            boxes.append((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))
    return boxes


def _place(rng: np.random.Generator, sizes: list[tuple[int, int]], canvas: int, gap: int,
           tries: int = 200) -> list[tuple[int, int]] | None:
    """Random top-left corners for boxes of ``sizes`` with at least ``gap`` pixels between any two; None if
    the random search fails."""
    placed: list[tuple[int, int, int, int]] = []
    for h, w in sizes:
        for _ in range(tries):
            t, left = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
            if all(t >= b + gap or t + h + gap <= a or left >= r + gap or left + w + gap <= c
                   for a, c, b, r in placed):
                placed.append((t, left, t + h, left + w))
                break
        else:
            return None
    return [(a, c) for a, c, _, _ in placed]


def make_cluttered_mnist(source: ImageSet, n: int, canvas: int = 64,
                         digits_per_image: tuple[int, int] = (2, 4), finding_class: int = 0,
                         positive_fraction: float = 0.5, mask_threshold: float = 0.0, gap: int = 2,
                         seed: int | Sequence[int] = 0, name: str | None = None, background: str = "black",
                         background_level: float = 0.3) -> LocalizationSet:
    """``n`` canvas×canvas images, each holding k ∈ ``digits_per_image`` (inclusive) digits of ``source``
    cropped to their ink and pasted at random positions at least ``gap`` pixels apart (so they never overlap
    or touch).

    A share ``positive_fraction`` of the canvases are positive (label 1): exactly one of their digits is of
    class ``finding_class`` and the ground-truth mask is that digit's pixels brighter than ``mask_threshold``
    (default: every pixel it inks). Negative canvases (label 0) hold no digit of that class and an empty
    mask. Source digits are drawn with replacement within ``source`` only — build train canvases from a train
    split and test canvases from a test split so that no digit appears in both.

    ``background``: ``"black"`` (0 everywhere off the digits, the default), ``"noise"`` (i.i.d. uniform values
    in [0, ``background_level``] per pixel) or ``"texture"`` (that noise blurred with σ = 2 px and rescaled to
    [0, ``background_level``] per image: smooth blobs). Digit ink (values > 0) replaces the background; the
    masks are unchanged. With a non-constant background, deleting background is no longer free: a 'min' or
    'blur' deletion image differs from the canvas there, so L0 counts what a deletion mask covers. The
    background draws come from their own seeded stream, so ``"black"`` canvases are the same as before.
    """
    if background not in BACKGROUNDS:
        raise DataError(f"background {background!r} is unknown; use one of {', '.join(BACKGROUNDS)}")
    if not 0 < background_level <= 1:
        raise DataError(f"background_level must be in (0, 1], got {background_level}")
    lo, hi = (int(v) for v in digits_per_image)
    if n < 1:
        raise DataError(f"n must be at least 1 canvas, got {n}")
    if not 1 <= lo <= hi:
        raise DataError(f"digits_per_image must be (min, max) with 1 ≤ min ≤ max, got {digits_per_image}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise DataError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    if not 0 <= finding_class < source.num_classes:
        raise DataError(f"finding_class {finding_class} is not a class of {source.name} "
                        f"(valid: 0..{source.num_classes - 1})")
    if gap < 0 or mask_threshold < 0:
        raise DataError(f"gap and mask_threshold must be ≥ 0, got {gap} and {mask_threshold}")
    x = source.x.numpy()
    y = source.y.numpy()
    boxes = _ink_boxes(x)
    usable = np.array([b[2] > b[0] for b in boxes])
    findings = np.flatnonzero(usable & (y == finding_class))
    others = np.flatnonzero(usable & (y != finding_class))
    n_pos = int(round(positive_fraction * n))
    if n_pos and findings.size == 0:
        raise DataError(f"{source.name} holds no (non-blank) image of finding class {finding_class}")
    if others.size == 0 and (hi > 1 or n_pos < n):
        raise DataError(f"{source.name} holds no (non-blank) image outside the finding class {finding_class}")
    if max(max(b[2] - b[0], b[3] - b[1]) for b in boxes) > canvas:
        raise DataError(f"canvas {canvas} is smaller than the source digits; use canvas ≥ {x.shape[2]}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.r_[np.ones(n_pos, np.int64), np.zeros(n - n_pos, np.int64)])
    c = x.shape[1]
    out = np.zeros((n, c, canvas, canvas), np.float32)
    masks = np.zeros((n, canvas, canvas), bool)
    for i, positive in enumerate(labels):
        for _ in range(100):
            k = int(rng.integers(lo, hi + 1))
            chosen = list(rng.choice(others, k - 1 if positive else k)) if others.size else []
            if positive:
                chosen.insert(int(rng.integers(0, k)), int(rng.choice(findings)))
            sizes = [(boxes[j][2] - boxes[j][0], boxes[j][3] - boxes[j][1]) for j in chosen]
            corners = _place(rng, sizes, canvas, gap)
            if corners is not None:
                break
        else:
            raise DataError(f"could not fit {hi} digits {gap} pixels apart on a {canvas}×{canvas} canvas; "
                            "use a larger canvas, fewer digits per image or a smaller gap")
        for j, (t, left) in zip(chosen, corners, strict=True):
            a, b, bottom, right = boxes[j]
            crop = x[j, :, a:bottom, b:right]
            out[i, :, t:t + bottom - a, left:left + right - b] = crop
            if y[j] == finding_class:
                masks[i, t:t + bottom - a, left:left + right - b] = crop.max(0) > mask_threshold
    if background != "black":
        out = np.where(out > 0, out, _background(background, background_level, out.shape, seed))
    meta = {"finding_class": int(finding_class), "finding_name": source.classes[finding_class],
            "source": source.name, "canvas": int(canvas), "digits_per_image": [lo, hi], "background": background}
    return LocalizationSet(torch.from_numpy(out), torch.from_numpy(labels), list(LOCALIZATION_CLASSES),
                           name or f"cluttered-{source.name}", meta, torch.from_numpy(masks))


def _background(kind: str, level: float, shape: tuple[int, ...], seed: int | Sequence[int]) -> np.ndarray:
    """Background canvases for :func:`make_cluttered_mnist` from a stream of their own."""
    from scipy import ndimage

    key = [seed] if isinstance(seed, int) else list(seed)
    rng = np.random.default_rng([*key, 7919])
    bg = rng.random(shape, dtype=np.float32)
    if kind == "texture":
        bg = ndimage.gaussian_filter(bg, sigma=(0, 0, 2, 2))
        lo = bg.min(axis=(1, 2, 3), keepdims=True)
        bg = (bg - lo) / np.maximum(bg.max(axis=(1, 2, 3), keepdims=True) - lo, 1e-8)
    return (level * bg).astype(np.float32)


BACKGROUNDS = ("black", "noise", "texture")


def load_cluttered_mnist(root: str | Path | None = None, seed: int = 0, n_train: int = 2000,
                         n_test: int = 500, canvas: int = 64, digits_per_image: tuple[int, int] = (2, 4),
                         finding_class: int = 0, positive_fraction: float = 0.5, background: str = "black",
                         background_level: float = 0.3) -> tuple[LocalizationSet, LocalizationSet]:
    """The "cluttered-mnist" dataset: train canvases from mnist5k's train split, test canvases from its test
    split (split by ``seed``), so no digit appears in both. ``root`` is unused (nothing is read from disk).
    ``background`` / ``background_level``: see :func:`make_cluttered_mnist` (default black, as before)."""
    src_train, src_test = load_mnist5k(seed=seed)
    common = dict(canvas=canvas, digits_per_image=digits_per_image, finding_class=finding_class,
                  positive_fraction=positive_fraction, background=background, background_level=background_level)
    train = make_cluttered_mnist(src_train, n_train, seed=(seed, 1), name="cluttered-mnist-train", **common)
    test = make_cluttered_mnist(src_test, n_test, seed=(seed, 2), name="cluttered-mnist-test",
                                **common)
    return train, test


# --- user data: an image folder with a parallel masks/ folder ---------------------------------------------

def _image_files(folder: Path) -> dict[str, Path]:
    return {f.name: f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES}


def _names(names: Sequence[str], k: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def read_masked_folder(root: str | Path, size: int | None = None, channels: int = 1, name: str | None = None,
                       classes: list[str] | None = None) -> LocalizationSet:
    """Read ``root/<class>/<image>`` with the ground-truth masks at ``root/masks/<class>/<image>`` (same file
    names; lossless files such as PNG; any non-zero mask pixel belongs to the object, so 0/1 and 0/255 masks
    both work; images without an object need an all-black mask). With ``size`` images are resized to size×size
    (bilinear) and masks likewise (nearest); without it all images must share one size.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    name = name or root.name
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; expected {root}/<class>/<images> and "
                        f"{root}/masks/<class>/<masks>")
    mask_root = root / "masks"
    if not mask_root.is_dir():
        raise DataError(f"{root}: missing the masks/ folder; put each image's ground-truth mask at "
                        f"{mask_root}/<class>/<same file name>")
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "masks")
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<image files>")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if size is not None and size < 1:
        raise DataError(f"size must be a positive number of pixels, got {size}")
    mode = "L" if channels == 1 else "RGB"
    xs, ys, ms = [], [], []

    def read(path: Path, as_mode: str) -> Image.Image:
        try:
            with Image.open(path) as im:
                return im.convert(as_mode)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: unreadable image ({exc}); remove or replace the file") from exc

    for label, cls in enumerate(classes):
        if not (root / cls).is_dir():
            raise DataError(f"{root}: missing class folder {cls!r} (expected classes: {classes})")
        images = _image_files(root / cls)
        masks = _image_files(mask_root / cls) if (mask_root / cls).is_dir() else {}
        if missing := set(images) - set(masks):
            raise DataError(f"{root}: {len(missing)} image(s) of class {cls!r} have no mask in "
                            f"{mask_root / cls}: {_names(missing)}; add a mask with the same file name "
                            "(all black if no object)")
        if extra := set(masks) - set(images):
            raise DataError(f"{mask_root / cls}: {len(extra)} mask(s) have no image in {root / cls}: "
                            f"{_names(extra)}; remove them or add the images")
        for fname, path in images.items():
            im, mk = read(path, mode), read(masks[fname], "L")
            if im.size != mk.size:
                raise DataError(f"{masks[fname]}: mask is {mk.size[0]}×{mk.size[1]} but its image is "
                                f"{im.size[0]}×{im.size[1]}; masks must have their image's size")
            if size is not None:
                im = im.resize((size, size), Image.BILINEAR)
                mk = mk.resize((size, size), Image.NEAREST)
            arr = np.asarray(im, dtype=np.uint8)
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ms.append(np.asarray(mk) > 0)
            ys.append(label)
    if not xs:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"{root}: images have different sizes ({_names([str(s[1:]) for s in shapes])}); "
                        "pass size=N to resize them all to N×N")
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255.0)
    return LocalizationSet(x, torch.tensor(ys, dtype=torch.int64), list(classes), name, {"root": str(root)},
                           torch.from_numpy(np.stack(ms)))


def load_masked_folder(root: str | Path | None = None, seed: int = 0, size: int | None = None,
                       channels: int = 1, test_size: float = 0.2) -> tuple[LocalizationSet, LocalizationSet]:
    """A user dataset of images + masks as ``(train, test)``: ``root/train`` and ``root/test`` (each laid out
    as in :func:`read_masked_folder`) when both exist, else one such folder split ``test_size`` stratified by
    ``seed``."""
    if root is None or not Path(root).is_dir():
        raise DataError(f"masked-folder needs --root DIR holding <class>/<images> and masks/<class>/<masks> "
                        f"with the same file names (optionally under train/ and test/); got {root!r}")
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = read_masked_folder(root / "train", size, channels, "masked-folder-train")
        return train, read_masked_folder(root / "test", size, channels, "masked-folder-test", train.classes)
    data = read_masked_folder(root, size, channels, "masked-folder")
    train, test = stratified_split(data, test_size, seed, ("masked-folder-train", "masked-folder-test"))
    return train, test  # type: ignore[return-value]


register_dataset("cluttered-mnist", "mnist5k digits on 64x64 canvases; positive iff a 0 is present; "
                 "object masks (2,000/500)", False, load_cluttered_mnist)
register_dataset("masked-folder", "class sub-folders of images + masks/ with the same file names in --root",
                 True, load_masked_folder)
