"""Fetching the real datasets: canonical archives, their published checksums, resumable downloads, a verified cache.

``fetch("mnist")`` returns a folder the dataset's loader reads (``load_dataset(name, download=True)`` calls it).
Each file is downloaded to ``DIR/.FILE.part`` (resumed with an HTTP ``Range`` request after an interruption),
its MD5 checked against the published value, and only then renamed into place; an archive is unpacked into a
temporary folder that is renamed into place when complete. So a file under its final name in the cache has always
been verified, and a cached dataset loads without network. The cache is ``$ADVSAL_DATA`` (default
``~/.cache/advsal``), one folder per dataset.

Sources: MNIST from the mirror torchvision uses (the original yann.lecun.com host is unreliable, kept as a
fallback), Fashion-MNIST from Zalando's S3 bucket, CIFAR-10 from cs.toronto.edu; MD5s as published there (and
listed by torchvision).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .imageset import DataError

ATTEMPTS = 3  # per URL: an interrupted transfer is resumed from its partial file this many times


@dataclass(frozen=True)
class Remote:
    """One file of a dataset: its name, published MD5 and the URLs it is served from (tried in order)."""

    filename: str
    md5: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class RemoteDataset:
    """A fetchable dataset: its files and, for an archive, the folder it unpacks to (the loader's root)."""

    name: str
    files: tuple[Remote, ...]
    unpacks_to: str | None = None  # a tar.gz archive's top folder, else the files are read as they are


def _mirrored(filename: str, md5: str, bases: tuple[str, ...]) -> Remote:
    return Remote(filename, md5, tuple(base + filename for base in bases))


_MNIST_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_BASES = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

SOURCES: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset("mnist", (
        _mirrored("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_BASES),
        _mirrored("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", _MNIST_BASES),
        _mirrored("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", _MNIST_BASES),
        _mirrored("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", _MNIST_BASES))),
    "fashion-mnist": RemoteDataset("fashion-mnist", (
        _mirrored("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _FASHION_BASES),
        _mirrored("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", _FASHION_BASES),
        _mirrored("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", _FASHION_BASES),
        _mirrored("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", _FASHION_BASES))),
    "cifar10": RemoteDataset("cifar10", (
        Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
               ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),), unpacks_to="cifar-10-batches-py"),
}


def data_home() -> Path:
    """The dataset cache: ``$ADVSAL_DATA``, default ``~/.cache/advsal``."""
    return Path(os.environ.get("ADVSAL_DATA") or Path.home() / ".cache" / "advsal").expanduser()


def dataset_dir(name: str, directory: str | Path | None = None) -> Path:
    """Where dataset ``name`` is kept: ``directory`` when given, else its folder in :func:`data_home`."""
    _source(name)
    return Path(directory) if directory is not None else data_home() / name


def is_cached(name: str, directory: str | Path | None = None) -> bool:
    """Whether every file of ``name`` (or its unpacked archive) is in place — verified when it was put there."""
    source, folder = _source(name), dataset_dir(name, directory)
    if source.unpacks_to is not None:
        return (folder / source.unpacks_to).is_dir()
    return all((folder / f.filename).is_file() for f in source.files)


def fetch(name: str, directory: str | Path | None = None, *,
          on_progress: Callable[[str, int, int | None], None] | None = None) -> Path:
    """Download (or find in the cache) dataset ``name`` and return the folder its loader reads.

    Files already in place are not downloaded again (no network needed). ``on_progress(filename, done, total)``
    is called as bytes arrive. Raises :class:`DataError` on a checksum mismatch (naming the URL and the expected
    MD5; the partial file is deleted) or when no URL can be reached (naming the files and the folder to place
    them in by hand)."""
    source, folder = _source(name), dataset_dir(name, directory)
    for remote in source.files:  # a file placed by hand (or damaged since) is checked, not trusted by its name
        path = folder / remote.filename
        if path.is_file() and _md5(path) != remote.md5:
            path.unlink()
    if is_cached(name, folder):
        return folder
    try:
        import httpx
    except ImportError:
        raise DataError(f"downloading {name} needs httpx: pip install 'advsal[fetch]' — or {_by_hand(source, folder)}"
                        ) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder} ({exc.strerror}); set ADVSAL_DATA or --dir to a writable "
                        "folder") from None
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        for remote in source.files:
            if not (folder / remote.filename).is_file():
                _download(client, remote, folder, source, on_progress)
    if source.unpacks_to is not None:
        _unpack(folder / source.files[0].filename, folder, source.unpacks_to)
    return folder


