"""Peak RSS of a 2-process DistributedDataParallel (gloo, CPU) training with and without activation checkpointing.

Each configuration runs in fresh processes (2 ranks, `torch.multiprocessing.spawn`): a thin, deep 3D convolutional
network (8 residual-free blocks of 16-channel 3^3 convolutions at full resolution, 56 K parameters, so that activations
dominate) wrapped in DDP trains a few iterations as an autoencoder through `AutoencoderTrainer`; each rank reports its
peak resident set size (`ru_maxrss`). (medvol's CAE at 64^3 is weight-dominated: 26.7 M parameters, 427 MB with Adam,
against 44 MB of activations per sample, and its blocks are two large Sequentials.) Configurations:

- ``none``: no activation checkpointing;
- ``wrapper (before)``: what applying checkpointing to the DDP wrapper did before: its one child, the whole network,
  checkpointed as one segment;
- ``blocks (now)``: `activation_checkpointing=True`: the network's blocks inside the wrapper.

Prints one row per configuration and writes JSON. Usage:
``python scripts/bench_ddp_checkpointing.py [--size 64] [--batch-size 2] [--iterations 2] [--out bench_ddp_checkpointing.json]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

MODES = ("none", "wrapper (before)", "blocks (now)")


class ThinDeepNetwork(torch.nn.Module):
    """``x -> x``-shaped output through `depth` blocks of conv + LeakyReLU at full resolution (activation-heavy)."""

    def __init__(self, spatial_dims: int = 3, channels: int = 16, depth: int = 8):
        super().__init__()
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        self.spatial_dims = spatial_dims
        self.blocks = torch.nn.Sequential(
            torch.nn.Sequential(conv(1, channels, 3, padding=1), torch.nn.LeakyReLU(0.2)),
            *[torch.nn.Sequential(conv(channels, channels, 3, padding=1), torch.nn.LeakyReLU(0.2)) for _ in range(depth - 2)],
            torch.nn.Sequential(conv(channels, 1, 3, padding=1), torch.nn.Sigmoid()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, mode: str, size: int, batch_size: int, iterations: int, results) -> None:
    from medvol.engines import AutoencoderTrainer
    from medvol.engines.memory import _checkpointed_forward
    from medvol.objectives import ReconstructionLoss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        network = DistributedDataParallel(ThinDeepNetwork(3))
        if mode == "wrapper (before)":
            inner = network.module
            inner.forward = functools.partial(_checkpointed_forward, inner.forward)
        images = torch.rand(batch_size * 2, 1, size, size, size)
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, drop_last=True)
        trainer = AutoencoderTrainer(
            "cpu", loader, network, torch.optim.Adam(network.parameters(), lr=1e-3), ReconstructionLoss(),
            max_iterations=iterations, precision="fp32", activation_checkpointing=mode == "blocks (now)",
        )
        start = time.perf_counter()
        trainer.run()
        seconds = time.perf_counter() - start
        results[rank] = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--out", default="bench_ddp_checkpointing.json")
    args = parser.parse_args()
    rows = {}
    for mode in MODES:
        results = mp.Manager().dict()
        mp.spawn(_rank, args=(_free_port(), mode, args.size, args.batch_size, args.iterations, results), nprocs=2, join=True)
        rows[mode] = {
            "peak_rss_mib_per_rank": [round(results[r]["peak_rss_mib"], 1) for r in range(2)],
            "seconds": round(max(results[r]["seconds"] for r in range(2)), 2),
        }
        print(f"{mode:18s} peak RSS per rank {rows[mode]['peak_rss_mib_per_rank']} MiB, {rows[mode]['seconds']} s", flush=True)
    document = {"size": args.size, "batch_size": args.batch_size, "iterations": args.iterations, "network": "ThinDeepNetwork 3D (8 blocks, 16 channels)", "rows": rows}
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
