"""How many torch threads a CPU training takes on a machine that others share."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


def intra_op_threads(default: int) -> int:
    """Torch threads for a training on the CPU: `default` on an idle machine, one when the CPUs are already busy
    (1-minute load average at or above the core count). On a shared 2-core machine, two threads that wait for each
    other at every operation made a cGAN step 20-30x slower than one thread (2.99 s against 0.15-0.2 s per iteration)
    and an auxiliary-classifier WGAN-GP step at 32^2 10x slower (30 s against 2.9 s, load average 9; docs/results.md).

    Args:
        default: the threads to use when the machine is not busy (torch's setting).
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return default
    return 1 if load >= (os.cpu_count() or 1) else default


@contextmanager
def training_threads(device: str | torch.device | None) -> Iterator[int]:
    """Within the block, torch uses `intra_op_threads` threads when training on the CPU (restored afterwards);
    yields the number chosen. A GPU training keeps torch's setting."""
    threads = torch.get_num_threads()
    chosen = threads if device is not None and torch.device(device).type == "cuda" else intra_op_threads(threads)
    if chosen != threads:
        logger.info("the CPUs are busy (load average %.1f): training with %d torch thread", os.getloadavg()[0], chosen)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(threads)
