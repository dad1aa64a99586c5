"""The device medvol computes on when the user names none."""

from __future__ import annotations

import torch


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, or CUDA when available, else the CPU.

    Args:
        device: the device asked for (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a `torch.device`), or None.
    """
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
