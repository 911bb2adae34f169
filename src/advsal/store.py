"""Run directories and the stage graph: content-addressed, verified, resumable caching of a study's steps.

A study writes to ``runs/<name>/``. Each step is a *stage*: ``store.stage(name, compute, params=..., inputs=[...])``
returns a :class:`Stage` whose key is derived, never written by hand — a hash of the stage's name, its own
parameters, the keys of the stages (or :class:`Source` fingerprints of data and models) it is computed from, and
a per-stage format version. Change anything upstream and every stage downstream gets a new key; nothing else does.

A stage is computed into a temporary directory that is renamed into place only when complete, with a manifest of
the SHA-256 of every file it wrote. Loading verifies the manifest: a stage that was truncated, garbled or
tampered with is reported (one line, through the ``on_stage`` callback) and recomputed, never served. A run
directory is locked while a run uses it, so a second run with the same name stops instead of clobbering it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError, RunBusyError, StoreError

TENSORS_FILE = "tensors.safetensors"
DATA_FILE = "data.json"
MANIFEST_FILE = "manifest.json"
STORE_FORMAT = 2  # bump when the store's own layout changes, so old caches are not misread
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would keep reports and models from colleagues
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` (and JSON ``metadata``) as one safetensors file, atomically — the one tensor saver."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata={"advsal": json.dumps(to_jsonable(metadata))} if metadata is not None else None)
    atomic_write_bytes(path, data)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, dataclasses, paths and tuples into JSON-serialisable values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2))




def save_payload(directory: Path, payload: dict[str, Any]) -> None:
    """Tensors of ``payload`` go to one safetensors file, everything else to a JSON file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in payload.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in payload.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        save_file(tensors, str(directory / TENSORS_FILE))
    (directory / DATA_FILE).write_text(json.dumps(to_jsonable(rest)))


