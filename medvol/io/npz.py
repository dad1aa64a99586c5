"""MedMNIST-style ``.npz`` archives: arrays ``{train,val,test}_images`` and ``{train,val,test}_labels`` holding a
whole labelled dataset with its official split (MedMNIST v2, e.g. AdrenalMNIST3D).

`datalist_from_npz` writes every image as its own NIfTI file (1 mm spacing, identity affine; a 2D image as
``[x, y, 1]`` like a radiograph) so that the rest of medvol reads it like any other image, and returns a `Datalist`
whose entries remember their official split (private key ``_split``, which `medvol prepare` keeps).

Array layouts: ``[N, X, Y, Z]`` volumes, ``[N, H, W]`` greyscale images, ``[N, H, W, 3]`` RGB images (read as
greyscale with ITU-R 601 weights, like RGB files). Labels: ``[N]`` or ``[N, 1]`` non-negative integers; the class
names are the numbers (``medvol prepare --class-names`` names them: the archives carry no names). Intensities are
min-max scaled; when every image holds the same two values (binary masks) they are recorded as the intensity
``levels``, and generated images are snapped to them (`medvol.sampling.to_source_units`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from medvol.errors import MedvolInputError
from medvol.io.datalist import Datalist
from medvol.io.report import USED, WARNING

# npz key prefix -> datalist split
NPZ_SPLITS = {"train": "training", "val": "validation", "test": "test"}
NPZ_KEYS = tuple(f"{prefix}_{kind}" for prefix in NPZ_SPLITS for kind in ("images", "labels"))
IDENTITY_AFFINE = np.eye(4)
MAX_LEVELS = 2  # images holding exactly this many distinct values are masks: their levels are recorded


def is_npz(path: str | os.PathLike) -> bool:
    """True for a ``.npz`` file name."""
    return str(path).lower().endswith(".npz")


def _load(path: Path):
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MedvolInputError(path, f"not a readable .npz archive ({type(err).__name__}: {err})") from None
    if not hasattr(archive, "files"):  # np.load of a .npy renamed .npz gives a bare array
        raise MedvolInputError(path, "is a single array, not an .npz archive of named arrays")
    missing = [key for key in NPZ_KEYS if key not in archive.files]
    if missing:
        raise MedvolInputError(path, f"missing arrays {missing}: a MedMNIST-style .npz holds {', '.join(NPZ_KEYS)} "
                               f"(found {sorted(archive.files)})")
    return archive


def _read(archive, path: Path, key: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MedvolInputError(path, f"array {key} cannot be read ({type(err).__name__}: {err})") from None


def _spatial_dims(shape: tuple[int, ...], path: Path, key: str) -> int:
    """2 for ``[N, H, W]`` and ``[N, H, W, 3]``, 3 for ``[N, X, Y, Z]``."""
    if len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3):
        return 2
    if len(shape) == 4:
        return 3
    raise MedvolInputError(path, f"{key} has shape {list(shape)}: expected [N, X, Y, Z] volumes, [N, H, W] or "
                           "[N, H, W, 3] images")


def _labels(archive, path: Path, prefix: str, count: int) -> np.ndarray:
    key = f"{prefix}_labels"
    labels = _read(archive, path, key)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise MedvolInputError(path, f"{key} has shape {list(labels.shape)}: expected one class per image ([N] or "
                               "[N, 1]); multi-label archives are not supported")
    if len(labels) != count:
        raise MedvolInputError(path, f"{key} has {len(labels)} labels but {prefix}_images has {count} images")
    if labels.size and (not np.issubdtype(labels.dtype, np.number) or not np.all(np.isfinite(labels))
                        or np.any(labels < 0) or np.any(labels != np.round(labels))):
        raise MedvolInputError(path, f"{key} must hold non-negative integer class labels")
    return labels.astype(np.int64)


def datalist_from_npz(path: str | os.PathLike, images_dir: str | os.PathLike) -> Datalist:
    """Datalist of a MedMNIST-style ``.npz``, every image written to ``images_dir`` as NIfTI.

    Entries: ``{"image", "id", "subject", "label", "label_name", "_split"}`` with id = subject = ``train_0007``
    (MedMNIST has no patient ids; its official split is kept by `medvol prepare`). The report records the archive
    and one record per image (``ARCHIVE:train_images[7]``).

    Args:
        path: the ``.npz`` file.
        images_dir: folder the NIfTI files go to (created; files of an earlier run are overwritten).

    Raises:
        MedvolInputError: unreadable archive, missing arrays, label and image counts that differ, labels that are
            not one non-negative integer per image, image arrays of another shape or with non-finite values, or
            splits of different dimensionality.
    """
    from medvol.io.images import rgb_to_grey
    from medvol.io.nifti import write_nifti

    path = Path(path).expanduser().resolve()
    archive = _load(path)
    arrays, dims, values = {}, set(), set()
    for prefix in NPZ_SPLITS:  # everything is checked before anything is written
        images = _read(archive, path, f"{prefix}_images")
        labels = _labels(archive, path, prefix, len(images))
        dims.add(_spatial_dims(images.shape, path, f"{prefix}_images"))
        if not np.issubdtype(images.dtype, np.number):
            raise MedvolInputError(path, f"{prefix}_images must hold numbers, got {images.dtype}")
        if np.issubdtype(images.dtype, np.inexact) and not np.all(np.isfinite(images)):
            raise MedvolInputError(path, f"{prefix}_images holds NaN or infinite values")
        arrays[prefix] = (images, labels)
        if len(values) <= MAX_LEVELS:
            values.update(np.unique(images).tolist())
    if len(dims) > 1:
        raise MedvolInputError(path, "the splits mix 2D images and 3D volumes")
    spatial_dims = dims.pop()
    images_dir = Path(images_dir)
    datalist = Datalist([], {}, str(path), spatial_dims)
    datalist.record(path, USED, "")  # the archive first in the report; its reason is set below
    shapes, names = set(), []
    for prefix, (images, labels) in arrays.items():
        rgb = spatial_dims == 2 and images.ndim == 4
        digits = max(4, len(str(len(images) - 1)))
        for index, (image, label) in enumerate(zip(images, labels)):
            image_id = f"{prefix}_{index:0{digits}d}"
            shapes.add(tuple(image.shape[:spatial_dims]))
            if rgb:
                image = rgb_to_grey(image)
            if spatial_dims == 2:  # [rows, columns] -> [x, y, 1], as 2D files and radiographs are read
                image = np.ascontiguousarray(image.T)[..., None]
            output = write_nifti(image, IDENTITY_AFFINE, images_dir / f"{image_id}.nii.gz")
            record = f"{path}:{prefix}_images[{index}]"
            datalist.record(record, WARNING if rgb else USED,
                            "RGB image read as greyscale with ITU-R 601 weights" if rgb else "", image_id)
            datalist.entries.append({"image": str(output), "id": image_id, "subject": image_id,
                                     "_split": NPZ_SPLITS[prefix], "_record_paths": [record]})
            names.append(str(int(label)))
    datalist.assign_classes(names)
    datalist.intensity = {"kind": "minmax"}
    if len(values) == MAX_LEVELS:  # binary masks (AdrenalMNIST3D: 0 / 255)
        datalist.intensity["levels"] = sorted(float(v) for v in values)
    shown = " / ".join(f"{prefix} {len(images)}" for prefix, (images, _) in arrays.items())
    sizes = ", ".join("x".join(str(s) for s in shape) for shape in sorted(shapes))
    datalist.records[str(path)].reason = (f"MedMNIST-style archive: {shown} images of {sizes}, written as NIfTI to "
                                          f"{images_dir}")
    return datalist
