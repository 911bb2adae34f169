"""The detector as a deployable guard: save/load round trips (network and statistic detectors), refusal of another
classifier and of damaged files, calibration to a clean FPR, `advsal detect` on a messy folder, `advsal export`
from a study run then `detect` in a fresh process (bit-identical to the study's stored scores), the ART and
nn.Module adapters."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from advsal.adapters import GuardedModel
from advsal.detection import (
    DetectorFileError,
    Guard,
    LIDDetector,
    SaliencyDetector,
    load_detector,
    save_detector,
)
from advsal.detection.guard import CLASSIFIER_FILE
from advsal.models import build_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def images(mnist5k):
    _, test = mnist5k
    return test.x[:800].clone()


def noisy(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + 0.3 * torch.sign(torch.randn(x.shape, generator=g))).clamp(0, 1)


@pytest.fixture(scope="module")
def model():
    return build_model("mnist-net", seed=0).eval()


@pytest.fixture(scope="module")
def detector(model, images):
    """A saliency detector trained one epoch to tell 48 clean digits from their noisy versions."""
    x = images[:48]
    return SaliencyDetector(model).fit(x, noisy(x), epochs=1, batch_size=16)


def test_round_trip_gives_identical_scores(tmp_path, model, detector, images):
    x = torch.cat([images[600:616], noisy(images[600:616], 1)])
    detector.threshold = 0.3125
    save_detector(detector, tmp_path / "d", model)
    loaded = load_detector(tmp_path / "d", model)
    assert type(loaded) is SaliencyDetector and loaded.is_fitted and loaded.params() == detector.params()
    assert torch.equal(loaded.score(x), detector.score(x)) and loaded.threshold == 0.3125
    # the guard's shared forward pass gives exactly the detector's scores and F's predictions
    r = Guard(model, loaded)(x)
    assert torch.equal(r.scores, detector.score(x))
    assert torch.equal(r.predictions, model(x).argmax(1)) and torch.equal(r.flagged, r.scores > 0.3125)

    lid = LIDDetector(model, layers=["features.1", "logits"], k=5, minibatch=16)
    lid.fit(images[:32], noisy(images[:32]), cv=None)
    save_detector(lid, tmp_path / "lid", model)
    lid2 = load_detector(tmp_path / "lid", model)
    assert type(lid2) is LIDDetector and lid2.is_fitted
    assert lid2.coef_.dtype == torch.float64 and len(lid2.reference_) == 2
    assert torch.equal(lid2.score(x), lid.score(x))


def test_another_classifier_is_refused(tmp_path, model, detector):
    save_detector(detector, tmp_path / "d", model)
    other = build_model("mnist-net", seed=1).eval()
    with pytest.raises(DetectorFileError, match="trained for classifier .* the given classifier's hash"):
        load_detector(tmp_path / "d", other)
    Guard(model, detector).save(tmp_path / "g")
    with pytest.raises(DetectorFileError, match="only works with its own classifier"):
        Guard.load(tmp_path / "g", other)


def test_tampered_or_truncated_files_are_refused(tmp_path, model, detector):
    path = save_detector(detector, tmp_path / "d", model)
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    with pytest.raises(DetectorFileError, match="truncated or modified"):
        load_detector(tmp_path / "d", model)
    tampered = bytearray(blob)
    tampered[-5] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(DetectorFileError, match="checksum"):
        load_detector(tmp_path / "d", model)
    path.write_bytes(blob)
    assert load_detector(tmp_path / "d", model).is_fitted
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(DetectorFileError, match="corrupt metadata"):
        load_detector(tmp_path / "d", model)


def test_calibration_reaches_the_fpr_on_held_out_clean_images(tmp_path, model, detector, images):
    guard = Guard(model, detector, fpr=0.05)
    cal = guard.calibrate(images[:400])
    assert cal.n_images == 400 and cal.fpr_achieved <= 0.05 and cal.fpr_achieved >= 0.05 - 1 / 400
    held_out = guard(images[400:800]).flagged.float().mean().item()
    assert abs(held_out - 0.05) <= 0.01
    curve = SimpleNamespace(norm="linf", to_dict=lambda: {"eps": [0.1], "robust_tpr": [0.5]})
    guard.attach_robustness(curve, tpr_noise=0.9)
    guard.save(tmp_path / "g")
    again = Guard.load(tmp_path / "g", model)
    assert again.threshold == guard.threshold and again.report()["calibration"] == guard.report()["calibration"]
    assert again.report()["calibration"]["robust"] == {"linf": {"eps": [0.1], "robust_tpr": [0.5]}, "tpr_noise": 0.9}


def test_detect_scores_a_messy_folder_and_lists_the_bad_files(tmp_path, advsal, model, detector, images):
    from PIL import Image

    guard_dir = tmp_path / "guard"
    Guard(model, detector).save(guard_dir)
    save_model(model, guard_dir / CLASSIFIER_FILE)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8)).save(folder / f"digit{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not an image")
    res = advsal("detect", "--guard", guard_dir, "--images", folder, "--out", tmp_path / "r.csv", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["input"] for r in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    assert "skipped broken.png" in res.stdout and "skipped notes.txt: not an image" in res.stdout
    assert "scored 3 inputs" in res.stdout and "2 skipped" in res.stdout
    x = torch.from_numpy(np.stack([np.asarray(Image.open(folder / r["input"]), dtype=np.uint8)[None]
                                   for r in rows])).float() / 255
    assert [float(r["score"]) for r in rows] == detector.score(x).tolist()


TINY_RUN = {"name": "tiny", "data": {"name": "mnist5k", "train_limit": 200, "test_limit": 40},
            "classifier": {"epochs": 1, "lr": 0.003}, "n_train": 16, "n_test": 12, "search_images": 8,
            "attacks": {"fgsm": {}}, "attack_limits": {}, "detector": {"epochs": 1, "batch_size": 32},
            "baselines": ["image"], "baseline_attacks": ["fgsm"],
            "generalisation": {"attacks": ["fgsm"], "eps_factors": [1.0], "n_train": 8, "n_test": 8},
            "second_round": {"attack": "fgsm", "n_images": 2, "steps": 1, "sigmas": [0.5]}, "layer_images": 4}


def optional_sections(config_cls) -> dict:
    """Switch off the study's optional, costly sections where this version has them (not needed here)."""
    from dataclasses import fields

    if "security" not in {f.name for f in fields(config_cls)}:
        return {}
    return {"security": {"enabled": False, "attack": "fgsm"}}


