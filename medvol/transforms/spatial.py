"""Geometry: orientation to RAS, resampling to a spacing, cropping to the body, fitting to a target shape, and slice
extraction.

All transforms work on channel-first MetaTensors of spatial rank 2 or 3 (``[C, x, y(, z)]``) and keep their
metadata; MONAI's own transforms do the work (`Orientation`, `Spacing`, `Resize`, `ResizeWithPadOrCrop`), these
classes only choose their arguments from the image (its spatial rank, its recorded intensity range, a slice axis).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Orientation, Resize, ResizeWithPadOrCrop, Spacing, SpatialCrop, Transform
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import StrEnum, convert_to_tensor, look_up_option

from medvol.transforms.intensity import intensity_record

SLICE_META_KEY = "medvol_slice"


class ShapeMode(StrEnum):
    """How `FitToShape` reaches the target shape.

    - ``crop_pad``: centre crop / pad, no interpolation (keeps the voxel size; cuts off what lies outside the
      target, e.g. the skull of a large image).
    - ``resize``: interpolate every axis to the target (changes the aspect ratio when the shapes differ in ratio).
    - ``fit``: scale so the whole field of view fits inside the target, then pad with the background (keeps the
      physical aspect ratio: the output voxels are isotropic along the fitted axes, so anisotropic volumes are
      resampled correctly; 2D pictures without spacing have 1 mm pixels).
    """

    CROP_PAD = "crop_pad"
    RESIZE = "resize"
    FIT = "fit"


def _spatial_rank(img: torch.Tensor) -> int:
    return img.ndim - 1


def voxel_size(img: torch.Tensor) -> list[float]:
    """Voxel size per spatial axis from a MetaTensor's affine (column norms), 1.0 per axis for a plain tensor."""
    rank = _spatial_rank(img)
    if not isinstance(img, MetaTensor):
        return [1.0] * rank
    affine = img.affine
    sizes = torch.linalg.norm(affine[: min(3, affine.shape[0] - 1), :rank].double(), dim=0).tolist()
    return [float(v) if v > 0 else 1.0 for v in sizes] + [1.0] * (rank - len(sizes))


class OrientToRASd(MapTransform):
    """MONAI `Orientation` to RAS (``RA`` for 2D images), the axis codes chosen from each image's spatial rank.

    Args:
        keys: keys of the images to reorient.
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = Orientation.backend

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = Orientation(axcodes="RAS"[: _spatial_rank(d[key])], labels=None)(d[key])
        return d


class UprightPicturesd(MapTransform):
    """Gives 2D pictures (PNG, JPEG, BMP, TIFF) the geometry of what they show: their rows run top-down, medvol's
    y axis points up (anterior / superior, how RAS volumes are displayed), so the y column of the affine is negated
    and `OrientToRASd` then turns the pixels upright. Without this, every picture would be trained and shown
    upside down. Other images (NIfTI, DICOM-derived) carry their own geometry and pass unchanged.

    Args:
        keys: keys of the images.
        allow_missing_keys: do not raise when a key is missing.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        from medvol.io.files import is_image_2d

        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if not isinstance(img, MetaTensor) or _spatial_rank(img) != 2:
                continue
            if not is_image_2d(str(img.meta.get("filename_or_obj", ""))):
                continue
            affine = img.affine.clone()
            affine[:, 1] = -affine[:, 1]
            affine[:-1, -1] += img.affine[:-1, 1] * (img.shape[2] - 1)
            img.affine = affine
        return d


