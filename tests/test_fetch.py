"""Dataset fetching against a local HTTP server (with Range support) serving tiny archives in the real formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("httpx")

from advsal.data import DataError, load_dataset  # noqa: E402
from advsal.data import fetch as fetch_module  # noqa: E402
from advsal.data.fetch import Remote, RemoteDataset, fetch  # noqa: E402

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def mnist_files(rng: np.random.Generator) -> dict[str, bytes]:
    return {"train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (20, 28, 28))),
            "train-labels-idx1-ubyte.gz": idx_gz(np.arange(20) % 10),
            "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (10, 28, 28))),
            "t10k-labels-idx1-ubyte.gz": idx_gz(np.arange(10) % 10)}


def cifar_archive(rng: np.random.Generator) -> bytes:
    """``cifar-10-python.tar.gz``'s layout: cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, obj: dict) -> None:
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i in range(1, 6):
            add(f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(),
                                    b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8),
                                    b"labels": [(i + k) % 10 for k in range(4)],
                                    b"filenames": [f"img{i}_{k}.png".encode() for k in range(4)]})
        add("test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4],
                           b"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8),
                           b"filenames": [b"t0.png", b"t1.png", b"t2.png"]})
        add("batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                                              b"frog", b"horse", b"ship", b"truck"], b"num_cases_per_batch": 4,
                             b"num_vis": 3072})
    return buf.getvalue()


