"""The images `medvol evaluate` compares: the real training and held-out (test) splits of a datalist with the
preprocessing training used (`medvol.data.datasets.build_dataset`, cached), and a synthetic folder (a `medvol sample`
output with its ``datalist.json``, or a plain folder of images/volumes) through *the same* preprocessing, so both are
``[N, 1, *size]`` in [-1, 1]; mismatched shapes, unknown labels and unreadable files are refused in one line.

The validation split is not used: training may pick its best checkpoint by a metric on it, so it is not independent of
the generator. Held-out real data is the test split only.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medvol.data.datasets import seeded_subset, stack_samples
from medvol.errors import MedvolInputError
from medvol.io.datalist import datalist_file, prepared_size, read_datalist
from medvol.runs import RunRecord

__all__ = ["HELDOUT_SPLIT", "ImageSet", "RealData", "SyntheticData", "load_real", "load_synthetic"]

logger = logging.getLogger(__name__)

HELDOUT_SPLIT = "test"
SYNTHETIC_DATALIST = "datalist.json"
_SLICE_SUFFIX = re.compile(r"\[slice \d+\]$")


@dataclass
class ImageSet:
    """Preprocessed images with their labels and where each came from.

    Attributes:
        images: float32 ``[N, 1, *size]`` in [-1, 1].
        labels: int64 ``[N]`` class indices of the real data's classes, -1 when unlabelled.
        paths: the file of each image (``path[slice k]`` for a slice cut from a volume).
        subjects: the subject of each image (the datalist's ``subject``); None: each file its own subject. Intervals
            resample subjects, so that the slices of one volume are not counted as independent images.
    """

    images: torch.Tensor
    labels: np.ndarray
    paths: list[str]
    subjects: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool(np.all(self.labels >= 0))

    def counts(self, classes: Sequence[str]) -> dict:
        """``{"total": N, "per_class": {name: n}}`` (``per_class`` empty when unlabelled)."""
        per_class = {}
        if self.labelled:
            per_class = {name: int(np.sum(self.labels == index)) for index, name in enumerate(classes)}
        return {"total": len(self), "per_class": per_class}

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        indices = np.asarray(indices, dtype=np.int64)
        subjects = None if self.subjects is None else [self.subjects[i] for i in indices]
        return ImageSet(self.images[torch.as_tensor(indices)], self.labels[indices], [self.paths[i] for i in indices],
                        subjects)

    @property
    def groups(self) -> np.ndarray:
        """One integer per image, equal for the images of one subject (else of one file): the bootstrap's unit."""
        keys = self.subjects if self.subjects is not None else [_SLICE_SUFFIX.sub("", p) for p in self.paths]
        return np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)


@dataclass
class RealData:
    """The real splits of a datalist, preprocessed as for training.

    Attributes:
        datalist: the datalist file.
        classes: class names (empty when unlabelled).
        mode: ``slice`` or ``volume``.
        preprocessing: the `PreprocessingSettings` as a dict (what the synthetic images get too).
        splits: ``training`` and ``test`` image sets.
    """

    datalist: Path
    classes: list[str]
    mode: str
    preprocessing: dict
    splits: dict[str, ImageSet]
    options: dict = field(default_factory=dict)
    document: dict = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return 2 if self.mode == "slice" else 3

    @property
    def image_shape(self) -> list[int]:
        return list(self.splits["training"].images.shape[2:])


@dataclass
class SyntheticData:
    """The synthetic images with the real data's preprocessing.

    Attributes:
        folder: the synthetic folder.
        source: ``medvol sample`` (labels from its datalist.json) or ``folder`` (discovered files).
        images: the preprocessed images, labels as indices of the real classes.
        provenance: run, checkpoint, seed and family of a `medvol sample` output.
        skipped: files of the folder that are not used, with the reason.
        preprocessing: how the files were brought to the real samples (``intensity``, and ``fitted``: the files of
            another shape that went through the real data's spatial preprocessing, with a ``note``).
    """

    folder: Path
    source: str
    images: ImageSet
    provenance: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    preprocessing: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------- loading