def load_payload(directory: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out = json.loads((directory / DATA_FILE).read_text())
    if not isinstance(out, dict):
        raise InputError(f"{directory / DATA_FILE} holds a {type(out).__name__}, not a mapping")
    if (directory / TENSORS_FILE).is_file():
        out.update(load_file(str(directory / TENSORS_FILE)))
    return out

# ------------------------------------------------------------------------------------------------ fingerprints


def _update_hash(h: Any, obj: Any) -> None:
    """Feed ``obj``'s content into hash ``h``: tensors and arrays by dtype, shape and bytes (not by reference), an
    ``nn.Module`` by its state dict, objects with ``fingerprint_parts()`` by those, anything else as JSON."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"array:{a.dtype}:{a.shape}:".encode())
        h.update(a.tobytes())
    elif isinstance(obj, torch.nn.Module):
        h.update(f"module:{type(obj).__qualname__}:".encode())
        for name, value in obj.state_dict().items():
            h.update(name.encode())
            _update_hash(h, value)
    elif hasattr(obj, "fingerprint_parts"):
        _update_hash(h, obj.fingerprint_parts())
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq:{len(obj)}:".encode())
        for item in obj:
            _update_hash(h, item)
    elif isinstance(obj, dict):
        h.update(f"map:{len(obj)}:".encode())
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _update_hash(h, obj[k])
    else:
        h.update(json.dumps(to_jsonable(obj), sort_keys=True).encode())


def fingerprint(*objects: Any) -> str:
    """A content hash (hex, 16 digits) of tensors, arrays, modules, image sets and JSON-able values: equal
    content gives equal fingerprints, whatever file or object it came from."""
    h = hashlib.sha256()
    for obj in objects:
        _update_hash(h, obj)
    return h.hexdigest()[:16]


def _stage_key(name: str, params: Any, inputs: list[tuple[str, str]], version: int) -> str:
    blob = json.dumps({"stage": name, "format": STORE_FORMAT, "version": version, "params": to_jsonable(params),
                       "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ the graph


@dataclass(frozen=True)
class Source:
    """Something a stage is computed from that the store does not compute itself — data read from files, a model
    the user brought — identified by a fingerprint of its content (see :func:`fingerprint`)."""

    name: str
    key: str

    @classmethod
    def of(cls, name: str, *content: Any) -> Source:
        return cls(name, fingerprint(*content))


@dataclass(frozen=True)
class Stage:
    """A finished stage: its ``name``, derived ``key``, directory and payload (tensors and JSON values).

    ``stage["x_adv"]`` reads the payload. Pass a stage in another stage's ``inputs`` to make that one depend on
    it: its key then changes whenever this one's does."""

    name: str
    key: str
    directory: Path
    payload: dict[str, Any]
    cached: bool

    def __getitem__(self, item: str) -> Any:
        return self.payload[item]

    def __contains__(self, item: str) -> bool:
        return item in self.payload

    def get(self, item: str, default: Any = None) -> Any:
        return self.payload.get(item, default)

    def when_ready(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(payload)`` once the payload is there: now for a finished stage, on first access for
        a :class:`PendingStage`."""
        callback(self.payload)


class PendingStage(Stage):
    """A stage being computed by the store's executor: its key and directory are known now, its payload is
    fetched, stored (atomically, by this process) and verified on first access."""

    def __init__(self, name: str, key: str, directory: Path, resolve: Callable[[], dict[str, Any]]):
        for attr, value in (("name", name), ("key", key), ("directory", directory), ("cached", False),
                            ("_resolve", resolve), ("_payload", None), ("_callbacks", [])):
            object.__setattr__(self, attr, value)

    @property
    def payload(self) -> dict[str, Any]:  # type: ignore[override]
        if self._payload is None:
            object.__setattr__(self, "_payload", self._resolve())
            for callback in self._callbacks:
                callback(self._payload)
            self._callbacks.clear()
        return self._payload

    @property
    def ready(self) -> bool:
        return self._payload is not None

    def when_ready(self, callback: Callable[[dict[str, Any]], None]) -> None:
        if self._payload is not None:
            callback(self._payload)
        else:
            self._callbacks.append(callback)

    def __repr__(self) -> str:
        return f"PendingStage({self.name!r}, {self.key!r}, ready={self.ready})"


Node = Stage | Source


@dataclass
class StageRecord:
    """One stage served in this process: ``status`` is "computed", "cached" or "recomputed" (with ``reason``:
    why the stored copy was refused)."""

    name: str
    key: str
    seconds: float
    status: str
    reason: str = ""

    @property
    def cached(self) -> bool:
        return self.status == "cached"


class StageInvalid(Exception):
    """A stored stage failed verification or parsing (internal: the store recomputes it)."""


def check_run_name(name: str) -> str:
    """A run name is one path component: letters, digits, ``.``, ``_`` and ``-``, not starting with a dot."""
    if not isinstance(name, str) or not RUN_NAME.match(name) or name in (".", ".."):
        raise StoreError(f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' only (no '/', no "
                         "leading dot), e.g. --name demo-2")
    return name


def run_directory(runs: str | Path, name: str) -> Path:
    """``runs/name`` for a validated run name: a run can never write outside ``runs``."""
    return Path(runs) / check_run_name(name)


class RunStore:
    """A run directory with its stage graph; use as a context manager (or call ``close``) to release its lock.

    ``on_stage(record)`` is called after every stage is served (computed, loaded, or recomputed because the
    stored copy failed verification); ``records`` keeps them all, with timings."""

    def __init__(self, root: str | Path, on_stage: Callable[[StageRecord], None] | None = None,
                 executor: Any = None):
        from filelock import FileLock, Timeout

        self.root = Path(root)
        # None: compute() runs inline. Else an object with submit(name, compute) -> handle and
        # result(name, handle) -> payload (advsal.executor.RayExecutor): stages then run in parallel.
        self.executor = executor
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} exists and is not a directory; choose another run name or --runs")
        self.records: list[StageRecord] = []
        self.on_stage = on_stage
        try:
            (self.root / "stages").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the run directory {self.root} ({exc.strerror}); choose another "
                             "--runs folder") from exc
        self._lock = FileLock(str(self.root / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunBusyError(f"{self.root} is in use by {self._holder()}; wait for it to finish or choose "
                               "another --name") from None
        atomic_write_text(self.root / ".lock.owner", json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(timezone.utc).isoformat()}))
        for stale in (self.root / "stages").glob("*.partial-*"):  # the lock is ours: these are a dead run's
            shutil.rmtree(stale, ignore_errors=True)

    def _holder(self) -> str:
        try:
            owner = json.loads((self.root / ".lock.owner").read_text())
            return f"process {owner['pid']} on {owner['host']} (since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def close(self) -> None:
        if self._lock.is_locked:
            (self.root / ".lock.owner").unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None and lock.is_locked:
            lock.release(force=True)

    # -- stages --
    def stage(self, name: str, compute: Callable[[], dict[str, Any]], *, params: Any = None,
              inputs: list[Node] | tuple[Node, ...] = (), version: int = 1) -> Stage:
        """Stage ``name``: its stored payload when one with the same key exists and verifies, else
        ``compute()`` (a dict of tensors and JSON-able values), stored atomically.

        The key is derived from ``name``, ``params`` (JSON-able; dataclasses allowed), the keys of ``inputs``
        (other stages, or :class:`Source` fingerprints) and ``version`` (bump it when ``compute``'s output
        changes meaning)."""
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._'+=-]*$", name):
            raise InputError(f"stage name {name!r} must be one path component")
        links = [(node.name, node.key) for node in inputs]
        key = _stage_key(name, params, links, version)
        final = self.root / "stages" / f"{name}-{key}"
        start = time.perf_counter()
        reason = ""
        if final.is_dir():
            try:
                payload = self._load_verified(final)
                self._record(StageRecord(name, key, time.perf_counter() - start, "cached"))
                return Stage(name, key, final, payload, cached=True)
            except StageInvalid as exc:
                reason = str(exc)
                shutil.rmtree(final, ignore_errors=True)
        if self.executor is not None:
            for node in inputs:  # the compute closure may hold what an input's payload filled in (weights)
                if isinstance(node, PendingStage):
                    node.payload  # noqa: B018
            handle = self.executor.submit(name, compute)

            def resolve() -> dict[str, Any]:
                payload = self.executor.result(name, handle)
                return self._store(name, key, final, params, links, version, lambda: payload, start, reason).payload

            return PendingStage(name, key, final, resolve)
        return self._store(name, key, final, params, links, version, compute, start, reason)

    def _store(self, name: str, key: str, final: Path, params: Any, links: list[tuple[str, str]], version: int,
               compute: Callable[[], dict[str, Any]], start: float, reason: str) -> Stage:
        tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            payload = compute()
            if not isinstance(payload, dict):
                raise TypeError(f"stage {name!r}: compute() must return a dict, got {type(payload).__name__}")
            save_payload(tmp, payload)
            files = {p.name: {"sha256": _file_digest(p), "bytes": p.stat().st_size}
                     for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {"stage": name, "key": key, "format": STORE_FORMAT, "version": version,
                        "params": to_jsonable(params), "inputs": dict(links), "files": files,
                        "seconds": round(time.perf_counter() - start, 3),
                        "created": datetime.now(timezone.utc).isoformat()}
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        self._record(StageRecord(name, key, time.perf_counter() - start,
                                 "recomputed" if reason else "computed", reason))
        return Stage(name, key, final, load_payload(final), cached=False)

    def _load_verified(self, directory: Path) -> dict[str, Any]:
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text())
            files = manifest["files"]
            if not isinstance(files, dict):
                raise TypeError("files is not a mapping")
        except FileNotFoundError:
            raise StageInvalid("no manifest (written by an older advsal or interrupted)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StageInvalid(f"unreadable manifest ({exc})") from None
        present = {p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE}
        if present != set(files):
            raise StageInvalid(f"files {sorted(present ^ set(files))} differ from its manifest")
        for fname, meta in files.items():
            if not isinstance(meta, dict) or _file_digest(directory / fname) != meta.get("sha256"):
                raise StageInvalid(f"{fname} does not match its checksum (truncated or modified)")
        try:
            return load_payload(directory)
        except Exception as exc:  # a payload that verified but cannot be parsed: an older format
            raise StageInvalid(f"unparsable payload ({type(exc).__name__}: {exc})") from None

    def _record(self, record: StageRecord) -> None:
        self.records.append(record)
        if self.on_stage is not None:
            self.on_stage(record)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def timings(self) -> list[dict[str, Any]]:
        return [{"stage": r.name, "seconds": round(r.seconds, 3), "cached": r.cached} for r in self.records]
