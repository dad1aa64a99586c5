"""`medvol convert INPUT OUTPUT [--series UID|description]`: one DICOM series, NIfTI or 2D image to NIfTI."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from medvol.errors import MedvolInputError
from medvol.io.dicom import discover_series, read_series, select_series
from medvol.io.files import is_image_2d, is_nifti
from medvol.io.images import read_image_2d
from medvol.io.nifti import check_nifti_suffix, nonfinite_problem, read_nifti, write_nifti
from medvol.io.report import SKIPPED

logger = logging.getLogger("medvol.convert")


def convert(input_path: str | Path, output_path: str | Path, series_key: str | None = None) -> dict:
    """Convert one series or image to NIfTI with its geometry.

    DICOM series keep spacing, origin and direction (RAS affine from the LPS geometry); 2D images get MONAI's
    identity affine (1 mm pixels) since they carry no patient geometry.

    Args:
        input_path: DICOM file or folder, NIfTI file, or 2D image.
        output_path: .nii or .nii.gz file to write.
        series_key: SeriesInstanceUID or SeriesDescription when the input holds several series.

    Returns:
        summary: ``output``, ``shape``, ``problems``, ``skipped`` (DICOM files skipped with reasons),
        ``converted_from`` (colour mode for 2D images).

    Raises:
        MedvolInputError: bad output suffix, unreadable input, several series without ``series_key``, or
            non-finite voxels.
    """
    check_nifti_suffix(output_path)
    source = Path(input_path)
    if not source.exists():
        raise MedvolInputError(source, "no such file or folder")
    summary: dict = {"output": str(output_path), "problems": [], "skipped": [], "converted_from": None}
    if series_key is not None and source.is_file() and (is_nifti(source) or is_image_2d(source)):
        raise MedvolInputError(source, f"--series {series_key!r} selects a DICOM series; this is not DICOM")
    if source.is_file() and is_nifti(source):
        array, affine = read_nifti(source)
    elif source.is_file() and is_image_2d(source):
        array, summary["converted_from"] = read_image_2d(source)
        affine = np.eye(4)
    else:
        scan = discover_series(source, progress=sys.stderr.isatty())
        summary["skipped"] = [{"path": r.path, "reason": r.reason} for r in scan.records if r.status == SKIPPED]
        if not scan.series:
            if len(summary["skipped"]) == 1:
                raise MedvolInputError(summary["skipped"][0]["path"], summary["skipped"][0]["reason"])
            if not scan.records:
                raise MedvolInputError(source, "empty folder: nothing to convert")
            reasons = "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in summary["skipped"][:3])
            raise MedvolInputError(
                source, f"no readable DICOM series ({len(summary['skipped'])} files skipped: {reasons})"
            )
        series = select_series(scan, series_key)
        array, affine = read_series(series)
        summary["problems"] = list(series.problems)
        summary["series"] = series.volume_id
    problem = nonfinite_problem(array)
    if problem:
        raise MedvolInputError(source, problem)
    write_nifti(array, affine, output_path)
    summary["shape"] = list(array.shape)
    return summary


def run(*, input_path: str, output: str, series: str | None = None) -> int:
    """Entry point of `medvol convert` (see `convert`, whose arguments these are)."""
    summary = convert(input_path, output, series)
    for skipped in summary["skipped"]:
        logger.warning("skipped %s: %s", skipped["path"], skipped["reason"])
    for problem in summary["problems"]:
        logger.warning("%s: %s", input_path, problem)
    if summary["converted_from"]:
        logger.warning("%s: converted from %s to greyscale (ITU-R 601 weights)", input_path, summary["converted_from"])
    print(f"wrote {summary['output']} (shape {summary['shape']})")
    return 0
