"""NIfTI read/write with nibabel, keeping the voxel-to-world affine, plus a check for non-finite voxels.

nibabel returns the best affine of the header (sform when its code is set, else qform) in RAS; arrays are indexed
[x, y, z] as stored, like MONAI's ``NibabelReader``. Writing sets the same affine as qform and sform (code 1,
scanner), so nibabel, SimpleITK/ITK and MONAI all read the same geometry back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from monai.utils import optional_import

from medvol.errors import MedvolInputError
from medvol.io.files import NIFTI_SUFFIXES, atomic_path, gzip_problem
from medvol.io.geometry import ImageGeometry, geometry_from_affine_ras
from medvol.io.images import size_problem
from medvol.io.report import SKIPPED, USED, WARNING

nib, _ = optional_import("nibabel")



def check_nifti_suffix(path: str | os.PathLike) -> None:
    """Raise ``MedvolInputError`` unless ``path`` ends in .nii or .nii.gz."""
    if not str(path).lower().endswith(NIFTI_SUFFIXES):
        raise MedvolInputError(path, "output must end in .nii or .nii.gz")


def affine_problem(affine: np.ndarray) -> str | None:
    """A sentence when the voxel-to-world affine is unusable (NaN/Inf, or singular: no orientation and spacing can
    be derived, MONAI's orientation transform then fails), None when it is a valid geometry.

    Args:
        affine: 4x4 matrix.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        return "NIfTI affine contains NaN/Inf: the voxel-to-world geometry is undefined"
    linear = affine[:3, :3]
    scale = max(float(np.abs(linear).max()), 1e-300)
    if abs(float(np.linalg.det(linear / scale))) < 1e-9:
        return (f"NIfTI affine is singular (rotation-zoom part {np.round(linear, 4).tolist()}, determinant 0): no "
                "orientation or voxel spacing can be derived; repair the header's sform/qform")
    return None


def _load(path: str | os.PathLike, check_affine: bool = True):
    path = Path(path)
    if not path.is_file():
        raise MedvolInputError(path, "no such NIfTI file")
    if path.name.lower().endswith(".gz") and (problem := gzip_problem(path)):
        raise MedvolInputError(path, f"not a readable NIfTI file: {problem}")
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib errors ... on damaged files
        raise MedvolInputError(path, f"not a readable NIfTI file ({type(err).__name__}: {err})") from None
    if check_affine and (problem := affine_problem(image.affine)):
        raise MedvolInputError(path, problem)
    return image


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file.

    Args:
        path: .nii or .nii.gz file.

    Returns:
        ``(array, affine_ras)``: float32 voxels [x, y, z(, ...)] with the header's scaling applied, and the 4x4
        RAS voxel-to-world affine.

    Raises:
        MedvolInputError: missing, unreadable, truncated or gzip-damaged file, or an affine that is singular or not
            finite.
    """
    image = _load(path)
    try:
        array = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as err:  # truncated data surface only when the voxels are read
        raise MedvolInputError(path, f"cannot read the voxels ({type(err).__name__}: {err})") from None
    return array, np.asarray(image.affine, dtype=np.float64)


def write_nifti(array: np.ndarray, affine_ras: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``array`` (indexed [x, y(, z)]) with ``affine_ras`` as qform and sform.

    Args:
        array: voxels; float arrays are written as float32, integer arrays keep their type.
        affine_ras: 4x4 RAS voxel-to-world affine.
        path: output ending in .nii or .nii.gz (parent folders are created).

    Returns:
        the path written.
    """
    check_nifti_suffix(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    image = nib.Nifti1Image(array, np.asarray(affine_ras, dtype=np.float64))
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as temporary:  # a full disk leaves no partial file that a later command would read
        nib.save(image, str(temporary))
    return path


def nifti_geometry(path: str | os.PathLike) -> ImageGeometry:
    """Shape, spacing, origin and direction in LPS, as SimpleITK reports them, from the header only.

    Args:
        path: .nii or .nii.gz file.
    """
    image = _load(path)
    shape = [int(s) for s in image.shape[:3]]
    return geometry_from_affine_ras(image.affine, shape)


def nonfinite_problem(array: np.ndarray) -> str | None:
    """A sentence counting NaN and infinite voxels, or None when every voxel is finite.

    Args:
        array: voxels of any shape.
    """
    nan_count = int(np.isnan(array).sum())
    inf_count = int(np.isinf(array).sum())
    if not nan_count and not inf_count:
        return None
    return (
        f"{nan_count} NaN and {inf_count} infinite voxels of {array.size}: intensities are not usable until they "
        "are repaired or masked"
    )


def check_nifti(path: str | os.PathLike, read_voxels: bool = True) -> tuple[str, str, tuple[int, ...] | None]:
    """Validate one NIfTI file with nibabel.

    Args:
        path: the file.
        read_voxels: also read the voxels to reject NaN/Inf and flag constant images (otherwise the header only).

    Returns:
        (status, reason, spatial shape or None): status ``used``, ``warning`` or ``skipped``.
    """
    if str(path).lower().endswith(".gz") and (problem := gzip_problem(path)):
        return SKIPPED, f"unreadable NIfTI: {problem}", None
    try:
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
    except Exception as err:  # nibabel raises many types for broken files
        return SKIPPED, f"unreadable NIfTI: {err}", None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        return SKIPPED, f"NIfTI has {len(shape)} dimensions {list(image.shape)}; expected a 2D or 3D image", None
    if min(shape) < 1:
        return SKIPPED, f"NIfTI has an empty dimension {list(shape)}", None
    if (len(shape) == 2 or shape[-1] == 1) and (problem := size_problem(shape[:2])):
        return SKIPPED, problem, shape
    if problem := affine_problem(image.affine):
        return SKIPPED, problem, shape
    if not read_voxels:
        return USED, "", shape
    try:
        voxels = np.asanyarray(image.dataobj)
    except Exception as err:
        return SKIPPED, f"unreadable NIfTI voxels (truncated file?): {err}", shape
    if np.issubdtype(voxels.dtype, np.inexact):
        bad = int(np.count_nonzero(~np.isfinite(voxels)))
        if bad:
            return SKIPPED, f"NIfTI contains {bad} NaN/Inf voxels of {voxels.size}", shape
    if voxels.size and voxels.min() == voxels.max():
        return WARNING, f"image is constant (every voxel = {voxels.flat[0]})", shape
    return USED, "", shape


def nifti_spatial_dims(path: str | os.PathLike) -> int:
    """2 for a 2D NIfTI (also ``[x, y, 1]``, how radiographs are stored), 3 for a volume; from the header alone."""
    shape = list(nib.load(str(path)).shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    return 2 if len(shape) == 2 or shape[-1] == 1 else 3
