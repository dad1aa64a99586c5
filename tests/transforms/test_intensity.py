"""Intensity windowing: per-volume percentiles (float and uint8), fixed CT windows, records and their inversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medvol.transforms.intensity import (
    INTENSITY_META_KEY,
    ScaleIntensityWindow,
    ScaleIntensityWindowd,
    intensity_record,
    invert_intensity,
    snap_to_levels,
    source_window,
)

RNG = np.random.default_rng(0)
PATTERN = RNG.gamma(2.0, 1.0, size=(1, 8, 9, 10))  # a skewed, MR-like intensity distribution
PATTERN_UINT8 = np.round(PATTERN / PATTERN.max() * 255).astype(np.uint8)

# [params, input, expected (lo, hi) of the source window]
TEST_CASE_1 = [
    {"kind": "mr", "percentiles": (1, 99), "output_range": (-1, 1)},
    (PATTERN * 1000).astype(np.float32),
    tuple(np.percentile((PATTERN * 1000).astype(np.float32).astype(np.float64), (1, 99))),
]
TEST_CASE_2 = [
    {"kind": "mr", "percentiles": (0.5, 99.5), "output_range": (0, 1)},
    PATTERN_UINT8,
    tuple(np.percentile(PATTERN_UINT8.astype(np.float64), (0.5, 99.5))),
]
TEST_CASE_3 = [
    {"kind": "minmax", "output_range": (-1, 1)},
    PATTERN_UINT8,
    (float(PATTERN_UINT8.min()), float(PATTERN_UINT8.max())),
]
TEST_CASE_4 = [
    {"kind": "ct", "window": (-160, 240), "output_range": (-1, 1)},
    (PATTERN * 300 - 1000).astype(np.float32),
    (-160.0, 240.0),
]


@pytest.mark.parametrize("params, image, expected_window", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4])
def test_window_is_applied_and_recorded(params, image, expected_window):
    affine = torch.diag(torch.tensor([2.0, 1.5, 3.0, 1.0], dtype=torch.float64))
    out = ScaleIntensityWindow(**params)(MetaTensor(torch.as_tensor(image), affine=affine))
    record = intensity_record(out)
    np.testing.assert_allclose(record["window"], expected_window, rtol=1e-6)
    assert record["kind"] == params["kind"]
    assert record["output_range"] == list(map(float, params["output_range"]))
    assert ("percentiles" in record) == (params["kind"] == "mr")
    out_lo, out_hi = params["output_range"]
    assert out.dtype == torch.float32
    assert float(out.min()) >= out_lo and float(out.max()) <= out_hi
    lo, hi = expected_window
    inside = (image >= lo) & (image <= hi)
    expected = (image[inside] - lo) / (hi - lo) * (out_hi - out_lo) + out_lo
    np.testing.assert_allclose(out.numpy()[inside], expected, atol=1e-5)
    torch.testing.assert_close(out.affine, affine)  # metadata kept


def test_percentile_scaling_is_per_volume_for_float_and_uint8_files():
    """The same anatomy stored as float32 on a 0-4000 scale and as uint8 gives the same normalised image."""
    scaler = ScaleIntensityWindow(kind="mr", percentiles=(0.5, 99.5))
    as_uint8 = scaler(torch.as_tensor(PATTERN_UINT8))
    as_float = scaler(torch.as_tensor(PATTERN_UINT8.astype(np.float32) * 4000 / 255 + 17))
    torch.testing.assert_close(as_uint8.as_tensor(), as_float.as_tensor(), atol=1e-5, rtol=0)
    assert intensity_record(as_uint8)["window"] != intensity_record(as_float)["window"]


def test_ct_window_is_invertible_to_hounsfield_units():
    hu = torch.tensor([[-2000.0, -1000.0, -40.0, 0.0, 400.0, 1000.0, 3000.0]])
    scaled = ScaleIntensityWindow(kind="ct", window=(-1000, 1000), output_range=(-1, 1))(hu)
    torch.testing.assert_close(scaled.as_tensor(), torch.tensor([[-1.0, -1.0, -0.04, 0.0, 0.4, 1.0, 1.0]]))
    restored = invert_intensity(scaled.as_tensor(), intensity_record(scaled))
    torch.testing.assert_close(restored, torch.clamp(hu, -1000, 1000), atol=1e-3, rtol=0)


def test_mr_record_inverts_to_source_values_inside_the_window():
    image = torch.as_tensor((PATTERN * 1000).astype(np.float32))
    scaled = ScaleIntensityWindow(kind="mr", output_range=(0, 1))(image)
    lo, hi = intensity_record(scaled)["window"]
    restored = invert_intensity(scaled.as_tensor(), intensity_record(scaled))
    torch.testing.assert_close(restored, image.clamp(lo, hi), atol=1e-2, rtol=1e-5)


def test_constant_image_maps_to_background_without_warning():
    out = ScaleIntensityWindow(kind="mr", output_range=(-1, 1))(torch.full((1, 4, 4), 7.0))
    assert torch.all(out == -1)
    assert intensity_record(out)["window"] == [7.0, 7.0]


def test_dictionary_version_keeps_other_items_and_meta():
    image = MetaTensor(torch.as_tensor(PATTERN_UINT8), meta={"filename_or_obj": "a.nii.gz"})
    out = ScaleIntensityWindowd("image", kind="minmax", output_range=(0, 1))({"image": image, "subject": "s1"})
    assert out["subject"] == "s1"
    assert out["image"].meta["filename_or_obj"] == "a.nii.gz"
    assert out["image"].meta[INTENSITY_META_KEY]["kind"] == "minmax"
    assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == 1.0


@pytest.mark.parametrize(
    "params",
    [{"percentiles": (99, 1)}, {"kind": "ct", "window": (100, -100)}, {"output_range": (1, 1)}, {"kind": "pet"}],
)
def test_invalid_settings_raise(params):
    with pytest.raises(ValueError):
        ScaleIntensityWindow(**params)


def test_source_window_ignores_non_finite_values():
    image = np.array([np.nan, 0.0, 1.0, 2.0, np.inf], dtype=np.float32)
    assert source_window(image, "minmax") == (0.0, 2.0)


@pytest.mark.parametrize("levels, image, expected", [
    [[0, 255], [-3.0, 0.0, 127.4, 127.5, 200.0, 300.0], [0, 0, 0, 255, 255, 255]],  # a tie goes up
    [[2, 0, 1], [-1.0, 0.49, 0.6, 1.2, 1.6, 9.0], [0, 0, 1, 1, 2, 2]],  # label maps, levels in any order
    [[5], [0.0, 99.0], [5, 5]],
])
def test_snap_to_levels(levels, image, expected):
    snapped = snap_to_levels(np.asarray(image), levels)
    assert snapped.dtype == np.float32 and snapped.tolist() == expected


def test_snapped_generator_output_is_a_mask_in_source_units():
    from medvol.sampling import to_source_units

    from medvol.runs import RunRecord

    record = RunRecord(family="gan", spatial_dims=2, image_size=[1, 5],
                       intensity={"kind": "minmax", "window": [0.0, 255.0], "output_range": [-1.0, 1.0]},
                       intensity_source={"kind": "minmax", "levels": [0.0, 255.0]})
    images = torch.tensor([[[-1.2, -0.9, -0.01, 0.2, 0.95]]])
    assert to_source_units(images, record).tolist() == [[[0.0, 0.0, 0.0, 255.0, 255.0]]]
    raw = to_source_units(images, record, snap=False)
    assert np.allclose(raw, [[[0.0, 12.75, 126.225, 153.0, 248.625]]])
    del record.intensity_source["levels"]  # no levels (MR, CT, pictures): the continuous values
    assert np.allclose(to_source_units(images, record), raw)
