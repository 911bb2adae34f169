"""The detection study's ``seeds`` option (issue #17): the seeded detectors repeated per detector seed with F and
the adversarial sets fixed. On a tiny run: ``seeds: [0]`` is the default run (every stage cached, same numbers);
``seeds: [0, 1]`` adds exactly one stage per seeded detector (different keys, seed in the fit options), and the
results and the report carry mean [95% interval over seeds]; the verdict reads the seed interval (planted)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import numbers
from scipy import stats as sps
from test_study_detection import TINY  # also registers the external "confidence" baseline (not seeded)

from advsal.errors import ConfigError
from advsal.report.findings import detection_findings
from advsal.studies.config import from_mapping
from advsal.studies.detection import Config, run
from advsal.studies.detection.analysis import SEED_KEYS, over_seeds

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

SMALL = {**TINY, "name": "tiny-seeds", "data": {"name": "mnist5k", "train_limit": 300, "test_limit": 60},
         "attacks": {"fgsm": {}, "bim": {"steps": 2}}, "attack_limits": {},
         "baselines": ["image", "confidence"], "baseline_attacks": ["fgsm"],
         "generalisation": {"attacks": ["fgsm"], "eps_factors": [1.0], "n_train": 8, "n_test": 8},
         "second_round": {"attack": "bim", "n_images": 2, "steps": 1, "sigmas": [0.5]},
         "security": {"enabled": False}}


def config(device, **changes):
    return from_mapping(Config, {**SMALL, "device": device, **changes})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, device):
    """One run directory: the default (no seeds), then seeds [0] and seeds [0, 1] on top of it."""
    run_dir = tmp_path_factory.mktemp("seeds") / "tiny"
    default = run(config(device), run_dir)
    one = run(config(device, seeds=[0]), run_dir)
    two = run(config(device, seeds=[0, 1]), run_dir)
    return run_dir, default, one, two


def computed(results):
    return {t["stage"] for t in results["timings"] if not t["cached"]}


def test_one_seed_is_the_default_run(runs):
    _, default, one, _ = runs
    assert one["timings"] and not computed(one)  # same stage keys: everything from the cache
    assert numbers(one) == numbers(default)
    assert default["seeds"]["detector_seeds"] == [0] and not default["seeds"]["repeated"]
    assert all("over_seeds" not in row for row in default["table2"].values())


def test_two_seeds_repeat_exactly_the_seeded_detectors(runs):
    run_dir, default, _, two = runs
    # the image-only baseline is seeded, the external confidence detector (no seed in its fit options) is not
    assert computed(two) == {"detector-fgsm-seed1", "detector-bim-seed1", "detector-image-fgsm-seed1"}
    assert two["seeds"]["repeated"] == {"image+saliency": ["fgsm", "bim"], "image": ["fgsm"]}
    stages = run_dir / "stages"
    for name in ("detector-fgsm", "detector-image-fgsm"):
        first = [p for p in stages.iterdir() if re.fullmatch(rf"{name}-[0-9a-f]{{16}}", p.name)]
        again = [p for p in stages.iterdir() if re.fullmatch(rf"{name}-seed1-[0-9a-f]{{16}}", p.name)]
        assert len(first) == len(again) == 1
        manifests = [json.loads((p[0] / "manifest.json").read_text()) for p in (first, again)]
        assert manifests[0]["key"] != manifests[1]["key"]
        assert [m["params"]["fit"]["seed"] for m in manifests] == [0, 1]
        assert manifests[0]["inputs"] == manifests[1]["inputs"]  # same F, images and adversarial sets
    # the first seed's numbers are the default run's
    for a, row in default["table2"].items():
        assert numbers({k: v for k, v in two["table2"][a].items() if k != "over_seeds"}) == numbers(row)
    assert numbers(two["second_round"]) == numbers(default["second_round"])


def test_two_seeds_report_mean_and_interval(runs):
    run_dir, _, _, two = runs
    rows = [*two["table2"].values(), two["baselines"]["image"]["fgsm"]]
    for row in rows:
        o = row["over_seeds"]
        assert o["seeds"] == [0, 1]
        for key in SEED_KEYS:
            values = o[key]["values"]
            assert len(values) == 2 and values[0] == pytest.approx(row[key])  # the first seed is the table's
            assert o[key]["estimate"] == pytest.approx(np.mean(values))
            assert o[key]["lo"] <= o[key]["estimate"] <= o[key]["hi"]
    assert "over_seeds" not in two["baselines"]["confidence"]["fgsm"]
    md = (run_dir / "report.md").read_text()
    assert "Table II over detector seeds" in md and "AUROC seed 1" in md
    auroc = two["table2"]["bim"]["over_seeds"]["auroc"]
    assert f"{auroc['estimate']:.3f}" in md
    assert "Not seeded, hence not repeated: max-softmax confidence (external)" in md
    assert "over 2 detector seeds" in md  # the findings read the seed interval
    assert "(#table2-seeds)" in md


def test_over_seeds_is_the_student_t_interval():
    values = [0.91, 0.95, 0.93]
    o = over_seeds([{k: v for k in SEED_KEYS} for v in values], [0, 1, 2])
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
    assert (o["auroc"]["lo"], o["auroc"]["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert o["auroc"]["values"] == values and o["auroc"]["n"] == 3
    wide = over_seeds([{k: v for k in SEED_KEYS} for v in (0.99, 0.7)], [0, 1])["auroc"]
    assert wide["lo"] == 0.0 and wide["hi"] == 1.0  # clipped to the range of an AUROC


def planted(per_attack: dict[str, list[float]], image: dict[str, list[float]] | None = None):
    """A results dict with Table II rows (and image-only baseline rows) whose AUROC per seed is given; the first
    seed's bootstrap interval is tight (±0.005) around its value."""
    def row(values):
        per_seed = [{**{k: 0.9 for k in SEED_KEYS}, "auroc": v} for v in values]
        first = values[0]
        return {"auroc": first, "d_adv": 0.9, "ci": {"auroc": {"estimate": first, "lo": first - 0.005,
                                                                "hi": first + 0.005}},
                "over_seeds": over_seeds(per_seed, list(range(len(values))))}

    results = {"table2": {a: row(v) for a, v in per_attack.items()}, "baselines": {}}
    if image:
        results["baselines"]["image"] = {a: row(v) for a, v in image.items()}
    return results


