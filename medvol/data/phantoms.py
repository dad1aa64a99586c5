"""Built-in procedural phantoms: a labelled 2D/3D dataset with anatomy-like structure and no files needed.

Each phantom is a body outline (ellipse/ellipsoid) holding an organ with a darker core, smooth tissue texture and scanner-like
noise. Class 1 ("lesion") adds a bright round lesion inside the organ, near a fixed relative position with a little jitter,
so statistics such as the mean intensity of the lesion region separate the classes. Values lie in [0, 1].
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

CLASSES = ("normal", "lesion")
LESION_CENTRE = (0.62, 0.42, 0.55)  # relative position of the lesion centre along x, y, z
LESION_RADIUS = 0.11  # relative to the smallest image side


def _grid(size: Sequence[int]) -> list[np.ndarray]:
    """Coordinates in [-1, 1] along each axis, broadcastable to `size`."""
    return list(np.meshgrid(*[np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in size], indexing="ij"))


def _ellipsoid(coords: list[np.ndarray], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)) <= 1.0


def lesion_region_mask(size: Sequence[int]) -> np.ndarray:
    """Boolean mask of the region where class-1 phantoms carry their lesion (without jitter).

    Args:
        size: spatial shape, 2 or 3 values.
    """
    coords = _grid(size)
    centre = [2.0 * LESION_CENTRE[i] - 1.0 for i in range(len(size))]
    radius = 2.0 * LESION_RADIUS
    return _ellipsoid(coords, centre, [radius] * len(size))


def make_phantom(spatial_dims: int, size: Sequence[int], label: int, rng: np.random.Generator) -> np.ndarray:
    """One phantom image.

    Args:
        spatial_dims: 2 or 3.
        size: spatial shape with `spatial_dims` values.
        label: 0 (normal) or 1 (lesion).
        rng: numpy random generator (controls every random choice).

    Returns:
        float32 array of shape `size` with values in [0, 1].
    """
    if spatial_dims not in (2, 3) or len(size) != spatial_dims:
        raise ValueError(f"size {tuple(size)} does not match spatial_dims={spatial_dims}")
    if label not in (0, 1):
        raise ValueError(f"phantom label must be 0 or 1, got {label}")
    coords = _grid(size)
    shift = rng.uniform(-0.05, 0.05, spatial_dims)
    body = _ellipsoid(coords, shift, rng.uniform(0.78, 0.9, spatial_dims))
    organ_centre = shift + rng.uniform(-0.04, 0.04, spatial_dims)
    organ_radii = rng.uniform(0.5, 0.6, spatial_dims)
    organ = _ellipsoid(coords, organ_centre, organ_radii)
    core = _ellipsoid(coords, organ_centre, organ_radii * rng.uniform(0.35, 0.45))

    image = np.zeros(tuple(size), np.float32)
    image[body] = 0.35
    image[organ] = 0.55
    image[core] = 0.3
    sigma = max(1.0, min(size) / 16)
    texture = gaussian_filter(rng.standard_normal(tuple(size)).astype(np.float32), sigma)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    image += 0.08 * texture * body
    if label == 1:
        centre = [2.0 * LESION_CENTRE[i] - 1.0 + rng.uniform(-0.04, 0.04) for i in range(spatial_dims)]
        radius = 2.0 * LESION_RADIUS * rng.uniform(0.85, 1.15)
        image[_ellipsoid(coords, centre, [radius] * spatial_dims)] = 0.9
    image = gaussian_filter(image, 0.6)
    image += rng.normal(0.0, 0.02, tuple(size)).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def make_phantom_batch(
    n: int, spatial_dims: int, size: Sequence[int], labels: Sequence[int] | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of phantoms, classes alternating unless `labels` is given.

    Args:
        n: number of images.
        spatial_dims: 2 or 3.
        size: spatial shape.
        labels: one label (0/1) per image; default alternates 0, 1, 0, ...
        seed: seed of the random generator.

    Returns:
        images float32 [n, 1, *size] in [0, 1] and labels int64 [n].
    """
    rng = np.random.default_rng(seed)
    label_array = np.asarray(labels if labels is not None else [i % 2 for i in range(n)], dtype=np.int64)
    if len(label_array) != n:
        raise ValueError(f"got {len(label_array)} labels for {n} images")
    images = np.stack([make_phantom(spatial_dims, size, int(y), rng)[None] for y in label_array])
    return images, label_array


def write_phantom_dataset(
    out_dir: str | Path, spatial_dims: int, size: Sequence[int], n_per_class: int, seed: int = 0
) -> Path:
    """Write a labelled phantom dataset: 3D as NIfTI (1 mm voxels), 2D as 8-bit PNG, plus `labels.csv` (id,label).

    Args:
        out_dir: folder to create; images go to `out_dir/images/`.
        spatial_dims: 2 or 3.
        size: spatial shape.
        n_per_class: images per class.
        seed: seed of the random generator.

    Returns:
        `out_dir` as a Path.
    """
    import nibabel as nib
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, labels = make_phantom_batch(
        2 * n_per_class, spatial_dims, size, labels=[i % 2 for i in range(2 * n_per_class)], seed=seed
    )
    rows = []
    for index, (image, label) in enumerate(zip(images, labels)):
        subject = f"phantom_{index:04d}"
        if spatial_dims == 3:
            nib.save(nib.Nifti1Image(image[0], np.eye(4)), str(out / "images" / f"{subject}.nii.gz"))
        else:
            # PIL wants [rows, columns]; our arrays are [x, y] = [columns, rows].
            Image.fromarray(np.round(image[0].T * 255).astype(np.uint8)).save(out / "images" / f"{subject}.png")
        rows.append((subject, CLASSES[int(label)]))
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows(rows)
    return out