def _dataset_paths(dataset) -> list[str]:
    """The file of every sample of a `build_dataset` dataset (slices as ``path[slice k]``)."""
    from medvol.data.datasets import SliceDataset

    if isinstance(dataset, SliceDataset):
        items = dataset.volumes.data
        return [items[p]["image"] if k < 0 else f"{items[p]['image']}[slice {k}]" for p, k in dataset.index]
    return [item["image"] for item in dataset.data]


def _dataset_subjects(dataset) -> list[str]:
    """The subject of every sample of a `build_dataset` dataset (its file when the datalist names none)."""
    from medvol.data.datasets import SliceDataset

    def subject(item: Mapping) -> str:
        return str(item.get("subject") or item["image"])

    if isinstance(dataset, SliceDataset):
        return [subject(dataset.volumes.data[p]) for p, _ in dataset.index]
    return [subject(item) for item in dataset.data]


def _dataset_options(datalist: Mapping, mode: str, size: Sequence[int] | None, cache_dir: Path | None) -> dict:
    """`build_dataset` options: the datalist's own preprocessing at [-1, 1], as the GAN families train."""
    options: dict = {"mode": mode, "output_range": [-1.0, 1.0], "cache_dir": None if cache_dir is None else str(cache_dir)}
    if size is not None:
        options["size"] = [int(s) for s in size]
    return options


def _run_image_size(run_dir: Path | None, spatial_dims: int) -> list[int] | None:
    """The image size a run trained at (its run record), None when unknown."""
    if run_dir is None or not RunRecord.exists(run_dir):
        return None
    try:
        size = RunRecord.load(run_dir).image_size
    except MedvolInputError:
        return None
    return [int(s) for s in size] if len(size) == spatial_dims else None


def load_real(
    datalist: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    size: Sequence[int] | None = None,
    progress: bool = True,
) -> RealData:
    """The training and test splits of a prepared datalist, preprocessed as for training, in [-1, 1].

    Args:
        datalist: ``datalist.json`` written by `medvol prepare` (or its folder).
        cache_dir: disk cache of the preprocessing (None: no cache).
        max_samples: at most this many samples per split (a seeded random subset); None: all.
        seed: seed of that subset.
        size: sample size when the datalist has none (e.g. the size a run trained at); the datalist's wins.
        progress: progress bars.

    Raises:
        MedvolInputError: unreadable datalist, empty training or test split, images of different shapes.
    """
    from medvol.data.datasets import build_dataset

    document, path = _read_datalist(datalist)
    mode = str(document.get("mode") or "volume")
    spatial_dims = 2 if mode == "slice" else 3
    for split, purpose in (("training", "the feature space and the reference set"),
                           (HELDOUT_SPLIT, "the held-out real baseline and the utility test set")):
        if not document.get(split):
            raise MedvolInputError(path, f"the {split} split is empty: it is {purpose}; prepare the data with a "
                                         f"non-zero {split} fraction (e.g. --split 0.6,0.2,0.2)")
    size = prepared_size(document, spatial_dims) or (list(size) if size else None)
    options = _dataset_options(document, mode, size, None if cache_dir is None else Path(cache_dir))
    splits = {}
    settings = None
    for split in ("training", HELDOUT_SPLIT):
        dataset = build_dataset(path, split=split, **options)
        settings = dataset.preprocessing
        indices = seeded_subset(len(dataset), max_samples, seed)
        images, labels = stack_samples(dataset, indices, desc=f"loading real {split}", progress=progress)
        all_paths, all_subjects = _dataset_paths(dataset), _dataset_subjects(dataset)
        splits[split] = ImageSet(images, labels, [all_paths[i] for i in indices], [all_subjects[i] for i in indices])
    shapes = {tuple(s.images.shape[1:]) for s in splits.values() if len(s)}
    if len(shapes) > 1:
        raise MedvolInputError(path, f"training and test images have different shapes {sorted(shapes)}: prepare with --size")
    return RealData(path, list(document.get("classes") or []), mode, settings.to_dict(), splits, options, document)