def main_verdict(results):
    return detection_findings(results)[0]["text"]


def test_verdict_needs_the_seed_interval_to_clear_the_bar():
    steady = planted({"fgsm": [0.95, 0.96, 0.94], "bim": [0.97, 0.98, 0.97]})
    text = main_verdict(steady)
    assert text.startswith("The saliency detector detects every attack well over 3 detector seeds")
    assert "[95% CI over 3 seeds" in text
    # the same first seed (0.95) and a mean still above 0.9, but one seed far below: the bound straddles the bar
    straddling = planted({"fgsm": [0.95, 0.85, 0.99], "bim": [0.97, 0.98, 0.97]})
    assert np.mean([0.95, 0.85, 0.99]) >= 0.9
    text = main_verdict(straddling)
    assert "well on average over 3 detector seeds, but not reliably" in text and "FGSM" in text
    # without the seeds, the first seed alone reads "well"
    for row in straddling["table2"].values():
        del row["over_seeds"]
    assert main_verdict(straddling).startswith("The saliency detector detects every attack well:")
    # a mean at chance
    assert "not distinguishable from chance" in main_verdict(planted({"fgsm": [0.55, 0.6, 0.5]}))


def test_baseline_comparison_ties_when_the_seed_intervals_overlap():
    # first seed: image-only 0.95 vs saliency 0.90, bootstrap intervals apart → "beats"
    apart = planted({"fgsm": [0.90, 0.91, 0.90]}, image={"fgsm": [0.95, 0.96, 0.95]})
    assert "image-only baseline beats" in detection_findings(apart)[1]["text"]
    # the same first seeds, but the image-only detector's seeds scatter: their intervals overlap → tie
    scatter = planted({"fgsm": [0.90, 0.91, 0.90]}, image={"fgsm": [0.95, 0.80, 0.99]})
    assert "image-only baseline ties with" in detection_findings(scatter)[1]["text"]


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1]])
def test_bad_seeds_name_the_field(seeds, device):
    with pytest.raises(ConfigError, match="seeds"):
        config(device, seeds=seeds)
