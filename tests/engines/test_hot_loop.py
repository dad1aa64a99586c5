"""The training loop's host-device traffic, counted on the CPU: read-backs (``item``, ``tolist``, ``float()``...) and
copies (``Tensor.to``) per iteration, which on a GPU each wait for the device; the stop flag under a (faked) NCCL
group; the EMA update as one fused operation with the per-parameter loop's results."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import medvol
from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.trainer import ema_warmup_decay
from tests.engines.toys import ToyWassersteinGP, make_gan, make_loader
from tests.operators import OperatorLog

READ_BACKS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


@pytest.fixture
def host_traffic(monkeypatch):
    """Counts of read-backs and copies called from medvol's own code (not from torch's optimisers or the toy networks)."""
    counts = {"read_backs": 0, "copies": 0}
    package = str(Path(medvol.__file__).parent)

    def counting(name, kind):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(package):
                counts[kind] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in READ_BACKS:
        counting(name, "read_backs")
    counting("to", "copies")
    return counts


def _fake_nccl_group(monkeypatch):
    """A 2-rank NCCL process group whose all-reduce changes nothing (the trainer asks it at call time)."""
    distributed = torch.distributed
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(distributed, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(distributed, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(distributed, "all_reduce", lambda tensor, op=None, group=None, async_op=False: None)


def _traffic_per_iteration(host_traffic, monkeypatch, iterations: int) -> dict[str, float]:
    def run(n: int) -> dict[str, int]:
        generator, critic, g_opt, d_opt = make_gan(2, 8, num_classes=2)
        trainer = GenerativeAdversarialTrainer(
            "cpu", make_loader(count=128, num_classes=2), generator, critic, g_opt, d_opt, ToyWassersteinGP(),
            max_iterations=n, micro_batch=4, precision="fp32", health_interval=0,
        )
        with monkeypatch.context() as patch:
            _fake_nccl_group(patch)
            before = dict(host_traffic)
            trainer.run()
        return {key: host_traffic[key] - before[key] for key in host_traffic}

    # the difference leaves out what a run does once (plan, data order of the first pass: 16 iterations long)
    short, long = run(2), run(2 + iterations)
    return {key: (long[key] - short[key]) / iterations for key in short}


def test_the_hot_loop_reads_back_once_per_optimiser_step_and_copies_only_the_batches(host_traffic, monkeypatch):
    critic_steps = ToyWassersteinGP.critic_steps
    per_iteration = _traffic_per_iteration(host_traffic, monkeypatch, iterations=10)
    # the logged terms of each optimiser step (critic_steps + 1), and the stop flag once every 10 iterations
    assert per_iteration["read_backs"] <= critic_steps + 1 + 0.1, per_iteration
    # the real images and labels of each critic step; latents and sampled labels are drawn on the device
    assert per_iteration["copies"] <= 2 * critic_steps, per_iteration


def test_the_ema_update_is_fused_and_equal_to_the_per_parameter_loop():
    generator, critic, g_opt, d_opt = make_gan(2, 8, num_classes=2)
    generator.register_buffer("calls", torch.zeros(3))  # a buffer, copied as it is
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(num_classes=2), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=1,
        ema_decay=0.99,
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(torch.randn_like(p))
        generator.calls.fill_(7)
    reference = copy.deepcopy(trainer.ema_generator)
    trainer.state.iteration = 500
    decay = ema_warmup_decay(0.99, 500)
    with torch.no_grad():
        for ema_param, param in zip(reference.parameters(), generator.parameters()):
            ema_param.lerp_(param, 1.0 - decay)
        for ema_buffer, buffer in zip(reference.buffers(), generator.buffers()):
            ema_buffer.copy_(buffer)
    with OperatorLog() as counter:
        trainer._update_ema()
    for (name, expected), actual in zip(reference.state_dict().items(), trainer.ema_generator.state_dict().values()):
        assert torch.equal(expected, actual), name  # bitwise
    assert len(counter.names) <= 2, counter.names  # one lerp over every parameter, one copy over every buffer
