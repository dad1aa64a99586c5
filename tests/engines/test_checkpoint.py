"""CheckpointManager: atomic writes that survive a failing or killed writer, keep-last-K and best, safe RNG states."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medvol.engines import checkpoint as checkpoint_module
from medvol.engines.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state

REPO_ROOT = Path(__file__).resolve().parents[2]


def _state(value: float) -> dict:
    return {"networks": {"g": {"weight": torch.full((4, 4), value)}}, "note": "ok", "numbers": [1, 2.5, None]}


def test_save_points_latest_at_the_newest_and_keeps_last_k_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    metrics = [5.0, 1.0, 3.0, 4.0, 6.0]
    for iteration, metric in enumerate(metrics, start=1):
        manager.save(_state(iteration), iteration=iteration * 10, metric=metric)
    names = [p.name for p in manager.checkpoint_files()]
    assert names == ["checkpoint_00000020.pt", "checkpoint_00000040.pt", "checkpoint_00000050.pt"]
    pointer = manager.read_pointer()
    assert pointer["file"] == "checkpoint_00000050.pt" and pointer["iteration"] == 50
    assert pointer["best"] == {"file": "checkpoint_00000020.pt", "iteration": 20, "metric": 1.0}
    assert manager.best_path().name == "checkpoint_00000020.pt"
    loaded = manager.load_latest()
    assert loaded["iteration"] == 50 and torch.equal(loaded["networks"]["g"]["weight"], torch.full((4, 4), 5.0))
    assert loaded["numbers"] == [1, 2.5, None]


def test_a_writer_failing_midway_leaves_the_previous_latest_intact(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save(_state(1.0), iteration=1)

    def torch_save_that_dies_halfway(obj, stream):
        stream.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", torch_save_that_dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        manager.save(_state(2.0), iteration=2)
    monkeypatch.undo()

    assert manager.read_pointer()["file"] == "checkpoint_00000001.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_00000001.pt", "latest.json"]
    resumed = CheckpointManager(tmp_path).load_latest()
    assert resumed["iteration"] == 1 and torch.equal(resumed["networks"]["g"]["weight"], torch.full((4, 4), 1.0))


SLOW_WRITER = """
import sys, time
import torch
from medvol.engines import checkpoint as module
from medvol.engines.checkpoint import CheckpointManager

manager = CheckpointManager(sys.argv[1])
manager.save({"weight": torch.ones(8)}, iteration=1)
real_save = torch.save

def slow_save(obj, stream):
    print("WRITING", flush=True)
    for _ in range(200):  # a slow disk: the parent kills us in the middle
        stream.write(b"x" * 4096)
        stream.flush()
        time.sleep(0.05)
    real_save(obj, stream)

module.torch.save = slow_save
manager.save({"weight": torch.full((8,), 2.0)}, iteration=2)
print("FINISHED", flush=True)
"""


@pytest.mark.slow
def test_a_process_killed_while_writing_never_leaves_a_corrupt_latest(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    with process.stdout:
        assert process.stdout.readline().strip() == "WRITING"
        deadline = time.time() + 30
        while not any(p.name.startswith(".tmp-") and p.stat().st_size > 8192 for p in tmp_path.iterdir()):
            assert time.time() < deadline, "the writer never started writing"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()), "the half-written file should be left behind"

    manager = CheckpointManager(tmp_path)  # a new run: removes the debris, resumes from the previous good file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_00000001.pt", "latest.json"]
    state = manager.load_latest()
    assert state["iteration"] == 1 and torch.equal(state["weight"], torch.ones(8))


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # a cached Gaussian in numpy's state
    manager = CheckpointManager(tmp_path)
    manager.save({"rng": capture_rng_state()}, iteration=1)
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(manager.load_latest()["rng"])  # loaded with weights_only=True
    actual = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], actual[0]) and np.array_equal(expected[1], actual[1])
    assert expected[2:] == actual[2:]


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "checkpoint_00000001.pt"
    torch.save({"object": Path("/etc")}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported"):
        CheckpointManager.load(path)


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        CheckpointManager(tmp_path, keep_last=0)


def test_a_reader_leaves_the_temporary_file_of_a_running_writer_alone(tmp_path):
    CheckpointManager(tmp_path).save({"weight": torch.ones(2)}, iteration=1)
    in_progress = tmp_path / ".tmp-12345-checkpoint_00000002.pt"
    in_progress.write_bytes(b"half written")
    assert CheckpointManager(tmp_path, remove_leftovers=False).latest_path().name == "checkpoint_00000001.pt"
    assert in_progress.is_file()
    CheckpointManager(tmp_path)  # a trainer starting on the folder cleans it up
    assert not in_progress.exists()
