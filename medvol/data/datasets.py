"""Slice-wise and volumetric datasets from one datalist, with the preprocessing cached on disk.

A datalist split (``training`` / ``validation`` / ``test`` of ``datalist.json``, see docs/architecture.md) feeds:

- ``volume`` mode: one sample per volume (or one random patch of `patch_size` per volume and epoch),
- ``slice`` mode: one sample per kept slice of every volume; 2D image files are one sample each.

Samples are dicts ``{"image": MetaTensor [1, ...] in the output range, "label": int (-1 when unlabelled),
"subject": str}``. The deterministic preprocessing (`medvol.transforms.presets`) is cached per volume by MONAI's
`PersistentDataset` under ``cache_dir/<settings key>/``: the key hashes every preprocessing setting, so changing
size, spacing or intensity never reuses a stale cache, and each item's hash includes the file's size and
modification time. Random patches and augmentation run after the cache, on every read.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, RandSpatialCropd, SelectItemsd, SpatialPadd, apply_transform
from monai.utils import StrEnum, look_up_option

from medvol.errors import MedvolInputError
from medvol.io.datalist import datalist_file, read_datalist
from medvol.io.files import image_stem, is_image_2d
from medvol.transforms.augment import classical_augmentation
from medvol.transforms.intensity import (
    DEFAULT_OUTPUT_RANGE,
    DEFAULT_PERCENTILES,
    IntensityKind,
    ScaleIntensityWindow,
)
from medvol.transforms.presets import PreprocessingSettings
from medvol.transforms.spatial import ShapeMode, extract_slice, kept_slice_indices

SPLITS = ("training", "validation", "test")
SAMPLE_KEYS = ("image", "label", "subject")
UNLABELLED = -1

logger = logging.getLogger(__name__)


class DatasetMode(StrEnum):
    """``slice``: 2D samples (slices of volumes, or 2D images); ``volume``: 3D samples (volumes or patches)."""

    SLICE = "slice"
    VOLUME = "volume"


def load_datalist(source: str | os.PathLike | Mapping) -> tuple[dict, Path | None]:
    """The datalist dict (read by `medvol.io.datalist.read_datalist`) and the folder relative image paths are
    resolved against (None for a dict).

    Args:
        source: path of a ``datalist.json`` (or of the folder holding it), or an already loaded dict.
    """
    if isinstance(source, Mapping):
        return dict(source), None
    path = datalist_file(source)
    return read_datalist(path), path.parent


def _subject_from_path(image: str) -> str:
    return image_stem(image)


def _label(entry: Mapping, classes: Sequence[str], where: str) -> int:
    label = entry.get("label")
    if label is None:
        return UNLABELLED
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if label not in classes:
            raise MedvolInputError(where, f"label {label!r} is not one of the datalist classes {list(classes)}")
        return list(classes).index(label)
    return int(label)


def split_items(datalist: Mapping, split: str, base_dir: str | os.PathLike | None = None) -> list[dict]:
    """The entries of one split as dataset items ``{"image", "label", "subject", "source_stamp"}``.

    ``source_stamp`` (file size and modification time) enters the cache hash, so a rewritten file is reprocessed.

    Args:
        datalist: the datalist dict.
        split: ``training``, ``validation`` or ``test``.
        base_dir: folder that relative image paths are relative to (the datalist's folder).
    """
    where = str(Path(base_dir) / "datalist.json") if base_dir is not None else "datalist"
    if split not in datalist or not isinstance(datalist[split], list):
        present = [s for s in SPLITS if s in datalist]
        raise MedvolInputError(where, f"has no split {split!r} (it has {present})")
    classes = datalist.get("classes") or []
    items = []
    for entry in datalist[split]:
        if not isinstance(entry, Mapping) or "image" not in entry:
            raise MedvolInputError(where, f"entry {entry!r} of split {split!r} has no 'image'")
        image = Path(entry["image"])
        if not image.is_absolute() and base_dir is not None:
            image = Path(base_dir) / image
        try:
            stat = image.stat()
        except OSError:
            raise MedvolInputError(image, "image listed in the datalist does not exist or cannot be read") from None
        items.append(
            {
                "image": str(image),
                "label": _label(entry, classes, where),
                "subject": str(entry.get("subject") or _subject_from_path(str(image))),
                "source_stamp": f"{stat.st_size}:{stat.st_mtime_ns}",
            }
        )
    return items


class SliceDataset(torch.utils.data.Dataset):
    """2D samples from preprocessed volumes: every kept slice of every volume; a 2D image is one sample.

    An index ``(volume, slice)`` and the most recently read volumes are held in memory: a sample reads its (cached)
    volume on access and keeps it in a least-recently-used store of at most `cache_bytes` decoded volumes (always the
    last one), so shuffled slices of a training set that fits the budget read each volume from the disk cache once
    instead of once per slice; a larger set is read with a hit rate of about budget / set size. With DataLoader
    workers every worker holds its own store. Building the index reads every volume once (and fills the disk cache).

    Args:
        volumes: a dataset of preprocessed samples ``{"image": [C, x, y(, z)], "label", "subject"}``, without
            random transforms.
        axis: spatial axis the slices are cut across.
        min_foreground_fraction: drop slices whose fraction of foreground voxels is smaller; 0 keeps all.
        foreground_level: relative intensity above which a voxel is foreground (see `foreground_threshold`).
        transform: random transforms applied to each 2D sample after slicing (augmentation).
        cache_bytes: bytes of decoded volumes kept in memory (0: only the last one).

    Attributes:
        index: ``(volume position, slice index)`` of every sample (slice index -1 for a 2D image).
        dropped_slices: number of dropped slices per subject (logged, never silent).
    """

    def __init__(
        self,
        volumes: Sequence[Mapping],
        axis: int = 2,
        min_foreground_fraction: float = 0.0,
        foreground_level: float = 0.05,
        transform=None,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        self.volumes = volumes
        self.axis = axis
        self.transform = transform
        self.cache_bytes = int(cache_bytes)
        self.index: list[tuple[int, int]] = []  # (volume position, slice index; -1 for a 2D image)
        self.dropped_slices: dict[str, int] = {}
        self._recent: OrderedDict[int, tuple[Mapping, int]] = OrderedDict()  # position -> (volume, bytes)
        self._recent_bytes = 0
        self.volume_reads = 0
        for position in range(len(volumes)):
            volume = self._volume(position)
            image = volume["image"]
            if image.ndim - 1 == 2:
                self.index.append((position, -1))
                continue
            kept = kept_slice_indices(image, axis, min_foreground_fraction, foreground_level)
            self.index.extend((position, k) for k in kept)
            subject = str(volume["subject"])
            self.dropped_slices[subject] = self.dropped_slices.get(subject, 0) + image.shape[axis + 1] - len(kept)
        dropped = sum(self.dropped_slices.values())
        if dropped:
            logger.info(
                "slice dataset: dropped %d of %d slices with a foreground fraction below %g (%d subjects affected)",
                dropped, dropped + len(self.index), min_foreground_fraction,
                sum(1 for n in self.dropped_slices.values() if n),
            )

    def __len__(self) -> int:
        return len(self.index)

    def _volume(self, position: int) -> Mapping:
        if position in self._recent:
            self._recent.move_to_end(position)
            return self._recent[position][0]
        volume = self.volumes[position]
        self.volume_reads += 1
        image = volume["image"]
        size = image.numel() * image.element_size() if isinstance(image, torch.Tensor) else 0
        self._recent[position] = (volume, size)
        self._recent_bytes += size
        while len(self._recent) > 1 and self._recent_bytes > self.cache_bytes:
            self._recent_bytes -= self._recent.popitem(last=False)[1][1]
        return volume

    def __getitem__(self, index: int) -> dict:
        position, slice_index = self.index[index]
        volume = self._volume(position)
        image = volume["image"] if slice_index < 0 else extract_slice(volume["image"], self.axis, slice_index)
        sample = {"image": image, "label": volume["label"], "subject": volume["subject"]}
        return apply_transform(self.transform, sample) if self.transform is not None else sample


def _datalist_defaults(datalist: Mapping) -> tuple[dict, dict]:
    preprocessing = datalist.get("preprocessing") or {}
    intensity = datalist.get("intensity") or {}
    return dict(preprocessing), dict(intensity)


def build_dataset(
    datalist: str | os.PathLike | Mapping,
    *,
    split: str = "training",
    mode: DatasetMode | str | None = None,
    size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    intensity: IntensityKind | str | None = None,
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] | None = None,
    output_range: Sequence[float] | None = None,
    shape_mode: ShapeMode | str | None = None,
    crop_foreground: bool | None = None,
    slice_axis: int = 2,
    min_foreground_fraction: float = 0.0,
    foreground_level: float = 0.05,
    patch_size: Sequence[int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    augment: bool | Mapping = False,
    volume_size: Sequence[int] | None = None,
) -> torch.utils.data.Dataset:
    """A slice-wise or volumetric dataset of one datalist split.

    Settings left as None come from the datalist (``mode``, ``preprocessing.size``, ``preprocessing.spacing``,
    ``preprocessing.shape_mode``, ``preprocessing.crop_foreground``, ``preprocessing.volume_size`` (slice mode),
    ``intensity.kind``, ``intensity.window`` (``ct``, ``fixed``),
    ``intensity.percentiles`` and ``intensity.output_range``), then from the defaults (volume mode, ``crop_pad``,
    no foreground crop, MR scaling of the 0.5-99.5 percentiles to [-1, 1]). So training, sampling and evaluation
    see the images the way ``medvol prepare`` recorded (and previewed) them.
    The returned dataset has an attribute ``preprocessing`` (the `PreprocessingSettings` used).

    Args:
        datalist: path of ``datalist.json`` (or its folder), or the loaded dict.
        split: ``training``, ``validation`` or ``test``.
        mode: ``slice`` (2D samples) or ``volume`` (3D samples).
        size: spatial shape of the samples (2 entries in slice mode, 3 in volume mode); None keeps the shapes
            (batches then need equal input shapes).
        spacing: voxel size in mm the images are resampled to, None keeps it: 3 values, or in slice mode 2 (the
            in-plane spacing; volumes keep their spacing along `slice_axis`).
        intensity: ``mr``, ``ct``, ``minmax`` or ``fixed`` (see `ScaleIntensityWindow`); scaled after the spatial
            steps, on the samples' grid.
        window: window of ``ct`` in HU (default -1000, 1000) and of ``fixed``.
        percentiles: MR percentiles (default 0.5, 99.5).
        output_range: intensity range of the samples (default -1, 1).
        shape_mode: ``crop_pad``, ``resize`` or ``fit`` (see `medvol.transforms.spatial.ShapeMode`); how images reach
            `size`.
        crop_foreground: crop each image to its foreground (body) bounding box before fitting it to `size`.
        slice_axis: slice mode: the spatial axis slices are cut across (2: axial for RAS volumes).
        min_foreground_fraction: slice mode: drop slices with less foreground than this fraction.
        foreground_level: slice mode: relative intensity level of the foreground.
        patch_size: volume mode: one random patch of this shape per volume and read (after `size`, if given).
        cache_dir: folder of the disk cache; None disables caching (then a slice-mode sample recomputes its volume
            whenever a slice of another volume was read in between: give a cache for shuffled training).
        augment: False, True (the classical preset), or keyword arguments for `classical_augmentation`.
        volume_size: slice mode: bring every volume to this 3D shape as volume mode with ``size=volume_size`` does,
            then cut the slices (the slices of that volumetric grid); `size` defaults to its in-plane part. Volume
            files only.
    """
    datalist_dict, base_dir = load_datalist(datalist)
    where = str(base_dir / "datalist.json") if base_dir is not None else "settings"
    preprocessing_defaults, intensity_defaults = _datalist_defaults(datalist_dict)
    try:
        mode = look_up_option(mode or datalist_dict.get("mode") or DatasetMode.VOLUME, DatasetMode)
    except ValueError:
        raise MedvolInputError(where, f"unknown mode {mode or datalist_dict.get('mode')!r} (slice or volume)") from None
    spatial_dims = 2 if mode == DatasetMode.SLICE else 3
    if volume_size is not None and size is None:  # an explicit grid: its slices, whatever size the datalist has
        size = [s for axis, s in enumerate(volume_size) if axis != slice_axis]
    size = size if size is not None else preprocessing_defaults.get("size")
    spacing = spacing if spacing is not None else preprocessing_defaults.get("spacing")
    shape_mode = shape_mode or preprocessing_defaults.get("shape_mode") or ShapeMode.CROP_PAD
    if crop_foreground is None:
        crop_foreground = bool(preprocessing_defaults.get("crop_foreground", False))
    if volume_size is None and mode == DatasetMode.SLICE:
        volume_size = preprocessing_defaults.get("volume_size")
    if volume_size is not None and (mode != DatasetMode.SLICE or len(volume_size) != 3):
        raise MedvolInputError(where, f"volume_size {list(volume_size)}: a 3D shape, for slice mode only")
    intensity = intensity or intensity_defaults.get("kind") or IntensityKind.MR
    if window is None and intensity_defaults.get("kind") in (str(IntensityKind.CT), str(IntensityKind.FIXED)):
        window = intensity_defaults.get("window")
    percentiles = percentiles or intensity_defaults.get("percentiles") or DEFAULT_PERCENTILES
    output_range = output_range or intensity_defaults.get("output_range") or DEFAULT_OUTPUT_RANGE
    if size is not None and len(size) != spatial_dims:
        raise MedvolInputError("size", f"{list(size)} must have {spatial_dims} entries in {mode} mode")
    if patch_size is not None and (mode != DatasetMode.VOLUME or len(patch_size) != 3):
        raise MedvolInputError("patch_size", f"{list(patch_size)}: patches are 3 entries and volume mode only")

    try:
        settings = PreprocessingSettings(
            spatial_dims=spatial_dims,
            size=size,
            spacing=spacing,
            intensity=intensity,
            window=window,
            percentiles=tuple(percentiles),
            output_range=tuple(output_range),
            shape_mode=shape_mode,
            slice_axis=slice_axis,
            crop_foreground=crop_foreground,
            volume_size=volume_size,
        )
        ScaleIntensityWindow(settings.intensity, settings.window, settings.percentiles, settings.output_range)
    except ValueError as err:
        raise MedvolInputError(where, f"bad preprocessing settings: {err}") from None
    items = split_items(datalist_dict, split, base_dir)
    if mode == DatasetMode.VOLUME or volume_size is not None:
        for item in items:
            if is_image_2d(item["image"]):
                need = "volume mode needs" if mode == DatasetMode.VOLUME else "slices of a volume_size grid need"
                raise MedvolInputError(item["image"], f"is a 2D image; {need} 3D volumes")

    keys = list(settings.keys)
    cached_part = [*settings.compose().transforms, SelectItemsd(keys=SAMPLE_KEYS)]
    random_part = []
    if patch_size is not None:
        random_part += [
            SpatialPadd(keys, patch_size, mode="constant", value=settings.output_range[0]),
            RandSpatialCropd(keys, roi_size=patch_size, random_size=False),
        ]
    if augment:
        image_size = patch_size or size
        if image_size is None:
            raise MedvolInputError("augment", "augmentation needs a fixed sample size (give size or patch_size)")
        options = dict(augment) if isinstance(augment, Mapping) else {}
        random_part += classical_augmentation(spatial_dims, image_size, keys=keys, **options).transforms

    def volumes(transforms: list) -> Dataset:
        if cache_dir is None:
            return Dataset(items, Compose(transforms))
        return PersistentDataset(
            items, Compose(transforms), cache_dir=Path(cache_dir) / settings.cache_key(), track_meta=True
        )

    if mode == DatasetMode.VOLUME:
        dataset = volumes(cached_part + random_part)
    else:
        dataset = SliceDataset(
            volumes(cached_part),
            axis=slice_axis,
            min_foreground_fraction=min_foreground_fraction,
            foreground_level=foreground_level,
            transform=Compose(random_part) if random_part else None,
        )
    dataset.preprocessing = settings
    return dataset


def seeded_subset(count: int, limit: int | None, seed: int) -> np.ndarray:
    """All indices ``0..count-1``, or a seeded random subset of `limit` of them in their order (a private
    generator: the global random state is left alone)."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def stack_samples(
    dataset: Any, indices: Sequence[int], *, desc: str = "dataset", progress: bool = False
) -> tuple[torch.Tensor, np.ndarray]:
    """The images of `dataset` at `indices` as one float32 tensor ``[N, C, ...]``, and their int labels (-1 where a
    sample has none). A sample is a dict with ``image`` (and ``label``), a tuple ``(image, label)`` or an image.

    Args:
        dataset: anything indexable by int.
        indices: the positions to read.
        desc: what the images are, for the progress bar and the error.
        progress: show a progress bar (on a terminal).

    Raises:
        MedvolInputError: images of different shapes (naming `desc`).
    """
    from tqdm.auto import tqdm

    images, labels = [], []
    for index in tqdm(indices, desc=desc, unit="image", disable=None if progress else True, leave=False):
        sample = dataset[int(index)]
        if isinstance(sample, Mapping):
            image, label = sample["image"], sample.get("label", -1)
        elif isinstance(sample, (tuple, list)):
            image, label = sample[0], (sample[1] if len(sample) > 1 else -1)
        else:
            image, label = sample, -1
        images.append(image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image))
        labels.append(-1 if label is None else int(label))
    if not images:
        return torch.empty(0), np.zeros(0, dtype=np.int64)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise MedvolInputError(desc, f"images of different shapes {sorted(shapes)[:3]}: prepare the data with --size")
    return torch.stack(images).float(), np.asarray(labels, dtype=np.int64)
