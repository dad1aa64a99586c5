"""`medvol evaluate`: is the synthetic data faithful, diverse, private and useful? One call, ``metrics.json`` and
``report.html``.

Orchestration only; every number comes from the metric modules of this package:

1. load the real training and held-out (test) splits of a datalist with the preprocessing training used
   (`medvol.data.datasets.build_dataset`, cached under ``OUT/cache``), and the synthetic folder (a `medvol sample`
   output with its ``datalist.json``, or a plain folder of images/volumes) through *the same* preprocessing, so
   both are ``[N, 1, *size]`` in [-1, 1]; refuse mismatched shapes, unknown labels and too few samples (one line);
2. a feature space without downloads (`features.build_feature_extractor`: a classifier trained on the real
   training split, an autoencoder encoder for unlabelled data, or the user's checkpoint);
3. fidelity with real-vs-real baselines (`fidelity`), diversity and mode collapse (`diversity`), nearest-neighbour
   privacy (`privacy`), recognisability and, on request, the utility study and realness filtering (`utility`);
4. ``metrics.json`` (the keys of the evaluation issue plus ``inputs``, ``feature_extractor``, ``methods``,
   ``timing``, ``filtering``) and the self-contained ``report.html`` (`medvol.report.html`).

The validation split is not used: training may pick its best checkpoint by a metric on it, so it is not
independent of the generator. Held-out real data is the test split only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medvol.data.datasets import seeded_subset, stack_samples
from medvol.defaults import SYNTHETIC_RATIO, UTILITY_SEEDS
from medvol.devices import default_device
from medvol.errors import MedvolInputError
from medvol.io.datalist import datalist_file, read_datalist
from medvol.io.files import write_json
from medvol.runs import RUN_RECORD_FILE, RunRecord

__all__ = [
    "HELDOUT_SPLIT",
    "MIN_SAMPLES",
    "ImageSet",
    "RealData",
    "SyntheticData",
    "load_real",
    "load_synthetic",
    "evaluate",
    "run_datalist",
]

logger = logging.getLogger(__name__)

HELDOUT_SPLIT = "test"
UTILITY_CACHE = "utility"  # DATA/cache/utility: results of the utility arms without synthetic data
# precision/recall and density/coverage take k = 5 nearest neighbours inside each set: k + 1 samples at least
MIN_SAMPLES = 6
NEAREST_K = 5
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
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


def _prepared_size(datalist: Mapping, spatial_dims: int) -> list[int] | None:
    size = (datalist.get("preprocessing") or {}).get("size")
    if not size:
        return None
    size = [int(s) for s in size]
    if len(size) == spatial_dims:
        return size
    return size[:2] if len(size) == 3 and spatial_dims == 2 else None


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
    size = _prepared_size(document, spatial_dims) or (list(size) if size else None)
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
    from medvol.data.datasets import SliceDataset, build_dataset

    folder = Path(folder).expanduser().resolve()
    cache_dir = Path(cache_dir)
    source, entries, classes, provenance, skipped, mapping = _synthetic_entries(folder, cache_dir)
    expected = tuple(real.image_shape)
    slice_axis = int(real.preprocessing.get("slice_axis", 2))
    # slices cut from real volumes: synthetic volumes are cut into slices the same way (each scaled as a whole)
    cut = real.mode == "slice" and int(real.document.get("source_spatial_dims") or 3) == 3
    volumes = 0
    fitted: dict[tuple[int, ...], int] = {}  # shapes of the files brought to the real size, and how many
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
    names = [e["label_name"] for e in entries]
    labelled = [n for n in names if n is not None]
    if labelled and len(labelled) != len(names):
        missing = next(e["listed"] for e in entries if e["label_name"] is None)
        raise MedvolInputError(missing, "has no label while other synthetic samples have one")
    unknown = sorted({n for n in labelled if n not in real.classes})
    if unknown:
        have = f"the real classes are {real.classes}" if real.classes else "the real data has no class labels"
        raise MedvolInputError(folder, f"synthetic labels {unknown} are not classes of the real data ({have})")
    if mapping:
        intensity = {"kind": "fixed", "window": [float(v) for v in mapping["window"]]}
        intensity_note = (f"read back with the window the samples were written with ({intensity['window']} onto the "
                          f"generator's range {list(mapping['output_range'])}): the generator's output")
    else:
        intensity = dict(real.document.get("intensity") or {})
        intensity_note = (f"the real data's {real.preprocessing.get('intensity')} scaling, measured on each image at "
                          f"the real size as for the real images")
    recorded = dict(real.document.get("preprocessing") or {})
    settings = {
        # final files: only the intensity scaling
        False: {**recorded, "size": list(expected), "spacing": None, "crop_foreground": False, "volume_size": None},
        # files of another shape: the real data's spatial preprocessing to the real size (2D files: no volume grid)
        True: {**recorded, "size": list(expected), "volume_size": None},
    }
    options = {**real.options, "size": list(expected), "cache_dir": str(cache_dir)}
    samples: list[tuple] = []  # (dataset, index in it, listed name) in the order of the entries of each group
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
    indices = seeded_subset(len(samples), max_samples, seed)
    images, labels = stack_samples(_SampleList(samples), indices, desc="loading synthetic", progress=progress)
    if tuple(images.shape[2:]) != expected:
        raise MedvolInputError(folder, f"synthetic samples have shape {list(images.shape[2:])} after preprocessing, "
                                       f"the real ones {list(expected)}")
    preprocessing: dict = {"intensity": intensity_note}
    if fitted:
        shapes = ", ".join(f"{n} at {'x'.join(map(str, s))}" for s, n in sorted(fitted.items(), key=lambda i: -i[1]))
        how = recorded.get("shape_mode") or "crop_pad"
        preprocessing["fitted"] = {
            "files": sum(fitted.values()), "shapes": {"x".join(map(str, s)): n for s, n in fitted.items()},
            "note": f"{sum(fitted.values())} synthetic files not at the real size {'x'.join(map(str, expected))} "
                    f"({shapes}) went through the real data's preprocessing ({how} to that size"
                    f"{', foreground crop' if recorded.get('crop_foreground') else ''}, "
                    f"{real.preprocessing.get('intensity')} intensity)",
        }
        logger.info("%s", preprocessing["fitted"]["note"])
    paths = [samples[int(i)][2] for i in indices]
    return SyntheticData(folder, source, ImageSet(images, labels, paths), provenance, skipped, preprocessing)


class _SampleList:
    """Samples of several datasets as one sequence (``(dataset, index, name)`` triples)."""

    def __init__(self, samples: Sequence[tuple]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        dataset, position, _ = self.samples[index]
        return dataset[position]


# ------------------------------------------------------------------------------------------------------- checks
def _check_counts(real: RealData, synthetic: SyntheticData) -> None:
    from medvol.metrics.diversity import MIN_MS_SSIM_SIDE

    if min(real.image_shape) < MIN_MS_SSIM_SIDE:
        raise MedvolInputError(real.datalist, f"samples of size {real.image_shape} are too small: MS-SSIM (diversity) "
                                              f"needs at least {MIN_MS_SSIM_SIDE} voxels per side; prepare with a "
                                              f"larger --size")
    for name, image_set, where in (
        ("training", real.splits["training"], real.datalist),
        (HELDOUT_SPLIT, real.splits[HELDOUT_SPLIT], real.datalist),
        ("synthetic", synthetic.images, synthetic.folder),
    ):
        if len(image_set) < MIN_SAMPLES:
            raise MedvolInputError(where, f"{len(image_set)} {name} samples: precision/recall and density/coverage "
                                          f"(k = {NEAREST_K} nearest neighbours) need at least {MIN_SAMPLES}")


def _check_options(seeds: int, synthetic_ratio: float, classifier_epochs: int | None, max_samples: int | None,
                   features_path: str | os.PathLike | None, run_dir: Path | None) -> None:
    if seeds < 1:
        raise MedvolInputError("--seeds", f"must be at least 1, got {seeds}")
    if not 0 < synthetic_ratio < float("inf"):
        raise MedvolInputError("--synthetic-ratio", f"must be a positive number, got {synthetic_ratio}")
    if classifier_epochs is not None and classifier_epochs < 1:
        raise MedvolInputError("--classifier-epochs", f"must be at least 1, got {classifier_epochs}")
    if max_samples is not None and max_samples < MIN_SAMPLES:
        raise MedvolInputError("--max-samples", f"must be at least {MIN_SAMPLES}, got {max_samples}")
    if features_path is not None and not Path(features_path).is_file():
        raise MedvolInputError(features_path, "feature extractor checkpoint (--features) not found")
    if run_dir is not None:
        if not run_dir.is_dir():
            raise MedvolInputError(run_dir, "--run is not a folder")
        events = run_dir / "tensorboard"
        if not (events.is_dir() and any(events.rglob("events.out.tfevents.*"))):
            raise MedvolInputError(run_dir, "--run holds no TensorBoard event files under tensorboard/ (not a medvol run?)")


# --------------------------------------------------------------------------------------------------- evaluation
class _Timer:
    """Seconds per named stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        logger.debug("evaluate: %s", name)
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def _plain(value):
    """JSON-ready: numpy scalars/arrays and tuples to Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def _methods(real: RealData, extractor, fidelity_counts: Mapping, knn: Mapping, filtering: bool) -> dict:
    """One sentence per number of metrics.json: how it was computed."""
    heldout = f"the held-out real {HELDOUT_SPLIT} split"
    n = fidelity_counts["n"]
    unit = ("resampling subjects: all slices of a volume together" if fidelity_counts.get("by_subject")
            else "resampling images")
    space = f"features of the {extractor.kind} feature extractor ({extractor.description})"
    methods = {
        "preprocessing": f"Real and synthetic files went through the same preprocessing as training "
                         f"({real.mode} mode, {real.preprocessing.get('intensity')} intensity scaling to [-1, 1], "
                         f"size {real.image_shape}), intensities scaled on that grid; synthetic files of another shape went through "
                         f"the real spatial preprocessing, `medvol sample` files were read back with the window they "
                         f"were written with (inputs.synthetic_preprocessing).",
        "fid": f"Frechet distance between Gaussians fitted to the {space} of the real training split and of the "
               f"synthetic samples, every set subsampled (seeded) to the same n = {n} (FID grows as n shrinks). "
               f"ci95: the 2.5th-97.5th percentiles of the FID over {fidelity_counts.get('resamples')} bootstrap resamples of both "
               f"sets ({unit}), shifted down by the bootstrap bias (resampling duplicates images, which raises the "
               f"FID, so the plain percentiles, kept as `percentile`, lie above the point estimate and usually "
               f"exclude it), lower end clipped at 0: the spread of the FID of n-sample sets, an interval for the "
               f"expected FID at this n (simulated at the extractor's width it covered that in every trial, i.e. "
               f"conservative), not for the distance between the distributions, which the finite-n bias puts well "
               f"below; compare it with fid_real_baseline at the same n. `bias_corrected` and `ci95_bias_corrected` "
               f"remove part of that bias (rough: they covered the population FID in 2-70% of simulated trials). An "
               f"FID below the real baseline is no sign of quality by itself: the feature extractor is trained on "
               f"the training split, so copies of training images score lower than new real images (`fid_note`, "
               f"read the privacy section).",
        "fid_real_baseline": f"The same Frechet distance, same n = {n} and the same training subsample, between the "
                             f"real training split and {heldout}: what new real images score, the scale for `fid`.",
        "kid": f"Kernel inception distance (unbiased MMD^2 with the kernel (x.y / F + 1)^3) between training-split "
               f"and synthetic features, n = {n} each, with a 95% bootstrap interval as for `fid` ({unit}; not "
               f"clipped: the unbiased estimate can be below 0).",
        "kid_real_baseline": f"The same KID between the real training split and {heldout}, n = {n} each.",
        "mmd": f"Maximum mean discrepancy (Gaussian kernel, bandwidth the median pairwise distance of the training "
               f"subsample) between training-split and synthetic features, n = {n} each.",
        "precision": f"Fraction of the synthetic samples inside the real manifold: the union of balls around each of "
                     f"the {knn['n_reference']} training-split features with the radius of its k = {NEAREST_K}-th "
                     f"nearest real neighbour (Euclidean distance in feature space). Precision, recall, density and "
                     f"coverage of the synthetic set and of {heldout} (their real baselines) are computed with the "
                     f"same number of samples, n = {knn['n']} (`precision_recall_n`; coverage and recall grow with "
                     f"n): the larger of the two sets is subsampled to n, {max(knn['repeats'].values())} seeded "
                     f"subsets averaged.",
        "recall": f"Fraction of training-split features inside the synthetic manifold (balls of radius the "
                  f"k = {NEAREST_K}-th nearest synthetic neighbour).",
        "density": f"Mean number of real k = {NEAREST_K} balls that contain each synthetic sample, divided by k "
                   f"(about 1 for samples distributed like the real ones).",
        "coverage": f"Fraction of training-split features whose k = {NEAREST_K} ball contains at least one synthetic sample.",
        "real_baselines": f"`*_real_baseline` of precision/recall/density/coverage: the same numbers against all "
                          f"{knn['n_reference']} training features with n = {knn['n']} samples of {heldout} in place "
                          f"of the n = {knn['n']} synthetic ones; `mmd_real_baseline`: the MMD between the training "
                          f"and held-out subsamples.",
        "ms_ssim_synthetic": "Mean multi-scale SSIM over random pairs of synthetic samples (kernel and scales sized "
                             "for small images, see diversity.settings; per class in diversity.per_class); high "
                             "values mean similar samples (low diversity).",
        "ms_ssim_real": "The same pairwise MS-SSIM among the real training images: the diversity to expect.",
        "mode_collapse": "True when the synthetic samples are far more alike than the real ones, overall or within a "
                         "class (see diversity.mode_collapse_reason for the rule that fired).",
        "privacy": f"For each synthetic sample its nearest training image by feature distance, and the SSIM to it; "
                   f"the 5th percentile of the same distance from {heldout} to the training split is the threshold: "
                   f"synthetic samples at most that far are flagged as possible copies (ssim_agrees: the SSIM also "
                   f"exceeds the held-out 95th percentile); new real images are flagged about 5% of the time.",
        "recognisability": "A classifier trained on the real training split labels each synthetic sample; the "
                           "fraction labelled as the class it was generated for, per class and overall "
                           f"(real_test: the same classifier on {heldout}, for scale).",
    }
    if real.spatial_dims == 3:
        methods["slice_coherence"] = (
            "Per axis (0 sagittal, 1 coronal, 2 axial slices), the normalised cross-correlation and SSIM of every slice "
            "with the next one, averaged per volume (pairs with a constant slice, e.g. padding, left out), then mean "
            f"and sd over the volumes of the real training split, {heldout} and the synthetic set; `difference`: "
            "each set's mean minus the training split's. Closer to real is better: stacks of independent 2D samples "
            "fall short across their stacking axis, blurry volumes exceed real.")
    # methods["utility"] is written from the study's result (`medvol.evaluation.utility.utility_methods`)
    if filtering:
        methods["filtering"] = ("A real-vs-synthetic classifier scores every synthetic sample; the samples it "
                                "separates most confidently are dropped and the utility study is run again.")
    return methods


def _recognisability_classifier(extractor, train: ImageSet, num_classes: int, seed: int, epochs: int | None, device):
    """The classifier of a classifier-kind feature extractor (trained on the real training split already), else one
    trained now with the same recipe."""
    from medvol.evaluation.classifier import train_classifier

    network = getattr(extractor, "classifier", None)
    if extractor.kind == "classifier" and network is not None and int(getattr(network, "num_classes", -1)) == num_classes:
        return network
    recipe = {} if epochs is None else {"epochs": int(epochs)}
    return train_classifier(train.images, train.labels, num_classes, seed=seed, device=device, **recipe)


def evaluate(
    real_datalist: str | os.PathLike,
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    utility: bool = False,
    seeds: int = UTILITY_SEEDS,
    synthetic_ratio: float = SYNTHETIC_RATIO,
    classifier_epochs: int | None = None,
    features_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    filter_synthetic: bool = False,
    balance: bool = False,
    pretrain: bool = False,
    select_confidence: float | None = None,
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    report: bool = True,
) -> dict:
    """Evaluate a synthetic folder against the real data it imitates; writes ``OUT/metrics.json`` and
    ``OUT/report.html`` and returns the metrics.

    Args:
        real_datalist: the real ``datalist.json`` (`medvol prepare` output) with training and test splits.
        synthetic_dir: a `medvol sample` output (labels from its datalist.json) or a plain folder of images/volumes.
        out_dir: output folder (``metrics.json``, ``report.html``, ``cache/``, ``features/``); reruns reuse the
            caches.
        utility: run the utility study (five classifier arms, `seeds` seeds each).
        seeds: seeds of the utility study.
        synthetic_ratio: synthetic samples per real sample in the mixed utility arms.
        classifier_epochs: epochs of every classifier (feature extractor, recognisability, utility); None: the
            recipe's default.
        features_path: a user feature extractor checkpoint instead of the one trained here.
        run_dir: the training run; its TensorBoard curves go into the report (and its image size is used when the
            real datalist has none).
        filter_synthetic: drop the synthetic samples a real-vs-synthetic classifier separates most confidently and
            report the utility before and after (implies `utility`).
        balance: add the utility arm `real+augmentation+balanced` (minority classes filled with synthetic samples up
            to the majority count; implies `utility`).
        pretrain: add the utility arm `synthetic->real+augmentation` (pre-trained on synthetic, fine-tuned on
            real+augmentation, the same total steps; implies `utility`).
        select_confidence: the utility arms use only the synthetic samples that the recognisability classifier
            (trained on the real training split) assigns to their own class with at least this probability (implies
            `utility`).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        max_samples: at most this many samples per real split and of the synthetic set (seeded subsets) in the
            feature extractor, fidelity, diversity, recognisability and the privacy queries; the privacy reference
            (nearest training image) is always the whole training split, and the utility study and realness filter
            always use every sample.
        seed: seed of every random choice (subsets, feature extractor, bootstrap, pairs).
        progress: progress bars on the long parts.
        report: write ``report.html`` too.

    Raises:
        MedvolInputError: bad input (see `load_real`, `load_synthetic`; too few samples; unlabelled data with
            `utility`; a bad option).
    """
    from medvol.evaluation import features
    from medvol.metrics import coherence, diversity, fidelity, privacy
    from medvol.evaluation import utility as utility_module

    timer = _Timer()
    out = Path(out_dir).expanduser().resolve()
    run_path = None if run_dir is None else Path(run_dir).expanduser().resolve()
    utility = bool(utility or filter_synthetic or balance or pretrain or select_confidence is not None)
    if select_confidence is not None and not 0 < select_confidence <= 1:
        raise MedvolInputError("--select-confidence", f"must be a probability in (0, 1], got {select_confidence}")
    _check_options(seeds, synthetic_ratio, classifier_epochs, max_samples, features_path, run_path)
    if out.exists() and not out.is_dir():
        raise MedvolInputError(out, "--out must be a folder, this is a file")
    device = default_device(device)
    cache_dir = out / "cache"

    with timer.stage("load"):
        synthetic_folder = Path(synthetic_dir).expanduser().resolve()
        size_hint = None
        listed = synthetic_folder / SYNTHETIC_DATALIST
        if listed.is_file():  # a run's samples: the real data without a prepared size is fitted as the run was
            try:
                provenance_run = json.loads(listed.read_text()).get("provenance", {}).get("run")
            except (OSError, json.JSONDecodeError, AttributeError):
                provenance_run = None
            if provenance_run:
                size_hint = Path(provenance_run)
        # every sample is loaded: --max-samples subsets only the distribution metrics; the privacy reference is the
        # whole training split and the utility arms train on the real images the generator saw
        real = load_real(real_datalist, cache_dir, None, seed, progress=progress,
                         size=_run_image_size(run_path or size_hint, _datalist_dims(real_datalist)))
        synthetic = load_synthetic(synthetic_folder, real, cache_dir, None, seed, progress)
    _check_counts(real, synthetic)
    all_train, all_heldout, all_synth = real.splits["training"], real.splits[HELDOUT_SPLIT], synthetic.images
    synth_index = seeded_subset(len(all_synth), max_samples, seed)
    train_index = seeded_subset(len(all_train), max_samples, seed)
    train, heldout, synth = (all_train.subset(train_index), all_heldout.subset(seeded_subset(len(all_heldout), max_samples, seed)),
                             all_synth.subset(synth_index))
    labelled = train.labelled and heldout.labelled and bool(real.classes)
    num_classes = len(real.classes) if labelled else 0
    if utility and not (labelled and synth.labelled):
        who = real.datalist if not labelled else synthetic.folder
        raise MedvolInputError(who, "has no class labels: the utility study trains classifiers of the classes")
    out.mkdir(parents=True, exist_ok=True)

    with timer.stage("feature_extractor"):
        extractor = features.build_feature_extractor(
            train.images, train.labels, num_classes, out / "features", seed=seed, epochs=classifier_epochs,
            features_path=features_path, device=device, progress=progress)
    with timer.stage("features"):
        all_train_f = np.asarray(extractor(all_train.images), dtype=np.float64)
        train_f = all_train_f[train_index]
        heldout_f, synth_f = (np.asarray(extractor(s.images), dtype=np.float64) for s in (heldout, synth))

    metrics: dict = {}
    with timer.stage("fidelity"):
        fid_kid = fidelity.fidelity_with_baseline(train_f, heldout_f, synth_f, seed=seed, train_groups=train.groups,
                                                  heldout_groups=heldout.groups, synthetic_groups=synth.groups)
        note = fidelity.below_baseline_note(fid_kid["fid"], fid_kid["fid_real_baseline"])
        if note:
            metrics["fid_note"] = note
        metrics.update({key: fid_kid[key] for key in ("fid", "kid", "fid_real_baseline", "kid_real_baseline", "mmd")})
        knn = fidelity.matched_precision_recall(train_f, heldout_f, synth_f, k=NEAREST_K, seed=seed)
        metrics.update(knn["synthetic"])
        metrics["mmd_real_baseline"] = fid_kid["mmd_real_baseline"]
        fidelity_counts = {key: fid_kid[key] for key in ("n", "n_train", "n_heldout", "n_synthetic")}
        fidelity_counts["resamples"] = fid_kid["fid"]["resamples"]
        fidelity_counts["by_subject"] = any(fid_kid[key]["groups_real"] < fid_kid[key]["n_real"]
                                            or fid_kid[key]["groups_synthetic"] < fid_kid[key]["n_synthetic"]
                                            for key in ("fid", "fid_real_baseline"))
        for key in ("precision", "recall", "density", "coverage"):
            metrics[f"{key}_real_baseline"] = knn["real_baseline"][key]
        metrics["precision_recall_n"] = {key: knn[key] for key in ("n", "n_reference", "repeats")}
    with timer.stage("diversity"):
        diverse = diversity.diversity_report(synth.images, synth.labels, train.images, train.labels, list(real.classes))
        metrics.update({key: diverse[key] for key in ("ms_ssim_synthetic", "ms_ssim_real", "mode_collapse")})
        metrics["diversity"] = {k: v for k, v in diverse.items() if k not in ("ms_ssim_synthetic", "ms_ssim_real", "mode_collapse")}
    if real.spatial_dims == 3:
        with timer.stage("coherence"):
            metrics["slice_coherence"] = coherence.coherence_report(
                {"real": train.images, HELDOUT_SPLIT: heldout.images, "synthetic": synth.images})
    with timer.stage("privacy"):
        metrics["privacy"] = privacy.nearest_neighbour_privacy(
            all_train.images, all_train_f, heldout.images, heldout_f, synth.images, synth_f, synth.paths)
    with timer.stage("recognisability"):
        if labelled and synth.labelled:
            classifier = _recognisability_classifier(extractor, train, num_classes, seed, classifier_epochs, device)
            recognised = utility_module.recognisability(classifier, synth.images, synth.labels, list(real.classes),
                                                        device=device)
            recognised["real_test"] = utility_module.recognisability(classifier, heldout.images, heldout.labels,
                                                                     list(real.classes), device=device)
        else:
            why = "the real data has no class labels" if not labelled else "the synthetic samples have no class labels"
            recognised = {"per_class": {}, "overall": None, "skipped": f"not computed: {why}"}
        metrics["recognisability"] = recognised
    keep_mask = scores = None
    epochs = {} if classifier_epochs is None else {"epochs": int(classifier_epochs)}
    arms = [*utility_module.ARMS, *([utility_module.BALANCED_ARM] if balance else []),
            *([utility_module.PRETRAINED_ARM] if pretrain else [])]
    study = dict(epochs, arms=arms, select_confidence=select_confidence,
                 selection_classifier=classifier if select_confidence is not None else None)
    if utility:
        # the real-only arms are kept beside the prepared data, for the next generator evaluated against it
        real_arms = utility_module.RealArmCache(Path(real.datalist).parent / "cache" / UTILITY_CACHE)
        with timer.stage("utility"):
            metrics["utility"] = utility_module.utility_study(
                all_train.images, all_train.labels, all_heldout.images, all_heldout.labels, all_synth.images, all_synth.labels,
                list(real.classes), seeds=seeds, synthetic_ratio=synthetic_ratio, device=device, progress=progress,
                cache=real_arms, **study)
    if filter_synthetic:
        with timer.stage("filtering"):
            keep_mask, scores = utility_module.realness_filter(all_train.images, all_synth.images, seed=seed, device=device,
                                                               progress=progress, **epochs)
            keep_mask = np.asarray(keep_mask, dtype=bool)
            after = utility_module.utility_study(
                all_train.images, all_train.labels, all_heldout.images, all_heldout.labels, all_synth.images, all_synth.labels,
                list(real.classes), seeds=seeds, synthetic_ratio=synthetic_ratio, filter_mask=keep_mask,
                device=device, progress=progress, cache=real_arms, **study)
            metrics["filtering"] = {
                "kept": int(keep_mask.sum()),
                "dropped_fraction": float(1.0 - keep_mask.mean()),
                "dropped": [p for p, keep in zip(all_synth.paths, keep_mask) if not keep],
                "realness_scores": np.asarray(scores, dtype=float).tolist(),
                "utility_before": metrics["utility"],
                "utility_after": after,
            }

    metrics["inputs"] = {
        "real": str(real.datalist),
        "synthetic": str(synthetic.folder),
        "synthetic_source": synthetic.source,
        "synthetic_provenance": synthetic.provenance,
        "synthetic_skipped_files": synthetic.skipped,
        "synthetic_preprocessing": synthetic.preprocessing,
        "run": None if run_path is None else str(run_path),
        "reference_split": "training",
        "heldout_split": HELDOUT_SPLIT,
        "validation_used": False,
        "validation_not_used_because": "training may select its best checkpoint by a metric on the validation "
                                       "split, so it is not independent of the generator",
        "classes": list(real.classes),
        "counts": {"training": train.counts(real.classes), HELDOUT_SPLIT: heldout.counts(real.classes),
                   "synthetic": synth.counts(real.classes)},
        "max_samples": max_samples,
        "counts_before_max_samples": {"training": len(all_train), HELDOUT_SPLIT: len(all_heldout),
                                      "synthetic": len(all_synth)},
        "seed": seed,
        "mode": real.mode,
        "spatial_dims": real.spatial_dims,
        "image_shape": real.image_shape,
        "preprocessing": real.preprocessing,
        "device": str(device),
    }
    metrics["feature_extractor"] = {"kind": extractor.kind, "description": extractor.description,
                                    "dimensions": int(train_f.shape[1])}
    metrics["methods"] = _methods(real, extractor, fidelity_counts, knn, filter_synthetic)
    if utility:
        metrics["methods"]["utility"] = utility_module.utility_methods(
            metrics["utility"], f"the held-out real {HELDOUT_SPLIT} split")
    metrics["timing"] = timer.seconds
    metrics = _plain(metrics)
    from medvol.metrics.verdict import VERDICT_METHOD, samples_verdict

    run_record = RunRecord.load(run_path) if run_path is not None and RunRecord.exists(run_path) else None
    metrics["verdict"] = samples_verdict(metrics, run_record)
    metrics["methods"]["verdict"] = VERDICT_METHOD
    if report:
        from medvol.report.html import ReportInputs, write_report

        with timer.stage("report"):
            write_report(out / REPORT_FILE, metrics, ReportInputs(
                classes=list(real.classes), train=train, heldout=heldout, synthetic=synth, train_features=train_f,
                heldout_features=heldout_f, synthetic_features=synth_f, run_dir=run_path,
                keep_mask=None if keep_mask is None else keep_mask[synth_index],
                seed=seed))
        metrics["timing"] = _plain(timer.seconds)
    metrics["timing"]["total"] = round(sum(v for k, v in timer.seconds.items()), 3)
    write_json(out / METRICS_FILE, metrics)
    return metrics


def run_datalist(run_dir: str | os.PathLike) -> str:
    """The real datalist a training run used (``datalist`` of ``RUN/run.json``): the default ``--real`` of the
    bundles' ``evaluate.yaml``.

    Raises:
        MedvolInputError: not a run folder, or its record names no datalist.
    """
    record = RunRecord.load(Path(run_dir).expanduser(), if_missing="give the real datalist")
    if not record.datalist:
        raise MedvolInputError(record.folder / RUN_RECORD_FILE, "names no datalist; give the real datalist")
    return str(record.datalist)


def _read_datalist(datalist: str | os.PathLike) -> tuple[dict, Path]:
    """The real datalist document and its file."""
    path = datalist_file(datalist).resolve()
    return read_datalist(path), path


def _datalist_dims(datalist: str | os.PathLike) -> int:
    document, _ = _read_datalist(datalist)
    return 2 if str(document.get("mode") or "volume") == "slice" else 3


