"""The detection study on a tiny configuration: end to end, fully cached re-runs, exactly-downstream invalidation
(the headline: changing max_accuracy recomputes ε, the adversarial sets and every detector, and nothing
upstream), registries extended from outside, a user model from the command line, and config validation."""

from __future__ import annotations

import copy
import json
import shutil
import sys

import pytest
import torch
from conftest import numbers, tiny_study_config

from advsal.attacks import FGSM
from advsal.attacks.specs import ATTACK_SPECS, AttackSpec, register_attack_spec
from advsal.errors import ConfigError
from advsal.studies import render_run, study_config
from advsal.studies.detection import (
    DETECTOR_SPECS,
    Config,
    DetectorSpec,
    default_layers,
    register_detector_spec,
    run,
)


class ConfidenceDetector:
    """A detector from outside the package that needs no adversarial training data: score = 1 − max softmax."""

    threshold = 0.5
    differentiable = True

    def __init__(self, classifier):
        self.classifier = classifier
        self._fitted = False

    @property
    def is_fitted(self):
        return self._fitted

    def params(self):
        return {"kind": "confidence"}

    def fit(self, x_clean, x_adv, **options):
        assert x_adv is None  # its spec says it needs no adversarial data
        self._fitted = True
        return self

    def adversarial_logit(self, x):
        p = 1 - torch.softmax(self.classifier(x), 1).amax(1)
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))

    def score(self, x):
        with torch.no_grad():
            return torch.sigmoid(self.adversarial_logit(x))

    def predict(self, x):
        return self.score(x) > self.threshold

    def calibrate(self, x_clean, fpr=0.05):
        return self.threshold


register_attack_spec(AttackSpec("fixed-fgsm", "Fixed-budget FGSM (external)",
                                factory=lambda params, eps: FGSM(eps=params.get("budget", 0.2))))
register_detector_spec(DetectorSpec("confidence", "max-softmax confidence (external)",
                                    lambda classifier, cfg: ConfidenceDetector(classifier), adversarial=False,
                                    training=lambda cfg: {}))

TINY = {
    "name": "tiny",
    "data": {"name": "mnist5k", "train_limit": 400, "test_limit": 80},
    "classifier": {"epochs": 2, "lr": 0.003},
    "n_train": 24, "n_test": 16, "search_images": 16,
    "attacks": {"fgsm": {}, "bim": {"steps": 2}, "fixed-fgsm": {"budget": 0.25}},
    "attack_limits": {"fixed-fgsm": 16},
    "detector": {"epochs": 1, "batch_size": 32},
    "baselines": ["confidence"],
    "baseline_attacks": ["fgsm", "fixed-fgsm"],
    "generalisation": {"attacks": ["fgsm"], "eps_factors": [0.5, 1.0], "n_train": 12, "n_test": 8},
    "second_round": {"attack": "bim", "n_images": 4, "steps": 1, "sigmas": [0.5]},
    "layer_images": 8,
    "security": {"n_images": 3, "linf_eps": [], "l2_eps": [1.0], "steps": 2},
}


def tiny_config(device, **changes):
    return tiny_study_config(Config, TINY, device, **changes)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, device):
    run_dir = tmp_path_factory.mktemp("det") / "tiny"
    run(tiny_config(device), run_dir)
    return run_dir, json.loads((run_dir / "results.json").read_text())


def recomputed(run_dir, device, **changes):
    """Names of the stages a run with ``changes`` computes (everything else comes from the cache)."""
    results = run(tiny_config(device, **changes), run_dir)
    return {t["stage"] for t in results["timings"] if not t["cached"]}, results


