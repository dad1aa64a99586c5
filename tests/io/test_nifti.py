"""NIfTI read/write keeps the affine (checked against SimpleITK's LPS geometry) and non-finite voxels are reported."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medvol.errors import MedvolInputError
from medvol.io.geometry import affine_ras_from_geometry
from medvol.io.nifti import nifti_geometry, nonfinite_problem, read_nifti, write_nifti

# the direction of the oblique series in study_mixed_series (about 11 degrees about x)
OBLIQUE_DIRECTION = [
    0.99999997, 0.0, 0.00025717,
    -0.00004819, 0.98228909, 0.18737166,
    -0.00025262, -0.18737167, 0.98228906,
]

TEST_CASE_AXIAL = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], list(np.eye(3).ravel())]
TEST_CASE_OBLIQUE = [[0.6875, 0.6875, 6.5], [-97.18, -83.17, -11.42], OBLIQUE_DIRECTION]
TEST_CASE_FLIPPED = [[0.5, 2.0, 3.0], [10.0, -20.0, 30.0], [-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0]]


def _orthonormal(direction):
    u, _, vt = np.linalg.svd(np.asarray(direction).reshape(3, 3))
    return list((u @ vt).ravel())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("spacing, origin, direction", [TEST_CASE_AXIAL, TEST_CASE_OBLIQUE, TEST_CASE_FLIPPED])
def test_roundtrip_keeps_affine_and_simpleitk_agrees(tmp_path, suffix, spacing, origin, direction):
    direction = _orthonormal(direction)
    affine = affine_ras_from_geometry(spacing, origin, direction)
    array = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    path = write_nifti(array, affine, tmp_path / f"volume{suffix}")
    read_array, read_affine = read_nifti(path)
    np.testing.assert_array_equal(read_array, array)
    np.testing.assert_allclose(read_affine, affine, atol=1e-5)
    reference = sitk.ReadImage(str(path))
    geometry = nifti_geometry(path)
    assert geometry.shape == list(reference.GetSize()) == [7, 5, 3]
    np.testing.assert_allclose(geometry.spacing, reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(geometry.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(geometry.direction, reference.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(geometry.direction, direction, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reference).transpose(2, 1, 0), array)


def test_real_hippocampus_geometry_matches_simpleitk(shared_data):
    path = sorted((shared_data / "hippocampus3d/images").glob("*.nii.gz"))[0]
    reference = sitk.ReadImage(str(path))
    geometry = nifti_geometry(path)
    assert geometry.shape == list(reference.GetSize())
    np.testing.assert_allclose(geometry.spacing, reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(geometry.origin, reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(geometry.direction, reference.GetDirection(), atol=1e-3)
    array, _ = read_nifti(path)
    np.testing.assert_allclose(array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0), rtol=1e-6)


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.0, 1.0], None),
        ([np.nan, 1.0, np.nan], "2 NaN and 0 infinite"),
        ([np.inf, -np.inf, np.nan], "1 NaN and 2 infinite"),
    ],
)
def test_nonfinite_problem(values, expected):
    problem = nonfinite_problem(np.asarray(values, dtype=np.float32))
    assert problem == expected if expected is None else expected in problem


def test_unreadable_and_wrong_suffix(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(MedvolInputError, match="broken.nii.gz: not a readable NIfTI"):
        read_nifti(broken)
    with pytest.raises(MedvolInputError, match="no such NIfTI file"):
        read_nifti(tmp_path / "absent.nii")
    with pytest.raises(MedvolInputError, match="must end in .nii or .nii.gz"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "out.nrrd")


def test_truncated_nifti_raises(tmp_path):
    path = write_nifti(np.ones((8, 8, 8), np.float32), np.eye(4), tmp_path / "whole.nii")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MedvolInputError, match="whole.nii"):
        read_nifti(path)