class Server:
    """Serves ``files`` (path → bytes) with Range support; paths in ``cut`` get half a body, once."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut:  # the connection drops half-way
                    server.cut.discard(self.path)
                    self.wfile.write(body[start:len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, name: str, files: dict[str, bytes], md5s: dict[str, str] | None = None,
              unpacks_to: str | None = None) -> RemoteDataset:
        for fname, data in files.items():
            self.files[f"/{name}/{fname}"] = data
        md5s = md5s or {f: hashlib.md5(d).hexdigest() for f, d in files.items()}
        return RemoteDataset(name, tuple(Remote(f, md5s[f], (f"{self.url}/{name}/{f}",)) for f in files),
                             unpacks_to)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVSAL_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_mnist_downloads_verifies_and_loads_then_serves_from_the_cache_offline(server, cache, monkeypatch):
    files = mnist_files(np.random.default_rng(0))
    monkeypatch.setitem(fetch_module.SOURCES, "mnist", server.serve("mnist-good", files))
    train, test = load_dataset("mnist", download=True)
    assert (len(train), len(test)) == (20, 10) and train.x.shape[1:] == (1, 28, 28)
    assert train.y.tolist() == [i % 10 for i in range(20)]
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(MNIST_FILES)  # no partial files left
    expected = np.frombuffer(gzip.decompress(files["t10k-images-idx3-ubyte.gz"])[16:], np.uint8)
    assert np.allclose(test.x.numpy().ravel(), expected / 255.0)
    # cached: no network needed, with or without download (the URLs now point nowhere)
    dead = RemoteDataset("mnist", tuple(Remote(f, hashlib.md5(files[f]).hexdigest(), ("http://127.0.0.1:9/x",))
                                        for f in MNIST_FILES))
    monkeypatch.setitem(fetch_module.SOURCES, "mnist", dead)
    assert len(load_dataset("mnist", download=True)[0]) == 20 and len(load_dataset("mnist")[1]) == 10


def test_cifar10_archive_is_verified_unpacked_and_loaded(server, cache, monkeypatch):
    archive = {"cifar-10-python.tar.gz": cifar_archive(np.random.default_rng(1))}
    monkeypatch.setitem(fetch_module.SOURCES, "cifar10",
                        server.serve("cifar", archive, unpacks_to="cifar-10-batches-py"))
    train, test = load_dataset("cifar10", download=True)
    assert (len(train), len(test)) == (20, 3) and train.x.shape[1:] == (3, 32, 32)
    assert test.y.tolist() == [3, 1, 4]
    assert not [p for p in (cache / "cifar10").iterdir() if p.name.startswith(".")]  # no temporary folders
    assert (cache / "cifar10" / "cifar-10-batches-py").stat().st_mode & 0o777 == 0o755  # readable in a shared cache


def test_an_interrupted_download_resumes_with_a_range_request(server, cache, monkeypatch):
    files = mnist_files(np.random.default_rng(2))
    source = server.serve("mnist-cut", files)
    server.cut.add("/mnist-cut/train-images-idx3-ubyte.gz")
    server.ranges.clear()
    monkeypatch.setitem(fetch_module.SOURCES, "mnist", source)
    folder = fetch("mnist")
    half = len(files["train-images-idx3-ubyte.gz"]) // 2
    assert server.ranges[:2] == [None, f"bytes={half}-"]  # the second request asks only for the rest
    assert (folder / "train-images-idx3-ubyte.gz").read_bytes() == files["train-images-idx3-ubyte.gz"]
    assert len(load_dataset("mnist")[0]) == 20


def test_a_corrupt_archive_is_rejected_and_nothing_half_written_stays(server, cache, monkeypatch):
    files = mnist_files(np.random.default_rng(3))
    md5s = {f: hashlib.md5(d).hexdigest() for f, d in files.items()} | {"t10k-images-idx3-ubyte.gz": "f" * 32}
    source = server.serve("mnist-bad", files, md5s)
    monkeypatch.setitem(fetch_module.SOURCES, "mnist", source)
    with pytest.raises(DataError, match=rf"{server.url}/mnist-bad/t10k-images-idx3-ubyte.gz.*expected f{{32}}"):
        load_dataset("mnist", download=True)
    left = sorted(p.name for p in (cache / "mnist").iterdir())
    assert "t10k-images-idx3-ubyte.gz" not in left and not [n for n in left if n.endswith(".part")]
    with pytest.raises(DataError, match="advsal data fetch mnist"):  # not cached: the loader says how to get it
        load_dataset("mnist")


def test_a_bad_mirror_falls_back_to_the_next_url(server, cache, monkeypatch):
    files = mnist_files(np.random.default_rng(4))
    good = server.serve("mnist-good", files)
    server.serve("mnist-junk", {f: b"<html>captive portal</html>" for f in files})
    both = RemoteDataset("mnist", tuple(Remote(r.filename, r.md5, (f"{server.url}/mnist-junk/{r.filename}",
                                                                  *r.urls)) for r in good.files))
    monkeypatch.setitem(fetch_module.SOURCES, "mnist", both)
    folder = fetch("mnist")  # the first URL's bytes fail the checksum; the second URL's are kept
    assert (folder / "train-images-idx3-ubyte.gz").read_bytes() == files["train-images-idx3-ubyte.gz"]
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")  # damaged in the cache: fetched again, not trusted
    fetch("mnist")
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == files["t10k-labels-idx1-ubyte.gz"]


def test_no_network_names_the_files_and_the_folder_to_place_them_in(cache, monkeypatch):
    dead = RemoteDataset("fashion-mnist", tuple(Remote(f, "0" * 32, (f"http://127.0.0.1:9/{f}",))
                                                for f in MNIST_FILES))
    monkeypatch.setitem(fetch_module.SOURCES, "fashion-mnist", dead)
    with pytest.raises(DataError) as info:
        fetch("fashion-mnist")
    message = str(info.value)
    assert "\n" not in message and str(cache / "fashion-mnist") in message
    assert all(f in message for f in MNIST_FILES)


def test_published_checksums_and_mirror_order():
    mnist = fetch_module.SOURCES["mnist"].files[0]
    assert mnist.md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873" and "yann.lecun.com" in mnist.urls[-1]
    assert "yann.lecun.com" not in mnist.urls[0]
    assert fetch_module.SOURCES["cifar10"].files[0].md5 == "c58f30108f718f92721af3b95e74349a"
