"""2D images: PNG/JPEG (Pillow) and single-frame DICOM radiographs (pydicom header, SimpleITK/GDCM pixels).

Every image comes back as greyscale float32 indexed [x, y] (MONAI's order; Pillow's arrays are [rows, columns]).
Colour, palette and alpha images are converted with the ITU-R BT.601 luma weights, and the mode converted from is
returned so callers can warn with the list of converted files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from monai.utils import optional_import

from medvol.errors import MedvolInputError
from medvol.io.files import IMAGE_2D_SUFFIXES
from medvol.io.report import SKIPPED, USED, WARNING

Image, _ = optional_import("PIL.Image")
pydicom, _ = optional_import("pydicom")
sitk, _ = optional_import("SimpleITK")

ITU_R_601_WEIGHTS = (0.2989, 0.5870, 0.1140)
GREYSCALE_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F", "1")
MIN_IMAGE_SIDE = 8  # pixels: a smaller 2D image (an icon, a 1x1 placeholder) is not a training image


def size_problem(size) -> str | None:
    """A sentence when a 2D image is smaller than `MIN_IMAGE_SIDE` on a side, else None.

    Args:
        size: the image's [x, y] size in pixels.
    """
    if min(int(v) for v in size) >= MIN_IMAGE_SIDE:
        return None
    return (f"image is {'x'.join(str(int(v)) for v in size)} pixels, below the minimum of {MIN_IMAGE_SIDE} per "
            "side: too small to be a training image")


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 greyscale of an array whose last axis holds R, G, B (further channels such as alpha are ignored).

    Args:
        rgb: array [..., >=3].
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * ITU_R_601_WEIGHTS[0] + rgb[..., 1] * ITU_R_601_WEIGHTS[1] + rgb[..., 2] * ITU_R_601_WEIGHTS[2]


def _read_pillow(path: Path) -> tuple[np.ndarray, str | None]:
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in GREYSCALE_MODES:
                rows_columns = np.asarray(image, dtype=np.float32)
                converted_from = None
            elif mode in ("LA", "La"):
                rows_columns = np.asarray(image.getchannel("L"), dtype=np.float32)
                converted_from = mode
            else:  # RGB, RGBA, P, PA, CMYK, YCbCr, ...: to RGB first, then luma
                rgb = np.asarray(image.convert("RGB"))
                rows_columns = rgb_to_grey(rgb)
                equal = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
                converted_from = None if equal else mode
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise MedvolInputError(path, f"not a readable image ({type(err).__name__}: {err})") from None
    return np.ascontiguousarray(rows_columns.T), converted_from


def _read_dicom_2d(path: Path) -> tuple[np.ndarray, str | None]:
    from medvol.io.dicom import read_header

    dataset, reason = read_header(path)
    if dataset is None:
        raise MedvolInputError(path, reason)
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        raise MedvolInputError(path, f"multi-frame DICOM ({frames} frames), not a single 2D radiograph")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise MedvolInputError(path, f"SimpleITK/GDCM cannot decode the pixels: {str(err).strip()[-200:]}") from None
    array = sitk.GetArrayFromImage(image)  # [rows, columns] or [1, rows, columns], (+ components)
    converted_from = None
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = rgb_to_grey(array)
        converted_from = str(dataset.get("PhotometricInterpretation") or "RGB")
    array = np.asarray(array, dtype=np.float32).reshape(array.shape[-2:])
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        array = array.max() + array.min() - array  # MONOCHROME1 stores white as 0: invert to MONOCHROME2
        converted_from = "MONOCHROME1"
    return np.ascontiguousarray(array.T), converted_from


def read_image_2d(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Read a 2D image as greyscale.

    Args:
        path: PNG/JPEG/BMP/TIFF file, or a single-frame DICOM file (any other suffix or none).

    Returns:
        ``(array, converted_from)``: float32 [x, y] and the mode converted from (``"RGB"``, ``"RGBA"``, ``"P"``,
        ``"LA"``, ``"MONOCHROME1"``, ...), or None when the file was greyscale already (or colour-coded grey: three
        equal channels).

    Raises:
        MedvolInputError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise MedvolInputError(path, "no such image file")
    if path.name.lower().endswith(IMAGE_2D_SUFFIXES):
        return _read_pillow(path)
    return _read_dicom_2d(path)


def image_mode(path: str | os.PathLike) -> tuple[list[int], str]:
    """Size [x, y] and Pillow mode of an image file from its header, without decoding the pixels.

    Args:
        path: PNG/JPEG/BMP/TIFF file.
    """
    try:
        with Image.open(path) as image:
            return [int(image.width), int(image.height)], image.mode
    except (OSError, ValueError) as err:
        raise MedvolInputError(path, f"not a readable image ({type(err).__name__}: {err})") from None


def colour_channels_differ(image) -> bool:
    """True when a Pillow image holds colour: its R, G and B channels differ somewhere (a greyscale picture saved
    as RGB, or a palette of greys, is not colour)."""
    if image.mode in GREYSCALE_MODES or image.mode in ("LA", "La"):
        return False
    rgb = np.asarray(image.convert("RGB"))
    return bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 0] != rgb[..., 2]))


def check_image_2d(path: str | os.PathLike) -> tuple[str, str, str | None]:
    """Validate one PNG/JPEG/... with Pillow (decodes it, which takes well under a millisecond for thumbnails).

    Returns:
        (status, reason, converted_from): status ``skipped`` for an unreadable image or one below `MIN_IMAGE_SIDE`
        pixels on a side; `converted_from` is the Pillow mode (``"RGB"``, ``"P"``, ...) when the
        image holds colour and will be read as ITU-R 601 greyscale, None when it is greyscale (also when stored as
        RGB with three equal channels: the conversion then changes nothing).
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            frames = getattr(image, "n_frames", 1)
            colour = colour_channels_differ(image)
            size = image.size
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        return SKIPPED, f"unreadable image: {err}", None
    if problem := size_problem(size):
        return SKIPPED, problem, None
    reasons = []
    converted_from = mode if colour else None
    if converted_from:
        reasons.append(f"{mode} colour image read as greyscale with ITU-R 601 weights")
    if frames > 1:
        reasons.append(f"{frames} frames, only the first is used")
    return (WARNING if reasons else USED), "; ".join(reasons), converted_from