def _source(name: str) -> RemoteDataset:
    if name not in SOURCES:
        raise DataError(f"no download for dataset {name!r}; fetchable: {', '.join(SOURCES)}")
    return SOURCES[name]


def _by_hand(source: RemoteDataset, folder: Path) -> str:
    files = ", ".join(f"{f.filename} ({f.urls[0]})" for f in source.files)
    return f"place {files} in {folder} by hand (or set ADVSAL_DATA / --dir to a folder holding them)"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(client, remote: Remote, folder: Path, source: RemoteDataset,
              on_progress: Callable[[str, int, int | None], None] | None) -> None:
    """Fetch ``remote`` into ``folder``: resume ``.FILE.part`` with a Range request, verify the MD5, rename."""
    import httpx

    part = folder / f".{remote.filename}.part"
    errors: dict[str, str] = {}  # the last failure per URL
    for url in remote.urls:
        for _ in range(ATTEMPTS):
            try:
                _transfer(client, url, part, remote.filename, on_progress)
            except httpx.HTTPStatusError as exc:
                errors[url] = f"{url}: HTTP {exc.response.status_code}"
                break  # this URL does not serve the file: try the next one
            except httpx.TransportError as exc:
                errors[url] = f"{url}: {type(exc).__name__}"
                continue  # interrupted or unreachable: resume from the partial file
            except httpx.RequestError as exc:  # e.g. a redirect loop: this URL will not do
                errors[url] = f"{url}: {type(exc).__name__}"
                break
            except OSError as exc:  # the cache folder is read-only or full
                raise DataError(f"cannot write {part} ({exc.strerror}); set ADVSAL_DATA or --dir to a writable "
                                "folder with room for the download") from None
            digest = _md5(part)
            if digest != remote.md5:  # a bad mirror or a captive portal's page: try the next URL
                part.unlink(missing_ok=True)
                errors[url] = f"{url}: checksum mismatch (MD5 {digest}, expected {remote.md5}; deleted)"
                break
            os.replace(part, folder / remote.filename)
            return
    raise DataError(f"cannot download {remote.filename} ({'; '.join(errors.values())}); no network? "
                    f"{_by_hand(source, folder)}")


def _transfer(client, url: str, part: Path, filename: str,
              on_progress: Callable[[str, int, int | None], None] | None) -> None:
    have = part.stat().st_size if part.is_file() else 0
    # identity: the file's own bytes (the checksum is of them), never a transfer-decoded version
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416 and have:  # the partial file is already whole: let the checksum decide
            return
        response.raise_for_status()
        resumed = response.status_code == 206
        length = response.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length is not None else None
        done = have if resumed else 0
        with part.open("ab" if resumed else "wb") as f:
            for block in response.iter_raw():  # as received: an interruption keeps every byte so far
                f.write(block)
                done += len(block)
                if on_progress is not None:
                    on_progress(filename, done, total)


def _unpack(archive: Path, folder: Path, top: str) -> None:
    """Unpack the verified ``archive``'s regular files under ``top/`` into a temporary folder, then rename it
    into place as ``folder/top`` (nothing outside ``top/`` is written; links and devices are refused)."""
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{top}."))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isdir():
                    continue
                if not member.isfile() or len(parts) != 2 or parts[0] != top or parts[1] in ("..", "."):
                    raise DataError(f"{archive}: unexpected entry {member.name!r}; delete the archive and fetch "
                                    "again")
                source = tar.extractfile(member)
                with (tmp / parts[1]).open("wb") as out:
                    shutil.copyfileobj(source, out)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache's dataset from its other users
        os.replace(tmp, folder / top)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: cannot unpack ({exc}); delete it and fetch again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["SOURCES", "Remote", "RemoteDataset", "data_home", "dataset_dir", "fetch", "is_cached"]
