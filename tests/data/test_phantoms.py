"""Built-in procedural phantoms."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvol.data.phantoms import CLASSES, lesion_region_mask, make_phantom, make_phantom_batch, write_phantom_dataset

TEST_CASES_SHAPES = [[2, (32, 24)], [3, (16, 20, 12)]]


@pytest.mark.parametrize("spatial_dims, size", TEST_CASES_SHAPES)
def test_shape_range_and_dtype(spatial_dims, size):
    images, labels = make_phantom_batch(4, spatial_dims, size, seed=0)
    assert images.shape == (4, 1, *size) and images.dtype == np.float32
    assert labels.tolist() == [0, 1, 0, 1]
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.05  # not blank: body, organ and texture are there


@pytest.mark.parametrize("spatial_dims, size", TEST_CASES_SHAPES)
def test_deterministic_by_seed(spatial_dims, size):
    first, _ = make_phantom_batch(2, spatial_dims, size, seed=5)
    again, _ = make_phantom_batch(2, spatial_dims, size, seed=5)
    other, _ = make_phantom_batch(2, spatial_dims, size, seed=6)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("spatial_dims, size", [[2, (48, 48)], [3, (24, 24, 24)]])
def test_lesion_region_brighter_in_class_1(spatial_dims, size):
    images, labels = make_phantom_batch(8, spatial_dims, size, seed=2)
    region = lesion_region_mask(size)
    means = np.array([image[0][region].mean() for image in images])
    assert means[labels == 1].min() > means[labels == 0].max() + 0.1


def test_invalid_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="does not match"):
        make_phantom(3, (16, 16), 0, rng)
    with pytest.raises(ValueError, match="label"):
        make_phantom(2, (16, 16), 2, rng)
    with pytest.raises(ValueError, match="labels"):
        make_phantom_batch(3, 2, (16, 16), labels=[0, 1])


@pytest.mark.parametrize("spatial_dims, size, suffix", [[2, (24, 20), ".png"], [3, (12, 14, 10), ".nii.gz"]])
def test_written_dataset_is_readable(tmp_path, spatial_dims, size, suffix):
    out = write_phantom_dataset(tmp_path / "ph", spatial_dims, size, n_per_class=2, seed=0)
    with open(out / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == [CLASSES[0], CLASSES[1]] * 2
    assert len({r["id"] for r in rows}) == 4
    expected, _ = make_phantom_batch(4, spatial_dims, size, labels=[0, 1, 0, 1], seed=0)
    for row, image in zip(rows, expected):
        path = out / "images" / f"{row['id']}{suffix}"
        if spatial_dims == 3:
            data = np.asanyarray(nib.load(str(path)).dataobj)
            np.testing.assert_allclose(data, image[0], atol=1e-6)
        else:
            data = np.asarray(Image.open(path)).T / 255.0  # PIL is [rows, columns]; phantoms are [x, y]
            np.testing.assert_allclose(data, image[0], atol=1 / 255)
        assert data.shape == tuple(size)
