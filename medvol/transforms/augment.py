"""Classical augmentation: small random rotation, zoom, shift and shear (MONAI `RandAffined`), flips only on request.

Flips are off by default: a left-right flip of a brain or a chest creates anatomy that does not exist (a heart on
the right), which a generative model would then learn to produce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.config import KeysCollection
from monai.transforms import Compose, RandAffined, RandFlipd

DEFAULT_ROTATE_DEGREES = 10.0
DEFAULT_ZOOM = 0.1
DEFAULT_SHIFT_FRACTION = 0.05
DEFAULT_SHEAR = 0.05


def classical_augmentation(
    spatial_dims: int,
    image_size: Sequence[int],
    *,
    keys: KeysCollection = ("image",),
    prob: float = 0.8,
    rotate_degrees: float = DEFAULT_ROTATE_DEGREES,
    zoom: float = DEFAULT_ZOOM,
    shift_fraction: float = DEFAULT_SHIFT_FRACTION,
    shear: float = DEFAULT_SHEAR,
    flip_axes: Sequence[int] | None = None,
    flip_prob: float = 0.5,
    padding_mode: str = "border",
) -> Compose:
    """The classical augmentation preset as a MONAI `Compose` of random transforms.

    One random affine (rotation about every axis, isotropic-range zoom per axis, shift, shear) is drawn per sample;
    flips are added only for the axes listed in `flip_axes`.

    Args:
        spatial_dims: 2 or 3.
        image_size: spatial shape of the images, to express `shift_fraction` in voxels.
        keys: keys of the images to augment.
        prob: probability of applying the random affine to a sample.
        rotate_degrees: rotations are drawn from [-rotate_degrees, rotate_degrees] about each axis.
        zoom: scale factors are drawn from [1 - zoom, 1 + zoom] per axis.
        shift_fraction: shifts are drawn from +- this fraction of the image size per axis.
        shear: shear factors are drawn from [-shear, shear].
        flip_axes: spatial axes that may be flipped (None or empty: no flips, the default).
        flip_prob: probability of each listed flip.
        padding_mode: how voxels moved in from outside are filled (``border`` repeats the edge, so the
            background stays background after scaling to [-1, 1]; ``zeros`` would paint mid-grey).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(image_size) != spatial_dims:
        raise ValueError(f"image_size {list(image_size)} does not have {spatial_dims} entries")
    rotations = 1 if spatial_dims == 2 else 3
    shears = 2 if spatial_dims == 2 else 6
    transforms = [
        RandAffined(
            keys=keys,
            prob=prob,
            rotate_range=[math.radians(rotate_degrees)] * rotations,
            scale_range=[zoom] * spatial_dims,
            translate_range=[shift_fraction * s for s in image_size],
            shear_range=[shear] * shears,
            mode="bilinear",
            padding_mode=padding_mode,
        )
    ]
    for axis in flip_axes or ():
        if not 0 <= axis < spatial_dims:
            raise ValueError(f"flip axis {axis} is not a spatial axis of a {spatial_dims}D image")
        transforms.append(RandFlipd(keys=keys, prob=flip_prob, spatial_axis=axis))
    return Compose(transforms)
