"""Training benchmark driver: prints the table of `medvol.benchmarks.training` and saves the results as JSON.

    .venv/bin/python scripts/bench_training.py --repeats 3 --out bench_training.json           # CPU figures
    python scripts/bench_training.py --device cuda --size 64 --batch 8 --out bench_training_gpu.json   # on a GPU:
        adds planner micro-batch vs bisection-found largest batch at 64^3 and 128^3
    .venv/bin/python scripts/bench_training.py --dry-run --out /tmp/dry.json   # every code path, tiny, on the CPU

scripts/device_check.sh runs the GPU measurements of docs/benchmarks.md in one call on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medvol.benchmarks import format_table
from medvol.benchmarks import training as training_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--size", type=int, default=16, help="volume size of the throughput cases (size^3, default 16)")
    parser.add_argument("--batch", type=int, default=4, help="batch size of the throughput cases (default 4)")
    parser.add_argument("--critic-steps", type=int, default=1, help="critic updates per generator update (default 1)")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per case and repeat (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    parser.add_argument("--channels", type=int, default=16, help="base channels of the residual networks (default 16)")
    parser.add_argument("--planner-sizes", type=lambda t: tuple(int(v) for v in t.split(",") if v), default=(64, 128),
                        help="volume sizes of the CUDA planner rows (default 64,128; '' for none)")
    parser.add_argument("--planner-effective-batch", type=int, default=64, help="effective batch to plan for (default 64)")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads during the run")
    parser.add_argument("--no-throughput", action="store_true", help="only the planner rows")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU through every code path, the GPU planner rows included (with a 1 GiB "
                             "budget): checks that the script runs, measures nothing")
    parser.add_argument("--out", default="bench_training.json", help="JSON output file (default bench_training.json)")
    args = parser.parse_args()
    budget = None
    if args.dry_run:
        args.device, args.size, args.batch, args.iterations, args.repeats, args.channels = "cpu", 16, 2, 1, 1, 4
        args.planner_sizes, args.planner_effective_batch, budget = (16,), 2, 1024**3
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("ignite", "medvol.engines"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = training_benchmark.run(
        size=args.size, batch=args.batch, critic_steps=args.critic_steps, iterations=args.iterations, repeats=args.repeats,
        device=args.device, planner_sizes=args.planner_sizes, planner_effective_batch=args.planner_effective_batch,
        channels=args.channels, torch_threads=args.torch_threads, throughput=not args.no_throughput,
        planner_budget_bytes=budget,
    )
    print(format_table({"training": result}))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
