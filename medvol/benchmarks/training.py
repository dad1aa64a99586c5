"""Training benchmark: medvol's GenerativeAdversarialTrainer against a plain PyTorch WGAN-GP loop, and (on CUDA)
the memory planner's micro-batch against the largest batch that actually fits, found by bisection.

Cases (3D WGAN-GP, ``medvol.networks.factory.build("wgan_gp", 3, size)`` with ``WassersteinGradientPenalty``):

* ``plain fp32 loop`` (the baseline of every throughput row): a hand-written PyTorch loop doing the same work per
  iteration (``critic_steps`` critic updates on fresh real batches and fresh fakes, one generator update), fp32.
* ``medvol fp32``, ``medvol bf16``, ``medvol fp32 + checkpointing``, ``medvol bf16 + checkpointing``: the trainer
  with that precision / activation checkpointing, same networks (copies of the same initial weights), same batch.

Throughput is samples per second (``batch * (critic_steps + 1)`` images through the networks per iteration); each
case runs ``iterations`` iterations per repeat after one warm-up iteration, cases interleaved, median over repeats.
``speedup`` = baseline seconds / medvol seconds per iteration (> 1: faster than the plain loop).

On CUDA, for each of ``planner_sizes`` (64 and 128 by default): the planner's micro-batch for the free GPU memory
(``trainer.plan_memory(None)``, 15 % margin, candidates ``ceil(E / 2^k)``) and the largest micro-batch for which one
training step (critic step with gradient penalty + generator step, forward and backward) runs without running out
of memory (:func:`medvol.engines.memory.is_out_of_memory`), found by doubling then bisection; both with and without
bfloat16 / checkpointing.
"""

from __future__ import annotations

import copy
import functools
import logging
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Events

from medvol.benchmarks import environment
from medvol.devices import default_device
from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.memory import GIB, is_out_of_memory, release_cached_memory

__all__ = ["run", "plain_wgan_gp_loop", "largest_fitting_batch", "step_fits", "iteration_stepper"]

logger = logging.getLogger(__name__)


def _build(size: int, seed: int, channels: int | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    from medvol.networks.factory import build

    torch.manual_seed(seed)
    overrides = {} if channels is None else {"base_channels": channels}
    networks = build("wgan_gp", 3, size, **overrides)
    return networks["generator"], networks["critic"]


def _adam(parameters) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-4, betas=(0.0, 0.9))


def _gradient_penalty(critic, real, fake):
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()


def plain_wgan_gp_loop(generator, critic, batches: list[torch.Tensor], critic_steps: int) -> Callable[[int], None]:
    """A plain fp32 WGAN-GP loop (what one writes without medvol): returns ``step(iterations)``."""
    g_opt, d_opt = _adam(generator.parameters()), _adam(critic.parameters())
    position = [0]

    def step(iterations: int) -> None:
        for _ in range(iterations):
            for _ in range(critic_steps):
                real = batches[position[0] % len(batches)]
                position[0] += 1
                with torch.no_grad():
                    fake = generator(torch.randn(real.shape[0], generator.latent_size, device=real.device))
                d_opt.zero_grad(set_to_none=True)
                loss = critic(fake).mean() - critic(real).mean() + 10.0 * _gradient_penalty(critic, real, fake)
                loss.backward()
                d_opt.step()
            g_opt.zero_grad(set_to_none=True)
            critic.requires_grad_(False)
            fake = generator(torch.randn(real.shape[0], generator.latent_size, device=real.device))
            (-critic(fake).mean()).backward()
            critic.requires_grad_(True)
            g_opt.step()

    return step


def _loader(batches: list[torch.Tensor]):
    images = torch.cat(batches).cpu()
    dataset = torch.utils.data.TensorDataset(images)
    return torch.utils.data.DataLoader(dataset, batch_size=batches[0].shape[0], shuffle=True, drop_last=True)


def _trainer(generator, critic, loader, device, precision: str, checkpointing: bool, critic_steps: int, iterations: int):
    from medvol.objectives.adversarial import WassersteinGradientPenalty

    return GenerativeAdversarialTrainer(
        device, loader, generator, critic, _adam(generator.parameters()), _adam(critic.parameters()),
        WassersteinGradientPenalty(), critic_steps=critic_steps, max_iterations=iterations, precision=precision,
        activation_checkpointing=checkpointing, health_interval=0, resume=False,
    )


