"""The explanation study (seed 003): coefficient conventions, threshold grid, top-k masks and the paired
comparison on hand-made data, the preset, and a tiny end-to-end run (report, cache reuse, re-rendering)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from advsal.cli import main
from advsal.explanation import total_variation
from advsal.studies import explanation, render_run
from advsal.studies.common import merge_config

# ----------------------------------------------------------------------------------------------------
# Helpers on hand-made data


def test_mp_tv_coeff_turns_per_element_means_into_the_library_convention():
    m = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for beta in (1.0, 3.0):
        dx = (m[..., :, 1:] - m[..., :, :-1]).abs().pow(beta).flatten(1).mean(1)
        dy = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(beta).flatten(1).mean(1)
        reference = 0.2 * (dx + dy)  # λ2 · (mean|∂x m|^β + mean|∂y m|^β), λ2 = 0.2
        coeff = explanation.mp_tv_coeff(0.2, 64, 64, mask_scale=8)  # an 8×8 mask for 64×64 images
        library = coeff * total_variation(m, beta, normalize=False) / 8  # meaningful_perturbation's term
        torch.testing.assert_close(library, reference)
    assert explanation.mp_tv_coeff(0.2, 8, 8, mask_scale=8) == 0.0  # one cell: no neighbours


def test_threshold_grid_holds_the_linear_and_the_fine_values():
    grid = explanation.threshold_grid(4, 3)
    assert grid == sorted(grid) and len(grid) == 7
    assert grid[0] == 0.0 and {0.25, 0.5, 0.75} <= set(grid)
    np.testing.assert_allclose([g for g in grid if 0 < g < 0.25], [1e-6, 1e-4, 1e-2])
    assert explanation.threshold_grid(2, 0) == [0.0, 0.5]


def test_top_k_masks_keep_exactly_k_highest_pixels():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]], [[1.0, 1.0], [0.0, 2.0]]])
    masks = explanation.top_k_masks(maps, torch.tensor([2, 0]))
    assert masks[0].tolist() == [[False, True], [True, False]]
    assert not masks[1].any()
    ties = explanation.top_k_masks(maps[1:], torch.tensor([2]))
    assert ties[0].tolist() == [[True, False], [False, True]]  # 2.0, then the first of the tied 1.0s


def test_paired_comparison_finds_planted_differences_only():
    rng = np.random.default_rng(0)
    base = rng.random(40)
    worse = base + 0.2 + 0.01 * rng.random(40)
    lower = explanation.paired_comparison(base, worse, lower_is_better=True, alpha=0.05)
    assert lower["verdict"] == "better" and lower["p"] < 1e-6 and lower["diff"] < -0.19
    assert explanation.paired_comparison(worse, base, True, 0.05)["verdict"] == "worse"
    assert explanation.paired_comparison(worse, base, False, 0.05)["verdict"] == "better"
    noise = base + rng.normal(0, 0.01, 40)
    assert explanation.paired_comparison(noise - (noise - base).mean(), base, True, 0.05)["verdict"] == \
        "no significant difference"
    with_nan = explanation.paired_comparison(np.array([np.nan, 0.5]), np.array([0.2, np.nan]), False, 0.05)
    assert with_nan["verdict"] == "not testable" and with_nan["n"] == 0
    same = explanation.paired_comparison(base, base, True, 0.05)
    assert same["p"] == 1.0 and same["verdict"] == "no significant difference"


def test_paper_verdicts_read_seed_003_table_1():
    ours = {"l0_coeff": 6.0, "tv_coeff": 120.0}
    v = explanation.paper_verdicts(ours, {"method": "MP min", "l0_coeff": 6.0, "tv_coeff": 120.0, "tv_gamma": 1.0})
    assert v["ape"] == "better" and v["cc_hit_rate"] == "better"
    assert (v["ours_ape"], v["mp_ape"], v["ours_cc"], v["mp_cc"]) == (0.0291, 0.7585, 29.1, 23.9)
    assert explanation.paper_verdicts(ours, {"method": "MP min", "l0_coeff": 6.0, "tv_coeff": 120.0,
                                             "tv_gamma": 3.0}) is None  # the paper has no such MP row
    assert len(explanation.PAPER_TABLE1) == 11


def test_default_preset_equals_config_and_bad_options_are_named():
    assert explanation.load_config(explanation.CONFIGS_DIR / "explanation-mnist5k.yaml") == explanation.Config()
    cfg = explanation.Config()
    assert cfg.data.name == "cluttered-mnist" and cfg.classifier.architecture == "finding-net"
    assert cfg.regularized.settings == [[0.01, 0.2], [6.0, 120.0], [40.0, 120.0]]  # Table 1 "ours"
    for bad, match in (({"regularized": {"losses": ["logit"]}}, "regularized.losses"),
                       ({"meaningful": {"deletions": ["zero"]}}, "meaningful.deletions"),
                       ({"meaningful": {"settings": [[0.01, 0.2]]}}, "l1_coeff, tv_coeff, tv_beta"),
                       ({"n_images": 0}, "n_images"), ({"connectivity": 6}, "connectivity")):
        with pytest.raises(ValueError, match=match):
            explanation.validate_config(merge_config(explanation.Config(), bad))


# ----------------------------------------------------------------------------------------------------
# A tiny end-to-end run

TINY = {
    "name": "tiny",
    "data": {"options": {"n_train": 600, "n_test": 80}},
    "classifier": {"epochs": 2},
    "n_images": 5,
    "regularized": {"settings": [[0.01, 0.2], [6.0, 120.0]], "steps": 15, "phase2_steps": 8},
    "meaningful": {"settings": [[0.01, 0.2, 3.0]], "steps": 15, "thresholds": 10, "fine_thresholds": 3},
    "figure_images": 2,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("explanation") / "tiny"
    return run_dir, explanation.run(merge_config(explanation.Config(), TINY), run_dir)


def test_tiny_run_writes_table_1_report_and_figures(tiny_run):
    run_dir, results = tiny_run
    md = (run_dir / "report.md").read_text()
    for heading in ("Table 1 on cluttered-mnist", "Seed 003 Table 1 (DDSM), for reference",
                    "Regularized vs meaningful perturbation, setting by setting", "What the numbers say",
                    "Regularized method: phase 1 vs phase 2", "Contrast: gradient and Grad-CAM masks of the same area",
                    "Masks and perturbations", "Caveats", "Stage timings"):
        assert f"## {heading}" in md, heading
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"masks.png", "perturbed.png", "perturbations.png", "contrast_masks.png", "threshold_scan.png",
            "ape_bars.png"} <= figures
    for name in figures:
        assert f"figures/{name}" in md
    assert (run_dir / "report.html").read_text().count("data:image/png;base64,") == len(figures)

    stored = json.loads((run_dir / "results.json").read_text())
    ids = [r["id"] for r in stored["table1"]]
    assert ids == ["mp-min-l0.01-t0.2-g3", "mp-blur-l0.01-t0.2-g3", "ours-prob-a0.01-b0.2", "ours-prob-a6-b120",
                   "ours-logc-a0.01-b0.2", "ours-logc-a6-b120"]  # seed 003 Table 1's order: MP rows, then ours
    assert stored["selection"]["n_explained"] == 5
    for row in stored["table1"]:
        assert row["n"] == 5 and 0 <= row["l0"] <= 1 and 0 <= row["classification"] <= 1
        assert row["ape"] == pytest.approx(row["l0"] + row["tv"] + row["classification"])
        assert row["cc_hit_rate"] is None or 0 <= row["cc_hit_rate"] <= 1
        assert f"| {row['method']} |" in md
    for row in (r for r in stored["table1"] if r["family"] == "mp"):
        assert row["threshold"] in explanation.threshold_grid(10, 3)
    assert stored["paper_table1"] == explanation.PAPER_TABLE1
    assert "| MP min | 40 | 120 | 1 | 0.0606 |" in md  # the paper's numbers are in the report
    # the (0.01, 0.2) rows of both losses meet both MP rows; nothing matches (6, 120) in this config
    pairs = {(c["ours"], c["mp"]) for c in stored["comparisons"]}
    assert pairs == {(o, m) for o in ("ours-prob-a0.01-b0.2", "ours-logc-a0.01-b0.2")
                     for m in ("mp-min-l0.01-t0.2-g3", "mp-blur-l0.01-t0.2-g3")}
    for c in stored["comparisons"]:
        assert c["paper"]["ape"] == "better" and c["paper"]["cc_hit_rate"] == "better"
        assert c["ape"]["verdict"] in {"better", "worse", "no significant difference"}
    # contrast masks have exactly the area of the regularized mask they copy
    by_id = {r["id"]: r for r in stored["table1"]}
    assert len(stored["contrast"]) == 8
    for c in stored["contrast"]:
        assert c["area"] == pytest.approx(by_id[c["area_of"]]["area"])


def test_rerun_is_served_from_cache_and_report_rerenders(tiny_run, monkeypatch):
    run_dir, results = tiny_run
    first = json.loads((run_dir / "results.json").read_text())
    again = explanation.run(merge_config(explanation.Config(), TINY), run_dir)
    assert all(t["cached"] for t in again["timings"]) and len(again["timings"]) == len(first["timings"])
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["table1"] == first["table1"] and stored["comparisons"] == first["comparisons"]

    (run_dir / "report.md").unlink()
    md, page = render_run(run_dir)
    assert md.is_file() and page.is_file() and "## Table 1 on cluttered-mnist" in md.read_text()

    (run_dir / "report.html").unlink()
    monkeypatch.setattr(sys, "argv", ["advsal", "report", str(run_dir)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0 and (run_dir / "report.html").is_file()
    assert not math.isnan(first["total_seconds"])
