"""Loaders on small files written in the real formats, their malformed variants, splits and depletion."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from advsal.data import DataError, ImageSet, deplete_class, load_dataset, stratified_split, subset
from advsal.data.loaders import read_image_folder


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist_dir(root, n_train=20, n_test=10, gz=False, rng=None):
    rng = rng or np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (x, y)
        for kind, arr, nd in (("images", x, 3), ("labels", y, 1)):
            name = f"{split}-{kind}-idx{nd}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
    arrays = write_mnist_dir(tmp_path / "m", gz=gz)
    train, test = load_dataset("mnist", root=tmp_path / "m")
    assert train.x.shape == (20, 1, 28, 28) and test.x.shape == (10, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    np.testing.assert_allclose(train.x[:, 0].numpy() * 255, arrays["train"][0], atol=1e-3)
    assert train.y.tolist() == arrays["train"][1].tolist()


def test_fashion_mnist_uses_fashion_classes(tmp_path):
    write_mnist_dir(tmp_path / "f")
    train, _ = load_dataset("fashion-mnist", root=tmp_path / "f")
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"


def test_mnist_missing_dir_names_expected_files(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path / "nothing")


def test_mnist_missing_one_file(tmp_path):
    write_mnist_dir(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path / "m")


def test_mnist_bad_magic(tmp_path):
    write_mnist_dir(tmp_path / "m")
    p = tmp_path / "m" / "train-images-idx3-ubyte"
    p.write_bytes(b"\x12\x34" + p.read_bytes()[2:])
    with pytest.raises(DataError, match="magic"):
        load_dataset("mnist", root=tmp_path / "m")


def test_mnist_truncated(tmp_path):
    write_mnist_dir(tmp_path / "m")
    p = tmp_path / "m" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", root=tmp_path / "m")


def test_mnist_corrupt_gzip(tmp_path):
    write_mnist_dir(tmp_path / "m", gz=True)
    p = tmp_path / "m" / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:15])
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", root=tmp_path / "m")


def test_mnist_label_count_mismatch(tmp_path):
    write_mnist_dir(tmp_path / "m")
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="20 images but"):
        load_dataset("mnist", root=tmp_path / "m")


def test_mnist_label_out_of_range(tmp_path):
    write_mnist_dir(tmp_path / "m")
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 12, np.uint8)))
    with pytest.raises(DataError, match="labels must be in 0..9"):
        load_dataset("mnist", root=tmp_path / "m")


def write_cifar(root, n=8, rng=None):
    rng = rng or np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):  # the real folder's files
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        d[b"labels"] = [int(v) for v in d[b"labels"]]
        (root / name).write_bytes(pickle.dumps(d))
        batches[name] = d
    return batches


def test_cifar_batches(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    train, test = load_dataset("cifar10", root=tmp_path)  # parent folder is accepted too
    assert train.x.shape == (40, 3, 32, 32) and test.x.shape == (8, 3, 32, 32)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    np.testing.assert_allclose(train.x[0].numpy() * 255, first, atol=1e-3)
    assert train.classes[3] == "cat"
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()  # a half-unpacked archive is not a smaller CIFAR
    with pytest.raises(DataError, match="missing data_batch_4"):
        load_dataset("cifar10", root=tmp_path)


def test_inputs_that_would_load_wrong_are_refused(tmp_path):
    from PIL import Image

    root = tmp_path / "folder"
    for cls in ("a", "b", ".ipynb_checkpoints"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 40, np.uint8)).save(root / cls / "x.png")
    data = read_image_folder(root, 8, 1, "f")
    assert data.classes == ["a", "b"]  # a hidden folder is not a class
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(root / "a" / "deep.png")
    with pytest.raises(DataError, match="I;16 image"):  # Pillow's convert would clip it to 255
        read_image_folder(root, 8, 1, "f")
    with pytest.raises(DataError, match="channels"):
        read_image_folder(root, 8, 4, "f")
    for arrays, message in [
        ({"x": np.zeros((4, 8, 8, 4), np.float32), "y": np.zeros(4, int)}, "1 or 3 channels"),  # RGBA
        ({"x": np.zeros((4, 8, 8), np.float32), "y": np.array(list("abcd"))}, "must be integers"),
        ({"x_train": np.zeros((4, 8, 8), np.float32), "y_train": np.zeros(4, int),
          "x_test": np.zeros((2, 3, 16, 16), np.float32), "y_test": np.zeros(2, int)}, "one shape"),
    ]:
        np.savez(tmp_path / "d.npz", **arrays)
        with pytest.raises(DataError, match=message):
            load_dataset("npz", root=tmp_path / "d.npz")


def test_cifar_refuses_foreign_pickle(tmp_path):
    root = tmp_path / "c"
    write_cifar(root)
    (root / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8),
                                                    b"labels": [0], b"evil": pytest.raises}))
    with pytest.raises(DataError, match="refusing"):
        load_dataset("cifar10", root=root)


def test_cifar_wrong_shape(tmp_path):
    root = tmp_path / "c"
    write_cifar(root)
    (root / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="3072"):
        load_dataset("cifar10", root=root)


def test_cifar_missing(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset("cifar10", root=tmp_path / "c")


def write_folder(root, classes=("cat", "dog"), per_class=5, size=(20, 16)):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_split_and_resize(tmp_path):
    write_folder(tmp_path / "imgs")
    train, test = load_dataset("imagefolder", root=tmp_path / "imgs", size=12)
    assert train.x.shape[1:] == (3, 12, 12)
    assert len(train) + len(test) == 10 and sorted(set(test.y.tolist())) == [0, 1]
    assert train.classes == ["cat", "dog"]


def test_imagefolder_train_test_dirs(tmp_path):
    write_folder(tmp_path / "r" / "train", per_class=3)
    write_folder(tmp_path / "r" / "val", per_class=2)
    train, test = load_dataset("imagefolder", root=tmp_path / "r", size=8)
    assert len(train) == 6 and len(test) == 4


def test_imagefolder_corrupt_image(tmp_path):
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png"):
        load_dataset("imagefolder", root=tmp_path / "imgs", size=8)


def test_imagefolder_empty(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="class sub-folders"):
        load_dataset("imagefolder", root=tmp_path / "e")


def test_npz_variants(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)  # NHWC uint8
    y = np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    train, test = load_dataset("npz", root=tmp_path / "d.npz")
    assert train.x.shape[1:] == (3, 8, 8) and len(train) + len(test) == 30 and train.classes == ["a", "b", "c"]
    np.savez(tmp_path / "e.npz", x_train=np.zeros((4, 5, 5), np.float32), y_train=np.array([0, 1, 0, 1]),
             x_test=np.ones((2, 5, 5), np.float32), y_test=np.array([1, 0]))
    train, test = load_dataset("npz", root=tmp_path / "e.npz")
    assert train.x.shape == (4, 1, 5, 5) and float(test.x.max()) == 1.0


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.full((4, 1, 5, 5), np.nan, np.float32), "y": np.zeros(4, int)}, "NaN"),
    ({"x": np.full((4, 1, 5, 5), 3.0, np.float32), "y": np.zeros(4, int)}, r"\[0, 1\]"),
    ({"x": np.zeros((4, 1, 5, 5), np.float32), "y": np.zeros(3, int)}, "labels of shape"),
    ({"x": np.zeros((4, 1, 5, 5), np.float32), "y": np.zeros(4, np.float32)}, "integers"),
    ({"x": np.zeros((4, 5), np.float32), "y": np.zeros(4, int)}, "dimensions"),
    ({"images": np.zeros((4, 1, 5, 5), np.float32)}, "needs arrays x and y"),
])
def test_npz_malformed(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset("npz", root=tmp_path / "bad.npz")


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable"):
        load_dataset("npz", root=tmp_path / "x.npz")


def test_unknown_dataset_lists_names():
    with pytest.raises(DataError, match="available: mnist5k"):
        load_dataset("imagenet-full")


def test_mnist5k_shape_labels_balance(mnist5k):
    train, test = mnist5k
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.class_counts().tolist() == [400] * 10 and test.class_counts().tolist() == [100] * 10
    assert 0 <= float(train.x.min()) and float(train.x.max()) <= 1 and float(train.x.max()) > 0.99
    again, _ = load_dataset("mnist5k")
    assert torch.equal(again.x, train.x)  # deterministic
    # no image in both splits
    tr = {hash(r.numpy().tobytes()) for r in train.x}
    assert not any(hash(r.numpy().tobytes()) in tr for r in test.x)


def test_digits():
    train, test = load_dataset("digits")
    assert train.x.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797


def small_set(n_per_class=(10, 10, 10)):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)]).long()
    x = torch.rand(len(y), 1, 4, 4)
    return ImageSet(x, y, ["a", "b", "c"], "toy")


def test_stratified_split_keeps_proportions():
    data = small_set((20, 10, 10))
    a, b = stratified_split(data, 0.5, seed=1)
    assert b.class_counts().tolist() == [10, 5, 5] and a.class_counts().tolist() == [10, 5, 5]
    assert subset(data, 8).class_counts().tolist() == [4, 2, 2]


def test_deplete_class_removes_exact_share_only():
    data = small_set((10, 10, 10))
    out = deplete_class(data, 1, 0.8, seed=0)
    assert out.class_counts().tolist() == [10, 2, 10]
    # every kept image is one of the originals, the other classes untouched
    kept0 = out.x[out.y == 0]
    assert torch.equal(kept0, data.x[data.y == 0])
    assert deplete_class(data, 2, 3).class_counts().tolist() == [10, 10, 7]
    with pytest.raises(DataError):
        deplete_class(data, 5, 1)
    with pytest.raises(DataError):
        deplete_class(data, 0, 11)


def test_imageset_validation():
    with pytest.raises(DataError, match="labels must be in"):
        ImageSet(torch.zeros(2, 1, 2, 2), torch.tensor([0, 5]), ["a", "b"])
    with pytest.raises(DataError, match="float32"):
        ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 1]), ["a", "b"])


def test_corrupt_gzip_and_image_bomb_are_data_errors(tmp_path):
    import zlib

    from PIL import Image

    from advsal.data import read_idx

    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage-not-deflate")
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(bad, 1)
    root = tmp_path / "folder" / "a"
    root.mkdir(parents=True)
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    assert Image.MAX_IMAGE_PIXELS and 60000 * 60000 > 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="bomb.png: unreadable image"):
        load_dataset("imagefolder", root=tmp_path / "folder", size=8, channels=1)


def test_image_folder_warns_about_what_it_skips(tmp_path):
    from PIL import Image

    from advsal.data import DataWarning

    for split, classes in (("train", ["a", "b", "c"]), ("test", ["a", "b", "c", "extra"])):
        for cls in classes:
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            if cls != "c":
                for i in range(2):
                    Image.new("L", (4, 4), 40 * i).save(folder / f"{i}.png")
    (tmp_path / "train" / "a" / "notes.txt").write_text("x")
    (tmp_path / "train" / "a" / "nested").mkdir()
    with pytest.warns(DataWarning) as record:
        train, test = load_dataset("imagefolder", root=tmp_path, size=4, channels=1)
    messages = " | ".join(str(w.message) for w in record)
    assert "skipped 2 entries" in messages and "1 class folder(s) hold no images: c" in messages
    assert "ignoring 1 folder(s) that are not training classes: extra" in messages
    assert len(train) == 4 and train.classes == ["a", "b", "c"]
