"""Orientation, resampling, fitting to a shape and slice extraction keep (and update) the MetaTensor geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medvol.transforms.intensity import ScaleIntensityWindow
from medvol.transforms.spatial import (
    SLICE_META_KEY,
    CropBodyd,
    ExtractSlicesd,
    FitToShape,
    FitToShaped,
    OrientToRASd,
    ResampleToSpacingd,
    extract_slice,
    kept_slice_indices,
)


def _volume(shape, affine=None, seed=0):
    data = torch.as_tensor(np.random.default_rng(seed).random((1, *shape)), dtype=torch.float32)
    return MetaTensor(data, affine=torch.eye(len(shape) + 1, dtype=torch.float64) if affine is None else affine)


def test_orientation_to_ras_flips_data_and_updates_affine():
    lps = torch.diag(torch.tensor([-1.0, -1.0, 2.0, 1.0], dtype=torch.float64))
    volume = _volume((4, 5, 6), lps)
    out = OrientToRASd("image")({"image": volume})["image"]
    torch.testing.assert_close(torch.diag(out.affine)[:3], torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(out.as_tensor(), torch.flip(volume.as_tensor(), dims=(1, 2)))
    # the world position of a voxel's value is unchanged
    world_before = volume.affine @ torch.tensor([0.0, 0.0, 3.0, 1.0], dtype=torch.float64)
    world_after = out.affine @ torch.tensor([3.0, 4.0, 3.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(world_before, world_after)
    assert out[0, 3, 4, 3] == volume[0, 0, 0, 3]


def test_orientation_accepts_2d_images():
    image = _volume((4, 5))
    out = OrientToRASd("image")({"image": image})["image"]
    assert out.shape == (1, 4, 5)


# [params, input shape, expected shape, expected affine diagonal]
TEST_CASE_SPACING_1 = [{"spacing": (2.0, 2.0, 2.0)}, (16, 16, 16), (8, 8, 8), [2.0, 2.0, 2.0]]
TEST_CASE_SPACING_2 = [{"spacing": (1.0, 1.0, 0.5)}, (8, 8, 4), (8, 8, 7), [1.0, 1.0, 0.5]]
TEST_CASE_SPACING_3 = [{"spacing": (2.0, 2.0), "slice_axis": 0}, (6, 16, 16), (6, 8, 8), [1.0, 2.0, 2.0]]
TEST_CASE_SPACING_4 = [{"spacing": (2.0, 2.0), "slice_axis": 2}, (16, 16), (8, 8), [2.0, 2.0]]


@pytest.mark.parametrize(
    "params, shape, expected_shape, expected_diagonal",
    [TEST_CASE_SPACING_1, TEST_CASE_SPACING_2, TEST_CASE_SPACING_3, TEST_CASE_SPACING_4],
)
def test_resampling_updates_shape_and_affine(params, shape, expected_shape, expected_diagonal):
    out = ResampleToSpacingd("image", **params)({"image": _volume(shape)})["image"]
    assert tuple(out.shape[1:]) == expected_shape
    diagonal = torch.diag(out.affine)[: len(expected_diagonal)]
    torch.testing.assert_close(diagonal, torch.tensor(expected_diagonal, dtype=torch.float64))


def test_resampling_leaves_images_of_another_rank_alone():
    image = _volume((6, 6))
    out = ResampleToSpacingd("image", spacing=(2.0, 2.0, 2.0))({"image": image})["image"]
    assert out is image


# [params, input shape, expected shape]
TEST_CASE_FIT_1 = [{"spatial_size": (16, 16, 16), "mode": "crop_pad"}, (20, 10, 16), (16, 16, 16)]
TEST_CASE_FIT_2 = [{"spatial_size": (16, 16, 16), "mode": "resize"}, (20, 10, 16), (16, 16, 16)]
TEST_CASE_FIT_3 = [{"spatial_size": (16, 16, 16), "mode": "fit"}, (32, 16, 16), (16, 16, 16)]
TEST_CASE_FIT_4 = [{"spatial_size": (16, 16), "mode": "crop_pad", "slice_axis": 2}, (20, 10, 7), (16, 16, 7)]
TEST_CASE_FIT_5 = [{"spatial_size": (12, 12), "mode": "fit", "slice_axis": 0}, (5, 24, 12), (5, 12, 12)]
TEST_CASE_FIT_6 = [{"spatial_size": (8, 8), "mode": "resize"}, (16, 4), (8, 8)]


@pytest.mark.parametrize(
    "params, shape, expected_shape",
    [TEST_CASE_FIT_1, TEST_CASE_FIT_2, TEST_CASE_FIT_3, TEST_CASE_FIT_4, TEST_CASE_FIT_5, TEST_CASE_FIT_6],
)
def test_fit_to_shape(params, shape, expected_shape):
    image = _volume(shape)
    out = FitToShaped("image", **params)({"image": image, "label": 3})
    assert tuple(out["image"].shape[1:]) == expected_shape
    assert out["label"] == 3
    assert isinstance(out["image"], MetaTensor)


def test_fit_keeps_aspect_ratio_and_pads_with_the_recorded_background():
    scaled = ScaleIntensityWindow(kind="minmax", output_range=(-1, 1))(_volume((32, 16, 16)) + 0.5)
    out = FitToShape((16, 16, 16), mode="fit")(scaled)
    # 32x16x16 scales by 1/2 to 16x8x8, centred: y and z padding bands hold the background -1
    assert torch.all(out[:, :, :4] == -1) and torch.all(out[:, :, 12:] == -1)
    assert torch.all(out[:, :, 4:12, 4:12] > -1)
    # the affine is updated by the zoom: voxel size doubles
    torch.testing.assert_close(torch.diag(out.affine)[:3], torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))


def test_fit_keeps_the_physical_field_of_view_of_anisotropic_volumes():
    # 20 x 20 x 5 voxels of 1 x 1 x 4 mm: a 20 mm cube; fitting voxel counts would give 16 x 16 x 4 (a flat slab)
    volume = _volume((20, 20, 5), torch.diag(torch.tensor([1.0, 1.0, 4.0, 1.0], dtype=torch.float64)))
    out = FitToShape((16, 16, 16), mode="fit")(volume)
    assert tuple(out.shape[1:]) == (16, 16, 16)
    assert torch.all(out != 0)  # filled: no padding was needed, the cube fits exactly
    torch.testing.assert_close(torch.diag(out.affine)[:3], torch.tensor([1.25, 1.25, 1.25], dtype=torch.float64))


def test_crop_foreground_keeps_the_body_and_ignores_detached_lines():
    data = torch.full((1, 40, 30), -1.0)
    data[0, 10:20, 5:25] = 1.0  # the body: 10 x 20
    data[0, 39, :] = 1.0  # a frame line along an edge, not connected to the body
    image = ScaleIntensityWindow(kind="minmax", output_range=(-1, 1))(MetaTensor(data))
    out = CropBodyd("image", margin=0.05)({"image": image})["image"]
    assert tuple(out.shape[1:]) == (10 + 2 * 2, 20 + 2 * 2)  # margins: 5 % of 40 and 30, rounded: 2 voxels
    assert float(out[0, 2:12, 2:22].min()) == 1.0
    torch.testing.assert_close(out.affine[:2, -1], torch.tensor([8.0, 3.0], dtype=torch.float64))  # crop origin
    empty = MetaTensor(torch.full((1, 8, 8), -1.0))
    assert CropBodyd("image")({"image": empty})["image"].shape == empty.shape


def test_crop_foreground_keeps_the_slice_axis_of_volumes_to_be_sliced():
    data = torch.full((1, 12, 12, 10), -1.0)
    data[0, 4:8, 3:9, 4:6] = 1.0
    image = ScaleIntensityWindow(kind="minmax", output_range=(-1, 1))(MetaTensor(data))
    out = CropBodyd("image", margin=0.0, slice_axis=2, in_plane_rank=2)({"image": image})["image"]
    assert tuple(out.shape[1:]) == (4 + 2, 6 + 2, 10)  # at least one voxel of margin in-plane, every slice kept


def test_fit_rejects_a_shape_of_the_wrong_rank():
    with pytest.raises(ValueError, match="cannot be fitted"):
        FitToShape((8, 8, 8))(_volume((8, 8)))


def _volume_with_empty_ends():
    """8x8x6 volume in [-1, 1] whose first and last axial slices are empty (all -1)."""
    data = torch.full((1, 8, 8, 6), -1.0)
    data[0, 2:6, 2:6, 1:5] = 1.0
    data[0, 0, 0, 5] = 1.0  # one bright voxel: 1/64 foreground, below a 0.1 threshold
    volume = MetaTensor(data, affine=torch.diag(torch.tensor([0.5, 0.5, 3.0, 1.0], dtype=torch.float64)))
    volume.affine[:3, 3] = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    return ScaleIntensityWindow(kind="minmax", output_range=(-1, 1))(volume)


# [params, input, expected kept indices]
TEST_CASE_SLICES_1 = [{"axis": 2, "min_foreground_fraction": 0.0}, _volume_with_empty_ends(), [0, 1, 2, 3, 4, 5]]
TEST_CASE_SLICES_2 = [{"axis": 2, "min_foreground_fraction": 0.1}, _volume_with_empty_ends(), [1, 2, 3, 4]]
TEST_CASE_SLICES_3 = [{"axis": 0, "min_foreground_fraction": 0.1}, _volume_with_empty_ends(), [2, 3, 4, 5]]


@pytest.mark.parametrize("params, volume, expected", [TEST_CASE_SLICES_1, TEST_CASE_SLICES_2, TEST_CASE_SLICES_3])
def test_slice_extraction_drops_empty_slices_and_keeps_subject(params, volume, expected):
    assert kept_slice_indices(volume, **params) == expected
    samples = ExtractSlicesd("image", **params)({"image": volume, "subject": "sub-007", "label": 1})
    assert [s["image"].meta[SLICE_META_KEY]["index"] for s in samples] == expected
    assert all(s["subject"] == "sub-007" and s["label"] == 1 for s in samples)
    assert all(s["image"].ndim == 3 for s in samples)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_affine_maps_pixels_to_the_same_world_points(axis):
    volume = _volume_with_empty_ends()
    index = 3
    image = extract_slice(volume, axis, index)
    u, v = 1, 2
    voxel = [u, v]
    voxel.insert(axis, index)
    world_volume = volume.affine @ torch.tensor([*voxel, 1.0], dtype=torch.float64)
    world_slice = image.affine @ torch.tensor([u, v, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(world_slice, world_volume)
    assert image[0, u, v] == volume[(0, *voxel)]
    assert image.meta["medvol_intensity"] == volume.meta["medvol_intensity"]
