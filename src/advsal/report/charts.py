"""Charts for study reports: matrix heatmaps, ROC curves, grouped bars, distributions (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .figures import save_figure  # noqa: E402


def matrix_heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], path: str | Path,
                   title: str = "", xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}",
                   vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis") -> Path:
    """An annotated heatmap (generalisation matrices, confusion matrices)."""
    m = np.asarray(matrix, dtype=float)
    fig = Figure(figsize=(2.5 + 0.9 * m.shape[1], 1.5 + 0.6 * m.shape[0]))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]), labels=list(col_labels), rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), labels=list(row_labels))
    lo, hi = np.nanmin(m) if m.size else 0, np.nanmax(m) if m.size else 1
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                bright = (m[i, j] - lo) / (hi - lo + 1e-12) > 0.6
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=10,
                        color="black" if bright else "white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


#: Line styles and markers cycled with the colours, so overlapping curves stay distinguishable.
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str = "",
             min_fpr: float = 1e-3) -> Path:
    """ROC curves, ``curves[label] = (fpr, tpr, auroc)``, with a log-scale FPR axis from ``min_fpr`` to 1 (the
    low-FPR region where detectors differ is visible); each curve gets its own colour, line style and marker.
    Points at FPR 0 are drawn at ``min_fpr``."""
    fig = Figure(figsize=(7.5, 5.2))
    ax = fig.add_subplot()
    for i, (label, (fpr, tpr, auc)) in enumerate(curves.items()):
        x = np.clip(np.asarray(fpr, dtype=float), min_fpr, 1.0)
        ax.plot(x, tpr, label=f"{label} (AUROC {auc:.3f})", linestyle=LINE_STYLES[i % len(LINE_STYLES)],
                marker=MARKERS[i % len(MARKERS)], markevery=max(1, len(x) // 8), markersize=6, linewidth=1.8,
                alpha=0.9, drawstyle="steps-post")
    grid = np.logspace(np.log10(min_fpr), 0, 50)
    ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("false positive rate (clean called adversarial), log scale", fontsize=11)
    ax.set_ylabel("true positive rate", fontsize=11)
    ax.set_xlim(min_fpr, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize=12)
    ax.legend(fontsize=9, loc="lower right")
    return save_figure(fig, path)


def grouped_bars(values: dict[str, Sequence[float]], categories: Sequence[str], path: str | Path,
                 errors: dict[str, Sequence[float]] | None = None, title: str = "", ylabel: str = "") -> Path:
    """Bars per category, one bar per series (e.g. balanced vs depleted), optional error bars."""
    fig = Figure(figsize=(max(5, 0.7 * len(categories) * max(1, len(values)) / 1.5), 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(values))
    x = np.arange(len(categories))
    for i, (label, vals) in enumerate(values.items()):
        err = None if errors is None else errors.get(label)
        ax.bar(x + (i - (len(values) - 1) / 2) * width, vals, width, yerr=err, label=label, capsize=2)
    ax.set_xticks(x, labels=list(categories), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def distributions(samples: dict[str, np.ndarray], path: str | Path, title: str = "", xlabel: str = "") -> Path:
    """Box plots of several samples side by side (metric distributions)."""
    fig = Figure(figsize=(max(4, 1.1 * len(samples)), 3.8))
    ax = fig.add_subplot()
    data = [np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))] for v in samples.values()]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(samples) + 1), labels=list(samples), rotation=30, ha="right")
    ax.set_ylabel(xlabel)
    ax.set_title(title)
    return save_figure(fig, path)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "",
              xlabel: str = "", ylabel: str = "") -> Path:
    """Lines ``series[label] = (x, y)`` (training curves, accuracy vs epsilon)."""
    fig = Figure(figsize=(5, 3.8))
    ax = fig.add_subplot()
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
