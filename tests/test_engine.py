"""The study engine: typed configs, presets, devices, user models, and opening a study on the user's data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advsal.data import ImageSet
from advsal.errors import ConfigError, DeviceError, ModelSpecError
from advsal.studies import STUDIES, get_study, study_config
from advsal.studies.config import from_mapping, load_config, presets, require
from advsal.studies.engine import (
    DataConfig,
    ModelConfig,
    build_classifier,
    check_classifier,
    check_device,
    load_factory,
    open_study,
)
from advsal.tensors import resolve_device


@dataclass
class Inner:
    steps: int = 10
    sigmas: list[float] = field(default_factory=lambda: [0.5])

    def validate(self) -> None:
        require(self.steps >= 1, "steps", f"must be ≥ 1, got {self.steps}")


@dataclass
class Toy:
    name: str = "toy"
    rate: float = 0.5
    flag: bool = False
    limit: int | None = None
    mode: Literal["a", "b"] = "a"
    extra: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    device: str = "auto"

    def validate(self) -> None:
        require(0 < self.rate <= 1, "rate", f"must be in (0, 1], got {self.rate}")
        check_device(self.device)


def test_merge_checks_types_ranges_and_names():
    cfg = from_mapping(Toy, {"rate": 1, "inner": {"steps": 3}, "limit": None, "mode": "b"})
    assert cfg.rate == 1 and cfg.inner.steps == 3 and cfg.inner.sigmas == [0.5] and cfg.mode == "b"
    cases = [({"rate": "abc"}, "config.rate must be a finite number"),
             ({"rate": 2.0}, "config.rate must be in"),
             ({"flag": 1}, "config.flag must be true or false"),
             ({"limit": 2.5}, "config.limit must be int or null"),
             ({"mode": "c"}, "config.mode must be one of 'a', 'b'"),
             ({"inner": {"steps": 0}}, "config.inner.steps must be ≥ 1"),
             ({"inner": {"sigmas": ["x"]}}, r"config.inner.sigmas\[0\] must be a finite number"),
             ({"inner": 5}, "config.inner: expected a mapping"),
             ({"nope": 1}, "unknown option"),
             ({"device": "gpu"}, "config.device must be auto, cpu, cuda, cuda:N or mps"),
             ({"rate": float("inf")}, "config.rate must be a finite number")]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=message):
            from_mapping(Toy, raw)


values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=3),
                   st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                             max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "rate", "flag", "limit", "mode", "extra", "inner", "device",
                                        "bogus"]), values, max_size=4))
def test_any_mapping_gives_a_valid_config_or_a_config_error(raw):
    try:
        cfg = from_mapping(Toy, raw)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(cfg.rate, (int, float)) and 0 < cfg.rate <= 1 and isinstance(cfg.flag, bool)
    assert cfg.limit is None or (isinstance(cfg.limit, int) and not isinstance(cfg.limit, bool))
    assert cfg.mode in ("a", "b") and isinstance(cfg.inner, Inner)


def test_every_study_has_presets_that_validate():
    for name in STUDIES:
        names = presets(name)
        assert names, name
        for preset in names:
            cfg = study_config(name, preset=preset)
            assert isinstance(cfg, get_study(name).Config)
    assert study_config("detection", preset="mnist5k") == study_config("detection")  # the default preset


def test_config_files_and_errors(tmp_path):
    with pytest.raises(ConfigError, match="no preset 'nope'"):
        load_config(Toy, "detection", preset="nope")
    with pytest.raises(ConfigError, match="not found"):
        load_config(Toy, "detection", path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rate: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Toy, "toy", path=bad)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Toy, "toy", path=bad)
    good = tmp_path / "good.yaml"
    good.write_text("rate: 0.25\ninner: {steps: 4}\n")
    cfg = load_config(Toy, "toy", path=good, overrides={"device": "cpu"})
    assert (cfg.rate, cfg.inner.steps, cfg.device) == (0.25, 4, "cpu")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else resolve_device("auto").type)
    if not torch.cuda.is_available():
        assert resolve_device("auto") in (torch.device("cpu"), torch.device("mps"))
        with pytest.raises(DeviceError, match="not available here"):
            resolve_device("cuda:0")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu:x")


MODEL_FILE = '''
import torch
from torch import nn

def tiny(num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 8 * 8, num_classes))

def wrong_output():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

def not_a_module():
    return 42

def broken():
    raise RuntimeError("no GPU here")
'''


@pytest.fixture
def tiny_data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=g)
    y = torch.arange(40) % 4
    x[torch.arange(40), 0, y, y] = 1.0  # a learnable cue
    classes = ["a", "b", "c", "d"]
    return ImageSet(x[:32], y[:32], classes, "toy-train"), ImageSet(x[32:], y[32:], classes, "toy-test")


def test_user_model_factories(tmp_path, tiny_data):
    path = tmp_path / "models.py"
    path.write_text(MODEL_FILE)
    train, test = tiny_data
    model = build_classifier(ModelConfig(architecture=f"{path}:tiny"), train)
    assert model(train.x[:2]).shape == (2, 4)  # the factory got num_classes and in_channels
    check_classifier(model, test)
    errors = [("nocolon", "expected package.module:function"), (f"{tmp_path}/none.py:tiny", "not found"),
              (f"{path}:missing", "has no function 'missing'"), ("no_such_pkg_xyz:f", "module 'no_such_pkg_xyz'"),
              (f"{path}:not_a_module", "not a torch.nn.Module"), (f"{path}:broken", "the factory failed")]
    for spec, message in errors:
        with pytest.raises(ModelSpecError, match=message):
            build_classifier(ModelConfig(architecture=spec), train)
    with pytest.raises(ModelSpecError, match=r"to \(N, 4\) logits"):
        check_classifier(build_classifier(ModelConfig(architecture=f"{path}:wrong_output"), train), test)
    assert callable(load_factory("advsal.models:build_model"))


@dataclass
class MiniConfig:
    name: str = "mini"
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ModelConfig = field(default_factory=lambda: ModelConfig(epochs=1, batch_size=16))
    seed: int = 0
    device: str = "auto"


def test_open_study_trains_once_and_keys_by_data_content(tmp_path, tiny_data):
    path = tmp_path / "models.py"
    path.write_text(MODEL_FILE)
    cfg = MiniConfig(classifier=ModelConfig(architecture=f"{path}:tiny", epochs=1, batch_size=16))
    ctx = open_study("mini", cfg, tmp_path / "run", data=tiny_data)
    ctx.store.close()
    assert [r.status for r in ctx.store.records] == ["computed"]
    assert ctx.results["provenance"]["torch"] == torch.__version__ and ctx.results["provenance"]["config_hash"]
    again = open_study("mini", cfg, tmp_path / "run", data=tiny_data)
    again.store.close()
    assert [r.status for r in again.store.records] == ["cached"] and again.classifier.key == ctx.classifier.key
    for p, q in zip(ctx.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)
    train, test = tiny_data
    changed = ImageSet(train.x.flip(3), train.y, train.classes, train.name)  # same path/name, other pixels
    other = open_study("mini", cfg, tmp_path / "run", data=(changed, test))
    other.store.close()
    assert [r.status for r in other.store.records] == ["computed"]
    given = open_study("mini", cfg, tmp_path / "run2", data=tiny_data, model=ctx.model)
    given.store.close()
    assert given.store.records == [] and given.results["classifier"]["given"]
