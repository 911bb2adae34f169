"""The attention metrics of seed 004 (``advsal.saliency.compare``) on hand-made maps; the study itself is tested
in test_study_attention.py."""

from __future__ import annotations

import math

import pytest
import torch

from advsal.saliency import compare as cmp


def point_map(n: int, h: int, w: int, row: int, col: int) -> torch.Tensor:
    m = torch.zeros(n, h, w)
    m[:, row, col] = 1.0
    return m


def test_entropy_uniform_is_maximal_and_point_is_zero():
    uniform = torch.full((1, 6, 6), 0.3)
    two = torch.zeros(1, 6, 6)
    two[0, 0, 0] = two[0, 5, 5] = -2.0  # magnitudes count
    rand = torch.rand(5, 6, 6, generator=torch.Generator().manual_seed(0))
    assert cmp.saliency_entropy(uniform).item() == pytest.approx(1.0)
    assert cmp.saliency_entropy(point_map(1, 6, 6, 2, 3)).item() == pytest.approx(0.0, abs=1e-7)
    assert cmp.saliency_entropy(two).item() == pytest.approx(math.log(2) / math.log(36))
    assert cmp.saliency_entropy(two, normalized=False).item() == pytest.approx(math.log(2))
    assert (cmp.saliency_entropy(rand) < 1.0).all()
    assert torch.isnan(cmp.saliency_entropy(torch.zeros(1, 6, 6))).all()


def test_spread_and_centre_of_mass():
    assert cmp.spatial_spread(point_map(1, 7, 7, 1, 5)).item() == pytest.approx(0.0, abs=1e-6)
    assert cmp.center_of_mass(point_map(1, 7, 7, 1, 5)).tolist() == [[1.0, 5.0]]
    two = torch.zeros(1, 7, 7)
    two[0, 3, 0] = two[0, 3, 6] = 1.0  # mass at distance 3 either side of (3, 3)
    assert cmp.center_of_mass(two).tolist() == [[3.0, 3.0]]
    assert cmp.spatial_spread(two).item() == pytest.approx(3.0)
    uniform = torch.ones(1, 5, 8)
    expected = math.sqrt((25 - 1) / 12 + (64 - 1) / 12)
    assert cmp.spatial_spread(uniform).item() == pytest.approx(expected, rel=1e-5)


def test_identical_maps_have_iou_one_and_no_shift():
    maps = torch.rand(4, 10, 10, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cmp.topk_iou(maps, maps, 0.1), torch.ones(4))
    assert torch.allclose(cmp.rank_correlation(maps, maps), torch.ones(4))
    assert torch.allclose(cmp.com_displacement(maps, maps), torch.zeros(4), atol=1e-5)
    assert torch.allclose(cmp.peak_displacement(maps, maps), torch.zeros(4))


def test_shifted_and_reversed_maps():
    a, b = point_map(1, 10, 10, 1, 1), point_map(1, 10, 10, 4, 5)
    assert cmp.com_displacement(a, b).item() == pytest.approx(5.0)  # 3-4-5 triangle
    assert cmp.peak_displacement(a, b).item() == pytest.approx(5.0)
    assert cmp.topk_iou(a, b, 0.01).item() == 0.0  # top-1 pixels differ
    ramp = torch.arange(16.0).view(1, 4, 4)
    assert cmp.rank_correlation(ramp, ramp.flip(-1).flip(-2)).item() == pytest.approx(-1.0)
    half = torch.zeros(1, 4, 4)
    half[0, :2] = 1.0  # top-8 of `half` is the upper half; top-8 of `ramp` is the lower half
    assert cmp.topk_iou(half, ramp, 0.5).item() == 0.0
    assert torch.isnan(cmp.topk_iou(torch.zeros(1, 4, 4), ramp)).all()
    assert cmp.chance_iou(0.1) == pytest.approx(0.1 / 1.9)


def test_attraction_to_planted_pixel():
    mask = torch.zeros(2, 9, 9, dtype=torch.bool)
    mask[:, 4, 4] = True
    on_pixel = point_map(2, 9, 9, 4, 4)
    att = cmp.attraction(on_pixel, mask, radius=0)
    assert att.share.tolist() == [1.0, 1.0]
    assert att.chance.tolist() == pytest.approx([1 / 81, 1 / 81])
    assert att.ratio.tolist() == pytest.approx([81.0, 81.0])
    # within radius 1 of (4, 4): the pixel and its 4 neighbours; a uniform map matches chance exactly
    near = cmp.attraction(torch.ones(2, 9, 9), mask, radius=1)
    assert near.share.tolist() == pytest.approx([5 / 81, 5 / 81])
    assert near.ratio.tolist() == pytest.approx([1.0, 1.0])
    far = cmp.attraction(point_map(2, 9, 9, 0, 0), mask, radius=2)
    assert far.share.tolist() == [0.0, 0.0]
    assert cmp.dilate(mask, 1.5)[0].sum().item() == 9  # the 3×3 square


def test_perturbed_pixels_and_random_tie_breaking():
    x = torch.zeros(1, 3, 6, 6)
    xa = x.clone()
    xa[0, 1, 2, 3] = 0.5  # any channel counts
    xa[0, 0, 5, 0] = 1e-8  # below tolerance
    assert cmp.perturbed_pixels(x, xa)[0].nonzero().tolist() == [[2, 3]]
    big = torch.zeros(1, 1, 28, 28)
    flat = (big + 0.1).clamp(0, 1)  # every pixel changed by the same ε, like L∞ PGD
    flat[0, 0, 27, 27] = 0.3  # the one most changed pixel always wins
    m0 = cmp.perturbed_pixels(big, flat, top_k=5, seed=0)[0]
    m1 = cmp.perturbed_pixels(big, flat, top_k=5, seed=1)[0]
    assert m0.sum() == 5 and m0[27, 27] and m1[27, 27]
    assert not torch.equal(m0, m1)  # ties broken at random, per seed
    assert m0.flatten()[:4].sum() < 4  # not by position


def test_cam_energy_and_peak():
    cams = torch.zeros(2, 4, 4)
    cams[0, 1, 2] = 8.0
    cams[1] = 2.0
    assert cmp.cam_energy(cams).tolist() == [0.5, 2.0]
    loc, value = cmp.cam_peak(cams)
    assert loc[0].tolist() == [1.0, 2.0] and value.tolist() == [8.0, 2.0]
    assert torch.isnan(cmp.peak_displacement(cams, torch.zeros(2, 4, 4))).all()


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        cmp.topk_iou(torch.zeros(1, 4, 4), torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        cmp.saliency_entropy(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="must match"):
        cmp.attraction(torch.ones(1, 4, 4), torch.zeros(1, 5, 5, dtype=torch.bool))
