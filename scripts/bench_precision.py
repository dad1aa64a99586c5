"""bf16 against fp32 on this machine's CPU: training speed and GAN convergence (docs/benchmarks.md, "bf16 on CPUs").

    .venv/bin/python scripts/bench_precision.py speed [--family dcgan] [--published-widths] [--threads 1]
    .venv/bin/python scripts/bench_precision.py convergence [--iterations 600] [--families dcgan,wgan_gp]

`speed`: seconds per `GenerativeAdversarialTrainer` iteration (critic steps + one generator step, batch 16, 2D 64^2 random
images), fp32 against bf16 autocast, median over 3 interleaved repeats of the median of 4 timed iterations after a
warm-up one; the bundle's data-sized widths (`sized_options` for 200 images) or the networks' published widths.
`convergence`: the phantoms of tests/objectives/gan_training.py at 16^2, its small networks, the real trainer in
fp32 and in bf16 with the same seeds (0 and 1); every 100 iterations the mean-image distance of 256 samples (fixed
latents) to the real images, the RNG restored after each measurement. Both print JSON (and `--out` saves it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events

from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.amp import cpu_bf16_support
from medvol.networks.factory import build, sized_options
from medvol.objectives import build_objective, build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the phantoms and measures of the convergence tests
from tests.objectives.gan_training import SMALL_NETWORKS, mean_image_distance, phantom_training_set, sample  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def _trainer(family: str, networks: dict, loader, iterations: int, precision: str, seed: int = 0) -> GenerativeAdversarialTrainer:
    objective, settings = build_objective(family)
    generator, critic = networks["generator"], networks["critic"]
    return GenerativeAdversarialTrainer(
        "cpu", loader, generator, critic, build_optimizer(generator.parameters(), settings["optimizer"]),
        build_optimizer(critic.parameters(), settings["optimizer"]), objective, max_iterations=iterations,
        precision=precision, seed=seed, health_interval=0,
    )


def speed(family: str, published_widths: bool) -> dict:
    """Median seconds per iteration in fp32 and bf16 and the speed-up."""
    images = torch.rand(64, 1, 64, 64) * 2 - 1
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(64, dtype=torch.long))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, drop_last=True)
    options = {} if published_widths else sized_options(family, 2, 64, {}, dataset_size=200)
    medians: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    parameters = 0
    for _ in range(3):
        for precision in PRECISIONS:
            torch.manual_seed(0)
            networks = build(family, 2, (64, 64), **options)
            trainer = _trainer(family, networks, loader, 5, precision)
            times: list[float] = []
            trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: times.append(e.state.iteration_seconds))
            trainer.run()
            medians[precision].append(statistics.median(times[1:]))
            parameters = sum(p.numel() for net in networks.values() for p in net.parameters())
    seconds = {p: round(statistics.median(v), 3) for p, v in medians.items()}
    return {"family": family, "published_widths": published_widths, "parameters": parameters,
            "median_seconds": seconds, "bf16_speedup": round(seconds["fp32"] / seconds["bf16"], 2), "all": medians}


def convergence(families: list[str], iterations: int) -> dict:
    """Mean-image distance curves, fp32 and bf16, two seeds per family."""
    runs = {}
    for family in families:
        for seed in (0, 1):
            for precision in PRECISIONS:
                torch.manual_seed(seed)
                real, labels = phantom_training_set()
                loader = torch.utils.data.DataLoader(
                    torch.utils.data.TensorDataset(real, labels), batch_size=32, shuffle=True, drop_last=True
                )
                networks = build(family, 2, (16, 16), **SMALL_NETWORKS[family])
                generator = networks["generator"]
                trainer = _trainer(family, networks, loader, iterations, precision, seed)
                curve = [[0, round(mean_image_distance(sample(generator, 256, seed=1), real), 4)]]
                generator.train()

                def record(engine, generator=generator, real=real, curve=curve):
                    if engine.state.iteration % 100 == 0:
                        state = torch.get_rng_state()
                        curve.append([engine.state.iteration, round(mean_image_distance(sample(generator, 256, seed=1), real), 4)])
                        generator.train()
                        torch.set_rng_state(state)

                trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
                start = time.perf_counter()
                trainer.run()
                runs[f"{family}/{precision}/seed{seed}"] = {
                    "distance_curve": curve,
                    "seconds_per_iteration": round((time.perf_counter() - start) / iterations, 4),
                }
                print(family, precision, seed, curve, flush=True)
    return {"iterations": iterations, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["speed", "convergence"])
    parser.add_argument("--family", default="dcgan", help="speed: the GAN family (default dcgan)")
    parser.add_argument("--published-widths", action="store_true", help="speed: the networks' published widths")
    parser.add_argument("--families", default="dcgan,wgan_gp", help="convergence: families (default dcgan,wgan_gp)")
    parser.add_argument("--iterations", type=int, default=600, help="convergence: iterations (default 600)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", help="also save the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    supported, reason = cpu_bf16_support()
    result = {"cpu_bf16": supported, "cpu_bf16_reason": reason, "threads": args.threads}
    if args.what == "speed":
        result.update(speed(args.family, args.published_widths))
    else:
        result.update(convergence(args.families.split(","), args.iterations))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