def test_end_to_end_report_and_registries(tiny_run):
    run_dir, results = tiny_run
    md = (run_dir / "report.md").read_text()
    for heading in ("Attack budgets", "Table II", "Baselines and ablations", "Generalisation across attacks",
                    "Generalisation across ε", "Second-round attacks", "Layer-wise analysis", "Examples",
                    "Stage timings"):
        assert heading in md, heading
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    assert set(results["table2"]) == {"fgsm", "bim", "fixed-fgsm"}
    assert set(results["baselines"]) == {"confidence"}
    assert set(results["baselines"]["confidence"]) == {"fgsm", "fixed-fgsm"}
    # the attack and the baseline registered from outside appear by their display names in the tables
    assert "Fixed-budget FGSM (external)" in md and "max-softmax confidence (external)" in md
    for row in results["table2"].values():
        assert 0 <= row["d_clean"] <= 1 and 0 <= row["d_adv"] <= 1 and 0 <= row["auroc"] <= 1
    assert set(results["epsilons"]) == {"fgsm", "bim"}  # the external attack has no budget search
    eps = results["epsilons"]["fgsm"]
    assert 0 <= eps["eps"] < 1 and eps["accuracy"] < 0.30
    assert results["attacks"]["fixed-fgsm"]["test"]["mean_linf"] == pytest.approx(0.25, abs=1e-4)
    assert len(results["generalisation_eps"]["fgsm"]["matrix"]) == 2
    assert [r["attack"] for r in results["second_round"]["rows"]][1:] == ["metzen-sigma0.5", "adaptive-surrogate",
                                                                          "transfer-from-D′"]
    assert results["cross_attack"]["attacks"] == ["fgsm", "bim", "fixed-fgsm"]
    assert results["layers"]["layers"] == ["features.1", "features.6", "features.8"]
    curves = results["security"]["detectors"]["image+saliency"]
    assert len(curves["linf"]["both"]) == 1 and len(curves["l2"]["both"]) == 1 and curves["linf"]["n"] == 3
    assert curves["linf"]["eps"] == [pytest.approx(results["epsilons"]["bim"]["eps"])]


def test_rerun_is_fully_cached_and_identical(tiny_run, device):
    run_dir, reference = tiny_run
    again = run(tiny_config(device), run_dir)
    assert again["timings"] and all(t["cached"] for t in again["timings"])
    assert numbers(json.loads((run_dir / "results.json").read_text())) == numbers(reference)
    (run_dir / "report.md").unlink()
    md, page = render_run(run_dir)  # the report is drawn from results.json alone
    assert md.is_file() and page.is_file()


def test_report_renders_when_no_layer_example_succeeded(tiny_run, tmp_path):
    """An attack with no successful example among `layer_images` has null layer numbers: the report says so
    instead of crashing (results.json holds null for NaN)."""
    run_dir, results = tiny_run[0], copy.deepcopy(tiny_run[1])
    for per in results["layers"]["by_attack"].values():
        for row in per.values():
            row.update(correlation=None, change=None, n=0)
    from advsal.studies import get_study

    out = tmp_path / "rendered"
    shutil.copytree(run_dir, out)
    md, _ = get_study("detection").render(out, results)
    assert "depth trend is not measured" in md.read_text()


def test_changing_max_accuracy_recomputes_eps_adversarial_sets_and_every_detector(tiny_run, device, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    done, results = recomputed(run_dir, device, max_accuracy=0.5)
    budgeted = {"eps-fgsm", "eps-bim",
                *{f"adv-{a}-{s}" for a in ("fgsm", "bim") for s in ("train", "test")},
                "detector-fgsm", "detector-bim", "detector-confidence-fgsm",
                "cross-attack", "adv-fgsm-gen0.5-train", "adv-fgsm-gen0.5-test", "adv-fgsm-gen1-train",
                "adv-fgsm-gen1-test", "detector-fgsm-gen0.5", "detector-fgsm-gen1", "eps-matrix-fgsm",
                "detector-bim-half1", "detector-bim-half2", "second-first-round", "second-metzen-sigma0.5",
                "second-adaptive-surrogate", "second-transfer-from-D'", "security-image+saliency", "layers",
                "examples"}
    assert done == budgeted
    # upstream (the classifier) and what does not depend on ε (the fixed-budget attack and its detectors) stay
    cached = {t["stage"] for t in results["timings"] if t["cached"]}
    assert cached == {"classifier", "adv-fixed-fgsm-train", "adv-fixed-fgsm-test", "detector-fixed-fgsm",
                      "detector-confidence-fixed-fgsm"}
    assert results["epsilons"]["fgsm"]["eps"] <= tiny_run[1]["epsilons"]["fgsm"]["eps"]


def test_each_field_recomputes_exactly_its_downstream(tiny_run, device, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    # a middle field: the training images of one attack — its adversarial training set, the detectors trained
    # on them (also the one that reads only their clean images) and the cross-attack matrix
    done, _ = recomputed(run_dir, device, attack_limits={"fixed-fgsm": 12})
    assert done == {"adv-fixed-fgsm-train", "detector-fixed-fgsm", "detector-confidence-fixed-fgsm", "cross-attack"}
    # a late field: only the layer analysis
    done, _ = recomputed(run_dir, device, layer_images=6)
    assert done == {"layers"}
    # a report-only field: nothing, yet the numbers it governs change
    done, results = recomputed(run_dir, device, fpr=0.2)
    assert done == set()
    assert results["config"]["fpr"] == 0.2


@pytest.mark.parametrize("overrides, field", [
    ({"max_accuracy": "high"}, "max_accuracy"),
    ({"max_accuracy": 1.5}, "max_accuracy"),
    ({"second_round": {"steps": 0}}, "second_round.steps"),
    ({"security": {"steps": 0}}, "security.steps"),
    ({"attacks": {"nope": {}}}, "attacks"),
    ({"attacks": {"bim": {"stepz": 3}}}, "attacks.bim"),
    ({"baselines": ["nope"]}, "baselines"),
    ({"generalisation": {"attacks": ["cw"]}}, "generalisation.attacks"),
    ({"device": "gpu"}, "device"),
])
def test_bad_config_names_the_field(overrides, field, tmp_path):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        study_config("detection", overrides=overrides)
    assert not (tmp_path / "stages").exists()


def test_default_preset_matches_defaults():
    assert study_config("detection", preset="mnist5k") == Config()


def test_default_layers_for_any_model():
    from advsal.models import build_model

    assert default_layers(build_model("mnist-net")) == ["features.1", "features.6", "features.8"]

    class Functional(torch.nn.Module):  # ReLUs as functions: the convolutions are the layers
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 3), torch.nn.Conv2d(4, 4, 3))
            self.head = torch.nn.Linear(4, 10)

        def forward(self, x):
            h = torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x))))))
            return self.head(h.mean((2, 3)))

    assert default_layers(Functional()) == ["a", "b", "c"]


