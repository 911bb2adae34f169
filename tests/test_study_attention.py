"""The attention study (seed 004): its statistics, layer choice and claim decision rules on planted data, and a
tiny end-to-end run — report, a fully cached re-run, exactly-downstream recomputation, config validation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TEST_DEVICE
from safetensors.torch import load_file
from scipy import stats as sps
from torch import nn

from advsal.attacks import PGD
from advsal.errors import ConfigError
from advsal.models import build_model
from advsal.studies import attention, render_run, study_config
from advsal.studies.config import from_mapping
from advsal.studies.engine import load_data
from advsal.studies.stats import cliffs_delta, mean_ci, median_bootstrap

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# ------------------------------------------------------------------------------------------------ statistics


def test_statistics_edge_cases_the_claims_rely_on():
    """(tests/test_stats.py checks these functions against scipy; here: ties, NaNs and tiny samples.)"""
    assert cliffs_delta(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert cliffs_delta(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert cliffs_delta(np.array([1.0, 3.0]), np.array([2.0, 2.0, np.nan])) == 0.0  # one win, one loss per b
    assert cliffs_delta(np.array([2.0]), np.array([1.0, 2.0, 3.0])) == 0.0  # the tie counts as neither
    assert math.isnan(cliffs_delta(np.array([]), np.array([1.0])))
    ci = mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    half = sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sample sd of 1, 2, 3 is 1
    assert ci["n"] == 3 and ci["mean"] == 2.0 and ci["median"] == 2.0
    assert (ci["lo"], ci["hi"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert mean_ci(np.full(4, 0.5))["lo"] == 0.5  # no spread: a point interval, not NaN
    v = np.random.default_rng(0).normal(2.0, 1.0, 200)
    m = median_bootstrap(v, 500, seed=0)
    assert m["estimate"] == np.median(v) and m["lo"] < m["estimate"] < m["hi"] and m["hi"] - m["lo"] < 0.6
    assert median_bootstrap(v, 500, seed=0) == m  # seeded
    assert median_bootstrap(np.array([0.3]), 500, 0) == {"n": 1, "estimate": 0.3, "lo": 0.3, "hi": 0.3}


def test_verdict_rules():
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
    metrics = {g: {m: rng.normal(size=n) for m in sorted(names)} for g in ("pgd", "pgd-early", "pixel")}
    pgd, pixel = metrics["pgd"], metrics["pixel"]
    pixel["cam:features.5:opposite"] = (rng.uniform(size=n) < 0.9).astype(float)  # 0/1: mostly opposite
    # pgd-diffuses: entropy and spread both higher on x̂ → supported
    pgd["sm:entropy:a_d"] = pgd["sm:entropy:x_c"] + 1.0
    pgd["sm:spread:a_d"] = pgd["sm:spread:x_c"] + 0.5
    # pgd-diffuses-both-classes: both lower → not supported (contradicted)
    pgd["sm:entropy:a_c"] = pgd["sm:entropy:x_c"] - 1.0
    pgd["sm:entropy:x_d"] = pgd["sm:entropy:a_d"] + 1.0
    # pgd-distorts-true-cam: IoU and rank corr. with the clean map far below the random control's → supported
    pgd["cam:features.5:iou:true"] = pgd["cam:features.5:iou:true_ctrl"] - 1.0
    pgd["cam:features.5:rank:true"] = pgd["cam:features.5:rank:true_ctrl"] - 1.0
    pgd["cam:features.5:retained:c"] = 0.1 + 0.01 * rng.normal(size=n)  # energy (reported) below 0.5
    # pgd-keeps-roi: adversarial ≈ control within ±0.1 (SM IoU, SM rank) but AM IoU far off → mixed
    pgd["sm:iou:pred"] = pgd["sm:iou:true_ctrl"] + rng.normal(0, 0.02, n)
    pgd["sm:rank:pred"] = pgd["sm:rank:true_ctrl"] + rng.normal(0, 0.02, n)
    pgd["cam:features.5:iou:pred"] = pgd["cam:features.5:iou:true_ctrl"] - 0.5 + rng.normal(0, 0.02, n)
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
    assert rows["pgd-distorts-true-cam"]["verdict"] == "supported"
    assert all(t["baseline"].startswith("same-budget random control") for t in rows["pgd-distorts-true-cam"]["tests"])
    threshold = rows["pgd-true-cam-energy"]["tests"][0]
    assert threshold["kind"] == "threshold" and threshold["hi"] < 0.5
    assert [t["outcome"] for t in rows["pgd-keeps-roi"]["tests"]] == ["confirmed", "confirmed", "contradicted"]
    keep = rows["pgd-keeps-roi"]["tests"][0]
    assert keep["kind"] == "equivalence" and -0.1 < keep["lo"] < keep["hi"] < 0.1
    assert [t["outcome"] for t in rows["pixel-attracts-saliency"]["tests"]] == ["confirmed", "inconclusive",
                                                                                 "confirmed"]
    assert rows["pixel-attracts-saliency"]["verdict"] == "mixed"
    within = rows["complementary-features"]["tests"][0]
    assert within["kind"] == "rate" and within["estimate"] > 0.75 and within["outcome"] == "confirmed"
    for row in rows.values():  # every test names its baseline and (with enough images) its interval
        for t in row["tests"]:
            assert t["baseline"], t["label"]
            assert t["kind"] == "count" or (np.isfinite(t["lo"]) and np.isfinite(t["hi"])), t["label"]
    # pure noise: no planted effect, so the intermediate-layer claims are not supported
    assert rows["pgd-inner-lose-true"]["verdict"] == "not supported"
    # planting a PGD–Pixel difference on every compared metric makes "attacks differ" supported
    for key in attention.comparison_metrics(LAYERS):
        metrics["pixel"][key] = metrics["pgd"][key] + 3.0
    comparison = attention.compare_attacks(metrics, cfg, LAYERS)
    assert all(r["outcome"] == "differs" for r in comparison["rows"])
    rows = {r["id"]: r for r in attention.evaluate_claims(metrics, cfg, LAYERS, comparison)}
    assert rows["attacks-differ"]["verdict"] == "supported"


def test_pgd_vs_pixel_is_paired_on_the_images_both_attacks_broke():
    """Rows are aligned by image index: a difference planted per image is found only when pairing is right."""
    cfg = attention.Config(layers=LAYERS, bootstrap=100)
    rng = np.random.default_rng(1)
    level = rng.normal(0, 5, 40)  # per-image level, far larger than the planted PGD − Pixel difference of 0.3
    key = "sm:d_entropy:pred"
    pixel_idx = np.arange(0, 40)
    early_idx = np.arange(10, 50)  # broke images 10..49; 30 images in common with Pixel (10..39)
    metrics = {"pixel": {key: level[pixel_idx] - 0.3},
               "pgd-early": {key: np.concatenate([level[10:40], rng.normal(0, 5, 10)])}}
    index = {"pixel": pixel_idx, "pgd-early": early_idx}
    ra, rb = attention.common_images(index, metrics, "pgd-early", "pixel")
    assert (early_idx[ra] == pixel_idx[rb]).all() and len(ra) == 30
    comp = attention.compare_attacks(metrics, cfg, LAYERS, index)
    row = next(r for r in comp["rows"] if r["metric"] == key)
    assert comp["primary"] == "pgd-early" and row["variant"] == "pgd-early" and row["n"] == 30
    assert row["estimate"] == pytest.approx(0.3) and row["outcome"] == "differs"  # exact pairs: Δ = 0.3 each
    rows = {r["id"]: r for r in attention.evaluate_claims(metrics, cfg, LAYERS, comp, index)}
    early = rows["pixel-not-diffuse"]["tests"][0]  # Pixel < early-stopped PGD on the common images
    assert early["group_b"] == "pgd-early" and early["kind"] == "matched" and early["outcome"] == "confirmed"
    assert rows["pixel-not-diffuse"]["tests"][1]["outcome"] == "untestable"  # no full-strength PGD group


def test_image_metrics_control_baselines_on_planted_maps():
    """The adversarial C map moves onto the perturbed pixel, the control map stays the clean map: the toward
    metric is positive for the attack and 0 for the control around its own pixels; IoU with the clean map is 1
    for the control; the Ĉ map moves the other way (opposite = 1)."""
    n, h = 3, 12
    clean = torch.zeros(n, h, h)
    clean[:, 2:4, 2:4] = 1.0  # the region of interest, top-left
    pert = torch.zeros(n, h, h, dtype=torch.bool)
    pert[:, 9, 9] = True  # the perturbed pixel, bottom-right
    pert_ctrl = torch.zeros(n, h, h, dtype=torch.bool)
    pert_ctrl[:, 9, 2] = True  # the control's own pixel, bottom-left
    moved = clean.clone()
    moved[:, 8:11, 8:11] = 3.0  # attention drawn to the perturbed pixel
    away = clean.clone()
    away[:, 0, :] = 0.5  # mass elsewhere; none near the perturbed pixel
    sm = {"x_c": clean, "x_d": moved, "a_c": moved, "a_d": away}
    cams = {combo: {"l": (m[:, ::3, ::3], m)} for combo, m in sm.items()}
    out = attention.image_metrics(sm, clean, cams, {"l": (clean[:, ::3, ::3], clean)}, pert, 0.05, 1.5, pert_ctrl)
    assert (out["sm:abs_d_near:c"] > 0.5).all() and (out["sm:abs_d_near:ctrl"] == 0).all()
    assert (out["sm:excess_near:c"] > 0.5).all()
    assert (out["sm:iou:true_ctrl"] == 1).all() and (out["sm:iou:true"] < 1).all()
    assert (out["cam:l:distortion:true"] > 0).all()  # less overlap with the clean map than the control has
    assert (out["cam:l:opposite"] == 1).all()  # C map gains near the pixel, Ĉ map loses there
    assert (out["sm:ring:ctrl"] == out["sm:ring:x_c"]).all()


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


# ------------------------------------------------------------------------------------------------ layers


class TwoConv(nn.Module):
    """A user's model without zoo names: a conv at full resolution, a strided conv to half, pooling to 4×4."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(torch.relu(self.down(torch.relu(self.stem(x)))), 4).flatten(1))


