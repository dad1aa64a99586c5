"""Resume under DistributedDataParallel is exact: `torchrun --nproc_per_node 2` (gloo, CPU) trainings of wgan_gp and
dcgan (batch norm) killed with SIGKILL after a checkpoint and resumed end with bitwise the generator weights of an
uninterrupted 2-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from medvol.bundles import BUNDLES_DIR, torchrun_command
from tests.bundles.test_bundles import prepare_phantoms, tiny_overrides

ITERATIONS, CHECKPOINT_EVERY = 24, 4


@pytest.fixture(scope="module")
def prepared_2d(tmp_path_factory) -> Path:
    return prepare_phantoms(tmp_path_factory.mktemp("prepared") / "data2d", 2)


def _start(family: str, data: Path, run_dir: Path) -> subprocess.Popen:
    overrides = tiny_overrides(family, 2, data, run_dir)
    overrides.pop("device")  # the multi-GPU config picks the device: the CPU with gloo here
    overrides.update(iterations=ITERATIONS, checkpoint_every=CHECKPOINT_EVERY, sample_every=0, batch_size=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    log = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - the child keeps its own descriptor
    with log:
        return subprocess.Popen(
            torchrun_command(2, family, overrides), cwd=BUNDLES_DIR.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches torchrun and both ranks
        )


def _latest_iteration(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _final_generator(run_dir: Path) -> dict[str, torch.Tensor]:
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert pointer["iteration"] == ITERATIONS
    state = torch.load(run_dir / "checkpoints" / pointer["file"], weights_only=True)
    return {**state["networks"]["generator"], **{f"ema.{k}": v for k, v in state["extra"]["ema_generator"].items()}}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["wgan_gp", "dcgan"])
def test_two_process_run_killed_after_a_checkpoint_resumes_bitwise(family, prepared_2d, tmp_path):
    reference = _start(family, prepared_2d, tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]

    victim = _start(family, prepared_2d, tmp_path / "victim")
    deadline = time.monotonic() + 600
    while _latest_iteration(tmp_path / "victim") < CHECKPOINT_EVERY and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    killed_at = _latest_iteration(tmp_path / "victim")
    assert victim.returncode == -signal.SIGKILL and CHECKPOINT_EVERY <= killed_at < ITERATIONS, (victim.returncode, killed_at)

    resumed = _start(family, prepared_2d, tmp_path / "victim")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "victim.log").read_text()[-3000:]
    expected, actual = _final_generator(tmp_path / "reference"), _final_generator(tmp_path / "victim")
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, f"killed at iteration {killed_at}; differing tensors: {different}"
