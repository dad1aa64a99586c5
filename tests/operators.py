"""`OperatorLog`: the names of the ATen operators a block of code runs, for tests that count what reaches the device
(host synchronisations, fused updates) on a CPU."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OperatorLog(TorchDispatchMode):
    """Records ``names``: each operator run inside the ``with`` block; indexing with a boolean mask also adds
    ``"nonzero"`` (what such indexing runs on a GPU, a host synchronisation)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.names.append(name)
        if name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())):
            self.names.append("nonzero")
        return func(*args, **(kwargs or {}))