def two_conv(num_classes: int, in_channels: int) -> nn.Module:
    """The factory of the tiny runs' classifier (``architecture: path/to/this/file.py:two_conv``)."""
    return TwoConv(num_classes, in_channels)


def test_default_layers_are_the_last_module_of_each_resolution_stage():
    x = torch.rand(1, 1, 28, 28)
    assert attention.cam_layers(build_model("resnet20", 10, 1, 28), x) == ["features.3", "features.4",
                                                                            "features.5"]
    assert attention.cam_layers(build_model("mnist-net", 10, 1, 28), x) == ["features.3", "features.8"]
    assert attention.cam_layers(build_model("vgg-cifar", 10, 3, 32), torch.rand(1, 3, 32, 32)) == \
        ["features.3", "features.11", "features.19"]  # the ReLU before each pooling
    assert attention.cam_layers(TwoConv(), x) == ["stem", "down"]
    assert attention.cam_layers(TwoConv(), x, ["down"]) == ["down"]
    with pytest.raises(ConfigError, match=r"layers\[1\] 'head'.*valid names: stem, down"):
        attention.cam_layers(TwoConv(), x, ["stem", "head"])


def test_early_stopped_pgd_is_pgds_trajectory_cut_at_the_first_misclassification():
    torch.manual_seed(0)
    model = TwoConv().eval()
    for p in model.parameters():
        p.data *= 3  # sharper logits: images break after different numbers of steps
    x = torch.rand(12, 1, 28, 28)
    y = model(x).argmax(1)  # every image starts correctly classified
    eps, alpha, steps = 0.02, 0.004, 6
    res, taken = attention.early_stopped_pgd(model, x, y, eps=eps, steps=steps, alpha=alpha, seed=3)
    assert (res.pred == model(res.x_adv).argmax(1)).all() and (res.linf <= eps + 1e-6).all()
    assert (taken[~res.success] == steps).all()
    ks = taken[res.success].unique().tolist()
    assert len(ks) >= 2  # images stop after different numbers of steps
    for k in [k for k in ks if 1 <= k <= 3]:  # each image stopped where full PGD (same start) was at step k
        rows = res.success & (taken == k)
        full = PGD(eps=eps, alpha=alpha, steps=k, seed=3)(model, x, y)
        assert torch.allclose(full.x_adv[rows], res.x_adv[rows], atol=1e-6)
        if k > 1:  # one step earlier it was still classified correctly
            assert (PGD(eps=eps, alpha=alpha, steps=k - 1, seed=3)(model, x, y).pred[rows] == y[rows]).all()


