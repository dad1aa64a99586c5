"""Distributed and CUDA-only code paths, checked on the CPU with the CUDA functions they call faked: CUDA generator
states restored on fewer GPUs, the training device seeded (not the current one), the process group's timeout, cuDNN
autotuning as an option, and ``--nproc`` checked against the visible GPUs."""

from __future__ import annotations

import contextlib
import datetime
import logging

import pytest
import torch

from medvol.engines import GenerativeAdversarialTrainer, distributed
from medvol.engines.checkpoint import capture_rng_state, restore_rng_state
from medvol.engines.trainer import step_seed
from tests.engines.toys import ToyWasserstein, make_gan, make_loader


def _fake_gpus(monkeypatch, count: int) -> dict[int, torch.Tensor]:
    """`count` visible fake GPUs whose generator states land in the returned dict; a missing index raises as torch does."""
    restored: dict[int, torch.Tensor] = {}

    def set_rng_state(state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        if index >= count:
            raise IndexError("tuple index out of range")  # torch.cuda.default_generators[index]
        restored[index] = state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    return restored


@pytest.mark.parametrize("visible", [1, 0])
def test_a_checkpoint_of_two_gpus_resumes_where_fewer_are_visible(visible, monkeypatch, caplog):
    state = capture_rng_state()
    state["cuda"] = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restored = _fake_gpus(monkeypatch, visible)
    with caplog.at_level(logging.WARNING, logger="medvol.engines.checkpoint"):
        restore_rng_state(state)
    assert sorted(restored) == list(range(visible))
    if visible:
        assert torch.equal(restored[0], state["cuda"][0])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and f"states of 2 GPU(s) and {visible} are visible" in warnings[0]


def test_the_same_number_of_gpus_restores_every_state_quietly(monkeypatch, caplog):
    state = capture_rng_state()
    state["cuda"] = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restored = _fake_gpus(monkeypatch, 2)
    with caplog.at_level(logging.WARNING, logger="medvol.engines.checkpoint"):
        restore_rng_state(state)
    assert sorted(restored) == [0, 1] and not caplog.records


class _FakeGenerator:
    def __init__(self):
        self.seeds: list[int] = []

    def manual_seed(self, seed):
        self.seeds.append(int(seed))
        return self


def test_the_step_stream_seeds_the_training_device_not_the_current_one(monkeypatch):
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    trainer = GenerativeAdversarialTrainer("cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWasserstein(), max_iterations=1)
    trainer.state.device = torch.device("cuda", 1)  # as in the process of local rank 1
    fakes = (_FakeGenerator(), _FakeGenerator())
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "default_generators", fakes)
    monkeypatch.setattr(torch.cuda, "_lazy_call", lambda callback, **kwargs: callback())  # what an initialised CUDA does
    monkeypatch.setattr(torch.random, "fork_rng", lambda *args, **kwargs: contextlib.nullcontext())
    with trainer.rank_random_stream(iteration=5):
        pass
    assert fakes[1].seeds == [step_seed(trainer.seed, trainer.rank, 5)] and fakes[0].seeds == []


def test_the_process_group_waits_long_enough_for_rank_zero_to_evaluate(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(distributed, "is_rank_zero", lambda: True)
    distributed.init_distributed("cpu")
    distributed.init_distributed("cpu", timeout_s=14400)
    assert calls[0]["backend"] == "gloo"
    assert calls[0]["timeout"] == datetime.timedelta(hours=2) and calls[1]["timeout"] == datetime.timedelta(hours=4)
    assert distributed.COLLECTIVE_TIMEOUT_S > 600  # NCCL's default of 10 minutes would end runs that evaluate mid-run


@pytest.fixture
def cudnn_flags():
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True  # as set_determinism leaves them
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def test_cudnn_autotuning_is_an_option_that_only_touches_cuda(cudnn_flags):
    from medvol.engines.amp import configure_cudnn

    assert not configure_cudnn("cuda", benchmark=False)
    assert not configure_cudnn("cpu", benchmark=True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, True)
    assert configure_cudnn("cuda:1", benchmark=True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)


def test_the_trainer_keeps_determinism_unless_asked(cudnn_flags):
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    trainer = GenerativeAdversarialTrainer("cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWasserstein(), max_iterations=1)
    assert trainer.cudnn_benchmark is False
    trainer.run()
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, True)


@pytest.mark.parametrize("device", ["cuda", None])
def test_nproc_beyond_the_visible_gpus_is_one_line_and_exit_2(device, monkeypatch, tmp_path, capsys):
    from medvol.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    command = ["train", "--bundle", "wgan_gp", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--nproc", "2"]
    code = main(command + (["--device", device] if device else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--nproc: 2 processes on CUDA need one GPU each, but 1 are visible" in err[0]
    assert not (tmp_path / "run").exists()
