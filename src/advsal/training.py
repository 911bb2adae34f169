"""One trainer for every classifier and detector: optimisers, decay, early stopping, seeding, progress."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet
from .errors import AdvsalError, InputError
from .progress import Bar
from .tensors import model_device, predict_logits

OPTIMIZERS = ("adam", "rmsprop", "sgd")


class TrainingError(AdvsalError, ValueError):
    """Training cannot run (bad settings) or diverged (a non-finite loss); the model is not usable."""


@dataclass
class EarlyStopping:
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs (seed 002 §5.3:
    δ = 1e-4, patience 10, at most 200 epochs)."""

    min_delta: float = 1e-4
    patience: int = 10
    restore_best: bool = True


@dataclass
class TrainHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    images_per_second: float = 0.0

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


@dataclass
class Evaluation:
    """Accuracy, mean cross-entropy, per-class accuracy (recall) and the confusion matrix (rows = true)."""

    accuracy: float
    loss: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    n: int

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "loss": self.loss, "n": self.n,
                "per_class_accuracy": self.per_class_accuracy.tolist(), "confusion": self.confusion.tolist()}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per class from a confusion matrix; NaN for a class with no examples."""
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 512) -> Evaluation:
    """Evaluate ``model`` on ``data`` in eval mode (the model's mode is restored afterwards)."""
    logits = predict_logits(model, data.x, batch_size)
    if logits.shape[1] != data.num_classes:
        raise InputError(f"model has {logits.shape[1]} outputs but {data.name} has {data.num_classes} classes")
    loss = float(F.cross_entropy(logits, data.y).item()) if len(data) else float("nan")
    pred, truth = logits.argmax(1).cpu().numpy(), data.y.cpu().numpy()
    cm = confusion_matrix(truth, pred, data.num_classes)
    acc = float((pred == truth).mean()) if len(data) else float("nan")
    return Evaluation(acc, loss, per_class_accuracy(cm), cm, len(data))


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        # Keras' RMSprop defaults (rho 0.9, eps 1e-7) as used by seed 002.
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise InputError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def augment(x: torch.Tensor, shift: int = 0, flip: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example random translation by up to ``shift`` pixels (zero fill) and, with ``flip``, random horizontal
    flips: the standard MNIST/CIFAR training augmentations, as two gathers on the batch."""
    n, _, h, w = x.shape
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mirrored.to(x.device)[:, None, None, None], x.flip(3), x)
    if shift > 0:
        offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator).to(x.device)
        padded = F.pad(x, (shift, shift, shift, shift))
        rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
        padded = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * shift))
        cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded.gather(3, cols.expand(n, x.shape[1], h, w))
    return x


def train_classifier(model: nn.Module, train: ImageSet, val: ImageSet | None = None, *, optimizer: str = "adam",
                     lr: float = 1e-3, epochs: int = 10, batch_size: int = 128, weight_decay: float = 0.0,
                     lr_decay: float = 0.0, early_stopping: EarlyStopping | None = None, seed: int = 0,
                     shift: int = 0, flip: bool = False, description: str = "train") -> TrainHistory:
    """Train ``model`` with cross-entropy on ``train``; returns the per-epoch history.

    ``lr_decay`` is Keras' time-based decay, lr / (1 + decay · iterations) (seed 002: 1e-5). ``shift``/``flip``
    turn on the random-translation / horizontal-flip augmentation (:func:`augment`). With ``early_stopping`` the
    validation loss (training loss without ``val``) is monitored. The model is left in eval mode.
    """
    if epochs < 1 or batch_size < 1 or not 0 < lr < math.inf:
        raise TrainingError(f"epochs, batch_size and lr must be positive and finite (got {epochs}, {batch_size}, "
                            f"{lr})")
    if shift < 0 or shift >= min(train.image_size):
        raise InputError(f"shift must be between 0 and the image size - 1, got {shift}")
    if len(train) == 0:
        raise InputError(f"{train.name} is empty")
    device = model_device(model)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (1.0 + lr_decay * it))
    history = TrainHistory()
    best_loss, best_state, waited = float("inf"), None, 0
    n_batches = (len(train) + batch_size - 1) // batch_size
    start = time.perf_counter()
    seen = 0
    with Bar(description, epochs * n_batches) as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(train), generator=gen)
            total_loss, correct = 0.0, 0
            for i in range(n_batches):
                idx = order[i * batch_size:(i + 1) * batch_size]
                xb, yb = train.x[idx].to(device), train.y[idx].to(device)
                if shift or flip:
                    xb = augment(xb, shift, flip, gen)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += len(idx)
                bar.update(info=f"epoch {epoch} loss {loss.item():.4f}")
            if not math.isfinite(total_loss):
                raise TrainingError(f"the training loss became {total_loss} in epoch {epoch} (lr {lr} is probably "
                                    "too large for this model); lower --lr, nothing was saved")
            row = {"epoch": epoch, "loss": total_loss / len(train), "accuracy": correct / len(train)}
            if val is not None:
                ev = evaluate(model, val)
                row.update(val_loss=ev.loss, val_accuracy=ev.accuracy)
            history.epochs.append(row)
            if early_stopping is not None:
                monitored = row.get("val_loss", row["loss"])
                if monitored < best_loss - early_stopping.min_delta:
                    best_loss, waited, history.best_epoch = monitored, 0, epoch
                    if early_stopping.restore_best:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    waited += 1
                    if waited >= early_stopping.patience:
                        history.stopped_early = True
                        break
            else:
                history.best_epoch = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    history.images_per_second = seen / max(history.seconds, 1e-9)
    return history


def _pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, alpha: float,
              gen: torch.Generator) -> torch.Tensor:
    """L∞ PGD with a uniform random start (Madry et al. 2018 §5), the model's parameters untouched."""
    lo, hi = (x - eps).clamp_min(0), (x + eps).clamp_max(1)
    x_adv = torch.minimum(torch.maximum(x + eps * (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device), lo), hi)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), lo), hi)
    return x_adv.detach()