# ------------------------------------------------------------------------------------------------ configs


def test_presets():
    assert study_config("attention", preset="mnist5k") == attention.Config()
    cifar = study_config("attention", preset="cifar10")
    assert cifar.data.name == "cifar10" and cifar.classifier.architecture == "resnet20"


@pytest.mark.parametrize("override, field", [
    ({"n_images": "many"}, "n_images"),  # wrong type
    ({"pgd": {"steps": 2.5}}, "pgd.steps"),
    ({"layers": "features.3"}, "layers"),
    ({"top_fraction": 1.5}, "top_fraction"),  # out of range
    ({"pgd": {"eps": 0.0}}, "pgd.eps"),
    ({"pixel": {"pixels": [1, 0]}}, "pixel.pixels"),
    ({"pixel": {"population": 3}}, "pixel.population"),
    ({"device": "gpu"}, "device"),
])
def test_config_errors_name_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"\.{field}\b"):
        study_config("attention", overrides=override)


def test_bad_config_stops_before_any_stage(tmp_path, tiny_data):
    run_dir = tmp_path / "bad"
    with pytest.raises(ConfigError, match="top_fraction"):
        attention.run(attention.Config(top_fraction=2.0), run_dir)  # run() validates a hand-made config too
    with pytest.raises(ConfigError, match=r"layers\[0\] 'features.3'"):
        attention.run(tiny_config({"layers": ["features.3"]}), run_dir, data=tiny_data)
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------------ a tiny run

