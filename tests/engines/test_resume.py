"""Crash and resume: a run killed with SIGKILL at a random iteration and resumed ends bitwise equal to an uninterrupted
run; a run stopped with SIGINT or SIGTERM checkpoints the iteration it was in, exits 130 / 143 and resumes bitwise
likewise; a forced NaN stops the run with NonFiniteLossError and leaves the last good checkpoint intact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medvol.engines import GenerativeAdversarialTrainer, CheckpointManager, NonFiniteLossError
from medvol.runs import RunRecord
from tests.engines.toys import ToyWassersteinGP, make_gan, make_loader

REPO_ROOT = Path(__file__).resolve().parents[2]
ITERATIONS, CHECKPOINT_EVERY = 10, 3


def _start_worker(run_dir: Path, log: Path, checkpoint_every: int = CHECKPOINT_EVERY) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "w") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tests.engines.resume_worker", str(run_dir), str(ITERATIONS), str(checkpoint_every)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for the process; returns (exit code, rest of its stdout)."""
    with process.stdout:
        out = process.stdout.read()
    return process.wait(), out


def _tensors(tree, prefix=""):
    """Flatten nested dicts/lists of a checkpoint into {path: tensor or value}."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _tensors(value, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in _tensors(value, f"{prefix}/{i}").items()}
    return {prefix: tree}


@pytest.mark.slow
def test_killed_run_resumes_to_bitwise_identical_weights(tmp_path):
    kill_at = random.Random().randint(CHECKPOINT_EVERY, ITERATIONS - 3)  # after the first checkpoint, well before the end
    reference = _start_worker(tmp_path / "reference", tmp_path / "reference.log")
    victim = _start_worker(tmp_path / "victim", tmp_path / "victim.log")
    for line in victim.stdout:
        if line.strip() == f"ITER {kill_at}":
            victim.send_signal(signal.SIGKILL)
            break
    victim_code, _ = _finish(victim)
    assert victim_code == -signal.SIGKILL, f"the victim was not killed ({victim.returncode}); kill_at={kill_at}"

    resumed = _start_worker(tmp_path / "victim", tmp_path / "resumed.log")
    resumed_code, resumed_out = _finish(resumed)
    reference_code, reference_out = _finish(reference)
    assert resumed_code == 0, (tmp_path / "resumed.log").read_text()[-2000:]
    assert reference_code == 0, (tmp_path / "reference.log").read_text()[-2000:]
    resumed_lines = resumed_out.split()
    assert "DONE" in reference_out and "DONE" in resumed_lines
    first_resumed = int(resumed_lines[1])
    # it resumed after the last complete checkpoint (ITER n is printed after iteration n's checkpoint is written)
    assert first_resumed > CHECKPOINT_EVERY and (first_resumed - 1) % CHECKPOINT_EVERY == 0, (kill_at, first_resumed)

    final_reference = CheckpointManager(tmp_path / "reference" / "checkpoints").load_latest()
    final_resumed = CheckpointManager(tmp_path / "victim" / "checkpoints").load_latest()
    assert final_reference["iteration"] == final_resumed["iteration"] == ITERATIONS
    for part in ("networks", "optimizers", "extra", "stream"):
        expected, actual = _tensors(final_reference[part]), _tensors(final_resumed[part])
        assert expected.keys() == actual.keys()
        for key in expected:
            if isinstance(expected[key], torch.Tensor):
                assert torch.equal(expected[key], actual[key]), f"{part}{key} differs (killed at {kill_at}, resumed at {first_resumed})"
            else:
                assert expected[key] == actual[key], f"{part}{key} differs"


def _assert_same_final_state(reference_dir: Path, resumed_dir: Path, context: str) -> None:
    final_reference = CheckpointManager(reference_dir / "checkpoints").load_latest()
    final_resumed = CheckpointManager(resumed_dir / "checkpoints").load_latest()
    assert final_reference["iteration"] == final_resumed["iteration"] == ITERATIONS
    for part in ("networks", "optimizers", "extra", "stream"):
        expected, actual = _tensors(final_reference[part]), _tensors(final_resumed[part])
        assert expected.keys() == actual.keys()
        for key in expected:
            if isinstance(expected[key], torch.Tensor):
                assert torch.equal(expected[key], actual[key]), f"{part}{key} differs ({context})"
            else:
                assert expected[key] == actual[key], f"{part}{key} differs ({context})"


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_run_checkpoints_its_last_iteration_and_resumes_bitwise(stop_signal, tmp_path):
    # no periodic checkpoints: whatever the victim has saved, it saved because of the signal
    reference = _start_worker(tmp_path / "reference", tmp_path / "reference.log", checkpoint_every=0)
    victim = _start_worker(tmp_path / "victim", tmp_path / "victim.log", checkpoint_every=0)
    for line in victim.stdout:
        if line.strip() == "ITER 3":
            victim.send_signal(stop_signal)
            break
    code, out = _finish(victim)
    assert code == 128 + stop_signal, (code, out, (tmp_path / "victim.log").read_text()[-2000:])
    words = out.split("INTERRUPTED", 1)[1].split()
    stopped_at, checkpoint = int(words[0]), Path(words[1])
    # the signal arrived during iteration 4 (or just after 3 completed): that iteration completes and is saved
    assert stopped_at in (3, 4) and "DONE" not in out
    manager = CheckpointManager(tmp_path / "victim" / "checkpoints")
    assert [p.name for p in manager.checkpoint_files()] == [checkpoint.name] == [f"checkpoint_{stopped_at:08d}.pt"]
    assert manager.read_pointer()["iteration"] == stopped_at
    log = (tmp_path / "victim.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]

    resumed = _start_worker(tmp_path / "victim", tmp_path / "resumed.log", checkpoint_every=0)
    resumed_code, resumed_out = _finish(resumed)
    reference_code, _ = _finish(reference)
    assert resumed_code == 0 and reference_code == 0, (tmp_path / "resumed.log").read_text()[-2000:]
    assert resumed_out.split()[:2] == ["ITER", str(stopped_at + 1)]
    _assert_same_final_state(tmp_path / "reference", tmp_path / "victim", f"{stop_signal.name} at {stopped_at}")


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path):
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    # critic_steps=2: the 7th critic-loss call is the first critic step of iteration 4
    objective = ToyWassersteinGP(nan_at_call=7)
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(), generator, critic, g_opt, d_opt, objective, max_iterations=8, run_dir=tmp_path, checkpoint_every=1
    )
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.run()
    error = caught.value
    assert error.iteration == 4 and error.term == "critic/loss"
    assert "checkpoint_00000003.pt" in str(error) and "iteration 4" in str(error)
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert manager.read_pointer()["iteration"] == 3
    assert [p.name for p in manager.checkpoint_files()][-1] == "checkpoint_00000003.pt"
    state = manager.load_latest()
    assert all(torch.isfinite(t).all() for net in state["networks"].values() for t in net.values())
    # the NaN step changed nothing: weights in memory are those of the checkpoint
    for name, value in critic.state_dict().items():
        assert torch.equal(value, state["networks"]["critic"][name])
    assert any(not torch.equal(before[k], state["networks"]["critic"][k]) for k in before)


def _gan_trainer(run_dir, iterations, **kwargs):
    generator, critic, g_opt, d_opt = make_gan(2, 8, seed=1)
    return GenerativeAdversarialTrainer(
        "cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=iterations, run_dir=run_dir,
        checkpoint_every=2, ema_decay=0.5, **kwargs,
    )


def test_running_a_finished_run_again_does_nothing_and_more_iterations_continue_it(tmp_path):
    first = _gan_trainer(tmp_path, 3)
    first.run()
    finished = {k: v.clone() for k, v in first.generator.state_dict().items()}

    again = _gan_trainer(tmp_path, 3)
    again.run()
    assert again.state.iteration == 3 and again.state.resumed_from.endswith("checkpoint_00000003.pt")
    assert all(torch.equal(v, again.generator.state_dict()[k]) for k, v in finished.items())
    assert all(torch.equal(v, again.ema_generator.state_dict()[k]) for k, v in first.ema_generator.state_dict().items())

    longer = _gan_trainer(tmp_path, 5)
    longer.run()
    assert longer.state.iteration == 5
    assert CheckpointManager(tmp_path / "checkpoints").read_pointer()["iteration"] == 5
    assert not all(torch.equal(v, longer.generator.state_dict()[k]) for k, v in finished.items())


def test_a_run_with_adaptive_critic_augmentation_resumes_bitwise_mid_interval(tmp_path):
    ada = "ada:p=0.5,speed=0.2"  # p moves every 4 iterations; the resume at 3 falls inside the first interval
    reference = _gan_trainer(tmp_path / "reference", 6, critic_augment=ada)
    reference.run()
    _gan_trainer(tmp_path / "resumed", 3, critic_augment=ada).run()
    resumed = _gan_trainer(tmp_path / "resumed", 6, critic_augment=ada)
    resumed.run()
    assert resumed.state.resumed_from.endswith("checkpoint_00000003.pt")
    assert reference.critic_augmentation.p != 0.5 and reference.critic_augmentation.real_sign is not None
    expected = CheckpointManager(tmp_path / "reference" / "checkpoints").load_latest()
    actual = CheckpointManager(tmp_path / "resumed" / "checkpoints").load_latest()
    assert expected["extra"]["critic_augment"] == actual["extra"]["critic_augment"]
    for part in ("networks", "optimizers", "extra"):
        flat_expected, flat_actual = _tensors(expected[part]), _tensors(actual[part])
        assert flat_expected.keys() == flat_actual.keys()
        for key, value in flat_expected.items():
            same = torch.equal(value, flat_actual[key]) if isinstance(value, torch.Tensor) else value == flat_actual[key]
            assert same, f"{part}{key} differs"


def test_best_checkpoint_is_kept_by_metric(tmp_path):
    trainer = _gan_trainer(tmp_path, 6, keep_last=1, best_metric=lambda t: -t.state.iteration if t.state.iteration <= 2 else 0.0)
    trainer.run()
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert manager.read_pointer()["best"]["iteration"] == 2
    assert [p.name for p in manager.checkpoint_files()] == ["checkpoint_00000002.pt", "checkpoint_00000006.pt"]


def _tensor_bytes(tree) -> int:
    return sum(v.numel() * v.element_size() for v in _tensors(tree).values() if isinstance(v, torch.Tensor))


def test_a_checkpoint_holds_what_resume_needs_and_no_more_and_the_export_holds_the_ema_generator(tmp_path):
    trainer = _gan_trainer(tmp_path, 2)  # Adam on both networks, EMA generator
    RunRecord(family="toy", spatial_dims=2, image_size=[8, 8]).save(tmp_path)
    trainer.run()
    state = CheckpointManager(tmp_path / "checkpoints").load_latest()
    assert set(state) == {"format", "iteration", "networks", "optimizers", "scalers", "stream", "epoch", "plan",
                          "precision", "extra", "rng"}
    assert set(state["networks"]) == set(state["optimizers"]) == {"generator", "critic"}
    assert set(state["extra"]) == {"ema_generator"}
    assert state["scalers"] == {"generator": {}, "critic": {}}  # gradient scalers only exist in fp16
    generator, critic = trainer.generator, trainer.critic
    weights = [p for net in (generator, critic) for p in net.parameters()]
    float_bytes = sum(p.numel() * p.element_size() for p in weights)
    generator_bytes = _tensor_bytes(generator.state_dict())
    critic_bytes = _tensor_bytes(critic.state_dict())
    # weights, Adam's two moments per weight plus its step counters, one EMA copy of the generator: nothing twice
    assert _tensor_bytes(state["networks"]) == generator_bytes + critic_bytes
    adam_steps = _tensor_bytes([g["state"][i]["step"] for g in state["optimizers"].values() for i in g["state"]])
    assert _tensor_bytes(state["optimizers"]) == 2 * float_bytes + adam_steps
    assert _tensor_bytes(state["extra"]) == generator_bytes
    other = {k: v for k, v in state.items() if k not in ("networks", "optimizers", "extra")}
    assert _tensor_bytes(other) < 16 * 1024  # RNG states (about 10 KB), data-stream position, counters, plan

    export = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert export.keys() == state["extra"]["ema_generator"].keys()
    assert all(torch.equal(export[k], v) for k, v in state["extra"]["ema_generator"].items())
    record = json.loads((tmp_path / "run.json").read_text())["model"]
    assert record == {"file": "models/model.pt", "network": "generator", "ema": True, "iteration": 2,
                      "parameters": sum(p.numel() for p in generator.parameters()),
                      "bytes": (tmp_path / "models" / "model.pt").stat().st_size}


@pytest.mark.parametrize("stop_at, iterations", [(2, 5), (5, 5)])
def test_a_stop_request_ends_training_with_a_checkpoint_unless_the_run_was_finishing(stop_at, iterations, tmp_path):
    from ignite.engine import Events

    from medvol.engines.trainer import TrainingInterrupted

    trainer = _gan_trainer(tmp_path, iterations)
    trainer.add_event_handler(
        Events.ITERATION_STARTED(once=stop_at), lambda engine: trainer.request_stop(signal.SIGTERM)
    )
    manager = CheckpointManager(tmp_path / "checkpoints")
    if stop_at < iterations:
        with pytest.raises(TrainingInterrupted) as caught:
            trainer.run()
        stop = caught.value
        assert (stop.iteration, stop.exit_code, stop.signal) == (stop_at, 143, signal.SIGTERM)
        assert stop.checkpoint == str(tmp_path / "checkpoints" / f"checkpoint_{stop_at:08d}.pt")
        assert str(stop) == f"interrupted (SIGTERM) at iteration {stop_at}; checkpoint saved to {stop.checkpoint}; rerun the same command to resume"
        assert manager.read_pointer()["iteration"] == stop_at
        assert not (tmp_path / "models").exists()  # the final export belongs to a finished run
    else:  # the signal came during the last iteration: the run is complete, nothing to report
        trainer.run()
        assert manager.read_pointer()["iteration"] == iterations
        assert (tmp_path / "models" / "model.pt").is_file()
