"""Intensity normalisation that records what it did, so generated images can be mapped back to source units.

Every kind maps a *source window* ``[lo, hi]`` linearly onto an output range (``[-1, 1]`` or ``[0, 1]``) and clips:

- ``ct``: a fixed window in Hounsfield units (the same for every volume, so HU can be recovered exactly),
- ``mr``: per-volume percentiles (MR has no absolute unit; the hippocampus set mixes float32 and uint8 files with
  very different ranges),
- ``minmax``: the volume's own minimum and maximum,
- ``fixed``: a given window, the same for every image (how `medvol sample`'s files, written in source units with a
  run's recorded window, are read back: exactly the generator's output).

Per-image windows are measured on the image the model sees: the preprocessing (`medvol.transforms.presets`) scales
intensities after every spatial step, so an image given at the training size and the same image resized there by
the pipeline get the same window.

The window actually used is written to ``meta["medvol_intensity"]`` of the MetaTensor (see `intensity_record`) and
`invert_intensity` maps values in the output range back to the source units with that record.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import StrEnum, convert_to_tensor, look_up_option

INTENSITY_META_KEY = "medvol_intensity"
DEFAULT_CT_WINDOW = (-1000.0, 1000.0)
DEFAULT_PERCENTILES = (0.5, 99.5)
DEFAULT_OUTPUT_RANGE = (-1.0, 1.0)


class IntensityKind(StrEnum):
    """How the source window of `ScaleIntensityWindow` is chosen."""

    CT = "ct"
    MR = "mr"
    MINMAX = "minmax"
    FIXED = "fixed"


def fixed_window(kind: IntensityKind | str, window: Sequence[float] | None = None) -> tuple[float, float] | None:
    """The source window of the kinds whose window does not depend on the image (``ct``, ``fixed``), else None.

    Args:
        kind: an `IntensityKind`.
        window: the window; ``ct`` defaults to `DEFAULT_CT_WINDOW`, ``fixed`` needs one.
    """
    kind = look_up_option(kind, IntensityKind)
    if kind == IntensityKind.FIXED and window is None:
        raise ValueError("intensity kind 'fixed' needs a window")
    if kind == IntensityKind.CT:
        return _check_pair(DEFAULT_CT_WINDOW if window is None else window, "window")
    return _check_pair(window, "window") if kind == IntensityKind.FIXED else None


def _check_pair(values: Sequence[float], name: str) -> tuple[float, float]:
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or not pair[0] < pair[1]:
        raise ValueError(f"{name} must be two increasing numbers, got {values!r}")
    return pair  # type: ignore[return-value]


def source_window(
    image: torch.Tensor | np.ndarray,
    kind: IntensityKind | str,
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> tuple[float, float]:
    """The source intensities ``(lo, hi)`` that `ScaleIntensityWindow` maps onto the ends of the output range.

    Args:
        image: the image (any shape); only used by the per-volume kinds ``mr`` and ``minmax``.
        kind: ``ct`` (fixed window in HU), ``fixed`` (a given window), ``mr`` (per-volume percentiles) or ``minmax``.
        window: the window of ``ct`` (`DEFAULT_CT_WINDOW` when None) and ``fixed``. Ignored by the other kinds.
        percentiles: lower and upper percentile (0-100) for ``mr``.
    """
    fixed = fixed_window(kind, window)
    if fixed is not None:
        return fixed
    kind = look_up_option(kind, IntensityKind)
    values = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("the image has no finite intensity values")
    if kind == IntensityKind.MINMAX:
        return float(values.min()), float(values.max())
    low, high = np.percentile(values, _check_pair(percentiles, "percentiles"))
    return float(low), float(high)


class ScaleIntensityWindow(Transform):
    """Maps a source window linearly onto `output_range`, clips, and records the mapping in the MetaTensor meta.

    The record (``meta["medvol_intensity"]``) holds ``kind``, ``window`` (the source values mapped onto the two ends
    of the output range: HU for CT, the per-volume percentile values for MR, min/max for minmax), ``output_range``
    and, for MR, ``percentiles``. A constant image (``lo == hi``) maps to the low end of the output range.

    Args:
        kind: ``ct``, ``mr``, ``minmax`` or ``fixed`` (see `IntensityKind`).
        window: source window of ``ct`` (HU; `DEFAULT_CT_WINDOW` (-1000, 1000) when None) and ``fixed``.
        percentiles: lower and upper percentile for ``mr``, default (0.5, 99.5).
        output_range: target range, usually (-1, 1) for GANs or (0, 1).
    """

    backend = ScaleIntensityRange.backend

    def __init__(
        self,
        kind: IntensityKind | str = IntensityKind.MR,
        window: Sequence[float] | None = None,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE,
    ) -> None:
        self.kind = look_up_option(kind, IntensityKind)
        self.window = None if window is None else _check_pair(window, "window")
        fixed_window(self.kind, self.window)
        self.percentiles = _check_pair(percentiles, "percentiles")
        if not (0.0 <= self.percentiles[0] and self.percentiles[1] <= 100.0):
            raise ValueError(f"percentiles must lie in [0, 100], got {percentiles!r}")
        self.output_range = _check_pair(output_range, "output_range")

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Scales `img` (channel first, any spatial rank) and returns a float32 (Meta)Tensor."""
        img = convert_to_tensor(img, track_meta=True)
        lo, hi = source_window(img, self.kind, self.window, self.percentiles)
        out_lo, out_hi = self.output_range
        if hi > lo:
            out = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=out_lo, b_max=out_hi, clip=True)(img)
        else:
            out = torch.full_like(img, out_lo, dtype=torch.float32)
        record: dict = {"kind": str(self.kind), "window": [lo, hi], "output_range": [out_lo, out_hi]}
        if self.kind == IntensityKind.MR:
            record["percentiles"] = list(self.percentiles)
        if isinstance(out, MetaTensor):
            out.meta[INTENSITY_META_KEY] = record
        return out


