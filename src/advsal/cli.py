"""The ``advsal`` command: parses arguments and calls the library or a study; errors print one line, exit 2."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .progress import set_quiet

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial examples and saliency: attacks, saliency maps, detection, studies.")
console = Console()
err_console = Console(stderr=True)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Seed = Annotated[int, typer.Option(help="Random seed (data split, initialisation, attacks).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (see `advsal datasets`).")]
RootOpt = Annotated[Path | None, typer.Option(help="Directory or file holding the dataset's files.")]


class CLIError(Exception):
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
                               batch_size=batch_size, early_stopping=stopping, seed=seed)
    ev = evaluate(net, test_set)
    path = save_model(net, out, classes=train_set.classes, dataset=dataset, seed=seed,
                      training={"optimizer": optimizer, "lr": lr, "epochs_run": len(history.epochs),
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
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a saved model on a dataset's test split."""
    from .models import load_model
    from .training import evaluate as evaluate_model

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


@app.command()
def run(
    study: Annotated[str, typer.Argument(help="detection, imbalance, explanation or attention.")],
    config: Annotated[Path | None, typer.Option(help="A YAML preset (see configs/); default: the study's.")] = None,
    name: Annotated[str | None, typer.Option(help="Run name: results go to RUNS/NAME.")] = None,
    runs: Annotated[Path, typer.Option(help="Directory holding run directories.")] = Path("runs"),
    quiet: Quiet = False,
) -> None:
    """Run (or resume) a study; every finished stage is cached in the run directory."""
    from .studies import get_study

    set_quiet(quiet)
    module = get_study(study)
    cfg = module.load_config(config)
    run_dir = runs / (name or cfg.name)
    start = time.perf_counter()
    results = module.run(cfg, run_dir, log=None if quiet else console.print)
    console.print(f"{study} study finished in {time.perf_counter() - start:.1f}s: {run_dir / 'report.md'}")
    for line in module.summary(results):
        console.print(line)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory with results.json.")]) -> None:
    """Re-render a run's report.md / report.html from its stored results."""
    from .studies import render_run

    md, page = render_run(run_dir)
    console.print(f"wrote {md} and {page}")


def main() -> None:
    """Entry point: run the app; known errors become one line on stderr and exit status 2."""
    from .data import DataError
    from .models import ModelFileError

    try:
        code = app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("advsal: aborted")
        sys.exit(130)
    except (CLIError, DataError, ModelFileError, ValueError, FileNotFoundError, KeyError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err_console.print(f"advsal: error: {message}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error from the parser
            err_console.print(f"advsal: {exc.format_message()}", highlight=False, markup=False, soft_wrap=True)
            sys.exit(exc.exit_code or 2)
        raise
    sys.exit(code if isinstance(code, int) else 0)
