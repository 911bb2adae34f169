"""The run store reuses finished stages, recomputes changed ones, and survives a killed stage."""

from __future__ import annotations

import pytest
import torch

from advsal.store import RunStore, atomic_write_text, config_hash


def test_reuse_and_recompute(tmp_path):
    store = RunStore(tmp_path / "run")
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(5.0), "acc": 0.5, "names": ["a"]}

    a = store.cached("train", {"lr": 1e-3}, compute)
    b = store.cached("train", {"lr": 1e-3}, compute)
    assert len(calls) == 1 and torch.equal(a["x"], b["x"]) and b["acc"] == 0.5 and b["names"] == ["a"]
    store.cached("train", {"lr": 1e-4}, compute)
    assert len(calls) == 2
    assert [r.cached for r in store.records] == [False, True, False]
    # a fresh store object on the same directory (a re-run) also reuses
    assert RunStore(tmp_path / "run").is_done("train", {"lr": 1e-3})


def test_killed_stage_leaves_nothing_and_reruns(tmp_path):
    store = RunStore(tmp_path / "run")

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.cached("s", {"a": 1}, boom)
    assert not store.is_done("s", {"a": 1})
    assert not list((tmp_path / "run" / "stages").iterdir())
    out = store.cached("s", {"a": 1}, lambda: {"v": 3})
    assert out["v"] == 3


def test_stale_partial_dirs_are_cleaned(tmp_path):
    (tmp_path / "run" / "stages" / "s-abc.partial-999").mkdir(parents=True)
    RunStore(tmp_path / "run")
    assert not list((tmp_path / "run" / "stages").iterdir())


def test_hash_depends_on_name_and_config():
    assert config_hash("a", {"x": 1}) != config_hash("b", {"x": 1})
    assert config_hash("a", {"x": 1, "y": 2}) == config_hash("a", {"y": 2, "x": 1})


def test_atomic_write_replaces(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two" and [q.name for q in tmp_path.iterdir()] == ["f.txt"]
