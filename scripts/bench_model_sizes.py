"""Model sizes per family: parameters and seconds per training iteration of the default (data-sized) networks.

    .venv/bin/python scripts/bench_model_sizes.py --out bench_model_sizes.json
    .venv/bin/python scripts/bench_model_sizes.py --families dcgan,cgan --cases 2d64 --dataset-size 300 --width 64

For each family and case (2D 32^2, 2D 64^2, 3D 32^3) it builds the networks the bundles build
(`medvol.networks.factory.sized_options` for `--dataset-size` training images, or `--width`), counts their
parameters, and times full training iterations on the CPU with the family's objective and optimiser (for the GAN
families one iteration is `critic_steps` critic updates and one generator update, as `medvol train` runs it; batch
16 in 2D, 8 in 3D, fp32). It also counts the parameters of the networks' published default widths, which the
bundles used before. Prints a table and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from medvol.families import family_names, get_family
from medvol.networks.factory import build, default_width, parameter_counts, sized_options
from medvol.objectives import build_objective, build_optimizer

CASES = {"2d32": (2, 32), "2d64": (2, 64), "3d32": (3, 32)}
BATCH = {2: 16, 3: 8}


def _iteration(family: str, networks: dict, objective, optimizers: dict, batch: int, spatial_dims: int, size: int,
               critic_steps: int, num_classes: int) -> None:
    shape = (batch, 1, *[size] * spatial_dims)
    if get_family(family).is_autoencoder:
        network = networks["autoencoder"]
        images = torch.rand(shape)
        optimizers["autoencoder"].zero_grad(set_to_none=True)
        output = network(images)
        loss = objective(output, images)
        (loss["loss"] if isinstance(loss, dict) else loss).backward()
        optimizers["autoencoder"].step()
        return
    generator, critic = networks["generator"], networks["critic"]
    labels = torch.randint(0, num_classes, (batch,)) if num_classes else None
    for _ in range(critic_steps):
        real = torch.rand(shape) * 2 - 1
        with torch.no_grad():
            fake = generator(torch.randn(batch, generator.latent_size), labels)
        optimizers["critic"].zero_grad(set_to_none=True)
        objective.discriminator_loss(critic, real, fake, labels=labels)["loss"].backward()
        optimizers["critic"].step()
        objective.after_critic_step(critic)
    optimizers["generator"].zero_grad(set_to_none=True)
    critic.requires_grad_(False)
    fake = generator(torch.randn(batch, generator.latent_size), labels)
    objective.generator_loss(critic, fake, labels=labels)["loss"].backward()
    critic.requires_grad_(True)
    optimizers["generator"].step()


def measure(family: str, case: str, dataset_size: int, width: int | None, iterations: int) -> dict:
    """One row: widths, parameters (sized and published), seconds per iteration."""
    spatial_dims, size = CASES[case]
    num_classes = 2 if get_family(family).conditional else 0
    options = sized_options(family, spatial_dims, size, {}, width=width, dataset_size=dataset_size)
    torch.manual_seed(0)
    networks = build(family, spatial_dims, size, num_classes=num_classes, **options)
    published = parameter_counts(build(family, spatial_dims, size, num_classes=num_classes))
    objective, settings = build_objective(family)
    optimizers = {name: build_optimizer(net.parameters(), settings["optimizer"]) for name, net in networks.items()}
    critic_steps = int(settings.get("critic_steps", 1))
    step = lambda: _iteration(family, networks, objective, optimizers, BATCH[spatial_dims], spatial_dims, size,  # noqa: E731
                              critic_steps, num_classes)
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    seconds = (time.perf_counter() - started) / iterations
    counts = parameter_counts(networks)
    return {
        "family": family, "case": case, "width": width or default_width(spatial_dims, dataset_size),
        "options": options, "parameters": counts, "total_parameters": sum(counts.values()),
        "published_parameters": sum(published.values()), "critic_steps": 0 if get_family(family).is_autoencoder else critic_steps,
        "batch": BATCH[spatial_dims], "seconds_per_iteration": round(seconds, 4),
        "minutes_per_1000_iterations": round(seconds * 1000 / 60, 1),
    }


def format_rows(rows: list[dict]) -> str:
    header = ("family", "case", "width", "parameters", "published", "critic steps", "s/iteration", "min/1000 it")
    lines = [
        (r["family"], r["case"], str(r["width"]), f"{r['total_parameters'] / 1e6:.2f} M",
         f"{r['published_parameters'] / 1e6:.2f} M", str(r["critic_steps"]), f"{r['seconds_per_iteration']:.3f}",
         f"{r['minutes_per_1000_iterations']:.1f}")
        for r in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    render = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths)) + " |" for cells in [header, *lines]]
    render.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(render)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(family_names()), help="comma separated (default: all)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma separated of {', '.join(CASES)} (default: all)")
    parser.add_argument("--dataset-size", type=int, default=300, help="training images the widths are sized for (default 300)")
    parser.add_argument("--width", type=int, help="base width instead of the data-sized default")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per row after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", default="bench_model_sizes.json", help="JSON output (default bench_model_sizes.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases.split(","):
        for family in args.families.split(","):
            rows.append(measure(family, case, args.dataset_size, args.width, args.iterations))
            print(f"{family} {case}: {rows[-1]['total_parameters']:,} parameters, {rows[-1]['seconds_per_iteration']:.3f} s/iteration", flush=True)
    print(format_rows(rows))
    document = {"threads": args.threads, "dataset_size": args.dataset_size, "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__, "rows": rows}
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
