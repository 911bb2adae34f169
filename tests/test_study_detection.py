"""The detection study end to end on a tiny configuration: report, cache reuse, resume after a kill."""

from __future__ import annotations

import json

import pytest

from advsal.detection.detectors import SaliencyDetector
from advsal.studies import detection, render_run
from advsal.studies.common import merge_config

TINY = {
    "name": "tiny",
    "data": {"name": "mnist5k", "train_limit": 400, "test_limit": 120},
    "classifier": {"epochs": 2},
    "n_train": 120, "n_test": 60, "search_images": 60,
    "attacks": {"fgsm": {}, "bim": {"steps": 3}, "cw": {"steps": 5, "binary_search_steps": 1, "lr": 0.1},
                "jsma": {"gamma": 0.05}},
    "attack_limits": {"jsma": 40, "cw": 60},
    "detector": {"epochs": 2, "batch_size": 32},
    "baseline_attacks": ["fgsm"],
    "generalisation": {"attacks": ["fgsm"], "eps_factors": [0.5, 1.0], "n_train": 60, "n_test": 30},
    "second_round": {"n_images": 16, "steps": 4, "sigmas": [0.5]},
    "layer_images": 20,
}


def tiny_config():
    return merge_config(detection.Config(), TINY)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("det") / "tiny"
    results = detection.run(tiny_config(), run_dir)
    return run_dir, results


def test_report_has_every_table(tiny_run):
    run_dir, results = tiny_run
    md = (run_dir / "report.md").read_text()
    for heading in ("Attack budgets", "Table II", "Baselines and ablations", "Generalisation across attacks",
                    "Generalisation across ε", "Second-round attacks", "Layer-wise analysis", "Examples",
                    "Stage timings"):
        assert heading in md, heading
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    stored = json.loads((run_dir / "results.json").read_text())
    assert set(stored["table2"]) == {"fgsm", "bim", "cw", "jsma"}
    assert set(stored["baselines"]) == {"image", "saliency", "n-plus-one", "metzen", "first-layer"}
    for row in stored["table2"].values():
        assert 0 <= row["d_clean"] <= 1 and 0 <= row["d_adv"] <= 1 and 0 <= row["auroc"] <= 1
    eps = stored["epsilons"]["fgsm"]["eps"]
    assert 0 < eps < 1 and stored["epsilons"]["fgsm"]["accuracy"] < 0.30
    assert len(stored["generalisation_eps"]["fgsm"]["matrix"]) == 2
    assert len(stored["second_round"]["rows"]) == 4  # first round, Metzen σ=0.5, adaptive, transfer
    assert stored["cross_attack"]["attacks"] == ["fgsm", "bim", "cw", "jsma"]


def test_rerender_from_results_only(tiny_run):
    run_dir, _ = tiny_run
    (run_dir / "report.md").unlink()
    md, page = render_run(run_dir)
    assert md.is_file() and page.is_file()


def test_rerun_is_served_from_cache(tiny_run, tmp_path):
    run_dir, results = tiny_run
    again = detection.run(tiny_config(), run_dir)
    assert all(t["cached"] for t in again["timings"])
    assert again["table2"] == results["table2"] and again["second_round"] == results["second_round"]


def test_killed_run_resumes_with_same_results(tiny_run, tmp_path, monkeypatch):
    _, reference = tiny_run
    run_dir = tmp_path / "killed"
    calls = {"n": 0}
    original = SaliencyDetector.fit

    def dying_fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run is killed while training the third detector
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SaliencyDetector, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        detection.run(tiny_config(), run_dir)
    assert not list((run_dir / "stages").glob("*.partial-*"))
    monkeypatch.setattr(SaliencyDetector, "fit", original)
    resumed = detection.run(tiny_config(), run_dir)
    cached = [t for t in resumed["timings"] if t["cached"]]
    assert len(cached) >= 3  # classifier, ε searches and adversarial sets finished before the kill were reused
    assert resumed["table2"] == reference["table2"]
    assert resumed["epsilons"] == reference["epsilons"]


def test_default_preset_matches_defaults():
    from pathlib import Path

    preset = Path(__file__).resolve().parents[1] / "configs" / "detection-mnist5k.yaml"
    assert detection.load_config(preset) == detection.Config()


def test_bad_config_names_valid_options(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_trian: 5\n")
    with pytest.raises(ValueError, match="valid: name"):
        detection.load_config(bad)
    with pytest.raises(FileNotFoundError, match="presets"):
        detection.load_config(tmp_path / "missing.yaml")


def test_layer_defaults():
    from advsal.models import build_model

    assert detection.default_layers(build_model("mnist-net")) == ["features.1", "features.6", "features.8"]
