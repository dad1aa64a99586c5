"""GPU checks of issue O that the CPU tests can only fake: host synchronisations per training iteration (counted by
``torch.cuda.set_sync_debug_mode``), ``MinibatchStdDev`` without synchronisation, a float16 step repeated after an
out-of-memory error inside the optimiser step, and what a 3D upsampling past 32-bit indexing raises. Writes JSON.

    python3 scripts/device_smoke.py --out smoke.json            # on a GPU machine (scripts/device_check.sh runs it)
    .venv/bin/python scripts/device_smoke.py --device cpu --out /tmp/smoke.json   # the parts that run on a CPU
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from medvol.benchmarks import environment
from medvol.benchmarks.training import iteration_stepper
from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.memory import is_out_of_memory
from medvol.networks import MinibatchStdDev
from medvol.networks.factory import build
from medvol.objectives.adversarial import WassersteinGradientPenalty


def _loader(size: int, count: int, batch: int, num_classes: int = 0):
    images = torch.rand(count, 1, size, size, size) * 2 - 1
    labels = torch.arange(count) % max(num_classes, 1)
    items = [{"image": image, "label": label} for image, label in zip(images, labels)]
    return torch.utils.data.DataLoader(items, batch_size=batch, shuffle=True, drop_last=True)


def _trainer(device, size: int, precision: str, iterations: int):
    torch.manual_seed(0)
    networks = build("wgan_gp", 3, size, base_channels=8)
    generator, critic = networks["generator"].to(device), networks["critic"].to(device)
    return GenerativeAdversarialTrainer(
        device, _loader(size, 64, 4), generator, critic, torch.optim.Adam(generator.parameters(), lr=1e-4),
        torch.optim.Adam(critic.parameters(), lr=1e-4), WassersteinGradientPenalty(), max_iterations=iterations,
        precision=precision, health_interval=0, resume=False, ema_decay=0.999,
    )


def syncs_per_iteration(device: torch.device, size: int, iterations: int) -> dict:
    """Synchronising calls per iteration of a 3D WGAN-GP (bf16, EMA) under ``set_sync_debug_mode("warn")``, counted
    over `iterations` iterations after 2 warm-up ones (planning and first-step allocations left out)."""
    trainer = _trainer(device, size, "bf16", iterations=10**9)
    step = iteration_stepper(trainer)
    step(2)
    debug_mode = torch.cuda.set_sync_debug_mode if device.type == "cuda" else (lambda mode: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        debug_mode("warn")
        try:
            step(iterations)
        finally:
            debug_mode("default")
    sources: dict[str, int] = {}
    for warning in caught:
        if "synchroniz" in str(warning.message):
            key = f"{Path(warning.filename).name}:{warning.lineno}"
            sources[key] = sources.get(key, 0) + 1
    return {"iterations": iterations, "per_iteration": sum(sources.values()) / iterations, "sources": sources,
            "iteration_reached": int(trainer.state.iteration)}


def minibatch_std_syncs(device: torch.device) -> dict:
    features, labels = torch.randn(16, 32, 8, 8, 8, device=device), torch.randint(0, 3, (16,), device=device)
    layer = MinibatchStdDev()
    torch.cuda.set_sync_debug_mode("error")
    try:
        layer(features), layer(features, labels)
        return {"synchronises": False}
    except RuntimeError as error:
        return {"synchronises": True, "error": str(error).splitlines()[0]}
    finally:
        torch.cuda.set_sync_debug_mode("default")


def fp16_retry(device: torch.device) -> dict:
    """Weights after 2 iterations with an out-of-memory error injected into the critic's first optimiser step (before
    the update), against the same run without it (tests/engines/toys networks, no batch norm; SGD, where gradients
    x65536 would show at once)."""
    from tests.engines.toys import ToyWasserstein, make_gan, make_loader

    weights = []
    for inject in (False, True):
        generator, critic, _, _ = make_gan(2, 8, seed=3)
        generator, critic = generator.to(device), critic.to(device)
        g_opt, d_opt = torch.optim.SGD(generator.parameters(), lr=1e-2), torch.optim.SGD(critic.parameters(), lr=1e-2)
        if inject:
            step, calls = d_opt.step, []

            def failing_step(*args, _step=step, _calls=calls, **kwargs):
                _calls.append(1)
                if len(_calls) == 1:
                    raise torch.OutOfMemoryError("CUDA out of memory (injected before the update)")
                return _step(*args, **kwargs)

            d_opt.step = failing_step
        trainer = GenerativeAdversarialTrainer(
            device, make_loader(shuffle=False), generator, critic, g_opt, d_opt, ToyWasserstein(), max_iterations=2,
            micro_batch=4, precision="fp16", health_interval=0,
        )
        torch.manual_seed(11)
        trainer.run()
        weights.append(torch.cat([p.detach().float().flatten() for p in list(generator.parameters()) + list(critic.parameters())]))
    difference = float((weights[0] - weights[1]).abs().max())
    return {"max_weight_difference": difference, "ok": difference < 1e-3}


def index_limit_error(device: torch.device) -> dict:
    """What nearest 3D upsampling of a tensor whose output passes 2^31 elements raises, and how medvol classifies it."""
    try:
        x = torch.empty(34, 16, 128, 128, 128, device=device, dtype=torch.bfloat16)
        y = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        torch.cuda.synchronize(device)
        del x, y
        return {"raised": None}
    except RuntimeError as error:
        return {"raised": str(error).splitlines()[0][:300], "is_out_of_memory": is_out_of_memory(error)}
    finally:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=32, help="volume size of the sync count (default 32)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", default="device_smoke.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    result: dict = {"environment": environment()}
    checks = {
        "fp16_retry": lambda: fp16_retry(device),
        "syncs_per_iteration": lambda: syncs_per_iteration(device, args.size, args.iterations),
    }
    if device.type == "cuda":
        checks.update({
            "minibatch_std": lambda: minibatch_std_syncs(device),
            "index_limit": lambda: index_limit_error(device),
        })
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            result[name] = check()
        except Exception as error:  # one failed check must not lose the others' results
            result[name] = {"failed": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"}
        result[name]["seconds"] = round(time.perf_counter() - start, 2)
        print(name, json.dumps(result[name]), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