TINY = {
    "name": "tiny",
    "data": {"name": "mnist5k", "train_limit": 400, "test_limit": 60},
    # a user's model (a factory in this file), trained to about 60% test accuracy in a second
    "classifier": {"architecture": f"{Path(__file__).resolve()}:two_conv", "epochs": 2, "batch_size": 32, "lr": 0.01},
    "n_images": 10,
    "pgd": {"eps": 0.3, "steps": 4},
    # a weak classifier and many pixels, so the cheap Pixel Attack succeeds on a few images
    "pixel": {"pixels": [100, 200], "population": 10, "generations": 3},
    "min_examples": 2,
    "bootstrap": 200,
    "figure_images": 1,
    "device": TEST_DEVICE,
}
ALL = {"classifier", "images", "attack-pgd", "attack-pgd-early", "attack-pixel100", "attack-pixel200", "maps-pgd",
       "maps-pgd-early", "maps-pixel100", "maps-pixel200", "metrics-pgd", "metrics-pgd-early", "metrics-pixel100",
       "metrics-pixel200"}
PGD_STAGES = {f"{kind}-{name}" for kind in ("attack", "maps", "metrics") for name in ("pgd", "pgd-early")}


def tiny_config(change: dict | None = None) -> attention.Config:
    cfg = study_config("attention", overrides=TINY)
    return from_mapping(attention.Config, change, "test", base=cfg) if change else cfg


@pytest.fixture(scope="module")
def tiny_data():
    """The tiny config's data, loaded once for every run of this module (the store fingerprints it by content)."""
    return load_data(tiny_config().data)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):
    run_dir = tmp_path_factory.mktemp("attention") / "tiny"
    return run_dir, attention.run(tiny_config(), run_dir, data=tiny_data)


def test_tiny_run_writes_report_with_every_figure_and_table(tiny_run):
    run_dir, results = tiny_run
    assert {t["stage"] for t in results["timings"]} == ALL and not any(t["cached"] for t in results["timings"])
    assert results["layers"] == ["stem", "down"]  # the default layers of a model without zoo names
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
    assert set(stored["attacks"]) == {"pgd", "pgd-early", "pixel100", "pixel200"}
    early = stored["attacks"]["pgd-early"]
    assert early["n_success"] >= stored["attacks"]["pgd"]["n_success"] - 1 and early["mean_steps"] <= 4
    assert early["mean_linf"] <= stored["attacks"]["pgd"]["mean_linf"] + 1e-6  # stopped, not overshooting
    assert set(stored["paired_images"]) == {"pgd", "pgd-early"}
    assert {r["variant"] for r in stored["comparison"]["rows"]} == {"pgd", "pgd-early"}
    assert all(r["n"] <= stored["paired_images"][r["variant"]] for r in stored["comparison"]["rows"])
    assert "images both attacks broke" in md and "baseline" in md
    assert stored["attacks"]["pgd"]["n_success"] >= 2  # enough to exercise every metric
    assert stored["pixel_pool"]["n"] >= 2
    assert stored["pixel_pool"]["n"] == sum(stored["pixel_pool"]["pixels"].values())
    assert stored["attacks"]["pixel100"]["mean_queries"] > 0
    assert stored["attacks"]["pixel100"]["mean_l0"] <= 100
    assert stored["comparison"]["rows"]
    assert {c["id"] for c in stored["claims"]} == {c.id for c in attention.claims(results["layers"], 0.5)}
    for claim in stored["claims"]:
        assert claim["verdict"] in {"supported", "not supported", "mixed", "not testable"}
        assert claim["id"] in md or claim["claim"] in md
    pgd = stored["aggregates"]["pgd"]
    assert 0 <= pgd["sm:entropy:x_c"]["mean"] <= 1 and 0 <= pgd["sm:iou:pred"]["mean"] <= 1
    assert stored["attacks"]["pgd"]["mean_linf"] <= 0.3 + 1e-6
    assert stored["provenance"]["device"] == str(torch.device(TEST_DEVICE))


