"""The preprocessing pipeline datasets use, built from a small set of settings that also key the disk cache.

Order: load (MONAI's reader choice by suffix, channel first; colour 2D images to greyscale) -> pictures upright
-> orient to RAS -> resample to a spacing (optional) -> crop to the foreground (optional) -> fit to the target shape
(padding with the background: the image's minimum, or a fixed window's low end) -> intensity window to the output
range (recorded in the meta) -> float32 -> metadata made loadable by ``torch.load(weights_only=True)``.

Intensities are scaled last, on the grid the model sees: a per-image window (min-max, MR percentiles) is measured on
the fitted image, so a real image resized here, the same image given already at that size, and a generated image
written at that size all land on one scale (measured at the source size, the extremes that resizing smooths away
would leave every resized real image below the top of the range that every generated image reaches).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import monai
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import Compose, EnsureTyped, LoadImaged, MapTransform
from monai.utils import MetaKeys, look_up_option

import medvol
from medvol.transforms.intensity import (
    DEFAULT_OUTPUT_RANGE,
    DEFAULT_PERCENTILES,
    IntensityKind,
    ScaleIntensityWindowd,
    fixed_window,
    source_window,
)
from medvol.transforms.spatial import (
    CropBodyd,
    FitToShaped,
    OrientToRASd,
    ResampleToSpacingd,
    ShapeMode,
    UprightPicturesd,
)

# Bump when the meaning of a setting or the pipeline order changes, so older caches are never reused.
PIPELINE_VERSION = 3  # 2: `fit` scales by physical extent; crop_foreground. 3: intensity scaled after the fit
GREYSCALE_MODES = ("L", "I", "I;16", "F")


def to_greyscale(image):
    """PIL converter for `PILReader`: colour, palette and alpha images to ``L`` with the ITU-R 601-2 luma weights
    (0.299, 0.587, 0.114), which PIL's ``convert("L")`` applies; greyscale modes pass unchanged."""
    return image if image.mode in GREYSCALE_MODES else image.convert("L")


# numeric metadata that MONAI updates in place (``meta["pixdim"][1:4] = spacing`` when an affine changes): kept as
# tensors, so updated and untouched samples hold the same types and still collate into one batch
IN_PLACE_META_KEYS = (MetaKeys.PIXDIM,)


def _plain(value, as_tensor: bool = False):
    """A metadata value that ``torch.load(weights_only=True)`` accepts: numpy matrices (and `as_tensor` values)
    become tensors, other numpy values Python numbers and lists (each tensor costs a storage record in the cache
    file, lists do not)."""
    if isinstance(value, np.ndarray):
        numeric = value.dtype.kind in "biuf"
        return torch.as_tensor(value) if numeric and (value.ndim >= 2 or as_tensor) else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


