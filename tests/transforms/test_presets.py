"""The preprocessing preset on tiny files written here, and the settings that key the disk cache."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medvol.transforms.presets import PreprocessingSettings, preprocessing

AFFINE_LPS = np.diag([-1.0, -1.0, 2.0, 1.0])


def _write_nifti(path, data, affine=AFFINE_LPS):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def _blob(shape, dtype, scale):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    return (np.exp(-(grid**2).sum(0) * 3) * scale).astype(dtype)


# [params, input (dtype, scale, shape), expected (shape, output range, voxel size in RAS)]; files are 1x1x2 mm LPS
TEST_CASE_1 = [
    {"spatial_dims": 3, "size": (16, 16, 16)},
    (np.uint8, 250, (20, 12, 10)),
    ((1, 16, 16, 16), (-1.0, 1.0), (1.0, 1.0, 2.0)),
]
TEST_CASE_2 = [
    {"spatial_dims": 3, "size": (16, 16, 16), "spacing": (2.0, 2.0, 2.0), "output_range": (0, 1)},
    (np.float32, 3000.0, (20, 12, 10)),
    ((1, 16, 16, 16), (0.0, 1.0), (2.0, 2.0, 2.0)),
]
TEST_CASE_3 = [
    {"spatial_dims": 2, "size": (16, 16), "shape_mode": "resize"},
    (np.float32, 5.0, (20, 12, 9)),
    ((1, 16, 16, 9), (-1.0, 1.0), (20 / 16, 12 / 16, 2.0)),
]
TEST_CASE_4 = [
    {"spatial_dims": 3, "size": None, "intensity": "ct"},
    (np.int16, 3000, (8, 6, 4)),
    ((1, 8, 6, 4), (-1.0, 1.0), (1.0, 1.0, 2.0)),
]


@pytest.mark.parametrize("params, source, expected", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4])
def test_preprocessing_on_nifti(tmp_path, params, source, expected):
    dtype, scale, shape = source
    path = _write_nifti(tmp_path / "vol.nii.gz", _blob(shape, dtype, scale))
    image = preprocessing(**params)({"image": path, "label": 1})["image"]
    expected_shape, (out_lo, out_hi), expected_spacing = expected
    assert tuple(image.shape) == expected_shape
    assert image.dtype == torch.float32
    assert float(image.min()) >= out_lo and float(image.max()) <= out_hi
    assert float(image.max()) == pytest.approx(out_hi)
    record = image.meta["medvol_intensity"]
    assert record["kind"] == params.get("intensity", "mr") and record["output_range"] == [out_lo, out_hi]
    assert image.meta["filename_or_obj"] == path
    # oriented to RAS (positive diagonal), voxel size updated by resampling / resizing
    torch.testing.assert_close(torch.diag(image.affine)[:3], torch.tensor(expected_spacing, dtype=torch.float64))
    # every metadata value survives torch.load(weights_only=True), as PersistentDataset reads it
    buffer = io.BytesIO()
    torch.save(image, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True).meta["medvol_intensity"] == record


def test_colour_png_becomes_itu_601_greyscale(tmp_path):
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)  # rows, columns, channels
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[:3, :, :] = 0
    Image.fromarray(rgb).save(tmp_path / "c.png")
    pipeline = preprocessing(2, size=None, intensity="minmax", output_range=(0, 1))
    image = pipeline({"image": str(tmp_path / "c.png")})["image"]
    assert tuple(image.shape) == (1, 8, 6)  # [C, x (columns), y (rows)]
    grey = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert image.meta["medvol_intensity"]["window"] == pytest.approx([0.0, round(grey)], abs=1)


BASE = {"spatial_dims": 3, "size": (16, 16, 16)}


@pytest.mark.parametrize(
    "change",
    [{"size": (32, 32, 32)}, {"spacing": (1.0, 1.0, 1.0)}, {"intensity": "ct"}, {"output_range": (0, 1)},
     {"percentiles": (1, 99)}, {"shape_mode": "fit"}, {"spatial_dims": 2, "size": (16, 16)},
     {"crop_foreground": True}],
)
def test_cache_key_changes_with_every_setting(change):
    assert PreprocessingSettings(**BASE).cache_key() != PreprocessingSettings(**{**BASE, **change}).cache_key()


def test_cache_key_is_stable_across_sequence_types():
    a = PreprocessingSettings(spatial_dims=3, size=[16, 16, 16], spacing=[1, 1, 1], intensity="mr")
    b = PreprocessingSettings(spatial_dims=3, size=(16, 16, 16), spacing=(1.0, 1.0, 1.0), intensity="MR".lower())
    assert a.cache_key() == b.cache_key()
    assert a.to_dict()["size"] == [16, 16, 16]


@pytest.mark.parametrize(
    "params",
    [{"spatial_dims": 4}, {"spatial_dims": 2, "size": (8, 8, 8)}, {"spatial_dims": 3, "intensity": "pet"},
     {"spatial_dims": 3, "spacing": (1.0, 1.0)}, {"spatial_dims": 2, "spacing": (1.0, 0.0)}],
)
def test_invalid_settings_raise(params):
    with pytest.raises(ValueError):
        PreprocessingSettings(**params)


def test_pictures_are_upright(tmp_path):
    """A PNG's first row is the top of the picture: it ends at the highest y (medvol's y points up), so sample grids,
    which draw the highest y on top, show pictures as they are."""
    pixels = np.zeros((12, 20), dtype=np.uint8)  # 12 rows, 20 columns
    pixels[:3] = 255  # bright top band
    pixels[:, :2] = 128  # grey left band
    Image.fromarray(pixels).save(tmp_path / "picture.png")
    image = preprocessing(spatial_dims=2, intensity="minmax")({"image": str(tmp_path / "picture.png")})["image"]
    assert tuple(image.shape) == (1, 20, 12)  # [x: columns, y: rows]
    assert torch.all(image[0, 2:, 9:] == 1.0) and torch.all(image[0, 2:, :9] == -1.0)
    assert float((image.as_tensor()[0, :2, :9] - (128 / 255 * 2 - 1)).abs().max()) < 1e-6  # the left band: x = 0
    from medvol.report.figures import sample_montage

    shown = sample_montage(image[None])
    np.testing.assert_array_equal(shown, np.asarray(Image.open(tmp_path / "picture.png")))


def test_intensities_are_scaled_on_the_fitted_grid(tmp_path):
    """A 64x64 picture with a small bright dot, fitted to 16x16: resizing smooths the dot, and the min-max window is
    measured afterwards, so the sample still spans the whole range (as the same picture given at 16x16 would)."""
    pixels = np.full((64, 64), 20, dtype=np.uint8)
    pixels[30:32, 40:42] = 255
    Image.fromarray(pixels).save(tmp_path / "dot.png")
    pipeline = preprocessing(2, size=(16, 16), intensity="minmax", shape_mode="fit")
    image = pipeline({"image": str(tmp_path / "dot.png")})["image"]
    hi = image.meta["medvol_intensity"]["window"][1]
    assert 20.0 < hi < 200.0  # the window of the 16x16 picture, not of the 64x64 file (255)
    assert float(image.min()) == -1.0 and float(image.max()) == 1.0


def test_foreground_crop_before_scaling_finds_the_windowed_foreground(tmp_path):
    """The crop runs in source units before the CT window: a field of view padded with -3024 HU around air (-1000)
    and a body (40) is cropped to the body, as on the windowed image, not to the whole field of view."""
    volume = np.full((24, 24, 8), -3024.0, dtype=np.float32)
    volume[2:22, 2:22] = -1000.0
    volume[8:14, 6:12] = 40.0
    path = _write_nifti(tmp_path / "ct.nii.gz", volume, np.eye(4))
    image = preprocessing(3, intensity="ct", crop_foreground=True)({"image": path})["image"]
    assert tuple(image.shape[1:3]) == (6 + 2, 6 + 2)  # the body and a one-voxel margin on each side
    assert float(image.max()) == pytest.approx(0.04) and float(image.min()) == -1.0


def test_cache_key_changes_with_the_pipeline_version(monkeypatch):
    """A changed pipeline (e.g. version 3: intensities scaled after the fit) never reads caches of the old one."""
    from medvol.transforms import presets

    before = PreprocessingSettings(**BASE).cache_key()
    monkeypatch.setattr(presets, "PIPELINE_VERSION", presets.PIPELINE_VERSION - 1)
    assert PreprocessingSettings(**BASE).cache_key() != before
