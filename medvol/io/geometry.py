"""Voxel-to-world geometry shared by the DICOM, NIfTI and image readers.

Two frames meet here: DICOM and ITK/SimpleITK describe images in the patient frame LPS (x to the patient's left,
y to the posterior, z to the head) with `spacing`, `origin` and a row-major 3x3 `direction`; MONAI and NIfTI use a
4x4 voxel-to-world affine in RAS. The two differ by a sign flip of the first two world axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class ImageGeometry:
    """Geometry of one image as SimpleITK reports it (LPS, row-major direction).

    Args:
        shape: voxels per axis, [x, y(, z)].
        spacing: voxel size in mm per axis.
        origin: world position (LPS, mm) of the centre of the first voxel.
        direction: row-major ``ndim x ndim`` matrix whose columns are the axis directions in LPS.
    """

    shape: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def affine_ras_from_geometry(
    spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """Build the RAS voxel-to-world affine from LPS spacing, origin and row-major direction.

    Args:
        spacing: voxel size per axis (2 or 3 values).
        origin: LPS world position of the first voxel (2 or 3 values).
        direction: row-major LPS direction matrix (4 or 9 values).

    Returns:
        4x4 float64 affine in RAS; a 2D geometry is embedded as the x-y plane of a 3D one.
    """
    ndim = len(spacing)
    direction_lps = np.eye(3)
    direction_lps[:ndim, :ndim] = np.asarray(direction, dtype=float).reshape(ndim, ndim)
    spacing_3d = np.ones(3)
    spacing_3d[:ndim] = np.asarray(spacing, dtype=float)
    origin_3d = np.zeros(3)
    origin_3d[:ndim] = np.asarray(origin, dtype=float)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction_lps * spacing_3d[None, :]
    affine_lps[:3, 3] = origin_3d
    return LPS_TO_RAS @ affine_lps


def geometry_from_affine_ras(affine_ras: np.ndarray, shape: Sequence[int]) -> ImageGeometry:
    """Spacing, LPS origin and row-major LPS direction of an image with a RAS affine, as SimpleITK would report them.

    Args:
        affine_ras: 4x4 voxel-to-world affine in RAS.
        shape: spatial shape [x, y(, z)]; its length sets the dimension reported (2 or 3).

    Returns:
        the geometry; for 2D shapes the upper-left 2x2 block and first two origin values, as SimpleITK does.
    """
    affine_lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)
    columns = affine_lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    spacing[spacing == 0] = 1.0
    direction = columns / spacing[None, :]
    ndim = len(shape)
    return ImageGeometry(
        shape=[int(s) for s in shape],
        spacing=[float(v) for v in spacing[:ndim]],
        origin=[float(v) for v in affine_lps[:ndim, 3]],
        direction=[float(v) for v in direction[:ndim, :ndim].ravel()],
    )