def adversarial_train_classifier(model: nn.Module, train: ImageSet, *, eps: float, steps: int = 7,
                                 alpha: float | None = None, lr: float = 1e-3, epochs: int = 10,
                                 batch_size: int = 128, seed: int = 0, clean_epochs: int = 0,
                                 description: str = "adversarial training") -> TrainHistory:
    """PGD adversarial training (Madry et al., ICLR 2018, Eq. 2.1): Adam on the cross-entropy of L∞ PGD examples
    (``steps`` steps of size ``alpha``, default 2.5·ε/steps, random start) crafted against the current model
    for every batch. ``clean_epochs`` ordinary epochs first (a warm start; 0 = none). The model is left in eval
    mode; returns the per-epoch history (``accuracy`` = accuracy on the batches' adversarial examples)."""
    if not (0 <= eps < math.inf) or steps < 1 or epochs < 1 or batch_size < 1 or not 0 < lr < math.inf:
        raise TrainingError(f"eps must be ≥ 0 and steps, epochs, batch_size, lr positive (got {eps}, {steps}, "
                            f"{epochs}, {batch_size}, {lr})")
    if clean_epochs:
        train_classifier(model, train, lr=lr, epochs=clean_epochs, batch_size=batch_size, seed=seed,
                         description=f"{description} (clean warm-up)")
    step = 2.5 * eps / steps if alpha is None else float(alpha)
    device = model_device(model)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer("adam", [p for p in model.parameters() if p.requires_grad], lr)
    history = TrainHistory()
    n_batches = (len(train) + batch_size - 1) // batch_size
    start = time.perf_counter()
    with Bar(description, epochs * n_batches) as bar:
        for epoch in range(1, epochs + 1):
            total, correct = 0.0, 0
            for idx in torch.randperm(len(train), generator=gen).split(batch_size):
                xb, yb = train.x[idx].to(device), train.y[idx].to(device)
                model.eval()
                flags = [p.requires_grad for p in model.parameters()]
                for p in model.parameters():
                    p.requires_grad_(False)
                try:
                    xa = _pgd_linf(model, xb, yb, eps, steps, step, gen) if eps > 0 else xb
                finally:
                    for p, f in zip(model.parameters(), flags, strict=True):
                        p.requires_grad_(f)
                model.train()
                logits = model(xa)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                correct += int((logits.detach().argmax(1) == yb).sum())
                bar.update(info=f"epoch {epoch} loss {loss.item():.4f}")
            if not math.isfinite(total):
                raise TrainingError(f"the adversarial training loss became {total} in epoch {epoch}; lower lr")
            history.epochs.append({"epoch": epoch, "loss": total / len(train), "accuracy": correct / len(train)})
            history.best_epoch = epoch
    model.eval()
    history.seconds = time.perf_counter() - start
    history.images_per_second = epochs * len(train) / max(history.seconds, 1e-9)
    return history
