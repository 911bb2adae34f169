"""The ``advsal`` command: parses arguments and calls the library or a study; errors print one line, exit 2."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import AdvsalError
from .progress import set_quiet

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial examples and saliency: attacks, saliency maps, detection, studies.")
console = Console()
err_console = Console(stderr=True)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Seed = Annotated[int, typer.Option(help="Random seed (data split, initialisation, attacks).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (see `advsal datasets`).")]
RootOpt = Annotated[Path | None, typer.Option(help="Directory or file holding the dataset's files.")]


class CLIError(AdvsalError):
    """A user-facing error raised by a command; printed as one line."""


def _load(dataset: str, root: Path | None, seed: int):
    from .data import load_dataset

    return load_dataset(dataset, root=root, seed=seed)


@app.command()
def datasets() -> None:
    """List the datasets advsal can load."""
    from .data import list_datasets

    table = Table("name", "needs --root", "description")
    for info in list_datasets():
        table.add_row(info.name, "yes" if info.needs_root else "no", info.description)
    console.print(table)


@app.command()
def models() -> None:
    """List the model zoo."""
    from .models import list_models

    table = Table("name", "default input", "description")
    for info in list_models():
        table.add_row(info.name, f"{info.default_input_size}x{info.default_input_size}", info.description)
    console.print(table)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Where to save the model (.safetensors + .json sidecar).")],
    dataset: DatasetOpt = "mnist5k",
    root: RootOpt = None,
    model: Annotated[str, typer.Option(help="Architecture (see `advsal models`).")] = "mnist-net",
    optimizer: Annotated[str, typer.Option(help="adam, rmsprop or sgd.")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    lr_decay: Annotated[float, typer.Option(help="Keras-style time-based decay per iteration.")] = 0.0,
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 64,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs (0 = off).")] = 0,
    min_delta: Annotated[float, typer.Option(help="Early-stopping minimum improvement.")] = 1e-4,
    val_fraction: Annotated[float, typer.Option(help="Share of training data held out for validation.")] = 0.0,
    normalize: Annotated[bool, typer.Option(help="Put the training set's per-channel mean/std in the model.")] = True,
    shift: Annotated[int, typer.Option(help="Augment: random translation by up to this many pixels.")] = 0,
    flip: Annotated[bool, typer.Option(help="Augment: random horizontal flips (not for digits).")] = False,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Train a zoo model on a dataset and save it."""
    from .data import stratified_split
    from .models import build_model, save_model
    from .training import EarlyStopping, evaluate, train_classifier

    set_quiet(quiet)
    train_set, test_set = _load(dataset, root, seed)
    val_set = None
    if val_fraction > 0:
        train_set, val_set = stratified_split(train_set, val_fraction, seed, (train_set.name, "validation"))
    mean = train_set.x.mean(dim=(0, 2, 3)).tolist() if normalize else None
    std = train_set.x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist() if normalize else None
    net = build_model(model, train_set.num_classes, train_set.channels, train_set.image_size[0], mean, std, seed=seed)
    stopping = EarlyStopping(min_delta, patience) if patience > 0 else None
    history = train_classifier(net, train_set, val_set, optimizer=optimizer, lr=lr, lr_decay=lr_decay, epochs=epochs,
                               batch_size=batch_size, early_stopping=stopping, seed=seed, shift=shift, flip=flip)
    ev = evaluate(net, test_set)
    path = save_model(net, out, classes=train_set.classes, dataset=dataset, seed=seed,
                      training={"optimizer": optimizer, "lr": lr, "lr_decay": lr_decay, "shift": shift, "flip": flip,
                                "epochs_run": len(history.epochs),
                                "batch_size": batch_size, "stopped_early": history.stopped_early,
                                "images_per_second": history.images_per_second},
                      metrics={"test_accuracy": ev.accuracy, "test_loss": ev.loss,
                               "train_accuracy": history.final.get("accuracy")})
    console.print(f"trained {model} on {dataset}: {len(history.epochs)} epochs in {history.seconds:.1f}s "
                  f"({history.images_per_second:.0f} images/s); test accuracy {ev.accuracy:.4f}; saved {path}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="A model saved by `advsal train`.")],
    dataset: DatasetOpt = "mnist5k",
    root: RootOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Write the confusion matrix as a PNG here.")] = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a saved model on a dataset's test split."""
    from .models import load_model
    from .training import evaluate as evaluate_model

    set_quiet(quiet)
    net = load_model(model)
    _, test_set = _load(dataset, root, seed)
    ev = evaluate_model(net, test_set)
    table = Table("class", "accuracy", "support")
    for name, acc, n in zip(test_set.classes, ev.per_class_accuracy, ev.confusion.sum(1), strict=True):
        table.add_row(name, f"{acc:.4f}", str(n))
    console.print(table)
    console.print(f"accuracy {ev.accuracy:.4f}  loss {ev.loss:.4f}  on {ev.n} images of {test_set.name}")
    if plot is not None:
        from .report.charts import matrix_heatmap

        matrix_heatmap(ev.confusion, test_set.classes, test_set.classes, plot, title="confusion matrix",
                       xlabel="predicted", ylabel="true", fmt="{:.0f}")
        console.print(f"confusion matrix written to {plot}")


def _parse_params(params: list[str]) -> dict:
    """``key=value`` strings → dict, values parsed as YAML scalars (numbers, booleans, strings)."""
    import yaml

    out = {}
    for item in params:
        if "=" not in item:
            raise CLIError(f"--param takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def _check_count(n: int | None, option: str = "--n") -> None:
    if n is not None and n < 1:
        raise CLIError(f"{option} must be ≥ 1 (or left out for all images), got {n}")


def _check_out_file(out: Path) -> None:
    """``out`` can be written as a file: not an existing folder, not under a file."""
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file name inside it, e.g. {out / 'adv.safetensors'}")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CLIError(f"--out {out}: {parent} is a file, not a folder")


def _test_images(dataset: str, root: Path | None, seed: int, n: int | None):
    from .data import subset

    _, test_set = _load(dataset, root, seed)
    return subset(test_set, n, seed) if n else test_set


#: The registry's attack names (kept equal to ``advsal.attacks.registry.ATTACKS`` by a test; spelled out here so
#: that ``--help`` does not import torch).
ATTACK_HELP = ("fgsm, bim, bim-l2, pgd, pgd-l2, jsma, cw, deepfool, pixel, apgd-ce, apgd-ce-l2, apgd-dlr, "
               "apgd-dlr-l2, apgd-t, apgd-t-l2, fab-t, fab-t-l2, square, square-l2, autoattack or autoattack-l2.")


@app.command()
def attack(
    model: Annotated[Path, typer.Option(help="A model saved by `advsal train`.")],
    attack: Annotated[str, typer.Option("--attack", "-a", help=ATTACK_HELP)],
    out: Annotated[Path, typer.Option(help="Output file: .safetensors or .npz (adversarial images + metadata).")],
    dataset: DatasetOpt = "mnist5k",
    root: RootOpt = None,
    eps: Annotated[float | None, typer.Option(help="Perturbation budget in pixel units.")] = None,
    steps: Annotated[int | None, typer.Option(help="Iterations.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Step size.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Other attack parameter key=value "
                                                                          "(repeatable).")] = None,
    targeted: Annotated[bool, typer.Option(help="Attack towards a random other class per image.")] = False,
    n: Annotated[int | None, typer.Option(help="Attack this many test images (stratified); default all.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 250,
    executor: Annotated[str, typer.Option(help="local, or ray: the shards as Ray tasks (pip install "
                                               "'advsal[ray]').")] = "local",
    shards: Annotated[int, typer.Option(help="Split the images into this many shards, crafted in parallel "
                                             "(random attacks seeded per shard).")] = 1,
    address: Annotated[str | None, typer.Option(help="Ray cluster for --executor ray: auto or ray://HOST:PORT "
                                                     "(default: a local Ray instance).")] = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Craft adversarial examples for a dataset's test images against a saved model."""
    from .attacks import craft_sharded, make_attack
    from .attacks.sharding import EXECUTORS
    from .attacks.targets import random_targets
    from .executor import import_ray
    from .models import load_model

    set_quiet(quiet)
    _check_count(n)
    _check_out_file(out)
    if out.suffix not in (".safetensors", ".npz"):
        raise CLIError(f"--out must end in .safetensors or .npz, got {out.name}")
    if executor not in EXECUTORS:
        raise CLIError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if shards < 1:
        raise CLIError(f"--shards must be ≥ 1, got {shards}")
    if executor == "ray":
        import_ray()  # before any work: without Ray, one line naming the install command
    net = load_model(model)
    data = _test_images(dataset, root, seed, n)
    params = _parse_params(param or [])
    params |= {k: v for k, v in (("eps", eps), ("steps", steps), ("alpha", alpha)) if v is not None}
    adversary = make_attack(attack, batch_size=batch_size, **params)
    targets = random_targets(data.y, data.num_classes, seed) if targeted or attack == "jsma" else None
    start = time.perf_counter()
    if executor == "local" and shards == 1:
        result = adversary(net, data.x, data.y, targets=targets)
    else:
        result = craft_sharded(adversary, net, data.x, data.y, shards=shards, executor=executor, targets=targets,
                               address=address)
    seconds = time.perf_counter() - start
    tensors = {"x": data.x, "y": data.y, "x_adv": result.x_adv, "pred": result.pred, "success": result.success,
               "linf": result.linf, "l2": result.l2, "l0": result.l0}
    if targets is not None:
        tensors["targets"] = targets
    if result.queries is not None:
        tensors["queries"] = result.queries
    meta = {"attack": attack, "params": params, "model": str(model), "dataset": dataset, "seed": seed,
            "targeted": targets is not None, "seconds": seconds, "shards": shards}
    robust = getattr(result, "robust_accuracy", None)  # AutoAttack: the number its users report
    if robust is not None:
        meta["robust_accuracy"] = robust
    _save_arrays(out, tensors, meta)
    console.print(f"{attack} on {len(data)} images of {data.name}: success {result.success_rate():.4f}"
                  f"{'' if robust is None else f' (robust accuracy {robust:.4f})'}; mean L∞ "
                  f"{float(result.linf.mean()):.4f}, L2 {float(result.l2.mean()):.4f}, L0 "
                  f"{float(result.l0.float().mean()):.1f} pixels; {len(data) / seconds:.1f} images/s; wrote {out}")


def _save_arrays(path: Path, tensors: dict, meta: dict) -> None:
    import io
    import json

    import numpy as np

    from .store import atomic_write_bytes, save_tensors

    if path.suffix == ".safetensors":
        save_tensors(path, tensors, meta)
        return
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: v.detach().cpu().numpy() for k, v in tensors.items()},
                        metadata=np.array(json.dumps(meta)))
    atomic_write_bytes(path, buf.getvalue())


def _load_arrays(path: Path) -> dict:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    if not path.is_file():
        raise CLIError(f"{path} not found: create it with `advsal attack ... --out {path.name}`")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        with np.load(path, allow_pickle=False) as f:
            return {k: torch.from_numpy(f[k]) for k in f.files if k != "metadata"}
    except Exception as exc:
        raise CLIError(f"{path}: not a readable adversarial-examples file ({exc})") from exc


#: Old CLI spellings of saliency methods, still accepted; the names are those of advsal.saliency.SALIENCY_METHODS.
_SALIENCY_ALIASES = {"guided": "guided-backprop", "gradcam": "grad-cam", "guided-gradcam": "guided-grad-cam",
                     "ig": "integrated-gradients"}


def _saliency_method(method: str):
    """The registered saliency method called ``method`` (or an old alias of its name); a CLIError otherwise."""
    from .saliency import SALIENCY_METHODS

    name = _SALIENCY_ALIASES.get(method, method)
    if name not in SALIENCY_METHODS:
        raise CLIError(f"unknown saliency method {method!r}; choose from {', '.join(SALIENCY_METHODS)}")
    return SALIENCY_METHODS[name]


@app.command()
def saliency(
    model: Annotated[Path, typer.Option(help="A model saved by `advsal train`.")],
    out: Annotated[Path, typer.Option(help="Output directory (maps.safetensors and grid.png).")],
    method: Annotated[str, typer.Option(help="One of gradient, guided-backprop, grad-cam, guided-grad-cam, "
                                             "smoothgrad, integrated-gradients.")] = "gradient",
    dataset: DatasetOpt = "mnist5k",
    root: RootOpt = None,
    target: Annotated[str, typer.Option(help="predicted, true, or a class index.")] = "predicted",
    layer: Annotated[str | None, typer.Option(help="Layer for Grad-CAM (default: the model's last conv stage).")]
    = None,
    adv: Annotated[Path | None, typer.Option(help="Adversarial examples from `advsal attack`: maps for clean "
                                                  "and adversarial images side by side.")] = None,
    n: Annotated[int, typer.Option(help="Number of images.")] = 8,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Saliency maps of a saved model for test images (and their adversarial versions), as tensors and a PNG."""
    import torch

    from .models import load_model
    from .report.figures import saliency_grid
    from .store import save_tensors

    set_quiet(quiet)
    _check_count(n)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder for maps.safetensors and grid.png")
    display = _saliency_method(method).display
    net = load_model(model)
    if adv is not None:
        stored = _load_arrays(adv)
        x, y, x_adv = stored["x"][:n], stored["y"][:n].long(), stored["x_adv"][:n]
    else:
        data = _test_images(dataset, root, seed, None)
        x, y, x_adv = data.x[:n], data.y[:n], None
    tgt: torch.Tensor | str
    if target in ("predicted", "true"):
        tgt = y if target == "true" else "predicted"
    elif target.lstrip("-").isdigit():
        tgt = torch.full((len(x),), int(target), dtype=torch.long)
    else:
        raise CLIError(f"--target must be predicted, true or a class index, got {target!r}")
    maps = {"clean": display(net, x, tgt, layer=layer, seed=seed)}
    if x_adv is not None:
        maps["adversarial"] = display(net, x_adv, tgt, layer=layer, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / "maps.safetensors", maps)
    with torch.no_grad():
        pred = net(x).argmax(1)
    titles = [f"y={int(a)} pred={int(b)}" for a, b in zip(y, pred, strict=True)]
    label = f"{method} ({target})"
    grid = saliency_grid(x, x_adv, {label: maps["clean"] if x_adv is None else (maps["clean"], maps["adversarial"])},
                         titles, out / "grid.png")
    console.print(f"{method} maps for {len(x)} images written to {out / 'maps.safetensors'} and {grid}")


DeviceOpt = Annotated[str | None, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N or mps; "
                                                      "default: the config's (auto).")]


@app.command()
def run(
    study: Annotated[str, typer.Argument(help="detection, imbalance, explanation or attention.")],
    preset: Annotated[str | None, typer.Option(help="A preset shipped with advsal (e.g. mnist5k, cifar10); "
                                                    "default: the study's defaults.")] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML config file (instead of --preset).")] = None,
    model: Annotated[str | None, typer.Option(help="Your classifier: package.module:function or "
                                                   "path/to/file.py:function returning an nn.Module that maps "
                                                   "[0, 1] images to logits (trained by the study unless "
                                                   "--weights is given).")] = None,
    weights: Annotated[Path | None, typer.Option(help="A .safetensors state dict for --model (used as is).")]
    = None,
    device: DeviceOpt = None,
    name: Annotated[str | None, typer.Option(help="Run name: results go to RUNS/NAME.")] = None,
    runs: Annotated[Path, typer.Option(help="Directory holding run directories.")] = Path("runs"),
    executor: Annotated[str, typer.Option(help="local (stages inline), or ray: stages whose inputs are ready "
                                               "run as Ray tasks (pip install 'advsal[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster for --executor ray: auto or ray://HOST:PORT "
                                                     "(default: a local Ray instance).")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="CPUs per Ray stage task (default: the config's "
                                                        "executor.num_cpus, 1).")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="GPUs per Ray stage task (default: the config's "
                                                        "executor.num_gpus, else 1 on a CUDA device, 0 "
                                                        "otherwise).")] = None,
    quiet: Quiet = False,
) -> None:
    """Run (or resume) a study; every finished stage is cached in the run directory."""
    from contextlib import nullcontext

    from .store import run_directory
    from .studies import get_study, study_config

    set_quiet(quiet)
    if executor not in ("local", "ray"):
        raise CLIError(f"--executor must be local or ray, got {executor!r}")
    if executor == "ray":
        from .executor import import_ray

        import_ray()  # before any work: without Ray, one line naming the install command
    module = get_study(study)
    overrides: dict = {}
    if device is not None:
        overrides["device"] = device
    if model is not None or weights is not None:
        overrides["classifier"] = {k: v for k, v in (("architecture", model),
                                                     ("weights", str(weights) if weights else None)) if v}
    if num_cpus is not None or num_gpus is not None:
        overrides["executor"] = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if v is not None}
    cfg = study_config(study, preset=preset, path=config, overrides=overrides)
    run_dir = run_directory(runs, name or cfg.name)
    parallel = nullcontext()
    if executor == "ray":
        from .executor import RayExecutor
        from .studies.engine import use_executor

        parallel = use_executor(RayExecutor(address, num_cpus=cfg.executor.num_cpus, num_gpus=cfg.executor.num_gpus))
    start = time.perf_counter()
    with parallel:
        results = module.run(cfg, run_dir, log=None if quiet else _log_line)
    _log_line(f"{study} study finished in {time.perf_counter() - start:.1f}s: {run_dir / 'report.md'}")
    for line in module.summary(results):
        _log_line(line)


def _log_line(text: str) -> None:
    """One line per event: rich markup off, and no wrapping inside values when stdout is not a terminal."""
    console.print(text, highlight=False, markup=False, soft_wrap=not console.is_terminal)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory with results.json.")],
           quiet: Quiet = False) -> None:
    """Re-render a run's report.md / report.html from its stored results."""
    from .studies import render_run

    md, page = render_run(run_dir)
    console.print(f"wrote {md} and {page}")


data_app = typer.Typer(no_args_is_help=True, help="Fetch the real datasets into the data cache ($ADVSAL_DATA).")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="mnist, fashion-mnist or cifar10.")],
    dir: Annotated[Path | None, typer.Option("--dir", help="Folder to put the files in (default: "
                                                           "$ADVSAL_DATA/NAME, ~/.cache/advsal/NAME).")] = None,
    quiet: Quiet = False,
) -> None:
    """Download a dataset's canonical archives (resumable), verify their published MD5s, keep them cached."""
    from .data.fetch import SOURCES, fetch, is_cached
    from .progress import Bar

    set_quiet(quiet)
    if name not in SOURCES:
        raise CLIError(f"cannot fetch {name!r}; fetchable: {', '.join(SOURCES)}")
    if is_cached(name, dir):
        folder = fetch(name, dir)  # checks the cached files' MD5s; a bad one is fetched again
        _log_line(f"{name}: already in {folder} (checked)")
        return
    bars: dict[str, Bar] = {}
    shown: dict[str, int] = {}

    def progress(filename: str, done: int, total: int | None) -> None:
        if filename not in bars:
            bars[filename] = Bar(f"fetch {filename}", total).__enter__()
        bars[filename].update(done - shown.get(filename, 0))
        shown[filename] = done

    try:
        folder = fetch(name, dir, on_progress=progress)
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)
    _log_line(f"{name}: verified and cached in {folder} (load it with --dataset {name}, or --root {folder})")


