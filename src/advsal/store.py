"""Run directories, content-addressed caching of stages, atomic writes, resume.

A study writes to ``runs/<name>/``. Each stage's output lives in ``stages/<stage>-<hash>/`` where the hash covers
the stage name and the configuration that produced it. A stage is computed into a temporary directory that is
renamed into place only when complete, so a killed run leaves nothing half-written, and running the same stage
again (same configuration) loads the stored result instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

TENSORS_FILE = "tensors.safetensors"
DATA_FILE = "data.json"
STAGE_VERSION = 1  # bump when a stage's stored format changes, so old caches are not misread


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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


def config_hash(name: str, config: Any) -> str:
    blob = json.dumps({"stage": name, "v": STAGE_VERSION, "config": to_jsonable(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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

    out: dict[str, Any] = json.loads((directory / DATA_FILE).read_text())
    if (directory / TENSORS_FILE).is_file():
        out.update(load_file(str(directory / TENSORS_FILE)))
    return out


@dataclass
class StageRecord:
    name: str
    key: str
    seconds: float
    cached: bool


@dataclass
class RunStore:
    """A run directory with cached stages. ``records`` lists every stage served in this process, with timings."""

    root: Path
    records: list[StageRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "stages").mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "stages").glob("*.partial-*"):  # left behind by a killed run
            shutil.rmtree(stale, ignore_errors=True)

    def stage_dir(self, name: str, config: Any) -> Path:
        return self.root / "stages" / f"{name}-{config_hash(name, config)}"

    def is_done(self, name: str, config: Any) -> bool:
        return self.stage_dir(name, config).is_dir()

    def cached_dir(self, name: str, config: Any, produce: Callable[[Path], None]) -> Path:
        """The finished directory of stage ``name`` for ``config``; ``produce(tmp_dir)`` fills it when absent."""
        final = self.stage_dir(name, config)
        start = time.perf_counter()
        if final.is_dir():
            self.records.append(StageRecord(name, final.name, time.perf_counter() - start, True))
            return final
        tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            produce(tmp)
            (tmp / "config.json").write_text(json.dumps(to_jsonable({"stage": name, "config": config}), indent=2))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        self.records.append(StageRecord(name, final.name, time.perf_counter() - start, False))
        return final

    def cached(self, name: str, config: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Stage ``name``'s payload (a dict of tensors and JSON-able values), computed once per config."""
        directory = self.cached_dir(name, config, lambda tmp: save_payload(tmp, compute()))
        return load_payload(directory)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def timings(self) -> list[dict[str, Any]]:
        return [{"stage": r.name, "seconds": round(r.seconds, 3), "cached": r.cached} for r in self.records]
