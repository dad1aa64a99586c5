"""Helpers the bundles' training configs call: the datalist and dataset of a prepared folder, the batch size per
process, event filters, the console statistics, and what differs between families (output range, trainer)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from medvol import families
from medvol.bundles.inference import exported_network_name
from medvol.engines.distributed import world_size
from medvol.errors import MedvolInputError

__all__ = [
    "datalist_path",
    "class_count",
    "training_dataset",
    "fit_batch_size",
    "every",
    "scalar_outputs",
    "output_range",
    "image_shape",
    "build_trainer",
    "critic_augment_settings",
    "exported_network_name",
]

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


def output_range(family: str) -> list[float]:
    """The intensity range of a family's images (`medvol.families.FamilySpec.output_range`): ``[0, 1]`` for the
    autoencoders (sigmoid output), ``[-1, 1]`` for the generators (tanh output)."""
    return list(families.get_family(family).output_range)


def image_shape(image_size: int | Sequence[int], spatial_dims: int) -> list[int]:
    """`image_size` as one size per spatial axis."""
    if isinstance(image_size, int):
        return [int(image_size)] * int(spatial_dims)
    return [int(s) for s in image_size]


def critic_augment_settings(value: Any, family: str) -> dict[str, Any]:
    """The bundle's ``critic_augment`` value as canonical settings (what run.json records and the trainer takes).

    Args:
        value: ``off``, ``fixed:P``, ``ada[:target=T,speed=S]`` or a mapping (`parse_critic_augment`).
        family: the bundle's family; the autoencoders have no critic and take only ``off``.

    Raises:
        MedvolInputError: an unreadable value, or augmentation asked of an autoencoder.
    """
    from medvol.transforms.differentiable import parse_critic_augment

    settings = parse_critic_augment(value, option="critic_augment")
    if "critic" not in families.get_family(family).networks and settings["mode"] != "off":
        raise MedvolInputError("critic_augment", f"{family} has no critic to augment for: use off")
    return settings


def build_trainer(
    family: str,
    networks: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    objective: Any,
    ema_decay: float | None = None,
    critic_augment: Any = None,
    **options: Any,
):
    """The trainer of a family (`medvol.families.FamilySpec.trainer`): `medvol.engines.AutoencoderTrainer` for the
    autoencoders, `medvol.engines.GenerativeAdversarialTrainer` for the GAN families (with an EMA generator when
    `ema_decay` is set).

    Args:
        family: a registered family (`medvol.families`).
        networks: the placed networks, ``{"autoencoder"}`` or ``{"generator", "critic"}``.
        optimizers: one optimiser per network, by the same names.
        objective: what `medvol.objectives.build_objective` built for the family.
        ema_decay: decay of the generator's exponential moving average (GAN families only).
        critic_augment: differentiable augmentation before every critic call (GAN families only; see
            `critic_augment_settings`).
        options: keyword arguments both trainers take (`medvol.engines.trainer.MedvolTrainer`).
    """
    spec = families.get_family(family)
    trainer = spec.trainer_class()
    if spec.is_autoencoder:
        return trainer(
            network=networks["autoencoder"], optimizer=optimizers["autoencoder"], loss_function=objective, **options
        )
    return trainer(
        generator=networks["generator"],
        critic=networks["critic"],
        g_optimizer=optimizers["generator"],
        d_optimizer=optimizers["critic"],
        objective=objective,
        ema_decay=ema_decay,
        critic_augment=critic_augment,
        **options,
    )
