"""Crash-safe checkpoints: atomic writes, a ``latest.json`` pointer, keep the last K and the best, safe loading.

Layout of a checkpoint folder (``RUN/checkpoints/``)::

    checkpoint_00000120.pt   one file per saved iteration (zero-padded so names sort by iteration)
    latest.json              {"format": 1, "iteration": 120, "file": "checkpoint_00000120.pt",
                              "best": {"file": ..., "iteration": ..., "metric": ...} | null,
                              "kept": [...files, oldest first...]}

A checkpoint is written to a hidden temporary file in the same folder, flushed and ``fsync``-ed, then renamed over
its final name with ``os.replace`` (atomic on POSIX and Windows); the folder is ``fsync``-ed; only then is
``latest.json`` rewritten the same way. A process killed at any moment therefore leaves either the previous
``latest.json`` pointing at a complete file, or the new one pointing at a complete file; a half-written temporary
file is never referenced and is removed by the next :class:`CheckpointManager`.

Checkpoint files hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)`` (no code runs while loading a file someone sent you). Random-number-generator states
are stored in that form by :func:`capture_rng_state` and restored by :func:`restore_rng_state`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvol.io.files import TEMP_PREFIX as _TEMP_PREFIX
from medvol.io.files import atomic_write as _atomic_write
from medvol.io.files import atomic_write_bytes

__all__ = ["CheckpointManager", "capture_rng_state", "restore_rng_state", "seed_cuda_device", "atomic_write_bytes"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")


def capture_rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python generator states, as tensors and plain lists (``weights_only``-loadable)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generator states captured by :func:`capture_rng_state`.

    The CUDA states are one per GPU visible when they were captured; on a machine that sees fewer GPUs (or none) the
    states of the visible ones are restored and a warning says that the others were dropped.
    """
    torch.set_rng_state(state["torch"])
    saved = list(state.get("cuda") or [])
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, cuda_state in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(cuda_state, index)
    if saved and len(saved) != visible:
        logger.warning(
            "the checkpoint holds the CUDA generator states of %d GPU(s) and %d are visible now: restored %d; CUDA random "
            "draws outside the training steps will differ from those of an uninterrupted run",
            len(saved), visible, min(len(saved), visible),
        )
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss"]))


def seed_cuda_device(device: str | torch.device, seed: int) -> None:
    """Seed the CUDA generator of `device` (``torch.cuda.manual_seed`` seeds the current device, which need not be
    the training one, e.g. ``cuda:1`` in a process whose current device is ``cuda:0``)."""
    device = torch.device(device)
    torch.cuda.init()
    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.cuda.default_generators[index].manual_seed(int(seed))


class CheckpointManager:
    """Save, prune and find checkpoints in one folder, never leaving a corrupt ``latest``.

    Example::

        manager = CheckpointManager("RUN/checkpoints", keep_last=3)
        manager.save(trainer_state, iteration=100, metric=0.12)
        state = manager.load_latest()          # None when the folder holds no checkpoint

    Args:
        directory: the checkpoint folder (created when missing).
        keep_last: how many of the most recent checkpoints to keep (at least 1).
        keep_best: also keep the checkpoint with the best ``metric`` passed to :meth:`save`.
        best_mode: ``"min"`` (lower metric is better, e.g. a loss) or ``"max"``.
        remove_leftovers: delete temporary files of interrupted writes; False for a reader (``medvol sample``)
            that may look at the folder while a training process is writing to it.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep_last: int = 3,
        keep_best: bool = True,
        best_mode: str = "min",
        remove_leftovers: bool = True,
    ):
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.best_mode = best_mode
        self.directory.mkdir(parents=True, exist_ok=True)
        if not remove_leftovers:
            return
        for leftover in self.directory.glob(f"{_TEMP_PREFIX}*"):
            logger.warning("removing an incomplete checkpoint write left by an interrupted run: %s", leftover)
            leftover.unlink(missing_ok=True)

    @property
    def pointer_path(self) -> Path:
        return self.directory / "latest.json"

    def read_pointer(self) -> dict[str, Any] | None:
        """The content of ``latest.json``, or None when there is none."""
        if not self.pointer_path.is_file():
            return None
        return json.loads(self.pointer_path.read_text())

    def checkpoint_files(self) -> list[Path]:
        """Complete checkpoint files in the folder, oldest iteration first."""
        files = [p for p in self.directory.iterdir() if _CHECKPOINT_NAME.match(p.name)]
        return sorted(files, key=lambda p: int(_CHECKPOINT_NAME.match(p.name).group(1)))

    def latest_path(self) -> Path | None:
        """The file ``latest.json`` points at (or, without a pointer, the newest checkpoint file)."""
        pointer = self.read_pointer()
        if pointer is not None:
            return self.directory / pointer["file"]
        files = self.checkpoint_files()
        return files[-1] if files else None

    def best_path(self) -> Path | None:
        pointer = self.read_pointer()
        if pointer is None or pointer.get("best") is None:
            return None
        return self.directory / pointer["best"]["file"]

    def save(self, state: Mapping[str, Any], iteration: int, metric: float | None = None) -> Path:
        """Write ``state`` as ``checkpoint_<iteration>.pt``, then point ``latest.json`` at it, then prune.

        Args:
            state: tensors, numbers, strings, lists and dicts only (what ``weights_only`` loading accepts).
            iteration: the training iteration the state belongs to.
            metric: optional value to rank checkpoints by for ``keep_best``.

        Returns:
            The path of the written checkpoint.
        """
        name = f"checkpoint_{iteration:08d}.pt"
        path = self.directory / name
        payload = {"format": CHECKPOINT_FORMAT, "iteration": int(iteration), **state}
        _atomic_write(path, lambda stream: torch.save(payload, stream))

        previous = self.read_pointer() or {}
        best = previous.get("best")
        if metric is not None and self.keep_best:
            better = best is None or (metric < best["metric"] if self.best_mode == "min" else metric > best["metric"])
            if better:
                best = {"file": name, "iteration": int(iteration), "metric": float(metric)}
        kept = [f for f in previous.get("kept", []) if f != name and (self.directory / f).is_file()] + [name]
        kept = kept[-self.keep_last :]
        pointer = {"format": CHECKPOINT_FORMAT, "iteration": int(iteration), "file": name, "best": best, "kept": kept}
        atomic_write_bytes(self.pointer_path, json.dumps(pointer, indent=2).encode())
        # files are deleted only after the pointer no longer names them
        protected = set(kept) | ({best["file"]} if best is not None else set())
        for stale in self.checkpoint_files():
            if stale.name not in protected:
                stale.unlink(missing_ok=True)
        return path

    @staticmethod
    def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load one checkpoint file safely (``weights_only=True``)."""
        return torch.load(path, map_location=map_location, weights_only=True)

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """Load the checkpoint ``latest.json`` points at; None when the folder has none."""
        path = self.latest_path()
        if path is None:
            return None
        return self.load(path, map_location=map_location)