class CacheSafeMetad(MapTransform):
    """Converts numpy arrays and scalars in the MetaTensor meta (NIfTI header fields) to torch / Python values and
    clears the applied-operations trace, so that samples cached by `PersistentDataset` load with
    ``torch.load(weights_only=True)`` instead of being recomputed as 'corrupt' on every read.

    Args:
        keys: keys of the images.
        allow_missing_keys: do not raise when a key is missing.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if isinstance(img, MetaTensor):
                img.meta = {k: _plain(v, as_tensor=k in IN_PLACE_META_KEYS) for k, v in img.meta.items()}
                img.applied_operations = []
        return d


@dataclass(frozen=True)
class PreprocessingSettings:
    """Everything that determines a preprocessed sample; `cache_key` hashes it.

    Args:
        spatial_dims: dimensionality of the samples: 3 (volumes) or 2 (2D images, or slices cut from volumes).
        size: target spatial shape of the samples (`spatial_dims` entries), None to keep the shape.
        spacing: target voxel size in mm, None to keep it: 3 values for volumes; for ``spatial_dims=2`` also 2
            values, the in-plane spacing of 2D images or of the slices (the slice axis keeps its spacing).
        intensity: ``mr`` (per-volume percentiles), ``ct`` (fixed HU window), ``minmax`` or ``fixed`` (a given window).
        window: window of ``ct`` in HU (None: -1000, 1000) and of ``fixed``.
        percentiles: MR percentiles.
        output_range: intensity range of the samples.
        shape_mode: ``crop_pad``, ``resize`` or ``fit`` (see `ShapeMode`).
        slice_axis: for ``spatial_dims=2`` and volume files: the axis slices are cut across (kept whole when
            fitting the volume to the 2D `size`).
        crop_foreground: crop each image to the bounding box of its foreground (the body) before fitting.
        volume_size: for ``spatial_dims=2`` and volume files: first bring each volume to this 3D shape exactly as
            ``spatial_dims=3, size=volume_size`` would (spacing, foreground crop and `shape_mode` over all three
            axes), so the samples are the slices of that volumetric grid (a slice-wise model then trains on the
            slices of the volumes a volumetric model trains on); `size` is the in-plane shape, fitted again only
            where it differs. None: volumes are fitted in-plane and keep their length along `slice_axis`.
    """

    spatial_dims: int
    size: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    intensity: str = IntensityKind.MR.value
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    output_range: tuple[float, float] = DEFAULT_OUTPUT_RANGE
    shape_mode: str = ShapeMode.CROP_PAD.value
    slice_axis: int = 2
    crop_foreground: bool = False
    keys: tuple[str, ...] = field(default=("image",))
    volume_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.size is not None and len(self.size) != self.spatial_dims:
            raise ValueError(f"size {list(self.size)} must have {self.spatial_dims} entries")
        if self.spacing is not None and (
            len(self.spacing) not in (self.spatial_dims, 3) or any(float(v) <= 0 for v in self.spacing)
        ):
            raise ValueError(f"spacing {list(self.spacing)} must be {self.spatial_dims} (or 3) positive values")
        if not 0 <= self.slice_axis <= 2:
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.volume_size is not None:
            if self.spatial_dims != 2 or len(self.volume_size) != 3:
                raise ValueError(f"volume_size {list(self.volume_size)} is a 3D shape for slices (spatial_dims 2)")
            if self.spacing is not None and len(self.spacing) != 3:
                raise ValueError(f"spacing {list(self.spacing)} must have 3 values with a volume_size")
            object.__setattr__(self, "volume_size", tuple(int(s) for s in self.volume_size))
        # canonical plain types, so equal settings hash equally whatever sequence types they came in
        object.__setattr__(self, "size", None if self.size is None else tuple(int(s) for s in self.size))
        object.__setattr__(self, "spacing", None if self.spacing is None else tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "intensity", str(look_up_option(self.intensity, IntensityKind)))
        object.__setattr__(self, "window", None if self.window is None else tuple(float(v) for v in self.window))
        fixed_window(self.intensity, self.window)  # a ``fixed`` kind without a window raises here
        object.__setattr__(self, "percentiles", tuple(float(v) for v in self.percentiles))
        object.__setattr__(self, "output_range", tuple(float(v) for v in self.output_range))
        object.__setattr__(self, "shape_mode", str(look_up_option(self.shape_mode, ShapeMode)))
        object.__setattr__(self, "crop_foreground", bool(self.crop_foreground))
        object.__setattr__(self, "keys", tuple(self.keys))

    def to_dict(self) -> dict:
        """JSON-ready settings (lists instead of tuples)."""
        return json.loads(json.dumps(asdict(self)))

    def cache_key(self) -> str:
        """A short hex digest of the settings, the pipeline version and the medvol/MONAI versions."""
        settings = self.to_dict()
        if settings["volume_size"] is None:  # the keys of caches written before volume_size existed stay valid
            del settings["volume_size"]
        payload = {
            "settings": settings,
            "pipeline": PIPELINE_VERSION,
            "medvol": medvol.__version__,
            "monai": monai.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def compose(self) -> Compose:
        """The deterministic preprocessing pipeline for these settings."""
        keys = list(self.keys)
        codec_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = codec_logger.level
        with warnings.catch_warnings():
            # MONAI 1.6 builds its nvImageCodec DICOM reader with every LoadImage and warns (a warning and a log
            # line) when the codec is absent; medvol reads DICOM through its own converter
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
            codec_logger.setLevel(logging.ERROR)
            try:
                load = LoadImaged(keys, image_only=True, ensure_channel_first=True)
            finally:
                codec_logger.setLevel(level)
        # registered last, so it is the first reader asked for 2D image suffixes; readers passed as `reader=` would
        # instead be tried on every file, suffix or not
        load.register(PILReader(converter=to_greyscale))
        transforms = [load, UprightPicturesd(keys), OrientToRASd(keys)]
        slice_axis = self.slice_axis if self.spatial_dims == 2 else None
        grid = self.volume_size is not None  # the volumetric pipeline first: no axis is kept whole
        if self.spacing is not None:
            transforms.append(ResampleToSpacingd(keys, self.spacing, slice_axis=None if grid else slice_axis))
        if self.crop_foreground:
            window = partial(source_window, kind=self.intensity, window=self.window, percentiles=self.percentiles)
            transforms.append(CropBodyd(keys, slice_axis=None if grid else slice_axis,
                                              in_plane_rank=3 if grid else self.spatial_dims, source_window=window))
        fixed = fixed_window(self.intensity, self.window)
        background = None if fixed is None else fixed[0]  # padding that a fixed window scales to its low end
        if grid:
            transforms.append(FitToShaped(keys, self.volume_size, self.shape_mode, pad_value=background))
        in_plane = None if not grid else tuple(s for axis, s in enumerate(self.volume_size) if axis != self.slice_axis)
        if self.size is not None and self.size != in_plane:
            transforms.append(FitToShaped(keys, self.size, self.shape_mode, slice_axis, pad_value=background))
        transforms += [
            ScaleIntensityWindowd(keys, self.intensity, self.window, self.percentiles, self.output_range),
            EnsureTyped(keys, dtype=torch.float32, track_meta=True),
            CacheSafeMetad(keys),
        ]
        return Compose(transforms)


def preprocessing(
    spatial_dims: int,
    *,
    size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    intensity: IntensityKind | str = IntensityKind.MR,
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE,
    shape_mode: ShapeMode | str = ShapeMode.CROP_PAD,
    slice_axis: int = 2,
    crop_foreground: bool = False,
    keys: KeysCollection = ("image",),
    volume_size: Sequence[int] | None = None,
) -> Compose:
    """The preprocessing `Compose` for file paths under `keys` (see `PreprocessingSettings` for the arguments)."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    return PreprocessingSettings(
        spatial_dims=spatial_dims,
        size=None if size is None else tuple(size),
        spacing=None if spacing is None else tuple(spacing),
        intensity=intensity,
        window=None if window is None else tuple(window),
        percentiles=tuple(percentiles),
        output_range=tuple(output_range),
        shape_mode=shape_mode,
        slice_axis=slice_axis,
        crop_foreground=crop_foreground,
        keys=keys,
        volume_size=None if volume_size is None else tuple(volume_size),
    ).compose()
