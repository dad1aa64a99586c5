"""Resume under DistributedDataParallel is exact: `torchrun --nproc_per_node 2` (gloo, CPU) trainings of wgan_gp and
dcgan (batch norm) killed with SIGKILL after a checkpoint and resumed end with bitwise the generator weights of an
uninterrupted 2-process run. Inside those runs a probe handler (`tests/bundles/rank_probe.py`, attached by a config
override) records on each rank the latents of every iteration and the final weights: the ranks draw different
latents, end with identical weights, and a resumed rank draws what it drew in the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medvol.bundles import BUNDLES_DIR, torchrun_command
from tests.bundles.test_bundles import prepare_phantoms, tiny_overrides

ITERATIONS, CHECKPOINT_EVERY = 24, 4


@pytest.fixture(scope="module")
def prepared_2d(tmp_path_factory) -> Path:
    return prepare_phantoms(tmp_path_factory.mktemp("prepared") / "data2d", 2)


def _probe_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + "_probe")


def _probe_overrides(family: str, run_dir: Path) -> dict:
    """`tests.bundles.rank_probe.RankProbe` in front of the trainer's handlers on every rank (the bundle's own
    expression, which gives handlers to rank 0 alone, is kept as it is)."""
    config = ConfigParser.load_config_file(str(BUNDLES_DIR / family / "configs" / "train.yaml"))
    handlers = config["train"]["trainer_options"]["train_handlers"]
    assert handlers.startswith("$")
    return {
        "rank_probe": {"_target_": "tests.bundles.rank_probe.RankProbe", "out_dir": str(_probe_dir(run_dir))},
        "train#trainer_options#train_handlers": f"$[@rank_probe] + ({handlers[1:]})",
    }


def _probe_records(run_dir: Path) -> list[dict]:
    return [json.loads((_probe_dir(run_dir) / f"rank_{rank}.json").read_text()) for rank in (0, 1)]


def _start(family: str, data: Path, run_dir: Path) -> subprocess.Popen:
    overrides = tiny_overrides(family, 2, data, run_dir)
    overrides.pop("device")  # the multi-GPU config picks the device: the CPU with gloo here
    overrides.update(iterations=ITERATIONS, checkpoint_every=CHECKPOINT_EVERY, sample_every=0, batch_size=2)
    overrides.update(_probe_overrides(family, run_dir))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(BUNDLES_DIR.parent)}
    log = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - the child keeps its own descriptor
    with log:
        return subprocess.Popen(
            torchrun_command(2, family, overrides), cwd=BUNDLES_DIR.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: a Ctrl-C of pytest does not reach it
        )


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children first."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found += children
            stack += children
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _kill_run(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers, as a crash of the machine or of the job would. torchrun starts each worker
    in a session of its own, so killing torchrun's process group alone leaves the workers training on."""
    workers = _descendants(process.pid)
    assert workers, "torchrun has no worker processes"
    for pid in [*workers, process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers still alive a minute after SIGKILL"
        time.sleep(0.05)


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
    ranks = _probe_records(tmp_path / "reference")
    iterations = [str(i) for i in range(1, ITERATIONS + 1)]
    assert [list(rank["latents"]) for rank in ranks] == [iterations, iterations]
    same = [i for i in iterations if ranks[0]["latents"][i] == ranks[1]["latents"][i]]
    assert not same, f"ranks 0 and 1 drew the same latents in iterations {same}"
    assert ranks[0]["generator"] == ranks[1]["generator"] and ranks[0]["ema_generator"] == ranks[1]["ema_generator"]

    victim = _start(family, prepared_2d, tmp_path / "victim")
    deadline = time.monotonic() + 600
    while _latest_iteration(tmp_path / "victim") < CHECKPOINT_EVERY and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.02)
    _kill_run(victim)
    killed_at = _latest_iteration(tmp_path / "victim")
    assert victim.returncode == -signal.SIGKILL and CHECKPOINT_EVERY <= killed_at < ITERATIONS, (victim.returncode, killed_at)

    resumed = _start(family, prepared_2d, tmp_path / "victim")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "victim.log").read_text()[-3000:]
    expected, actual = _final_generator(tmp_path / "reference"), _final_generator(tmp_path / "victim")
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, f"killed at iteration {killed_at}; differing tensors: {different}"
    # the resumed process of each rank drew, from the checkpoint on, the latents of the uninterrupted run's same rank
    for resumed_rank, reference_rank in zip(_probe_records(tmp_path / "victim"), ranks):
        drawn = resumed_rank["latents"]
        assert list(drawn) == [str(i) for i in range(killed_at + 1, ITERATIONS + 1)]
        assert drawn == {i: reference_rank["latents"][i] for i in drawn}
        assert resumed_rank["generator"] == reference_rank["generator"]