def _synthetic_entries(folder: Path, cache_dir: Path) -> tuple[str, list[dict], list[str], dict, list[dict], dict | None]:
    """Entries ``{"image", "label_name" (or None)}`` of a synthetic folder, its classes, provenance, skipped files and
    the intensity mapping the files were written with (``intensity.sample_mapping`` of a `medvol sample` output,
    else None).

    A `medvol sample` output lists its files in ``datalist.json``; DICOM series (folders) are converted to NIfTI
    under `cache_dir` (stored integers back to the intensities written). Any other folder is discovered like a
    `medvol prepare` source (one sub-folder per class gives labels; otherwise unlabelled).
    """
    from medvol.io.discovery import datalist_from_files

    skipped: list[dict] = []
    listed = folder / SYNTHETIC_DATALIST
    if listed.is_file():
        document = read_datalist(listed)
        if not isinstance(document.get("training"), list):
            raise MedvolInputError(listed, "is not a medvol datalist (no 'training' list)")
        classes = [str(c) for c in document.get("classes") or []]
        entries = []
        for entry in document["training"] + list(document.get("validation") or []) + list(document.get("test") or []):
            if not isinstance(entry, Mapping) or "image" not in entry:
                raise MedvolInputError(listed, f"entry {entry!r} has no 'image'")
            image = Path(entry["image"])
            image = image if image.is_absolute() else folder / image
            if not image.exists():
                raise MedvolInputError(image, f"listed in {listed} but does not exist")
            name = entry.get("label_name")
            if name is None and entry.get("label") is not None:
                label = entry["label"]
                name = classes[int(label)] if str(label).lstrip("-").isdigit() and 0 <= int(label) < len(classes) else str(label)
            if image.is_dir():  # a DICOM series written by `medvol sample --format dicom`
                image = _dicom_sample_to_nifti(image, cache_dir / "synthetic_dicom")
            entries.append({"image": str(image), "label_name": None if name is None else str(name), "listed": str(entry["image"])})
        mapping = (document.get("intensity") or {}).get("sample_mapping")
        return "medvol sample", entries, classes, dict(document.get("provenance") or {}), skipped, mapping
    if not folder.is_dir():
        raise MedvolInputError(folder, "synthetic folder does not exist" if not folder.exists() else "is not a folder")
    discovered = datalist_from_files(folder, images_dir=cache_dir / "synthetic_dicom")
    skipped = [{"path": r.path, "reason": r.reason} for r in discovered.records.values() if r.status == "skipped"]
    _refuse_unreadable_images(folder, skipped, len(discovered.entries))
    if not discovered.entries:
        example = f"; e.g. {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""
        raise MedvolInputError(folder, f"holds no image or volume{example}")
    entries = [{"image": e["image"], "label_name": e.get("label_name"), "listed": e["image"]} for e in discovered.entries]
    return "folder", entries, list(discovered.classes), {}, skipped, None


def _refuse_unreadable_images(folder: Path, skipped: list[dict], usable: int) -> None:
    """A synthetic folder is judged whole: an image file that cannot be read (empty, truncated, damaged), e.g. left
    by a failed or interrupted copy, stops the evaluation instead of being left out without a word."""
    from medvol.io.files import DICOM_SUFFIXES, IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, image_suffix

    suffixes = (*NIFTI_SUFFIXES, *IMAGE_2D_SUFFIXES, *DICOM_SUFFIXES)
    bad = [s for s in skipped if image_suffix(s["path"]) in suffixes and not Path(s["path"]).name.startswith(".")]
    if bad:
        empty = Path(bad[0]["path"]).is_file() and Path(bad[0]["path"]).stat().st_size == 0
        raise MedvolInputError(bad[0]["path"], f"{'empty file' if empty else bad[0]['reason']} ({len(bad)} of "
                               f"{usable + len(bad)} image files in {folder} unreadable): replace or remove them, a "
                               "synthetic set is evaluated whole")


