"""`medvol inspect PATH [--json]`: every image series under PATH with its geometry (LPS, as SimpleITK) and problems.

A DICOM series holding several volumes (echoes, time points, orientations, image types) is listed once per volume,
each with its own geometry (``volume_id`` ``<uid>#echo2``)."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

from medvol.errors import MedvolInputError
from medvol.io.dicom import ACCEPT_IRREGULAR_OPTION, discover_series, iter_files
from medvol.io.files import is_image_2d, is_nifti
from medvol.io.geometry import geometry_from_affine_ras
from medvol.io.images import check_image_2d, image_mode, size_problem
from medvol.io.nifti import nonfinite_problem, read_nifti
from medvol.io.report import SKIPPED, WARNING, FileRecord

COLOUR_NOTE = "converted from {mode} to greyscale with ITU-R 601 weights when read"
PREPARE_SKIPS = "medvol prepare skips it"
GROUP_FINDINGS_FROM = 3  # a finding shared by this many images is listed once, with the count, after the table


def _nifti_entry(path: Path) -> dict:
    array, affine = read_nifti(path)  # checks the gzip CRC and the affine
    geometry = geometry_from_affine_ras(affine, [int(s) for s in array.shape[:3]])
    problems = [problem] if (problem := nonfinite_problem(array)) else []
    if array.ndim > 3:
        problems.append(
            f"{array.ndim}D image {list(array.shape)}: shape, spacing and geometry describe the first 3 axes only; "
            "medvol prepare takes 2D or 3D images"
        )
    spatial = [int(s) for s in array.shape[:3]]
    if (len(spatial) == 2 or spatial[-1] == 1) and (problem := size_problem(spatial[:2])):
        problems.append(f"{problem} ({PREPARE_SKIPS})")
    return {
        "kind": "nifti",
        "uid": str(path),
        "description": path.name,
        "modality": "",
        "files": 1,
        **geometry.to_dict(),
        "problems": problems,
        "path": str(path),
    }


def _image_entry(path: Path) -> dict:
    size, _ = image_mode(path)
    status, reason, converted_from = check_image_2d(path)  # the check `medvol prepare` makes
    if status == SKIPPED and not size_problem(size):
        raise MedvolInputError(path, reason)
    problems = [f"{reason} ({PREPARE_SKIPS})"] if status == SKIPPED else []
    if converted_from:
        problems.append(COLOUR_NOTE.format(mode=converted_from))
    if status == WARNING:
        problems += [part for part in reason.split("; ") if "read as greyscale" not in part]
    return {
        "kind": "image",
        "uid": str(path),
        "description": path.name,
        "modality": "",
        "files": 1,
        "shape": size,
        "spacing": [1.0, 1.0],
        "origin": [0.0, 0.0],
        "direction": [1.0, 0.0, 0.0, 1.0],
        "problems": problems,
        "path": str(path),
    }


def inspect_path(path: str | os.PathLike) -> dict:
    """Describe every DICOM series, NIfTI file and 2D image under ``path``, and every file skipped with its reason.

    Args:
        path: a DICOM file or folder tree, a NIfTI file, an image file or a folder mixing them.

    Returns:
        ``{"path", "series": [entry, ...], "skipped": [{"path", "reason"}, ...]}``; each entry has ``kind``
        (dicom, nifti, image), ``uid``, ``description``, ``modality``, ``files`` (count), ``shape``, ``spacing``,
        ``origin``, ``direction`` (LPS, row-major) and ``problems``; DICOM entries (one per volume) also
        ``volume_id``, ``split_by`` and ``irregular`` (the geometry problems `medvol prepare` skips by default).

    Raises:
        MedvolInputError: missing path, empty folder, or nothing readable in it.
    """
    root = Path(path)
    files = iter_files(root)
    if not files:
        raise MedvolInputError(root, "empty folder: no files to inspect")
    entries: list[dict] = []
    records: list[FileRecord] = []
    dicom_candidates = []
    for file in files:
        if is_nifti(file) or is_image_2d(file):
            reader = _nifti_entry if is_nifti(file) else _image_entry
            try:
                entries.append(reader(file))
            except MedvolInputError as err:
                records.append(FileRecord(str(file), SKIPPED, err.problem))
        else:
            dicom_candidates.append(file)
    if dicom_candidates:
        scan = discover_series(root, files=dicom_candidates, progress=sys.stderr.isatty())
        records.extend(r for r in scan.records if r.status == SKIPPED)
        for series in scan.series:
            entry = {"kind": "dicom", **series.to_dict()}
            entry["files"] = len(series.files)
            entry["folder"] = os.path.commonpath([str(Path(f).parent) for f in series.files])
            entry["first_file"] = series.files[0]
            entries.append(entry)
    skipped = [{"path": r.path, "reason": r.reason} for r in records if r.status == SKIPPED]
    if not entries:
        if len(skipped) == 1:
            raise MedvolInputError(skipped[0]["path"], skipped[0]["reason"])
        first = "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in skipped[:3])
        more = " ..." if len(skipped) > 3 else ""
        raise MedvolInputError(root, f"nothing readable: all {len(skipped)} files skipped ({first}{more})")
    return {"path": str(root), "series": entries, "skipped": skipped}


def _numbers(values, digits: int = 4) -> str:
    return "[" + ", ".join(f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values) + "]"


def format_table(report: dict) -> str:
    """Human-readable table of an :func:`inspect_path` report."""
    header = (
        f"{'#':>3}  {'kind':5}  {'description':24}  {'modality':8}  {'files':>5}  {'shape':16}  "
        f"{'spacing (mm)':22}  problems"
    )
    lines = [f"{report['path']}: {len(report['series'])} series/images, {len(report['skipped'])} files skipped", header]
    shared = {p: n for p, n in Counter(p for e in report["series"] for p in e["problems"]).items()
              if n >= GROUP_FINDINGS_FROM}
    for index, entry in enumerate(report["series"], start=1):
        lines.append(
            f"{index:>3}  {entry['kind']:5}  {entry['description'][:24]:24}  {entry['modality'][:8]:8}  "
            f"{entry['files']:>5}  "
            f"{_numbers(entry['shape']):16}  {_numbers(entry['spacing']):22}  {len(entry['problems'])}"
        )
        lines.append(
            f"     uid {entry.get('volume_id') or entry['uid']}  origin {_numbers(entry['origin'], 6)}  "
            f"direction {_numbers(entry['direction'], 4)}"
        )
        lines.extend(f"     ! {problem}" for problem in entry["problems"] if problem not in shared)
        if entry.get("irregular"):
            lines.append(
                f"     medvol prepare skips it unless {ACCEPT_IRREGULAR_OPTION} {','.join(entry['irregular'])}"
            )
    if shared:
        lines.append("findings shared by several series/images (counted in the problems column):")
        for problem, count in sorted(shared.items(), key=lambda item: -item[1]):
            names = [e["description"] for e in report["series"] if problem in e["problems"]]
            more = ", ..." if len(names) > 3 else ""
            lines.append(f"  ! {count} series/images: {problem} (e.g. {', '.join(names[:3])}{more})")
    if report["skipped"]:
        lines.append("skipped files:")
        lines.extend(f"  {s['path']}: {s['reason']}" for s in report["skipped"])
    return "\n".join(lines)


def run(*, path: str, as_json: bool = False) -> int:
    """Entry point of `medvol inspect`.

    Args:
        path: a DICOM file or folder tree, a NIfTI file, an image file or a folder mixing them.
        as_json: print the report as JSON instead of a table (``--json``).
    """
    report = inspect_path(path)
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(report))
    return 0
