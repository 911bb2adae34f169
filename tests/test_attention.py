"""Attention study (seed 004): map-comparison metrics on hand-made maps, the claim decision rules on planted
data, and a tiny end-to-end run (report, cache reuse)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from advsal.saliency import compare as cmp
from advsal.studies import attention, render_run
from advsal.studies.common import merge_config


def point_map(n: int, h: int, w: int, row: int, col: int) -> torch.Tensor:
    m = torch.zeros(n, h, w)
    m[:, row, col] = 1.0
    return m


# ----------------------------------------------------------------------------------------------------
# Metrics on hand-made maps


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


# ----------------------------------------------------------------------------------------------------
# Statistics and the claim decision rules on planted data


def test_statistics_helpers():
    assert attention.cliffs_delta(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert attention.cliffs_delta(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert attention.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    up = attention.paired_test(np.arange(30.0) + 1, np.arange(30.0))
    assert up["effect"] == 1.0 and up["p"] < 1e-5 and up["estimate"] == pytest.approx(1.0)
    ci = attention.mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    assert ci["n"] == 3 and ci["mean"] == 2.0 and ci["lo"] < 2.0 < ci["hi"]
    assert attention.verdict(["confirmed", "confirmed", "untestable"]) == "supported"
    assert attention.verdict(["confirmed", "inconclusive"]) == "mixed"
    assert attention.verdict(["contradicted", "inconclusive"]) == "not supported"
    assert attention.verdict(["untestable"]) == "not testable"


LAYERS = ["features.3", "features.5"]


def planted_metrics(n: int = 60) -> dict[str, dict[str, np.ndarray]]:
    """Independent noise for every metric a claim uses, then planted effects for a few claims."""
    rng = np.random.default_rng(0)
    names = {t.a for c in attention.claims(LAYERS, 0.5) for t in c.tests} | \
        {t.b for c in attention.claims(LAYERS, 0.5) for t in c.tests}
    names |= set(attention.comparison_metrics(LAYERS))
    names.discard("")
    metrics = {g: {m: rng.normal(size=n) for m in names} for g in ("pgd", "pixel")}
    pgd, pixel = metrics["pgd"], metrics["pixel"]
    # pgd-diffuses: entropy and spread both higher on x̂ → supported
    pgd["sm:entropy:a_d"] = pgd["sm:entropy:x_c"] + 1.0
    pgd["sm:spread:a_d"] = pgd["sm:spread:x_c"] + 0.5
    # pgd-diffuses-both-classes: both lower → not supported (contradicted)
    pgd["sm:entropy:a_c"] = pgd["sm:entropy:x_c"] - 1.0
    pgd["sm:entropy:x_d"] = pgd["sm:entropy:a_d"] + 1.0
    # pgd-destroys-true-cam: energy drops to 10% → supported (paired + threshold)
    pgd["cam:features.5:energy:x_c"] = rng.uniform(1, 2, n)
    pgd["cam:features.5:energy:a_c"] = 0.1 * pgd["cam:features.5:energy:x_c"]
    pgd["cam:features.5:retained:c"] = 0.1 + 0.01 * rng.normal(size=n)
    # pixel-attracts-saliency: more mass near the pixels (confirmed), equal to chance (inconclusive) → mixed
    pixel["sm:near:a_d"] = pixel["sm:near:x_c"] + 1.0
    pixel["sm:near:chance"] = pixel["sm:near:a_d"].copy()
    return metrics


def test_claim_verdicts_on_planted_data():
    cfg = attention.Config(layers=LAYERS, bootstrap=300)
    metrics = planted_metrics()
    comparison = attention.compare_attacks(metrics, cfg, LAYERS)
    rows = {r["id"]: r for r in attention.evaluate_claims(metrics, cfg, LAYERS, comparison)}
    assert {c.id for c in attention.claims(LAYERS, 0.5)} == set(rows)
    assert rows["pgd-diffuses"]["verdict"] == "supported"
    assert [t["outcome"] for t in rows["pgd-diffuses-both-classes"]["tests"]] == ["contradicted"] * 2
    assert rows["pgd-diffuses-both-classes"]["verdict"] == "not supported"
    assert rows["pgd-destroys-true-cam"]["verdict"] == "supported"
    threshold = rows["pgd-destroys-true-cam"]["tests"][1]
    assert threshold["kind"] == "threshold" and threshold["hi"] < 0.5
    assert [t["outcome"] for t in rows["pixel-attracts-saliency"]["tests"]] == ["confirmed", "inconclusive"]
    assert rows["pixel-attracts-saliency"]["verdict"] == "mixed"
    # pure noise: no planted effect, so the intermediate-layer claims are not supported
    assert rows["pgd-inner-lose-true"]["verdict"] == "not supported"
    # planting a PGD–Pixel difference on every compared metric makes "attacks differ" supported
    for key in attention.comparison_metrics(LAYERS):
        metrics["pixel"][key] = metrics["pgd"][key] + 3.0
    comparison = attention.compare_attacks(metrics, cfg, LAYERS)
    assert all(r["outcome"] == "differs" for r in comparison["rows"])
    rows = {r["id"]: r for r in attention.evaluate_claims(metrics, cfg, LAYERS, comparison)}
    assert rows["attacks-differ"]["verdict"] == "supported"


def test_too_few_examples_are_not_testable():
    cfg = attention.Config(layers=LAYERS, bootstrap=100, min_examples=10)
    metrics = {g: {k: v[:5] for k, v in m.items()} for g, m in planted_metrics().items()}
    rows = attention.evaluate_claims(metrics, cfg, LAYERS, attention.compare_attacks(metrics, cfg, LAYERS))
    assert all(r["verdict"] == "not testable" for r in rows)


def test_pool_takes_fewest_pixels_per_image():
    per_k = {1: {"index": torch.tensor([2, 5]), "m:v": torch.tensor([10.0, 50.0])},
             3: {"index": torch.tensor([0, 2, 5, 7]), "m:v": torch.tensor([1.0, 2.0, 3.0, 4.0])},
             5: {"index": torch.tensor([], dtype=torch.long)}}  # a run without successes
    pooled, pixels = attention.pool_pixel_attacks(per_k)
    assert pooled["v"].tolist() == [1.0, 10.0, 50.0, 4.0]  # images 0, 2, 5, 7
    assert pixels.tolist() == [3, 1, 1, 3]


def test_default_preset_equals_config():
    assert attention.load_config(attention.CONFIGS_DIR / "attention-mnist5k.yaml") == attention.Config()
    cifar = attention.load_config(attention.CONFIGS_DIR / "attention-cifar10.yaml")
    assert cifar.data.name == "cifar10" and cifar.classifier.architecture == "resnet20"


# ----------------------------------------------------------------------------------------------------
# A tiny end-to-end run

TINY = {
    "name": "tiny",
    "data": {"name": "mnist5k", "train_limit": 600, "test_limit": 200},
    "classifier": {"architecture": "mnist-net", "epochs": 1},
    "layers": ["features.3", "features.8"],
    "n_images": 16,
    "pgd": {"eps": 0.3, "steps": 5},
    # a weak classifier and many pixels, so the cheap Pixel Attack succeeds on a few images
    "pixel": {"pixels": [100, 200], "population": 12, "generations": 4},
    "min_examples": 2,
    "bootstrap": 200,
    "figure_images": 2,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("attention") / "tiny"
    return run_dir, attention.run(merge_config(attention.Config(), TINY), run_dir)


def test_tiny_run_writes_report_with_every_figure_and_table(tiny_run):
    run_dir, results = tiny_run
    md = (run_dir / "report.md").read_text()
    for heading in ("Attacks", "Saliency and activation maps", "Attention metrics per attack",
                    "Metric distributions", "PGD vs Pixel Attack", "Claims of seed 004", "Stage timings"):
        assert f"## {heading}" in md, heading
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"maps_pgd.png", "maps_pixel200.png", "layers_pgd.png", "layers_true.png", "layers_adv.png",
            "dist_sm_iou_pred.png"} <= figures
    for name in figures:
        assert f"figures/{name}" in md
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    stored = json.loads((run_dir / "results.json").read_text())
    assert set(stored["attacks"]) == {"pgd", "pixel100", "pixel200"}
    assert stored["attacks"]["pgd"]["n_success"] >= 2  # enough to exercise every metric
    assert stored["pixel_pool"]["n"] >= 2
    assert stored["attacks"]["pixel100"]["mean_queries"] > 0
    assert stored["comparison"]["rows"]
    assert {c["id"] for c in stored["claims"]} == {c.id for c in attention.claims(TINY["layers"], 0.5)}
    for claim in stored["claims"]:
        assert claim["verdict"] in {"supported", "not supported", "mixed", "not testable"}
        assert claim["id"] in md or claim["claim"] in md
    pgd = stored["aggregates"]["pgd"]
    assert 0 <= pgd["sm:entropy:x_c"]["mean"] <= 1 and 0 <= pgd["sm:iou:pred"]["mean"] <= 1
    assert stored["attacks"]["pgd"]["mean_linf"] <= 0.3 + 1e-6


def test_rerun_is_served_from_cache(tiny_run):
    run_dir, results = tiny_run
    first = (run_dir / "results.json").read_text()
    again = attention.run(merge_config(attention.Config(), TINY), run_dir)
    assert all(t["cached"] for t in again["timings"])
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["claims"] == json.loads(first)["claims"]
    assert stored["aggregates"] == json.loads(first)["aggregates"]
    (run_dir / "report.md").unlink()
    md, page = render_run(run_dir)
    assert md.is_file() and page.is_file()