class ScaleIntensityWindowd(MapTransform):
    """Dictionary version of `ScaleIntensityWindow`.

    Args:
        keys: keys of the images to scale.
        kind: ``ct``, ``mr``, ``minmax`` or ``fixed``.
        window: source window of ``ct`` (HU) and ``fixed``.
        percentiles: percentiles for ``mr``.
        output_range: target range.
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = ScaleIntensityWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        kind: IntensityKind | str = IntensityKind.MR,
        window: Sequence[float] | None = None,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityWindow(kind, window, percentiles, output_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


def intensity_record(image: torch.Tensor) -> dict | None:
    """The mapping `ScaleIntensityWindow` recorded on `image`, or None when the image carries none."""
    return image.meta.get(INTENSITY_META_KEY) if isinstance(image, MetaTensor) else None


def invert_intensity(image: torch.Tensor | np.ndarray, record: Mapping) -> torch.Tensor | np.ndarray:
    """Maps values in the output range back to source units (HU for CT) with a record of `ScaleIntensityWindow`.

    Values clipped during the forward mapping cannot come back: the result lies within ``record["window"]``
    whenever the input lies within ``record["output_range"]``.

    Args:
        image: values in the output range (e.g. generated images in [-1, 1]).
        record: ``meta["medvol_intensity"]`` of a scaled image, or the same dict stored in a run.
    """
    lo, hi = (float(v) for v in record["window"])
    out_lo, out_hi = (float(v) for v in record["output_range"])
    return (image - out_lo) * ((hi - lo) / (out_hi - out_lo)) + lo


def snap_to_levels(image: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Every value replaced by the nearest of `levels` (ties go to the higher level): generated images of a dataset
    whose images hold only these values, such as binary masks (0 / 255), become masks again.

    Args:
        image: values in source units.
        levels: the distinct values of the source images (at least one).
    """
    levels = np.sort(np.asarray(levels, dtype=np.float32))
    if levels.size == 0:
        raise ValueError("levels must list at least one value")
    middles = (levels[1:] + levels[:-1]) / 2
    return levels[np.digitize(np.asarray(image, dtype=np.float32), middles)]