def iteration_stepper(trainer: Any) -> Callable[[int], None]:
    """``step(n)``: run `trainer` (with a large ``max_iterations``) for `n` more iterations, then return."""
    remaining = [0]

    def stop_after_n(engine) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, stop_after_n)

    def step(n: int) -> None:  # ignite resumes a terminated run where it stopped
        remaining[0] = n
        trainer.run()

    return step


def _time_per_iteration(step: Callable[[int], None], iterations: int, device: torch.device) -> float:
    step(1)  # warm-up (allocator, kernels, lazy optimiser state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step(iterations)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / iterations


def _throughput_rows(size, batch, critic_steps, iterations, repeats, device, seed, channels) -> list[dict]:
    torch.manual_seed(seed)
    batches = [torch.rand(batch, 1, size, size, size, device=device) * 2 - 1 for _ in range(8)]
    generator0, critic0 = _build(size, seed, channels)
    generator0.to(device)
    critic0.to(device)

    def medvol_case(precision: str, checkpointing: bool) -> Callable[[int], None]:
        return iteration_stepper(_trainer(copy.deepcopy(generator0), copy.deepcopy(critic0), _loader(batches), device,
                                          precision, checkpointing, critic_steps, 10**9))

    cases: dict[str, Callable[[int], None]] = {
        "plain fp32 loop": plain_wgan_gp_loop(copy.deepcopy(generator0), copy.deepcopy(critic0), batches, critic_steps),
        "medvol fp32": medvol_case("fp32", False),
        "medvol bf16": medvol_case("bf16", False),
        "medvol fp32 + checkpointing": medvol_case("fp32", True),
        "medvol bf16 + checkpointing": medvol_case("bf16", True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(repeats):
        for name, step in cases.items():
            times[name].append(_time_per_iteration(step, iterations, device))
            logger.info("repeat %d %s: %.3f s/iteration", repeat + 1, name, times[name][-1])
    medians = {name: statistics.median(values) for name, values in times.items()}
    samples = batch * (critic_steps + 1)
    baseline = medians["plain fp32 loop"]
    rows = []
    for name in list(cases)[1:]:
        rows.append({
            "case": f"3D WGAN-GP {size}^3, batch {batch}, {critic_steps} critic step(s), {device.type}",
            "medvol": name, "baseline": "plain fp32 loop",
            "medvol_s": medians[name], "baseline_s": baseline, "speedup": baseline / medians[name],
            "medvol_samples_per_s": samples / medians[name], "baseline_samples_per_s": samples / baseline,
            "status": "ok", "note": f"samples/s {samples / medians[name]:.2f} vs {samples / baseline:.2f}",
        })
    return rows


def largest_fitting_batch(fits: Callable[[int], bool], start: int = 1, limit: int = 4096) -> int:
    """Largest ``b <= limit`` with ``fits(b)``, assuming ``fits`` is monotone: doubling, then bisection (0: none)."""
    if not fits(start):
        return 0
    low, high = start, None
    while high is None:
        candidate = low * 2
        if candidate > limit:
            return low
        if fits(candidate):
            low = candidate
        else:
            high = candidate
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def step_fits(trainer: Any, micro_batch: int) -> bool:
    """Whether one training step at `micro_batch` runs; False on out-of-memory (:func:`is_out_of_memory`: also
    cuBLAS allocation failures and 32-bit index limits), any other error is raised."""
    failed = False
    try:
        trainer.measure_step_bytes(micro_batch)
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        failed = True
    if failed:  # outside the except block: its traceback no longer holds the failed step's tensors
        release_cached_memory(trainer.state.device)
    return not failed


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({platform.machine()})"


def _planner_rows(sizes, device, seed, channels, effective_batch, budget_bytes: int | None = None) -> list[dict]:
    rows = []
    for size in sizes:
        for precision, checkpointing in (("fp32", False), ("bf16", False), ("bf16", True)):
            generator, critic = _build(size, seed, channels)
            generator.to(device)
            critic.to(device)
            dataset = torch.utils.data.TensorDataset(torch.zeros(effective_batch, 1, size, size, size))
            loader = torch.utils.data.DataLoader(dataset, batch_size=effective_batch)
            trainer = _trainer(generator, critic, loader, device, precision, checkpointing, 1, 1)
            if checkpointing:
                trainer._enable_checkpointing()
            try:
                start = time.perf_counter()
                plan = trainer.plan_memory(budget_bytes)
                plan_s = time.perf_counter() - start
                planned, note = plan.micro_batch, f"planned peak {(plan.measured_peak_bytes or 0) / GIB:.2f} GiB of {(plan.budget_bytes or 0) / GIB:.2f} GiB"
            except MemoryError as error:
                planned, plan_s, note = 0, None, str(error)

            start = time.perf_counter()
            largest = largest_fitting_batch(functools.partial(step_fits, trainer), limit=4 * effective_batch)
            search_s = time.perf_counter() - start
            rows.append({
                "case": f"3D WGAN-GP {size}^3 {precision}{' + checkpointing' if checkpointing else ''}, {_device_name(device)}",
                "medvol": f"planner micro-batch {planned}", "baseline": f"bisection max batch {largest}",
                "medvol_s": plan_s, "baseline_s": search_s, "speedup": None,
                "planned_micro_batch": planned, "largest_fitting_batch": largest,
                "planned_fraction_of_largest": planned / largest if largest else None,
                "status": "ok", "note": note,
            })
            del trainer, generator, critic
            release_cached_memory(device)
    return rows


def run(
    size: int = 16,
    batch: int = 4,
    critic_steps: int = 1,
    iterations: int = 3,
    repeats: int = 3,
    device: str | None = None,
    planner_sizes: tuple[int, ...] = (64, 128),
    planner_effective_batch: int = 64,
    channels: int | None = 16,
    seed: int = 0,
    torch_threads: int | None = None,
    throughput: bool = True,
    planner_budget_bytes: int | None = None,
    **_other_benchmark_options: Any,
) -> dict:
    """Runs the training benchmark and returns ``{"name": "training", "rows", "settings", "environment"}``.

    Args:
        size: image size of the throughput cases (``size^3`` volumes).
        batch: batch size of the throughput cases.
        critic_steps: critic updates per generator update in every case.
        iterations: timed iterations per case and repeat (after one warm-up iteration).
        repeats: interleaved repeats; medians are reported.
        device: ``cpu`` or ``cuda`` (default: cuda when available).
        planner_sizes: volume sizes of the CUDA planner-vs-bisection rows (skipped on CPU, reported as pending).
        planner_effective_batch: effective batch the planner plans for (its largest candidate).
        channels: ``base_channels`` of the residual generator/critic (None: the family default).
        seed: seeds the networks and data.
        torch_threads: intra-op threads during the run (None: leave as is).
        throughput: run the throughput rows (False: planner rows only).
        planner_budget_bytes: memory budget of the planner rows (None: the free GPU memory); given on a CPU, the
            planner rows run there too (a dry run of the GPU code path: the numbers mean nothing).
        _other_benchmark_options: options meant for other benchmarks of ``medvol bench`` (ignored).
    """
    device = default_device(device)
    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        rows = _throughput_rows(size, batch, critic_steps, iterations, repeats, device, seed, channels) if throughput else []
        if device.type == "cuda" or planner_budget_bytes is not None:
            rows += _planner_rows(planner_sizes, device, seed, channels, planner_effective_batch, planner_budget_bytes)
        elif planner_sizes:
            rows.append({
                "case": f"3D WGAN-GP {', '.join(f'{s}^3' for s in planner_sizes)}: planner micro-batch vs bisection max batch",
                "medvol": "plan_memory(free GPU memory)", "baseline": "bisection on real steps",
                "medvol_s": None, "baseline_s": None, "speedup": None, "status": "pending",
                "note": "needs a CUDA device: run scripts/bench_training.py on a GPU machine",
            })
        measured_on = environment()
    finally:
        torch.set_num_threads(threads)
    settings = {"size": size, "batch": batch, "critic_steps": critic_steps, "iterations": iterations, "repeats": repeats,
                "device": str(device), "planner_sizes": list(planner_sizes), "planner_effective_batch": planner_effective_batch,
                "channels": channels, "seed": seed, "torch_threads": torch.get_num_threads() if torch_threads is None else torch_threads,
                "throughput": throughput, "planner_budget_bytes": planner_budget_bytes}
    return {"name": "training", "rows": rows, "settings": settings, "environment": measured_on}
