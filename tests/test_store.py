"""The run store: derived stage keys, verified loading, atomic stages, run locks and run names."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from advsal.errors import RunBusyError, StoreError
from advsal.store import RunStore, Source, atomic_write_text, fingerprint, run_directory


def _counting(calls, value=1.0):
    def compute():
        calls.append(1)
        return {"x": torch.arange(5.0) * value, "acc": 0.5, "names": ["a"]}
    return compute


def test_reuse_and_recompute(tmp_path):
    calls: list[int] = []
    with RunStore(tmp_path / "run") as store:
        a = store.stage("train", _counting(calls), params={"lr": 1e-3})
        b = store.stage("train", _counting(calls), params={"lr": 1e-3})
        assert len(calls) == 1 and torch.equal(a["x"], b["x"]) and b["acc"] == 0.5 and b["names"] == ["a"]
        assert a.key == b.key and not a.cached and b.cached
        store.stage("train", _counting(calls), params={"lr": 1e-4})
        assert len(calls) == 2
        assert [r.status for r in store.records] == ["computed", "cached", "computed"]
    with RunStore(tmp_path / "run") as again:  # a re-run in a new process object reuses
        again.stage("train", _counting(calls), params={"lr": 1e-3})
    assert len(calls) == 2


def test_keys_follow_inputs_not_hand_picked_fields(tmp_path):
    with RunStore(tmp_path / "run") as store:
        eps = store.stage("eps", lambda: {"eps": 0.1}, params={"max_accuracy": 0.3})
        adv = store.stage("adv", lambda: {"x": torch.ones(2)}, params={"steps": 10}, inputs=[eps])
        det = store.stage("det", lambda: {"w": torch.ones(1)}, inputs=[adv])
        eps2 = store.stage("eps", lambda: {"eps": 0.2}, params={"max_accuracy": 0.2})
        adv2 = store.stage("adv", lambda: {"x": torch.ones(2)}, params={"steps": 10}, inputs=[eps2])
        det2 = store.stage("det", lambda: {"w": torch.ones(1)}, inputs=[adv2])
        assert len({eps.key, eps2.key}) == 2 and adv.key != adv2.key and det.key != det2.key
        # same params, other version → other key; parameter order is irrelevant
        v2 = store.stage("eps", lambda: {"eps": 0.1}, params={"max_accuracy": 0.3}, version=2)
        assert v2.key != eps.key
        same = store.stage("adv", lambda: {"x": torch.zeros(2)}, params={"steps": 10}, inputs=[eps])
        assert same.cached and torch.equal(same["x"], torch.ones(2))


def test_fingerprint_is_content_not_identity():
    a = torch.arange(6.0).reshape(2, 3)
    assert fingerprint(a) == fingerprint(a.clone()) != fingerprint(a + 1e-6)
    assert fingerprint(a) != fingerprint(a.double())  # dtype is content
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})
    net1, net2 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    net2.load_state_dict(net1.state_dict())
    assert fingerprint(net1) == fingerprint(net2)
    with torch.no_grad():
        net2.bias += 1
    assert fingerprint(net1) != fingerprint(net2)
    assert Source.of("d", a).key == fingerprint(a)
    # 0-dim tensors (BatchNorm's num_batches_tracked), bool and half tensors are content too
    assert fingerprint(torch.tensor(5)) != fingerprint(torch.tensor(6))
    assert fingerprint(torch.tensor([True, False])) != fingerprint(torch.tensor([False, True]))
    assert fingerprint(torch.ones(2, dtype=torch.float16)) != fingerprint(torch.ones(2))
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert len(fingerprint(bn)) == 16


@pytest.mark.parametrize("damage", ["truncate", "garble-json", "json-list", "tamper-tensor", "drop-manifest",
                                    "extra-file"])
def test_damaged_stage_is_reported_and_recomputed(tmp_path, damage):
    calls: list[int] = []
    with RunStore(tmp_path / "run") as store:
        first = store.stage("s", _counting(calls), params={"a": 1})
    d = first.directory
    tensors, data = d / "tensors.safetensors", d / "data.json"
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:20])
    elif damage == "garble-json":
        data.write_text("{not json")
    elif damage == "json-list":
        data.write_text("[1, 2]")
    elif damage == "tamper-tensor":  # same size, in-range values: only the checksum can tell
        raw = bytearray(tensors.read_bytes())
        raw[-4:] = bytes(raw[-8:-4])
        tensors.write_bytes(bytes(raw))
    elif damage == "drop-manifest":
        (d / "manifest.json").unlink()
    else:
        (d / "stray.bin").write_bytes(b"x")
    lines = []
    with RunStore(tmp_path / "run", on_stage=lambda r: lines.append(r)) as store:
        again = store.stage("s", _counting(calls), params={"a": 1})
    assert len(calls) == 2 and not again.cached and torch.equal(again["x"], torch.arange(5.0))
    assert lines[0].status == "recomputed" and lines[0].reason
    with RunStore(tmp_path / "run") as store:  # the recomputed copy verifies
        assert store.stage("s", _counting(calls), params={"a": 1}).cached


def test_killed_stage_leaves_nothing_and_reruns(tmp_path):
    def boom():
        raise KeyboardInterrupt

    with RunStore(tmp_path / "run") as store:
        with pytest.raises(KeyboardInterrupt):
            store.stage("s", boom, params={"a": 1})
        assert not list((tmp_path / "run" / "stages").iterdir())
        assert store.stage("s", lambda: {"v": 3}, params={"a": 1})["v"] == 3


def test_stale_partial_dirs_of_dead_runs_are_cleaned(tmp_path):
    (tmp_path / "run" / "stages" / "s-abc.partial-999").mkdir(parents=True)
    with RunStore(tmp_path / "run"):
        assert not list((tmp_path / "run" / "stages").iterdir())


def test_second_run_with_the_same_name_refuses_and_leaves_the_first_intact(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from advsal.store import RunStore
        store = RunStore({str(tmp_path / 'run')!r})
        (store.root / "stages" / "s-key.partial-{{}}".format(__import__('os').getpid())).mkdir()
        print("ready", flush=True)
        sys.stdin.readline()
        store.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(RunBusyError, match=f"process {proc.pid}"):
            RunStore(tmp_path / "run")
        assert len(list((tmp_path / "run" / "stages").glob("*.partial-*"))) == 1  # the holder's work survives
    finally:
        proc.communicate("\n", timeout=30)
    with RunStore(tmp_path / "run"):  # released: usable again
        pass


@pytest.mark.parametrize("name", ["..", ".", "../x", "/abs", "a/b", ".hidden", "", "a\\b", "x" * 200])
def test_run_names_cannot_escape(tmp_path, name):
    with pytest.raises(StoreError, match="invalid run name"):
        run_directory(tmp_path, name)


def test_run_name_ok_and_run_dir_must_be_a_directory(tmp_path):
    assert run_directory(tmp_path, "demo-2.v1_x") == tmp_path / "demo-2.v1_x"
    (tmp_path / "afile").write_text("")
    with pytest.raises(StoreError, match="not a directory"):
        RunStore(tmp_path / "afile")


def test_atomic_write_replaces_and_respects_umask(tmp_path):
    p = tmp_path / "f.txt"
    old = os.umask(0o022)
    try:
        atomic_write_text(p, "one")
        atomic_write_text(p, "two")
    finally:
        os.umask(old)
    assert p.read_text() == "two" and [q.name for q in tmp_path.iterdir()] == ["f.txt"]
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_manifest_records_inputs_and_checksums(tmp_path):
    with RunStore(tmp_path / "run") as store:
        src = Source.of("data", torch.ones(3))
        st = store.stage("s", lambda: {"x": torch.ones(1), "v": 1}, params={"p": 2}, inputs=[src])
    manifest = json.loads((st.directory / "manifest.json").read_text())
    assert manifest["inputs"] == {"data": src.key} and manifest["params"] == {"p": 2}
    assert set(manifest["files"]) == {"tensors.safetensors", "data.json"}