def test_external_specs_are_registered():
    assert "fixed-fgsm" in ATTACK_SPECS and "confidence" in DETECTOR_SPECS


# ------------------------------------------------------------------------------------------------ CLI, user model
USER_MODEL = '''
import torch
from torch import nn


def small(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 14 * 14, num_classes))


def wrong_output(num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, 3))
'''

CLI_CONFIG = """
data: {name: mnist5k, train_limit: 200, test_limit: 40}
classifier: {epochs: 1, lr: 0.003}
n_train: 12
n_test: 10
search_images: 10
attacks: {fgsm: {}}
attack_limits: {}
detector: {epochs: 1, batch_size: 32}
baselines: []
baseline_attacks: []
generalisation: {attacks: [], n_train: 8, n_test: 6}
second_round: {attack: fgsm, n_images: 3, steps: 1, sigmas: []}
layer_images: 4
security: {enabled: false}
"""


def advsal(monkeypatch, capsys, *args):
    """Run the ``advsal`` command in-process: (exit status, stdout, stderr)."""
    from advsal.cli import main

    monkeypatch.setattr(sys, "argv", ["advsal", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.fixture
def user_files(tmp_path):
    model = tmp_path / "user_model.py"
    model.write_text(USER_MODEL)
    config = tmp_path / "tiny.yaml"
    config.write_text(CLI_CONFIG)
    return model, config


def test_user_model_from_the_cli_on_cpu_and_auto(user_files, tmp_path, monkeypatch, capsys):
    model, config = user_files
    runs = tmp_path / "runs"
    outs = {}
    for device in ("cpu", "auto"):
        code, _, err = advsal(monkeypatch, capsys, "run", "detection", "--config", config, "--model",
                              f"{model}:small", "--device", device, "--name", f"user-{device}", "--runs", runs,
                              "--quiet")
        assert code == 0, err
        outs[device] = json.loads((runs / f"user-{device}" / "results.json").read_text())
    assert outs["cpu"]["classifier"]["architecture"].endswith("user_model.py:small")
    assert outs["cpu"]["layers"]["layers"] == ["1", "3", "6"]  # first, middle and last ReLU of the user model
    assert outs["cpu"]["table2"] and numbers(outs["cpu"]) == numbers(outs["auto"])


@pytest.mark.parametrize("spec, message", [
    ("{dir}/user_model.py:x:y", "expected package.module:function"),
    ("{dir}/user_model.py:missing", "has no function 'missing'"),
    ("{dir}/user_model.py:wrong_output", "logits"),
])
def test_bad_user_model_is_one_line_exit_2(spec, message, user_files, tmp_path, monkeypatch, capsys):
    model, config = user_files
    code, _, err = advsal(monkeypatch, capsys, "run", "detection", "--config", config, "--model",
                          spec.format(dir=model.parent), "--name", "bad", "--runs", tmp_path / "runs", "--quiet")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advsal: error:") and message in lines[0], err
