"""An endless, resumable stream of batches over a data loader.

The adversarial trainer draws ``critic_steps`` real batches per generator step, so its position in the data is not
``iteration % len(loader)``. :class:`BatchStream` counts what it handed out (``data_epoch``, ``offset`` = batches
taken in that pass) and makes the order of every pass a function of ``(seed, data_epoch)`` only, so a resumed run
continues with exactly the batches the interrupted run would have seen next, without loading the skipped ones.

Shuffled loaders (``RandomSampler``) and sequential ones are replaced by one loader with the same dataset, batch size,
collate function and worker settings whose sampler yields the order of the current pass (from its ``offset`` on a
resume); it is built once, with persistent workers when it has workers, so a pass does not start new worker
processes. Any other sampler (weighted, distributed) is iterated as it is and, on resume, ``offset`` batches are
drawn and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler

__all__ = ["BatchStream"]


class _PassOrder(Sampler):
    """The sample order of one pass, set by :class:`BatchStream` before each pass (read in the main process)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


class BatchStream:
    """Endless iterator over ``loader``, pass after pass, with a state that survives a restart.

    Args:
        loader: a ``DataLoader`` (or any re-iterable of batches).
        seed: seeds the order of every pass (pass ``e`` is shuffled with ``seed`` and ``e``).
    """

    def __init__(self, loader: Iterable, seed: int = 0):
        self.loader = loader
        self.seed = int(seed)
        self.data_epoch = 0
        self.offset = 0
        self._iterator: Iterator | None = None
        self._pass_loader: DataLoader | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        for _ in range(2):
            if self._iterator is None:
                self._iterator = self._pass_iterator(self.data_epoch, self.offset)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.data_epoch += 1
                self.offset = 0
                continue
            self.offset += 1
            return batch
        raise RuntimeError("the training data loader yields no batches")

    def state_dict(self) -> dict[str, int]:
        return {"data_epoch": self.data_epoch, "offset": self.offset, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.data_epoch = int(state["data_epoch"])
        self.offset = int(state["offset"])
        self.seed = int(state.get("seed", self.seed))
        self._iterator = None

    def _pass_order(self, data_epoch: int) -> list[int] | None:
        loader = self.loader
        if not isinstance(loader, DataLoader) or loader.batch_size is None:
            return None
        sampler = loader.sampler
        n = len(loader.dataset)
        if isinstance(sampler, SequentialSampler):
            return list(range(n))
        if isinstance(sampler, RandomSampler) and not sampler.replacement and sampler.num_samples == n:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + data_epoch)
            return torch.randperm(n, generator=generator).tolist()
        return None

    def _pass_iterator(self, data_epoch: int, skip_batches: int) -> Iterator:
        order = self._pass_order(data_epoch)
        loader = self.loader
        if order is None:
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(data_epoch)
            iterator = iter(loader)
            for _ in range(skip_batches):
                next(iterator)
            return iterator
        if self._pass_loader is None:
            self._pass_loader = DataLoader(
                loader.dataset,
                batch_size=loader.batch_size,
                sampler=_PassOrder(),
                num_workers=loader.num_workers,
                collate_fn=loader.collate_fn,
                pin_memory=loader.pin_memory,
                drop_last=loader.drop_last,
                timeout=loader.timeout,
                worker_init_fn=loader.worker_init_fn,
                multiprocessing_context=loader.multiprocessing_context if loader.num_workers else None,
                generator=torch.Generator().manual_seed(self.seed * 1_000_003),
                prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
                persistent_workers=loader.num_workers > 0,
            )
        self._pass_loader.sampler.indices = order[skip_batches * loader.batch_size :]
        return iter(self._pass_loader)
