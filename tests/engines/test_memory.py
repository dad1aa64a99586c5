"""Memory planning on CPU with an artificial budget, OOM back-off during training, activation checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Events
from torch import nn

from medvol.engines import GenerativeAdversarialTrainer, MemoryPlan, TensorMemoryTracker, apply_activation_checkpointing
from medvol.engines.memory import candidate_micro_batches, parse_memory_budget
from tests.engines.toys import ToyGenerator, ToyWassersteinGP, make_gan, make_loader

EFFECTIVE_BATCH = 8


def _trainer(**kwargs):
    generator, critic, g_opt, d_opt = make_gan(3, 8)
    loader = make_loader(count=16, batch_size=EFFECTIVE_BATCH, spatial_dims=3, size=8)
    return GenerativeAdversarialTrainer("cpu", loader, generator, critic, g_opt, d_opt, ToyWassersteinGP(), precision="fp32", **kwargs)


def test_tracker_sees_allocations_and_frees():
    with TensorMemoryTracker() as tracker:
        a = torch.zeros(256, 1024)  # 1 MiB
        b = a + 1  # another MiB
        del a
        c = b * 2  # the first MiB was freed: the live total stays at 2 MiB
        del b, c
    assert tracker.peak_bytes == 2 * 2**20
    assert tracker.live_bytes == 0


def test_candidates_halve_down_to_one():
    assert candidate_micro_batches(12) == [12, 6, 3, 2, 1]
    assert candidate_micro_batches(1) == [1]
    assert parse_memory_budget("2GB") == 2 * 1024**3 and parse_memory_budget(None) is None


@pytest.fixture(scope="module")
def step_peaks():
    """Measured peak bytes of one step of the toy 3D WGAN-GP at every candidate micro-batch."""
    trainer = _trainer()
    return {m: trainer.measure_step_bytes(m) for m in candidate_micro_batches(EFFECTIVE_BATCH)}


MARGIN = 0.15


@pytest.mark.parametrize("target", [8, 4, 2])
def test_planner_picks_the_largest_micro_batch_whose_measured_peak_fits(target, step_peaks, tmp_path):
    budget = int(step_peaks[target] / (1 - MARGIN)) + 64  # room for `target` but not for the next larger candidate
    assert target == EFFECTIVE_BATCH or step_peaks[2 * target] > budget * (1 - MARGIN)
    trainer = _trainer(memory_plan="auto", max_memory_gb=budget / 1024**3, max_iterations=1, run_dir=tmp_path)
    with TensorMemoryTracker() as tracker:  # an independent measurement: a whole real training iteration
        trainer.run()
    plan = trainer.plan
    assert plan.method == "cpu-estimate" and plan.budget_bytes == budget and plan.safety_margin == MARGIN
    assert plan.micro_batch == target, plan.probes
    assert plan.accumulation_steps == EFFECTIVE_BATCH // target
    assert plan.measured_peak_bytes <= budget
    parameters = sum(p.numel() * p.element_size() for net in trainer.networks.values() for p in net.parameters())
    assert parameters + tracker.peak_bytes <= budget, (plan, tracker.peak_bytes)
    on_disk = json.loads((tmp_path / "plan.json").read_text())
    assert on_disk["micro_batch"] == target and on_disk["measured_peak_bytes"] == plan.measured_peak_bytes
    assert MemoryPlan.load(tmp_path / "plan.json") == plan


def test_planner_refuses_a_budget_nothing_fits(step_peaks):
    with pytest.raises(MemoryError, match="micro-batch of 1"):
        _trainer().plan_memory(budget_bytes=step_peaks[1] // 2)


def test_injected_oom_halves_the_micro_batch_and_keeps_the_iteration_count(tmp_path, caplog):
    injected = []

    def oom_once_at_iteration_3(trainer, micro_batch):
        if trainer.state.iteration == 3 and not injected:
            injected.append(micro_batch)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    trainer = _trainer(micro_batch=EFFECTIVE_BATCH, max_iterations=5, run_dir=tmp_path, oom_injector=oom_once_at_iteration_3)
    steps = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: steps.append((e.state.iteration, e.plan.micro_batch)))
    with caplog.at_level("WARNING", logger="medvol.engines.trainer"):
        trainer.run()
    assert injected == [EFFECTIVE_BATCH]
    assert steps == [(1, 8), (2, 8), (3, 4), (4, 4), (5, 4)]
    assert trainer.state.iteration == 5
    plan = trainer.plan
    assert (plan.micro_batch, plan.accumulation_steps, plan.effective_batch) == (4, 2, EFFECTIVE_BATCH)
    assert plan.oom_events == [{"iteration": 3, "from": 8, "to": 4, "reason": "CUDA out of memory. Tried to allocate 2.00 GiB (injected)"}]
    assert json.loads((tmp_path / "plan.json").read_text())["micro_batch"] == 4
    assert "micro-batch halved to 4" in caplog.text


def test_activation_checkpointing_keeps_gradients_and_lowers_the_peak():
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 4, 3, padding=1), nn.Tanh()) for _ in range(4)])
    x = torch.randn(2, 4, 12, 12, 12)

    def gradients_and_peak(double_backward):
        net.zero_grad(set_to_none=True)
        with TensorMemoryTracker() as tracker:
            inp = x.clone().requires_grad_(True)
            if double_backward:  # the gradient penalty's pattern
                (grad,) = torch.autograd.grad(net(inp).square().mean(), inp, create_graph=True)
                grad.square().sum().backward()
            else:
                net(inp).square().mean().backward()
        return [p.grad.clone() for p in net.parameters()], tracker.peak_bytes

    keys = list(net.state_dict())
    plain = {double: gradients_and_peak(double) for double in (False, True)}
    assert apply_activation_checkpointing(net) == ["0", "1", "2", "3"]
    checkpointed = {double: gradients_and_peak(double) for double in (False, True)}
    assert list(net.state_dict()) == keys
    for double in (False, True):
        for a, b in zip(plain[double][0], checkpointed[double][0]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert checkpointed[False][1] < 0.8 * plain[False][1], (checkpointed[False][1], plain[False][1])


def test_checkpointing_plan_for_3d_generator():
    generator = ToyGenerator(3, 8)
    assert apply_activation_checkpointing(generator) == ["blocks"]
    assert apply_activation_checkpointing(generator) == []  # applying twice wraps nothing more


@pytest.mark.parametrize("largest,limit,expected", [(23, 4096, 23), (1, 4096, 1), (0, 4096, 0), (5000, 64, 64), (64, 64, 64)])
def test_bisection_finds_the_largest_fitting_batch(largest, limit, expected):
    from medvol.benchmarks.training import largest_fitting_batch

    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= largest

    assert largest_fitting_batch(fits, limit=limit) == expected
    assert len(tried) <= 2 * 13  # doubling + bisection: logarithmic


def test_cuda_branch_probes_down_from_the_effective_batch(monkeypatch):
    """The CUDA planning logic with a simulated device: 10 bytes per sample, out of memory from 16 samples up."""
    from medvol.engines import memory

    tried = []

    def fake_measure(probe, micro_batch, device):
        tried.append(micro_batch)
        if micro_batch >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return 100 + 10 * micro_batch

    monkeypatch.setattr(memory, "_measure_cuda", fake_measure)
    plan = memory.plan_memory(lambda m: None, effective_batch=32, device="cuda", budget_bytes=200, safety_margin=0.15,
                              unallocated_optimizer_bytes=5)
    # 32 and 16 run out of memory, 8 needs 185 > 170 usable, 4 needs 145
    assert tried == [32, 16, 8, 4]
    assert (plan.micro_batch, plan.accumulation_steps, plan.measured_peak_bytes, plan.method) == (4, 8, 145, "cuda-probe")
    assert [p["fits"] for p in plan.probes] == [False, False, False, True]
    with pytest.raises(MemoryError):
        memory.plan_memory(lambda m: None, effective_batch=32, device="cuda", budget_bytes=100)
