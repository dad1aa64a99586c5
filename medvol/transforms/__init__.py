"""MONAI transforms of medvol: orientation, resampling, shape fitting, recorded intensity windows, slices,
augmentation and the preprocessing preset datasets use."""

from medvol.transforms.augment import classical_augmentation
from medvol.transforms.intensity import (
    INTENSITY_META_KEY,
    IntensityKind,
    ScaleIntensityWindow,
    ScaleIntensityWindowd,
    intensity_record,
    invert_intensity,
    source_window,
)
from medvol.transforms.presets import CacheSafeMetad, PreprocessingSettings, preprocessing
from medvol.transforms.spatial import (
    SLICE_META_KEY,
    CropBodyd,
    ExtractSlicesd,
    FitToShape,
    FitToShaped,
    OrientToRASd,
    ResampleToSpacingd,
    ShapeMode,
    UprightPicturesd,
    extract_slice,
    kept_slice_indices,
)

__all__ = [
    "INTENSITY_META_KEY",
    "SLICE_META_KEY",
    "CacheSafeMetad",
    "CropBodyd",
    "ExtractSlicesd",
    "FitToShape",
    "FitToShaped",
    "IntensityKind",
    "OrientToRASd",
    "PreprocessingSettings",
    "ResampleToSpacingd",
    "ScaleIntensityWindow",
    "ScaleIntensityWindowd",
    "ShapeMode",
    "UprightPicturesd",
    "classical_augmentation",
    "extract_slice",
    "intensity_record",
    "invert_intensity",
    "kept_slice_indices",
    "preprocessing",
    "source_window",
]