NUMBERS = ("attacks", "pixel_pool", "aggregates", "distributions", "comparison", "claims", "classifier")


def test_rerun_is_fully_cached_and_identical(tiny_run, tiny_data):
    run_dir, _ = tiny_run
    first = json.loads((run_dir / "results.json").read_text())
    again = attention.run(tiny_config(), run_dir, data=tiny_data)
    assert {t["stage"] for t in again["timings"]} == ALL and all(t["cached"] for t in again["timings"])
    stored = json.loads((run_dir / "results.json").read_text())
    for key in NUMBERS:
        assert stored[key] == first[key], key
    (run_dir / "report.md").unlink()
    md, page = render_run(run_dir)
    assert md.is_file() and page.is_file()
    # a user's trained model passed as model= has no training history: the report says so
    given = {**stored, "classifier": {"architecture": "mine", "given": True, "test": stored["classifier"]["test"]}}
    md, _ = attention.render(run_dir, given)
    assert "Classifier mine as given" in md.read_text()


@pytest.mark.parametrize("change, recomputed", [
    ({"classifier": {"lr": 0.005}}, ALL),  # early: everything downstream of F
    ({"pgd": {"eps": 0.2}}, PGD_STAGES),  # one attack's branches (full and early-stopped)
    ({"pgd": {"top_pixels": 3}}, {"metrics-pgd", "metrics-pgd-early"}),  # PGD's perturbed pixels: its metrics
    ({"top_fraction": 0.2}, {"metrics-pgd", "metrics-pgd-early", "metrics-pixel100", "metrics-pixel200"}),
    ({"min_effect": 0.3, "figure_images": 2}, set()),  # analysis and report only
], ids=["classifier.lr", "pgd.eps", "pgd.top_pixels", "top_fraction", "min_effect"])
def test_a_changed_field_recomputes_exactly_its_downstream_stages(tiny_run, tiny_data, tmp_path, change,
                                                                  recomputed):
    base_dir, _ = tiny_run
    run_dir = tmp_path / "changed"
    shutil.copytree(base_dir, run_dir)
    results = attention.run(tiny_config(change), run_dir, data=tiny_data)
    assert {t["stage"] for t in results["timings"]} == ALL
    assert {t["stage"] for t in results["timings"] if not t["cached"]} == recomputed
    if "min_effect" in change:  # the analysis and the figures did follow the change
        assert all(r["outcome"] != "differs" for r in results["comparison"]["rows"] if abs(r["effect"]) < 0.3)
        assert load_file(str(run_dir / "figure_maps.safetensors"))["pgd/x"].shape[0] == 2


def test_tiny_run_success_rates_carry_exact_intervals_that_contain_them(tiny_run):
    """Issue #17: each attack's success rate (and control flip rate) has its Clopper–Pearson 95% interval in
    results.json, in the attacks table and in the findings."""
    from scipy.stats import binomtest

    run_dir, _ = tiny_run
    stored = json.loads((run_dir / "results.json").read_text())
    md = (run_dir / "report.md").read_text()
    for a in stored["attacks"].values():
        iv = a["ci"]["success_rate"]
        ref = binomtest(a["n_success"], a["n_attacked"]).proportion_ci(0.95, method="exact")
        assert iv["lo"] <= a["success_rate"] <= iv["hi"] and (iv["lo"], iv["hi"]) == pytest.approx((ref.low, ref.high))
        if 0 < a["n_success"] < a["n_attacked"]:
            assert f"{a['success_rate']:.3f} [{iv['lo']:.3f}, {iv['hi']:.3f}]" in md
    from advsal.report.attention import attention_findings

    first = attention_findings(stored)[0]
    assert first["section"] == "attacks" and "[95% CI" in first["text"] and first["text"] in md
    assert "Clopper–Pearson" in md
