"""advsal.report.figures: saliency grids and overlays are written as PNGs of the documented size."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from advsal.report.figures import heatmap_overlay, saliency_grid, save_figure


def test_saliency_grid_png_has_expected_pixel_size(tmp_path):
    n, rows = 3, 3
    torch.manual_seed(0)
    clean, adv = torch.rand(n, 1, 28, 28), torch.rand(n, 1, 28, 28)
    maps = {label: (torch.rand(n, 1, 28, 28), torch.rand(n, 28, 28)) for label in ("true", "pred", "adv")}
    path = saliency_grid(clean, adv, maps, titles=["7 → 3", "1 → 1", "2 → 8"],
                         path=tmp_path / "g" / "grid.png", cell_inches=1.0, dpi=50)
    assert path.exists()
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == ((rows + 1.5) * 50, (2 * n + 1) * 50)  # (R + 1.5) cells high, (2N + 1) wide
    assert img[..., :3].std() > 0.05  # something was drawn
    assert list(path.parent.iterdir()) == [path]  # atomic write leaves no temporary file


def test_saliency_grid_rgb_overlay_returns_figure_without_path():
    clean = np.random.rand(2, 3, 8, 8).astype(np.float32)
    maps = {"cam": (np.random.rand(2, 8, 8), np.random.rand(2, 8, 8))}
    fig = saliency_grid(clean, clean, maps, overlay=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 * 2 + 1  # the cells and one colour bar per map row
    bar = fig.axes[-1]
    assert [t.get_text() for t in bar.get_xticklabels()] == ["0", "max"]


def test_saliency_grid_without_adversarial_images_has_one_column_per_example(tmp_path):
    x = torch.rand(3, 1, 8, 8)
    path = saliency_grid(x, None, {"gradient": torch.rand(3, 8, 8), "cam": torch.rand(3, 1, 8, 8)},
                         titles=["a", "b", "c"], path=tmp_path / "g.png", cell_inches=1.0, dpi=40)
    assert matplotlib.image.imread(path).shape[:2] == ((2 + 1.5) * 40, (3 + 1) * 40)
    with pytest.raises(ValueError, match="a batch of 3 maps"):
        saliency_grid(x, None, {"m": torch.rand(2, 8, 8)})


def test_saliency_grid_rejects_mismatched_inputs():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="one shape"):
        saliency_grid(x, x[:1], {}, path=None)
    with pytest.raises(ValueError, match="one entry per example"):
        saliency_grid(x, x, {}, titles=["a"])
    with pytest.raises(ValueError, match="maps"):
        saliency_grid(x, x, {"m": (torch.rand(2, 8, 8), torch.rand(1, 8, 8))})


def test_heatmap_overlay_blends_map_over_image():
    image = torch.zeros(1, 4, 4)
    sal = torch.zeros(4, 4)
    sal[0, 0] = -2.0  # magnitude is shown
    out = heatmap_overlay(image, sal, alpha=1.0, cmap="gray")
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1:, 1:], 0.0, atol=1e-6)
    half = heatmap_overlay(torch.ones(1, 4, 4), sal, alpha=0.5, cmap="gray")
    np.testing.assert_allclose(half[3, 3], 0.5, atol=1e-6)  # (1 − α)·1 + α·0
    with pytest.raises(ValueError, match="differ in size"):
        heatmap_overlay(image, torch.zeros(2, 2))


def test_no_pyplot_state_is_touched(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "f.png", dpi=40, tight=False)
    assert matplotlib.image.imread(out).shape[:2] == (40, 80)
    saliency_grid(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), {}, path=tmp_path / "g.png")
    assert plt.get_fignums() == before
