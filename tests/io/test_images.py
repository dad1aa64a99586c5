"""2D images: greyscale conversion with ITU-R 601 weights, [x, y] axis order, DICOM radiographs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from medvol.errors import MedvolInputError
from medvol.io.images import ITU_R_601_WEIGHTS, read_image_2d

ROWS, COLUMNS = 4, 6
RGB = np.arange(ROWS * COLUMNS * 3, dtype=np.uint8).reshape(ROWS, COLUMNS, 3) * 3
GREY_OF_RGB = (RGB.astype(np.float32) * np.asarray(ITU_R_601_WEIGHTS, np.float32)).sum(-1)
GREY = np.arange(ROWS * COLUMNS, dtype=np.uint8).reshape(ROWS, COLUMNS) * 10

TEST_CASE_L = ["L", lambda: Image.fromarray(GREY, "L"), GREY.astype(np.float32), None]
TEST_CASE_RGB = ["RGB", lambda: Image.fromarray(RGB, "RGB"), GREY_OF_RGB, "RGB"]
TEST_CASE_RGBA = [
    "RGBA",
    lambda: Image.fromarray(np.concatenate([RGB, np.full((ROWS, COLUMNS, 1), 7, np.uint8)], -1), "RGBA"),
    GREY_OF_RGB,
    "RGBA",
]
TEST_CASE_P = ["P", lambda: Image.fromarray(RGB, "RGB").quantize(colors=16), None, "P"]
TEST_CASE_LA = ["LA", lambda: Image.fromarray(GREY, "L").convert("LA"), GREY.astype(np.float32), "LA"]
TEST_CASE_I16 = ["I;16", lambda: Image.fromarray((GREY.astype(np.uint16) * 100)), GREY.astype(np.float32) * 100, None]


@pytest.mark.parametrize(
    "mode, make, expected, converted",
    [TEST_CASE_L, TEST_CASE_RGB, TEST_CASE_RGBA, TEST_CASE_P, TEST_CASE_LA, TEST_CASE_I16],
)
def test_png_modes(tmp_path, mode, make, expected, converted):
    image = make()
    assert image.mode == mode
    path = tmp_path / f"{mode.replace(';', '')}.png"
    image.save(path)
    array, converted_from = read_image_2d(path)
    assert array.dtype == np.float32 and array.shape == (COLUMNS, ROWS)  # [x, y]
    assert converted_from == converted
    if expected is None:  # palette: compare with the palette's own RGB values
        expected = (np.asarray(image.convert("RGB"), np.float32) * np.asarray(ITU_R_601_WEIGHTS, np.float32)).sum(-1)
    np.testing.assert_allclose(array, expected.T, rtol=1e-5, atol=1e-3)


def test_axis_order_is_x_y(tmp_path):
    rows_columns = np.zeros((ROWS, COLUMNS), np.uint8)
    rows_columns[1, 4] = 255  # row 1 (y), column 4 (x)
    Image.fromarray(rows_columns).save(tmp_path / "dot.png")
    array, _ = read_image_2d(tmp_path / "dot.png")
    assert array[4, 1] == 255 and array.sum() == 255


def test_jpeg_from_shared_data(shared_data):
    path = sorted((shared_data / "mednist64/CXR").glob("*.jpg"))[0]
    array, converted_from = read_image_2d(path)
    assert array.shape == (64, 64) and converted_from is None
    np.testing.assert_array_equal(array, np.asarray(Image.open(path), np.float32).T)


def test_dicom_radiograph(shared_data):
    path = shared_data / "dicom/cxr_single/test2.dcm"
    array, converted_from = read_image_2d(path)
    assert array.shape == (1024, 1024) and converted_from is None
    np.testing.assert_array_equal(array, pydicom.dcmread(path).pixel_array.T.astype(np.float32))


def test_bad_files(tmp_path):
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(MedvolInputError, match="fake.png: not a readable image"):
        read_image_2d(tmp_path / "fake.png")
    (tmp_path / "fake").write_text("not a dicom either")
    with pytest.raises(MedvolInputError, match="not a DICOM file"):
        read_image_2d(tmp_path / "fake")
    with pytest.raises(MedvolInputError, match="no such image file"):
        read_image_2d(tmp_path / "absent.png")
