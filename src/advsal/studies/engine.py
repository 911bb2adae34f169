"""The study engine: what every study shares — its config types, the data and classifier it starts from (the
bundled ones, or the user's own model, data and device), the stage log, provenance, and the finish.

A study package (``studies/detection``, …) provides a :class:`Study`: its ``Config`` dataclass, ``run``,
``render`` and ``summary``. Its ``method.py`` calls :func:`open_study`, which gives a :class:`Context` with the
run store, the device, the train/test data (a :class:`~advsal.store.Source` fingerprinted by content), and the
classifier F (a cached stage, or the user's model as given); every later step is ``ctx.stage(...)`` with its
inputs named, so no stage key is written by hand.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .. import __version__
from ..data import ImageSet, load_dataset, subset
from ..errors import ModelSpecError
from ..models import build_model
from ..models.zoo import ZOO
from ..store import Node, RunStore, Source, Stage, StageRecord, fingerprint, write_json
from ..tensors import model_device, resolve_device
from ..training import EarlyStopping, evaluate, train_classifier
from .config import require

Log = Callable[[str], None] | None
_EXECUTOR: ContextVar[Any] = ContextVar("advsal_executor", default=None)


@contextmanager
def use_executor(executor: Any) -> Iterator[None]:
    """Studies opened inside this block run their stages on ``executor`` (e.g. ``advsal.executor.RayExecutor``);
    ``None`` runs them inline."""
    token = _EXECUTOR.set(executor)
    try:
        yield
    finally:
        _EXECUTOR.reset(token)


# ------------------------------------------------------------------------------------------------ configs
@dataclass
class DataConfig:
    name: str = "mnist5k"
    root: str | None = None
    seed: int = 0
    train_limit: int | None = None  # stratified subset sizes, for quick runs
    test_limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # loader options, e.g. {size: 224}

    def validate(self) -> None:
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, f"must be ≥ 1 (or null for all images), got {value}")


@dataclass
class ModelConfig:
    """The classifier: a zoo ``architecture`` (``advsal models``) or a user factory ``package.module:function``
    / ``path/to/file.py:function``; with ``weights`` (a .safetensors state dict) it is used as is, else trained
    with the settings below."""

    architecture: str = "mnist-net"
    weights: str | None = None
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

    def validate(self) -> None:
        require(self.architecture in ZOO or ":" in self.architecture, "architecture",
                f"must be a zoo model ({', '.join(ZOO)}) or a factory 'module:function' / 'file.py:function', "
                f"got {self.architecture!r}")
        require(self.optimizer in ("adam", "rmsprop", "sgd"), "optimizer",
                f"must be adam, rmsprop or sgd, got {self.optimizer!r}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.lr_decay >= 0, "lr_decay", f"must be ≥ 0, got {self.lr_decay}")
        require(self.epochs >= 1, "epochs", f"must be ≥ 1, got {self.epochs}")
        require(self.batch_size >= 1, "batch_size", f"must be ≥ 1, got {self.batch_size}")
        require(self.patience >= 0, "patience", f"must be ≥ 0, got {self.patience}")
        require(self.shift >= 0, "shift", f"must be ≥ 0, got {self.shift}")

    def training(self) -> dict[str, Any]:
        """The fields that define how a model is trained (the classifier stage's parameters)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("architecture", "weights")}


@dataclass
class ExecutorConfig:
    """Resources of one stage task under a parallel executor (``--executor ray``): ``num_cpus``, and ``num_gpus``
    (default: 1 when the study's device is CUDA, else 0). The command line's --num-cpus/--num-gpus override them;
    they never enter a stage key."""

    num_cpus: float = 1.0
    num_gpus: float | None = None

    def validate(self) -> None:
        require(self.num_cpus > 0, "num_cpus", f"must be > 0, got {self.num_cpus}")
        require(self.num_gpus is None or self.num_gpus >= 0, "num_gpus", f"must be ≥ 0, got {self.num_gpus}")


def check_device(value: str) -> None:
    """For a config's ``validate()``: the device is spelled right (whether it exists is checked at start)."""
    ok = value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit())
    require(ok, "device", f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")


def as_plain(obj: Any) -> Any:
    """A dataclass as a plain dict (for results); anything else unchanged."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# ------------------------------------------------------------------------------------------------ models
def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable named by ``package.module:function`` or ``path/to/file.py:function``."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ModelSpecError(f"--model {spec!r}: expected package.module:function or path/to/file.py:function")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ModelSpecError(f"--model {spec!r}: file {path} not found")
            module_spec = importlib.util.spec_from_file_location(f"advsal_user_model_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ModelSpecError:
        raise
    except ModuleNotFoundError as exc:
        raise ModelSpecError(f"--model {spec!r}: module {exc.name!r} not found (is it on PYTHONPATH?)") from None
    except Exception as exc:  # the user's module failed to import: say where, keep it one line
        raise ModelSpecError(f"--model {spec!r}: importing {where} failed ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelSpecError(f"--model {spec!r}: {where} has no function {name!r}")
    return factory


def build_classifier(cfg: ModelConfig, train: ImageSet) -> nn.Module:
    """An untrained classifier for ``train``: a zoo model (with the training set's per-channel mean/std as its
    first layer when ``normalize``) or the user's factory, called with whichever of ``num_classes``,
    ``in_channels`` and ``input_size`` it accepts."""
    if cfg.architecture in ZOO:
        mean = train.x.mean(dim=(0, 2, 3)).tolist() if cfg.normalize else None
        std = train.x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist() if cfg.normalize else None
        return build_model(cfg.architecture, train.num_classes, train.channels, train.image_size[0], mean, std,
                           seed=cfg.seed)
    factory = load_factory(cfg.architecture)
    offered = {"num_classes": train.num_classes, "in_channels": train.channels, "input_size": train.image_size[0]}
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelSpecError(f"--model {cfg.architecture!r}: the factory failed ({type(exc).__name__}: {exc})") \
            from None
    finally:
        torch.random.set_rng_state(state)
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"--model {cfg.architecture!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_classifier(model: nn.Module, data: ImageSet, what: str = "the model") -> None:
    """``model`` maps a batch of ``data`` to (N, classes) finite logits, else ModelSpecError."""
    x = data.x[:2].to(model_device(model))
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        raise ModelSpecError(f"{what} fails on {tuple(x.shape)} images of {data.name} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(out, torch.Tensor) or out.shape != (len(x), data.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelSpecError(f"{what} must map (N, C, H, W) images in [0, 1] to (N, {data.num_classes}) logits "
                             f"for {data.name}; it returned {shape}")


def load_weights(model: nn.Module, path: str) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ModelSpecError(f"--weights {path}: file not found")
    try:
        state = load_file(path)
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelSpecError(f"--weights {path} does not fit the model ({str(exc).splitlines()[0]})") from None
    return model


def classifier_stage(store: RunStore, name: str, cfg: ModelConfig, train: ImageSet, inputs: list[Node],
                     device: torch.device, *, val: ImageSet | None = None,
                     test: ImageSet | None = None) -> tuple[nn.Module, Stage]:
    """Train (or load from the store) ``cfg``'s classifier on ``train``; ``inputs`` are the nodes ``train`` (and
    ``val``/``test``) were made from. The key covers the training settings and the untrained model's content, so
    a changed architecture, factory file or seed retrains."""
    model = build_classifier(cfg, train)
    check_classifier(model, train, f"model {cfg.architecture!r}")
    init = Source.of(f"{name}-init", model)

    def compute() -> dict[str, Any]:
        history = train_classifier(model.to(device), train, val, optimizer=cfg.optimizer, lr=cfg.lr,
                                   lr_decay=cfg.lr_decay, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                   early_stopping=EarlyStopping(cfg.min_delta, cfg.patience) if cfg.patience else
                                   None, seed=cfg.seed, shift=cfg.shift, flip=cfg.flip, description=f"train {name}")
        metrics: dict[str, Any] = {"epochs_run": len(history.epochs), "train_seconds": history.seconds,
                                   "images_per_second": history.images_per_second,
                                   "train_accuracy": evaluate(model, train).accuracy,
                                   "stopped_early": history.stopped_early, "history": history.epochs}
        if test is not None:
            metrics["test"] = evaluate(model, test).to_dict()
        if val is not None:
            metrics["val"] = evaluate(model, val).to_dict()
        return {**{f"w.{k}": v for k, v in model.state_dict().items()}, "metrics": metrics}

    stage = store.stage(name, compute, params=cfg.training(), inputs=[*inputs, init])
    # Under a parallel executor the stage may still be training: its weights are loaded when its payload
    # arrives, at the latest before the model's first forward pass.
    pending = model.register_forward_pre_hook(lambda module, args: stage.payload)

    def load(payload: dict[str, Any]) -> None:
        pending.remove()
        model.load_state_dict({k[2:]: v for k, v in payload.items() if k.startswith("w.")})
        model.to(device).eval()

    stage.when_ready(load)
    return model.to(device).eval(), stage


# ------------------------------------------------------------------------------------------------ the study
class Study(Protocol):
    """What a study package provides (``advsal.studies.get_study(name)``)."""

    name: str
    Config: type

    def run(self, config: Any, run_dir: str | Path, *, model: nn.Module | None = None,
            data: tuple[ImageSet, ImageSet] | None = None, log: Log = None) -> dict[str, Any]: ...

    def render(self, run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]: ...

    def summary(self, results: dict[str, Any]) -> list[str]: ...


@dataclass
class StudyDef:
    """A :class:`Study` assembled from a package's functions."""

    name: str
    Config: type
    run: Callable[..., dict[str, Any]]
    render: Callable[[str | Path, dict[str, Any]], tuple[Path, Path]]
    summary: Callable[[dict[str, Any]], list[str]]


