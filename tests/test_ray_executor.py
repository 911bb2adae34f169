"""The Ray executor for the stage graph: a local Ray instance gives the local executor's numbers, and a stage that
fails on a worker is one clear error that leaves the store consistent."""

from __future__ import annotations

import json

import pytest
import torch

ray = pytest.importorskip("ray")

from conftest import numbers  # noqa: E402

from advsal.errors import StoreError  # noqa: E402
from advsal.executor import RayExecutor, init_ray  # noqa: E402
from advsal.store import RunStore  # noqa: E402
from advsal.studies import imbalance  # noqa: E402
from advsal.studies.config import from_mapping  # noqa: E402
from advsal.studies.engine import use_executor  # noqa: E402

TINY = {"data": {"name": "digits", "train_limit": 200, "test_limit": 60}, "seeds": [0], "classes": [3],
        "removal": 0.8, "val_fraction": 0.0,
        "classifier": {"architecture": "mnist-net", "epochs": 1, "batch_size": 64},
        "attacks": {"per_class": 2, "fgsm_eps": 0.1, "bim_eps": 0.1, "bim_steps": 2},
        "min_eps": {"per_class": 1, "probes": 2, "steps": 2}, "permutations": 99}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def ray_local():
    init_ray(num_cpus=2)
    return ray


def assert_ray_run_gives_the_local_numbers(run, cfg, tmp_path):
    """``run(cfg)`` locally and on the Ray executor: the same numbers and the same stages."""
    local = run(cfg, tmp_path / "local")
    with use_executor(RayExecutor()):
        remote = run(cfg, tmp_path / "ray")
    assert json.dumps(numbers(remote), sort_keys=True) == json.dumps(numbers(local), sort_keys=True)
    assert {t["stage"] for t in remote["timings"]} == {t["stage"] for t in local["timings"]}


def test_ray_run_gives_the_local_numbers(tmp_path, ray_local):
    assert_ray_run_gives_the_local_numbers(imbalance.run, from_mapping(imbalance.Config, {**TINY, "device": "cpu"}),
                                           tmp_path)
    assert not list((tmp_path / "ray" / "stages").glob("*.partial-*"))


def test_a_failing_stage_is_one_error_and_the_store_stays_consistent(tmp_path, ray_local):
    def boom():
        raise RuntimeError("out of memory on the worker")

    with RunStore(tmp_path / "run", executor=RayExecutor().start()) as store:
        good = store.stage("good", lambda: {"x": torch.arange(3)})
        bad = store.stage("bad", boom, inputs=[good])
        with pytest.raises(StoreError, match=r"stage 'bad' failed on a Ray worker \(RuntimeError: out of memory"):
            bad.payload  # noqa: B018
        assert torch.equal(good["x"], torch.arange(3))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "run" / "stages").iterdir()) == ["good"]
    with RunStore(tmp_path / "run") as store:  # resumes: the finished stage is served from the store
        assert store.stage("good", lambda: {"x": torch.zeros(3)}).cached


DETECTION_TINY = {
    "data": {"name": "mnist5k", "train_limit": 300, "test_limit": 60}, "classifier": {"epochs": 1, "lr": 0.003},
    "n_train": 16, "n_test": 12, "search_images": 12, "attacks": {"fgsm": {}, "bim": {"steps": 2}},
    "attack_limits": {}, "detector": {"epochs": 1, "batch_size": 32}, "baselines": ["image"],
    "baseline_attacks": ["bim"],
    "generalisation": {"attacks": ["fgsm"], "eps_factors": [1.0], "n_train": 8, "n_test": 8},
    "second_round": {"attack": "bim", "n_images": 2, "steps": 1, "sigmas": [0.5]}, "layer_images": 12,
    "security": {"enabled": False}}


def test_ray_runs_the_detection_study_with_the_local_numbers(tmp_path, ray_local):
    from advsal.studies import detection

    assert_ray_run_gives_the_local_numbers(
        detection.run, from_mapping(detection.Config, {**DETECTION_TINY, "device": "cpu"}), tmp_path)


def test_task_resources_come_from_the_config_and_the_command_line_overrides_them(tmp_path, monkeypatch, advsal):
    """`executor: {num_cpus, num_gpus}` in a study config sizes the Ray tasks; --num-cpus overrides it."""
    from advsal import executor as executor_module

    seen = []
    real = executor_module.RayExecutor

    class Recording(real):
        def __init__(self, address=None, **kw):
            seen.append(kw)
            super().__init__(address, **kw)

    monkeypatch.setattr(executor_module, "RayExecutor", Recording)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "device": "cpu", "executor": {"num_cpus": 0.5}}))
    assert advsal("run", "imbalance", "--config", config, "--runs", tmp_path, "--name", "a", "--executor", "ray",
                  "-q").returncode == 0
    assert advsal("run", "imbalance", "--config", config, "--runs", tmp_path, "--name", "a", "--executor", "ray",
                  "--num-cpus", "1", "-q").returncode == 0
    assert seen == [{"num_cpus": 0.5, "num_gpus": None}, {"num_cpus": 1.0, "num_gpus": None}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**TINY, "executor": {"num_cpus": 0}}))
    r = advsal("run", "imbalance", "--config", bad, "--executor", "ray")
    assert r.returncode == 2 and "executor.num_cpus must be > 0" in r.stderr
