"""The class-imbalance study (seed 002): hand-checked metrics and tests, minimal ε, a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from advsal.attacks.gradient import BIM
from advsal.studies import imbalance, render_run
from advsal.studies.common import load_data, merge_config
from advsal.studies.stats import holm

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "train_limit": 700, "test_limit": 200},
    "model": {"epochs": 1, "batch_size": 64},
    "seeds": [0],
    "classes": [3, 8],
    "attacks": {"fgsm_eps": 0.1, "bim_eps": 0.1, "bim_steps": 3, "per_class": 6},
    "min_eps": {"per_class": 3, "probes": 3, "steps": 3},
    "permutations": 200,
}


def tiny_config() -> imbalance.Config:
    return merge_config(imbalance.Config(), TINY)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("imbalance") / "tiny"
    return run_dir, imbalance.run(tiny_config(), run_dir)


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


# --- the significance test ----------------------------------------------------------------------------------


def test_permutation_test_flags_a_planted_difference_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    balanced = (rng.random(400) < 0.30).astype(float)
    planted = (rng.random(400) < 0.50).astype(float)
    same = (rng.random(400) < 0.30).astype(float)
    hit = imbalance.paired_permutation_test(planted - balanced, 2000, seed=1)
    miss = imbalance.paired_permutation_test(same - balanced, 2000, seed=1)
    assert hit.p_value < 0.001 and hit.mean_difference > 0.1
    assert miss.p_value > 0.2
    # continuous paired differences, a small planted shift
    noise = rng.normal(0, 1, 300)
    assert imbalance.paired_permutation_test(noise + 0.3, 2000).p_value < 0.01
    assert imbalance.paired_permutation_test(noise - noise.mean(), 2000).p_value > 0.5


def test_permutation_test_exact_for_few_pairs():
    # six positive differences: only the all-plus and all-minus flips are as extreme → p = 2 / 2^6
    t = imbalance.paired_permutation_test(np.array([1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 0.0]))
    assert t.exact and t.n == 7 and t.n_nonzero == 6
    assert t.p_value == pytest.approx(2 / 64)
    assert imbalance.paired_permutation_test(np.zeros(10)).p_value == 1.0


def test_holm_adjustment_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 → 4·0.01, 3·0.03, max(0.09, 2·0.04), max(0.09, 1·0.5)
    np.testing.assert_allclose(adjusted, [0.04, 0.09, 0.09, 0.5])


# --- minimal ε by bisection ---------------------------------------------------------------------------------


class TwoClassLinear(nn.Module):
    """logit_0 = 2, logit_1 = sum of the 4 pixels: an image of constant value c is class 0 iff c < 0.5, and
    the smallest L∞ perturbation making it class 1 is 0.5 − c (every pixel up by the same amount)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1, 1, 1, 1]]))
            self.linear.bias.copy_(torch.tensor([2.0, 0.0]))

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_minimal_epsilon_matches_the_analytic_boundary():
    model = TwoClassLinear()
    c = torch.tensor([0.30, 0.45, 0.41, 0.60, 0.0])  # 0.60: already class 1; 0.0: needs 0.5 > eps_max
    x = c.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    y = torch.zeros(5, dtype=torch.long)
    eps, censored = imbalance.minimal_linf_epsilon(model, x, y, eps_max=0.3, probes=8, steps=5)
    resolution = 0.3 / 2 ** 8
    truth = 0.5 - c[:3]
    assert torch.all(eps[:3] >= truth - 1e-6) and torch.all(eps[:3] <= truth + resolution + 1e-6)
    assert eps[3] == 0 and not censored[3]
    assert eps[4] == pytest.approx(0.3) and censored[4] and not censored[:4].any()
    assert model.training and all(p.requires_grad for p in model.parameters())  # caller's state restored


def test_per_example_bim_equals_the_library_bim():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.rand(64, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    ours = imbalance._bim_fools(model, x, y, torch.full((64,), 0.2), steps=5)
    reference = BIM(eps=0.2, steps=5)(model, x, y).success
    assert 0 < int(reference.sum()) < 64  # neither trivial
    assert torch.equal(ours, reference)


# --- configuration ------------------------------------------------------------------------------------------


def test_default_preset_equals_the_builtin_defaults():
    assert imbalance.load_config(CONFIGS / "imbalance-mnist5k.yaml") == imbalance.Config()
    cifar = imbalance.load_config(CONFIGS / "imbalance-cifar10.yaml")
    assert cifar.model.architecture == "vgg-cifar" and cifar.model.optimizer == "rmsprop"
    m = cifar.model
    assert (m.lr, m.lr_decay, m.patience, m.epochs, cifar.removal, cifar.val_fraction) == \
        (1e-4, 1e-5, 10, 200, 0.8, 0.1)


@pytest.mark.parametrize("bad, message", [({"removal": 1.5}, "removal"), ({"seeds": []}, "seeds"),
                                          ({"attacks": {"fgsm_eps": 0.0}}, "fgsm_eps"),
                                          ({"min_eps": {"per_class": 99}}, "min_eps.per_class")])
def test_bad_configuration_is_rejected_with_the_option_named(bad, message):
    with pytest.raises(ValueError, match=message):
        imbalance.validate_config(merge_config(imbalance.Config(), bad))


# --- the tiny study end to end ------------------------------------------------------------------------------


def test_each_depleted_model_trained_on_the_right_counts(tiny_run):
    _, results = tiny_run
    train = load_data(tiny_config().data)[0]
    full = train.class_counts()
    models = results["models"]["0"]
    assert models["balanced"]["train_counts"] == full.tolist()
    for d in (3, 8):
        counts = np.array(models[f"deplete{d}"]["train_counts"])
        expected = full.copy()
        expected[d] = full[d] - int(round(0.8 * full[d]))
        assert counts.tolist() == expected.tolist()


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
    assert [r["class"] for r in stored["table52"]["rows"]] == [3, 8]
    # 2 classes × (2 attacks × 6 questions + 2 minimal-ε questions)
    assert len(stored["tests"]) == 28
    assert all(0 <= t["p_value"] <= t["p_holm"] <= 1 for t in stored["tests"])
    assert stored["conclusions"] and all(isinstance(s, str) for s in stored["conclusions"])
    _, test = load_data(tiny_config().data)
    for label in ("balanced", "deplete3", "deplete8"):
        v = stored["vulnerability"][label]
        assert len(v["bim.success_rate"]) == 10 and np.array(v["confusion"]).sum() == len(test)
    # delta column of Table 5.2 = balanced − depleted accuracy of the depleted class
    bal = stored["models"]["0"]["balanced"]["per_class_accuracy"]
    for r in stored["table52"]["rows"]:
        dep = stored["models"]["0"][f"deplete{r['class']}"]["per_class_accuracy"][r["class"]]
        assert r["class_accuracy_delta"] == pytest.approx(bal[r["class"]] - dep)


def test_rerun_is_served_from_cache_and_rerenders(tiny_run):
    run_dir, first = tiny_run
    again = imbalance.run(tiny_config(), run_dir)
    assert again["timings"] and all(t["cached"] for t in again["timings"])
    strip = ("timings", "total_seconds")
    assert json.dumps({k: v for k, v in first.items() if k not in strip}, default=str) == \
        json.dumps({k: v for k, v in again.items() if k not in strip}, default=str)
    (run_dir / "report.md").unlink()
    md, _ = render_run(run_dir)
    assert "Table 5.2" in md.read_text()
