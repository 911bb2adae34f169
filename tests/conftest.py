"""Shared fixtures: the bundled data and one small trained MNIST classifier per test session.

``ADVSAL_TEST_DEVICE=cuda make test`` runs the suite's models (and the studies' tiny configs) on a GPU; the
default is the CPU.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch

from advsal.cli import main
from advsal.data import load_dataset
from advsal.models import build_model
from advsal.progress import set_quiet
from advsal.tensors import resolve_device
from advsal.training import train_classifier

set_quiet(True)
#: The device tests run their models on (a string, as study configs take it).
TEST_DEVICE = str(resolve_device(os.environ.get("ADVSAL_TEST_DEVICE", "cpu")))


def tiny_study_config(config_class, tiny: dict, device: str, **changes):
    """A study config from a test's ``tiny`` mapping on ``device``, with ``changes`` applied on top."""
    from advsal.studies.config import from_mapping

    cfg = from_mapping(config_class, {**tiny, "device": device})
    return from_mapping(config_class, changes, base=cfg) if changes else cfg


def numbers(results):
    """results.json without what legitimately differs between runs of the same numbers: timings (wall times,
    images per second), the provenance (dates, device) and the config."""
    if isinstance(results, dict):
        return {k: numbers(v) for k, v in results.items()
                if k not in ("timings", "provenance", "config") and "seconds" not in k and "per_second" not in k}
    return [numbers(v) for v in results] if isinstance(results, list) else results


@pytest.fixture(scope="session")
def device() -> str:
    return TEST_DEVICE


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    they gain nothing from intra-op threads, a loaded machine only spins the second one, and a Ray worker computes
    with one thread, so runs compared with a worker's must too. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist5k():
    """(train, test) of the bundled 5,000-digit MNIST subset."""
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def mnist_model(mnist5k):
    """mnist-net (seed 001 Table I) trained 3 epochs on mnist5k train: about 97% test accuracy, in eval mode."""
    train, _ = mnist5k
    model = build_model("mnist-net", seed=0).to(TEST_DEVICE)
    train_classifier(model, train, epochs=3, batch_size=64, seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def mnist_batch(mnist5k, mnist_model):
    """200 correctly classified test images (x, y) for attack and saliency tests."""
    _, test = mnist5k
    x, y = test.x[:300], test.y[:300]
    with torch.no_grad():
        ok = mnist_model(x.to(TEST_DEVICE)).argmax(1).cpu() == y
    return x[ok][:200].clone(), y[ok][:200].clone()


@pytest.fixture
def advsal(capsys, monkeypatch):
    """Run the CLI in-process; returns (returncode, stdout, stderr)."""

    def call(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["advsal", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call