def test_export_from_a_run_then_detect_in_a_fresh_process(tmp_path, advsal, device):
    from safetensors.torch import load_file

    from advsal.studies.config import from_mapping
    from advsal.studies.detection import Config, run

    run_dir = tmp_path / "runs" / "tiny"
    run(from_mapping(Config, {**TINY_RUN, **optional_sections(Config), "device": device}), run_dir)
    res = advsal("export", run_dir, "--detector", "nope-fgsm", "--out", tmp_path / "guard")
    assert res.returncode == 2 and "available: image+saliency-fgsm" in res.stderr and "image-fgsm" in res.stderr
    res = advsal("export", run_dir, "--detector", "image+saliency-fgsm", "--out", tmp_path / "guard")
    assert res.returncode == 0, res.stderr
    res = advsal("export", run_dir, "--detector", "image+saliency-fgsm", "--out", tmp_path / "guard")
    assert res.returncode == 2 and "already holds a guard" in res.stderr  # its calibration would be lost
    save_model(build_model("mnist-net", seed=5), tmp_path / "other")
    res = advsal("export", run_dir, "--detector", "image+saliency-fgsm", "--out", tmp_path / "g2", "--model",
                 tmp_path / "other.safetensors")
    assert res.returncode == 2 and "trained for classifier" in res.stderr and not (tmp_path / "g2").exists()
    stages = run_dir / "stages"
    x_adv = load_file(str(next(stages.glob("adv-fgsm-test-*")) / "tensors.safetensors"))["x_adv"]
    stored = load_file(str(next(stages.glob("detector-fgsm-????????????????")) / "tensors.safetensors"))
    np.savez(tmp_path / "adv.npz", x=x_adv.numpy())
    script = "import sys; from advsal.cli import main; sys.argv[0] = 'advsal'; main()"
    proc = subprocess.run([sys.executable, "-c", script, "detect", "--guard", str(tmp_path / "guard"), "--images",
                           str(tmp_path / "adv.npz"), "--out", str(tmp_path / "r.json"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["score"] for r in rows] == stored["scores_adv"].tolist()


def test_art_wrapper_follows_arts_detector_convention(model, detector, images):
    pytest.importorskip("art")
    from art.defences.detector.evasion import EvasionDetector

    from advsal.adapters import art_detector

    x = torch.cat([images[600:608], noisy(images[600:608], 2)])
    det = art_detector(Guard(model, detector))
    assert isinstance(det, EvasionDetector) and det.get_params() == {"channels_first": True}
    report, is_adversarial = det.detect(x.numpy(), batch_size=4)
    assert isinstance(is_adversarial, np.ndarray) and is_adversarial.dtype == bool and is_adversarial.shape == (16,)
    assert report["predictions"].shape == (16, 2)
    np.testing.assert_allclose(report["predictions"][:, 1], detector.score(x).numpy(), rtol=1e-6)
    assert (is_adversarial == (detector.score(x) > detector.threshold).numpy()).all()
    fresh = art_detector(SaliencyDetector(model))
    fresh.fit(x.numpy(), np.array([0] * 8 + [1] * 8), batch_size=8, nb_epochs=1)
    assert fresh.detector.is_fitted and len(fresh.detector.history_.epochs) == 1


def test_guarded_model_adds_a_rejection_class(model, detector, images):
    x = torch.cat([images[600:606], noisy(images[600:606], 3)])
    ranked = detector.score(x).sort().values
    detector.threshold = float(ranked[5] + ranked[6]) / 2  # half the inputs flagged, none on the boundary
    guarded = GuardedModel(model, detector)
    out = guarded(x)
    assert out.shape == (12, 11)
    assert torch.equal(out.argmax(1) == 10, detector.score(x) > detector.threshold)
    xr = x.clone().requires_grad_(True)
    guarded(xr)[:, 10].sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert {id(p) for p in guarded.parameters()} == {id(p) for p in model.parameters()}  # detector not owned


def test_guarded_model_refuses_a_classifier_the_detector_was_not_built_for(model, detector):
    with pytest.raises(ValueError, match="another classifier"):
        GuardedModel(build_model("mnist-net", seed=5).eval(), detector)


def test_edited_guard_files_are_refused(tmp_path, model, detector, images):
    guard = Guard(model, detector, fpr=0.05)
    guard.calibrate(images[:64])
    guard.save(tmp_path / "g")

    def edited(name, change):
        (tmp_path / "e").exists() and shutil.rmtree(tmp_path / "e")
        shutil.copytree(tmp_path / "g", tmp_path / "e")
        path = tmp_path / "e" / name
        path.write_bytes(change(path.read_bytes()))
        return tmp_path / "e"

    def sidecar(**fields):
        return lambda b: json.dumps({**json.loads(b), **fields}).encode()
    for name, change, message in [
        ("detector.json", sidecar(threshold=7), "differs from the calibrated"),  # would accept every input
        ("detector.json", sidecar(threshold="abc"), "malformed threshold"),
        ("detector.json", sidecar(kind=["x"]), "malformed kind"),
        ("detector.json", sidecar(calibration={"fpr_target": 0.05}), "malformed calibration"),
        ("guard.json", sidecar(fpr=0.5), "differs from the calibration"),
        ("guard.json", lambda b: b"[]", "not guard settings"),
        ("guard.json", lambda b: b"\xff\xfe", "corrupt"),
    ]:
        with pytest.raises(DetectorFileError, match=message):
            Guard.load(edited(name, change), model)
    assert not list(tmp_path.glob("g.*"))  # the save left no partial or old folder behind


def test_recalibration_and_nan_scores(tmp_path, model, detector, images):
    guard = Guard(model, detector, fpr=0.05)
    guard.calibrate(images[:64])
    guard.attach_robustness(tpr_bim=0.9)
    assert guard.calibrate(images[:64], fpr=0.5).robust == {}  # measured at the old threshold: dropped
    guard.detector.threshold = 0.99
    with pytest.raises(ValueError, match="changed to 0.99 after calibration"):  # said when saving, not loading
        guard.save(tmp_path / "stale")
    guard.calibrate(images[:64])
    guard.save(tmp_path / "g", classifier_meta={})
    guard.save(tmp_path / "g")  # a save without the classifier keeps the one already there
    assert (tmp_path / "g" / f"{CLASSIFIER_FILE}.safetensors").is_file()
    x = images[:2]
    guard.scores = lambda _: (torch.zeros(2, dtype=torch.long), torch.tensor([float("nan"), -1.0]))
    assert guard(x).flagged.tolist() == [True, False]  # a NaN score fails closed


def test_detect_refuses_inputs_it_cannot_score(tmp_path, advsal, model, detector, images):
    from PIL import Image

    guard_dir = tmp_path / "guard"
    Guard(model, detector).save(guard_dir, classifier_meta={})
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((images[0, 0].numpy() * 255).round().astype(np.uint8)).save(folder / "ok.png")
    Image.fromarray((images[1, 0].numpy() * 65535).round().astype(np.uint16)).save(folder / "deep.png")
    res = advsal("detect", "--guard", guard_dir, "--images", folder)
    assert res.returncode == 0 and "skipped deep.png: I;16" in res.stdout and "scored 1 inputs" in res.stdout
    assert "uncalibrated" in res.stdout
    (folder / "ok.png").unlink()
    res = advsal("detect", "--guard", guard_dir, "--images", folder)
    assert res.returncode == 2 and "no readable images" in res.stderr
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    res = advsal("detect", "--guard", guard_dir, "--images", tmp_path / "bad.npz")
    assert res.returncode == 2 and "not a readable .npz" in res.stderr
    (tmp_path / "r.csv").mkdir()
    res = advsal("detect", "--guard", guard_dir, "--images", folder, "--out", tmp_path / "r.csv")
    assert res.returncode == 2 and "is a folder" in res.stderr  # said before scoring, not after
    (guard_dir / f"{CLASSIFIER_FILE}.safetensors").unlink()
    res = advsal("detect", "--guard", guard_dir, "--images", folder)
    assert res.returncode == 2 and "pass the model" in res.stderr


def test_guarded_model_runs_under_torchattacks(model, detector, images):
    torchattacks = pytest.importorskip("torchattacks")
    x = images[600:604]
    y = model(x).argmax(1)
    adv = torchattacks.PGD(GuardedModel(model, detector), eps=0.1, alpha=0.05, steps=2)(x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(adv, x)