def _dicom_sample_to_nifti(series_dir: Path, out_dir: Path) -> Path:
    """One DICOM series folder of a `medvol sample` output as a NIfTI file in the intensities written: rescale
    applied (CT), or the Real World Value Mapping (MR, Secondary Capture: stored integers spread over uint16).

    Volumes keep the geometry of their headers. A single 2D image is a Secondary Capture without orientation
    (`medvol sample` wrote the array in medvol's ``[x, y]`` order): it is written without reorientation, so it reads
    back exactly as the NIfTI export of the same sample would.
    """
    import pydicom

    from medvol.io.dicom import discover_series, read_series
    from medvol.io.nifti import write_nifti
    from medvol.io.writers import source_units_mapping

    scan = discover_series(series_dir)
    if len(scan.series) != 1:
        raise MedvolInputError(series_dir, f"expected one DICOM series, found {len(scan.series)}")
    voxels, affine = read_series(scan.series[0])
    mapping = source_units_mapping(pydicom.dcmread(scan.series[0].files[0], stop_before_pixels=True))
    if mapping is not None:
        voxels = np.asarray(voxels, dtype=np.float64) * mapping[0] + mapping[1]
    if voxels.ndim == 3 and voxels.shape[2] == 1:
        affine = np.diag([*np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[:2], 1.0, 1.0])
    target = out_dir / f"{series_dir.name}.nii.gz"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_nifti(np.asarray(voxels, dtype=np.float32), np.asarray(affine, dtype=float), target)
    return target


def _file_shape(path: str) -> tuple[int, ...]:
    """Spatial shape of an image file from its header (trailing singleton axes of NIfTI dropped down to 2D)."""
    from medvol.io.files import IMAGE_2D_SUFFIXES, image_suffix

    if image_suffix(path) in IMAGE_2D_SUFFIXES:
        from medvol.io.images import image_mode

        return tuple(image_mode(path)[0])
    import nibabel as nib

    try:
        shape = list(nib.load(path).shape)
    except Exception as err:  # nibabel raises several types for damaged files
        raise MedvolInputError(path, f"not a readable NIfTI file ({type(err).__name__})") from None
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    return tuple(int(s) for s in shape)