# ------------------------------------------------------------------------------------------------ guards
def _guard_inputs(images: Path, channels: int, size: int):
    """(x, names, skipped) from an image folder (every file, sorted; PNG/JPEG/… resized to size×size) or an
    .npz array (``x``, ``x_adv`` or its only array; NCHW or NHWC, float in [0, 1] or uint8)."""
    import zipfile

    import numpy as np
    import torch

    if images.is_file() and images.suffix == ".npz":
        try:
            with np.load(images, allow_pickle=False) as f:
                keys = [k for k in ("x", "x_adv", "images") if k in f.files][:1] or \
                    [k for k in f.files if k != "metadata"]
                if len(keys) != 1:
                    raise CLIError(f"{images}: holds arrays {', '.join(f.files) or 'none'}; name the images 'x'")
                arr = f[keys[0]]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CLIError(f"{images}: not a readable .npz file ({exc})") from None
        if arr.ndim == 3:
            arr = arr[:, None] if channels == 1 else arr
        if arr.ndim != 4:
            raise CLIError(f"{images}: images must be (N, C, H, W) or (N, H, W, C), got shape {arr.shape}")
        if arr.shape[1] != channels and arr.shape[-1] == channels:
            arr = arr.transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(arr))
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if tuple(x.shape[1:]) != (channels, size, size):
            raise CLIError(f"{images}: images of shape {tuple(x.shape[1:])}, the model takes "
                           f"({channels}, {size}, {size})")
        if len(x) == 0:
            raise CLIError(f"{images}: holds no images")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise CLIError(f"{images}: pixel values must be finite and in [0, 1] (or uint8 0..255)")
        return x, [str(i) for i in range(len(x))], []
    if not images.is_dir():
        raise CLIError(f"--images {images}: not a folder of images or an .npz file")
    from .data.loaders import UnreadableImage, read_image

    arrays, names, skipped = [], [], []
    for f in sorted(p for p in images.rglob("*") if p.is_file()):
        try:
            arrays.append(read_image(f, size, channels))
        except UnreadableImage as exc:  # a folder of inputs is messy: list the file and go on
            skipped.append((str(f.relative_to(images)), exc.reason))
            continue
        names.append(str(f.relative_to(images)))
    if not arrays:
        x = torch.zeros(0, channels, size, size)
    else:
        x = torch.from_numpy(np.stack(arrays)).float() / 255.0
    return x, names, skipped


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A detection study run directory (runs/NAME).")],
    detector: Annotated[str, typer.Option(help="The detector, e.g. image+saliency-bim or metzen-bim "
                                               "(an unknown name lists the run's detectors).")],
    out: Annotated[Path, typer.Option(help="The guard directory to write (detector, classifier, guard.json).")],
    model: Annotated[Path | None, typer.Option(help="The classifier (.safetensors saved by advsal), for runs "
                                                    "that did not train it themselves.")] = None,
    fpr: Annotated[float, typer.Option(help="Clean false-positive budget recorded for later calibration.")] = 0.05,
    quiet: Quiet = False,
) -> None:
    """Export a detector trained by a study run as a guard directory (`advsal detect --guard OUT`)."""
    from .detection.guard import DETECTOR_FILE, Guard
    from .detection.io import check_run_classifier, run_classifier, run_detector
    from .models import load_model
    from .studies.detection.registry import DETECTOR_SPECS, MAIN_DETECTOR

    set_quiet(quiet)
    if not run_dir.is_dir():
        raise CLIError(f"{run_dir} is not a run directory; run `advsal run detection --name NAME` first")
    if (out / f"{DETECTOR_FILE}.json").is_file():
        raise CLIError(f"--out {out} already holds a guard (and perhaps its calibration); remove it or choose "
                       "another --out")
    net = load_model(model) if model is not None else run_classifier(run_dir)
    if model is not None:
        check_run_classifier(run_dir, net)
    det, payload = run_detector(run_dir, detector, net, main=MAIN_DETECTOR, kinds=tuple(DETECTOR_SPECS))
    det.threshold = float(payload.get("threshold", det.threshold))
    guard = Guard(net, det, fpr=fpr)
    guard.save(out, classifier_meta=None if model is not None else {"exported_from": str(run_dir)})
    _log_line(f"exported {detector} ({type(det).__name__}) from {run_dir} to {out} (threshold "
              f"{guard.threshold:.4g}; calibrate it on clean images with Guard.calibrate)")


