"""Helpers the bundles' training configs call: the datalist and dataset of a prepared folder, the batch size per
process, event filters and the console statistics."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from medvol.engines.distributed import world_size
from medvol.errors import MedvolInputError

__all__ = ["datalist_path", "class_count", "training_dataset", "fit_batch_size", "every", "scalar_outputs"]

logger = logging.getLogger(__name__)


def datalist_path(dataset_dir: str | os.PathLike) -> str:
    """The ``datalist.json`` of a prepared folder (or the file itself).

    Raises:
        MedvolInputError: no datalist there (the folder was not prepared).
    """
    from medvol.io.datalist import datalist_file

    path = datalist_file(dataset_dir)
    if not path.is_file():
        raise MedvolInputError(path, "no datalist here: prepare the data first (`medvol prepare SOURCE --out DIR`)")
    return str(path.resolve())


def class_count(dataset_dir: str | os.PathLike) -> int:
    """The number of classes of a prepared folder's datalist (what conditional families condition on)."""
    from medvol.io.datalist import read_datalist

    return len(read_datalist(datalist_path(dataset_dir)).get("classes") or [])


def training_dataset(datalist_file: str | os.PathLike, options: Mapping[str, Any]) -> torch.utils.data.Dataset:
    """The training split of a datalist (`medvol.data.datasets.build_dataset` with `options`).

    Raises:
        MedvolInputError: the split is empty.
    """
    from medvol.data.datasets import build_dataset

    dataset = build_dataset(datalist_file, split="training", **dict(options))
    if len(dataset) == 0:
        raise MedvolInputError(datalist_file, "the training split holds no samples")
    return dataset


def fit_batch_size(batch_size: int, dataset_size: int, distributed: bool = False) -> int:
    """The batch size per process: `batch_size`, at most what the dataset (its share per process) holds, at least 1.

    Small datasets would otherwise give a loader that drops its only, incomplete batch.
    """
    per_process = dataset_size // (world_size() if distributed else 1)
    fitted = max(1, min(int(batch_size), per_process))
    if fitted < int(batch_size):
        logger.warning("batch size %d reduced to %d: the training split has %d samples", batch_size, fitted, dataset_size)
    return fitted


def every(interval: int | None) -> Callable[[Any, int], bool] | bool:
    """An ignite event filter that fires every `interval` iterations (False when `interval` is 0 or None)."""
    if not interval:
        return False
    return lambda engine, event: event % int(interval) == 0


def scalar_outputs(output: Any) -> dict[str, float]:
    """The float entries of a medvol trainer's ``engine.state.output`` (losses and logged terms), for StatsHandler."""
    if not isinstance(output, Mapping):
        return {}
    return {str(k): float(v) for k, v in output.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
