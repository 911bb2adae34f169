"""The CLI end to end in a temp directory, and one-line errors with a non-zero exit."""

from __future__ import annotations

import pytest

from advsal.models import load_model
from advsal.saliency import SALIENCY_METHODS


def test_train_and_evaluate(tmp_path, advsal):
    out = tmp_path / "m"
    r = advsal("train", "--dataset", "digits", "--model", "resnet20", "--epochs", "2", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    model = load_model(out.with_suffix(".safetensors"))
    assert model.spec["architecture"] == "resnet20" and model.spec["input_size"] == 8
    png = tmp_path / "cm.png"
    r = advsal("evaluate", "--model", str(out), "--dataset", "digits", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and png.read_bytes()[:4] == b"\x89PNG"


def test_attack_then_saliency(tmp_path, advsal):
    import matplotlib.image
    import numpy as np
    from safetensors.torch import load_file

    model = tmp_path / "m"
    assert advsal("train", "--dataset", "digits", "--model", "mnist-net", "--epochs", "2", "--shift", "1",
                  "--out", str(model), "-q").returncode == 0
    adv = tmp_path / "fgsm.safetensors"
    r = advsal("attack", "--model", str(model), "--dataset", "digits", "-a", "fgsm", "--eps", "0.3", "--n", "20",
               "--out", str(adv), "-q")
    assert r.returncode == 0, r.stderr
    stored = load_file(adv)
    assert stored["x_adv"].shape == (20, 1, 8, 8)
    assert float((stored["x_adv"] - stored["x"]).abs().max()) == pytest.approx(0.3, abs=1e-5)
    assert "success" in r.stdout
    aa = tmp_path / "aa.npz"  # the suite-II attacks by name too (here AutoAttack, every member at a token budget)
    r = advsal("attack", "--model", str(model), "--dataset", "digits", "-a", "autoattack", "--eps", "0.1", "--steps",
               "3", "-p", "n_targets=1", "-p", "n_queries=5", "--n", "10", "--out", str(aa), "-q")
    assert r.returncode == 0, r.stderr
    stored_aa = np.load(aa)
    assert float(np.abs(stored_aa["x_adv"] - stored_aa["x"]).max()) <= 0.1 + 1e-6 and "robust accuracy" in r.stdout
    robust = float(r.stdout.split("robust accuracy ")[1].split(")")[0])
    assert robust == pytest.approx(float((stored_aa["pred"] == stored_aa["y"]).mean()))
    r = advsal("saliency", "--model", str(model), "--adv", str(adv), "--n", "4", "--out", str(tmp_path / "pair"))
    assert r.returncode == 0, r.stderr
    maps = load_file(tmp_path / "pair" / "maps.safetensors")
    assert set(maps) == {"clean", "adversarial"} and not maps["clean"].equal(maps["adversarial"])
    r = advsal("saliency", "--model", str(model), "--dataset", "digits", "--method", "gradcam", "--n", "3",
               "--out", str(tmp_path / "clean"))
    assert r.returncode == 0, r.stderr
    assert set(load_file(tmp_path / "clean" / "maps.safetensors")) == {"clean"}
    # without adversarial images: one column per example (3 + the label column), image row + one map row
    assert matplotlib.image.imread(tmp_path / "clean" / "grid.png").shape[:2] == (2.5 * 120, 4 * 120)
    # every name of the library's registry (and the old CLI spellings) gives one (N, H, W) map per image
    for name in [*SALIENCY_METHODS, "guided", "gradcam", "guided-gradcam", "ig"]:
        r = advsal("saliency", "--model", str(model), "--dataset", "digits", "--method", name, "--n", "2",
                   "--out", str(tmp_path / name))
        assert r.returncode == 0, (name, r.stderr)
        assert load_file(tmp_path / name / "maps.safetensors")["clean"].shape == (2, 8, 8), name
    r = advsal("saliency", "--model", str(model), "--method", "lime", "--out", str(tmp_path / "lime"))
    assert r.returncode != 0 and "unknown saliency method 'lime'" in r.stderr
    assert "integrated-gradients" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = advsal("saliency", "--help")
    assert all(name in " ".join(r.stdout.split()) for name in SALIENCY_METHODS)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "nope", "--out", "x"], "unknown dataset 'nope'"),
    (["train", "--epochs", "many", "--out", "x"], "--epochs"),
    (["evaluate", "--model", "missing.safetensors"], "not found"),
    (["train", "--model", "alexnet", "--out", "x", "--dataset", "digits"], "unknown model"),
    (["run", "nosuchstudy"], "unknown study"),
    (["report", "nowhere"], "results.json"),
])
def test_bad_arguments_one_line(tmp_path, advsal, args, message):
    r = advsal(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_listings(advsal):
    r = advsal("datasets")
    assert r.returncode == 0 and "mnist5k" in r.stdout and "cifar10" in r.stdout
    r = advsal("models")
    assert r.returncode == 0 and "vgg-cifar" in r.stdout


def test_attack_help_names_every_registered_attack():
    from advsal.attacks.registry import ATTACKS
    from advsal.cli import ATTACK_HELP

    assert ATTACK_HELP.rstrip(".").replace(" or ", ", ").split(", ") == list(ATTACKS)


def test_bad_inputs_exit_2_with_one_line_and_write_nothing_outside(tmp_path, advsal):
    model = tmp_path / "m"
    assert advsal("train", "--dataset", "digits", "--model", "mnist-net", "--epochs", "1", "--out", str(model),
                  "-q").returncode == 0
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    configs = {"c-type.yaml": "n_train: abc\n", "c-data.yaml": "data: 5\n",
               "c-steps.yaml": "second_round: {steps: 0}\n", "c-fpr.yaml": "fpr: 2.0\n",
               "c-eps.yaml": "attacks: {fgsm: {eps: 0.1}}\n",
               "c-attack.yaml": "second_round: {attack: nope}\n"}
    for name, text in configs.items():
        (tmp_path / name).write_text(text)
    sidecars = {"list": "[1, 2]", "null": "null",
                "huge": '{"architecture": "mnist-net", "num_classes": 1000000000000, "in_channels": 1, '
                        '"input_size": 8}'}
    for name, text in sidecars.items():
        (tmp_path / f"bad-{name}.json").write_text(text)
        (tmp_path / f"bad-{name}.safetensors").write_bytes(model.with_suffix(".safetensors").read_bytes())
    common = ["--model", str(model), "--dataset", "digits"]
    cases = [
        (["attack", *common, "--attack", "fgsm", "--eps", "0.1", "--n", "0", "--out", "a.npz"], "--n must be ≥ 1"),
        (["attack", *common, "--attack", "fgsm", "--eps", "0.1", "--out", str(tmp_path / "adir")], "is a folder"),
        (["attack", *common, "--attack", "fgsm", "--eps", "0.1", "--out", str(tmp_path / "afile" / "x.npz")],
         "is a file, not a folder"),
        (["saliency", *common, "--n", "-1", "--out", "maps"], "--n must be ≥ 1"),
        (["saliency", *common, "--out", str(tmp_path / "afile")], "is a file"),
        (["train", "--dataset", "digits", "--lr", "inf", "--epochs", "1", "--out", "m2"], "finite"),
        (["run", "detection", "--name", "..", "--runs", str(tmp_path / "runs")], "invalid run name"),
        (["run", "detection", "--name", "../x", "--runs", str(tmp_path / "runs")], "invalid run name"),
        (["run", "detection", "--preset", "nope"], "no preset 'nope'"),
        (["run", "detection", "--device", "tpu"], "device must be"),
        (["report", str(tmp_path / "adir")], "results.json not found"),
        (["run", "detection", "--config", "c-type.yaml"], "n_train must be an integer"),
        (["run", "detection", "--config", "c-data.yaml"], "data: expected a mapping"),
        (["run", "detection", "--config", "c-steps.yaml"], "second_round.steps must be ≥ 1"),
        (["run", "detection", "--config", "c-fpr.yaml"], "fpr must be in (0, 1)"),
        (["run", "detection", "--config", "c-eps.yaml"], "is chosen by the minimal-ε search"),
        (["run", "detection", "--config", "c-attack.yaml"], "second_round.attack must be"),
        (["evaluate", "--model", "bad-list", "--dataset", "digits"], "must be a JSON object"),
        (["evaluate", "--model", "bad-null", "--dataset", "digits"], "must be a JSON object"),
        (["evaluate", "--model", "bad-huge", "--dataset", "digits"], "num_classes must be an integer in"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in cases:
        r = advsal(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("advsal: error:") and message in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    (tmp_path / "adir" / "results.json").write_text("[1, 2]")
    r = advsal("report", str(tmp_path / "adir"))
    assert r.returncode == 2 and "not the results of an advsal study" in r.stderr
