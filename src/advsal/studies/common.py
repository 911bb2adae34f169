"""Pieces every study shares: YAML configs into dataclasses, the cached classifier stage, stage logging."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from ..data import ImageSet, load_dataset
from ..models import ZooModel, build_model
from ..store import RunStore, write_json
from ..training import EarlyStopping, evaluate, train_classifier

C = TypeVar("C")
Log = Callable[[str], None] | None


def config_from_yaml(cls: type[C], path: str | Path | None, configs_dir: Path | None = None) -> C:
    """Build the dataclass ``cls`` from a YAML file (unknown keys are an error naming the valid ones)."""
    if path is None:
        return cls()
    path = Path(path)
    if not path.is_file():
        hint = f" (presets: {', '.join(sorted(p.name for p in configs_dir.glob('*.yaml')))})" \
            if configs_dir and configs_dir.is_dir() else ""
        raise FileNotFoundError(f"config file {path} not found{hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a study config must be a mapping of option: value")
    return merge_config(cls(), raw, str(path))


def merge_config(base: C, raw: dict[str, Any], where: str = "config") -> C:
    """Return ``base`` with the fields in ``raw`` replaced (nested dataclasses merged recursively)."""
    fields = {f.name: f for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    updates = {}
    for key, value in raw.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = merge_config(current, value, f"{where}.{key}")
        else:
            updates[key] = value
    return dataclasses.replace(base, **updates)  # type: ignore[type-var]


@dataclasses.dataclass
class DataConfig:
    name: str = "mnist5k"
    root: str | None = None
    seed: int = 0
    train_limit: int | None = None  # stratified subset sizes, for quick runs
    test_limit: int | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # loader options, e.g. {size: 224}


@dataclasses.dataclass
class ModelConfig:
    architecture: str = "mnist-net"
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    patience: int = 0  # early stopping off when 0
    min_delta: float = 1e-4
    normalize: bool = True
    shift: int = 0  # random-translation augmentation (pixels)
    flip: bool = False  # random horizontal flips
    seed: int = 0


def load_data(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    from ..data import subset

    train, test = load_dataset(cfg.name, root=cfg.root, seed=cfg.seed, **cfg.options)
    if cfg.train_limit:
        train = subset(train, cfg.train_limit, cfg.seed)
    if cfg.test_limit:
        test = subset(test, cfg.test_limit, cfg.seed)
    return train, test


def model_payload(model: ZooModel) -> dict[str, Any]:
    out: dict[str, Any] = {f"w.{k}": v for k, v in model.state_dict().items()}
    out["spec"] = model.spec
    return out


def model_from_payload(payload: dict[str, Any]) -> ZooModel:
    spec = payload["spec"]
    model = build_model(spec["architecture"], spec["num_classes"], spec["in_channels"], spec["input_size"],
                        spec["mean"], spec["std"])
    model.load_state_dict({k[2:]: v for k, v in payload.items() if k.startswith("w.")})
    return model.eval()


def train_stage(store: RunStore, name: str, data_cfg: DataConfig, model_cfg: ModelConfig, train: ImageSet,
                test: ImageSet | None = None, val: ImageSet | None = None,
                extra: dict[str, Any] | None = None) -> tuple[ZooModel, dict[str, Any]]:
    """Train (or load from the store) a classifier on ``train``; returns the model and its metrics.

    The stage key covers the data and model configuration plus ``extra`` (anything else that changed ``train``).
    """
    key = {"data": dataclasses.asdict(data_cfg), "model": dataclasses.asdict(model_cfg), "extra": extra or {}}

    def compute() -> dict[str, Any]:
        mc = model_cfg
        mean = train.x.mean(dim=(0, 2, 3)).tolist() if mc.normalize else None
        std = train.x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist() if mc.normalize else None
        model = build_model(mc.architecture, train.num_classes, train.channels, train.image_size[0], mean, std,
                            seed=mc.seed)
        stopping = EarlyStopping(mc.min_delta, mc.patience) if mc.patience > 0 else None
        history = train_classifier(model, train, val, optimizer=mc.optimizer, lr=mc.lr, lr_decay=mc.lr_decay,
                                   epochs=mc.epochs, batch_size=mc.batch_size, early_stopping=stopping,
                                   seed=mc.seed, shift=mc.shift, flip=mc.flip, description=f"train {name}")
        metrics: dict[str, Any] = {"epochs_run": len(history.epochs), "train_seconds": history.seconds,
                                   "images_per_second": history.images_per_second,
                                   "train_accuracy": evaluate(model, train).accuracy,
                                   "stopped_early": history.stopped_early, "history": history.epochs}
        if test is not None:
            metrics["test"] = evaluate(model, test).to_dict()
        if val is not None:
            metrics["val"] = evaluate(model, val).to_dict()
        return {**model_payload(model), "metrics": metrics}

    payload = store.cached(name, key, compute)
    return model_from_payload(payload), payload["metrics"]


class StageLog:
    """Prints one line per finished stage with its time (or 'cached'), when a log function is given."""

    def __init__(self, store: RunStore, log: Log):
        self.store, self.log, self._seen = store, log, 0
        self.start = time.perf_counter()

    def flush(self) -> None:
        for rec in self.store.records[self._seen:]:
            if self.log:
                self.log(f"  stage {rec.name:<28} {'cached' if rec.cached else f'{rec.seconds:7.1f}s'}")
        self._seen = len(self.store.records)


def as_plain(obj: Any) -> Any:
    """A dataclass as a plain dict (for results and cache keys); anything else unchanged."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


@dataclasses.dataclass
class StudyStart:
    """What every study has after its first stage: the store, the stage log, the data, the trained classifier,
    the results header, and ``key`` (data + classifier configuration) to prefix later stages' keys."""

    store: RunStore
    stages: StageLog
    train: ImageSet
    test: ImageSet
    model: ZooModel
    results: dict[str, Any]
    key: dict[str, Any]


def start_study(study: str, cfg: Any, run_dir: str | Path, log: Log) -> StudyStart:
    """Open the run directory, load ``cfg.data`` and train (or load) ``cfg.classifier`` as the cached stage
    "classifier"; ``cfg`` needs ``data``, ``classifier`` and ``seed``."""
    store = RunStore(Path(run_dir))
    stages = StageLog(store, log)
    torch.manual_seed(cfg.seed)
    train, test = load_data(cfg.data)
    model, metrics = train_stage(store, "classifier", cfg.data, cfg.classifier, train, test)
    stages.flush()
    results: dict[str, Any] = {"study": study, "config": as_plain(cfg),
                               "data": {"train": train.describe(), "test": test.describe()},
                               "classifier": {"architecture": cfg.classifier.architecture, **metrics}}
    key = {"data": as_plain(cfg.data), "model": as_plain(cfg.classifier)}
    return StudyStart(store, stages, train, test, model, results, key)


def finish_study(run_dir: str | Path, results: dict[str, Any], store: RunStore, stages: StageLog,
                 render: Callable[..., Any], /, **render_kwargs: Any) -> dict[str, Any]:
    """Add the stage timings to ``results``, write results.json atomically and render the report."""
    stages.flush()
    results["timings"] = store.timings()
    results["total_seconds"] = sum(t["seconds"] for t in results["timings"])
    write_json(Path(run_dir) / "results.json", results)
    render(Path(run_dir), results, **render_kwargs)
    return results
