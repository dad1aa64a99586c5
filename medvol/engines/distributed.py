"""Distributed training under torchrun: join the process group, wrap networks in DistributedDataParallel, leave
files to rank 0 (the other ranks resume from its checkpoints), leave the group."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from medvol.engines.checkpoint import CheckpointManager

__all__ = [
    "world_size",
    "is_rank_zero",
    "unwrapped",
    "without_ddp_prefix",
    "DistributedNetwork",
    "place_networks",
    "init_distributed",
    "distributed_device",
    "RankZeroCheckpoints",
    "follow_rank_zero",
    "finish_distributed",
]

logger = logging.getLogger(__name__)
TEARDOWN_TIMEOUT_S = 60  # how long a finished rank waits for the others before leaving the process group
# how long a collective waits for the other ranks: rank 0 alone evaluates (FID feature space, samples) mid-run while
# the others wait in their next gradient all-reduce; NCCL's own default (10 minutes) would end such a run
COLLECTIVE_TIMEOUT_S = 2 * 3600


def world_size() -> int:
    """The number of processes of the distributed run; 1 outside one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DistributedNetwork(DistributedDataParallel):
    """`DistributedDataParallel` that also exposes the wrapped network's attributes (``latent_size``,
    ``num_classes``, ``spatial_dims``, ``encode``...), which the trainers and samplers read."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def place_networks(networks: Mapping[str, torch.nn.Module], device: str | torch.device, distributed: bool = False) -> dict:
    """The networks on `device`; wrapped in `DistributedNetwork` (DDP) when `distributed`.

    Batch-norm statistics stay per process (no buffer broadcast); gradients are averaged over all processes.
    """
    device = torch.device(device)
    placed = {}
    for name, network in networks.items():
        network = network.to(device)
        if distributed:
            # no buffer sync in forward: rank 0 alone runs extra forward passes (sample pictures, health checks),
            # and a collective inside them would wait forever for the other ranks (buffers are synced once here)
            network = DistributedNetwork(
                network, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
            )
        placed[name] = network
    return placed


def is_rank_zero() -> bool:
    """True in a single process and in the first process of a distributed run (the one that writes files)."""
    return world_size() == 1 or dist.get_rank() == 0


def unwrapped(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (or the network itself)."""
    return network.module if isinstance(network, DistributedDataParallel) else network


def without_ddp_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """A ``state_dict`` saved from a ``DistributedDataParallel`` wrapper (keys ``module.*``) as the network's own."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def init_distributed(device: str | torch.device | None = None, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> None:
    """Join the process group torchrun set up: NCCL for CUDA devices, gloo for the CPU; one GPU per local rank.

    Args:
        device: this process's device (default: `distributed_device`).
        timeout_s: how long a collective (a gradient all-reduce) waits for the other ranks before the run fails; it
            must cover what rank 0 does alone mid-run (evaluation during training: raise it for a large evaluation
            set, e.g. ``init_distributed(@device, timeout_s=14400)`` in ``multi_gpu_train.yaml``). Default 2 hours.
    """
    device = torch.device(device) if device is not None else distributed_device()
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=float(timeout_s))
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not is_rank_zero():
        # rank 0 alone reports progress and warnings (the other ranks would repeat them); errors come from every rank
        for name in ("", "ignite", "monai", "medvol"):
            logging.getLogger(name).setLevel(logging.ERROR)


def distributed_device() -> torch.device:
    """This process's device in a distributed run: ``cuda:<local rank>``, or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


class RankZeroCheckpoints(CheckpointManager):
    """The checkpoint folder as the ranks other than 0 see it: they resume from it but never write to it."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3):
        # skips CheckpointManager.__init__, which would remove rank 0's in-progress temporary files
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_best = False
        self.best_mode = "min"

    def save(self, state: Mapping[str, Any], iteration: int, metric: float | None = None) -> Path:
        return self.directory / f"checkpoint_{iteration:08d}.pt"


def follow_rank_zero(trainer: Any) -> bool:
    """Make a trainer on a rank other than 0 read rank 0's checkpoints without writing any; True on rank 0."""
    if is_rank_zero() or getattr(trainer, "checkpoints", None) is None:
        return True
    trainer.checkpoints = RankZeroCheckpoints(trainer.checkpoints.directory, trainer.checkpoints.keep_last)
    return True


def finish_distributed(distributed: bool) -> None:
    """Destroy the process group of a distributed run once every rank has reached this point.

    Without the barrier a rank that finishes first closes its connections while another still checkpoints or exports;
    with gloo that rank then occasionally aborts at exit ("terminate called without an active exception").
    """
    if distributed and dist.is_available() and dist.is_initialized():
        try:
            # gloo only (where the abort was seen), and bounded: a rank that failed mid-run must not hang the others
            # here; NCCL has no bounded barrier that could not be mismatched with a pending all-reduce
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=TEARDOWN_TIMEOUT_S))
        except RuntimeError as err:
            logger.warning("not every process reached the end of training: %s", str(err).splitlines()[0])
        finally:
            dist.destroy_process_group()
