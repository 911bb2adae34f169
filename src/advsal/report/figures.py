"""Saliency figures: heatmap overlays and clean-vs-adversarial saliency grids (matplotlib, PNG).

Layouts follow seed 001 Fig. 1 (clean and adversarial image above their saliency) and seed 004 Figs. 2–7
(saliency and Grad-CAM maps w.r.t. the true / predicted / adversarial class, clean vs adversarial).
Figures are built on ``matplotlib.figure.Figure`` objects, never through pyplot, so no global figure state or
backend is touched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import InputError
from ..store import atomic_write_bytes

ArrayLike = np.ndarray | torch.Tensor


def save_figure(fig: Figure, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Render ``fig`` to PNG and write it atomically (temporary file + rename); returns the path.

    ``tight=True`` crops to the drawn content (pixel size then depends on the content); ``tight=False`` keeps
    exactly ``figsize × dpi`` pixels.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().float().numpy()
    return np.asarray(a, dtype=np.float32)


def _image_hwc(image: ArrayLike) -> np.ndarray:
    """(C, H, W) or (H, W) pixels in [0, 1] → (H, W) grey or (H, W, 3) RGB for imshow."""
    img = _numpy(image)
    if img.ndim == 3:
        if img.shape[0] == 1:
            img = img[0]
        elif img.shape[0] == 3:
            img = img.transpose(1, 2, 0)
        else:
            raise InputError(f"image must have 1 or 3 channels (C, H, W), got shape {img.shape}")
    elif img.ndim != 2:
        raise InputError(f"image must be (C, H, W) or (H, W), got shape {img.shape}")
    return np.clip(img, 0.0, 1.0)


def _map_hw(saliency: ArrayLike) -> np.ndarray:
    """A saliency map as (H, W) magnitudes: (H, W), (1, H, W), or (C, H, W) reduced by max |·| over C."""
    m = np.abs(_numpy(saliency))
    if m.ndim == 3:
        m = m.max(axis=0)
    if m.ndim != 2:
        raise InputError(f"saliency map must be (H, W) or (C, H, W), got shape {m.shape}")
    return m


def _normalise(m: np.ndarray, scale: float | None = None) -> np.ndarray:
    top = float(m.max()) if scale is None else scale
    return m / top if top > 0 else np.zeros_like(m)


#: Default colour map of saliency magnitudes: perceptually uniform and readable in grey print (not ``jet``).
SALIENCY_CMAP = "inferno"
#: Font sizes (points) of grid labels and titles: readable when a grid is scaled to a ~1000 px column.
GRID_FONT = 10


def heatmap_overlay(image: ArrayLike, saliency: ArrayLike, alpha: float = 0.5, cmap: str = SALIENCY_CMAP,
                    scale: float | None = None) -> np.ndarray:
    """Blend a saliency map over an image: (H, W, 3) RGB floats in [0, 1].

    ``saliency`` magnitudes (|·|, max over channels) are divided by ``scale`` (default: the map's own
    maximum), coloured with ``cmap`` and mixed with the greyscale/RGB image as (1 − alpha)·image + alpha·heat.
    """
    img = _image_hwc(image)
    m = _map_hw(saliency)
    if m.shape != img.shape[:2]:
        raise InputError(f"saliency map {m.shape} and image {img.shape[:2]} differ in size; upsample the map "
                         "(e.g. CamResult.upsampled)")
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    heat = matplotlib.colormaps[cmap](np.clip(_normalise(m, scale), 0, 1))[..., :3]
    base = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    return ((1 - alpha) * base + alpha * heat).astype(np.float32)


def _draw_image(ax, image: np.ndarray) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")


def saliency_grid(images_clean: ArrayLike, images_adv: ArrayLike | None,
                  maps: Mapping[str, tuple[ArrayLike, ArrayLike] | ArrayLike], titles: Sequence[str] | None = None,
                  path: str | Path | None = None, overlay: bool = False, cmap: str = SALIENCY_CMAP,
                  cell_inches: float = 1.2, dpi: int = 100) -> Path | Figure:
    """A clean-vs-adversarial saliency grid (seed 001 Fig. 1, seed 004 Figs. 2–7).

    Each example gets two columns (clean | adversarial); the first row shows the images, then one row per
    entry of ``maps`` (row label → (clean maps, adversarial maps), each (N, H, W), (N, 1, H, W) or
    (N, C, H, W)), e.g. ``{"true class": ..., "predicted": ..., "adversarial class": ...}``. The clean and
    adversarial map of one example share one colour scale, so their magnitudes compare. With
    ``images_adv=None`` each example gets one column and each ``maps`` entry is a single batch of maps.
    ``overlay=True`` blends maps over the images. ``titles`` (one per example, e.g. "7 → 3") head each
    example's columns. Each map row carries a colour bar under its label (0 … the example's maximum, which is
    what every map of the row is scaled to).

    The PNG is exactly ``(K·N + 1) · cell_inches · dpi`` wide (K = 2, or 1 without adversarial images) and
    ``(R + 1.5) · cell_inches · dpi`` high (R = len(maps); one cell of row labels, half a cell of titles).
    Written atomically to ``path`` and the path returned; with ``path=None`` the Figure is returned instead.
    """
    clean = _numpy(images_clean)
    batches = [clean] if images_adv is None else [clean, _numpy(images_adv)]
    if clean.ndim != 4 or batches[-1].shape != clean.shape:
        raise InputError(f"images_clean and images_adv must be NCHW batches of one shape, got {clean.shape} "
                         f"and {batches[-1].shape}")
    n, k = clean.shape[0], len(batches)
    if n == 0:
        raise InputError("saliency_grid needs at least one example")
    if titles is not None and len(titles) != n:
        raise InputError(f"titles needs one entry per example ({n}), got {len(titles)}")
    rows = [(label, (value,) if k == 1 else value) for label, value in maps.items()]
    for label, group in rows:
        if len(group) != k or any(len(m) != n for m in group):
            shape = "a batch of" if k == 1 else "(clean maps, adversarial maps) with"
            raise InputError(f"maps[{label!r}] must be {shape} {n} maps each")

    ncols, nrows = k * n, 1 + len(rows)
    fig = Figure(figsize=((ncols + 1) * cell_inches, (nrows + 0.5) * cell_inches), dpi=dpi)
    width, height = ncols + 1.0, nrows + 0.5
    pad = 0.04
    axes = [[fig.add_axes(((1 + c + pad) / width, (nrows - 1 - r + pad) / height, (1 - 2 * pad) / width,
                           (1 - 2 * pad) / height)) for c in range(ncols)] for r in range(nrows)]
    for i in range(n):
        for side, batch in enumerate(batches):
            ax = axes[0][k * i + side]
            _draw_image(ax, _image_hwc(batch[i]))
            if k == 2:
                ax.set_title(("clean", "adversarial")[side], fontsize=GRID_FONT - 1, pad=2)
        if titles is not None:
            fig.text((1 + k * i + k / 2) / width, (nrows + 0.3) / height, str(titles[i]), ha="center",
                     va="center", fontsize=GRID_FONT, fontweight="bold")
    for r, (label, group) in enumerate(rows, start=1):
        fig.text(0.5 / width, (nrows - r - 0.35) / height, str(label), ha="center", va="center",
                 fontsize=GRID_FONT, wrap=True)
        bar = fig.add_axes((0.15 / width, (nrows - r - 0.78) / height, 0.7 / width, 0.09 / height))
        bar.imshow(np.linspace(0, 1, 64)[None, :], cmap=cmap, aspect="auto", extent=(0, 1, 0, 1))
        bar.set_yticks([])
        bar.set_xticks([0, 1], labels=["0", "max"], fontsize=GRID_FONT - 2)
        bar.tick_params(length=2, pad=1)
        for i in range(n):
            cells = [_map_hw(_numpy(m[i])) for m in group]
            scale = max(float(c.max()) for c in cells)
            for side, m in enumerate(cells):
                ax = axes[r][k * i + side]
                if overlay:
                    ax.imshow(heatmap_overlay(batches[side][i], m, cmap=cmap, scale=scale))
                else:
                    ax.imshow(_normalise(m, scale), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    fig.text(0.5 / width, (nrows - 0.5) / height, "image", ha="center", va="center", fontsize=GRID_FONT)
    for ax in (a for row in axes for a in row):
        ax.set_xticks([])
        ax.set_yticks([])
    if path is None:
        return fig
    return save_figure(fig, path, dpi=dpi, tight=False)
