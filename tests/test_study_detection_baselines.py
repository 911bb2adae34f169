"""The field's baseline detectors (LID, Mahalanobis, KD+BU, feature squeezing) inside the detection study, on a
tiny configuration: each appears in the baseline table, the cross-attack matrix and the report with its paper's
column; a detector restored from its stage scores exactly as when it was fitted; a constructor parameter set in
the config recomputes only that detector (and the matrix that reads it)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import tiny_study_config

from advsal.errors import ConfigError
from advsal.studies import study_config
from advsal.studies.detection import Config, run
from advsal.studies.detection.registry import PAPER_NUMBERS

KINDS = ["lid", "mahalanobis", "kd-bu", "feature-squeezing"]

TINY = {
    "name": "tiny-baselines",
    "data": {"name": "mnist5k", "train_limit": 300, "test_limit": 60},
    "classifier": {"epochs": 2, "lr": 0.003},
    "n_train": 24, "n_test": 16, "search_images": 16,
    "attacks": {"fgsm": {}, "bim": {"steps": 2}},
    "attack_limits": {},
    "detector": {"epochs": 1, "batch_size": 32},
    "baselines": KINDS,
    "baseline_attacks": ["fgsm", "bim"],
    "baseline_params": {"kd-bu": {"mc_samples": 8}},
    "generalisation": {"attacks": ["fgsm"], "eps_factors": [1.0], "n_train": 8, "n_test": 8},
    "second_round": {"attack": "bim", "n_images": 2, "steps": 1, "sigmas": [0.5]},
    "layer_images": 16,
    "security": {"enabled": False},  # the security section has its own tests
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny_config(device, **changes):
    return tiny_study_config(Config, TINY, device, **changes)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, device):
    run_dir = tmp_path_factory.mktemp("detb") / "tiny"
    run(tiny_config(device), run_dir)
    return run_dir, json.loads((run_dir / "results.json").read_text())


def diagonal_matches_stored_scores(results):
    """The cross-attack matrix scores restored detectors; on the attack a detector was trained on, its accuracy
    must equal the one from the scores stored when it was fitted."""
    for kind in KINDS:
        m = results["cross_attack_baselines"][kind]
        for i, attack in enumerate(m["trained_on"]):
            j = m["tested_on"].index(attack)
            assert m["matrix"][i][j] == pytest.approx(results["baselines"][kind][attack]["accuracy"], abs=1e-12), \
                (kind, attack)


def test_baselines_in_tables_matrix_and_report(tiny_run):
    run_dir, results = tiny_run
    assert set(results["baselines"]) == set(KINDS)
    for kind in KINDS:
        assert set(results["baselines"][kind]) == {"fgsm", "bim"}
        for row in results["baselines"][kind].values():
            assert 0 <= row["auroc"] <= 1 and 0 <= row["d_clean"] <= 1 and row["n_adv"] == 16
        m = results["cross_attack_baselines"][kind]
        assert m["trained_on"] == ["fgsm", "bim"] and m["tested_on"] == ["fgsm", "bim"]
        assert len(m["matrix"]) == 2 and all(len(r) == 2 for r in m["matrix"])
    diagonal_matches_stored_scores(results)
    # feature squeezing is calibrated on clean training images at the config's fpr: at most 5% of them flagged
    assert results["cross_attack"]["matrix"] and results["cross_attack"]["attacks"] == ["fgsm", "bim"]
    for attack, st in results["standing"].items():
        named = {k for key in ("beats", "ties", "trails") for k, _ in st[key]}
        assert named == set(KINDS), attack
    md = (run_dir / "report.md").read_text()
    assert "paper (table)" in md
    for kind in KINDS:
        assert results["names"]["detectors"][kind] in md
        assert PAPER_NUMBERS[kind]["table"] in md
    assert "no MNIST" in md  # Mahalanobis: Lee et al. report none
    assert md.count("the saliency detector (AUROC") == 2  # one sentence per baseline attack
    assert "trained on \\ tested on" in md


def test_statistic_baselines_export_from_the_run_with_their_stored_scores(tiny_run, device):
    from advsal.data import subset
    from advsal.detection.io import run_classifier, run_detector
    from advsal.studies.engine import load_data

    run_dir, _ = tiny_run
    classifier = run_classifier(run_dir)
    cfg = tiny_config(device)
    test = subset(load_data(cfg.data)[1], cfg.n_test, cfg.seed)  # the study's test subset (steps.draw)
    for kind in ("lid", "mahalanobis", "feature-squeezing"):
        det, payload = run_detector(run_dir, f"{kind}-bim", classifier, kinds=tuple(KINDS))
        assert det.is_fitted and det.threshold == pytest.approx(float(payload["threshold"]))
        torch.testing.assert_close(det.score(test.x), payload["scores_clean"], rtol=1e-5, atol=1e-6)


def test_a_constructor_parameter_recomputes_only_its_detector(tiny_run, device, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    results = run(tiny_config(device, baseline_params={"kd-bu": {"mc_samples": 8}, "lid": {"k": 5}}), run_dir)
    done = {t["stage"] for t in results["timings"] if not t["cached"]}
    assert done == {"detector-lid-fgsm", "detector-lid-bim", "cross-attack"}
    # the other detectors were restored from their stages for the matrix and score as when fitted
    diagonal_matches_stored_scores(results)
    # feature squeezing's threshold is calibrated at the config's fpr: only its stages (and the matrix) recompute
    results = run(tiny_config(device, baseline_params={"kd-bu": {"mc_samples": 8}, "lid": {"k": 5}}, fpr=0.2),
                  run_dir)
    done = {t["stage"] for t in results["timings"] if not t["cached"]}
    assert done == {"detector-feature-squeezing-fgsm", "detector-feature-squeezing-bim", "cross-attack"}


@pytest.mark.parametrize("overrides, field", [
    ({"baseline_params": {"lid": {"kk": 3}}}, "baseline_params.lid"),
    ({"baseline_params": {"nope": {}}}, "baseline_params"),
])
def test_bad_baseline_params_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        study_config("detection", overrides=overrides)


def test_preset_runs_the_four_on_bim_and_cw():
    cfg = study_config("detection", preset="baselines")
    assert set(KINDS) <= set(cfg.baselines) and cfg.baseline_attacks == ["bim", "cw"]


def test_report_sets_a_filled_paper_number_beside_ours_and_says_when_there_is_none(tiny_run, device, tmp_path,
                                                                                   monkeypatch):
    """A PAPER_NUMBERS value reaches the baseline table's "paper (table)" cell of its detector and attack, the
    comparison sentence sets it beside our AUROC and explains a large gap with the paper's settings; an attack
    without a value reads "not retrieved", a paper without MNIST results "no MNIST number"."""
    from advsal.report.detection import LARGE_PAPER_GAP
    from advsal.studies.detection import registry

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    row = tiny_run[1]["baselines"]["lid"]["fgsm"]
    ours = row["restricted"]["auroc"] if row["restricted"].get("auroc") is not None else row["auroc"]
    paper = 0.2 if ours >= 0.5 else 0.9  # at least 0.3 from ours: a large gap
    monkeypatch.setitem(registry.PAPER_NUMBERS, "lid", {**registry.PAPER_NUMBERS["lid"],
                                                        "values": {"fgsm": paper, "bim": None}})
    # a detection rate (feature squeezing, Xu et al.) is set beside our D(x_adv), not our AUROC
    monkeypatch.setitem(registry.PAPER_NUMBERS, "feature-squeezing",
                        {**registry.PAPER_NUMBERS["feature-squeezing"], "values": {"bim": 0.5}})
    fs_rate = tiny_run[1]["baselines"]["feature-squeezing"]["bim"]["restricted"]["d_adv"]
    results = run(tiny_config(device), run_dir)  # every stage cached: analysis and report only
    assert not [t["stage"] for t in results["timings"] if not t["cached"]]
    md = (run_dir / "report.md").read_text()
    section = md.split("## Baselines and ablations")[1].split("\n## ")[0]
    names = results["names"]
    rows = {(kind, attack): line for line in section.splitlines() for kind in KINDS for attack in ("fgsm", "bim")
            if line.startswith(f"| {names['detectors'][kind]} | {names['attacks'][attack]} |")}
    assert len(rows) == 2 * len(KINDS)
    assert f"{paper:.2f} AUC (Ma et al. 2018, Table 1)" in rows["lid", "fgsm"]
    assert "not retrieved (Ma et al. 2018, Table 1)" in rows["lid", "bim"]
    assert all("no MNIST number" in rows["mahalanobis", a] for a in ("fgsm", "bim"))
    assert "no MNIST number" not in rows["lid", "fgsm"] + rows["kd-bu", "fgsm"]
    sentence = next(p for p in section.split("\n\n") if p.startswith("Against the papers' MNIST numbers"))
    assert f"{names['attacks']['fgsm']} (paper: FGM) {ours:.2f} here vs {paper:.2f} ({ours - paper:+.2f})" in sentence
    assert f"Large gaps (≥ {LARGE_PAPER_GAP:g})" in sentence and registry.PAPER_NUMBERS["lid"]["settings"] in sentence
    assert "not retrieved for " + names["attacks"]["bim"] in sentence
    assert f"{names['attacks']['bim']} (paper: BIM) {fs_rate:.2f} here vs 0.50" in sentence
    assert "0.50 detection rate (Xu et al. 2018, Table 5)" in rows["feature-squeezing", "bim"]
