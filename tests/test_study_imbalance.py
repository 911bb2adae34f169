"""The class-imbalance study (seed 002): hand-checked metrics, config validation, a tiny end-to-end run, its
cache (a re-run computes nothing; a changed field recomputes exactly the stages downstream of it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_study_config

from advsal.errors import ConfigError
from advsal.studies import imbalance, study_config
from advsal.studies.config import from_mapping
from advsal.studies.engine import load_data
from advsal.studies.imbalance import method

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "train_limit": 300, "test_limit": 100},
    "classifier": {"epochs": 1, "batch_size": 64},
    "seeds": [0],
    "classes": [3, 8],
    "attacks": {"fgsm_eps": 0.1, "bim_eps": 0.1, "bim_steps": 3, "per_class": 4},
    "min_eps": {"per_class": 2, "probes": 3, "steps": 3},
    "permutations": 200,
}
MODELS = ("s0-balanced", "s0-deplete3", "s0-deplete8")


def tiny_config(device: str = "cpu", **changes) -> imbalance.Config:
    return tiny_study_config(imbalance.Config, TINY, device, **changes)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, device):
    run_dir = tmp_path_factory.mktemp("imbalance") / "tiny"
    return run_dir, imbalance.run(tiny_config(device), run_dir)


def recomputed(results) -> set[str]:
    return {t["stage"] for t in results["timings"] if not t["cached"]}


# --- per-class metrics on a fixture with known predictions --------------------------------------------------


def test_per_class_attack_metrics_match_hand_computed_values():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    clean = torch.tensor([0, 0, 1, 1, 1, 2])  # image 2 is misclassified and must not count
    adv = torch.tensor([1, 0, 2, 0, 2, 1])
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    m = imbalance.per_class_attack_metrics(y, clean, adv, conf, num_classes=4)
    assert m["n_correct"].tolist() == [2, 2, 1, 0]
    np.testing.assert_allclose(m["success_rate"][:3], [0.5, 1.0, 1.0])
    assert np.isnan(m["success_rate"][3])
    np.testing.assert_allclose(m["mean_confidence"][:3], [0.9, 0.55, 0.4])
    assert m["landing"].tolist() == [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    # 4 successes: 1 of the 3 from classes ≠ 0 lands in 0, both from classes ≠ 1 land in 1, 1 of 3 lands in 2
    np.testing.assert_allclose(m["landing_share"], [1 / 3, 1.0, 1 / 3, 0.0])


# --- configuration ------------------------------------------------------------------------------------------


def test_default_preset_equals_the_builtin_defaults():
    assert study_config("imbalance", preset="mnist5k") == imbalance.Config()
    cifar = study_config("imbalance", preset="cifar10")
    m = cifar.classifier
    assert m.architecture == "vgg-cifar" and m.optimizer == "rmsprop"
    assert (m.lr, m.lr_decay, m.patience, m.epochs, cifar.removal, cifar.val_fraction) == \
        (1e-4, 1e-5, 10, 200, 3500, 0.1)
    assert len(cifar.seeds) >= 5
    # the default stops early on a validation split (the thesis' rule, scaled); the thesis preset has it unscaled
    default = imbalance.Config()
    assert default.val_fraction > 0 and default.classifier.patience > 0
    thesis = study_config("imbalance", preset="thesis")
    assert (thesis.classifier.patience, thesis.classifier.epochs, thesis.val_fraction) == (10, 200, 0.1)
    assert len(thesis.seeds) >= 5


def test_cifar10_preset_keeps_1000_images_of_the_depleted_class():
    from advsal.data import ImageSet
    from advsal.studies.imbalance.config import depleted_classes
    from advsal.studies.imbalance.steps import training_set, validation_split

    cifar = study_config("imbalance", preset="cifar10")
    y = torch.arange(10).repeat_interleave(5000)  # CIFAR-10's training labels: 5,000 per class
    full = ImageSet(torch.zeros(len(y), 1, 1, 1), y, [str(c) for c in range(10)], "cifar10-like")
    train, val = validation_split(full, cifar.val_fraction, 0)
    assert depleted_classes(cifar, train) == list(range(10))
    depleted = training_set(train, 3, cifar.removal, seed=0)
    assert depleted.class_counts()[3] == 1000 and depleted.class_counts()[4] == 4500


@pytest.mark.parametrize("bad, field", [
    ({"seeds": "0"}, "seeds"),                                   # wrong type
    ({"attacks": {"bim_steps": 2.5}}, "attacks.bim_steps"),      # wrong type
    ({"removal": 1.5}, "removal"), ({"seeds": []}, "seeds"), ({"seeds": [1, 1]}, "seeds"),
    ({"attacks": {"fgsm_eps": 0.0}}, "attacks.fgsm_eps"), ({"min_eps": {"per_class": 99}}, "min_eps.per_class"),
    ({"min_eps": {"probes": 0}}, "min_eps.probes"), ({"alpha": 1.0}, "alpha"), ({"device": "gpu"}, "device"),
    ({"classifier": {"weights": "w.safetensors"}}, "classifier.weights"),
])
def test_bad_configuration_is_rejected_with_the_field_named(bad, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_mapping(imbalance.Config, bad)


@pytest.mark.parametrize("bad, field", [({"classes": [3, 12]}, "classes"), ({"removal": 500}, "removal")])
def test_values_checked_against_the_data_fail_before_any_stage(tmp_path, device, bad, field):
    run_dir = tmp_path / "bad"
    with pytest.raises(ConfigError, match=field):
        imbalance.run(tiny_config(device, **bad), run_dir)
    assert not any((run_dir / "stages").iterdir())
    assert not (run_dir / ".lock.owner").exists()  # the run directory is released


# --- the tiny study end to end ------------------------------------------------------------------------------


def test_each_depleted_model_trained_on_the_right_counts(tiny_run):
    _, results = tiny_run
    loaded = load_data(tiny_config().data)[0]
    # the default's early-stopping validation split (10%, stratified) is taken before depletion
    full = np.array(results["data"]["train_counts"])
    assert results["data"]["val"] and full.sum() + int(0.1 * len(loaded)) == len(loaded)
    assert np.all(full <= loaded.class_counts()) and np.all(full >= 0.85 * loaded.class_counts())
    models = results["models"]["0"]
    assert models["balanced"]["train_counts"] == full.tolist()
    for d in (3, 8):
        expected = full.copy()
        expected[d] = full[d] - int(round(0.8 * full[d]))
        assert models[f"deplete{d}"]["train_counts"] == expected.tolist()
    # every model stage is created before any is read (so an executor can train them in parallel)
    assert [r["stage"] for r in results["timings"]] == [f"model-{m}" for m in MODELS] + [
        f"{s}-{m}" for m in MODELS for s in ("attacks", "min-eps")]


def test_tiny_run_writes_every_table_and_figure(tiny_run):
    run_dir, results = tiny_run
    md = (run_dir / "report.md").read_text()
    for heading in ("Conclusion", "Table 5.2", "Does depleting a class change", "Vulnerability per model",
                    "All paired tests", "Confusion matrices", "Stage timings"):
        assert heading in md, heading
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    expected = {"per_class_accuracy.png", "delta_heatmap.png", "success_fgsm.png", "success_bim.png",
                "landing_bim.png", "min_eps_distributions.png", "confusion_balanced.png",
                "confusion_deplete3.png", "confusion_deplete8.png", "bars_bim_own_success.png",
                "bars_fgsm_own_success.png", "bars_min_eps_own_min_eps.png", "bars_bim_towards_success.png",
                "bars_bim_landing_in_depleted.png", "bars_bim_own_accuracy_under_attack.png"}
    assert expected <= figures
    for name in expected:
        assert f"figures/{name}" in md
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(expected)
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["config"]["classifier"]["epochs"] == 1 and stored["provenance"]["seed"] == 0
    assert [r["class"] for r in stored["table52"]["rows"]] == [3, 8]
    # 2 classes × (2 attacks × 6 questions + 2 minimal-ε questions)
    assert len(stored["tests"]) == 28
    tested = [t for t in stored["tests"] if t["n_pairs"]]
    assert tested and all(0 <= t["p_value"] <= t["p_holm"] <= 1 for t in tested)
    assert all(t["p_value"] is None and not t["significant"] for t in stored["tests"] if not t["n_pairs"])
    assert stored["conclusions"] and all(isinstance(s, str) for s in stored["conclusions"])
    _, test = load_data(tiny_config().data)
    for label in ("balanced", "deplete3", "deplete8"):
        v = stored["vulnerability"][label]
        assert len(v["bim.success_rate"]) == 10 and np.array(v["confusion"]).sum() == len(test)
        eps = [e for c in stored["models"]["0"][label]["min_eps"]["values"] for e in c]
        assert all(0 < e <= 0.3 for e in eps)  # correct images only, censored ones at eps_max
    # delta column of Table 5.2 = balanced − depleted accuracy of the depleted class
    bal = stored["models"]["0"]["balanced"]["per_class_accuracy"]
    for r in stored["table52"]["rows"]:
        dep = stored["models"]["0"][f"deplete{r['class']}"]["per_class_accuracy"][r["class"]]
        assert r["class_accuracy_delta"] == pytest.approx(bal[r["class"]] - dep)


def test_rerun_is_served_from_cache_with_identical_results(tiny_run, device):
    run_dir, first = tiny_run
    strip = ("timings", "total_seconds", "provenance")
    before = {k: v for k, v in json.loads((run_dir / "results.json").read_text()).items() if k not in strip}
    (run_dir / "report.md").unlink()
    again = imbalance.run(tiny_config(device), run_dir)
    assert len(again["timings"]) == 9 and not recomputed(again)
    assert (run_dir / "report.md").is_file()  # re-rendered from the results
    after = {k: v for k, v in json.loads((run_dir / "results.json").read_text()).items() if k not in strip}
    assert before == after and before["tests"] and before["models"]


@pytest.mark.parametrize("change, downstream", [
    ({"classifier": {"lr": 3e-3}}, {f"{s}-{m}" for m in MODELS for s in ("model", "attacks", "min-eps")}),
    ({"removal": 0.5}, {f"{s}-s0-deplete{d}" for d in (3, 8) for s in ("model", "attacks", "min-eps")}),
    ({"attacks": {"fgsm_eps": 0.2}}, {f"attacks-{m}" for m in MODELS}),
    ({"min_eps": {"eps_max": 0.4}}, {f"min-eps-{m}" for m in MODELS}),
    ({"alpha": 0.01, "permutations": 300}, set()),
])
def test_a_changed_field_recomputes_exactly_the_stages_downstream(tiny_run, device, monkeypatch, change,
                                                                  downstream):
    run_dir, _ = tiny_run
    monkeypatch.setattr(method, "render", lambda run_dir, results: None)  # the report is tested above
    results = imbalance.run(tiny_config(device, **change), run_dir)
    assert recomputed(results) == downstream
    assert len(results["timings"]) == 9


# --- censored minimal ε, seed-level verdicts, margin conditioning (issue #18) ----------------------------------


def test_tiny_run_rows_name_their_test_baseline_and_interval(tiny_run):
    _, results = tiny_run
    for t in results["tests"]:
        assert t["test"] and t["baseline"].startswith("balanced model") and "seed_lo" in t and "seed_hi" in t
        assert t["direction"] in ("up", "down", "none")
        if t["attack"] == "min_eps":  # censored values: log-rank with Kaplan–Meier medians, not a paired mean
            assert "log-rank" in t["test"] and {"median", "lo", "hi"} <= set(t["km_balanced"])
    # one seed: no seed-level test, hence no direction anywhere, and the headline says why
    assert all(t["direction"] == "none" and not t["seed_significant"] for t in results["tests"])
    answer = next(c for c in results["conclusions"] if c.startswith("Answer:"))
    assert "direction established" not in answer


def _fake_rows(seed_diffs_per_class, significant=True):
    return [{"seed_differences": list(d), "significant": significant, "difference": float(np.mean(d)),
             "class": c} for c, d in enumerate(seed_diffs_per_class)]


def test_headline_states_a_direction_only_when_the_seeds_agree_and_the_seed_test_is_significant():
    from advsal.studies.imbalance.analysis import headline_tests

    agree = {("bim", "own_success"): _fake_rows([[0.10, 0.12, 0.09, 0.11, 0.13], [0.08, 0.1, 0.12, 0.09, 0.1]])}
    h = headline_tests(agree, alpha=0.05)[0]
    assert h["direction"] == "up" and h["n"] == 5 and h["consistent"] and h["lo"] > 0
    # same mean, image-level significant everywhere, but one seed goes the other way: no direction
    one_flips = {("bim", "own_success"): _fake_rows([[0.30, 0.12, 0.09, 0.11, -0.02], [0.1, 0.1, 0.12, 0.09, -0.01]])}
    h = headline_tests(one_flips, alpha=0.05)[0]
    assert h["direction"] == "none" and not h["consistent"] and h["image_up"] == 2
    # agreeing seeds but too noisy for the t-test: no direction either
    noisy = {("bim", "own_success"): _fake_rows([[0.5, 0.01, 0.02, 0.01, 0.6]])}
    h = headline_tests(noisy, alpha=0.05)[0]
    assert h["consistent"] and h["p"] > 0.05 and h["direction"] == "none"


def test_margin_adjusted_removes_a_difference_driven_only_by_clean_margins():
    from advsal.studies.imbalance.analysis import margin_adjusted

    # every image is of class 0 and classified correctly; success depends only on the clean confidence
    # (fooled below 0.9), and the depleted model simply has more low-confidence images than the balanced one
    levels = np.array([0.6, 0.8, 0.95, 0.99])
    rng = np.random.default_rng(0)
    payloads = {}

    def model(conf):
        return {"clean_pred": np.zeros(60, dtype=np.int64), "clean_conf": conf,
                "bim.untargeted.pred": np.where(conf < 0.9, 1, 0)}

    for seed in range(3):
        bal_conf = levels[rng.choice(4, 60, p=[0.1, 0.1, 0.4, 0.4])]
        dep_conf = levels[rng.choice(4, 60, p=[0.4, 0.4, 0.1, 0.1])]
        payloads[seed] = {"balanced": model(bal_conf), "deplete0": model(dep_conf)}
    naive = np.mean([(p["deplete0"]["bim.untargeted.pred"] != 0).mean() - (p["balanced"]["bim.untargeted.pred"]
                                                                           != 0).mean() for p in payloads.values()])
    assert naive > 0.3  # an unconditional comparison calls the depleted model far easier to fool
    res = margin_adjusted(np.zeros(60, dtype=np.int64), payloads, 0, "bim", own=True, resamples=200, seed=0)
    assert res["estimate"] == pytest.approx(0.0, abs=1e-12) and res["p"] == 1.0
    assert res["margin_depleted"] < res["margin_balanced"]
    # a real effect at equal margins is kept: the depleted model is fooled on every image
    for p in payloads.values():
        p["deplete0"]["bim.untargeted.pred"] = np.ones(60, dtype=np.int64)
    res = margin_adjusted(np.zeros(60, dtype=np.int64), payloads, 0, "bim", own=True, resamples=200, seed=0)
    assert res["estimate"] > 0.3 and res["p"] < 0.01 and res["lo"] > 0


def test_tiny_run_rates_carry_intervals_that_contain_them(tiny_run):
    """Issue #17: every rate of the tests table and of Table 5.2 has a 95% interval (bootstrap over the attack
    images, Wilson for the pooled test accuracies) around its point estimate, in results.json and the report."""
    run_dir, _ = tiny_run
    stored = json.loads((run_dir / "results.json").read_text())
    rates = [t for t in stored["tests"] if t["attack"] != "min_eps" and t["n_pairs"]]
    assert rates and all("ci" not in t for t in stored["tests"] if t["attack"] == "min_eps")
    for t in rates:
        for key, point in (("balanced", t["balanced_mean"]), ("depleted", t["depleted_mean"]),
                           ("difference", t["difference"])):
            iv = t["ci"][key]
            assert iv["estimate"] == pytest.approx(point) and iv["lo"] <= point <= iv["hi"], (t["question"], key)
    assert any(t["ci"]["balanced"]["hi"] > t["ci"]["balanced"]["lo"] for t in rates)  # not all degenerate
    for r in stored["table52"]["rows"]:
        iv = r["ci"]["class_accuracy"]
        assert iv["estimate"] == pytest.approx(r["class_accuracy"]) and iv["lo"] <= r["class_accuracy"] <= iv["hi"]
        assert iv["hi"] - iv["lo"] > 0.05  # ~10 test images per class: a wide interval
    md = (run_dir / "report.md").read_text()
    iv = next(t["ci"]["balanced"] for t in rates if t["ci"]["balanced"]["hi"] > t["ci"]["balanced"]["lo"])
    assert f"[{iv['lo']:.3f}, {iv['hi']:.3f}]" in md and "Wilson" in md and "percentile-bootstrap" in md
    assert "95% CI" in next(c for c in stored["conclusions"] if c.startswith("Depletion "))