@app.command()
def detect(
    guard: Annotated[Path, typer.Option(help="A guard directory (written by `advsal export` or Guard.save).")],
    images: Annotated[Path, typer.Option(help="A folder of images (PNG, JPEG, …) or an .npz array file.")],
    out: Annotated[Path | None, typer.Option(help="Write one row per input here (.csv or .json).")] = None,
    model: Annotated[Path | None, typer.Option(help="The classifier (.safetensors saved by advsal); default "
                                                    "the one in the guard directory.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 256,
    device: DeviceOpt = None,
    quiet: Quiet = False,
) -> None:
    """Score images with a guard: prediction, detector score and flag per input; a summary on stdout."""
    import csv
    import io
    import json

    from .detection.guard import Guard
    from .models import load_model
    from .store import atomic_write_text
    from .tensors import resolve_device

    set_quiet(quiet)
    if out is not None and out.suffix not in (".csv", ".json"):
        raise CLIError(f"--out {out}: use a .csv or .json file name")
    if out is not None:
        _check_out_file(out)  # before the scoring, not after it
    if batch_size < 1:
        raise CLIError(f"--batch-size must be positive, got {batch_size}")
    from .detection.guard import CLASSIFIER_FILE

    if not guard.is_dir():
        raise CLIError(f"--guard {guard}: not a guard directory; write one with `advsal export`")
    if model is None and not (guard / f"{CLASSIFIER_FILE}.safetensors").is_file():
        raise CLIError(f"--guard {guard} holds no classifier; pass the model the guard was made for with --model")
    net = load_model(model if model is not None else guard / CLASSIFIER_FILE, device=resolve_device(device or "auto"))
    g = Guard.load(guard, net)
    g.batch_size = batch_size
    channels = getattr(g.model, "in_channels", None)
    size = getattr(g.model, "input_size", None)
    if channels is None or size is None:
        raise CLIError("the guard's classifier does not record its input shape (in_channels, input_size)")
    x, names, skipped = _guard_inputs(images, int(channels), int(size))
    if len(x) == 0:
        raise CLIError(f"--images {images}: no readable images ({len(skipped)} file(s) skipped"
                       + (f", first: {skipped[0][0]}: {skipped[0][1]}" if skipped else "") + ")")
    result = g(x)
    rows = [{"input": n, "prediction": int(p), "score": float(s), "flagged": bool(f)}
            for n, p, s, f in zip(names, result.predictions.tolist(), result.scores.tolist(),
                                  result.flagged.tolist(), strict=True)]
    if out is not None:
        if out.suffix == ".json":
            atomic_write_text(out, json.dumps({"guard": g.report(), "rows": rows,
                                               "skipped": [{"input": n, "reason": r} for n, r in skipped]},
                                              indent=2))
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, ["input", "prediction", "score", "flagged"], lineterminator="\n")
            writer.writeheader()
            writer.writerows({**r, "score": repr(r["score"])} for r in rows)
            atomic_write_text(out, buf.getvalue())
    for name, reason in skipped:
        _log_line(f"skipped {name}: {reason}")
    flagged = sum(r["flagged"] for r in rows)
    share = f" ({flagged / len(rows):.1%})" if rows else ""
    calibrated = "" if g.is_calibrated else " (uncalibrated: the exported default; calibrate with Guard.calibrate)"
    _log_line(f"scored {len(rows)} inputs: {flagged} flagged{share}, {len(rows) - flagged} accepted; threshold "
              f"{g.threshold:.4g}{calibrated}; {len(skipped)} skipped" + (f"; wrote {out}" if out is not None else ""))


def main() -> None:
    """Entry point: run the app; known errors become one line on stderr and exit status 2."""
    try:
        code = app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("advsal: interrupted; finished stages are kept, run the same command again to resume")
        sys.exit(130)
    except AdvsalError as exc:  # only advsal's own errors: anything else is a bug and keeps its traceback
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err_console.print(f"advsal: error: {message}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error from the parser
            err_console.print(f"advsal: {exc.format_message()}", highlight=False, markup=False, soft_wrap=True)
            sys.exit(exc.exit_code or 2)
        raise
    sys.exit(code if isinstance(code, int) else 0)
