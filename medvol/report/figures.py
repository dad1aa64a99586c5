"""Pictures of images: 2D grids and tri-planar views of 3D volumes, as uint8 arrays and PNG files.

One implementation for every picture medvol draws: training sample grids, `medvol prepare`'s preview, the
evaluation report (sample grids, real-vs-synthetic scatter plots of a PCA, training curves). Arrays follow medvol's
axis order (``[x, y(, z)]``); display orientation puts rows first. Plots are drawn with Pillow (no matplotlib).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai.utils import optional_import

Image, has_pil = optional_import("PIL", name="Image")
ImageDraw, _ = optional_import("PIL.ImageDraw")
ImageFont, _ = optional_import("PIL.ImageFont")

__all__ = [
    "sample_montage",
    "save_png",
    "triplanar_views",
    "png_bytes",
    "principal_components",
    "scatter_plot",
    "line_plot",
    "REAL_COLOUR",
    "SYNTHETIC_COLOUR",
]

REAL_COLOUR = (31, 119, 180)  # blue
SYNTHETIC_COLOUR = (255, 127, 14)  # orange
_AXIS_COLOUR = (90, 90, 90)


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


def png_bytes(picture: np.ndarray) -> bytes:
    """PNG file content of a uint8 picture (``[rows, columns]`` greyscale or ``[rows, columns, 3]`` RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def principal_components(features: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Projection of `features` ``[N, F]`` onto their first principal components (numpy SVD of the centred data).

    Returns:
        the projected points ``[N, n_components]`` and the fraction of the variance each component explains.
    """
    data = np.asarray(features, dtype=np.float64)
    if data.ndim != 2 or len(data) < 2:
        raise ValueError(f"expected features [N >= 2, F], got shape {data.shape}")
    centred = data - data.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    count = min(n_components, components.shape[0])
    projected = centred @ components[:count].T
    if count < n_components:  # fewer feature dimensions than components: pad with zeros
        projected = np.pad(projected, ((0, 0), (0, n_components - count)))
    variance = singular**2
    explained = variance[:count] / max(float(variance.sum()), 1e-300)
    return projected, np.pad(explained, (0, n_components - count))


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _limits(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(np.min(values)), float(np.max(values))) if values.size else (0.0, 1.0)
    pad = 0.05 * (high - low) if high > low else 1.0
    return low - pad, high + pad


def scatter_plot(
    groups: Sequence[tuple[np.ndarray, tuple[int, int, int]]],
    limits: tuple[tuple[float, float], tuple[float, float]] | None = None,
    size: int = 260,
    title: str = "",
    radius: int = 2,
) -> np.ndarray:
    """An RGB scatter plot of point groups drawn in order (later groups on top).

    Args:
        groups: ``(points [N, 2], (r, g, b))`` per group.
        limits: ``((x_min, x_max), (y_min, y_max))`` shared by several plots; None: fitted to the points.
        size: width and height of the plotting area in pixels.
        title: a line of text above the plot.
        radius: point radius in pixels.

    Returns:
        uint8 ``[rows, columns, 3]``.
    """
    top, left, margin = 18, 6, 6
    image = Image.new("RGB", (size + left + margin, size + top + margin), "white")
    draw = ImageDraw.Draw(image)
    if limits is None:
        everything = np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p, _ in groups] or [np.zeros((0, 2))])
        limits = (_limits(everything[:, 0]), _limits(everything[:, 1]))
    (x_low, x_high), (y_low, y_high) = limits
    draw.rectangle([left, top, left + size, top + size], outline=_AXIS_COLOUR)
    if title:
        draw.text((left, 2), title, fill=(0, 0, 0), font=_font())
    for points, colour in groups:
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        xs = left + (points[:, 0] - x_low) / max(x_high - x_low, 1e-12) * size
        ys = top + (1.0 - (points[:, 1] - y_low) / max(y_high - y_low, 1e-12)) * size
        for x, y in zip(xs, ys):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return np.asarray(image)


def line_plot(
    steps: Sequence[float], values: Sequence[float], title: str = "", size: tuple[int, int] = (320, 160),
    colour: tuple[int, int, int] = REAL_COLOUR,
) -> np.ndarray:
    """An RGB line plot of one curve (a training scalar over iterations) with its range written on the axes.

    Args:
        steps: x values (iterations).
        values: y values.
        title: a line of text above the plot.
        size: width and height of the plotting area in pixels.
        colour: line colour.

    Returns:
        uint8 ``[rows, columns, 3]``.
    """
    width, height = size
    top, left, bottom, right = 18, 56, 16, 8
    image = Image.new("RGB", (width + left + right, height + top + bottom), "white")
    draw = ImageDraw.Draw(image)
    font = _font(10)
    draw.rectangle([left, top, left + width, top + height], outline=_AXIS_COLOUR)
    if title:
        draw.text((left, 2), title, fill=(0, 0, 0), font=_font())
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size == 0:
        draw.text((left + 4, top + height // 2), "no finite values", fill=_AXIS_COLOUR, font=font)
        return np.asarray(image)
    (x_low, x_high), (y_low, y_high) = _limits(x), _limits(y)
    px = left + (x - x_low) / (x_high - x_low) * width
    py = top + (1.0 - (y - y_low) / (y_high - y_low)) * height
    if x.size == 1:
        draw.ellipse([px[0] - 2, py[0] - 2, px[0] + 2, py[0] + 2], fill=colour)
    else:
        draw.line(list(zip(px.tolist(), py.tolist())), fill=colour, width=1)
    draw.text((2, top), f"{np.max(y):.3g}", fill=_AXIS_COLOUR, font=font)
    draw.text((2, top + height - 10), f"{np.min(y):.3g}", fill=_AXIS_COLOUR, font=font)
    draw.text((left, top + height + 2), f"{np.min(x):.0f}", fill=_AXIS_COLOUR, font=font)
    label = f"{np.max(x):.0f}"
    draw.text((left + width - 6 * len(label), top + height + 2), label, fill=_AXIS_COLOUR, font=font)
    return np.asarray(image)
