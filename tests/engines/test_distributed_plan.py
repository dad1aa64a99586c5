"""Distributed ranks agree on one micro-batch: the smallest any rank planned (2 gloo processes on CPU)."""

from __future__ import annotations

import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from medvol.engines.memory import MemoryPlan


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, planned: list[int], results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(planned))
    try:
        plan = MemoryPlan.fixed(8, planned[rank], precision="fp32", device="cpu", checkpointing=False)
        agreed = plan.agreed_across_ranks()
        results[rank] = (agreed.micro_batch, agreed.accumulation_steps, agreed.effective_batch)
    finally:
        dist.destroy_process_group()


def test_ranks_take_the_smallest_planned_micro_batch():
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), [4, 2], results), nprocs=2, join=True)
    assert dict(results) == {0: (2, 4, 8), 1: (2, 4, 8)}


def test_a_single_process_keeps_its_plan():
    plan = MemoryPlan.fixed(8, 4, precision="fp32", device="cpu", checkpointing=False)
    assert not dist.is_initialized()
    assert plan.agreed_across_ranks() is plan
