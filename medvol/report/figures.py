"""Pictures of images: 2D grids and tri-planar views of 3D volumes, as uint8 arrays and PNG files.

One implementation for every picture medvol draws: training sample grids, `medvol prepare`'s preview, the
evaluation report. Arrays follow medvol's axis order (``[x, y(, z)]``); display orientation puts rows first.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from monai.utils import optional_import

Image, has_pil = optional_import("PIL", name="Image")

__all__ = ["sample_montage", "save_png", "triplanar_views"]


def _normalise(image: np.ndarray) -> np.ndarray:
    """[-1, 1] (or any range) to uint8 [0, 255], per image."""
    low, high = float(np.min(image)), float(np.max(image))
    if low >= -1.0 and high <= 1.0 and (low < 0 or high > 0):
        low, high = -1.0, 1.0
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def triplanar_views(volume: np.ndarray) -> list[np.ndarray]:
    """Central axial, coronal and sagittal slices of a ``[x, y, z]`` volume, each oriented for display (rows first)."""
    x, y, z = (s // 2 for s in volume.shape)
    axial = volume[:, :, z].T[::-1]  # rows: y (anterior up), columns: x
    coronal = volume[:, y, :].T[::-1]  # rows: z (superior up), columns: x
    sagittal = volume[x, :, :].T[::-1]  # rows: z, columns: y
    return [np.ascontiguousarray(v) for v in (axial, coronal, sagittal)]


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), dtype=image.dtype)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def sample_montage(images: torch.Tensor, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """One uint8 greyscale picture of a batch: a grid for 2D ``[B, C, x, y]``, tri-planar rows for 3D ``[B, C, x, y, z]``.

    The first channel is shown; intensities in [-1, 1] map to black..white, other ranges are min-max scaled per image.
    """
    array = images.detach().float().cpu().numpy()[:, 0]
    if array.ndim == 3:
        tiles = [_normalise(img.T[::-1]) for img in array]
        columns = columns or math.ceil(math.sqrt(len(tiles)))
        rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    elif array.ndim == 4:
        rows = [[_normalise(view) for view in triplanar_views(volume)] for volume in array]
    else:
        raise ValueError(f"expected [B, C, x, y] or [B, C, x, y, z] images, got shape {tuple(images.shape)}")
    tile_h = max(t.shape[0] for row in rows for t in row)
    tile_w = max(t.shape[1] for row in rows for t in row)
    n_cols = max(len(row) for row in rows)
    canvas = np.zeros((len(rows) * (tile_h + gap) - gap, n_cols * (tile_w + gap) - gap), dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = r * (tile_h + gap), c * (tile_w + gap)
            canvas[top : top + tile_h, left : left + tile_w] = _pad_to(tile, tile_h, tile_w)
    return canvas


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 greyscale picture (``sample_montage``'s output) as PNG, creating the folder.

    Args:
        picture: ``[rows, columns]`` uint8 array.
        path: output file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path