def load_synthetic(
    folder: str | os.PathLike,
    real: RealData,
    cache_dir: str | os.PathLike,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SyntheticData:
    """The synthetic images of `folder` on the real samples' scale, ``[N, 1, *size]`` in [-1, 1].

    One intensity path: files of a `medvol sample` output that records its mapping (``intensity.sample_mapping``)
    are read back with that fixed window, so they are exactly the generator's output (up to file quantisation);
    other files (another tool's, or older sample folders) get the real data's intensity scaling, which like the
    real images' is measured on the samples' grid. Files at the real samples' shape are final spatially (no
    resampling, no foreground crop, which would move a generated image a second time); files of another shape and
    the same dimensionality go through the real data's recorded spatial preprocessing (spacing, foreground crop,
    ``shape_mode`` to the real size), as the real files did, and a log line and ``preprocessing["fitted"]`` say so.
    Where the real slices are cut from volumes, synthetic volumes whose slices have the real shape are cut the same
    way (e.g. a volumetric model's samples, or 2D samples stacked into volumes, judged on slice realism).

    Args:
        folder: a `medvol sample` output or a plain folder of images/volumes.
        real: the loaded real data (classes, mode and preprocessing to follow).
        cache_dir: preprocessing cache (and converted DICOM series).
        max_samples: at most this many synthetic samples (a seeded random subset); None: all.
        seed: seed of that subset.
        progress: progress bars.

    Raises:
        MedvolInputError: no images, other dimensionality than the real samples, labels the real data lacks, an
            unreadable file.
    """
    folder = Path(folder).expanduser().resolve()
    cache_dir = Path(cache_dir)
    source, entries, _, provenance, skipped, mapping = _synthetic_entries(folder, cache_dir)
    expected = tuple(real.image_shape)
    volumes, fitted = _sort_by_shape(entries, real)
    _check_synthetic_labels(entries, real, folder)
    intensity, intensity_note = _synthetic_intensity(mapping, real)
    samples = _synthetic_samples(entries, real, intensity, cache_dir, volumes, folder)
    indices = seeded_subset(len(samples), max_samples, seed)
    images, labels = stack_samples(_SampleList(samples), indices, desc="loading synthetic", progress=progress)
    if tuple(images.shape[2:]) != expected:
        raise MedvolInputError(folder, f"synthetic samples have shape {list(images.shape[2:])} after preprocessing, "
                                       f"the real ones {list(expected)}")
    preprocessing: dict = {"intensity": intensity_note}
    if fitted:
        preprocessing["fitted"] = _fitted_record(fitted, real)
        logger.info("%s", preprocessing["fitted"]["note"])
    paths = [samples[int(i)][2] for i in indices]
    return SyntheticData(folder, source, ImageSet(images, labels, paths), provenance, skipped, preprocessing)


def _sort_by_shape(entries: list[dict], real: RealData) -> tuple[int, dict[tuple[int, ...], int]]:
    """Mark each entry ``fit`` when its file is not at the real samples' shape (it goes through the real spatial
    preprocessing); returns how many are volumes to cut into slices as the real volumes were, and how many files of
    each other shape there are. Another dimensionality is a user error."""
    expected = tuple(real.image_shape)
    slice_axis = int(real.preprocessing.get("slice_axis", 2))
    # slices cut from real volumes: synthetic volumes are cut into slices the same way (each scaled as a whole)
    cut = real.mode == "slice" and int(real.document.get("source_spatial_dims") or 3) == 3
    volumes = 0
    fitted: dict[tuple[int, ...], int] = {}
    for entry in entries:
        shape = _file_shape(entry["image"])
        entry["fit"] = False
        if cut and len(shape) == 3 and shape[:slice_axis] + shape[slice_axis + 1:] == expected:
            volumes += 1
            continue
        if len(shape) != len(expected):
            raise MedvolInputError(entry["listed"], f"is {len(shape)}D {list(shape)} but the real samples are "
                                                    f"{len(expected)}D {list(expected)} ({real.mode} mode)")
        if shape != expected:
            entry["fit"] = True
            fitted[shape] = fitted.get(shape, 0) + 1
    return volumes, fitted


def _check_synthetic_labels(entries: list[dict], real: RealData, folder: Path) -> None:
    """Every synthetic sample labelled or none, and only with classes of the real data."""
    names = [e["label_name"] for e in entries]
    labelled = [n for n in names if n is not None]
    if labelled and len(labelled) != len(names):
        missing = next(e["listed"] for e in entries if e["label_name"] is None)
        raise MedvolInputError(missing, "has no label while other synthetic samples have one")
    unknown = sorted({n for n in labelled if n not in real.classes})
    if unknown:
        have = f"the real classes are {real.classes}" if real.classes else "the real data has no class labels"
        raise MedvolInputError(folder, f"synthetic labels {unknown} are not classes of the real data ({have})")


def _synthetic_intensity(mapping: dict | None, real: RealData) -> tuple[dict, str]:
    """The intensity settings of the synthetic files and a note saying which: the fixed window they were written with
    (`mapping`, a `medvol sample` output's), else the real data's scaling."""
    if mapping:
        intensity = {"kind": "fixed", "window": [float(v) for v in mapping["window"]]}
        return intensity, (f"read back with the window the samples were written with ({intensity['window']} onto "
                           f"the generator's range {list(mapping['output_range'])}): the generator's output")
    return dict(real.document.get("intensity") or {}), (
        f"the real data's {real.preprocessing.get('intensity')} scaling, measured on each image at the real size as "
        f"for the real images")


def _synthetic_samples(entries: list[dict], real: RealData, intensity: dict, cache_dir: Path, volumes: int,
                       folder: Path) -> list[tuple]:
    """``(dataset, index in it, listed name)`` of every synthetic sample: the files at the real shape (intensity
    scaling only), then those of another shape (the real spatial preprocessing too), each group in entry order."""
    from medvol.data.datasets import SliceDataset, build_dataset

    expected = list(real.image_shape)
    recorded = dict(real.document.get("preprocessing") or {})
    settings = {
        # final files: only the intensity scaling
        False: {**recorded, "size": list(expected), "spacing": None, "crop_foreground": False, "volume_size": None},
        # files of another shape: the real data's spatial preprocessing to the real size (2D files: no volume grid)
        True: {**recorded, "size": list(expected), "volume_size": None},
    }
    options = {**real.options, "size": list(expected), "cache_dir": str(cache_dir)}
    samples: list[tuple] = []
    for fit in (False, True):
        group = [e for e in entries if e["fit"] == fit]
        if not group:
            continue
        training = []
        for entry in group:
            item = {"image": entry["image"], "subject": Path(entry["image"]).name}
            if entry["label_name"] is not None:
                item["label"] = real.classes.index(entry["label_name"])
            training.append(item)
        document = {"mode": real.mode, "classes": list(real.classes), "preprocessing": settings[fit],
                    "intensity": intensity, "training": training}
        dataset = build_dataset(document, split="training", **options)
        if (fit or not volumes) and len(dataset) != len(group):  # a 2D image is one sample, a volume several slices
            raise MedvolInputError(folder, f"{len(group)} synthetic files gave {len(dataset)} samples: expected one each")
        for index in range(len(dataset)):
            position, k = dataset.index[index] if isinstance(dataset, SliceDataset) else (index, -1)
            samples.append((dataset, index, group[position]["listed"] + ("" if k < 0 else f"[slice {k}]")))
    return samples


def _fitted_record(fitted: dict[tuple[int, ...], int], real: RealData) -> dict:
    """``{files, shapes, note}`` about the synthetic files that went through the real spatial preprocessing."""
    expected = "x".join(map(str, real.image_shape))
    recorded = dict(real.document.get("preprocessing") or {})
    shapes = ", ".join(f"{n} at {'x'.join(map(str, s))}" for s, n in sorted(fitted.items(), key=lambda i: -i[1]))
    how = recorded.get("shape_mode") or "crop_pad"
    return {
        "files": sum(fitted.values()), "shapes": {"x".join(map(str, s)): n for s, n in fitted.items()},
        "note": f"{sum(fitted.values())} synthetic files not at the real size {expected} "
                f"({shapes}) went through the real data's preprocessing ({how} to that size"
                f"{', foreground crop' if recorded.get('crop_foreground') else ''}, "
                f"{real.preprocessing.get('intensity')} intensity)",
    }


class _SampleList:
    """Samples of several datasets as one sequence (``(dataset, index, name)`` triples)."""

    def __init__(self, samples: Sequence[tuple]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        dataset, position, _ = self.samples[index]
        return dataset[position]


def _read_datalist(datalist: str | os.PathLike) -> tuple[dict, Path]:
    """The real datalist document and its file."""
    path = datalist_file(datalist).resolve()
    return read_datalist(path), path


def _datalist_dims(datalist: str | os.PathLike) -> int:
    document, _ = _read_datalist(datalist)
    return 2 if str(document.get("mode") or "volume") == "slice" else 3


