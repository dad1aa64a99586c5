"""Out-of-memory recovery on the paths that only a GPU takes, reproduced on the CPU: an error inside the optimiser's step
under a float16 gradient scaler, allocation failures that arrive as plain RuntimeErrors, releasing the allocator cache
only after the failed step's tensors are gone."""

from __future__ import annotations

import sys
import weakref

import pytest
import torch

from medvol.benchmarks.training import step_fits
from medvol.engines import GenerativeAdversarialTrainer, memory
from medvol.engines.amp import forget_unfinished_step
from medvol.engines.memory import OptimizerUpdateWatch, UnrepeatableStepError, is_out_of_memory
from tests.engines.toys import ToyWasserstein, make_gan, make_loader

# [error, counts as "does not fit"]
TEST_CASE_1 = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True]
TEST_CASE_2 = [RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), True]
TEST_CASE_3 = [RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True]
TEST_CASE_4 = [RuntimeError("Expected canUse32BitIndexMath(input) && canUse32BitIndexMath(output) to be true"), True]
TEST_CASE_5 = [RuntimeError("upsample_nearest3d: input tensor must fit into 32-bit index math"), True]
TEST_CASE_6 = [RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"), False]
TEST_CASE_7 = [ValueError("out of memory"), False]
TEST_CASE_8 = [UnrepeatableStepError("out of memory inside the update"), False]


@pytest.mark.parametrize("error,expected", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4, TEST_CASE_5, TEST_CASE_6, TEST_CASE_7, TEST_CASE_8])
def test_allocation_failures_count_as_out_of_memory(error, expected):
    assert is_out_of_memory(error) is expected


def _oom_before_the_first_update(step, params=None):
    """`step` that raises an out-of-memory error on its first call, before changing anything."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected before the update)")
        return step(*args, **kwargs)

    return wrapped


def test_gradscaler_state_is_reset_after_an_error_inside_its_step():
    """The issue's reproduction: p = 0, gradient 1, SGD lr 1; after a failed scaler.step the retry must give p = -1."""
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer.step = _oom_before_the_first_update(optimizer.step)
    for attempt in range(2):
        optimizer.zero_grad()
        scaler.scale(p.sum()).backward()
        try:
            scaler.step(optimizer)
            scaler.update()
        except torch.OutOfMemoryError:
            forget_unfinished_step(scaler)
    assert p.item() == -1.0


def _sgd_gan(seed: int = 3):
    generator, critic, _, _ = make_gan(2, 8, seed=seed)
    return generator, critic, torch.optim.SGD(generator.parameters(), lr=1e-2), torch.optim.SGD(critic.parameters(), lr=1e-2)


def _fp16_weights(step_wrapper=None):
    generator, critic, g_opt, d_opt = _sgd_gan()
    if step_wrapper is not None:
        d_opt.step = step_wrapper(d_opt.step, list(critic.parameters()))
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(shuffle=False), generator, critic, g_opt, d_opt, ToyWasserstein(), max_iterations=2,
        micro_batch=4, precision="fp16", health_interval=0,
    )
    torch.manual_seed(11)
    trainer.run()
    return trainer, torch.cat([p.detach().flatten() for p in list(generator.parameters()) + list(critic.parameters())])


def test_fp16_step_repeated_after_an_oom_before_the_update_matches_an_uninterrupted_step():
    _, reference = _fp16_weights()
    trainer, retried = _fp16_weights(_oom_before_the_first_update)
    assert trainer.plan.micro_batch == 2 and trainer.plan.oom_events[0]["from"] == 4
    # without the scaler reset the repeated step applies gradients x65536 (max difference ~1e2)
    torch.testing.assert_close(retried, reference, rtol=1e-3, atol=1e-5)


def test_an_oom_after_the_update_began_is_never_repeated():
    def oom_after_changing_one_weight(step, params):
        def wrapped(*args, **kwargs):
            with torch.no_grad():
                params[0].add_(1.0)  # the update began on the first parameter
            raise torch.OutOfMemoryError("CUDA out of memory (injected mid-update)")

        return wrapped

    with pytest.raises(UnrepeatableStepError, match="critic optimiser"):
        _fp16_weights(oom_after_changing_one_weight)


def test_the_update_watch_sees_changed_weights_and_moments_and_forgets_new_state():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([p, q], lr=0.1)
    watch = OptimizerUpdateWatch(optimizer)
    p.grad, q.grad = torch.ones(3), torch.ones(2)
    optimizer.step()  # first step: creates the state of both, changes both
    assert watch.update_began()
    watch.forget_new_state()
    assert len(optimizer.state) == 0

    optimizer.step()
    watch = OptimizerUpdateWatch(optimizer)
    assert not watch.update_began()
    with torch.no_grad():
        optimizer.state[q]["exp_avg"].mul_(0.5)  # a moment moved, no weight yet
    assert watch.update_began()


def test_cuda_planner_treats_allocation_runtime_errors_as_too_large_and_raises_the_others(monkeypatch):
    def fake_measure(probe, micro_batch, device):
        if micro_batch >= 16:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        if micro_batch == 8:
            raise RuntimeError("upsample_nearest3d: input tensor must fit into 32-bit index math")
        return 10 * micro_batch

    monkeypatch.setattr(memory, "_measure_cuda", fake_measure)
    plan = memory.plan_memory(lambda m: None, effective_batch=32, device="cuda", budget_bytes=1000)
    assert plan.micro_batch == 4
    assert [p["fits"] for p in plan.probes] == [False, False, False, True]
    assert "CUBLAS_STATUS_ALLOC_FAILED" in plan.probes[0]["note"]

    def broken_measure(probe, micro_batch, device):
        raise RuntimeError("Given groups=1, weight of size [8, 1, 3, 3, 3], expected input to have 1 channels")

    monkeypatch.setattr(memory, "_measure_cuda", broken_measure)
    with pytest.raises(RuntimeError, match="expected input"):
        memory.plan_memory(lambda m: None, effective_batch=32, device="cuda", budget_bytes=1000)


def test_the_allocator_cache_is_emptied_after_the_failed_probe_is_released(monkeypatch):
    """empty_cache inside the except block frees nothing of the failed probe: its traceback still holds the tensors."""
    alive, calls = [], []

    def fake_measure(probe, micro_batch, device):
        activations = torch.zeros(1024)
        alive.append(weakref.ref(activations))
        if micro_batch > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return micro_batch

    def fake_empty_cache():
        calls.append((sys.exc_info()[0], [ref() is not None for ref in alive]))

    monkeypatch.setattr(memory, "_measure_cuda", fake_measure)
    monkeypatch.setattr(torch.cuda, "empty_cache", fake_empty_cache)
    memory.plan_memory(lambda m: None, effective_batch=16, device="cuda", budget_bytes=1000)
    assert len(calls) == 2
    for handling, tensors_alive in calls:
        assert handling is None and not any(tensors_alive), calls


class _FakeTrainer:
    def __init__(self, error):
        self.error = error
        self.state = type("State", (), {"device": torch.device("cpu")})()

    def measure_step_bytes(self, micro_batch):
        if micro_batch > 8:
            raise self.error
        return micro_batch


def test_the_benchmark_bisection_treats_allocation_runtime_errors_as_too_large():
    trainer = _FakeTrainer(RuntimeError("CUDA error: out of memory"))
    assert step_fits(trainer, 8) and not step_fits(trainer, 9)
    with pytest.raises(RuntimeError, match="shapes"):
        step_fits(_FakeTrainer(RuntimeError("mat1 and mat2 shapes cannot be multiplied")), 9)