class ResampleToSpacingd(MapTransform):
    """MONAI `Spacing` to `spacing` (mm) for images whose spatial rank equals ``len(spacing)``.

    With `slice_axis`, a volume given an in-plane spacing (one value fewer than its rank) is resampled in-plane and
    keeps its spacing along `slice_axis`. Images of another rank (a 2D image file in a volumetric pipeline carries
    no physical spacing) pass through unchanged.

    Args:
        keys: keys of the images to resample.
        spacing: target voxel size in mm, one value per spatial axis; values <= 0 keep that axis' spacing.
        slice_axis: axis whose spacing is kept when `spacing` has one value fewer than the image's rank.
        mode: interpolation mode (``bilinear`` is trilinear for 3D images).
        padding_mode: how values outside the image are filled; ``border`` repeats the edge so no artificial
            zero (mid-grey after scaling to [-1, 1]) enters the image.
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = Spacing.backend

    def __init__(
        self,
        keys: KeysCollection,
        spacing: Sequence[float],
        slice_axis: int | None = None,
        mode: str = "bilinear",
        padding_mode: str = "border",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing = [float(s) for s in spacing]
        self.slice_axis = slice_axis
        self.mode = mode
        self.padding_mode = padding_mode

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            rank = _spatial_rank(d[key])
            spacing = list(self.spacing)
            if rank == len(spacing) + 1 and self.slice_axis is not None:
                spacing.insert(self.slice_axis, -1.0)  # MONAI keeps the spacing of non-positive entries
            if rank == len(spacing):
                d[key] = Spacing(pixdim=spacing, mode=self.mode, padding_mode=self.padding_mode)(d[key])
        return d


def fitted_target_shape(
    spatial_shape: Sequence[int], size: Sequence[int], slice_axis: int | None = None
) -> list[int]:
    """The shape `FitToShape` aims at for an image of `spatial_shape`; -1 keeps an axis as it is.

    Args:
        spatial_shape: spatial shape of the image.
        size: target shape; entries <= 0 keep that axis.
        slice_axis: when the image has one more axis than `size` (a volume that will be cut into 2D slices of
            `size`), the axis that is kept.
    """
    target = [int(s) for s in size]
    if len(spatial_shape) == len(target) + 1 and slice_axis is not None:
        target.insert(slice_axis, -1)
    if len(spatial_shape) != len(target):
        raise ValueError(f"an image of shape {list(spatial_shape)} cannot be fitted to size {list(size)}")
    return target


class FitToShape(Transform):
    """Brings a channel-first image to a target spatial shape by crop/pad, resize or aspect-keeping fit.

    Args:
        spatial_size: target spatial shape; entries <= 0 keep that axis.
        mode: ``crop_pad``, ``resize`` or ``fit`` (see `ShapeMode`).
        slice_axis: for a volume that will be sliced: when the image has one more spatial axis than
            `spatial_size`, this axis keeps its length.
        pad_value: constant for padded voxels; None takes the low end of the output range recorded by
            `ScaleIntensityWindow` (the background after scaling), or the image's minimum when it has no record
            (not scaled yet: the minimum lies at or below any window's low end, so it scales to the background).
    """

    backend = ResizeWithPadOrCrop.backend

    def __init__(
        self,
        spatial_size: Sequence[int],
        mode: ShapeMode | str = ShapeMode.CROP_PAD,
        slice_axis: int | None = None,
        pad_value: float | None = None,
    ) -> None:
        self.spatial_size = [int(s) for s in spatial_size]
        self.mode = look_up_option(mode, ShapeMode)
        self.slice_axis = slice_axis
        self.pad_value = pad_value

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Fits `img` (``[C, *spatial]``) to the target shape."""
        img = convert_to_tensor(img, track_meta=True)
        shape = list(img.shape[1:])
        target = fitted_target_shape(shape, self.spatial_size, self.slice_axis)
        pad_value = self.pad_value
        if pad_value is None:
            record = intensity_record(img)
            finite = torch.as_tensor(img)[torch.isfinite(torch.as_tensor(img))]
            pad_value = float(record["output_range"][0]) if record else float(finite.min()) if finite.numel() else 0.0
        interpolation = "bilinear" if len(shape) == 2 else "trilinear"

        def resized(image: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
            # the anti-aliasing Gaussian pads with zeros: shifted so that zero is the background, the borders of the
            # picture are not pulled towards an intensity below (or above) its background
            return Resize(spatial, mode=interpolation, anti_aliasing=True)(image - pad_value) + pad_value

        if self.mode == ShapeMode.RESIZE:
            return resized(img, target)
        if self.mode == ShapeMode.FIT:
            extents = [s * v for s, v in zip(shape, voxel_size(img))]
            new_voxel = max((e / t for e, t in zip(extents, target) if t > 0), default=1.0)
            scaled = [min(t, max(1, round(e / new_voxel))) if t > 0 else -1 for e, t in zip(extents, target)]
            if scaled != [s if t > 0 else -1 for s, t in zip(shape, target)]:
                img = resized(img, scaled)
        return ResizeWithPadOrCrop(target, mode="constant", value=pad_value)(img)


class FitToShaped(MapTransform):
    """Dictionary version of `FitToShape`.

    Args:
        keys: keys of the images to fit.
        spatial_size: target spatial shape.
        mode: ``crop_pad``, ``resize`` or ``fit``.
        slice_axis: axis kept when a volume is fitted to a 2D size.
        pad_value: constant for padded voxels (None: the recorded background or the minimum, see `FitToShape`).
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = FitToShape.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: ShapeMode | str = ShapeMode.CROP_PAD,
        slice_axis: int | None = None,
        pad_value: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fitter = FitToShape(spatial_size, mode, slice_axis, pad_value)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.fitter(d[key])
        return d


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest connected component (face-connected) of a boolean mask; an empty mask stays empty."""
    from scipy import ndimage

    labels, count = ndimage.label(mask.cpu().numpy())
    if count <= 1:
        return mask
    sizes = torch.bincount(torch.as_tensor(labels).flatten())
    sizes[0] = 0
    return torch.as_tensor(labels == int(sizes.argmax()))


class CropBodyd(MapTransform):
    """Crops images to the bounding box of their foreground (the body: the largest connected region of voxels above
    `foreground_threshold`, so a scanner table, a frame line or noise outside the body do not widen the box), with
    a margin, so that fitting afterwards spends the target shape on anatomy instead of the air around it.

    An image without foreground is left as it is. With `slice_axis`, a volume (one more axis than `in_plane_rank`)
    keeps that axis whole, so its slices stay the slices of the whole volume.

    Args:
        keys: keys of the images to crop.
        foreground_level: relative intensity level of the foreground (see `foreground_threshold`).
        margin: margin around the box, as a fraction of each axis' length (at least one voxel).
        slice_axis: axis kept whole for volumes that will be sliced.
        in_plane_rank: spatial rank of the samples (2 in slice mode); a volume of rank ``in_plane_rank + 1`` keeps
            `slice_axis`.
        source_window: for images not scaled yet: a function giving the source window ``(lo, hi)`` the intensity
            scaling will use (e.g. `functools.partial` of `medvol.transforms.intensity.source_window`), so the
            foreground is the same as on the scaled image (see `foreground_threshold`).
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = SpatialCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        *,
        foreground_level: float = 0.05,
        margin: float = 0.02,
        slice_axis: int | None = None,
        in_plane_rank: int | None = None,
        source_window: Callable[[torch.Tensor], tuple[float, float]] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.foreground_level = foreground_level
        self.margin = margin
        self.slice_axis = slice_axis
        self.in_plane_rank = in_plane_rank
        self.source_window = source_window

    def crop(self, img: torch.Tensor) -> torch.Tensor:
        """The crop of one channel-first image."""
        img = convert_to_tensor(img, track_meta=True)
        shape = list(img.shape[1:])
        window = None if self.source_window is None else self.source_window(img)
        threshold = foreground_threshold(img, self.foreground_level, window)
        body = largest_component(torch.as_tensor(img).amax(0) > threshold)
        margins = [max(1, round(self.margin * s)) for s in shape]
        start, end = generate_spatial_bounding_box(body[None], margin=margins, allow_smaller=True)
        if all(e <= b for b, e in zip(start, end)):  # no foreground at all
            return img
        if self.slice_axis is not None and self.in_plane_rank is not None and len(shape) == self.in_plane_rank + 1:
            start[self.slice_axis], end[self.slice_axis] = 0, shape[self.slice_axis]
        return SpatialCrop(roi_start=start, roi_end=end)(img)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.crop(d[key])
        return d


def foreground_threshold(
    image: torch.Tensor, foreground_level: float = 0.05, window: Sequence[float] | None = None
) -> float:
    """Intensity above which a voxel counts as foreground.

    The level is relative: ``lo + foreground_level * (hi - lo)`` where ``[lo, hi]`` is `window` (the source window
    an unscaled image will be scaled with: the same voxels as on the scaled image), else the output range recorded
    by `ScaleIntensityWindow` (so background at the low end is excluded), else the image's own min/max.

    Args:
        image: the (scaled) image.
        foreground_level: fraction of the intensity range, in [0, 1).
        window: source window ``(lo, hi)`` of an image not scaled yet.
    """
    record = intensity_record(image)
    if window is not None:
        lo, hi = (float(v) for v in window)
    elif record:
        lo, hi = (float(v) for v in record["output_range"])
    else:
        lo, hi = float(image.min()), float(image.max())
    return lo + foreground_level * (hi - lo)


def kept_slice_indices(
    volume: torch.Tensor, axis: int = 2, min_foreground_fraction: float = 0.0, foreground_level: float = 0.05
) -> list[int]:
    """Indices of the slices along spatial `axis` whose foreground fraction reaches `min_foreground_fraction`.

    Args:
        volume: channel-first volume ``[C, x, y, z]``.
        axis: spatial axis (0, 1 or 2) the slices are cut across.
        min_foreground_fraction: slices with a smaller fraction of foreground voxels are dropped; 0 keeps all.
        foreground_level: see `foreground_threshold`.
    """
    if not 0 <= axis < _spatial_rank(volume):
        raise ValueError(f"slice axis {axis} is not a spatial axis of an image with shape {list(volume.shape)}")
    threshold = foreground_threshold(volume, foreground_level)
    foreground = torch.as_tensor(volume) > threshold
    reduce_dims = [d for d in range(foreground.ndim) if d != axis + 1]
    fractions = foreground.float().mean(dim=reduce_dims)
    return [int(i) for i in torch.nonzero(fractions >= min_foreground_fraction).flatten()]


def extract_slice(volume: torch.Tensor, axis: int, index: int) -> MetaTensor:
    """The 2D slice ``index`` along spatial `axis` of a channel-first volume, as ``[C, u, v]``.

    The affine stays a 4x4 voxel-to-world matrix: its first two columns are the in-plane axes, the third the
    slice normal, and the origin moves to the slice, so ``affine @ [u, v, 0, 1]`` is the world position of a pixel.
    ``meta["medvol_slice"]`` records ``{"axis", "index"}``; other metadata are copied.

    Args:
        volume: ``[C, x, y, z]`` (Meta)Tensor.
        axis: spatial axis (0, 1 or 2).
        index: slice index along that axis.
    """
    volume = convert_to_tensor(volume, track_meta=True)
    pixels = volume.as_tensor().select(axis + 1, index).clone()
    affine = volume.affine.clone()
    columns = [c for c in range(3) if c != axis] + [axis]
    slice_affine = affine.clone()
    slice_affine[:, :3] = affine[:, columns]
    slice_affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * index
    meta = {k: copy.deepcopy(v) for k, v in volume.meta.items() if k != "affine"}
    meta[SLICE_META_KEY] = {"axis": int(axis), "index": int(index)}
    return MetaTensor(pixels, affine=slice_affine, meta=meta)


class ExtractSlicesd(MapTransform):
    """Cuts volumes into 2D samples: returns one dict per kept slice (MONAI's list-of-samples convention).

    The first key decides which slices are kept (see `kept_slice_indices`); every key is cut at the same
    indices, and the other items of the dict (``label``, ``subject``, ...) travel with each slice.

    Args:
        keys: keys of the volumes to cut.
        axis: spatial axis (0, 1 or 2) the slices are cut across; 2 gives axial slices of an RAS volume.
        min_foreground_fraction: drop slices with a smaller fraction of foreground voxels; 0 keeps all.
        foreground_level: relative intensity level of the foreground (see `foreground_threshold`).
        allow_missing_keys: do not raise when a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        axis: int = 2,
        min_foreground_fraction: float = 0.0,
        foreground_level: float = 0.05,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.axis = axis
        self.min_foreground_fraction = min_foreground_fraction
        self.foreground_level = foreground_level

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> list[dict[Hashable, torch.Tensor]]:
        keys = list(self.key_iterator(dict(data)))
        if not keys:
            return [dict(data)]
        indices = kept_slice_indices(data[keys[0]], self.axis, self.min_foreground_fraction, self.foreground_level)
        samples = []
        for index in indices:
            sample = dict(data)
            for key in keys:
                sample[key] = extract_slice(data[key], self.axis, index)
            samples.append(sample)
        return samples