def stage_logger(log: Log) -> Callable[[StageRecord], None] | None:
    """The store's ``on_stage`` callback: one line per stage with its time, 'cached', or why it was redone."""
    if log is None:
        return None

    def report(rec: StageRecord) -> None:
        if rec.status == "recomputed":
            log(f"  stage {rec.name:<28} {rec.seconds:7.1f}s  (stored copy refused: {rec.reason})")
        else:
            log(f"  stage {rec.name:<28} {'cached' if rec.cached else f'{rec.seconds:7.1f}s'}")

    return report


@dataclass
class Context:
    """What every study has after its first stage; see the module docstring."""

    store: RunStore
    device: torch.device
    train: ImageSet
    test: ImageSet
    data: Source
    model: nn.Module | None
    classifier: Node | None
    results: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    def stage(self, name: str, compute: Callable[[], dict[str, Any]], *, params: Any = None,
              inputs: list[Node] | tuple[Node, ...] = (), version: int = 1) -> Stage:
        return self.store.stage(name, compute, params=params, inputs=inputs, version=version)


def load_data(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    train, test = load_dataset(cfg.name, root=cfg.root, seed=cfg.seed, **cfg.options)
    if cfg.train_limit:
        train = subset(train, cfg.train_limit, cfg.seed)
    if cfg.test_limit:
        test = subset(test, cfg.test_limit, cfg.seed)
    return train, test


def data_source(train: ImageSet, test: ImageSet) -> Source:
    return Source.of("data", train.x, train.y, train.classes, test.x, test.y, test.classes)


def open_study(study: str, cfg: Any, run_dir: str | Path, *, model: nn.Module | None = None,
               data: tuple[ImageSet, ImageSet] | None = None, log: Log = None, classifier: bool = True) -> Context:
    """Lock and open the run directory, resolve ``cfg.device``, load ``cfg.data`` (or take ``data``), and get F:
    ``model`` as given, else ``cfg.classifier`` with ``weights``, else trained as the cached stage
    "classifier". ``cfg`` needs ``data``, ``seed`` and ``device``, and ``classifier`` unless the study trains its
    own models (``classifier=False``: ``ctx.model`` and ``ctx.classifier`` are then None)."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train, test = data if data is not None else load_data(cfg.data)
    source = data_source(train, test)
    executor = _EXECUTOR.get()
    store = RunStore(Path(run_dir), on_stage=stage_logger(log),
                     executor=executor.start(device) if executor is not None else None)
    try:
        results: dict[str, Any] = {"study": study, "config": as_plain(cfg),
                                   "provenance": provenance(cfg, device),
                                   "data": {"train": train.describe(), "test": test.describe(),
                                            "fingerprint": source.key}}
        node: Node | None = None
        if not classifier:
            pass
        elif model is not None or cfg.classifier.weights is not None:
            if model is None:
                model = build_classifier(cfg.classifier, train)
                if cfg.classifier.weights is not None:
                    load_weights(model, cfg.classifier.weights)
            model = model.to(device).eval()
            check_classifier(model, test)
            node = Source.of("classifier", model)
            metrics = {"test": evaluate(model, test).to_dict(), "given": True}
        else:
            model, stage = classifier_stage(store, "classifier", cfg.classifier, train, [source], device, test=test)
            node, metrics = stage, stage["metrics"]
        if node is not None:
            results["classifier"] = {"architecture": cfg.classifier.architecture, "fingerprint": node.key,
                                     **metrics}
    except BaseException:
        store.close()
        raise
    return Context(store, device, train, test, source, model, node, results)


def finish_study(ctx: Context, run_dir: str | Path, render: Callable[..., Any], /,
                 **render_kwargs: Any) -> dict[str, Any]:
    """Add stage timings and the wall time to the results, write results.json atomically, render the report and
    release the run directory."""
    try:
        results = ctx.results
        results["timings"] = ctx.store.timings()
        results["total_seconds"] = sum(t["seconds"] for t in results["timings"])
        results["provenance"]["wall_seconds"] = round(time.perf_counter() - ctx.started, 3)
        write_json(Path(run_dir) / "results.json", results)
        render(Path(run_dir), results, **render_kwargs)
    finally:
        ctx.store.close()
    return results


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def provenance(cfg: Any, device: torch.device) -> dict[str, Any]:
    """What produced a run: versions, commit, device, threads, date, config hash and seed."""
    return {"advsal": __version__, "git_commit": _git_commit(), "torch": torch.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "device": str(device),
            "torch_threads": torch.get_num_threads(), "date": datetime.now(timezone.utc).isoformat(),
            "config_hash": fingerprint(as_plain(cfg)), "seed": getattr(cfg, "seed", None)}


__all__ = ["Context", "DataConfig", "ExecutorConfig", "ModelConfig", "Study", "StudyDef", "as_plain",
           "build_classifier", "check_classifier", "check_device", "classifier_stage", "data_source", "finish_study",
           "load_data", "load_factory", "open_study", "provenance", "stage_logger", "use_executor"]
